"""Shared helpers for the Needle data pipeline (python3 standard library only).

Tools are held in one canonical form, the flat v1 object that lib/text/tools.cpp produces from
any accepted input (its `to_v1`): {"name", "description", "parameters": {arg: SPEC}} with
SPEC = {"type", ["enum"], "description", "required", ["items"], ["properties"]}. Renderers write
that tool in each of the three forms needle-run accepts (v1, OpenAI/JSON Schema, BFCL); a Python
port of `parse_tools` gives back what the encoder sees (the "model view"), and a port of
`validate_output` checks a gold call list against its tools exactly as `--constrain schema`
would constrain the output.
"""
import json
import re
import unicodedata

# ---- JSON text ------------------------------------------------------------------------------


def compact(v):
    """Python's json.dumps(v, separators=(",", ":")): what the model is trained on."""
    return json.dumps(v, separators=(",", ":"))


def line(v):
    """One JSONL line (UTF-8 kept readable; needle's reader re-compacts what it needs)."""
    return json.dumps(v, ensure_ascii=False, separators=(", ", ": "))


# ---- names --------------------------------------------------------------------------------------

_NON_WORD = re.compile(r"[^a-zA-Z0-9_]+")
_LOWER_UPPER = re.compile(r"([a-z0-9])([A-Z])")
_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_UNDERSCORES = re.compile(r"_+")


def snake_case(name):
    """Needle's tool-name rewrite (needle-reference.md section 4), the reference regexes in order."""
    s = _NON_WORD.sub("_", name)
    s = _LOWER_UPPER.sub(r"\1_\2", s)
    s = _ACRONYM.sub(r"\1_\2", s)
    s = _UNDERSCORES.sub("_", s)
    return s.lower().strip("_")


NAME_STYLES = ("orig", "snake", "camel", "pascal", "dotted", "kebab")


def style_name(name, style):
    """The tool name written in another style. Words are the reference snake_case split, so the
    model sees (nearly always) the same snake_case name whatever the style; see stats."""
    if style == "orig":
        return name
    words = [w for w in snake_case(name).split("_") if w]
    if not words:
        return name
    if style == "snake":
        return "_".join(words)
    if style == "kebab":
        return "-".join(words)
    cap = [w[:1].upper() + w[1:] for w in words]
    if style == "camel":
        return words[0] + "".join(cap[1:])
    if style == "pascal":
        return "".join(cap)
    if style == "dotted":  # namespace.method, e.g. weather.getForecast
        if len(words) == 1:
            return words[0]
        return words[0] + "." + words[1] + "".join(cap[2:])
    raise ValueError(style)


# ---- queries --------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def norm_query(q):
    """Normalized query for dedupe and leakage checks: NFKC, lowercase, only letters/digits
    (every run of anything else is one space)."""
    q = unicodedata.normalize("NFKC", q).lower()
    return _NON_ALNUM.sub(" ", q).strip()


def ngrams(words, n):
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


# ---- types --------------------------------------------------------------------------------------

_TYPE_NAMES = {
    "string": "string", "str": "string", "number": "number", "float": "number", "double": "number",
    "integer": "integer", "int": "integer", "boolean": "boolean", "bool": "boolean", "null": "null",
    "array": "array", "list": "array", "tuple": "array", "object": "object", "dict": "object",
    "any": "any",
}


def arg_type(s):
    """lib/text/tools.cpp parse_arg_type: any spelling -> the v1 spelling ("any" if unknown)."""
    if not isinstance(s, str):
        return "any"
    return _TYPE_NAMES.get(s.lower(), "any")


# ---- parse_tools port ---------------------------------------------------------------------------


class ToolError(ValueError):
    pass


