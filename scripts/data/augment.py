"""Augmentation: base examples -> Needle JSONL records. Every random choice comes from a
random.Random seeded with a string of (build seed, what, example key), so an example's records do
not depend on the order or the number of other examples (and Python's str seeding is stable).

Record kinds ("aug" field):
  orig     the source example as given (its candidate list, order, names; canonical v1 form);
           over-long lists lose distractors, CallNavi's whole-domain list is sampled down
  variant  distractors from the Seal-Tools pool (random, and same-field ones as hard negatives),
           some of the source's own distractors dropped, tool order shuffled, parameter order
           shuffled, one name style and one schema style for the whole list
  nocall   the needed tool(s) removed (only tools unrelated to the gold ones are added), answer []
  multi    two single-call queries joined ("... and ...", "... Also, ..."), both tool sets, both calls
"""
import random
import re

import common as C

# Sources whose own distractors were chosen by the dataset authors as wrong answers, so they stay
# wrong when the gold tool is removed. Elsewhere (CallNavi domains, ToolAlpaca APIs, API-Bank,
# Glaive) sibling functions can overlap the gold one, so no-call lists use unrelated pool tools only.
SAFE_NOCALL_SOURCES = {"seal_tools", "acebench", "hammerbench"}

NAME_STYLE_WEIGHTS = [("orig", 40), ("snake", 12), ("camel", 12), ("pascal", 8), ("dotted", 14), ("kebab", 14)]
SCHEMA_STYLE_WEIGHTS = [("v1", 35), ("v1_loose", 15), ("openai", 30), ("bfcl", 20)]

_STOP = {"get", "set", "list", "create", "update", "delete", "check", "find", "search", "query", "add", "remove",
         "info", "information", "data", "details", "by", "for", "of", "the", "a", "an", "to", "and", "api", "v1",
         "v2", "v3", "fetch", "retrieve", "calculate", "analyze", "manage", "track", "generate", "make", "do"}


def rng_for(seed, *key):
    return random.Random("|".join(str(k) for k in (seed,) + key))


def weighted(rng, pairs):
    total = sum(w for _, w in pairs)
    x = rng.random() * total
    for v, w in pairs:
        x -= w
        if x < 0:
            return v
    return pairs[-1][0]


def _words(name):
    return {w for w in C.snake_case(name).split("_") if w and w not in _STOP and not w.isdigit()}


class Pool:
    """The Seal-Tools distractor pool (canonical tools, their fields, token counts)."""

    def __init__(self, tools, fields, counter):
        self.tools = tools
        self.fields = fields
        self.snake = [C.snake_case(t["name"]) for t in tools]
        self.by_field = {}
        for i, t in enumerate(tools):
            self.by_field.setdefault(fields.get(t["name"], ""), []).append(i)
        self.counter = counter


