#!/usr/bin/env bash
# needle-finetune as a user runs it: a short run, a SIGKILL then --resume that must give
# bit-identical weights, SIGTERM saving a checkpoint, and bad data.
source "$(dirname "$0")/common.bash"
F=$BIN/needle-finetune
C=$BIN/needle-convert
D=$DATA/ft_small.jsonl   # 240 examples of the e2e task (fixtures/e2e/make_data.py)
"$C" "$DATA/tiny_np1_f16.pkl" -o "$TMP/base.needle" --tokenizer "$DATA/tiny_tok.model" --type f32 -q
COMMON=(-m "$TMP/base.needle" --epochs 2 --batch-size 8 --val-split 2 --no-eval --type f32 --seed 3 -t 2 -q)
crc() { "$C" --info "$1" --json | grep -o '"data_crc32":[0-9]*'; }

expect_exit 0 help -- "$F" --help
expect_stdout_has help "--resume"

# Uninterrupted reference run.
expect_exit 0 "full run" -- "$F" "$D" -o "$TMP/a.needle" "${COMMON[@]}" --log-jsonl "$TMP/log.jsonl"
if python3 - "$TMP/log.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if r["event"] == "step"]
assert len(steps) >= 20, len(steps)
assert all(r["loss"] > 0 and r["tok_s"] > 0 for r in steps)
# The base's validation loss first, then one validation line per epoch (finetune_errors.sh
# checks them in detail).
assert rows[0]["event"] == "val_base" and [r["epoch"] for r in rows if r["event"] == "val"] == [1, 2], rows
PY
then pass=$((pass + 1)); else echo "FAIL log-jsonl"; fails=$((fails + 1)); fi

# Killed with SIGKILL after a checkpoint, then resumed: the same final weights.
"$F" "$D" -o "$TMP/b.needle" "${COMMON[@]}" --checkpoint-dir "$TMP/ck" --checkpoint-every 4 &
pid=$!
for _ in $(seq 1 600); do [ -f "$TMP/ck/checkpoint.needle" ] && break; sleep 0.05; done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
if [ -f "$TMP/ck/checkpoint.needle" ]; then pass=$((pass + 1)); else echo "FAIL no checkpoint before kill"; fails=$((fails + 1)); fi
expect_exit 0 "resume" -- "$F" "$D" -o "$TMP/b.needle" "${COMMON[@]}" --resume "$TMP/ck"
if [ "$(crc "$TMP/a.needle")" = "$(crc "$TMP/b.needle")" ]; then pass=$((pass + 1)); else
  echo "FAIL kill+resume weights differ from the uninterrupted run"; fails=$((fails + 1)); fi
ls "$TMP"/ck/*.tmp.* >/dev/null 2>&1 && { echo "FAIL temp file left in checkpoint dir"; fails=$((fails + 1)); }

# SIGTERM saves and exits cleanly (130), and the run can be resumed.
"$F" "$D" -o "$TMP/c.needle" "${COMMON[@]}" --checkpoint-dir "$TMP/ck2" --checkpoint-every 1000 2>"$TMP/term.err" &
pid=$!
sleep 1.5
kill -TERM $pid 2>/dev/null || true
rc=0; wait $pid || rc=$?
if [ "$rc" = 130 ] && grep -q "resume" "$TMP/term.err"; then pass=$((pass + 1)); else
  echo "FAIL SIGTERM: exit $rc"; cat "$TMP/term.err"; fails=$((fails + 1)); fi
if [ "$rc" = 130 ]; then
  expect_exit 0 "resume after TERM" -- "$F" "$D" -o "$TMP/c.needle" "${COMMON[@]}" --resume "$TMP/ck2"
  if [ "$(crc "$TMP/a.needle")" = "$(crc "$TMP/c.needle")" ]; then pass=$((pass + 1)); else
    echo "FAIL TERM+resume weights differ"; fails=$((fails + 1)); fi
fi

# Bad data: bad lines are reported by number and skipped; too little data is a clear error.
{ head -40 "$D"; echo 'not json'; echo '{"query":"x"}'; } > "$TMP/bad.jsonl"
expect_exit 2 "too small" -- "$F" "$TMP/bad.jsonl" -o "$TMP/d.needle" -m "$TMP/base.needle" --batch-size 64 -q
expect_one_line_error "too small" "too little data"
expect_exit 0 "bad lines skipped" -- "$F" "$TMP/bad.jsonl" -o "$TMP/d.needle" -m "$TMP/base.needle" --epochs 1 \
  --batch-size 8 --val-split 1 --no-eval --type f32 -t 2
if grep -q "line 41" "$TMP/err" && grep -q "line 42" "$TMP/err"; then pass=$((pass + 1)); else
  echo "FAIL bad lines not reported"; cat "$TMP/err"; fails=$((fails + 1)); fi
expect_exit 2 "missing data" -- "$F" "$TMP/none.jsonl" -o "$TMP/e.needle" -m "$TMP/base.needle"
expect_one_line_error "missing data" "cannot open"
finish