def _read_type(node):
    t = node.get("type")
    nullable = False
    if isinstance(t, str):
        typ = arg_type(t)
    elif isinstance(t, list):
        types = []
        for x in t:
            if not isinstance(x, str):
                continue
            a = arg_type(x)
            if a == "null":
                nullable = True
            else:
                types.append(a)
        typ = types[0] if len(types) == 1 else ("null" if (not types and nullable) else "any")
    else:
        typ = "any"
    if node.get("nullable") is True:
        nullable = True
    return typ, nullable


def _parse_schema(node, where):
    """Port of parse_schema: returns a dict {type, nullable, enum, description, items, properties}."""
    typ, nullable = _read_type(node)
    s = {"type": typ, "nullable": nullable, "enum": None, "description": "", "items": None, "properties": None}
    d = node.get("description")
    if isinstance(d, str):
        s["description"] = d
    for alt in ("anyOf", "oneOf"):
        a = node.get(alt)
        if not isinstance(a, list) or "type" in node:
            continue
        non_null = []
        for x in a:
            t = x.get("type") if isinstance(x, dict) else None
            if isinstance(t, str) and t == "null":
                s["nullable"] = True
            else:
                non_null.append(x)
        if len(non_null) == 1 and isinstance(non_null[0], dict):
            nb, desc = s["nullable"], s["description"]
            s = _parse_schema(non_null[0], where)
            s["nullable"] = s["nullable"] or nb
            if desc:
                s["description"] = desc
    if "enum" in node:
        e = node["enum"]
        if not isinstance(e, list):
            raise ToolError(f"{where}: \"enum\" must be an array")
        s["enum"] = list(e)
    items = node.get("items")
    props = node.get("properties")
    if s["type"] == "any" and "type" not in node:
        if isinstance(props, dict):
            s["type"] = "object"
        elif items is not None:
            s["type"] = "array"
        elif s["enum"]:
            ev = s["enum"]
            if all(isinstance(v, str) for v in ev):
                s["type"] = "string"
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in ev):
                s["type"] = "integer"
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ev):
                s["type"] = "number"
            elif all(isinstance(v, bool) for v in ev):
                s["type"] = "boolean"
    if isinstance(items, dict) and s["type"] in ("array", "any"):
        s["items"] = _parse_schema(items, where + " items")
    if props is not None and s["type"] in ("object", "any"):
        req = node.get("required")
        s["properties"] = _parse_properties(props, req if isinstance(req, list) else None, where)
    return s


def _parse_properties(props, required_list, where):
    if not isinstance(props, dict):
        raise ToolError(f"{where}: properties must be an object")
    required = []
    if isinstance(required_list, list):
        for r in required_list:
            if not isinstance(r, str):
                raise ToolError(f"{where}: \"required\" must list property names")
            required.append(r)
    out = []
    for name, spec in props.items():
        at = f"{where}: parameter '{name}'"
        if not isinstance(spec, dict):
            raise ToolError(f"{at} must be an object")
        sch = _parse_schema(spec, at)
        req = spec.get("required") is True or name in required
        out.append((name, sch, req))
    return out


def _to_v1(s, required, top_level):
    """Port of to_v1: required < 0 for an item schema."""
    o = {"type": s["type"]}
    if s["enum"]:
        o["enum"] = list(s["enum"])
    if top_level or s["description"]:
        o["description"] = s["description"]
    if required >= 0:
        o["required"] = bool(required)
    if s["items"] is not None:
        o["items"] = _to_v1(s["items"], -1, False)
    if s["properties"]:
        o["properties"] = {n: _to_v1(sc, 1 if r else 0, False) for n, sc, r in s["properties"]}
    return o


def _is_json_schema(params):
    if "type" in params:
        return isinstance(params["type"], str)
    p = params.get("properties")
    return isinstance(p, dict) and ("type" not in p or isinstance(p["type"], dict))


