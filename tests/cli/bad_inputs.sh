#!/usr/bin/env bash
# The malformed-input corpus (tests/bad_inputs/, README.md there) through every tool input it
# fits. For each tool and input: exit 2 (bad input; never a signal or a hang), exactly one line
# on stderr, "<tool>: error: ...", matching the case's pattern, nothing on stdout, and no output
# or temporary file left in the output directory. JSONL inputs of needle-eval and
# needle-finetune run with -q (without it they print one documented warning per skipped line
# first); needle-run --jsonl answers bad lines on stdout and goes on (documented), checked so.
# A missing tool or python3 is a failure, not a skip (exit 77 made ctest report a partial build
# as "skipped", which CI would pass).
source "$(dirname "$0")/common.bash"
CORPUS=$(cd "$(dirname "$0")/../bad_inputs" && pwd)
R=$BIN/needle-run E=$BIN/needle-eval C=$BIN/needle-convert F=$BIN/needle-finetune B=$BIN/needle-bench
for t in "$R" "$E" "$C" "$F" "$B"; do [ -x "$t" ] || { echo "FAIL $t not built (a partial build: build every target before ctest)"; exit 1; }; done
command -v python3 >/dev/null || { echo "FAIL python3 not found (scripts/setup installs it)"; exit 1; }
t_start=$SECONDS

# The committed corpus is exactly what its generator writes.
if python3 "$CORPUS/gen.py" --check; then pass=$((pass + 1)); else
  echo "FAIL tests/bad_inputs differs from gen.py (run tests/bad_inputs/gen.py)"; fails=$((fails + 1)); fi

# Fixtures: the tiny model (f32, with its tokenizer), tools, good data for the other slots.
M=$TMP/tiny.needle
"$C" "$DATA/tiny_np1_f16.pkl" -o "$M" --tokenizer "$DATA/tiny_tok.model" --type f32 -q
TOOLS=$TMP/tools.json
echo '[{"name":"getWeather","description":"Weather","parameters":{"city":{"type":"string","description":"City","required":true}}}]' >"$TOOLS"
GOOD=$TMP/good.jsonl
echo "{\"query\":\"weather in Oslo\",\"tools\":$(cat "$TOOLS"),\"answers\":[{\"name\":\"getWeather\",\"arguments\":{\"city\":\"Oslo\"}}]}" >"$GOOD"
BFCL=$TMP/bfcl.jsonl
echo '{"id":"simple_0","question":[[{"role":"user","content":"area of radius 3"}]],"function":[{"name":"area","description":"Area","parameters":{"type":"dict","properties":{"r":{"type":"integer","description":"r"}},"required":["r"]}}]}' >"$BFCL"
mkdir "$TMP/adir"
GEN=$TMP/gen
mkdir "$GEN"
python3 "$CORPUS/gen.py" --derive "$GEN" --pkl "$DATA/tiny_np1_f16.pkl" --needle "$M" --tok "$DATA/tiny_tok.model"

O=$TMP/o  # the only place the tools under test may write
FT=(-o "$O/out.needle" --export-pkl "$O/out.pkl" --checkpoint-dir "$O/ck" --log-jsonl "$O/log.jsonl"
    --no-eval --epochs 1 --batch-size 8 --val-split 1 -t 1)
EV=(--report "$O/report.json" --out "$O/pred.jsonl" --max-tokens 8 -t 1)
HAVE_TIME=0
[ -x /usr/bin/time ] && HAVE_TIME=1
fail_case() {
  echo "FAIL $1: $2"
  head -4 "$TMP/err" | cut -c1-300 | sed 's/^/  stderr: /'
  head -c 300 "$TMP/out" | sed -n '1,3s/^/  stdout: /p'
  fails=$((fails + 1))
}

