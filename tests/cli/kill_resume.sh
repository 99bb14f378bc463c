#!/usr/bin/env bash
# Never lose work: needle-finetune killed with SIGKILL at 20 random moments (fixed seed), each
# time continued with --resume; the final output must equal an uninterrupted run's byte for
# byte. After every kill: the process died of the kill or had finished (never another exit),
# an output file, if any, is complete (passes --verify), and at the end no temporary file is
# left in the checkpoint or output directory.
source "$(dirname "$0")/common.bash"
F=$BIN/needle-finetune
C=$BIN/needle-convert
for t in "$F" "$C"; do [ -x "$t" ] || { echo "$t not built"; exit 1; }; done
command -v python3 >/dev/null || { echo "python3 not found"; exit 1; }
t_start=$SECONDS

# A tiny model from scratch (--init random), the small e2e data (26 steps an epoch), a
# checkpoint after every step.
echo '{"vocab_size":1000,"d_model":32,"num_heads":2,"num_kv_heads":1,"num_encoder_layers":1,"num_decoder_layers":1,"contrastive_dim":8}' >"$TMP/cfg.json"
ARGS=("$DATA/ft_small.jsonl" --init random --config "$TMP/cfg.json" --tokenizer "$DATA/tiny_tok.model"
      --epochs 2 --batch-size 8 --val-split 2 --no-eval --type f32 --seed 5 -t 1 -q --checkpoint-every 1)
ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }
log_lines() { local l=(); [ -f "$1" ] && mapfile -t l <"$1"; echo ${#l[@]}; }

# The uninterrupted reference, timed: its start-up (until the first step is logged) and its
# time per step set the scale of the kill delays below.
mkdir "$TMP/ref"
t0=$(ms)
"$F" "${ARGS[@]}" -o "$TMP/ref/out.needle" --checkpoint-dir "$TMP/ref/ck" --log-jsonl "$TMP/ref/log.jsonl" 2>"$TMP/ref.err" &
pid=$!
first=""
while kill -0 $pid 2>/dev/null; do
  if [ -z "$first" ] && [ "$(log_lines "$TMP/ref/log.jsonl")" -ge 1 ]; then first=$(( $(ms) - t0 )); fi
  sleep 0.01
done
rc=0; wait $pid || rc=$?
ref_ms=$(( $(ms) - t0 ))
steps=$(log_lines "$TMP/ref/log.jsonl")
if [ "$rc" != 0 ] || [ -z "$first" ]; then echo "FAIL reference run: exit $rc"; cat "$TMP/ref.err"; exit 1; fi
step_ms=$(( (ref_ms - first) / steps + 1 ))
echo "reference run: ${ref_ms} ms, $steps steps, first step logged after ${first} ms, ${step_ms} ms a step"

# 20 kill points from a fixed seed: after K more logged steps (0..4; 0 = during start-up)
# plus a random delay within a step (or within the start-up), so that kills land in
# start-up, in a training step, in a checkpoint write and near the end, whatever the speed.
mapfile -t POINTS < <(python3 - "$first" "$step_ms" <<'PY'
import random, sys
first, step = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(20)
for i in range(20):
    k = rnd.randint(0, 4)
    d = rnd.uniform(0.1, 1.0) * (first if k == 0 else step)
    print(k, "%.3f" % (d / 1000))
PY
)
mkdir "$TMP/run"
LOG=$TMP/run/log.jsonl
killed=0 finished=0 bad=0
for i in "${!POINTS[@]}"; do
  read -r k delay <<<"${POINTS[$i]}"
  resume=()
  [ -f "$TMP/run/ck/checkpoint.needle" ] && resume=(--resume "$TMP/run/ck")
  n0=$(log_lines "$LOG")
  "$F" "${ARGS[@]}" -o "$TMP/run/out.needle" --checkpoint-dir "$TMP/run/ck" --log-jsonl "$LOG" "${resume[@]}" \
    2>"$TMP/run$i.err" &
  pid=$!
  while [ "$(log_lines "$LOG")" -lt $((n0 + k)) ] && kill -0 $pid 2>/dev/null; do sleep 0.005; done
  sleep "$delay"
  kill -KILL $pid 2>/dev/null || true
  rc=0; wait $pid 2>/dev/null || rc=$?
  case $rc in
    137) killed=$((killed + 1)) ;;
    0) finished=$((finished + 1)) ;;
    *) echo "FAIL run $i (kill after $k steps + $delay s, ${resume[*]:-fresh}): exit $rc"
       head -5 "$TMP/run$i.err" | sed 's/^/  /'
       bad=$((bad + 1)) ;;
  esac
  if [ -f "$TMP/run/out.needle" ] && ! "$C" --verify "$TMP/run/out.needle" >/dev/null 2>&1; then
    echo "FAIL run $i: a half-written output file"; bad=$((bad + 1))
  fi
done
echo "20 runs: $killed killed, $finished finished before their kill, $(log_lines "$LOG") steps logged (with repeats)"
if [ $bad = 0 ]; then pass=$((pass + 1)); else fails=$((fails + bad)); fi
# Most kills must hit a running process, or the test tests nothing.
if [ $killed -ge 15 ]; then pass=$((pass + 1)); else echo "FAIL only $killed of 20 kills hit a running process"; fails=$((fails + 1)); fi

# The last --resume completes; its output equals the uninterrupted run's, byte for byte.
resume=()
[ -f "$TMP/run/ck/checkpoint.needle" ] && resume=(--resume "$TMP/run/ck")
expect_exit 0 "final resume" -- "$F" "${ARGS[@]}" -o "$TMP/run/out.needle" --checkpoint-dir "$TMP/run/ck" "${resume[@]}"
if cmp -s "$TMP/ref/out.needle" "$TMP/run/out.needle"; then pass=$((pass + 1)); else
  echo "FAIL the output after 20 kills differs from the uninterrupted run"
  for f in ref run; do "$C" --info "$TMP/$f/out.needle" --json 2>&1 | grep -o '"data_crc32":[0-9]*' || true; done
  fails=$((fails + 1))
fi
# The checkpoint left is the final one: resuming from it writes the same output again.
expect_exit 0 "resume finished run" -- "$F" "${ARGS[@]}" -o "$TMP/run/again.needle" --resume "$TMP/run/ck"
if cmp -s "$TMP/ref/out.needle" "$TMP/run/again.needle"; then pass=$((pass + 1)); else
  echo "FAIL resuming the finished run gives a different output"; fails=$((fails + 1)); fi
left=$(cd "$TMP/run" && find . -name '*.tmp.*' | tr '\n' ' ')
if [ -z "$left" ]; then pass=$((pass + 1)); else
  echo "FAIL temporary files left after SIGKILL: $left"; fails=$((fails + 1)); fi
echo "kill_resume: $((SECONDS - t_start)) s"
finish
