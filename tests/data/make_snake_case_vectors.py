"""Writes snake_case_vectors.jsonl: tool names and Needle's snake_case of them, computed by Python's re.

    python3 tests/data/make_snake_case_vectors.py OUT.jsonl

Names: hand-picked edge cases plus every tool/function name found in the shared datasets.
"""
import glob
import json
import os
import re
import sys

SHARED = os.environ.get("NEEDLE_SHARED", "/work/shared")


def snake(name):
    # The reference's order (docs: needle-reference.md section 4).
    s = re.sub(r"[^a-zA-Z0-9_]+", "_", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"_+", "_", s)
    return s.lower().strip("_")


EDGE = ["getWeather", "music.play", "set_timer", "convertCurrency", "HTTPServer", "getHTTPResponse", "parseXMLToJSON",
        "ABC", "aBC", "ABc", "AbC", "a1B2C3", "version2Update", "IOError", "__init__", "_private_", "a--b..c",
        "Get Weather Now!", "café.menu", "Zürich_lookup", "über", "naïveBayes", "日本語", "x", "X", "", "___",
        "already_snake_case", "Mixed_Case_Name", "camelCase123Name", "get2FACode", "ID", "userID", "userIDs",
        "getURLForID", "S3Bucket", "s3bucket", "ml.train-model v2", "a_B", "a__B", "tool😀name", "AAAa", "AAaa",
        "aAAAb", "math.factorial", "requests.get", "finance.calc_interest", "lookUp.NYSE.stockQuote"]


def names_in(v, out):
    if isinstance(v, dict):
        for k in ("name", "api_name", "fn_name"):
            if isinstance(v.get(k), str) and len(v[k]) < 100:
                out.add(v[k])
        for x in v.values():
            names_in(x, out)
    elif isinstance(v, list):
        for x in v:
            names_in(x, out)


def main():
    names = set(EDGE)
    for path in sorted(glob.glob(os.path.join(SHARED, "datasets/**/*.json*"), recursive=True)):
        raw = open(path, encoding="utf-8").read()
        try:
            names_in(json.loads(raw), names)
        except ValueError:
            for line in raw.splitlines():
                try:
                    names_in(json.loads(line), names)
                except ValueError:
                    pass
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        for n in EDGE + sorted(names - set(EDGE)):
            f.write(json.dumps({"name": n, "snake": snake(n)}) + "\n")


if __name__ == "__main__":
    main()
