# Shared helpers of the launch scripts (sourced, not run): the one argument parser, `run`, and
# small utilities.
#
# Every command that touches a machine goes through `run`, which prints it (shell-quoted, one
# line starting with "+ ") and executes it unless --dry-run was given. Dry runs therefore show
# exactly what a real run would issue; tests/test_launch.py parses those lines.
#
# Exit status: a failing command ends the script with the command's own status. Status 75
# (EXIT_INTERRUPTED) means that grn_jax was stopped by SIGTERM or SIGINT after saving its work
# (a checkpoint, or the finished samples): `run` says so, and running the same command again
# resumes. 0 is success; anything else is an error.
#
# Argument parsing: a script declares its flags, then hands its arguments to `parse_args`:
#   value_flag zone ZONE         --zone=VALUE or --zone VALUE sets $ZONE
#   switch_flag spot SPOT        --spot sets $SPOT=1
#   parse_args "$@"              sets $SUBCOMMAND (exactly one) and $EXTRA (the words after --)
# --dry-run and -h/--help are known to every script (the help is the script's header comment).
# Unknown flags, a missing value, a value given to a switch and a second subcommand fail with a
# message naming the flag. Plain indexed arrays only, so bash 3.2 (macOS) runs it too.

DRY_RUN=${DRY_RUN:-0}
SUBCOMMAND=""
EXTRA=()
_VALUE_FLAGS=()
_VALUE_VARS=()
_SWITCH_FLAGS=()
_SWITCH_VARS=()

die() {
  echo "error: $*" >&2
  exit 2
}

EXIT_INTERRUPTED=75

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ "${DRY_RUN}" != 1 ]]; then
    local status=0
    "$@" || status=$?
    if ((status == EXIT_INTERRUPTED)); then
      echo "stopped by a signal after saving its work (exit status ${status}); run the same" \
           "command again to resume." >&2
    fi
    return "${status}"
  fi
}

# Quotes words into one string for a remote `--command` (the remote shell splits it again).
quote_words() {
  local out="" word
  for word in "$@"; do
    out+="$(printf '%q' "${word}") "
  done
  printf '%s' "${out% }"
}

# The repository root (launch/..), independent of the caller's working directory.
repo_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}

require_value() {  # require_value NAME VALUE: fails with a message naming the flag
  [[ -n "$2" ]] || die "--$1 is required (or set it in the environment; see --help)."
}

usage() {  # the calling script's header comment, from line 2 to `set -euo pipefail`
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

value_flag() {  # value_flag NAME VAR
  _VALUE_FLAGS+=("$1")
  _VALUE_VARS+=("$2")
}

switch_flag() {  # switch_flag NAME VAR
  _SWITCH_FLAGS+=("$1")
  _SWITCH_VARS+=("$2")
}

_index_of() {  # _index_of NAME ITEMS...: prints the index of NAME among ITEMS, or fails
  local name=$1 i=0 item
  shift
  for item in "$@"; do
    if [[ "${item}" == "${name}" ]]; then
      printf '%s' "${i}"
      return 0
    fi
    i=$((i + 1))
  done
  return 1
}

parse_args() {
  local arg name value i
  while (($#)); do
    arg=$1
    case "${arg}" in
      --) shift; EXTRA=("$@"); break ;;
      -h|--help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1 ;;
      --*)
        name=${arg#--}
        name=${name%%=*}
        if i=$(_index_of "${name}" ${_VALUE_FLAGS[@]+"${_VALUE_FLAGS[@]}"}); then
          if [[ "${arg}" == *=* ]]; then
            value=${arg#*=}
          else
            (($# > 1)) && [[ "$2" != --* ]] ||
              die "--${name} needs a value: --${name}=VALUE or --${name} VALUE."
            value=$2
            shift
          fi
          printf -v "${_VALUE_VARS[i]}" '%s' "${value}"
        elif i=$(_index_of "${name}" ${_SWITCH_FLAGS[@]+"${_SWITCH_FLAGS[@]}"}); then
          [[ "${arg}" != *=* ]] || die "--${name} takes no value (got ${arg})."
          printf -v "${_SWITCH_VARS[i]}" '%s' 1
        else
          die "unknown flag --${name} (see --help)."
        fi ;;
      -*) die "unknown flag ${arg} (see --help)." ;;
      *)
        [[ -z "${SUBCOMMAND}" ]] || die "one subcommand at a time (got ${SUBCOMMAND} and ${arg})."
        SUBCOMMAND=${arg} ;;
    esac
    shift
  done
  [[ -n "${SUBCOMMAND}" ]] || { usage; die "missing SUBCOMMAND."; }
}

# The smallest TPU slice each job fits on, from the TPU memory table (docs/aot.md; made by
# `python -m grn_jax.benchmarks.aot_table`, which compiles each program with the TPU compiler
# for that slice). Training at the settings of the table's row (bf16, scanned blocks, FSDP over
# the slice).
table_slice() {  # table_slice CONFIG: the accelerator type, or nothing if the table has no row
  case "$1" in
    configs/c2i.py|configs/c2i.py:variant=B*) printf 'v5p-16' ;;
    configs/c2i.py:variant=L*) printf 'v5p-32' ;;
    configs/c2i.py:variant=[HG]*) printf 'v5p-64' ;;
  esac
}

_slice_chips() {  # _slice_chips TYPE: chips of a Cloud accelerator type (v5p/v4 count cores)
  local n=${1##*-}
  case "$1" in v5p-*|v4-*) printf '%s' $((n / 2)) ;; *) printf '%s' "${n}" ;; esac
}

slice_note() {  # slice_note CONFIG TYPE [SLICES]: the table's slice for this job, on stdout
  local need slices=${3:-1}
  need=$(table_slice "$1")
  if [[ -z "${need}" ]]; then
    echo "# slice: the TPU memory table (docs/aot.md) has no row for ${1}; check it first with" \
         "python -m grn_jax.aot --config=${1} --topology=${2}"
    return 0
  fi
  echo "# slice: ${1} needs ${need} or larger per slice (docs/aot.md); this job uses" \
       "${slices} x ${2}"
  if [[ "${need%%-*}" == "${2%%-*}" ]] &&
     (($(_slice_chips "${2}") < $(_slice_chips "${need}"))); then
    echo "warning: ${2} is smaller than the ${need} that ${1} needs (docs/aot.md)." >&2
  fi
}