# check LABEL EXPECT [STDIN_FILE] -- command...
# EXPECT: an ERE the one error line must match; OK: exit 0; ANY: exit 0 (then the -o output
# must pass --verify) or exit 2 with one error line. Bash builtins only, apart from the tool
# itself: the test runs some 600 commands.
shopt -s nullglob dotglob
mkdir "$O"
check() {
  local label=$1 expect=$2 stdin=/dev/null
  shift 2
  if [ "$1" != -- ]; then stdin=$1; shift; fi
  shift
  local tool=${1##*/} rc=0 t0=$EPOCHREALTIME left
  left=("$O"/*)
  if [ ${#left[@]} != 0 ]; then rm -rf "$O"; mkdir "$O"; fi
  timeout 300 "$@" <"$stdin" >"$TMP/out" 2>"$TMP/err" || rc=$?
  [ -n "${BAD_INPUTS_TIMES:-}" ] && echo "$(( ${EPOCHREALTIME/./} / 1000 - ${t0/./} / 1000 )) $label" >>"$BAD_INPUTS_TIMES"
  local err=() first
  mapfile -t err <"$TMP/err"
  first=${err[0]:-}
  left=("$O"/*)
  if [ "$rc" = 124 ]; then fail_case "$label" "timed out (300 s)"; return 0; fi
  if [ "$rc" -ge 128 ]; then fail_case "$label" "killed by signal $((rc - 128))"; return 0; fi
  if [ "$expect" = OK ] || { [ "$expect" = ANY ] && [ "$rc" = 0 ]; }; then
    if [ "$rc" != 0 ]; then fail_case "$label" "exit $rc, expected 0"; return 0; fi
    if [ "$expect" = ANY ] && [ -e "$O/out.needle" ] && ! "$C" --verify "$O/out.needle" >/dev/null 2>&1; then
      fail_case "$label" "accepted, but the output does not pass --verify"; return 0
    fi
    pass=$((pass + 1)); return 0
  fi
  if [ "$rc" != 2 ]; then fail_case "$label" "exit $rc, expected 2"; return 0; fi
  if [ ${#err[@]} != 1 ]; then fail_case "$label" "${#err[@]} lines on stderr, expected one"; return 0; fi
  if [[ $first != "$tool: error: "* ]]; then fail_case "$label" "stderr is not '$tool: error: ...'"; return 0; fi
  if [ "$expect" != ANY ] && ! [[ $first =~ $expect ]]; then
    fail_case "$label" "the error does not match /$expect/"; return 0
  fi
  if [ -s "$TMP/out" ]; then fail_case "$label" "output on stdout"; return 0; fi
  if [ ${#left[@]} != 0 ]; then fail_case "$label" "left behind: ${left[*]##*/}"; return 0; fi
  pass=$((pass + 1))
}

# needle-run --jsonl: documented to answer a bad line with {"error":"line N: ..."} on stdout
# and go on (exit 0). Every output line must be such an error, one of them matching EXPECT.
check_run_jsonl() {
  local label=$1 expect=$2 file=$3 rc=0
  timeout 300 "$R" -m "$M" --jsonl --max-tokens 8 -t 1 <"$file" >"$TMP/out" 2>"$TMP/err" || rc=$?
  if [ "$rc" != 0 ]; then fail_case "$label" "exit $rc, expected 0 (bad lines are answered on stdout)"; return 0; fi
  if [ -s "$TMP/err" ]; then fail_case "$label" "unexpected stderr"; return 0; fi
  if python3 - "$TMP/out" "$expect" "$file" <<'PY'
import json, re, sys
out, expect, src = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(out, "rb").read().decode().splitlines()]
assert all(set(r) <= {"id", "error"} and "error" in r for r in rows), rows[:3]
with open(src, "rb") as f:
    lines = sum(1 for l in f if l.strip())
assert len(rows) == lines, (len(rows), lines)
assert lines == 0 or any(re.search(expect, r["error"]) for r in rows), rows[:3]
PY
  then pass=$((pass + 1)); else fail_case "$label" "stdout is not one {\"error\"} per line matching /$expect/"; fi
}

