"""Importers: ../shared/datasets -> base examples (one per source row that converts cleanly to a
single-turn query -> calls example).

A base example is a dict:
  source, split, id        where it comes from (split = the source's own file/split name)
  query                    the text the encoder gets before <tools>
  tools                    canonical v1 tools (common.canonical_from_any), candidate list in source order
  calls                    gold calls [{"name", "arguments"}] with the tools' names; [] = no call
  raw_tools                (hold-out sources only) the tools exactly as the source wrote them
  fields                   (Seal-Tools) tool name -> its "field", for hard-negative distractors
  domain                   (CallNavi) the domain whose API list the tools come from

Every importer returns (examples, drops) where drops counts rows left out, by reason. Nothing
here is random: sampling happens in augment.py from the build seed.
"""
import ast
import collections
import glob
import json
import os
import re

import common as C

_API_CALL = re.compile(r"API_call_\d+")


def _add(drops, reason):
    drops[reason] += 1


# ---- Seal-Tools ------------------------------------------------------------------------------------

SEAL_SPLITS = ("dev", "test_in_domain", "test_out_domain")
_SEAL_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
               "list": "array", "dict": "object"}


def seal_tool(t):
    """A Seal-Tools tool ({api_name, api_description, parameters:{p:{type:'str',..}}, required})
    as a canonical v1 tool (Python type names spelled as JSON Schema types)."""
    req = set(t.get("required") or [])
    params = {}
    for p, spec in (t.get("parameters") or {}).items():
        typ = _SEAL_TYPES.get(spec.get("type"), spec.get("type", "any"))
        params[p] = C.v1_param(typ, spec.get("description", ""), p in req)
    return {"name": t["api_name"], "description": t.get("api_description", ""), "parameters": params}


def seal_pool(root):
    """tool.jsonl: the 4,076-tool pool, as (canonical tools, name -> field)."""
    tools, fields = [], {}
    with open(os.path.join(root, "seal_tools", "tool.jsonl"), encoding="utf-8") as f:
        for ln in f:
            t = json.loads(ln)
            tools.append(seal_tool(t))
            fields[t["api_name"]] = t.get("field", "")
    return tools, fields


def _seal_candidates(root, split):
    path = os.path.join(root, "seal_tools", "dataset_for_finetune", split + ".json")
    out = {}
    with open(path, encoding="utf-8") as f:
        for d in json.load(f):
            human = d["conversations"][0]["value"]
            m = re.search(r"api_list = (\[.*\])\ntask_instruction", human, re.S)
            out[d["id"]] = ast.literal_eval(m.group(1))
    return out


def seal_tools(root, split):
    drops = collections.Counter()
    cands = _seal_candidates(root, split)
    out = []
    with open(os.path.join(root, "seal_tools", split + ".jsonl"), encoding="utf-8") as f:
        for ln in f:
            r = json.loads(ln)
            calls = [{"name": c["api"], "arguments": c["parameters"]} for c in r["calling"]]
            if any(C.has_placeholder(c["arguments"], _API_CALL) for c in calls):
                _add(drops, "nested call (argument is an earlier call's output)")
                continue
            api_list = cands.get(r["id"])
            if api_list is None:
                _add(drops, "no candidate list")
                continue
            tools = [seal_tool(t) for t in api_list]
            names = {t["name"] for t in tools}
            if not all(c["name"] in names for c in calls):
                _add(drops, "gold tool missing from its candidate list")
                continue
            out.append({"source": "seal_tools", "split": split, "id": r["id"], "query": r["query"].strip(),
                        "tools": tools, "calls": calls,
                        "fields": {t["api_name"]: t.get("field", "") for t in api_list}})
    return out, drops


# ---- ACEBench ------------------------------------------------------------------------------------

ACE_FILES = (
    "normal_single_turn_single_function", "normal_single_turn_parallel_function", "normal_similar_api",
    "normal_preference", "normal_atom_bool", "normal_atom_enum", "normal_atom_list", "normal_atom_number",
    "normal_atom_object_deep", "normal_atom_object_short", "special_irrelevant", "special_incomplete",
    "special_error_param",
)
_TURN = re.compile(r"(^|\n)(user|system):", re.I)


