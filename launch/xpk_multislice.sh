#!/usr/bin/env bash
# Multi-slice TPU training on GKE with xpk (pip install xpk): one docker image with this code,
# a cluster of N slices, and a workload that runs grn_jax.main on every host of every slice
# (--distributed: jax.distributed.initialize() finds its peers through the JobSet).
#
#   launch/xpk_multislice.sh [--dry-run] SUBCOMMAND [flags] [-- extra grn_jax.main flags]
#
# Subcommands:
#   cluster   xpk cluster create (N slices of --tpu-type)
#   image     docker build (launch/Dockerfile) and push --image
#   submit    xpk workload create: python3 -m grn_jax.main --distributed on every host
#   list      xpk workload list
#   delete    xpk workload delete (the cluster stays)
#   teardown  xpk cluster delete
#
# Flags (--flag=VALUE or --flag VALUE; or the environment variable in brackets):
#   --cluster=NAME [CLUSTER]          default grn-xpk
#   --workload=NAME [WORKLOAD]        default grn-b-<date>
#   --tpu-type=T [TPU_TYPE]           default v5p-128 (per slice)
#   --num-slices=N [NUM_SLICES]       default 2
#   --zone=ZONE [ZONE], --project=P [PROJECT]   required
#   --capacity=spot|on-demand|reservation=ID [CAPACITY]   default spot
#   --image=REGISTRY/IMAGE:TAG [IMAGE]  default gcr.io/$PROJECT/grn_jax:latest
#   --bucket=gs://B [BUCKET]          tfds data in $BUCKET/tfds, converted tokenizer in
#                                     $BUCKET/weights/tokenizer (see launch/tpu_vm.sh
#                                     prepare-data / convert), runs in $BUCKET/runs
#   --config=C [CONFIG]               default configs/c2i.py:variant=B
#   --dry-run                         print the commands, run nothing
#
# The slices talk over the data-centre network, so only the batch ('data') axis crosses them:
# grn_jax.sharding.make_mesh builds a hybrid mesh (config.mesh.data a multiple of the slices;
# fsdp/tensor stay within a slice, e.g. --config.mesh.data=<slices> --config.mesh.fsdp=-1).
# submit prints the smallest slice the config needs, from the TPU memory table (docs/aot.md).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CLUSTER=${CLUSTER:-grn-xpk}
WORKLOAD=${WORKLOAD:-grn-b-$(date +%m%d-%H%M)}
TPU_TYPE=${TPU_TYPE:-v5p-128}
NUM_SLICES=${NUM_SLICES:-2}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
CAPACITY=${CAPACITY:-spot}
IMAGE=${IMAGE:-}
BUCKET=${BUCKET:-}
CONFIG=${CONFIG:-configs/c2i.py:variant=B}
value_flag cluster CLUSTER
value_flag workload WORKLOAD
value_flag tpu-type TPU_TYPE
value_flag num-slices NUM_SLICES
value_flag zone ZONE
value_flag project PROJECT
value_flag capacity CAPACITY
value_flag image IMAGE
value_flag bucket BUCKET
value_flag config CONFIG
parse_args "$@"
[[ "${NUM_SLICES}" =~ ^[1-9][0-9]*$ ]] || die "--num-slices must be a positive integer."
require_value zone "${ZONE}"
require_value project "${PROJECT}"
IMAGE=${IMAGE:-gcr.io/${PROJECT}/grn_jax:latest}
BUCKET=${BUCKET%/}
COMMON=("--cluster=${CLUSTER}" "--zone=${ZONE}" "--project=${PROJECT}")

case "${CAPACITY}" in
  spot) CAPACITY_FLAG=--spot ;;
  on-demand) CAPACITY_FLAG=--on-demand ;;
  reservation=?*) CAPACITY_FLAG="--reservation=${CAPACITY#*=}" ;;
  *) die "--capacity must be spot, on-demand or reservation=ID, got ${CAPACITY}." ;;
esac

case "${SUBCOMMAND}" in
  cluster)
    run xpk cluster create "${COMMON[@]}" "--tpu-type=${TPU_TYPE}" \
        "--num-slices=${NUM_SLICES}" "${CAPACITY_FLAG}" ;;
  image)
    cd "$(repo_root)"
    run docker build -f launch/Dockerfile -t "${IMAGE}" .
    run docker push "${IMAGE}" ;;
  submit)
    require_value bucket "${BUCKET}"
    [[ "${BUCKET}" == gs://* ]] || die "--bucket must start with gs://."
    slice_note "${CONFIG}" "${TPU_TYPE}" "${NUM_SLICES}"
    words=(python3 -m grn_jax.main --mode=train "--config=${CONFIG}"
           "--workdir=${BUCKET}/runs/${WORKLOAD}" --distributed
           "--config.data.data_dir=${BUCKET}/tfds"
           "--config.tokenizer.checkpoint=${BUCKET}/weights/tokenizer" "${EXTRA[@]}")
    run xpk workload create "${COMMON[@]}" "--workload=${WORKLOAD}" \
        "--docker-image=${IMAGE}" "--tpu-type=${TPU_TYPE}" "--num-slices=${NUM_SLICES}" \
        "--command=$(quote_words "${words[@]}")" ;;
  list) run xpk workload list "${COMMON[@]}" ;;
  delete) run xpk workload delete "${COMMON[@]}" "--workload=${WORKLOAD}" ;;
  teardown) run xpk cluster delete "${COMMON[@]}" ;;
  *) die "unknown subcommand ${SUBCOMMAND} (see --help)." ;;
esac
