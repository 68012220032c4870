#!/usr/bin/env bash
# Cloud TPU VMs and pods: create, copy the code, set up every worker, prepare ImageNet on GCS
# once, and run grn_jax on all workers (--worker=all, jax.distributed.initialize()).
#
#   launch/tpu_vm.sh [--dry-run] SUBCOMMAND [flags] [-- extra grn_jax.main flags]
#
# Subcommands (in the order of a first run):
#   create        gcloud compute tpus tpu-vm create (a pod when the type has several hosts,
#                 e.g. v5p-64 = 8 hosts; the same script drives single hosts and pods)
#   copy          tar this working tree, scp it to every worker, unpack into ~/grn_jax
#   setup         on every worker: pip install the pinned requirements and jax[tpu]
#   prepare-data  once, on worker 0: build the tfds imagenet2012 data set into
#                 $BUCKET/tfds from the ILSVRC2012 tars you uploaded to $BUCKET/imagenet_manual
#   convert       once, on worker 0: convert the released tokenizer (and GRN-B) from the
#                 Hugging Face hub into $BUCKET/weights/{tokenizer,grn_b}
#   run           on every worker: python -m grn_jax.main --distributed (training)
#   sample        on every worker: python -m grn_jax.main --mode=sample --distributed
#   logs          tail the background run's log on worker 0
#   delete        delete the TPU VM
#   all           create, copy, setup, run
#
# Flags (--flag=VALUE or --flag VALUE; or the environment variable in brackets):
#   --name=NAME [TPU_NAME]            default grn-tpu
#   --zone=ZONE [ZONE]                required, e.g. us-east5-a
#   --project=PROJECT [PROJECT]       default: gcloud's configured project
#   --accelerator-type=T [ACCELERATOR_TYPE]   default v5p-8 (v5p-64, v6e-256, v4-32, ...)
#   --version=V [TPU_RUNTIME]         default chosen from the accelerator type
#   --spot                            spot capacity (preemptible; training resumes itself)
#   --bucket=gs://B [BUCKET]          data, weights and the workdir live here
#   --config=C [CONFIG]               default configs/c2i.py:variant=B
#   --workdir=gs://B/runs/X [WORKDIR] default $BUCKET/runs/grn_b
#   --background                      run/sample: detach (nohup, log in ~/grn_jax/run.log)
#   --dry-run                         print the commands, run nothing
#
# run and all print the smallest slice the config needs, from the TPU memory table (docs/aot.md).
#
# Example (GRN-B on a v5p-64 pod):
#   export ZONE=us-east5-a BUCKET=gs://my-bucket
#   launch/tpu_vm.sh create --accelerator-type=v5p-64 --spot
#   launch/tpu_vm.sh copy && launch/tpu_vm.sh setup
#   launch/tpu_vm.sh prepare-data && launch/tpu_vm.sh convert
#   launch/tpu_vm.sh run --background -- --config.model.dtype=bfloat16
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME=${TPU_NAME:-grn-tpu}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5p-8}
RUNTIME=${TPU_RUNTIME:-}
SPOT=0
BUCKET=${BUCKET:-}
CONFIG=${CONFIG:-configs/c2i.py:variant=B}
WORKDIR=${WORKDIR:-}
BACKGROUND=0
JAX_VERSION=0.10.2
REMOTE_DIR='~/grn_jax'

value_flag name NAME
value_flag zone ZONE
value_flag project PROJECT
value_flag accelerator-type ACCELERATOR_TYPE
value_flag version RUNTIME
switch_flag spot SPOT
value_flag bucket BUCKET
value_flag config CONFIG
value_flag workdir WORKDIR
switch_flag background BACKGROUND
parse_args "$@"

if [[ -z "${RUNTIME}" ]]; then
  case "${ACCELERATOR_TYPE}" in
    v4-*) RUNTIME=tpu-ubuntu2204-base ;;
    v5litepod-*|v5e-*) RUNTIME=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME=v2-alpha-tpuv6e ;;
    *) die "no default runtime for --accelerator-type=${ACCELERATOR_TYPE}; pass --version." ;;
  esac
