# Shared helpers of the launch scripts (sourced, not run).
#
# Every command that touches a machine goes through `run`, which prints it (shell-quoted, one
# line starting with "+ ") and executes it unless --dry-run was given. Dry runs therefore show
# exactly what a real run would issue; tests/test_launch.py parses those lines.

DRY_RUN=${DRY_RUN:-0}

die() {
  echo "error: $*" >&2
  exit 2
}

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ "${DRY_RUN}" != 1 ]]; then
    "$@"
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
