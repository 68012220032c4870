#!/usr/bin/env bash
# One host with several GPUs: one process drives every visible GPU (the mesh's data axis spans
# them), so no jax.distributed set-up is needed.
#
#   launch/multi_gpu.sh [--dry-run] SUBCOMMAND [flags] [-- extra grn_jax.main flags]
#
# Subcommands:
#   setup     pip install the pinned requirements, this package and jax[cuda12]
#   check     print the GPUs JAX sees
#   bench     python -m grn_jax.benchmarks (speed table next to the measured matmul peak)
#   run       train: python -m grn_jax.main --mode=train (bfloat16 compute)
#   sample    python -m grn_jax.main --mode=sample
#
# Flags (--flag=VALUE or --flag VALUE; or the environment variable in brackets):
#   --gpus=0,1,2,3 [CUDA_VISIBLE_DEVICES]   default: all GPUs
#   --config=C [CONFIG]                      default configs/c2i.py:variant=B
#   --workdir=DIR [WORKDIR]                  default ./workdir/grn_b
#   --python=PY [PYTHON]                     default python3
#   --dry-run                                print the commands, run nothing
#
# Example: launch/multi_gpu.sh run --gpus=0,1,2,3 -- --config.data.data_dir=/data/tfds \
#            --config.tokenizer.checkpoint=/data/weights/tokenizer
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

GPUS=${CUDA_VISIBLE_DEVICES:-}
CONFIG=${CONFIG:-configs/c2i.py:variant=B}
WORKDIR=${WORKDIR:-workdir/grn_b}
PYTHON=${PYTHON:-python3}
JAX_VERSION=0.10.2

value_flag gpus GPUS
value_flag config CONFIG
value_flag workdir WORKDIR
value_flag python PYTHON
parse_args "$@"
[[ -z "${GPUS}" || "${GPUS}" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must look like 0,1,2, got ${GPUS}."
cd "$(repo_root)"

ENV=(env)
[[ -z "${GPUS}" ]] || ENV+=("CUDA_VISIBLE_DEVICES=${GPUS}")
# Let XLA overlap collectives with compute; keep JAX from grabbing memory other tools need.
ENV+=("XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true" "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9")

main() {  # main MODE
  run "${ENV[@]}" "${PYTHON}" -m grn_jax.main "--mode=$1" "--config=${CONFIG}" \
      "--workdir=${WORKDIR}" --config.model.dtype=bfloat16 "${EXTRA[@]}"
}

case "${SUBCOMMAND}" in
  setup)
    run "${PYTHON}" -m pip install -r requirements.txt -e .
    run "${PYTHON}" -m pip install "jax[cuda12]==${JAX_VERSION}" ;;
  check) run "${ENV[@]}" "${PYTHON}" -c 'import jax; print(jax.devices())' ;;
  bench) run "${ENV[@]}" "${PYTHON}" -m grn_jax.benchmarks "${EXTRA[@]}" ;;
  run) main train ;;
  sample) main sample ;;
  *) die "unknown subcommand ${SUBCOMMAND} (see --help)." ;;
esac
