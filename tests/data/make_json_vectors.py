"""Writes json_vectors.jsonl: inputs and what Python 3 makes of them.

Each line: {"input": text, "compact": json.dumps(json.loads(text), separators=(",", ":")),
"sorted": same with sort_keys=True} or {"input": text, "error": true} when json.loads rejects it.
The expected outputs come from Python, never from our code.

    python3 tests/data/make_json_vectors.py OUT.jsonl [--all]

Sources: hand-picked edge cases, every tools/answers string of the e2e fixture (test.jsonl),
values taken from the shared datasets (re-serialized in several styles), random structures and
random float bit patterns, and mutated (mostly invalid) texts. Without --all the dataset-derived
part is sampled so the committed file stays small. Seeded: the output is deterministic.
"""
import glob
import json
import math
import os
import random
import struct
import sys

SHARED = os.environ.get("NEEDLE_SHARED", "/work/shared")

EDGE = [
    '{}', '[]', '""', '0', '-0', '-0.0', '0.0', '1', '-1', '1.0', '5.0', '0.1', '1e16', '1E16', '1e15',
    '1e-5', '1e-4', '0.0001', '0.00001', '123456789012345678', '1234567890123456789012345678901234567890',
    '-1234567890123456789012345678901234567890', '18446744073709551616', '9223372036854775808',
    '-9223372036854775809', '1E400', '-1E400', '1e-400', '-1e-400', '4.9e-324', '2.5e-324', '2.4e-324',
    '1.7976931348623157e308', '1.7976931348623159e308', '2.2250738585072014e-308', '0.30000000000000004',
    '100.0', '1e22', '1e23', '9007199254740993', '9007199254740993.0', '12345678901234567.0', '0.5e1',
    '123.456e-7', '1.5e300', '3.14159', '2e0', '-2E-2', '1e+2', '1E-2', '0e0', '0.0e5', '-0e-0',
    'true', 'false', 'null', ' [1, 2 ,3 ] ', '\n\t{"a" :\r\n 1}\n',
    '{"a":1,"b":2,"a":3}', '{"a":1,"b":{"c":1,"c":[1,{"c":2,"c":3}]},"a":{"x":1}}', '{"b":1,"a":2,"B":3,"_":4}',
    '{"\\u00e9":1,"e":2,"\\ud83d\\ude00":3,"\\uffff":4,"~":5}',
    '"\\u00e9\\u4e2d\\ud83d\\ude00"', '"é中😀"', '"\\ud83d"', '"\\ude00"', '"\\ude00\\ud83d"', '"\\ud83d\\u0041"',
    '"\\ud83dx"', '"\\ud83d\\ud83d\\ude00"',
    '"\\"\\\\\\/\\b\\f\\n\\r\\t"', '"\\u0000\\u0001\\u001f\\u007f\\u0080\\u00ff"', '"a/b</script>"',
    '"\\u2028\\u2029"', '"\\uFEFF"', '"\\uABCD\\uabcd"', '"\x7f"', '"tab\\there"',
    '[1,[2,[3,[4,[5]]]]]', '{"a":[],"b":{},"c":[{}],"d":""}', '[true,false,null]',
    '[1.0,1,1e0,10e-1,0.1e1]', '[0.1,0.2,0.7,1.1,2.675,1e21,1e-7,123e-20]',
    # invalid under both
    '', ' ', '[', ']', '{', '}', '[1,]', '{"a":1,}', '[1 2]', '{"a" 1}', '{"a":}', '{a:1}', "{'a':1}",
    '01', '-01', '1.', '.5', '1e', '1e+', '+1', '--1', '0x10', '1 2', '[] []', '{}x', 'tru', 'nul', 'True',
    '"abc', '"\\x"', '"\\u12"', '"\\u12G4"', '"a\tb"', '"a\nb"', '"\x01"', '[1,,2]', '[,1]', '{,}', '{"a":1 "b":2}',
    '"\\', '\\"', '[1]]', '{"a":1}}', '"a"b', '1 true', 'nulll', 'falsey', '[01]', '[-]', '[1e5.]', '1.e5',
]


def py(text):
    try:
        v = json.loads(text)
    except (ValueError, RecursionError):
        return {"input": text, "error": True}
    return {"input": text, "compact": json.dumps(v, separators=(",", ":")),
            "sorted": json.dumps(v, separators=(",", ":"), sort_keys=True)}