# One input slot of one tool: invoke SLOT FILE EXPECT LABEL
invoke() {
  local slot=$1 f=$2 e=$3 n=$4
  case $slot in
    run-m) check "$n [run -m]" "$e" -- "$R" -m "$f" --tools "$TOOLS" "weather in Paris" ;;
    eval-m) check "$n [eval -m]" "$e" -- "$E" -m "$f" "$GOOD" "${EV[@]}" ;;
    finetune-m) check "$n [finetune -m]" "$e" -- "$F" "$DATA/ft_small.jsonl" -m "$f" "${FT[@]}" ;;
    bench-m) check "$n [bench -m]" "$e" -- "$B" -m "$f" --runs 1 --enc-len 8 --gen-len 2 -t 1 ;;
    info) check "$n [convert --info]" "$e" -- "$C" --info "$f" ;;
    verify) check "$n [convert --verify]" "$e" -- "$C" --verify "$f" ;;
    convert) check "$n [convert IN]" "$e" -- "$C" "$f" -o "$O/out.needle" --export-pkl "$O/out.pkl" ;;
    tools) check "$n [run --tools]" "$e" -- "$R" -m "$M" --tools "$f" "weather in Paris" ;;
    query) check "$n [run stdin query]" "$e" "$f" -- "$R" -m "$M" --tools "$TOOLS" ;;
    eval-data) check "$n [eval DATA -q]" "$e" -- "$E" -m "$M" "$f" "${EV[@]}" -q ;;
    bfcl-data) check "$n [eval --format bfcl DATA -q]" "$e" -- "$E" -m "$M" "$f" --format bfcl "${EV[@]}" -q ;;
    finetune-data) check "$n [finetune DATA -q]" "$e" -- "$F" "$f" -m "$M" "${FT[@]}" -q ;;
    run-jsonl) check_run_jsonl "$n [run --jsonl]" "$e" "$f" ;;
    answers) check "$n [eval --answers -q]" "$e" -- "$E" -m "$M" "$BFCL" --format bfcl --answers "$f" "${EV[@]}" -q ;;
    config) check "$n [finetune --config]" "$e" -- "$F" "$DATA/ft_small.jsonl" --init random --config "$f" \
      --tokenizer "$DATA/tiny_tok.model" "${FT[@]}" ;;
    convert-tok) check "$n [convert --tokenizer]" "$e" -- "$C" "$DATA/tiny_np1_f16.pkl" -o "$O/out.needle" --tokenizer "$f" ;;
    run-tok) check "$n [run --tokenizer]" "$e" -- "$R" -m "$M" --tools "$TOOLS" --tokenizer "$f" "weather in Paris" ;;
    eval-tok) check "$n [eval --tokenizer]" "$e" -- "$E" -m "$M" "$GOOD" --tokenizer "$f" "${EV[@]}" ;;
    finetune-tok) check "$n [finetune --tokenizer]" "$e" -- "$F" "$DATA/ft_small.jsonl" -m "$M" --tokenizer "$f" "${FT[@]}" ;;
    *) echo "FAIL unknown slot $slot"; fails=$((fails + 1)) ;;
  esac
}
expand() {
  case $1 in
    model) echo run-m eval-m finetune-m bench-m info verify convert ;;
    loaders) echo run-m eval-m finetune-m bench-m ;;
    info) echo info verify ;;
    jsonl) echo eval-data bfcl-data finetune-data run-jsonl ;;
    tokenizer) echo convert-tok run-tok eval-tok finetune-tok ;;
    *) echo "$1" ;;
  esac
}
run_manifest() {  # run_manifest DIR: every row of DIR/manifest.tsv
  local dir=$1 file slots expect intent s
  while IFS=$'\t' read -r file slots expect intent; do
    for s in $(expand "$slots"); do invoke "$s" "$dir/$file" "$expect" "$file"; done
  done <"$dir/manifest.tsv"
}

run_manifest "$CORPUS"
run_manifest "$GEN"
# The pickles of tests/data/bad_pickles (written by a real pickler, tests/data/bad_pickles/
# make_samples.py), to needle-convert and to needle-run -m.
while read -r file expect; do
  invoke convert "$DATA/bad_pickles/$file" "$expect" "bad_pickles/$file"
  invoke run-m "$DATA/bad_pickles/$file" "not a \.needle file" "bad_pickles/$file"
done <<'T'
bad_config_list.pkl config 'bad' is a list
bad_eval_p2.pkl global '__builtin__\.eval' is not allowed
bad_int_array.pkl has dtype int32
bad_no_params.pkl has no 'params' dict
bad_object_array.pkl object arrays are not supported
bad_os_system.pkl global 'posix\.system' is not allowed
bad_set.pkl sets are not supported
bad_subprocess.pkl global 'subprocess\.Popen' is not allowed
T

