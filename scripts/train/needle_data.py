"""Needle JSONL -> token arrays, as needle-finetune builds them (lib/train/finetune_data.cpp,
lib/text/prompt.cpp; needle-reference.md section 4):

- tools: the model view (parse_tools: names in snake_case, JSON Schema / BFCL forms rewritten to
  v1), compact JSON; the port in scripts/data/common.py is the one the data pipeline checks with;
- encoder: query[:max-2] + [<tools>] + tools[:max - len(query kept) - 1];
- answer: compact JSON with call names in snake_case ([] for none); decoder input
  [EOS, <tool_call>] + answer, target [<tool_call>] + answer + [EOS]; examples with
  len(answer) + 3 > max_dec_len are dropped;
- loss classes per answer character (name / key / value / base), max over each token's characters.

Tokenization: the sentencepiece Python module where it is installed (the GPU machine), else the
spm_encode command-line tool (scripts/setup installs it) with newlines passed through a
placeholder (see Tokenizer). Python standard library + numpy only.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "data"))
import common as C  # noqa: E402  (scripts/data/common.py: the parse_tools / snake_case ports)

import needle_model as M  # noqa: E402

MAX_ENC_LEN = 1024
MAX_DEC_LEN = 512

# ---- tokenizer -----------------------------------------------------------------------------------

_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_NL = "\ue000"  # placeholder for "\n" on spm_encode's one-text-per-line input


class Tokenizer:
    """encode_many(texts) -> [[ids]], and each id's surface text (piece with U+2581 as a space,
    byte pieces as their byte). Backend: sentencepiece (Python) if importable, else spm_encode.

    spm_encode reads one text per line, so a newline inside a text is written as U+E000 and the
    three byte-fallback ids of U+E000 (EE 80 80) are replaced by the one of "\\n" (0x0A). This is
    exact when neither character is in any vocabulary piece (checked at load): both are then
    unknown characters, which BPE never merges with a neighbour and byte fallback spells as their
    UTF-8 bytes."""

    def __init__(self, model_path, backend="auto"):
        self.model_path = model_path
        self.sp = None
        if backend in ("auto", "python"):
            try:
                import sentencepiece as spm
                self.sp = spm.SentencePieceProcessor(model_file=model_path)
            except ImportError:
                if backend == "python":
                    raise
        if self.sp is not None:
            self.backend = "python"
            self.pieces = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        else:
            self.backend = "cli"
            for tool in ("spm_encode", "spm_export_vocab"):
                if not shutil.which(tool):
                    raise SystemExit(f"{tool} not found: install the sentencepiece Python module or the "
                                     "sentencepiece command-line tools (apt-get install sentencepiece)")
            out = subprocess.run(["spm_export_vocab", f"--model={model_path}"], check=True, capture_output=True,
                                 text=True, encoding="utf-8").stdout
            self.pieces = [ln.split("\t")[0] for ln in out.split("\n") if ln]
            self._nl_ok = not any("\n" in p or _NL in p for p in self.pieces)
            ids = {p: i for i, p in enumerate(self.pieces)}
            self._nl_bytes = [ids.get("<0xEE>"), ids.get("<0x80>"), ids.get("<0x80>")]
            self._nl_id = ids.get("<0x0A>")
        self.vocab_size = len(self.pieces)
        self.surface = []
        for p in self.pieces:
            m = _BYTE.match(p)
            self.surface.append(chr(int(m.group(1), 16)) if m else p.replace("\u2581", " "))

    def encode_many(self, texts):
        if self.sp is not None:
            return [list(x) for x in self.sp.encode(list(texts))]
        return self._encode_cli(list(texts))

    def encode(self, text):
        return self.encode_many([text])[0]

    def _encode_cli(self, texts):
        if not texts:
            return []
        lines = []
        for t in texts:
            if "\n" in t or "\r" in t or _NL in t:
                if _NL in t or not self._nl_ok or None in self._nl_bytes or self._nl_id is None:
                    raise ValueError("text with a newline or U+E000 cannot be tokenized with spm_encode "
                                     "for this model; install the sentencepiece Python module")
                if "\r" in t:  # spm_encode's line reader would split at a lone \r: not ours to guess
                    raise ValueError("text with a carriage return: install the sentencepiece Python module")
            lines.append(t.replace("\n", _NL))
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
            f.write("\n".join(lines) + "\n")
            path = f.name
        try:
            res = subprocess.run(["spm_encode", f"--model={self.model_path}", "--output_format=id", f"--input={path}"],
                                 check=True, capture_output=True, text=True)
        finally:
            os.unlink(path)
        out = res.stdout.split("\n")
        result = []
        for i, t in enumerate(texts):
            ids = [int(x) for x in out[i].split()] if i < len(out) else []
            if "\n" in t:
                a, b, c = self._nl_bytes
                fixed, j = [], 0
                while j < len(ids):
                    if ids[j:j + 3] == [a, b, c]:
                        fixed.append(self._nl_id)
                        j += 3
                    else:
                        fixed.append(ids[j])
                        j += 1
                ids = fixed
            result.append(ids)
        return result


# ---- model texts ---------------------------------------------------------------------------------


def _value(v):
    """tools / answers may be JSON values or JSON text (blank text = none)."""
    if isinstance(v, str):
        return None if not v.strip() else json.loads(v)
    return v


def _snake_call(c):
    if isinstance(c, dict) and isinstance(c.get("name"), str):
        c = dict(c)
        c["name"] = C.snake_case(c["name"])
    return c


def answer_text(answers):
    """lib/text answer_model_text: compact JSON, call names snake_cased; null / blank -> "[]"."""
    a = _value(answers)
    if a is None:
        return "[]"
    if isinstance(a, list):
        a = [_snake_call(c) for c in a]
    else:
        a = _snake_call(a)
    return C.compact(a)


def call_list(answers):
    a = _value(answers)
    if a is None:
        return []
    return a if isinstance(a, list) else [a]


def model_texts(rec):
    """(query, tools text, answer text, parsed tools) of one Needle JSONL record."""
    q = rec.get("query")
    if not isinstance(q, str) or not q:
        raise ValueError("missing or empty \"query\"")
    tools = C.parse_tools(_value(rec.get("tools")))
    return q, C.compact([t[1] for t in tools]), answer_text(rec.get("answers")), tools


# ---- loss classes (port of lib/text/prompt.cpp ClassMarker) --------------------------------------


BASE, NAME, VALUE, KEY = 0, 1, 2, 3


class _Marker:
    def __init__(self, s, cls):
        self.s, self.cls, self.p = s, cls, 0

    def peek(self):
        return self.s[self.p] if self.p < len(self.s) else "\0"

    def ws(self):
        while self.p < len(self.s) and self.s[self.p] in " \t\n\r":
            self.p += 1

    def mark(self, b, e, c):
        for i in range(b, min(e, len(self.cls))):
            self.cls[i] = max(self.cls[i], c)

    def string(self):
        self.p += 1
        b = self.p
        while self.p < len(self.s) and self.s[self.p] != '"':
            self.p += 2 if self.s[self.p] == "\\" else 1
        e = min(self.p, len(self.s))
        self.p += 1
        return b, e

    def skip_value(self):
        self.ws()
        b = self.p
        c = self.peek()
        if c == '"':
            self.string()
        elif c in "{[":
            depth = 0
            while self.p < len(self.s):
                x = self.s[self.p]
                if x == '"':
                    self.string()
                    continue
                self.p += 1
                if x in "{[":
                    depth += 1
                if x in "}]":
                    depth -= 1
                    if depth == 0:
                        break
        else:
            while self.p < len(self.s) and self.s[self.p] not in ",}] \t\n\r":
                self.p += 1
        return b, self.p

    def members(self, f):
        self.p += 1
        while True:
            self.ws()
            if self.peek() != '"':
                if self.peek() == "}":
                    self.p += 1
                return
            kb, ke = self.string()
            self.ws()
            if self.peek() == ":":
                self.p += 1
            self.ws()
            f(kb, ke)
            self.ws()
            if self.peek() == ",":
                self.p += 1
                continue
            if self.peek() == "}":
                self.p += 1
            return

    def call(self):
        def member(kb, ke):
            key = self.s[kb:ke]
            if key == "name" and self.peek() == '"':
                b, e = self.string()
                self.mark(b, e, NAME)
            elif key == "arguments" and self.peek() == "{":
                def arg(ab, ae):
                    self.mark(ab, ae, KEY)
                    if self.peek() == '"':
                        b, e = self.string()
                    else:
                        b, e = self.skip_value()
                    self.mark(b, e, VALUE)
                self.members(arg)
            else:
                self.skip_value()
        self.members(member)

    def top(self):
        self.ws()
        if self.peek() == "[":
            self.p += 1
            self.ws()
            if self.peek() == "]":
                return
            while True:
                self.ws()
                if self.peek() == "{":
                    self.call()
                else:
                    self.skip_value()
                self.ws()
                if self.peek() != ",":
                    return
                self.p += 1
        elif self.peek() == "{":
            self.call()


def answer_char_classes(text):
    cls = [BASE] * len(text)
    try:
        json.loads(text)
    except ValueError:
        return cls
    _Marker(text, cls).top()
    return cls


def answer_token_classes(text, surfaces):
    """Per token: max class over its characters (tokens aligned to the text by their surface text;
    SentencePiece's dummy-prefix space is skipped); a token with no characters takes the previous
    token's class. The answer text is ASCII (compact JSON escapes the rest), so characters are
    bytes and this equals the C++ span-based version."""
    cls = answer_char_classes(text)
    out, pos = [], 0
    for s in surfaces:
        if pos == 0 and s.startswith(" ") and not text.startswith(" "):
            s = s[1:]
        b, e = min(pos, len(cls)), min(pos + len(s), len(cls))
        pos += len(s)
        out.append(max(cls[b:e]) if b < e else (out[-1] if out else BASE))
    return out


# ---- examples ------------------------------------------------------------------------------------


def encoder_ids(q_ids, t_ids, max_enc_len=MAX_ENC_LEN):
    max_enc_len = max(max_enc_len, 2)
    qk = q_ids[: max_enc_len - 2]
    return qk + [M.TOOLS] + t_ids[: max_enc_len - len(qk) - 1], len(qk)


def build_examples(records, tok, max_enc_len=MAX_ENC_LEN, max_dec_len=MAX_DEC_LEN, with_clip=True):
    """-> (examples, skipped). Each example: dict(enc, q_len, ans, cls, clip_tool) where clip_tool is
    the compact model-view JSON of the first call's tool (None without calls or when the call's
    tool is not offered)."""
    texts, items, skipped = [], [], []
    for i, rec in enumerate(records):
        try:
            q, t, a, tools = model_texts(rec)
        except (ValueError, C.ToolError) as e:
            skipped.append((i, str(e)))
            continue
        clip_tool = None
        calls = call_list(rec.get("answers"))
        if with_clip and calls and isinstance(calls[0], dict) and isinstance(calls[0].get("name"), str):
            want = C.snake_case(calls[0]["name"])
            for _, v1, _, _ in tools:
                if v1["name"] == want:
                    clip_tool = C.compact(v1)
                    break
        items.append((i, q, t, a, clip_tool))
        texts += [q, t, a]
    ids = tok.encode_many(texts)
    out = []
    for n, (i, q, t, a, clip_tool) in enumerate(items):
        q_ids, t_ids, a_ids = ids[3 * n], ids[3 * n + 1], ids[3 * n + 2]
        if len(a_ids) + 3 > max_dec_len:
            skipped.append((i, f"answer of {len(a_ids)} tokens is too long: {len(a_ids)} + 3 > {max_dec_len}"))
            continue
        enc, q_len = encoder_ids(q_ids, t_ids, max_enc_len)
        cls = answer_token_classes(a, [tok.surface[x] for x in a_ids])
        out.append({"line": i, "enc": enc, "q_len": q_len, "ans": a_ids, "cls": cls, "clip_tool": clip_tool})
    return out, skipped


def decoder_arrays(ans, cls):
    """[EOS, <tool_call>] + answer, [<tool_call>] + answer + [EOS], classes (<tool_call>, EOS: base)."""
    return [M.EOS, M.TOOL_CALL] + list(ans), [M.TOOL_CALL] + list(ans) + [M.EOS], [BASE] + list(cls) + [BASE]


def read_jsonl(path):
    recs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    return recs


# ---- the cache on disk ---------------------------------------------------------------------------


def _ragged(lists, dtype):
    lens = np.array([len(x) for x in lists], np.int64)
    flat = np.fromiter((v for x in lists for v in x), dtype=dtype, count=int(lens.sum()))
    return flat, lens


class Split:
    """One split's examples as ragged arrays (enc, ans, cls) plus the CLIP pairs' tool ids."""

    def __init__(self, arrays, prefix):
        g = lambda k: arrays[f"{prefix}_{k}"]  # noqa: E731
        self.enc_flat, self.enc_len = g("enc"), g("enc_len")
        self.ans_flat, self.ans_len = g("ans"), g("ans_len")
        self.cls_flat = g("cls")
        self.q_len = g("q_len")
        self.clip_tool = g("clip_tool")  # index into the tool table, -1 = none
        self.enc_off = np.concatenate([[0], np.cumsum(self.enc_len)])
        self.ans_off = np.concatenate([[0], np.cumsum(self.ans_len)])
        self.n = len(self.enc_len)

    def enc(self, i):
        return self.enc_flat[self.enc_off[i]:self.enc_off[i + 1]]

    def ans(self, i):
        return self.ans_flat[self.ans_off[i]:self.ans_off[i + 1]], self.cls_flat[self.ans_off[i]:self.ans_off[i + 1]]

    def dec_len(self, i):
        return int(self.ans_len[i]) + 2


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare(data_files, tokenizer_path, out_path, max_enc_len=MAX_ENC_LEN, max_dec_len=MAX_DEC_LEN,
            backend="auto", log=print):
    """Tokenizes {split: jsonl path} into one compressed .npz (uint16 ids), with a fingerprint of
    the inputs and settings."""
    tok = Tokenizer(tokenizer_path, backend)
    if tok.vocab_size > 65535:
        raise SystemExit("vocabulary over 65,535 pieces: uint16 token storage does not fit")
    arrays = {}
    tools_table, tool_index = [], {}
    info = {"tokenizer_sha256": file_sha256(tokenizer_path), "vocab_size": tok.vocab_size, "max_enc_len": max_enc_len,
            "max_dec_len": max_dec_len, "backend": tok.backend, "splits": {}}
    for split, path in data_files.items():
        recs = read_jsonl(path)
        ex, skipped = build_examples(recs, tok, max_enc_len, max_dec_len)
        for line, msg in skipped[:10]:
            log(f"{path}: line {line + 1}: {msg} (skipped)")
        clip_idx = []
        for e in ex:
            t = e["clip_tool"]
            if t is None:
                clip_idx.append(-1)
                continue
            if t not in tool_index:
                tool_index[t] = len(tools_table)
                tools_table.append(t)
            clip_idx.append(tool_index[t])
        arrays[f"{split}_enc"], arrays[f"{split}_enc_len"] = _ragged([e["enc"] for e in ex], np.uint16)
        arrays[f"{split}_ans"], arrays[f"{split}_ans_len"] = _ragged([e["ans"] for e in ex], np.uint16)
        arrays[f"{split}_cls"], _ = _ragged([e["cls"] for e in ex], np.uint8)
        arrays[f"{split}_q_len"] = np.array([e["q_len"] for e in ex], np.int32)
        arrays[f"{split}_clip_tool"] = np.array(clip_idx, np.int32)
        info["splits"][split] = {"file": os.path.basename(path), "sha256": file_sha256(path), "records": len(recs),
                                 "examples": len(ex), "skipped": len(skipped),
                                 "enc_tokens": int(arrays[f"{split}_enc_len"].sum()),
                                 "dec_tokens": int(arrays[f"{split}_ans_len"].sum() + 2 * len(ex))}
        log(f"{split}: {len(ex)} examples ({len(skipped)} skipped), "
            f"{info['splits'][split]['enc_tokens']} encoder / {info['splits'][split]['dec_tokens']} decoder tokens")
    tool_ids = tok.encode_many(tools_table)
    arrays["tools"], arrays["tools_len"] = _ragged(tool_ids, np.uint16)
    arrays["info"] = np.frombuffer(json.dumps(info, sort_keys=True).encode(), np.uint8)
    tmp = out_path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out_path)
    return info


class Data:
    def __init__(self, path):
        z = np.load(path)
        arrays = {k: z[k] for k in z.files}
        self.info = json.loads(bytes(arrays["info"]).decode())
        self.fingerprint = hashlib.sha256(json.dumps(self.info, sort_keys=True).encode()).hexdigest()[:16]
        self.splits = {s: Split(arrays, s) for s in self.info["splits"]}
        self.tools_flat, self.tools_len = arrays["tools"], arrays["tools_len"]
        self.tools_off = np.concatenate([[0], np.cumsum(self.tools_len)])

    def tool(self, j):
        return self.tools_flat[self.tools_off[j]:self.tools_off[j + 1]]


# ---- packing -------------------------------------------------------------------------------------


def parse_shapes(spec):
    """"1024x160,1024x512" -> [(1024, 160), (1024, 512)] (encoder x decoder row lengths)."""
    out = []
    for part in spec.split(","):
        a, b = part.lower().split("x")
        out.append((int(a), int(b)))
    return out


def pack(split, shapes, rng, window=16):
    """Assigns every example to the first row shape it fits and packs examples into rows of that
    shape (several examples per row, each its own segment). Order: a random permutation, then
    first fit among the last `window` open rows. -> {shape index: [[example ids], ...]}."""
    rows = {s: [] for s in range(len(shapes))}
    open_rows = {s: [] for s in range(len(shapes))}  # [used_enc, used_dec, ids]
    for i in rng.permutation(split.n):
        el, dl = int(split.enc_len[i]), split.dec_len(i)
        s = next((k for k, (E, D) in enumerate(shapes) if el <= E and dl <= D), None)
        if s is None:
            raise ValueError(f"example {i} ({el} encoder / {dl} decoder tokens) fits no row shape {shapes}")
        E, D = shapes[s]
        for r in open_rows[s]:
            if r[0] + el <= E and r[1] + dl <= D:
                r[0] += el
                r[1] += dl
                r[2].append(int(i))
                break
        else:
            open_rows[s].append([el, dl, [int(i)]])
            if len(open_rows[s]) > window:
                rows[s].append(open_rows[s].pop(0)[2])
    for s in open_rows:
        rows[s] += [r[2] for r in open_rows[s]]
    return rows


def make_batch(split, row_ids, B, E, D):
    """Packed batch arrays [B, E] / [B, D] from up to B rows of example ids (missing rows are
    padding): tokens, segment ids (1, 2, ... per example; 0 = padding), positions restarting at 0
    in each segment, decoder targets and loss classes."""
    b = {k: np.zeros((B, E), np.int32) for k in ("enc_tokens", "enc_seg", "enc_pos")}
    b.update({k: np.zeros((B, D), np.int32) for k in ("dec_in", "dec_out", "dec_seg", "dec_pos", "dec_cls")})
    for r, ids in enumerate(row_ids):
        pe = pd = 0
        for s, i in enumerate(ids, start=1):
            enc = split.enc(i)
            ans, cls = split.ans(i)
            din, dout, dcls = decoder_arrays(ans, cls)
            n, m = len(enc), len(din)
            b["enc_tokens"][r, pe:pe + n] = enc
            b["enc_seg"][r, pe:pe + n] = s
            b["enc_pos"][r, pe:pe + n] = np.arange(n)
            b["dec_in"][r, pd:pd + m] = din
            b["dec_out"][r, pd:pd + m] = dout
            b["dec_cls"][r, pd:pd + m] = dcls
            b["dec_seg"][r, pd:pd + m] = s
            b["dec_pos"][r, pd:pd + m] = np.arange(m)
            pe += n
            pd += m
    return b


def epoch_batches(split, shapes, batch_tokens, seed, epoch):
    """The batches of one epoch, deterministic in (seed, epoch): a list of (shape index, [row ids])
    in a shuffled order. Rows per batch for shape (E, D) = max(1, batch_tokens // E)."""
    rng = np.random.default_rng([seed, epoch])
    rows = pack(split, shapes, rng)
    batches = []
    for s, rs in rows.items():
        B = max(1, batch_tokens // shapes[s][0])
        for k in range(0, len(rs), B):
            batches.append((s, rs[k:k + B]))
    order = rng.permutation(len(batches))
    return [batches[j] for j in order]


def clip_batch(data, split, rng, n, q_len, t_len):
    """n (query, tool) pairs with distinct tools: query = the kept query tokens of an example with a
    call, tool = the model-view JSON of its first call's tool; right-padded / truncated."""
    cand = np.nonzero(split.clip_tool >= 0)[0]
    q = np.zeros((n, q_len), np.int32)
    t = np.zeros((n, t_len), np.int32)
    seen, k = set(), 0
    for i in rng.permutation(cand):
        j = int(split.clip_tool[i])
        if j in seen:
            continue
        seen.add(j)
        qi = split.enc(i)[: min(int(split.q_len[i]), q_len)]
        ti = data.tool(j)[:t_len]
        q[k, :len(qi)] = qi
        t[k, :len(ti)] = ti
        k += 1
        if k == n:
            break
    if k < n:  # fewer distinct tools than pairs: no CLIP batch (a fixed shape keeps one compile)
        return None
    return q, t