def ace_query(r):
    """The question string ('user: ...\n', atom_*/similar_api may hold earlier turns) as a query:
    a lone user turn loses its 'user: ' label, a dialogue keeps its role labels. The time line
    (needed for relative dates) and the preference profile's basic features follow on new lines."""
    q = r["question"].strip()
    turns = _TURN.findall(q)
    if len(turns) == 1 and q.lower().startswith("user:"):
        q = q[5:].strip()
    t = (r.get("time") or "").strip()
    if t:
        q += "\n" + t
    prof = r.get("profile")
    if isinstance(prof, dict) and isinstance(prof.get("basic_features"), dict):
        q += "\nUser profile: " + json.dumps(prof["basic_features"], ensure_ascii=False)
    return q


def acebench(root, name):
    drops = collections.Counter()
    base = os.path.join(root, "acebench", "data_en")
    with open(os.path.join(base, "data_" + name + ".json"), encoding="utf-8") as f:
        rows = [json.loads(x) for x in f if x.strip()]
    with open(os.path.join(base, "possible_answer", "data_" + name + ".json"), encoding="utf-8") as f:
        gts = {a["id"]: a["ground_truth"] for a in (json.loads(x) for x in f if x.strip())}
    out = []
    for r in rows:
        try:
            tools = [C.canonical_from_any(t) for t in r["function"]]
            C.parse_tools(r["function"])
        except C.ToolError as e:
            _add(drops, "tools do not parse: " + str(e).split(":")[0])
            continue
        names = [t["name"] for t in tools]
        if name.startswith("special_"):
            calls = []  # irrelevant / incomplete / wrong parameter: the right answer is no call
        else:
            gt = gts.get(r["id"])
            if not isinstance(gt, dict):
                _add(drops, "no ground truth")
                continue
            calls = []
            for key, args in gt.items():
                fn = key
                if fn not in names:
                    m = re.match(r"^(.*)_\d+$", key)  # repeated calls: fn_name_1, fn_name_2
                    if m and m.group(1) in names:
                        fn = m.group(1)
                calls.append({"name": fn, "arguments": args})
            if not all(c["name"] in names and isinstance(c["arguments"], dict) for c in calls):
                _add(drops, "ground truth names a function not in the list")
                continue
        out.append({"source": "acebench", "split": name, "id": r["id"], "query": ace_query(r),
                    "tools": tools, "calls": calls, "raw_tools": r["function"]})
    return out, drops


# ---- HammerBench -----------------------------------------------------------------------------------

HAMMER_FILES = ("ST_Perfect", "ST_Imperfect", "ST_External", "ir_ST_Perfect", "ir_ST_Imperfect", "ir_ST_External")


def hammerbench(root, name):
    drops = collections.Counter()
    path = os.path.join(root, "hammerbench", "data", "en", "single-turn", name + ".json")
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    out = []
    for i, r in enumerate(rows):
        q = r["messages"][0]["content"].strip()
        m = re.match(r"^EK:(.*)\nquery:(.*)$", q, re.S)
        if m:  # external knowledge: the forwarded text, then the request
            q = m.group(1).strip() + "\n" + m.group(2).strip()
        try:
            tools = [C.canonical_from_any(t) for t in r["multiple_tools"]]
            C.parse_tools(r["multiple_tools"])
        except C.ToolError:
            _add(drops, "tools do not parse")
            continue
        if name.startswith("ir_"):
            calls = []  # the gold tool was removed from the list
            gold = r["messages"][1]["content"]["name"]
            if gold in {t["name"] for t in tools}:
                _add(drops, "ir_: gold tool still offered")
                continue
        else:
            c = r["messages"][1]["content"]
            calls = [{"name": c["name"], "arguments": c.get("arguments") or {}}]
        out.append({"source": "hammerbench", "split": name, "id": f"{name}-{i}", "query": q,
                    "tools": tools, "calls": calls})
    return out, drops


# ---- CallNavi ------------------------------------------------------------------------------------


