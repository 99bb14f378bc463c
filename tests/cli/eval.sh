#!/usr/bin/env bash
# needle-eval end to end on a small JSONL file with bad lines, and its reports.
source "$(dirname "$0")/common.bash"
E=$BIN/needle-eval
M=$TMP/tiny.needle
"$BIN/needle-convert" "$DATA/tiny_np1_f16.pkl" -o "$M" --tokenizer "$DATA/tiny_tok.model" -q
T='[{"name":"getWeather","description":"Weather","parameters":{"city":{"type":"string","description":"City","required":true}}}]'
TS=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$T")
{
  echo "{\"query\":\"weather in Oslo\",\"tools\":$T,\"answers\":[{\"name\":\"getWeather\",\"arguments\":{\"city\":\"Oslo\"}}]}"
  echo "{\"query\":\"hello\",\"tools\":$TS,\"answers\":\"[]\"}"
  echo 'garbage line'
  echo '{"query":"missing tools","answers":[]}'
  echo "{\"query\":\"x\",\"tools\":$T,\"answers\":\"[{not json\"}"
  echo ""
  echo "{\"query\":\"weather in Lima\",\"tools\":$T,\"answers\":[{\"name\":\"getWeather\",\"arguments\":{\"city\":\"Lima\"}}]}"
} > "$TMP/data.jsonl"
expect_exit 0 "eval" -- "$E" -m "$M" "$TMP/data.jsonl" --report "$TMP/rep.json" --out "$TMP/pred.jsonl" --max-tokens 30 -t 2
expect_stdout_has "table" "call F1"
if python3 - "$TMP/rep.json" "$TMP/pred.jsonl" "$TMP/err" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
for k in ("n", "skipped", "call_f1", "name_f1", "exact_match", "parse_rate", "args_acc", "per_tool",
          "call_precision", "call_recall"):
    assert k in rep, k
assert rep["n"] == 3 and rep["skipped"] == 3, rep
assert rep["parse_rate"] == 1.0  # schema-constrained output always parses
preds = [json.loads(l) for l in open(sys.argv[2])]
assert [p["line"] for p in preds] == [1, 2, 7], preds
err = open(sys.argv[3]).read()
assert "line 3" in err and "line 4" in err and "line 5" in err, err
PY
then pass=$((pass + 1)); else echo "FAIL eval report"; cat "$TMP/rep.json"; fails=$((fails + 1)); fi

expect_exit 0 "loss" -- "$E" -m "$M" "$TMP/data.jsonl" --loss --report "$TMP/loss.json"
expect_stdout_has "loss" "perplexity"
if python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["loss"] > 0 and r["perplexity"] > 1 and r["n"] == 3' "$TMP/loss.json"
then pass=$((pass + 1)); else echo "FAIL loss report"; fails=$((fails + 1)); fi

# BFCL format with an answers file; irrelevance without answers.
cat > "$TMP/bfcl.jsonl" <<'J'
{"id":"simple_0","question":[[{"role":"user","content":"area of a circle of radius 3"}]],"function":[{"name":"calc.area","description":"Area","parameters":{"type":"dict","properties":{"radius":{"type":"integer","description":"r"}},"required":["radius"]}}]}
{"id":"irrelevance_0","question":[[{"role":"user","content":"tell me a joke"}]],"function":[{"name":"calc.area","description":"Area","parameters":{"type":"dict","properties":{"radius":{"type":"integer","description":"r"}},"required":["radius"]}}]}
J
echo '{"id":"simple_0","ground_truth":[{"calc.area":{"radius":[3]}}]}' > "$TMP/ans.jsonl"
expect_exit 0 "bfcl" -- "$E" -m "$M" "$TMP/bfcl.jsonl" --format bfcl --answers "$TMP/ans.jsonl" --report "$TMP/b.json" --max-tokens 30
expect_stdout_has "bfcl table" "irrelevance"
if python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); c=r["bfcl"]["categories"]; assert "simple" in c and "irrelevance" in c, r' "$TMP/b.json"
then pass=$((pass + 1)); else echo "FAIL bfcl report"; cat "$TMP/b.json"; fails=$((fails + 1)); fi

expect_exit 2 "missing data" -- "$E" -m "$M" "$TMP/none.jsonl"
expect_one_line_error "missing data" "cannot open"
expect_exit 2 "directory data" -- "$E" -m "$M" "$TMP"
expect_exit 2 "missing model" -- "$E" -m "$TMP/none.needle" "$TMP/data.jsonl"
expect_one_line_error "missing model" "cannot open"
expect_exit 2 "empty file" -- "$E" -m "$M" /dev/null
finish