def parse_tools(tools):
    """Port of needle::text::parse_tools. Returns a list of (caller name, model view v1 dict,
    args, description) where args = [(name, schema, required)], or raises ToolError like the
    C++ does."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ToolError("tools: expected a JSON array of tools")
    seen = {}
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            raise ToolError(f"tools[{i}]: expected an object")
        fn = t["function"] if isinstance(t.get("function"), dict) else t
        if "name" not in fn:
            raise ToolError(f"tools[{i}]: missing \"name\"")
        name = fn["name"]
        if not isinstance(name, str):
            raise ToolError(f"tools[{i}]: \"name\" must be a string")
        model_name = snake_case(name)
        if not model_name:
            raise ToolError(f"tools[{i}]: tool name '{name}' has no ASCII letters or digits")
        if model_name in seen:
            raise ToolError(f"tools[{i}]: tool name '{name}' collides with tools[{seen[model_name]}]")
        where = f"tools[{i}] '{name}'"
        desc = ""
        if "description" in fn:
            d = fn["description"]
            if not isinstance(d, str) and d is not None:
                raise ToolError(f"{where}: \"description\" must be a string")
            if isinstance(d, str):
                desc = d
        params = None
        has_params = False
        for key in ("parameters", "arguments", "input_schema"):
            if key in fn:
                params = fn[key]
                has_params = True
                break
        schema_form = False
        args = []
        if has_params and params is not None:
            if not isinstance(params, dict):
                raise ToolError(f"{where}: \"parameters\" must be an object")
            schema_form = _is_json_schema(params)
            if schema_form:
                if "type" in params and arg_type(params["type"]) != "object":
                    raise ToolError(f"{where}: \"parameters\" must be an object schema")
                if "properties" in params:
                    req = params.get("required")
                    if req is not None and not isinstance(req, list):
                        raise ToolError(f"{where}: \"required\" must be an array of names")
                    args = _parse_properties(params["properties"], req, where)
            else:
                args = _parse_properties(params, None, where)
        if not schema_form and fn is t:
            v1 = dict(t)
            v1["name"] = model_name
            if not has_params:
                v1["parameters"] = {}
        else:
            v1 = {"name": model_name, "description": desc,
                  "parameters": {n: _to_v1(sc, 1 if r else 0, True) for n, sc, r in args}}
        seen[model_name] = i
        out.append((name, v1, args, desc))
    return out


def model_tools_text(tools):
    """The tools text after <tools>: compact JSON of the model-view list."""
    return compact([t[1] for t in parse_tools(tools)])


def model_answer_text(calls):
    """answer_model_text: compact JSON, call names snake_cased; [] when empty."""
    out = []
    for c in calls:
        c2 = dict(c)
        if isinstance(c2.get("name"), str):
            c2["name"] = snake_case(c2["name"])
        out.append(c2)
    return compact(out)


# ---- canonical tools ------------------------------------------------------------------------------


def canonical_from_any(tool):
    """Any accepted form -> the canonical v1 object (name kept as the caller wrote it): the
    same object lib/text/tools.cpp would build from a JSON Schema (to_v1), also for v1 input, so
    extra keys ("field", "responses", "tags") and odd key orders are normalized away."""
    (name, _, args, desc), = parse_tools([tool])
    return {"name": name, "description": desc,
            "parameters": {n: _to_v1(sc, 1 if r else 0, True) for n, sc, r in args}}


def v1_param(typ, description="", required=False, enum=None):
    o = {"type": arg_type(typ)}
    if enum:
        o["enum"] = list(enum)
    o["description"] = description or ""
    o["required"] = bool(required)
    return o


# ---- renderers --------------------------------------------------------------------------------------

SCHEMA_STYLES = ("v1", "v1_loose", "openai", "bfcl")


def _js(spec, bfcl, rng=None):
    """Canonical v1 spec -> JSON Schema (OpenAI) or BFCL spelling (without "required")."""
    t = spec["type"]
    if bfcl:
        t = {"number": "float", "object": "dict"}.get(t, t)
    o = {}
    if t != "any" or bfcl:
        o["type"] = t
    if spec.get("description"):
        o["description"] = spec["description"]
    if "enum" in spec:
        o["enum"] = list(spec["enum"])
    if "items" in spec:
        o["items"] = _js(spec["items"], bfcl, rng)
    if "properties" in spec:
        o["properties"] = {n: _js(p, bfcl, rng) for n, p in spec["properties"].items()}
        req = [n for n, p in spec["properties"].items() if p.get("required")]
        if req:
            o["required"] = req
    if rng is not None and len(o) > 1:
        keys = list(o)
        rng.shuffle(keys)
        o = {k: o[k] for k in keys}
    return o


def _loose_v1(spec, rng, top):
    """A hand-written-looking v1 spec: keys in a random order, "required": false often left out
    (needle reads a missing "required" as false). The encoder sees this object as written."""
    o = {}
    for k, v in spec.items():
        if k == "required" and v is False and rng.random() < 0.5:
            continue
        if k == "description" and v == "" and not top:
            continue
        if k == "items":
            v = _loose_v1(v, rng, False)
        elif k == "properties":
            v = {n: _loose_v1(p, rng, False) for n, p in v.items()}
        o[k] = v
    keys = list(o)
    rng.shuffle(keys)
    return {k: o[k] for k in keys}


def render_tool(tool, name, style, rng=None):
    """The canonical tool written in one schema style under the given (display) name."""
    params = tool["parameters"]
    if style == "v1":
        return {"name": name, "description": tool["description"], "parameters": params}
    if style == "v1_loose":
        return {"name": name, "description": tool["description"],
                "parameters": {n: _loose_v1(p, rng, True) for n, p in params.items()}}
    bfcl = style == "bfcl"
    schema = {"type": "dict" if bfcl else "object",
              "properties": {n: _js(p, bfcl, rng if style == "openai" else None) for n, p in params.items()}}
    req = [n for n, p in params.items() if p.get("required")]
    if req or bfcl:
        schema["required"] = req
    fn = {"name": name, "description": tool["description"], "parameters": schema}
    if bfcl:
        return fn
    return {"type": "function", "function": fn}


# ---- validate_output port ------------------------------------------------------------------------


class CallError(ValueError):
    pass


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_value(v, spec, path):
    """validate_output's check() on a decoded value against a v1 spec (canonical form)."""
    enum = spec.get("enum")
    if enum:
        for e in enum:
            if isinstance(e, str):
                if isinstance(v, str) and v == e:
                    return
            elif compact(e) == compact(v):
                return
        raise CallError(f"{path}: value is not one of the enum values")
    t = spec.get("type", "any")
    if v is None:
        if t in ("null", "any"):
            return
        raise CallError(f"{path}: null is not allowed")
    if t == "any":
        return
    if t == "string":
        if not isinstance(v, str):
            raise CallError(f"{path}: expected a string")
    elif t == "number":
        if not _is_num(v):
            raise CallError(f"{path}: expected a number")
    elif t == "integer":
        # The grammar's integers have no '.', 'e' or 'E': a float (even 5.0) is not one.
        if not _is_int(v):
            raise CallError(f"{path}: expected an integer")
    elif t == "boolean":
        if not isinstance(v, bool):
            raise CallError(f"{path}: expected a boolean")
    elif t == "null":
        raise CallError(f"{path}: expected null")
    elif t == "array":
        if not isinstance(v, list):
            raise CallError(f"{path}: expected an array")
        if "items" in spec:
            for i, x in enumerate(v):
                check_value(x, spec["items"], f"{path}[{i}]")
    elif t == "object":
        if not isinstance(v, dict):
            raise CallError(f"{path}: expected an object")
        if spec.get("properties"):
            check_object(v, spec["properties"], path)


