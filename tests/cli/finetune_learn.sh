#!/usr/bin/env bash
# Learning check (issue 6): fine-tuning the `tiny` fixture model (random f16 weights, d 64) on a
# small synthetic tool-calling task (tests/data/make_learn_task.py: six tools with typed params,
# values copied from the query) lowers the validation loss and raises exact match from ~0 to
# over 90%. All as a user runs it: needle-finetune writes an INT4 .needle, and needle-eval scores
# it on a separate held-out file, with schema-constrained and with unconstrained decoding.
# Numbers and the command are in docs/training.md ("Learning check"). ~40 s of CPU on 2 threads.
source "$(dirname "$0")/common.bash"
F=$BIN/needle-finetune
E=$BIN/needle-eval
C=$BIN/needle-convert
start=$SECONDS

python3 "$DATA/make_learn_task.py" "$TMP/train.jsonl" --n 1500 --seed 1
python3 "$DATA/make_learn_task.py" "$TMP/held.jsonl" --n 200 --seed 2 --exclude "$TMP/train.jsonl"
"$C" "$DATA/tiny_np1_f16.pkl" -o "$TMP/base.needle" --tokenizer "$DATA/tiny_tok.model" --type f32 -q

# The base model on the held-out file: exact match and teacher-forced loss.
expect_exit 0 "base eval" -- "$E" -m "$TMP/base.needle" "$TMP/held.jsonl" --report "$TMP/base_eval.json" -t 2 -q
expect_exit 0 "base loss" -- "$E" -m "$TMP/base.needle" "$TMP/held.jsonl" --loss --report "$TMP/base_loss.json" -t 2 -q

# Fine-tune: the reference split of train.jsonl for test (10 per tool) and training (1440), with
# held.jsonl as the validation set (--val), 4 epochs of batch 16 (360 steps), Muon on the kernels,
# AdamW on the rest, INT4 QAT every 100th step (the default), INT4 output (the default).
RECIPE=(--epochs 4 --batch-size 16 --optimizer muon --muon-lr 0.03 --lr 3e-3 --dropout 0 --seed 1 -t 2)
expect_exit 0 "finetune" -- "$F" "$TMP/train.jsonl" -m "$TMP/base.needle" -o "$TMP/out.needle" "${RECIPE[@]}" \
  --val "$TMP/held.jsonl" --log-jsonl "$TMP/ft.log"
cp "$TMP/out" "$TMP/ft.out"
cp "$TMP/err" "$TMP/ft.err"
ft_seconds=$((SECONDS - start))

# The exported model, INT4, on the held-out file: constrained (the default) and unconstrained.
expect_exit 0 "info" -- "$C" --info "$TMP/out.needle" --json
cp "$TMP/out" "$TMP/info.json"
expect_exit 0 "held eval" -- "$E" -m "$TMP/out.needle" "$TMP/held.jsonl" --report "$TMP/ft_eval.json" -t 2 -q
expect_exit 0 "held eval free" -- "$E" -m "$TMP/out.needle" "$TMP/held.jsonl" --constrain off \
  --report "$TMP/ft_eval_free.json" -t 2 -q
expect_exit 0 "held loss" -- "$E" -m "$TMP/out.needle" "$TMP/held.jsonl" --loss --report "$TMP/ft_loss.json" -t 2 -q

if python3 - "$TMP" "$ft_seconds" <<'PY'
import json, re, sys
d = sys.argv[1]
load = lambda n: json.load(open(f"{d}/{n}"))
evals = {}
for line in open(f"{d}/ft.out"):
    m = re.match(r"(BASE_EVAL|FINETUNED_EVAL):(\{.*\})\s*$", line)
    if m:
        evals[m.group(1)] = json.loads(m.group(2))
assert set(evals) == {"BASE_EVAL", "FINETUNED_EVAL"}, f"missing eval lines: {sorted(evals)}"
# Validation per epoch from --log-jsonl ({"event":"val",...}), and the base's before training.
log = [json.loads(l) for l in open(f"{d}/ft.log")]
val_rows = [r for r in log if r["event"] == "val"]
assert [r["epoch"] for r in val_rows] == list(range(1, len(val_rows) + 1)), val_rows
val = [r["val_loss"] for r in val_rows]
f1 = [r["call_f1"] for r in val_rows]
base_val = [r["val_loss"] for r in log if r["event"] == "val_base"]
base_nll = [r["val_nll"] for r in log if r["event"] == "val_base"]
info = load("info.json")
be, bl = load("base_eval.json"), load("base_loss.json")
fe, ff, fl = load("ft_eval.json"), load("ft_eval_free.json"), load("ft_loss.json")
print(f"split test: exact match {evals['BASE_EVAL']['exact_match']} -> {evals['FINETUNED_EVAL']['exact_match']}"
      f" (n {evals['FINETUNED_EVAL']['n']}, f32 in memory)")
print(f"val loss: base {base_val}, per epoch {val}; val call F1 per epoch {f1}")
print(f"base val NLL {base_nll[0]:.6f} vs needle-eval --loss {bl['loss']:.6f}")
print(f"held-out ({fe['n']}, INT4): exact match {be['exact_match']} -> {fe['exact_match']} constrained,"
      f" {ff['exact_match']} unconstrained (parse rate {ff['parse_rate']});"
      f" loss {bl['loss']:.4f} -> {fl['loss']:.4f} nats/token")
print(f"fine-tune run incl. data and base eval: {sys.argv[2]} s")
assert info["quantization"] == "int4", info["quantization"]
assert evals["BASE_EVAL"]["n"] == 60 and evals["FINETUNED_EVAL"]["n"] == 60
assert evals["BASE_EVAL"]["exact_match"] < 0.10, "base exact match should be near 0"
assert evals["FINETUNED_EVAL"]["exact_match"] > 0.90, "fine-tuned exact match (split test)"
assert len(val) == 4 and val[-1] < val[0], f"validation loss did not decrease: {val}"
assert len(base_val) == 1 and val[0] < base_val[0], f"validation loss did not fall below the base's: {base_val} {val}"
# --val is held.jsonl: the trainer's unweighted NLL of the base (f32) is needle-eval --loss's number
# (both f32, different summation orders: ~1e-6 relative; 1e-4 allowed).
assert abs(base_nll[0] - bl["loss"]) <= 1e-4 * bl["loss"], f"val_nll {base_nll[0]} != needle-eval --loss {bl['loss']}"
assert all(isinstance(x, float) and 0 <= x <= 1 for x in f1), f"val call F1 per epoch: {f1}"
assert fe["n"] == 200 and be["n"] == 200
assert be["exact_match"] < 0.10, "base exact match on held-out should be near 0"
assert fe["exact_match"] > 0.90, "fine-tuned exact match on held-out (INT4, constrained)"
assert ff["exact_match"] > 0.90, "fine-tuned exact match on held-out (INT4, unconstrained)"
assert fl["loss"] < bl["loss"] / 10, "held-out loss should fall by an order of magnitude"
PY
then pass=$((pass + 1)); else
  echo "FAIL learning"; sed 's/^/  finetune stderr: /' "$TMP/ft.err" | grep -v "steps/s" | tail -12; fails=$((fails + 1)); fi
finish