fi
BUCKET=${BUCKET%/}
[[ -z "${BUCKET}" || "${BUCKET}" == gs://* ]] || die "--bucket must start with gs://, got ${BUCKET}."
WORKDIR=${WORKDIR:-${BUCKET:+${BUCKET}/runs/grn_b}}

gcloud_tpu() {  # gcloud_tpu VERB ARGS...: gcloud compute tpus tpu-vm VERB with zone/project
  require_value zone "${ZONE}"
  local cmd=(gcloud compute tpus tpu-vm "$@" "--zone=${ZONE}")
  [[ -z "${PROJECT}" ]] || cmd+=("--project=${PROJECT}")
  run "${cmd[@]}"
}

on_workers() {  # on_workers WORKERS REMOTE_COMMAND_STRING
  gcloud_tpu ssh "${NAME}" "--worker=$1" "--command=$2"
}

main_command() {  # main_command MODE: the grn_jax.main invocation every worker runs
  local words=(python3 -m grn_jax.main "--mode=$1" "--config=${CONFIG}" "--workdir=${WORKDIR}"
               --distributed "--config.data.data_dir=${BUCKET}/tfds"
               "--config.tokenizer.checkpoint=${BUCKET}/weights/tokenizer" "${EXTRA[@]}")
  local cmd="cd ${REMOTE_DIR} && $(quote_words "${words[@]}")"
  if ((BACKGROUND)); then
    cmd="cd ${REMOTE_DIR} && nohup $(quote_words "${words[@]}") > run.log 2>&1 &"
  fi
  printf '%s' "${cmd}"
}

do_create() {
  local args=(create "${NAME}" "--accelerator-type=${ACCELERATOR_TYPE}" "--version=${RUNTIME}")
  ((SPOT)) && args+=(--spot)
  gcloud_tpu "${args[@]}"
}

do_copy() {
  local root tarball
  root=$(repo_root)
  tarball=${TMPDIR:-/tmp}/grn_jax_src.tar.gz
  run tar -czf "${tarball}" --exclude-vcs --exclude=.venv --exclude=.venv-ci \
      --exclude=__pycache__ --exclude='workdir*' -C "${root}" .
  gcloud_tpu scp "${tarball}" "${NAME}:~/grn_jax_src.tar.gz" --worker=all
  on_workers all "mkdir -p ${REMOTE_DIR} && tar -xzf ~/grn_jax_src.tar.gz -C ${REMOTE_DIR}"
}

do_setup() {
  on_workers all "cd ${REMOTE_DIR} && python3 -m pip install -q --upgrade pip && \
python3 -m pip install -q -r requirements.txt -e . && \
python3 -m pip install -q 'jax[tpu]==${JAX_VERSION}' && \
python3 -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
}

do_prepare_data() {
  require_value bucket "${BUCKET}"
  on_workers 0 "cd ${REMOTE_DIR} && python3 -m pip install -q tensorflow-datasets && \
tfds build imagenet2012 --data_dir=${BUCKET}/tfds --manual_dir=${BUCKET}/imagenet_manual"
}

do_convert() {
  require_value bucket "${BUCKET}"
  local hub=hf://bytedance-research/GRN
  on_workers 0 "cd ${REMOTE_DIR} && python3 -m pip install -q huggingface_hub torch && \
python3 -m grn_jax.convert --kind=tokenizer --src=${hub}/HBQ_image_tokenizer_16dim_M4.ckpt \
--dst=${BUCKET}/weights/tokenizer --config=configs/c2i.py:variant=B && \
python3 -m grn_jax.convert --kind=c2i --src=${hub}/GRN_ind_B_ep599.pth --trust_pickle \
--dst=${BUCKET}/weights/grn_b --config=configs/c2i.py:variant=B"
}

case "${SUBCOMMAND}" in
  create) do_create ;;
  copy) do_copy ;;
  setup) do_setup ;;
  prepare-data) do_prepare_data ;;
  convert) do_convert ;;
  run|sample)
    require_value bucket "${BUCKET}"
    [[ "${SUBCOMMAND}" == sample ]] || slice_note "${CONFIG}" "${ACCELERATOR_TYPE}"
    mode=train
    [[ "${SUBCOMMAND}" == run ]] || mode=sample
    remote=$(main_command "${mode}")
    on_workers all "${remote}" ;;
  logs) on_workers 0 "tail -n 100 -f ${REMOTE_DIR}/run.log" ;;
  delete) gcloud_tpu delete "${NAME}" --quiet ;;
  all)
    require_value bucket "${BUCKET}"
    slice_note "${CONFIG}" "${ACCELERATOR_TYPE}"
    remote=$(main_command train)
    do_create; do_copy; do_setup; on_workers all "${remote}" ;;
  *) die "unknown subcommand ${SUBCOMMAND} (see --help)." ;;
esac
