# Shared helpers for the command-line tests (sourced). Each test runs the installed binaries
# as a user would: through arguments, pipes and files, checking stdout, stderr and exit codes.
set -euo pipefail
BIN=${NEEDLE_BIN:?NEEDLE_BIN not set}
DATA=${NEEDLE_TEST_DATA:?NEEDLE_TEST_DATA not set}
SHARED=${NEEDLE_SHARED_FIXTURES:-}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
pass=0

# expect_exit CODE NAME -- command...   (stdout -> $TMP/out, stderr -> $TMP/err)
expect_exit() {
  local want=$1 name=$2
  shift 3
  local got=0
  "$@" >"$TMP/out" 2>"$TMP/err" || got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL $name: exit $got, expected $want"; head -5 "$TMP/err" | sed 's/^/  stderr: /'
    fails=$((fails + 1)); return 0
  fi
  pass=$((pass + 1))
}
# The last command's stderr must be one line containing TEXT.
expect_one_line_error() {
  local name=$1 text=$2
  local lines
  lines=$(grep -c . "$TMP/err" || true)
  if [ "$lines" != 1 ] || ! grep -qF -- "$text" "$TMP/err"; then
    echo "FAIL $name: stderr should be one line with '$text', got:"; head -5 "$TMP/err" | sed 's/^/  /'
    fails=$((fails + 1)); return 0
  fi
  pass=$((pass + 1))
}
expect_stdout_has() {
  local name=$1 text=$2
  if ! grep -qF -- "$text" "$TMP/out"; then
    echo "FAIL $name: stdout lacks '$text'"; head -c 400 "$TMP/out"; echo
    fails=$((fails + 1)); return 0
  fi
  pass=$((pass + 1))
}
finish() {
  echo "$pass passed, $fails failed"
  [ "$fails" = 0 ]
}