# A directory, and a missing file, given as every file argument (stdin slots aside).
for s in run-m eval-m finetune-m bench-m info verify convert tools eval-data bfcl-data finetune-data answers config \
         convert-tok run-tok eval-tok finetune-tok; do
  invoke "$s" "$TMP/adir" "directory" "a directory"
  invoke "$s" "$TMP/missing" "cannot open|No such file" "a missing file"
done
# A tokenizer of another vocabulary (the e2e fixture's 2,000 pieces for the 1,000-piece model).
if [ -n "$SHARED" ] && [ -f "$SHARED/e2e/e2e_tok.model" ]; then
  invoke convert-tok "$SHARED/e2e/e2e_tok.model" "tokenizer has 2000 pieces but the model's vocabulary is 1000" "e2e_tok.model"
  invoke run-tok "$SHARED/e2e/e2e_tok.model" "tokenizer has 2000 pieces" "e2e_tok.model"
else
  echo "note: shared fixtures absent; the vocabulary mismatch case was not run"
fi
# A directory as the output file: an I/O failure (exit 1), one line, the directory untouched,
# no temporary file.
mkdir -p "$TMP/odir/out.needle"
rc=0
"$C" "$DATA/tiny_np1_f16.pkl" -o "$TMP/odir/out.needle" >"$TMP/out" 2>"$TMP/err" || rc=$?
if [ "$rc" = 1 ] && [ "$(grep -c '' "$TMP/err")" = 1 ] && grep -q "^needle-convert: error: .*out.needle" "$TMP/err" &&
   [ -d "$TMP/odir/out.needle" ] && [ "$(ls -A "$TMP/odir")" = out.needle ]; then pass=$((pass + 1)); else
  fail_case "-o is a directory [convert]" "exit $rc; left: $(ls -A "$TMP/odir" | tr '\n' ' ')"; fi

# The 100 MB line as needle-run's query on stdin: documented to be cut to 256 KiB with a
# warning (exit 0, a result). Peak memory stays bounded for every 100 MB case.
rc=0
"$R" -m "$M" --tools "$TOOLS" --max-tokens 4 -t 1 <"$GEN/gen_line_100mb.jsonl" >"$TMP/out" 2>"$TMP/err" || rc=$?
if [ "$rc" = 0 ] && grep -q "over 262144 bytes" "$TMP/err" && [ "$(grep -c '' "$TMP/out")" = 1 ] &&
   python3 -c 'import json,sys; assert isinstance(json.load(open(sys.argv[1])), list)' "$TMP/out"; then
  pass=$((pass + 1)); else fail_case "100 MB query on stdin" "exit $rc"; fi
if [ $HAVE_TIME = 1 ]; then
  rss() {  # rss LABEL -- command...: peak RSS under 400 MB
    local label=$1
    shift 2
    /usr/bin/time -o "$TMP/rss" -f %M "$@" >/dev/null 2>&1 || true
    local kb
    kb=$(tail -1 "$TMP/rss")
    if [ "$kb" -lt 409600 ]; then pass=$((pass + 1)); else echo "FAIL $label: peak RSS $kb KB"; fails=$((fails + 1)); fi
  }
  rss "100 MB line, run --jsonl" -- bash -c "'$R' -m '$M' --jsonl -t 1 < '$GEN/gen_line_100mb.jsonl'"
  rss "100 MB line, eval" -- "$E" -m "$M" "$GEN/gen_line_100mb.jsonl" -q
  rss "100 MB line, finetune" -- "$F" "$GEN/gen_line_100mb.jsonl" -m "$M" -o "$TMP/x.needle" -q
  rss "100 MB query" -- bash -c "'$R' -m '$M' --tools '$TOOLS' --max-tokens 4 -t 1 < '$GEN/gen_line_100mb.jsonl'"
  rss "100 MB model" -- "$C" "$GEN/gen_line_100mb.jsonl" -o "$TMP/x.needle"
else
  echo "note: /usr/bin/time missing; peak memory not checked"
fi
echo "bad_inputs: $((SECONDS - t_start)) s"
finish
