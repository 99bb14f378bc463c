"""Token counts with a SentencePiece model through the spm_encode command-line tool (the
sentencepiece package's CLI; the Python module is not installed on these machines).

Needle encodes the query and the tools text separately (needle-reference.md section 4), so an
encoder length is count(query) + 1 (<tools>) + count(tools text), and a decoder length is
count(answer text) + 2. spm_encode reads one sentence per line, so a text with newlines is
counted line by line plus one byte-fallback token per newline, and a line gets the dummy-prefix
space once per line where the real encoder sees one per text: counts of multi-line queries can
be off by a token or two. Texts are counted once each (cache) and in one process per batch.

Without a model (Counter(None)) counts are estimates: ceil(UTF-8 bytes / 3.2).
"""
import math
import os
import shutil
import subprocess
import tempfile


class Counter:
    def __init__(self, model):
        self.model = model
        self.cache = {}
        self.unk_id = 3
        self.byte_ids = set()
        self.vocab = 0
        self.exact = model is not None
        if model is not None:
            if not shutil.which("spm_encode"):
                raise SystemExit("spm_encode not found (apt-get install sentencepiece), or pass --tokenizer none")
            out = subprocess.run(["spm_export_vocab", f"--model={model}"], check=True, capture_output=True,
                                 text=True).stdout.split("\n")
            pieces = [ln.split("\t")[0] for ln in out if ln]
            self.vocab = len(pieces)
            self.byte_ids = {i for i, p in enumerate(pieces) if len(p) == 6 and p.startswith("<0x") and p.endswith(">")}
            self.unk_id = pieces.index("<unk>") if "<unk>" in pieces else 3
        self.bytes = {}  # text -> byte-fallback tokens in it
        self.unks = {}

    def prime(self, texts):
        """Counts every text not cached yet in one spm_encode run."""
        todo = []
        seen = set()
        for t in texts:
            if t not in self.cache and t not in seen:
                seen.add(t)
                todo.append(t)
        if not todo:
            return
        if not self.exact:
            for t in todo:
                self.cache[t] = max(1, math.ceil(len(t.encode("utf-8")) / 3.2)) if t else 0
            return
        lines, owner = [], []
        for i, t in enumerate(todo):
            parts = t.split("\n")
            for p in parts:
                lines.append(p.replace("\r", " "))
                owner.append(i)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
            f.write("\n".join(lines) + "\n")
            path = f.name
        try:
            res = subprocess.run(["spm_encode", f"--model={self.model}", "--output_format=id", f"--input={path}"],
                                 check=True, capture_output=True, text=True)
        finally:
            os.unlink(path)
        out = res.stdout.split("\n")
        counts = [t.count("\n") for t in todo]  # each newline is one byte-fallback token
        nbytes = list(counts)
        nunk = [0] * len(todo)
        for k, o in enumerate(owner):
            ids = out[k].split() if k < len(out) else []
            counts[o] += len(ids)
            for x in ids:
                x = int(x)
                if x in self.byte_ids:
                    nbytes[o] += 1
                elif x == self.unk_id:
                    nunk[o] += 1
        for i, t in enumerate(todo):
            self.cache[t] = counts[i]
            self.bytes[t] = nbytes[i]
            self.unks[t] = nunk[i]

    def coverage(self, texts):
        """(tokens, byte-fallback tokens, unk tokens) over the distinct texts given."""
        ts = set(texts)
        self.prime(ts)
        return (sum(self.cache[t] for t in ts), sum(self.bytes.get(t, 0) for t in ts),
                sum(self.unks.get(t, 0) for t in ts))

    def count(self, text):
        if text not in self.cache:
            self.prime([text])
        return self.cache[text]