def walk(v, out, depth=0):
    """Sub-values worth testing: objects and arrays below the top."""
    if isinstance(v, (dict, list)) and depth > 0:
        out.append(v)
    if depth > 6:
        return
    if isinstance(v, dict):
        for x in v.values():
            walk(x, out, depth + 1)
    elif isinstance(v, list):
        for x in v:
            walk(x, out, depth + 1)


def styles(rng, v):
    """The same value written as different texts."""
    return [json.dumps(v), json.dumps(v, ensure_ascii=False), json.dumps(v, indent=rng.choice([1, 2, "\t"]))]


def dataset_texts(rng, take_all):
    texts = []
    ex = os.path.join(SHARED, "fixtures/e2e/test.jsonl")
    if os.path.exists(ex):
        for line in open(ex, encoding="utf-8"):
            e = json.loads(line)
            texts += [e["tools"], e["answers"]]
    pool = []
    for path in sorted(glob.glob(os.path.join(SHARED, "datasets/**/*.json*"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        docs = []
        try:
            docs.append(json.loads(raw))
        except ValueError:
            for line in raw.splitlines():
                if line.strip():
                    try:
                        docs.append(json.loads(line))
                    except ValueError:
                        pass
        subs = []
        for d in docs:
            walk(d, subs)
        for s in subs:
            # also strings that hold JSON (tools/answers columns)
            pass
        rng.shuffle(subs)
        pool += subs if take_all else subs[:12]
    for v in pool:
        t = json.dumps(v)
        if len(t) > 1500 and not take_all:
            continue
        texts += styles(rng, v) if take_all else [rng.choice(styles(rng, v))]
    return texts


def rand_str(rng):
    alphabet = ['a', 'Z', ' ', '"', '\\', '/', '\n', '\t', '\x00', '\x1f', '\x7f', 'é', 'ß', '中', '😀', '\u2028',
                '\ufffd', '\U0010ffff', '\ud800', '\udfff']
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))


def rand_float(rng):
    k = rng.random()
    if k < 0.4:
        while True:
            f = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
            if math.isfinite(f):
                return f
    if k < 0.7:
        return round(rng.uniform(-1000, 1000), rng.randint(0, 6))
    return rng.choice([1, -1]) * 10.0 ** rng.randint(-30, 30) * rng.choice([1, 1.5, 3, 7.25])


def rand_value(rng, depth=0):
    k = rng.random()
    if depth > 3 or k < 0.5:
        c = rng.randrange(6)
        if c == 0:
            return rand_str(rng)
        if c == 1:
            return rand_float(rng)
        if c == 2:
            return rng.choice([0, 1, -1, 2**63, -2**63 - 1, 2**64, 10**30, rng.randint(-10**6, 10**6)])
        return rng.choice([True, False, None])
    if k < 0.75:
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rand_str(rng): rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate(rng, text):
    if not text:
        return text
    i = rng.randrange(len(text))
    op = rng.randrange(3)
    if op == 0:
        return text[:i] + text[i + 1:]
    if op == 1:
        return text[:i] + rng.choice('{}[],:"\\ 0-.eE1tfn') + text[i:]
    return text[:i] + rng.choice('{}[],:"\\0-.eEx') + text[i + 1:]


def main():
    out = sys.argv[1]
    take_all = "--all" in sys.argv
    rng = random.Random(20240611)
    texts = list(EDGE)
    texts += ['[' * 512 + ']' * 512, '{"a":' * 100 + '1' + '}' * 100]
    texts += dataset_texts(rng, take_all)
    for _ in range(20000 if take_all else 1500):
        v = rand_value(rng)
        t = rng.choice([json.dumps(v), json.dumps(v, ensure_ascii=False)])
        texts.append(t)
        if rng.random() < 0.3:
            texts.append(mutate(rng, t))
    for _ in range(20000 if take_all else 800):
        texts.append(repr(rand_float(rng)))
    seen = set()
    with open(out, "w", encoding="utf-8") as f:
        for t in texts:
            if t in seen:
                continue
            seen.add(t)
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates cannot be written as UTF-8 input
                continue
            f.write(json.dumps(py(t)) + "\n")


if __name__ == "__main__":
    main()
