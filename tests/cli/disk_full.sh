#!/usr/bin/env bash
# A full disk, simulated with `ulimit -f` (the tools ignore SIGXFSZ, so a write past the limit
# fails with EFBIG): every write that fails gives one clear error line and a non-zero exit,
# the previous file under the final name stays intact (checkpoints: still loadable, --resume
# from it finishes with the uninterrupted run's output), and no temporary or half-written file
# is left.
source "$(dirname "$0")/common.bash"
F=$BIN/needle-finetune
C=$BIN/needle-convert
E=$BIN/needle-eval
for t in "$F" "$C" "$E"; do [ -x "$t" ] || { echo "FAIL $t not built (a partial build: build every target before ctest)"; exit 1; }; done
t_start=$SECONDS
no_temp() {  # no_temp LABEL DIR...
  local label=$1 left
  shift
  left=$(find "$@" -name '*.tmp.*' | tr '\n' ' ')
  if [ -z "$left" ]; then pass=$((pass + 1)); else
    echo "FAIL $label: temporary files left: $left"; fails=$((fails + 1))
    find "$@" -name '*.tmp.*' -delete  # so that the next check sees only its own
  fi
}
same() {  # same LABEL A B
  if cmp -s "$2" "$3"; then pass=$((pass + 1)); else echo "FAIL $1: $2 changed"; fails=$((fails + 1)); fi
}
blocks() { echo $(( ($(stat -c %s "$1") / 1024) )); }  # whole 1 KiB blocks below the size

echo '{"vocab_size":1000,"d_model":32,"num_heads":2,"num_kv_heads":1,"num_encoder_layers":1,"num_decoder_layers":1,"contrastive_dim":8}' >"$TMP/cfg.json"
ARGS=("$DATA/ft_small.jsonl" --init random --config "$TMP/cfg.json" --tokenizer "$DATA/tiny_tok.model"
      --epochs 2 --batch-size 8 --val-split 2 --no-eval --type f32 --seed 9 -t 1)

# Reference: uninterrupted, with checkpoints; its checkpoint size sets the limits below.
expect_exit 0 "reference" -- "$F" "${ARGS[@]}" -q -o "$TMP/ref.needle" --checkpoint-dir "$TMP/refck" --checkpoint-every 4
ck_blocks=$(blocks "$TMP/refck/checkpoint.needle")
out_blocks=$(blocks "$TMP/ref.needle")
echo "checkpoint $(stat -c %s "$TMP/refck/checkpoint.needle") bytes, output $(stat -c %s "$TMP/ref.needle") bytes"

# 1. A checkpoint write fails: start a run, stop it (SIGTERM saves a checkpoint), then resume
#    it with a file size limit under the checkpoint's size. The run must stop with one error
#    line and a non-zero exit, the previous checkpoint must be byte-identical, and resuming
#    from it without the limit must finish with the reference output.
"$F" "${ARGS[@]}" -q -o "$TMP/a.needle" --checkpoint-dir "$TMP/ck" --checkpoint-every 1000 \
  --log-jsonl "$TMP/a.log" 2>"$TMP/term.err" &