def check_object(v, props, path):
    for k, x in v.items():
        if k not in props:
            raise CallError(f"{path}: unknown key \"{k}\"")
        check_value(x, props[k], f"{path}.{k}")
    for n, p in props.items():
        if p.get("required") and n not in v:
            raise CallError(f"{path}: missing required key \"{n}\"")


def check_calls(calls, tools):
    """Every call names a tool of the list (caller names) and its arguments follow the schema.
    `tools` are canonical (v1) tools keyed by the names the calls use."""
    by_name = {t["name"]: t for t in tools}
    if not isinstance(calls, list):
        raise CallError("answer is not a list")
    for i, c in enumerate(calls):
        if not isinstance(c, dict) or set(c) != {"name", "arguments"}:
            raise CallError(f"[{i}]: a call must be {{name, arguments}}")
        t = by_name.get(c["name"])
        if t is None:
            raise CallError(f"[{i}]: unknown tool {c['name']!r}")
        if not isinstance(c["arguments"], dict):
            raise CallError(f"[{i}]: arguments is not an object")
        check_object(c["arguments"], t["parameters"], f"[{i}].arguments")


_INT_RE = re.compile(r"^-?(0|[1-9][0-9]*)$")
_NUM_RE = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")


def coerce_value(v, spec):
    """Gold values written in the wrong JSON type for their own schema ('63' for an integer,
    19.0 for an integer, 0.92 for a string) are rewritten in the declared type when the text is
    unambiguous. Returns (value, changed)."""
    t = spec.get("type", "any")
    if spec.get("enum"):
        return v, False
    if t == "integer":
        if isinstance(v, str) and _INT_RE.match(v.strip()):
            return int(v.strip()), True
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            return int(v), True
    elif t == "number":
        if isinstance(v, str) and _NUM_RE.match(v.strip()):
            s = v.strip()
            return (int(s) if _INT_RE.match(s) else float(s)), True
    elif t == "boolean":
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true", True
    elif t == "string":
        if _is_num(v):
            return compact(v), True
    elif t == "array" and isinstance(v, list) and "items" in spec:
        out, ch = [], False
        for x in v:
            y, c = coerce_value(x, spec["items"])
            out.append(y)
            ch |= c
        return out, ch
    elif t == "object" and isinstance(v, dict) and spec.get("properties"):
        return coerce_args(v, spec["properties"])
    return v, False


