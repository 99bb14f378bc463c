#!/usr/bin/env bash
# The training-data pipeline (scripts/data) on a small subset of ../shared/datasets: the build
# is deterministic for a seed, scripts/data/check passes (every call names a tool of its own list
# and follows its schema, no hold-out query in train/val) and catches planted faults, and every
# line of every output file loads in needle-eval (no skipped line).
source "$(dirname "$0")/common.bash"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATASETS=${NEEDLE_DATASETS:-$ROOT/../shared/datasets}
[ -n "$SHARED" ] && [ -z "${NEEDLE_DATASETS:-}" ] && DATASETS=$(dirname "$SHARED")/datasets
if [ ! -f "$DATASETS/seal_tools/tool.jsonl" ]; then echo "skip: no datasets at $DATASETS"; exit 77; fi
command -v python3 >/dev/null || { echo "skip: no python3"; exit 77; }
TOK=$DATA/tiny_tok.model
command -v spm_encode >/dev/null || TOK=none  # token counts are then estimates
BUILD=(python3 "$ROOT/scripts/data/build" --shared "$DATASETS" --limit 8 --variants 2 --tokenizer "$TOK")
CHECK=(python3 "$ROOT/scripts/data/check" --shared "$DATASETS")
FILES="train.jsonl val.jsonl seal_out_domain_single.jsonl acebench_single.jsonl acebench_irrelevant.jsonl heldout_nocall.jsonl"

expect_exit 0 "build" -- "${BUILD[@]}" --seed 7 --out "$TMP/a"
expect_exit 0 "build again" -- "${BUILD[@]}" --seed 7 --out "$TMP/b"
expect_exit 0 "build, other seed" -- "${BUILD[@]}" --seed 8 --out "$TMP/c"
for f in $FILES tokenizer_corpus.txt stats.json SHA256SUMS; do
  if [ -s "$TMP/a/$f" ] && cmp -s "$TMP/a/$f" "$TMP/b/$f"; then pass=$((pass + 1))
  else echo "FAIL determinism: $f differs between two builds with seed 7 (or is empty)"; fails=$((fails + 1)); fi
done
if ! cmp -s "$TMP/a/train.jsonl" "$TMP/c/train.jsonl"; then pass=$((pass + 1))
else echo "FAIL seed: --seed 8 gives the same train.jsonl as --seed 7"; fails=$((fails + 1)); fi

expect_exit 0 "check" -- "${CHECK[@]}" "$TMP/a"
expect_stdout_has "check output" "all checks passed"

# Properties that check verifies, re-checked here independently of its code.
if python3 - "$TMP/a" <<'PY'
import json, re, sys, unicodedata
d = sys.argv[1]
def norm(q):
    return re.sub(r"[^0-9a-z]+", " ", unicodedata.normalize("NFKC", q).lower()).strip()
def load(n):
    return [json.loads(l) for l in open(f"{d}/{n}", encoding="utf-8") if l.strip()]
def names(tools):
    return {(t["function"] if isinstance(t.get("function"), dict) else t)["name"] for t in tools}
held = set()
for n in ("seal_out_domain_single.jsonl", "acebench_single.jsonl", "acebench_irrelevant.jsonl", "heldout_nocall.jsonl"):
    for r in load(n):
        held.add(norm(r["query"]))
        assert r["answers"] == [] or n in ("seal_out_domain_single.jsonl", "acebench_single.jsonl"), (n, r["id"])
        assert all(c["name"] in names(r["tools"]) for c in r["answers"]), (n, r["id"])
kinds = set()
for n in ("train.jsonl", "val.jsonl"):
    for r in load(n):
        q = norm(r["query"])
        assert q not in held and not any(len(h) >= 25 and h in q for h in held), (n, r["query"][:80])
        assert all(c["name"] in names(r["tools"]) for c in r["answers"]), (n, r["id"], r["answers"])
        assert r["aug"] != "nocall" or r["answers"] == [], (n, r["id"])
        kinds.add(r["aug"])
assert {"orig", "variant", "nocall", "multi"} <= kinds, kinds
st = json.load(open(f"{d}/stats.json"))
assert st["files"]["train.jsonl"]["records"] == len(load("train.jsonl"))
assert st["files"]["train.jsonl"]["enc_over_max_enc_len"] == 0
PY
then pass=$((pass + 1)); else echo "FAIL output properties"; fails=$((fails + 1)); fi

# check must catch a planted leak and a call to a tool that is not offered.
mkdir -p "$TMP/bad"
cp "$TMP/a"/* "$TMP/bad/"
python3 - "$TMP/bad" <<'PY'
import json, sys
d = sys.argv[1]
held = json.loads(open(f"{d}/seal_out_domain_single.jsonl").readline())
lines = open(f"{d}/train.jsonl").read().splitlines()
r = json.loads(lines[0])
r["query"] = "Please: " + held["query"]
lines[0] = json.dumps(r)
r = json.loads(lines[1])
r["answers"] = [{"name": "no_such_tool", "arguments": {}}]
lines[1] = json.dumps(r)
open(f"{d}/train.jsonl", "w").write("\n".join(lines) + "\n")
PY
expect_exit 1 "check catches faults" -- "${CHECK[@]}" "$TMP/bad"
expect_stdout_has "check: leak" "FAIL train.jsonl: no query equals"
expect_stdout_has "check: unknown tool" "answer names a tool not in the list"

# Every line of every file loads in needle-eval (tokenizer, tools, answers): --loss runs the
# teacher-forced pass on all of them; n must equal the line count and nothing may be skipped.
M=$TMP/tiny.needle
"$BIN/needle-convert" "$DATA/tiny_np1_f16.pkl" -o "$M" --tokenizer "$DATA/tiny_tok.model" -q
for f in $FILES; do
  expect_exit 0 "needle-eval $f" -- "$BIN/needle-eval" -m "$M" "$TMP/a/$f" --loss --report "$TMP/rep.json" -t 2
  lines=$(grep -c . "$TMP/a/$f")
  if python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["n"] == int(sys.argv[2]) and r.get("skipped", 0) == 0, r' \
      "$TMP/rep.json" "$lines"; then pass=$((pass + 1))
  else echo "FAIL needle-eval $f: not every line loaded"; head -c 300 "$TMP/rep.json"; echo; fails=$((fails + 1)); fi
done
finish
