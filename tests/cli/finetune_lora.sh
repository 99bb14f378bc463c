#!/usr/bin/env bash
# needle-finetune --lora as a user runs it: an end-to-end run that changes the model and exports
# an ordinary model (INT4 by default, f32, pickle), a SIGKILL then --resume that must give
# bit-identical weights, a small checkpoint, and the errors (another base on resume, bad flags).
source "$(dirname "$0")/common.bash"
F=$BIN/needle-finetune
C=$BIN/needle-convert
D=$DATA/ft_small.jsonl   # 240 examples of the e2e task (fixtures/e2e/make_data.py)
"$C" "$DATA/tiny_np1_f16.pkl" -o "$TMP/base.needle" --tokenizer "$DATA/tiny_tok.model" --type f32 -q
COMMON=(--lora 4 --lora-alpha 8 --lr 1e-2 --epochs 1 --batch-size 8 --val-split 2 --no-eval
        --seed 3 -t 2 -q --qat-every 5)
crc() { "$C" --info "$1" --json | grep -o '"data_crc32":[0-9]*'; }

expect_exit 0 help -- "$F" --help
expect_stdout_has "help lists --lora" "--lora"
expect_stdout_has "help lists --lora-alpha" "--lora-alpha"

# Uninterrupted reference run (f32 output, and the original pickle layout).
expect_exit 0 "lora run" -- "$F" "$D" -o "$TMP/a.needle" -m "$TMP/base.needle" "${COMMON[@]}" --type f32 --export-pkl "$TMP/a.pkl" \
  --log-jsonl "$TMP/log.jsonl"
if python3 - "$TMP/log.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["event"] for r in rows if r["event"] != "step"][:1] == ["val_base"], rows[:2]
rows = [r for r in rows if r["event"] == "step"]
assert len(rows) == 26, len(rows)
assert all(r["loss"] > 0 and r["grad_norm"] > 0 for r in rows)
first = sum(r["loss"] for r in rows[:5]) / 5
last = sum(r["loss"] for r in rows[-5:]) / 5
assert last < 0.95 * first, (first, last)   # the adapters learn (measured ~0.8x)
PY
then pass=$((pass + 1)); else echo "FAIL lora log-jsonl / loss did not fall"; fails=$((fails + 1)); fi
if [ "$(crc "$TMP/a.needle")" != "$(crc "$TMP/base.needle")" ]; then pass=$((pass + 1)); else
  echo "FAIL lora output equals the base"; fails=$((fails + 1)); fi
expect_exit 0 "exported pickle converts" -- "$C" "$TMP/a.pkl" -o "$TMP/a_from_pkl.needle" --tokenizer "$DATA/tiny_tok.model" -q

# Killed with SIGKILL after a checkpoint, then resumed (with the same -m): the same weights.
"$F" "$D" -o "$TMP/b.needle" -m "$TMP/base.needle" "${COMMON[@]}" --type f32 --checkpoint-dir "$TMP/ck" --checkpoint-every 4 &
pid=$!
for _ in $(seq 1 600); do [ -f "$TMP/ck/checkpoint.needle" ] && break; sleep 0.05; done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
if [ -f "$TMP/ck/checkpoint.needle" ]; then pass=$((pass + 1)); else echo "FAIL no checkpoint before kill"; fails=$((fails + 1)); fi
# The checkpoint holds adapters and their moments, not the base (680 KB here): a few tens of KB.
ck_bytes=$(stat -c %s "$TMP/ck/checkpoint.needle")
if [ "$ck_bytes" -lt 300000 ]; then pass=$((pass + 1)); else
  echo "FAIL LoRA checkpoint is $ck_bytes bytes: it should not hold the base"; fails=$((fails + 1)); fi
cp -r "$TMP/ck" "$TMP/ck_copy"
expect_exit 0 "lora resume" -- "$F" "$D" -o "$TMP/b.needle" -m "$TMP/base.needle" "${COMMON[@]}" --type f32 --resume "$TMP/ck"
if [ "$(crc "$TMP/a.needle")" = "$(crc "$TMP/b.needle")" ]; then pass=$((pass + 1)); else
  echo "FAIL lora kill+resume weights differ from the uninterrupted run"; fails=$((fails + 1)); fi

# Resuming on another base (same shape, other weights: the fine-tuned a.needle) is refused
# with a one-line reason.
expect_exit 2 "resume, other base" -- "$F" "$D" -o "$TMP/c.needle" "${COMMON[@]}" -m "$TMP/a.needle" --resume "$TMP/ck_copy"
expect_one_line_error "resume, other base" "base model differs"

# Default output type: INT4, an ordinary model.
expect_exit 0 "lora int4 export" -- "$F" "$D" -o "$TMP/d.needle" -m "$TMP/base.needle" "${COMMON[@]}"
if "$C" --info "$TMP/d.needle" --json | grep -q '"quantization":"int4'; then pass=$((pass + 1)); else
  echo "FAIL default LoRA export is not int4"; fails=$((fails + 1)); fi

# Flags that do not go together.
expect_exit 2 "lora + muon" -- "$F" "$D" -o "$TMP/e.needle" -m "$TMP/base.needle" --lora 4 --optimizer muon
expect_one_line_error "lora + muon" "AdamW"
expect_exit 2 "alpha without lora" -- "$F" "$D" -o "$TMP/e.needle" -m "$TMP/base.needle" --lora-alpha 4
expect_one_line_error "alpha without lora" "--lora-alpha needs --lora"
expect_exit 2 "rank too large" -- "$F" "$D" -o "$TMP/e.needle" -m "$TMP/base.needle" --lora 65 -q
expect_one_line_error "rank too large" "larger than the model's d_model"
finish