def coerce_args(args, props):
    out, changed = {}, False
    for k, v in args.items():
        if k in props:
            v, c = coerce_value(v, props[k])
            changed |= c
        out[k] = v
    return out, changed


def coerce_calls(calls, tools):
    by_name = {t["name"]: t for t in tools}
    out, changed = [], False
    for c in calls:
        t = by_name.get(c.get("name"))
        if t is None or not isinstance(c.get("arguments"), dict):
            out.append(c)
            continue
        a, ch = coerce_args(c["arguments"], t["parameters"])
        changed |= ch
        out.append({"name": c["name"], "arguments": a})
    return out, changed


def order_args(calls, tools):
    """Arguments in the order the tool declares them (unknown keys last, as given): one target
    order per input, which a small model can learn; metrics ignore key order."""
    by_name = {t["name"]: t for t in tools}
    out = []
    for c in calls:
        t = by_name.get(c["name"])
        a = c["arguments"]
        if t is not None:
            order = [k for k in t["parameters"] if k in a] + [k for k in a if k not in t["parameters"]]
            a = {k: _order_nested(a[k], t["parameters"].get(k)) for k in order}
        out.append({"name": c["name"], "arguments": a})
    return out


def _order_nested(v, spec):
    if spec is None:
        return v
    if isinstance(v, dict) and spec.get("properties"):
        props = spec["properties"]
        order = [k for k in props if k in v] + [k for k in v if k not in props]
        return {k: _order_nested(v[k], props.get(k)) for k in order}
    if isinstance(v, list) and "items" in spec:
        return [_order_nested(x, spec["items"]) for x in v]
    return v


def has_placeholder(v, pat):
    if isinstance(v, str):
        return pat.search(v) is not None
    if isinstance(v, list):
        return any(has_placeholder(x, pat) for x in v)
    if isinstance(v, dict):
        return any(has_placeholder(x, pat) for x in v.values())
    return False
