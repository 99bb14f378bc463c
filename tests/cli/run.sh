#!/usr/bin/env bash
# needle-run as a user runs it: arguments, stdin, files, --jsonl, --stream, bad input.
source "$(dirname "$0")/common.bash"
R=$BIN/needle-run
M=$TMP/tiny.needle
"$BIN/needle-convert" "$DATA/tiny_np1_f16.pkl" -o "$M" --tokenizer "$DATA/tiny_tok.model" -q
TOOLS='[{"name":"getWeather","description":"Weather for a city","parameters":{"city":{"type":"string","description":"City","required":true}}},{"name":"set_timer","description":"Timer","parameters":{"minutes":{"type":"integer","description":"Minutes","required":true}}}]'
echo "$TOOLS" > "$TMP/tools.json"
valid_calls() {  # stdout is one line: a JSON list of calls naming only our tools
  python3 - "$TMP/out" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1, lines
calls = json.loads(lines[0])
assert isinstance(calls, list)
for c in calls:
    assert c["name"] in ("getWeather", "set_timer"), c
    assert isinstance(c["arguments"], dict)
PY
}
check_valid() { if valid_calls; then pass=$((pass + 1)); else echo "FAIL $1: bad output"; cat "$TMP/out"; fails=$((fails + 1)); fi; }

expect_exit 0 help -- "$R" --help
expect_stdout_has help "Exit codes"
# Random weights: whatever the model says, schema decoding keeps it valid and within the tools.
expect_exit 0 "arg query" -- "$R" -m "$M" --tools "$TMP/tools.json" "weather in Paris" --max-tokens 40
check_valid "arg query"
expect_exit 0 "inline tools + stdin" -- bash -c "echo 'weather in Paris' | '$R' -m '$M' --tools '$TOOLS' --max-tokens 40"
check_valid "stdin query"
expect_exit 0 "env model" -- env NEEDLE_MODEL="$M" "$R" --tools "$TMP/tools.json" "set a timer" --max-tokens 40
check_valid "env model"
expect_exit 0 "reference" -- "$R" -m "$M" --tools "$TMP/tools.json" "x" --constrain reference --max-tokens 20
expect_exit 0 "off" -- "$R" -m "$M" --tools "$TMP/tools.json" "x" --constrain off --max-tokens 20
expect_exit 0 "top tools" -- "$R" -m "$M" --tools "$TMP/tools.json" "x" --top-tools 1 --max-tokens 20
expect_exit 0 "stream" -- "$R" -m "$M" --tools "$TMP/tools.json" "x" --stream --max-tokens 20
expect_exit 0 "openai tools" -- "$R" -m "$M" --max-tokens 20 "x" --tools \
  '[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}}}]'

# --jsonl: one line out per line in, in order; bad lines give {"error"} and processing goes on.
{
  echo "{\"query\":\"weather in Oslo\",\"tools\":$TOOLS}"
  echo 'not json'
  echo "{\"query\":\"timer\",\"tools\":$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$TOOLS")}"
  echo '{"query":"no tools"}'
  echo '{"query":"","tools":[]}'
  echo "{\"query\":\"dup\",\"tools\":[{\"name\":\"a\"},{\"name\":\"a\"}]}"
} > "$TMP/in.jsonl"
expect_exit 0 "jsonl" -- bash -c "'$R' -m '$M' --jsonl --max-tokens 30 < '$TMP/in.jsonl'"
if python3 - "$TMP/out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 6, rows
assert "calls" in rows[0] and "text" in rows[0] and "tokens" in rows[0] and "ms" in rows[0]
assert "error" in rows[1] and rows[1]["error"].startswith("line 2")
assert "calls" in rows[2]
assert "error" in rows[3] and "tools" in rows[3]["error"]
assert "error" in rows[4] and "empty" in rows[4]["error"]
assert "error" in rows[5] and "tools[1]" in rows[5]["error"]
PY
then pass=$((pass + 1)); else echo "FAIL jsonl rows"; cat "$TMP/out"; fails=$((fails + 1)); fi

# Several processes sharing one mapped model give the same results as a serial run.
strip_ms() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l); d.pop("ms", None); print(json.dumps(d, sort_keys=True))' "$1"; }
"$R" -m "$M" --jsonl --max-tokens 30 -t 1 < "$TMP/in.jsonl" > "$TMP/serial.jsonl" 2>/dev/null
for i in 1 2 3; do "$R" -m "$M" --jsonl --max-tokens 30 -t 1 < "$TMP/in.jsonl" > "$TMP/par$i.jsonl" 2>/dev/null & done
wait
same=1
for i in 1 2 3; do [ "$(strip_ms "$TMP/par$i.jsonl")" = "$(strip_ms "$TMP/serial.jsonl")" ] || same=0; done
if [ $same = 1 ]; then pass=$((pass + 1)); else echo "FAIL concurrent runs differ from the serial run"; fails=$((fails + 1)); fi

# Bad input: exit 2 and one line on stderr.
expect_exit 2 "invalid json" -- "$R" -m "$M" --tools '[{"name":' "x"
expect_one_line_error "invalid json" "invalid JSON"
expect_exit 2 "not a list" -- "$R" -m "$M" --tools '{"name":"a"}' "x"
expect_one_line_error "not a list" "list"
expect_exit 2 "no name" -- "$R" -m "$M" --tools '[{"description":"x"}]' "x"
expect_one_line_error "no name" "name"
expect_exit 2 "duplicate" -- "$R" -m "$M" --tools '[{"name":"getWeather"},{"name":"get_weather"}]' "x"
expect_one_line_error "duplicate" "collides"
expect_exit 2 "empty query" -- "$R" -m "$M" --tools "$TMP/tools.json" "   "
expect_one_line_error "empty query" "empty"
printf 'caf\xe9\n' > "$TMP/bad_utf8.txt"
expect_exit 2 "invalid utf8" -- bash -c "'$R' -m '$M' --tools '$TMP/tools.json' < '$TMP/bad_utf8.txt'"
expect_one_line_error "invalid utf8" "UTF-8"
expect_exit 2 "missing tools file" -- "$R" -m "$M" --tools "$TMP/none.json" "x"
expect_one_line_error "missing tools file" "cannot open"
expect_exit 2 "no tools" -- "$R" -m "$M" "x"
expect_exit 2 "missing model" -- "$R" -m "$TMP/none.needle" --tools "$TMP/tools.json" "x"
expect_one_line_error "missing model" "cannot open"
expect_exit 2 "model is a directory" -- "$R" -m "$TMP" --tools "$TMP/tools.json" "x"
expect_one_line_error "model is a directory" "directory"
"$BIN/needle-convert" "$DATA/tiny_np1_f16.pkl" -o "$TMP/notok.needle" -q
expect_exit 2 "no tokenizer" -- "$R" -m "$TMP/notok.needle" --tools "$TMP/tools.json" "x"
expect_one_line_error "no tokenizer" "tokenizer"
# Over-long input is truncated as the original does, with a warning, and still answers.
python3 -c 'print("weather " * 5000)' > "$TMP/long.txt"
expect_exit 0 "long query" -- bash -c "'$R' -m '$M' --tools '$TMP/tools.json' --max-tokens 10 < '$TMP/long.txt'"
if grep -q "truncated" "$TMP/err"; then pass=$((pass + 1)); else echo "FAIL long query: no warning"; fails=$((fails + 1)); fi
finish