class Augmenter:
    def __init__(self, pool, counter, seed, enc_target=256, max_enc_len=1024, variants=6, nocall_p=0.3,
                 multi_frac=0.5):
        self.pool = pool
        self.counter = counter
        self.seed = seed
        self.enc_target = enc_target
        self.max_enc_len = max_enc_len
        self.variants = variants
        self.nocall_p = nocall_p
        self.multi_frac = multi_frac
        self.margin = 8  # the per-tool sum can miss a few tokens at tool boundaries
        self.counts = {"render_fallback_orig_names": 0, "dropped_over_max_enc_len": 0,
                       "name_style_changes_model_name": 0, "name_style_applied": 0}

    # ---- tokens ----
    def tool_tokens(self, tool):
        return self.counter.count(C.compact(C.render_tool(tool, C.snake_case(tool["name"]), "v1")))

    def est_enc(self, query, tools):
        return self.counter.count(query) + 2 + sum(self.tool_tokens(t) + 1 for t in tools)

    def budget(self, rng):
        """An encoder length to fill up to: mostly around enc_target (half to 1.5x), one time in
        four up to 3x, so that lists as long as the hold-outs' (5 Seal-Tools tools, ~450
        tokens) are common too."""
        lo, hi = self.enc_target // 2, self.enc_target * 3 // 2
        if rng.random() < 0.25:
            lo, hi = hi, self.enc_target * 3
        return min(rng.randint(lo, hi), self.max_enc_len - self.margin)

    # ---- distractors ----
    def distractors(self, rng, have, gold, n, budget, used, related_ok, hard_field=None):
        """Up to n pool tools that fit the budget (`used` tokens so far), none sharing a
        snake_case name with `have`; unless related_ok, none from the gold tools' fields or sharing
        a content word with their names. Returns (tools, used)."""
        out = []
        names = {C.snake_case(t["name"]) for t in have}
        gold_words = set().union(*[_words(g["name"]) for g in gold]) if gold else set()
        gold_fields = {self.pool.fields.get(g["name"]) for g in gold} - {None, ""}
        hard = self.pool.by_field.get(hard_field, []) if hard_field and related_ok else []
        tries = 0
        while len(out) < n and tries < 40 * (n + 1):
            tries += 1
            if hard and rng.random() < 0.35:
                i = hard[rng.randrange(len(hard))]
            else:
                i = rng.randrange(len(self.pool.tools))
            t = self.pool.tools[i]
            sn = self.pool.snake[i]
            if sn in names:
                continue
            if not related_ok and (self.pool.fields.get(t["name"]) in gold_fields or _words(t["name"]) & gold_words):
                continue
            cost = self.tool_tokens(t) + 1
            if used + cost > budget:
                if rng.random() < 0.5:
                    break
                continue
            out.append(t)
            names.add(sn)
            used += cost
        return out, used

    # ---- rendering ----
    def render(self, rng, query, tools, calls, kind, base, shuffle_params, name_style, schema_style, extra=None):
        """tools (canonical, final order) + calls -> a record in the chosen styles, or None."""
        if shuffle_params:
            shuffled = []
            for t in tools:
                ps = list(t["parameters"].items())
                rng.shuffle(ps)
                shuffled.append({"name": t["name"], "description": t["description"], "parameters": dict(ps)})
            tools = shuffled
        for attempt in (name_style, "orig"):
            names = {t["name"]: C.style_name(t["name"], attempt) for t in tools}
            rendered = [C.render_tool(t, names[t["name"]], schema_style, rng) for t in tools]
            try:
                C.parse_tools(rendered)
            except C.ToolError:
                if attempt == "orig":
                    return None
                self.counts["render_fallback_orig_names"] += 1
                continue
            name_style = attempt
            break
        if name_style != "orig":
            self.counts["name_style_applied"] += 1
            if any(C.snake_case(v) != C.snake_case(k) for k, v in names.items()):
                self.counts["name_style_changes_model_name"] += 1
        ordered = C.order_args(calls, tools)
        answers = [{"name": names[c["name"]], "arguments": c["arguments"]} for c in ordered]
        rec = {"query": query, "tools": rendered, "answers": answers, "source": base["source"],
               "split": base["split"], "id": base["id"], "aug": kind, "names": name_style, "schema": schema_style}
        if extra:
            rec.update(extra)
        return rec

    def fit(self, rng, query, tools, gold_names, limit):
        """Drops non-gold tools (random order) until the estimate fits `limit`."""
        tools = list(tools)
        while self.est_enc(query, tools) > limit:
            idx = [i for i, t in enumerate(tools) if t["name"] not in gold_names]
            if not idx:
                return None
            del tools[idx[rng.randrange(len(idx))]]
        return tools

    # ---- per base example ----
    def records(self, e, n_variants):
        key = (e["source"], e["split"], e["id"])
        out = []
        gold_names = {c["name"] for c in e["calls"]}
        gold = [t for t in e["tools"] if t["name"] in gold_names]
        limit = self.max_enc_len - self.margin

        # orig
        rng = rng_for(self.seed, "orig", *key)
        tools = e["tools"]
        if e["source"] == "callnavi":  # the whole domain list (21-101 tools) is too long: sample it
            others = [t for t in tools if t["name"] not in gold_names]
            rng.shuffle(others)
            b = max(self.budget(rng), self.est_enc(e["query"], gold))
            keep = list(gold)
            for t in others:
                if self.est_enc(e["query"], keep + [t]) > b or len(keep) >= 8:
                    break
                keep.append(t)
            tools = [t for t in e["tools"] if t in keep]
        elif not tools:  # Glaive chat with no tools: offer unrelated pool tools, answer []
            tools, _ = self.distractors(rng, [], [], rng.randint(1, 4), self.budget(rng),
                                        self.est_enc(e["query"], []), related_ok=False)
        tools = self.fit(rng, e["query"], tools, gold_names, limit)
        if tools is None or not tools:
            self.counts["dropped_over_max_enc_len"] += 1
            return out
        r = self.render(rng, e["query"], tools, e["calls"], "orig", e, False, "orig", "v1")
        if r:
            out.append(r)
        source_tools = tools if e["source"] != "callnavi" else e["tools"]

        # variants
        for k in range(n_variants):
            rng = rng_for(self.seed, "variant", k, *key)
            b = max(self.budget(rng), self.est_enc(e["query"], gold) + self.margin)
            b = min(b, limit)
            keep = list(gold)
            others = [t for t in source_tools if t["name"] not in gold_names]
            rng.shuffle(others)
            p_keep = rng.choice([0.0, 0.5, 0.8, 1.0])
            used = self.est_enc(e["query"], keep)
            for t in others:
                c = self.tool_tokens(t) + 1
                if rng.random() < p_keep and used + c <= b and len(keep) < 10:
                    keep.append(t)
                    used += c
            n_pool = rng.choice([0, 1, 2, 3, 4, 6])
            field = e.get("fields", {}).get(gold[0]["name"]) if gold else None
            extra, used = self.distractors(rng, keep, gold, n_pool, b, used, related_ok=bool(gold), hard_field=field)
            keep += extra
            if used > limit:
                continue
            rng.shuffle(keep)
            r = self.render(rng, e["query"], keep, e["calls"], "variant", e, rng.random() < 0.5,
                            weighted(rng, NAME_STYLE_WEIGHTS), weighted(rng, SCHEMA_STYLE_WEIGHTS),
                            {"n_distractors": len(keep) - len(gold)})
            if r:
                out.append(r)

        # no call: the needed tools removed
        if e["calls"]:
            rng = rng_for(self.seed, "nocall", *key)
            if rng.random() < self.nocall_p:
                b = min(self.budget(rng), limit)
                keep = []
                if e["source"] in SAFE_NOCALL_SOURCES:
                    keep = [t for t in source_tools if t["name"] not in gold_names and rng.random() < 0.8]
                    keep = self.fit(rng, e["query"], keep, set(), b) or []
                used = self.est_enc(e["query"], keep)
                extra, used = self.distractors(rng, keep + gold, gold, rng.randint(0 if keep else 1, 4), b, used,
                                               related_ok=False)
                keep += extra
                if keep and used <= limit:
                    rng.shuffle(keep)
                    r = self.render(rng, e["query"], keep, [], "nocall", e, rng.random() < 0.5,
                                    weighted(rng, NAME_STYLE_WEIGHTS), weighted(rng, SCHEMA_STYLE_WEIGHTS),
                                    {"removed": sorted(gold_names)})
                    if r:
                        out.append(r)
        return out

    # ---- multi-call ----
    @staticmethod
    def joinable(e):
        q = e["query"].strip()
        # one sentence (nothing ends before the last character), no dialogue, not too long
        inner = re.search(r"[.?!][\s\"')]+\S", q)
        return (len(e["calls"]) == 1 and "\n" not in q and 10 <= len(q) <= 200 and not inner
                and not q.lower().startswith(("user:", "hi", "hello", "hey")))

    def multi(self, bases, n, tag):
        """n two-call examples from pairs of single-call bases."""
        cands = [e for e in bases if self.joinable(e)]
        out = []
        if len(cands) < 2:
            return out
        for i in range(n):
            rng = rng_for(self.seed, "multi", tag, i)
            a, b = rng.sample(cands, 2)
            ga = [t for t in a["tools"] if t["name"] == a["calls"][0]["name"]]
            gb = [t for t in b["tools"] if t["name"] == b["calls"][0]["name"]]
            if not ga or not gb or C.snake_case(ga[0]["name"]) == C.snake_case(gb[0]["name"]):
                continue
            q = join_queries(rng, a["query"], b["query"])
            gold = ga + gb
            limit = self.max_enc_len - self.margin
            bud = min(max(self.budget(rng) * 3 // 2, self.est_enc(q, gold) + self.margin), limit)
            keep = list(gold)
            names = {C.snake_case(t["name"]) for t in keep}
            used = self.est_enc(q, keep)
            for src in (a, b):
                others = [t for t in src["tools"] if t["name"] != src["calls"][0]["name"]]
                if src["source"] == "callnavi":
                    others = rng.sample(others, min(3, len(others)))
                for t in others:
                    c = self.tool_tokens(t) + 1
                    if C.snake_case(t["name"]) not in names and rng.random() < 0.5 and used + c <= bud:
                        keep.append(t)
                        names.add(C.snake_case(t["name"]))
                        used += c
            extra, used = self.distractors(rng, keep, gold, rng.choice([0, 1, 2]), bud, used, related_ok=True)
            keep += extra
            if used > limit:
                continue
            rng.shuffle(keep)
            base = {"source": "augment", "split": "multi", "id": f"{tag}-multi-{i}"}
            r = self.render(rng, q, keep, a["calls"] + b["calls"], "multi", base, rng.random() < 0.5,
                            weighted(rng, NAME_STYLE_WEIGHTS), weighted(rng, SCHEMA_STYLE_WEIGHTS),
                            {"from": [[a["source"], a["split"], a["id"]], [b["source"], b["split"], b["id"]]]})
            if r:
                out.append(r)
        return out


def _lower_first(q):
    if len(q) > 1 and q[0].isupper() and not q[1].isupper() and not q.startswith(("I ", "I'")):
        return q[0].lower() + q[1:]
    return q


def join_queries(rng, q1, q2):
    q1 = q1.strip()
    q2 = q2.strip()
    form = rng.choice(["and", "also", "then"])
    if form == "and":
        return q1.rstrip(" .!?;,") + " and " + _lower_first(q2)
    if form == "also":
        end = q1[-1] if q1[-1] in ".?!" else "."
        return q1.rstrip(" .!?;,") + end + " Also, " + _lower_first(q2)
    return q1.rstrip(" .!?;,") + ", then " + _lower_first(q2)