def _callnavi_param(v):
    if isinstance(v, dict):  # a nested object spec {field: type word}
        o = C.v1_param("object", "", False)
        o["properties"] = {k: {"type": _callnavi_param(x)["type"], "required": False} for k, x in v.items()}
        return o
    if isinstance(v, str) and C.arg_type(v) != "any":
        return C.v1_param(v, "", False)
    # 'VISA/MASTER/AMEX/JCB', 'new/replacement': a hint, not a type; keep it as the description
    return C.v1_param("string", v if isinstance(v, str) else "", False)


def callnavi(root):
    drops = collections.Counter()
    base = os.path.join(root, "callnavi", "Dataset")
    out = []
    for qpath in sorted(glob.glob(os.path.join(base, "Questions", "*.json"))):
        domain = os.path.splitext(os.path.basename(qpath))[0]
        with open(os.path.join(base, "APIs", domain + ".json"), encoding="utf-8") as f:
            ports = json.load(f)["api_ports"]
        tools, seen = [], set()
        for p in ports:
            if C.snake_case(p["name"]) in seen:
                continue  # a few domains list one API twice
            seen.add(C.snake_case(p["name"]))
            # APIs/ gives a type word per parameter (telecommunications only a list of names)
            # and no required list: every parameter is optional.
            ps = p.get("parameters") or {}
            if isinstance(ps, list):
                ps = {k: "any" for k in ps}
            params = {k: _callnavi_param(v) for k, v in ps.items()}
            tools.append({"name": p["name"], "description": p.get("description", ""), "parameters": params})
        by_name = {t["name"]: t for t in tools}
        with open(qpath, encoding="utf-8") as f:
            qs = json.load(f)
        for r in qs:
            user = [m["content"] for m in r["question"] if m.get("role") == "user"]
            if len(user) != 1:
                _add(drops, "not one user turn")
                continue
            gt = r["ground_truth"]
            calls = [{"name": n, "arguments": a} for n, a in zip(gt["API"], gt["parameters"])]
            if len(gt["API"]) != len(gt["parameters"]):
                _add(drops, "API and parameters lists differ in length")
                continue
            if any(C.has_placeholder(c["arguments"], re.compile(r"\$\$\$")) for c in calls):
                _add(drops, "sequential call (a value comes from an earlier call)")
                continue
            if not all(c["name"] in by_name and isinstance(c["arguments"], dict)
                       and all(k in by_name[c["name"]]["parameters"] for k in c["arguments"]) for c in calls):
                _add(drops, "gold API or parameter not in the domain's list")
                continue
            out.append({"source": "callnavi", "split": domain, "id": r["id"], "query": user[0].strip(),
                        "tools": tools, "calls": calls, "domain": domain})
    return out, drops


# ---- ToolAlpaca ------------------------------------------------------------------------------------


def _openapi_tools(doc):
    """OpenAPI 3 paths -> canonical tools (operationId, query/path parameters + JSON body)."""
    tools = []
    for path, ops in (doc.get("paths") or {}).items():
        for method, op in ops.items():
            if not isinstance(op, dict):
                continue
            # ToolAlpaca names an operation without an operationId by its path and method:
            # /api/v2/entries/en/{word} GET -> api_v2_entries_en_word_get
            name = op.get("operationId") or (path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
                                             + "_" + method)
            props, req = {}, []
            for p in op.get("parameters") or []:
                if not isinstance(p, dict) or "name" not in p:
                    continue
                sch = dict(p.get("schema") or {})
                if p.get("description") and "description" not in sch:
                    sch["description"] = p["description"]
                props[p["name"]] = sch
                if p.get("required"):
                    req.append(p["name"])
            body = (((op.get("requestBody") or {}).get("content") or {}).get("application/json") or {}).get("schema")
            if isinstance(body, dict) and isinstance(body.get("properties"), dict):
                for k, v in body["properties"].items():
                    props[k] = v
                req += [k for k in body.get("required") or [] if isinstance(k, str)]
            t = {"name": name, "description": op.get("description") or op.get("summary") or "",
                 "parameters": {"type": "object", "properties": props, "required": req}}
            tools.append(C.canonical_from_any(t))
    return tools


_KEYLIKE = re.compile(r"(^|_)(api_?key|apikey|key|token|access_token|secret)$", re.I)