pid=$!
for _ in $(seq 1 1200); do [ "$(cat "$TMP/a.log" 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 0.05; done
kill -TERM $pid 2>/dev/null || true
rc=0; wait $pid || rc=$?
if [ "$rc" != 130 ] || [ ! -f "$TMP/ck/checkpoint.needle" ]; then
  echo "FAIL could not make a first checkpoint (exit $rc)"; cat "$TMP/term.err"; fails=$((fails + 1)); finish; fi
cp "$TMP/ck/checkpoint.needle" "$TMP/ck.copy"
limit=$((ck_blocks / 2))
expect_exit 1 "checkpoint write fails" -- bash -c "ulimit -f $limit; exec '$F' \"\$@\" -q -o '$TMP/a.needle' --resume '$TMP/ck' --checkpoint-every 1" _ "${ARGS[@]}"
expect_one_line_error "checkpoint write fails" "File too large"
same "checkpoint write fails" "$TMP/ck.copy" "$TMP/ck/checkpoint.needle"
[ ! -e "$TMP/a.needle" ] && pass=$((pass + 1)) || { echo "FAIL output written although checkpoints failed"; fails=$((fails + 1)); }
no_temp "checkpoint write fails" "$TMP"
expect_exit 0 "resume after the failure" -- "$F" "${ARGS[@]}" -q -o "$TMP/a.needle" --resume "$TMP/ck" --checkpoint-every 1000
same "resume after the failure equals the uninterrupted run" "$TMP/ref.needle" "$TMP/a.needle"

# 1b. SIGTERM when its checkpoint cannot be written: exit 1 and one line saying so; it must
#     not claim that a checkpoint was saved.
bash -c "ulimit -f $limit; exec '$F' \"\$@\" -q -o '$TMP/e.needle' --checkpoint-dir '$TMP/ck3' --checkpoint-every 1000 \
  --log-jsonl '$TMP/e.log'" _ "${ARGS[@]}" >/dev/null 2>"$TMP/err" &
pid=$!
for _ in $(seq 1 1200); do [ "$(cat "$TMP/e.log" 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 0.05; done
kill -TERM $pid 2>/dev/null || true
rc=0; wait $pid || rc=$?
if [ "$rc" = 1 ] && [ "$(grep -c '' "$TMP/err")" = 1 ] && grep -q "File too large" "$TMP/err" &&
   ! grep -q "checkpoint saved" "$TMP/err"; then pass=$((pass + 1)); else
  echo "FAIL SIGTERM with a failing checkpoint write: exit $rc"; head -5 "$TMP/err" | sed 's/^/  /'; fails=$((fails + 1)); fi
no_temp "SIGTERM with a failing checkpoint write" "$TMP"

# 2. The output write fails (limit under the output's size, above everything else written):
#    exit 1, one line naming the problem, the previous output untouched, no temporary file.
echo "previous" >"$TMP/b.needle"
cp "$TMP/b.needle" "$TMP/b.copy"
expect_exit 1 "output write fails" -- bash -c "ulimit -f $((out_blocks / 2)); exec '$F' \"\$@\" -q -o '$TMP/b.needle'" _ "${ARGS[@]}"
expect_one_line_error "output write fails" "File too large"
same "output write fails" "$TMP/b.copy" "$TMP/b.needle"
no_temp "output write fails" "$TMP"

# 3. --log-jsonl past the limit (a log line per step): the run must not crash; it either
#    finishes or stops with one error line.
rc=0
bash -c "ulimit -f 1; exec '$F' \"\$@\" -q -o '$TMP/c.needle' --log-jsonl '$TMP/c.log'" _ "${ARGS[@]}" >"$TMP/out" 2>"$TMP/err" || rc=$?
if [ "$rc" -lt 128 ] && { [ "$rc" = 0 ] || [ "$(grep -c '' "$TMP/err")" = 1 ]; }; then pass=$((pass + 1)); else
  echo "FAIL --log-jsonl past the file size limit: exit $rc"; head -5 "$TMP/err" | sed 's/^/  /'; fails=$((fails + 1)); fi

# 4. needle-convert -o and --export-pkl: a valid previous file stays byte-identical.
"$C" "$DATA/tiny_np1_f16.pkl" -o "$TMP/d.needle" --type f32 -q
cp "$TMP/d.needle" "$TMP/d.copy"
expect_exit 1 "convert -o fails" -- bash -c "ulimit -f $(( $(blocks "$TMP/d.needle") / 2 )); exec '$C' '$DATA/tiny_np1_f16.pkl' -o '$TMP/d.needle' --type f32"
expect_one_line_error "convert -o fails" "File too large"
same "convert -o fails" "$TMP/d.copy" "$TMP/d.needle"
"$C" "$TMP/d.needle" --export-pkl "$TMP/d.pkl" -q
cp "$TMP/d.pkl" "$TMP/d.pkl.copy"
expect_exit 1 "convert --export-pkl fails" -- bash -c "ulimit -f $(( $(blocks "$TMP/d.pkl") / 2 )); exec '$C' '$TMP/d.needle' --export-pkl '$TMP/d.pkl'"
expect_one_line_error "convert --export-pkl fails" "File too large"
same "convert --export-pkl fails" "$TMP/d.pkl.copy" "$TMP/d.pkl"
expect_exit 0 "previous output still loads" -- "$C" --verify "$TMP/d.needle"
no_temp "convert" "$TMP"

# 5. needle-eval --out past the limit: exit 1, one line, no partial file.
"$C" "$DATA/tiny_np1_f16.pkl" -o "$TMP/m.needle" --tokenizer "$DATA/tiny_tok.model" -q
head -60 "$DATA/ft_small.jsonl" >"$TMP/e.jsonl"
expect_exit 1 "eval --out fails" -- bash -c "ulimit -f 1; exec '$E' -m '$TMP/m.needle' '$TMP/e.jsonl' --out '$TMP/pred.jsonl' --max-tokens 40 -t 2 -q"
expect_one_line_error "eval --out fails" "File too large"
[ ! -e "$TMP/pred.jsonl" ] && pass=$((pass + 1)) || { echo "FAIL eval left a partial --out file"; fails=$((fails + 1)); }
no_temp "eval" "$TMP"
echo "disk_full: $((SECONDS - t_start)) s"
finish
