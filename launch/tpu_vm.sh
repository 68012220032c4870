#!/usr/bin/env bash
# Cloud TPU VMs and pods: create, copy the code, set up every worker, prepare the data once,
# and run grn_jax on all workers (--worker=all, jax.distributed.initialize()). C2I (ImageNet)
# by default; T2I/T2V when --config is a configs/t2iv.py config.
#
#   launch/tpu_vm.sh [--dry-run] SUBCOMMAND [flags] [-- extra grn_jax.main flags]
#
# Subcommands (in the order of a first run):
#   create        gcloud compute tpus tpu-vm create (a pod when the type has several hosts,
#                 e.g. v5p-64 = 8 hosts; the same script drives single hosts and pods)
#   copy          tar this working tree, scp it to every worker, unpack into ~/grn_jax
#   setup         on every worker: pip install the pinned requirements and jax[tpu]
#   prepare-data  once. C2I, on worker 0: build the tfds imagenet2012 data set into
#                 $BUCKET/tfds from the ILSVRC2012 tars you uploaded to $BUCKET/imagenet_manual.
#                 T2I/T2V, on every worker (each writes its share of the shards): encode the
#                 captioned media of --captions into bit labels and umT5 features, into
#                 $DATA_ROOT/t2iv_data (python -m grn_jax.data.tokenize_captioned; resumable)
#   convert       once, on worker 0: convert the released weights from the Hugging Face hub.
#                 C2I: $BUCKET/weights/{tokenizer,grn_b}; T2I/T2V: the d=64 tokenizer, umT5-XXL
#                 and GRN_T2I_2B (GRN_T2V_2B with task=t2v) into $BUCKET/weights/{tokenizer64,
#                 umt5-xxl-jax,grn_t2i_2b}
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
#   --captions=FILE [CAPTIONS]        T2I/T2V prepare-data: the .jsonl/.csv caption file and
#   --media-dir=DIR [MEDIA_DIR]       the folder its media paths are relative to (worker paths)
#   --data-root=DIR [DATA_ROOT]       T2I/T2V: a folder every worker sees (e.g. the bucket
#                                     mounted with gcsfuse), default /gcs/<bucket name>
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
#
# Example (fine-tuning GRN-2B T2I on a v5p-64 pod, the bucket mounted at /gcs/my-bucket):
#   export ZONE=us-east5-a BUCKET=gs://my-bucket CONFIG=configs/t2iv.py:variant=2B,task=t2i
#   launch/tpu_vm.sh create --accelerator-type=v5p-64 && launch/tpu_vm.sh copy
#   launch/tpu_vm.sh setup && launch/tpu_vm.sh convert
#   launch/tpu_vm.sh prepare-data --captions=/gcs/my-bucket/t2i/captions.jsonl \
#       --media-dir=/gcs/my-bucket/t2i/media
#   launch/tpu_vm.sh run --background
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
CAPTIONS=${CAPTIONS:-}
MEDIA_DIR=${MEDIA_DIR:-}
DATA_ROOT=${DATA_ROOT:-}
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
value_flag captions CAPTIONS
value_flag media-dir MEDIA_DIR
value_flag data-root DATA_ROOT
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
FAMILY=c2i
if [[ "${CONFIG}" == configs/t2iv.py* ]]; then
  FAMILY=t2iv
  TASK=t2i
  [[ "${CONFIG}" != *task=t2v* ]] || TASK=t2v
  DATA_ROOT=${DATA_ROOT:-${BUCKET:+/gcs/${BUCKET#gs://}}}
fi
WORKDIR=${WORKDIR:-${BUCKET:+${BUCKET}/runs/grn_$([[ ${FAMILY} == c2i ]] && echo b || echo "${TASK}_2b")}}

gcloud_tpu() {  # gcloud_tpu VERB ARGS...: gcloud compute tpus tpu-vm VERB with zone/project
  require_value zone "${ZONE}"
  local cmd=(gcloud compute tpus tpu-vm "$@" "--zone=${ZONE}")
  [[ -z "${PROJECT}" ]] || cmd+=("--project=${PROJECT}")
  run "${cmd[@]}"
}

on_workers() {  # on_workers WORKERS REMOTE_COMMAND_STRING
  gcloud_tpu ssh "${NAME}" "--worker=$1" "--command=$2"
}

family_flags() {  # the data and weight flags of the family, one per line
  if [[ "${FAMILY}" == c2i ]]; then
    printf '%s\n' "--config.data.data_dir=${BUCKET}/tfds" \
        "--config.tokenizer.checkpoint=${BUCKET}/weights/tokenizer"
  else  # packed bf16 training of the converted model, FSDP over the whole pod (configs/t2iv.py)
    printf '%s\n' "--config.data.data_dir=${DATA_ROOT}/t2iv_data" \
        "--config.train.init_from=${BUCKET}/weights/grn_${TASK}_2b" \
        --config.model.dtype=bfloat16 --config.model.remat_policy=full \
        --config.model.scan_layers=True --config.model.attention_impl=splash
  fi
}

main_command() {  # main_command MODE: the grn_jax.main invocation every worker runs
  local flags_of_family=()
  while IFS= read -r line; do flags_of_family+=("${line}"); done < <(family_flags)
  local words=(python3 -m grn_jax.main "--mode=$1" "--config=${CONFIG}" "--workdir=${WORKDIR}"
               --distributed "${flags_of_family[@]}" ${EXTRA[@]+"${EXTRA[@]}"})
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
  if [[ "${FAMILY}" == t2iv ]]; then
    require_value captions "${CAPTIONS}"
    require_value media-dir "${MEDIA_DIR}"
    local words=(python3 -m grn_jax.data.tokenize_captioned --distributed "--config=${CONFIG}"
                 "--config.tokenizer.checkpoint=${BUCKET}/weights/tokenizer64"
                 "--config.text_encoder.checkpoint=${BUCKET}/weights/umt5-xxl-jax/params"
                 "--config.text_encoder.tokenizer_path=${DATA_ROOT}/weights/umt5-xxl-jax/tokenizer"
                 "--captions=${CAPTIONS}" "--media_dir=${MEDIA_DIR}" "--out=${DATA_ROOT}/t2iv_data")
    on_workers all "cd ${REMOTE_DIR} && $(quote_words "${words[@]}")"
    return
  fi
  on_workers 0 "cd ${REMOTE_DIR} && python3 -m pip install -q tensorflow-datasets && \
tfds build imagenet2012 --data_dir=${BUCKET}/tfds --manual_dir=${BUCKET}/imagenet_manual"
}

do_convert() {
  require_value bucket "${BUCKET}"
  local hub=hf://bytedance-research/GRN
  if [[ "${FAMILY}" == t2iv ]]; then
    local model=GRN_T2I_2B.pth
    [[ "${TASK}" == t2i ]] || model=GRN_T2V_2B.pth
    on_workers 0 "cd ${REMOTE_DIR} && python3 -m pip install -q huggingface_hub torch && \
python3 -m grn_jax.convert --kind=tokenizer --src=${hub}/HBQ_tokenizer_64dim_M4.ckpt \
--dst=${BUCKET}/weights/tokenizer64 --config=${CONFIG} && \
python3 -m grn_jax.convert --kind=umt5 --src=${hub}/umt5-xxl \
--dst=${BUCKET}/weights/umt5-xxl-jax --config=configs/umt5.py:variant=xxl && \
python3 -m grn_jax.convert --kind=t2iv --src=${hub}/${model} \
--dst=${BUCKET}/weights/grn_${TASK}_2b --config=${CONFIG}"
    return
  fi
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
