#!/usr/bin/env bash
# The JAX training route (scripts/train) without JAX: its model, losses and optimizer run here as
# numpy (the same code runs as jax.numpy on the GPU) and must equal the original's fixtures; the
# checkpoints its writer produces must go through needle-convert and give needle-eval --loss the
# script's own losses (scripts/train/parity.py prints every number and its bound). Then the
# script's CPU-side commands: --prepare-only, the error without --config, the error without JAX.
source "$(dirname "$0")/common.bash"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=/usr/bin/python3
if ! "$PY" -c 'import numpy' 2>/dev/null; then echo "skip: $PY has no numpy (scripts/setup installs python3-numpy)"; exit 77; fi
if [ -z "$SHARED" ] || [ ! -d "$SHARED/e2e" ]; then echo "skip: no shared fixtures"; exit 77; fi
command -v spm_encode >/dev/null || { echo "skip: no spm_encode (scripts/setup installs sentencepiece)"; exit 77; }
export PYTHONDONTWRITEBYTECODE=1
T=$ROOT/scripts/train/train_jax.py

# 1. Parity (forward, losses, gradients, packing, optimizer, e2e losses, converter round trip).
expect_exit 0 "parity.py" -- "$PY" "$ROOT/scripts/train/parity.py" --fixtures "$SHARED" --bin "$BIN"
cat "$TMP/out"
expect_stdout_has "parity: converter round trip ran" "convert [fresh init_params model]: needle-eval --loss vs ours"
expect_stdout_has "parity: nothing failed" " 0 failed"

# 2. --prepare-only tokenizes a Needle JSONL folder into OUT/data.npz (no JAX needed).
mkdir -p "$TMP/data"
head -40 "$SHARED/e2e/test.jsonl" > "$TMP/data/train.jsonl"
sed -n 41,50p "$SHARED/e2e/test.jsonl" > "$TMP/data/val.jsonl"
cp "$SHARED/e2e/e2e_tok.model" "$TMP/data/tokenizer.model"
expect_exit 0 "prepare-only" -- "$PY" "$T" --data "$TMP/data" --out "$TMP/run" --prepare-only
expect_stdout_has "prepare-only: counts" "train: 40 examples (0 skipped)"
[ -s "$TMP/run/data.npz" ] && pass=$((pass + 1)) || { echo "FAIL prepare-only wrote no data.npz"; fails=$((fails + 1)); }

# 3. A new run needs a config; without JAX the script says where it runs.
expect_exit 1 "no config" -- "$PY" "$T" --out "$TMP/run"
expect_one_line_error "no config: message" "a new run needs --config"
echo '{"d_model": 64, "num_heads": 4, "num_kv_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "vocab_size": 2000}' > "$TMP/cfg.json"
if ! "$PY" -c 'import jax' 2>/dev/null; then
  expect_exit 1 "no jax" -- "$PY" "$T" --out "$TMP/run2" --data "$TMP/data" --config "$TMP/cfg.json"
  expect_one_line_error "no jax: says where training runs" "JAX is not installed here"
fi

# 4. The trainer's control flow, with a numpy stand-in for jax (scripts/train/testing/jax: no
# autodiff, zero gradients): a run stopped after 3 of 6 steps, exact resume to the end, and a
# warm resume of the same run in a fresh folder from its export (what a new GPU session does),
# whose needle.pkl needle-convert accepts.
FAKE=(env PYTHONPATH="$ROOT/scripts/train/testing" "$PY" "$T")
echo '{"d_model": 32, "num_heads": 4, "num_kv_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "vocab_size": 2000, "contrastive_dim": 16}' > "$TMP/cfg.json"
RUN=(--rows 256x64 --batch-tokens 512 --qat-every 2 --clip-every 3 --clip-pairs 2 --clip-query-len 16 --clip-tool-len 32 --eval-every 4)
expect_exit 0 "train: 3 of 6 steps" -- "${FAKE[@]}" --out "$TMP/run" --config "$TMP/cfg.json" --steps 6 "${RUN[@]}" --max-steps-this-call 3 --export "$TMP/exp"
expect_stdout_has "train: saved" "saved step 3"
expect_exit 0 "train: exact resume" -- "${FAKE[@]}" --out "$TMP/run"
expect_stdout_has "train: exact resume at step 3" "resumed exactly from $TMP/run/state.npz at step 3"
expect_stdout_has "train: finished" "run finished: 6 steps"
expect_exit 0 "assemble" -- "$PY" "$T" --assemble "$TMP/exp" --out "$TMP/new"
cp "$TMP/run/data.npz" "$TMP/new/"
expect_exit 0 "train: warm resume" -- "${FAKE[@]}" --out "$TMP/new"
expect_stdout_has "train: warm resume at step 3" "warm resume from $TMP/new/params-f16.npz at step 3"
expect_stdout_has "train: warm finished" "run finished: 6 steps"
expect_exit 0 "convert the run's needle.pkl" -- "$BIN/needle-convert" "$TMP/new/needle.pkl" --tokenizer "$TMP/data/tokenizer.model" -o "$TMP/new.needle"
finish
