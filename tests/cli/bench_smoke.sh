#!/usr/bin/env bash
# needle-bench as a user runs it: a tiny model, one measured run, JSON with every required key
# holding a positive number; and a missing model fails with exit 2 and a one-line reason.
# Checks that the tool works, never how fast it is (docs/benchmarks.md has the numbers).
set -euo pipefail

bin="${NEEDLE_BIN:?NEEDLE_BIN not set}"
data="${NEEDLE_TEST_DATA:?NEEDLE_TEST_DATA not set}"
[[ -x "$bin/needle-bench" && -x "$bin/needle-convert" ]] || { echo "needle-bench or needle-convert not built"; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$bin/needle-convert" "$data/tiny_np1_f16.pkl" -o "$work/tiny.needle" -q

"$bin/needle-bench" -m "$work/tiny.needle" --json --runs 1 --enc-len 16 --gen-len 4 -t 1 \
  >"$work/out.json" 2>"$work/err.txt" || { echo "needle-bench failed:"; cat "$work/err.txt"; exit 1; }

python3 - "$work/out.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
lines = [l for l in text.splitlines() if l.strip()]
assert len(lines) == 1, f"expected one line of JSON, got {len(lines)}: {text!r}"
o = json.loads(lines[0])
positive = ["prefill_tok_s", "decode_tok_s", "load_ms", "first_token_ms", "encode_ms", "peak_rss_mb",
            "threads", "enc_len", "gen_len", "params"]
for k in positive:
    assert k in o, f"missing key {k}: {o}"
    v = o[k]
    assert isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, f"{k} = {v!r} is not a positive number"
assert isinstance(o.get("isa"), str) and o["isa"], f"isa = {o.get('isa')!r}"
assert o["enc_len"] == 16 and o["gen_len"] == 4 and o["threads"] == 1, o
assert o["first_token_ms"] >= o["load_ms"], "first token must include the load"
print("json ok:", {k: o[k] for k in ("isa", "prefill_tok_s", "decode_tok_s", "first_token_ms", "peak_rss_mb")})
PY

# A model that does not exist: exit 2, one line on stderr naming the tool.
set +e
"$bin/needle-bench" -m /nonexistent --runs 1 >"$work/out2.txt" 2>"$work/err2.txt"
rc=$?
set -e
[[ $rc -eq 2 ]] || { echo "expected exit 2 for a missing model, got $rc"; cat "$work/err2.txt"; exit 1; }
[[ $(wc -l <"$work/err2.txt") -eq 1 ]] || { echo "expected a one-line error, got:"; cat "$work/err2.txt"; exit 1; }
grep -q '^needle-bench: error: ' "$work/err2.txt" || { echo "error line does not name the tool:"; cat "$work/err2.txt"; exit 1; }
[[ ! -s "$work/out2.txt" ]] || { echo "unexpected stdout on error"; exit 1; }

# --help exits 0.
"$bin/needle-bench" --help >/dev/null
echo "bench_smoke: ok"
