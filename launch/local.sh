#!/usr/bin/env bash
# This machine (CPU, or one GPU): a virtual environment, the digits demo, tests, a tiny run.
#
#   launch/local.sh [--dry-run] SUBCOMMAND [flags] [-- extra flags]
#
# Subcommands:
#   setup      python3 -m venv .venv; pip install the pinned requirements and this package
#   demo       the embedded digits demo (about 10 minutes on 2 CPU cores) into --workdir
#   evaluate   digits-classifier accuracy and Frechet distance of the demo's samples
#   test       the test suite (pytest -n 2)
#   tiny       a few-second C2I training run on synthetic labels (configs/c2i.py:variant=tiny)
#
# Flags (--flag=VALUE or --flag VALUE): --workdir=DIR (default workdir/demo, for tiny
# workdir/tiny), --python=PY (default .venv/bin/python if it exists, else python3), --dry-run
# (print the commands, run nothing).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$(repo_root)"

WORKDIR=${WORKDIR:-}
PYTHON=${PYTHON:-}
value_flag workdir WORKDIR
value_flag python PYTHON
parse_args "$@"
if [[ -z "${PYTHON}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if [[ -z "${WORKDIR}" ]]; then
  if [[ "${SUBCOMMAND}" == tiny ]]; then WORKDIR=workdir/tiny; else WORKDIR=workdir/demo; fi
fi

case "${SUBCOMMAND}" in
  setup)
    run python3 -m venv .venv
    run .venv/bin/python -m pip install -r requirements.txt -e . ;;
  demo)
    run "${PYTHON}" -m grn_jax.main --config=configs/demo.py "--workdir=${WORKDIR}" "${EXTRA[@]}" ;;
  evaluate)
    run "${PYTHON}" -m grn_jax.demo.evaluate "--samples=${WORKDIR}/samples.npz" \
        "--samples=${WORKDIR}/samples_adaptive.npz" "${EXTRA[@]}" ;;
  test)
    run "${PYTHON}" -m pip install -q -r requirements-test.txt
    run "${PYTHON}" -m pytest -n 2 -q tests "${EXTRA[@]}" ;;
  tiny)
    run "${PYTHON}" -m grn_jax.main --mode=train --config=configs/c2i.py:variant=tiny \
        "--workdir=${WORKDIR}" "${EXTRA[@]}" ;;
  *) die "unknown subcommand ${SUBCOMMAND} (see --help)." ;;
esac
