#!/usr/bin/env bash
# needle-run --jsonl fed by several concurrent writers: 4 background processes write requests
# into one FIFO, each request one line (< PIPE_BUF, so atomic) in one write(2), with seeded
# random pauses so that their lines interleave. Every request gets exactly one answer, whole
# lines only, and the answers (matched by the request's "id") equal a serial run's. (Several
# processes sharing one mapped model: tests/cli/run.sh.)
source "$(dirname "$0")/common.bash"
R=$BIN/needle-run
[ -x "$R" ] || { echo "$R not built"; exit 1; }
command -v python3 >/dev/null && command -v mkfifo >/dev/null || { echo "python3 or mkfifo missing"; exit 1; }
t_start=$SECONDS
M=$TMP/tiny.needle
"$BIN/needle-convert" "$DATA/tiny_np1_f16.pkl" -o "$M" --tokenizer "$DATA/tiny_tok.model" -q

# 4 writers x 9 requests: 8 good ones (tools inline, as a list or as JSON text) and a bad one.
python3 - "$TMP" <<'PY'
import json, sys
tmp = sys.argv[1]
tools = [{"name": "getWeather", "description": "Weather for a city",
          "parameters": {"city": {"type": "string", "description": "City", "required": True}}},
         {"name": "set_timer", "description": "Timer",
          "parameters": {"minutes": {"type": "integer", "description": "Minutes", "required": True}}}]
queries = ["weather in Oslo", "set a timer for 5 minutes", "is it raining in Lima", "timer 20 min",
           "what's the weather like in Tokyo", "wake me in 3 minutes", "forecast for Paris", "hello"]
every = []
for w in range(4):
    lines = []
    for i, q in enumerate(queries):
        t = tools if (i + w) % 2 else json.dumps(tools)
        lines.append(json.dumps({"id": "w%d-%d" % (w, i), "query": "%s (%d)" % (q, w), "tools": t}))
    lines.append(json.dumps({"id": "w%d-bad" % w, "query": "   ", "tools": tools}))
    assert all(len(l) + 1 < 4096 for l in lines)
    with open("%s/w%d.jsonl" % (tmp, w), "w") as f:
        f.write("".join(l + "\n" for l in lines))
    every += lines
with open(tmp + "/all.jsonl", "w") as f:
    f.write("".join(l + "\n" for l in every))
PY

# Serial reference.
expect_exit 0 "serial" -- bash -c "'$R' -m '$M' --jsonl --max-tokens 24 -t 1 < '$TMP/all.jsonl' > '$TMP/serial.jsonl'"

# Concurrent: the reader gets EOF only when every writer (and fd 3, held here) has closed.
mkfifo "$TMP/fifo"
"$R" -m "$M" --jsonl --max-tokens 24 -t 1 <"$TMP/fifo" >"$TMP/conc.jsonl" 2>"$TMP/conc.err" &
reader=$!
exec 3>"$TMP/fifo"
writers=()
for w in 0 1 2 3; do
  python3 - "$TMP/fifo" "$TMP/w$w.jsonl" "$w" <<'PY' &
import os, random, sys, time
fifo, src, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
fd = os.open(fifo, os.O_WRONLY)
for line in open(src, "rb"):
    time.sleep(rnd.uniform(0, 0.05))
    assert os.write(fd, line) == len(line)  # one write(2) per line, < PIPE_BUF: atomic
os.close(fd)
PY
  writers+=($!)
done
wfail=0
for p in "${writers[@]}"; do wait "$p" || wfail=1; done
exec 3>&-
rc=0; wait $reader || rc=$?
if [ "$wfail" = 0 ] && [ "$rc" = 0 ]; then pass=$((pass + 1)); else
  echo "FAIL concurrent run: writers $wfail, reader exit $rc"; cat "$TMP/conc.err"; fails=$((fails + 1)); fi

if python3 - "$TMP/serial.jsonl" "$TMP/conc.jsonl" <<'PY'
import json, sys
def load(path):
    out = {}
    for line in open(path):
        r = json.loads(line)          # every line whole JSON
        r.pop("ms", None)
        if "error" in r:  # "line N: ..." numbers the line as it arrived
            r["error"] = r["error"].split(": ", 1)[1]
        assert "id" in r, r
        assert r["id"] not in out, "two answers for " + r["id"]
        out[r["id"]] = r
    return out
s, c = load(sys.argv[1]), load(sys.argv[2])
assert len(s) == 36 and set(s) == set(c), (len(s), len(c), sorted(set(s) ^ set(c)))
diff = [k for k in s if s[k] != c[k]]
assert not diff, ("differ", diff[:3], [s[k] for k in diff[:1]], [c[k] for k in diff[:1]])
bad = [k for k in s if k.endswith("-bad")]
assert len(bad) == 4 and all("error" in s[k] and "empty" in s[k]["error"] for k in bad), [s[k] for k in bad]
assert sum("calls" in r for r in s.values()) == 32
order = [json.loads(l)["id"] for l in open(sys.argv[2])]
print("answers: %d, writers interleaved: %s" % (len(order), order != sorted(order, key=lambda k: k[:2])))
PY
then pass=$((pass + 1)); else echo "FAIL concurrent answers differ from the serial run"; fails=$((fails + 1)); fi
echo "concurrency: $((SECONDS - t_start)) s"
finish