def toolalpaca(root, name):
    drops = collections.Counter()
    with open(os.path.join(root, "toolalpaca", "data", name + ".json"), encoding="utf-8") as f:
        apis = json.load(f)
    out = []
    for api in apis:
        try:
            tools = _openapi_tools(json.loads(api["Documentation"]))
            C.parse_tools([C.render_tool(t, t["name"], "v1") for t in tools])
        except (ValueError, C.ToolError, AttributeError):
            drops["tools do not convert"] += len(api.get("Instructions") or [])
            continue
        names = {t["name"] for t in tools}
        for i, (q, gold) in enumerate(zip(api.get("Instructions") or [], api.get("Golden_Answers") or [])):
            if len(gold) != 1:
                _add(drops, "more than one step (mostly dependent calls)")
                continue
            g = gold[0]
            try:
                args = json.loads(g["Action_Input"]) if g["Action_Input"].strip() else {}
            except ValueError:
                _add(drops, "Action_Input is not JSON")
                continue
            if not isinstance(args, dict) or g["Action"] not in names:
                _add(drops, "unknown action or arguments not an object")
                continue
            if C.has_placeholder(args, re.compile(r"\$\{|\{\{")):
                _add(drops, "placeholder value")
                continue
            args = {k: v for k, v in args.items() if v != ""}  # "" marks an unspecified slot
            if any(_KEYLIKE.search(k) and isinstance(v, str) and v not in q for k, v in args.items()):
                _add(drops, "credential value not in the query")
                continue
            out.append({"source": "toolalpaca", "split": name, "id": f"{api['Name']}-{i}", "query": q.strip(),
                        "tools": tools, "calls": [{"name": g["Action"], "arguments": args}]})
    return out, drops


# ---- Glaive (LLaMA-Factory demo) -----------------------------------------------------------------------


def glaive(root):
    drops = collections.Counter()
    with open(os.path.join(root, "glaive_llamafactory", "data", "glaive_toolcall_en_demo.json"), encoding="utf-8") as f:
        rows = json.load(f)
    out = []
    for i, r in enumerate(rows):
        conv = r["conversations"]
        if len(conv) < 2 or conv[0]["from"] != "human":
            _add(drops, "does not start with a human turn")
            continue
        try:
            raw = json.loads(r["tools"]) if r.get("tools") else []
            tools = [C.canonical_from_any(t) for t in raw]
            C.parse_tools(raw)
        except (ValueError, C.ToolError):
            _add(drops, "tools do not parse")
            continue
        q = conv[0]["value"].strip()
        nxt = conv[1]
        if nxt["from"] == "function_call":
            c = json.loads(nxt["value"])
            calls = [{"name": c["name"], "arguments": c.get("arguments") or {}}]
        elif nxt["from"] == "gpt":
            calls = []  # answered in text (a question back, a refusal, chat): no call
        else:
            _add(drops, "unexpected second turn")
            continue
        split = "no_tools" if not tools else "first_turn"
        out.append({"source": "glaive", "split": split, "id": f"glaive-{i}", "query": q, "tools": tools, "calls": calls})
    return out, drops


# ---- API-Bank ------------------------------------------------------------------------------------

_APIBANK_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array",
                  "dict": "object", "datetime": "string", "date": "string"}


