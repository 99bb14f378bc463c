"""Minimal protobuf surgery on a SentencePiece model file (stdlib only).

spm_train stores its command line in the model (TrainerSpec): the corpus path (`input`, field 1),
the output prefix (`model_prefix`, field 2; scripts/train-tokenizer uses a fresh temporary
directory) and `num_threads` (field 16). Those bytes change from run to run while the vocabulary
does not, so the build rewrites them to fixed values: same corpus -> byte-identical model.
Every other field (pieces, normalizer, denormalizer, the rest of the trainer spec) is copied as is.
"""


def _varint(b, i):
    x = shift = 0
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return x, i


def _enc_varint(x):
    out = bytearray()
    while True:
        c = x & 0x7F
        x >>= 7
        if x:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


def _fields(b):
    """[(field number, wire type, raw bytes of the whole field)]"""
    i, out = 0, []
    while i < len(b):
        start = i
        k, i = _varint(b, i)
        num, wt = k >> 3, k & 7
        if wt == 0:
            _, i = _varint(b, i)
        elif wt == 1:
            i += 8
        elif wt == 2:
            n, i = _varint(b, i)
            i += n
        elif wt == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        out.append((num, wt, b[start:i]))
    return out


def _payload(raw):
    _, i = _varint(raw, 0)
    n, i = _varint(raw, i)
    return raw[i:i + n]


def _ld(num, payload):
    return _enc_varint(num << 3 | 2) + _enc_varint(len(payload)) + payload


def normalize(data, input_name="tokenizer_corpus.txt", prefix="tokenizer", threads=1):
    out = bytearray()
    for num, wt, raw in _fields(data):
        if num == 2 and wt == 2:  # TrainerSpec
            spec = bytearray()
            done_input = False
            for n2, w2, r2 in _fields(_payload(raw)):
                if n2 == 1 and w2 == 2:
                    if not done_input:
                        spec += _ld(1, input_name.encode())
                        done_input = True
                elif n2 == 2 and w2 == 2:
                    spec += _ld(2, prefix.encode())
                elif n2 == 16 and w2 == 0:
                    spec += _enc_varint(16 << 3) + _enc_varint(threads)
                else:
                    spec += r2
            out += _ld(2, bytes(spec))
        else:
            out += raw
    return bytes(out)