def _apibank_call(text):
    m = re.match(r"^\s*API-Request:\s*\[(.*)\]\s*$", text, re.S)
    if not m:
        return None
    node = ast.parse(m.group(1).strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
        return None
    return {"name": node.func.id, "arguments": {k.arg: ast.literal_eval(k.value) for k in node.keywords}}


def api_bank(root):
    drops = collections.Counter()
    with open(os.path.join(root, "api_bank", "api-bank", "test-data", "level-1-api.json"), encoding="utf-8") as f:
        rows = json.load(f)
    out = []
    for r in rows:
        inp = r["input"]
        if "API-Request:" in inp:
            _add(drops, "earlier API call in the dialogue")
            continue
        lines = [x for x in inp.replace("Generate API Request:", "").strip().split("\n") if x.strip()]
        if not lines or not all(x.startswith(("User:", "AI:")) for x in lines):
            _add(drops, "unexpected dialogue format")
            continue
        users = [x for x in lines if x.startswith("User:")]
        q = users[0][5:].strip() if len(users) == 1 and len(lines) == 1 else "\n".join(lines)
        try:
            call = _apibank_call(r["expected_output"])
        except (SyntaxError, ValueError):
            call = None
        if call is None:
            _add(drops, "gold call does not parse")
            continue
        tools = []
        desc = r["instruction"].split("API descriptions:", 1)[1]
        for ln in desc.strip().split("\n"):
            if not ln.strip():
                continue
            t = json.loads(ln)
            params = {k: C.v1_param(_APIBANK_TYPES.get(v.get("type"), "any"), v.get("description", ""), False)
                      for k, v in (t.get("input_parameters") or {}).items()}
            tools.append({"name": t["name"], "description": t.get("description", ""), "parameters": params})
        out.append({"source": "api_bank", "split": "level-1", "id": f"{r['file']}#{r['id']}", "query": q,
                    "tools": tools, "calls": [call]})
    return out, drops


# ---- all --------------------------------------------------------------------------------------------


def load_all(root):
    """Every importer, in a fixed order. Returns (examples, drops {(source, split): Counter})."""
    jobs = [(("seal_tools", s), lambda s=s: seal_tools(root, s)) for s in SEAL_SPLITS]
    jobs += [(("acebench", n), lambda n=n: acebench(root, n)) for n in ACE_FILES]
    jobs += [(("hammerbench", n), lambda n=n: hammerbench(root, n)) for n in HAMMER_FILES]
    jobs += [(("callnavi", "*"), lambda: callnavi(root))]
    jobs += [(("toolalpaca", n), lambda n=n: toolalpaca(root, n)) for n in ("eval_real", "eval_simulated")]
    jobs += [(("glaive", "*"), lambda: glaive(root)), (("api_bank", "level-1"), lambda: api_bank(root))]
    out, drops = [], {}
    for key, fn in jobs:
        ex, d = fn()
        out += ex
        drops[key] = d
    return out, drops


def heldout_queries(root):
    """Every query of the held-out files as the raw data has it (also rows the importers drop),
    in the forms a training query could repeat it: Seal-Tools test_out_domain, ACEBench
    normal_single_turn_single_function and special_irrelevant (with and without the time line)."""
    qs = []
    with open(os.path.join(root, "seal_tools", "test_out_domain.jsonl"), encoding="utf-8") as f:
        qs += [json.loads(x)["query"] for x in f if x.strip()]
    for name in ("normal_single_turn_single_function", "special_irrelevant"):
        with open(os.path.join(root, "acebench", "data_en", "data_" + name + ".json"), encoding="utf-8") as f:
            for x in f:
                if x.strip():
                    r = json.loads(x)
                    qs.append(ace_query(r))
                    qs.append(ace_query({"question": r["question"]}))
    return qs


def needle_jsonl(path, source="extra"):
    """A user's own Needle JSONL (query, tools, answers; tools in any form needle-run accepts,
    tools/answers as values or JSON text), imported like a source so that it is augmented too."""
    drops = collections.Counter()
    out = []
    split = os.path.splitext(os.path.basename(path))[0]
    with open(path, encoding="utf-8") as f:
        for n, ln in enumerate(f, 1):
            if not ln.strip():
                continue
            try:
                r = json.loads(ln)
                tools = json.loads(r["tools"]) if isinstance(r["tools"], str) else r["tools"]
                answers = json.loads(r["answers"]) if isinstance(r.get("answers"), str) else r.get("answers")
                if isinstance(answers, dict):
                    answers = [answers]
                canon = [C.canonical_from_any(t) for t in tools]
                C.parse_tools(tools)
                calls = [{"name": c["name"], "arguments": c.get("arguments") or {}} for c in answers or []]
            except (ValueError, KeyError, TypeError, AttributeError, C.ToolError):
                _add(drops, "line does not parse as a Needle example")
                continue
            out.append({"source": source, "split": split, "id": str(r.get("id", f"{split}-{n}")),
                        "query": r["query"].strip(), "tools": canon, "calls": calls})
    return out, drops
