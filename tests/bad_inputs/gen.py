#!/usr/bin/env python3
"""The malformed-input corpus of tests/cli/bad_inputs.sh (python3 standard library only).

  gen.py                     rewrite the committed corpus (small files), manifest.tsv and README.md
  gen.py --check             exit 1 when a committed file differs from what this script writes
  gen.py --derive DIR --pkl tests/data/tiny_np1_f16.pkl --needle TINY.needle --tok tests/data/tiny_tok.model
                             write the large and model-derived inputs into DIR (at test time:
                             100,000-deep nesting, a 100 MB line, truncations and bit flips of a
                             real pickle, .needle files with overlapping or out-of-range tensors
                             whose checksums are recomputed so the range checks must catch them)
                             and DIR/manifest.tsv for them

Every case is a row of manifest.tsv: `file <TAB> slots <TAB> expect <TAB> intent`.
`slots` names the tool inputs the file is fed to (tests/cli/bad_inputs.sh runs each; a single
tool's slot such as run-m, eval-m, finetune-m, bench-m can be named on its own):
  model     -m of needle-run, needle-eval, needle-finetune, needle-bench; --info and --verify
            of needle-convert; and needle-convert's input (IN -o OUT --export-pkl OUT.pkl)
  convert   only needle-convert's input (IN -o OUT --export-pkl OUT.pkl)
  info      needle-convert --info and --verify
  loaders   -m of needle-run, needle-eval, needle-finetune and needle-bench
  tools     needle-run --tools FILE
  query     needle-run's query on stdin
  jsonl     needle-eval DATA (needle and bfcl formats), needle-finetune DATA, needle-run --jsonl
  answers   needle-eval --format bfcl --answers FILE
  config    needle-finetune --init random --config FILE
  tokenizer --tokenizer of needle-convert, needle-run, needle-eval and needle-finetune
`expect` is an extended regular expression (grep -E) the one error line must match; `OK` means
the documented outcome is success (e.g. a data bit flip is caught only by --verify).
"""
import os
import pickletools
import random
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------------------
# .needle files (docs/format.md): a writer that takes every field explicitly, so that a
# directory can claim any offset and size while both CRC-32 fields are still correct.

MAGIC = b"NEEDLE\r\n"
F32, F16, BF16, Q8, Q4, I32 = 0, 1, 2, 3, 4, 5


def meta_bytes(entries):
    """entries: (key, type, value); type 0 i64, 1 f64, 2 bool, 3 str, 4 bytes, or raw bytes."""
    out = struct.pack("<I", len(entries))
    for key, typ, val in entries:
        k = key.encode() if isinstance(key, str) else key
        out += struct.pack("<I", len(k)) + k + struct.pack("<B", typ)
        if typ == 0:
            out += struct.pack("<q", val)
        elif typ == 1:
            out += struct.pack("<d", val)
        elif typ == 2:
            out += struct.pack("<B", 1 if val else 0)
        elif typ in (3, 4):
            v = val.encode() if isinstance(val, str) else val
            out += struct.pack("<Q", len(v)) + v
        else:
            out += val  # raw, for unknown types
    return out


def dir_bytes(tensors, count=None):
    """tensors: dicts with name, dtype, shape, offset, size (any values, written as given)."""
    out = struct.pack("<I", len(tensors) if count is None else count)
    for t in tensors:
        n = t["name"].encode() if isinstance(t["name"], str) else t["name"]
        out += struct.pack("<I", t.get("name_len", len(n))) + n
        out += struct.pack("<II", t["dtype"], t.get("ndim", len(t["shape"])))
        for d in t["shape"]:
            out += struct.pack("<q", d)
        out += struct.pack("<QQ", t["offset"] % (1 << 64), t["size"] % (1 << 64))
    return out


def needle_file(meta, dirb, data, hdr=None, fix_header_crc=True):
    """Lays out header + meta + dir + (64-aligned) data. `hdr` overrides header fields."""
    meta_off = 72
    dir_off = meta_off + len(meta)
    data_off = (dir_off + len(dirb) + 63) // 64 * 64
    h = dict(major=1, minor=0, meta_off=meta_off, meta_size=len(meta), dir_off=dir_off,
             dir_size=len(dirb), data_off=data_off, data_size=len(data),
             data_crc=zlib.crc32(data))
    h.update(hdr or {})
    head = MAGIC + struct.pack("<IIQQQQQQI", h["major"], h["minor"], h["meta_off"], h["meta_size"],
                               h["dir_off"], h["dir_size"], h["data_off"], h["data_size"], h["data_crc"])
    crc = zlib.crc32(meta, zlib.crc32(head))
    crc = zlib.crc32(dirb, crc)
    if not fix_header_crc:
        crc ^= 0x1
    head += struct.pack("<I", crc)
    body = meta + dirb
    pad = b"\0" * (data_off - meta_off - len(body))
    return head + body + pad + data


def small_tensors():
    """Two f32 tensors: a (4,4) at 0 (64 bytes), b (16,) at 64 (64 bytes)."""
    return [dict(name="a", dtype=F32, shape=[4, 4], offset=0, size=64),
            dict(name="b", dtype=F32, shape=[16], offset=64, size=64)]


SMALL_META = [("provenance.converter", 3, "gen.py"), ("note", 3, "not a model")]
SMALL_DATA = bytes(range(128))


def small_needle(tensors=None, meta=None, data=None, **kw):
    return needle_file(meta_bytes(SMALL_META if meta is None else meta),
                       dir_bytes(small_tensors() if tensors is None else tensors),
                       SMALL_DATA if data is None else data, **kw)


def with_tensor(i, **changes):
    t = small_tensors()
    t[i].update(changes)
    return t


class Needle:
    """A parsed .needle file that can be changed and written back with valid checksums."""

    def __init__(self, b):
        assert b[:8] == MAGIC
        (self.major, self.minor, mo, ms, do, ds, dao, das, self.data_crc) = struct.unpack_from("<IIQQQQQQI", b, 8)
        self.meta = []
        p = mo
        (n,) = struct.unpack_from("<I", b, p)
        p += 4
        for _ in range(n):
            (kl,) = struct.unpack_from("<I", b, p)
            key = b[p + 4:p + 4 + kl].decode()
            p += 4 + kl
            typ = b[p]
            p += 1
            if typ in (0, 1):
                val = struct.unpack_from("<q" if typ == 0 else "<d", b, p)[0]
                p += 8
            elif typ == 2:
                val = b[p] != 0
                p += 1
            else:
                (ln,) = struct.unpack_from("<Q", b, p)
                val = b[p + 8:p + 8 + ln]
                if typ == 3:
                    val = val.decode()
                p += 8 + ln
            self.meta.append([key, typ, val])
        self.tensors = []
        p = do
        (n,) = struct.unpack_from("<I", b, p)
        p += 4
        for _ in range(n):
            (nl,) = struct.unpack_from("<I", b, p)
            name = b[p + 4:p + 4 + nl].decode()
            p += 4 + nl
            dt, nd = struct.unpack_from("<II", b, p)
            p += 8
            shape = list(struct.unpack_from("<%dq" % nd, b, p))
            p += 8 * nd
            off, size = struct.unpack_from("<QQ", b, p)
            p += 16
            self.tensors.append(dict(name=name, dtype=dt, shape=shape, offset=off, size=size))
        self.data = bytearray(b[dao:dao + das])

    def tensor(self, name):
        return next(t for t in self.tensors if t["name"] == name)

    def set_meta(self, key, val):
        next(m for m in self.meta if m[0] == key)[2] = val

    def bytes(self, keep_data_crc=False):
        hdr = {"data_crc": self.data_crc} if keep_data_crc else None
        return needle_file(meta_bytes(self.meta), dir_bytes(self.tensors), bytes(self.data), hdr=hdr)


# ---------------------------------------------------------------------------------------------
# Pickles, opcode by opcode (nothing here unpickles anything).

def s8(s):  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def glob(module, name):  # STACK_GLOBAL
    return s8(module) + s8(name) + b"\x93"


def binint(i):
    return b"J" + struct.pack("<i", i) if i >= 256 else b"K" + bytes([i])


def tup(items):
    return b"(" + b"".join(items) + b"t"


P4 = b"\x80\x04"
P2 = b"\x80\x02"


def ndarray(shape, data, dtype="f2"):
    """numpy 1 layout: _reconstruct(ndarray, (0,), b'b') then BUILD (1, shape, dtype, False, data)."""
    r = glob("numpy.core.multiarray", "_reconstruct") + tup([glob("numpy", "ndarray"), tup([binint(0)]), b"C\x01b"]) + b"R"
    dt = glob("numpy", "dtype") + tup([s8(dtype), b"\x89", b"\x88"]) + b"R"
    dt += tup([binint(3), s8("<"), b"N", b"N", b"N", b"J\xff\xff\xff\xff", b"J\xff\xff\xff\xff", binint(0)]) + b"b"
    raw = (b"C" + bytes([len(data)]) if len(data) < 256 else b"B" + struct.pack("<I", len(data))) + data
    state = tup([binint(1), tup([binint(d) if d < 2**31 else b"\x8a\x08" + struct.pack("<q", d) for d in shape]),
                 dt, b"\x89", raw])
    return r + state + b"b"


def params_pickle(params_value, proto=P4):
    """{'params': <value>} and STOP."""
    return proto + b"}" + s8("params") + params_value + b"s."


def nested_params(depth):
    """params = {'a': {'a': ... {} ...}} `depth` dicts deep (built innermost first)."""
    return (b"}" + s8("a")) * depth + b"}" + b"s" * depth


def memo_laughs(levels=9, fanout=10):
    """params: D9 = {k0..k9: D8}, ..., D1 = {k0..k9: D0}, D0 = {w: one 16-element array}; every
    level is one dict referenced `fanout` times through the memo: 10^9 leaves from ~1 KB."""
    out = P4 + b"}" + s8("params")
    out += b"}" + s8("w") + ndarray([16], b"\0" * 32) + b"s\x940"  # D0: memo 0, popped
    for lvl in range(1, levels + 1):
        out += b"}(" + b"".join(s8("k%d" % i) + b"h" + bytes([lvl - 1]) for i in range(fanout)) + b"u\x94"
        if lvl < levels:
            out += b"0"
    return out + b"s."


def memo_shared_array(keys=400, nbytes=16384):
    """One array of `nbytes` memoized once and referenced under `keys` names: the tensors
    returned would take keys*nbytes, far beyond the input size."""
    out = P4 + b"}" + s8("params") + b"}" + s8("k0") + ndarray([nbytes // 2], b"\0" * nbytes) + b"\x94s("
    for i in range(1, keys):
        out += s8("k%d" % i) + b"h\x00"
    return out + b"us."


# ---------------------------------------------------------------------------------------------
# The committed corpus: (file, bytes, [(slots, expect)], intent).

def committed():
    C = []

    def add(name, data, rows, intent):
        C.append((name, data, rows, intent))

    # Pickles: hostile globals and opcodes.
    add("pkl_global_os_system_p2.pkl",
        P2 + b"}X\x06\x00\x00\x00params" + b"cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R" + b"s.",
        [("convert", r"global 'os\.system' is not allowed"), ("loaders", "not a \\.needle file")],
        "GLOBAL os.system + REDUCE (protocol 2 text GLOBAL opcode)")
    add("pkl_reduce_builtins_exec.pkl",
        params_pickle(glob("builtins", "exec") + s8("print('pwned')") + b"\x85R"),
        [("convert", r"global 'builtins\.exec' is not allowed")], "STACK_GLOBAL builtins.exec + REDUCE")
    add("pkl_reduce_subprocess.pkl",
        params_pickle(glob("subprocess", "check_output") + s8("id") + b"\x85\x85R"),
        [("convert", r"global 'subprocess\.check_output' is not allowed")], "subprocess.check_output + REDUCE")
    add("pkl_global_numpy_load.pkl", params_pickle(glob("numpy", "load") + s8("/etc/passwd") + b"\x85R"),
        [("convert", r"global 'numpy\.load' is not allowed")], "a numpy global outside the allow-list")
    add("pkl_global_unterminated.pkl", P2 + b"cos\nsys" + b"A" * 200,
        [("convert", "GLOBAL name is unterminated or too long")], "GLOBAL without its newline")
    add("pkl_inst.pkl", P2 + b"(ios\nsystem\n.", [("convert", "opcode 0x69 builds arbitrary objects")],
        "INST (builds any class)")
    add("pkl_obj.pkl", P2 + b"(" + glob("os", "system") + b"o.", [("convert", r"global 'os\.system' is not allowed")],
        "OBJ on a hostile class (the global is refused first)")
    add("pkl_obj_opcode.pkl", P2 + b"(o.", [("convert", "opcode 0x6f builds arbitrary objects")], "OBJ opcode")
    add("pkl_newobj.pkl", P4 + b"N)\x81.", [("convert", "opcode 0x81 builds arbitrary objects")], "NEWOBJ")
    add("pkl_newobj_ex.pkl", P4 + b"N)}\x92.", [("convert", "opcode 0x92 builds arbitrary objects")], "NEWOBJ_EX")
    add("pkl_ext1.pkl", P2 + b"\x82\x01.", [("convert", "extension registry")], "EXT1 (copyreg extension registry)")
    add("pkl_binpersid.pkl", P2 + s8("x") + b"Q.", [("convert", "persistent IDs")], "BINPERSID")
    add("pkl_next_buffer.pkl", b"\x80\x05\x97.", [("convert", "out-of-band")], "NEXT_BUFFER (out-of-band data)")
    add("pkl_set.pkl", P4 + b"\x8f.", [("convert", "sets are not supported")], "EMPTY_SET")
    add("pkl_proto0.pkl", b"(dp0\nS'params'\np1\n(dp2\ns.", [("convert", "protocol 0/1 opcode")],
        "protocol 0 text pickle")
    add("pkl_proto6.pkl", b"\x80\x06}.", [("convert", "unsupported pickle protocol 6")], "PROTO 6")
    add("pkl_unknown_opcode.pkl", P4 + b"\xff.", [("convert", "unknown opcode 0xff")], "opcode 0xff")
    add("pkl_stop_only.pkl", b".", [("convert", "stack underflow")], "STOP on an empty stack")
    add("pkl_no_stop.pkl", P4 + b"}", [("convert", "input ends before STOP")], "no STOP (truncated)")
    add("pkl_not_dict.pkl", P4 + b"]\x94.", [("convert", "expected a dict")], "the root is a list")
    add("pkl_marks_300.pkl", P4 + b"(" * 300 + b".", [("convert", "more than 256 nested MARKs")],
        "MARK nesting (300; the 100,000-deep one is generated at test time)")
    add("pkl_params_depth_100.pkl", params_pickle(nested_params(100)),
        [("convert", "params nested deeper than 64 dicts")], "params dicts nested 100 deep")
    # Huge declared sizes.
    add("pkl_binunicode8_2p60.pkl", P4 + b"\x8d" + struct.pack("<Q", 1 << 60) + b"abc.",
        [("convert", "string needs 1152921504606846976 bytes but only 4 remain")], "BINUNICODE8 of 2^60 bytes")
    add("pkl_binbytes8_2p60.pkl", P4 + b"\x8e" + struct.pack("<Q", 1 << 60) + b"abc.",
        [("convert", "bytes needs 1152921504606846976 bytes")], "BINBYTES8 of 2^60 bytes")
    add("pkl_bytearray8_2p60.pkl", b"\x80\x05\x96" + struct.pack("<Q", 1 << 60) + b"abc.",
        [("convert", "bytes needs 1152921504606846976 bytes")], "BYTEARRAY8 of 2^60 bytes")
    add("pkl_binunicode8_2p64m1.pkl", P4 + b"\x8d" + b"\xff" * 8 + b"abc.",
        [("convert", "string needs 18446744073709551615 bytes")], "BINUNICODE8 of 2^64-1 bytes (no wrap-around)")
    add("pkl_binunicode_4g.pkl", P4 + b"X\xff\xff\xff\xffabc.", [("convert", "string needs 4294967295 bytes")],
        "BINUNICODE of 2^32-1 bytes")
    add("pkl_binbytes_4g.pkl", P4 + b"B\xff\xff\xff\xffabc.", [("convert", "bytes needs 4294967295 bytes")],
        "BINBYTES of 2^32-1 bytes")
    add("pkl_long4_2g.pkl", P4 + b"\x8b\xff\xff\xff\x7fabc.", [("convert", "LONG needs 2147483647 bytes")],
        "LONG4 of 2^31-1 bytes")
    add("pkl_long4_negative.pkl", P4 + b"\x8b\xff\xff\xff\xffabc.", [("convert", "LONG4 with negative length")],
        "LONG4 with a negative length")
    add("pkl_frame_2p60.pkl", P4 + b"\x95" + struct.pack("<Q", 1 << 60) + b"}.",
        [("convert", "FRAME of 1152921504606846976 bytes")], "FRAME of 2^60 bytes")
    add("pkl_array_shape_2p62.pkl", params_pickle(b"}" + s8("w") + ndarray([2**31, 2**31, 2**31], b"\0" * 8) + b"s"),
        [("convert", "more than 2\\^62 elements")], "ndarray shape (2^31)^3 with 8 bytes of data")
    add("pkl_array_shape_mismatch.pkl", params_pickle(b"}" + s8("w") + ndarray([1000000, 1000000], b"\0" * 8) + b"s"),
        [("convert", "needs 2000000000000 bytes, has 8")], "ndarray shape 10^6 x 10^6 with 8 bytes of data")
    add("pkl_frombuffer_huge.pkl",
        params_pickle(b"}" + s8("w") + glob("numpy.core.numeric", "_frombuffer") +
                      tup([b"C\x08" + b"\0" * 8, glob("numpy", "dtype") + tup([s8("f4"), b"\x89", b"\x88"]) + b"R",
                           tup([b"\x8a\x06" + struct.pack("<q", 1 << 40)[:6]]), s8("C")]) + b"Rs", b"\x80\x05"),
        [("convert", "needs 4398046511104 bytes, has 8")], "_frombuffer (protocol 5) claiming 2^40 floats")
    # Memo abuse.
    add("pkl_memo_get_unset.pkl", P4 + b"h\x05.", [("convert", "memo index 5 was never stored")],
        "BINGET of a memo slot never stored")
    add("pkl_memo_long_binput_4g.pkl", P4 + b"}r\xff\xff\xff\xff.", [("convert", "memo index 4294967295 skips ahead")],
        "LONG_BINPUT at index 2^32-1 (a sparse memo of 4 G slots)")
    add("pkl_memo_self_cycle.pkl", P4 + b"}" + s8("params") + b"}\x94" + s8("a") + b"h\x00" + b"ss.",
        [("convert", "params nested deeper than 64 dicts")], "a params dict that contains itself")
    add("pkl_memo_laughs.pkl", memo_laughs(),
        [("convert", "expands beyond its input size")], "\"billion laughs\": 9 levels of 10 memo references, 10^9 leaves")

    # .needle files, checksums valid unless the case is about them.
    ok = small_needle()
    add("needle_magic_only.needle", MAGIC, [("model", "truncated \\.needle header")], "the magic and nothing else")
    add("needle_header_40.needle", ok[:40], [("model", "truncated \\.needle header")], "cut inside the header")
    add("needle_cut_data.needle", ok[:-32], [("model", "sections exceed the file size")], "cut inside the data section")
    add("needle_bad_magic.needle", b"NEEDLF" + ok[6:],
        [("info", "not a \\.needle file"), ("loaders", "not a \\.needle file"), ("convert", "pickle: ")],
        "a wrong magic (needle-convert then reads it as a pickle)")
    add("needle_version_2.needle", small_needle(hdr=dict(major=2)), [("model", "unsupported \\.needle version 2\\.0")],
        "major version 2")
    add("needle_header_crc.needle", small_needle(fix_header_crc=False), [("model", "header checksum mismatch")],
        "header CRC off by one bit")
    add("needle_meta_size_2p63.needle", small_needle(hdr=dict(meta_size=1 << 63)), [("model", "sections exceed")],
        "metadata size 2^63")
    add("needle_data_offset_2p64m64.needle", small_needle(hdr=dict(data_off=(1 << 64) - 64)),
        [("model", "sections exceed")], "data offset 2^64-64 (offset + size wraps around)")
    add("needle_data_misaligned.needle",
        needle_file(meta_bytes(SMALL_META), dir_bytes(small_tensors()), SMALL_DATA, hdr=dict(data_off=72 + 8)),
        [("model", "data section is not 64-byte aligned|header checksum|sections exceed")],
        "data section at an unaligned offset")
    add("needle_tensor_out_of_range.needle", small_needle(with_tensor(1, offset=128)),
        [("model", "lies outside the data section")], "tensor b at offset 128 of a 128-byte data section")
    add("needle_tensor_offset_wrap.needle", small_needle(with_tensor(1, offset=(1 << 64) - 64)),
        [("model", "lies outside the data section")], "tensor offset 2^64-64: offset + size wraps around")
    add("needle_tensor_overlap.needle", small_needle(with_tensor(1, offset=0)),
        [("model", "tensors overlap")], "two tensors at the same offset")
    add("needle_tensor_overlap_partial.needle",
        small_needle([dict(name="a", dtype=F32, shape=[32], offset=0, size=128),
                      dict(name="b", dtype=F32, shape=[16], offset=64, size=64)]),
        [("model", "tensors overlap")], "a tensor that starts inside another")
    add("needle_tensor_size_lie.needle", small_needle(with_tensor(0, size=128)),
        [("model", "should take 64 bytes, directory says 128")], "directory size disagrees with dtype x shape")
    add("needle_tensor_huge_shape.needle", small_needle(with_tensor(0, shape=[1 << 40, 1 << 40])),
        [("model", "implausibly large")], "shape (2^40, 2^40)")
    add("needle_tensor_negative_dim.needle", small_needle(with_tensor(0, shape=[-4, -4])),
        [("model", "negative dimension")], "negative dimensions")
    add("needle_tensor_ndim_9.needle", small_needle(with_tensor(0, shape=[1] * 9)),
        [("model", "9 dimensions \\(at most 8\\)")], "9 dimensions")
    add("needle_tensor_ndim_4g.needle", small_needle(with_tensor(0, ndim=0xFFFFFFFF)),
        [("model", "4294967295 dimensions")], "ndim 2^32-1")
    add("needle_tensor_unknown_dtype.needle", small_needle(with_tensor(0, dtype=99)),
        [("model", "unknown dtype 99")], "dtype 99")
    add("needle_tensor_misaligned.needle", small_needle(with_tensor(1, offset=32, size=64)),
        [("model", "not 64-byte aligned")], "tensor at offset 32")
    add("needle_tensor_dup_name.needle", small_needle(with_tensor(1, name="a")), [("model", "appears twice")],
        "two tensors named a")
    add("needle_tensor_name_ctrl.needle", small_needle(with_tensor(1, name="b\n\x1b[31mred")),
        [("model", "name with control characters")], "a tensor name with a newline and an escape")
    add("needle_tensor_name_len_4g.needle", small_needle(with_tensor(0, name_len=0xFFFFFFFF)),
        [("model", "invalid name length 4294967295")], "name length 2^32-1")
    add("needle_dir_count_4g.needle", needle_file(meta_bytes(SMALL_META), dir_bytes(small_tensors(), count=0xFFFFFFFF),
                                                  SMALL_DATA),
        [("model", "declares 4294967295 tensors")], "directory claims 2^32-1 tensors")
    add("needle_meta_string_2p60.needle",
        needle_file(struct.pack("<II", 1, 4) + b"note\x03" + struct.pack("<Q", 1 << 60) + b"abc",
                    dir_bytes(small_tensors()), SMALL_DATA),
        [("model", "metadata is truncated \\(field of 1152921504606846976 bytes")], "a metadata string of 2^60 bytes")
    add("needle_meta_count_4g.needle",
        needle_file(struct.pack("<I", 0xFFFFFFFF) + meta_bytes(SMALL_META)[4:], dir_bytes(small_tensors()), SMALL_DATA),
        [("model", "metadata is truncated")], "metadata count 2^32-1")
    add("needle_meta_unknown_type.needle", small_needle(meta=[("x", 9, b"")]), [("model", "unknown type 9")],
        "metadata value of type 9")
    add("needle_meta_key_ctrl.needle", small_needle(meta=[("a\rb", 0, 1)]), [("model", "control characters")],
        "a metadata key with a carriage return")
    add("needle_not_a_model.needle", ok, [("model", "metadata lacks config\\.")],
        "a valid container that holds no model (no config)")

    # Text: queries, tools files, JSONL lines, finetune configs, tokenizers.
    add("query_invalid_utf8.txt", b"weather in caf\xe9\n", [("query", "UTF-8")], "Latin-1 byte in the query")
    add("query_overlong_utf8.txt", b"a \xc0\xaf b\n", [("query", "UTF-8")], "overlong encoding of '/'")
    add("query_surrogate_utf8.txt", b"a \xed\xa0\x80 b\n", [("query", "UTF-8")], "UTF-8-encoded surrogate U+D800")
    add("query_cut_utf8.txt", b"caf\xc3", [("query", "UTF-8")], "a multi-byte character cut at the end")
    add("query_blank.txt", b" \t \n", [("query", "the query is empty")], "only blanks")
    add("tools_invalid_utf8.json", b'[{"name":"f","description":"caf\xe9"}]', [("tools", "UTF-8")],
        "Latin-1 byte in a description")
    add("tools_invalid_utf8_name.json", b'[{"name":"f\xff"}]', [("tools", "UTF-8")], "0xFF in a tool name")
    add("tools_bom.json", b"\xef\xbb\xbf[]", [("tools", "invalid JSON")], "a UTF-8 BOM before the list")
    add("tools_trailing.json", b"[] []", [("tools", "invalid JSON")], "two JSON values")
    add("tools_not_list.json", b'{"name":"f"}', [("tools", "list")], "an object, not a list")
    add("tools_nested_600.json", b"[" * 600 + b"]" * 600, [("tools", "nesting deeper than 512")],
        "lists nested 600 deep (the 100,000-deep one is generated at test time)")
    add("tools_nan.json", b'[{"name":"f","parameters":{"a":{"type":"number","enum":[NaN]}}}]', [("tools", "invalid JSON")],
        "a NaN literal")
    add("tools_huge_int.json", b'[{"name":"f","parameters":{"a":{"type":"integer","enum":[1' + b"0" * 5000 + b']}}}]',
        [("tools", "invalid JSON|digits")], "an integer of 5,001 digits (Python's limit is 4,300)")
    jl = b'{"query":"%s","tools":[{"name":"f","description":"d","parameters":{}}],"answers":[]}\n'
    add("jsonl_invalid_utf8_query.jsonl", jl % b"caf\xe9", [("jsonl", "UTF-8")], "Latin-1 byte in a query")
    add("jsonl_invalid_utf8_tools.jsonl",
        b'{"query":"q","tools":"[{\\"name\\":\\"f\\xff\\"}]","answers":[]}\n'.replace(b"\\xff", b"\xff"),
        [("jsonl", "UTF-8")], "0xFF inside tools given as a JSON string")
    add("jsonl_invalid_utf8_key.jsonl", b'{"qu\xe9ry":"q","tools":[],"answers":[]}\n', [("jsonl", "UTF-8")],
        "Latin-1 byte in a key")
    add("jsonl_nested_600.jsonl", b'{"query":"q","tools":' + b"[" * 600 + b"]" * 600 + b',"answers":[]}\n',
        [("jsonl", "nesting deeper than 512")], "tools nested 600 deep")
    add("jsonl_truncated.jsonl", b'{"query":"q","tools":[{"name":', [("jsonl", "json: ")],
        "a line cut in the middle, no newline")
    add("jsonl_not_object.jsonl", b'[1,2,3]\n', [("jsonl", "object")], "a line that is a list")
    add("jsonl_nul.jsonl", b'{"query":"a\0b","tools":[],"answers":[]}\n', [("jsonl", "json: ")],
        "a raw NUL inside a string")
    add("answers_invalid_utf8.jsonl", b'{"id":"simple_0","ground_truth":[{"f\xff":{}}]}\n',
        [("answers", "UTF-8")], "BFCL answers line with 0xFF")
    cfg = b'{"vocab_size":1000,"d_model":%s,"num_heads":4,"num_kv_heads":2,"num_encoder_layers":1,"num_decoder_layers":1}'
    add("config_invalid_utf8.json", b'{"dtype":"bf\xe916"}', [("config", "UTF-8")], "Latin-1 byte in a value")
    add("config_not_object.json", b"[64]", [("config", "expected a JSON object")], "a list")
    add("config_nested.json", b'{"d_model":' + b"[" * 600 + b"]" * 600 + b"}", [("config", "nesting deeper than 512")],
        "a value nested 600 deep")
    add("config_non_scalar.json", cfg % b"[64]", [("config", "must be a scalar")], "d_model is a list")
    add("config_huge_sizes.json",
        b'{"vocab_size":1048576,"d_model":1048576,"num_heads":4,"num_kv_heads":4,"num_encoder_layers":1024,'
        b'"num_decoder_layers":1024,"contrastive_dim":1048576}',
        [("config", "implausibly large")], "every size at its per-field limit: about 10^16 parameters")
    add("config_huge_int.json", cfg % (b"1" + b"0" * 30), [("config", "must be an integer")],
        "d_model of 31 digits")
    add("config_bad_heads.json", cfg % b"66", [("config", "not divisible")], "d_model 66 with 4 heads")
    rnd = random.Random(8)
    add("tokenizer_garbage.model", bytes(rnd.getrandbits(8) for _ in range(2048)),
        [("tokenizer", "tokenizer")], "2 KB of random bytes as a SentencePiece model")
    add("empty", b"",
        [("model", "bad magic|empty|truncated"), ("tools", "empty|invalid JSON"), ("query", "empty"),
         ("jsonl", "no valid examples|too little data|empty"), ("answers", "no valid|empty|answers"),
         ("config", "json|JSON|empty"), ("tokenizer", "tokenizer|empty")],
        "an empty file (every slot)")
    return C


# ---------------------------------------------------------------------------------------------
# Test-time inputs: large, or derived from the real tiny model.

def derive(out, pkl_path, needle_path, tok_path):
    rows = []

    def put(name, data, slots_expect, intent):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        for slots, expect in slots_expect:
            rows.append((name, slots, expect, intent))

    # 100,000-deep nesting.
    deep = b"[" * 100000 + b"]" * 100000
    put("gen_tools_nested_100k.json", deep, [("tools", "nesting deeper than 512")], "JSON lists nested 100,000 deep")
    put("gen_jsonl_nested_100k.jsonl", b'{"query":"q","tools":' + deep + b',"answers":[]}\n',
        [("jsonl", "nesting deeper than 512")], "a JSONL line nested 100,000 deep")
    put("gen_config_nested_100k.json", b'{"d_model":' + b"{\"a\":" * 100000 + b"1" + b"}" * 100001,
        [("config", "nesting deeper than 512")], "a config object nested 100,000 deep")
    put("gen_pkl_marks_100k.pkl", P4 + b"(" * 100000 + b".", [("convert", "more than 256 nested MARKs")],
        "100,000 MARKs")
    put("gen_pkl_lists_100k.pkl", P4 + b"}" + s8("x") + b"]" * 100000 + b"a" * 99999 + b"s.",
        [("convert", "needs more memory than|no 'params' dict")],
        "a list nested 100,000 deep (under an ignored key)")
    put("gen_pkl_tuples_100k.pkl", params_pickle(b")" + b"\x85" * 100000),
        [("convert", "needs more memory than|'params' is a tuple")],
        "a tuple nested 100,000 deep as params")
    put("gen_pkl_params_100k.pkl", params_pickle(nested_params(100000)),
        [("convert", "needs more memory than|params nested deeper than 64 dicts")], "params dicts nested 100,000 deep")
    put("gen_pkl_memo_shared_array.pkl", memo_shared_array(),
        [("convert", "expands beyond its input size")], "one 16 KB array referenced 400 times through the memo")
    # A 100 MB line: too long for every JSONL reader, the --tools and --config limits.
    big = b'{"query":"' + b"a" * (100 << 20) + b'","tools":[],"answers":[]}\n'
    put("gen_line_100mb.jsonl", big,
        [("jsonl", "line longer than"), ("tools", "too large"), ("config", "too large"), ("tokenizer", "too large"),
         ("model", "bad magic|pickle: ")],
        "one line of 100 MB")

    # Truncations and bit flips of the real tiny pickle.
    pk = open(pkl_path, "rb").read()
    ops = list(pickletools.genops(pk))
    for cut in (1, 11, 100, 1000, len(pk) // 2, len(pk) - 1):
        put("gen_pkl_cut_%d.pkl" % cut, pk[:cut], [("convert", "pickle: ")], "tiny_np1_f16.pkl cut to %d bytes" % cut)

    def flip(pos, bit):
        b = bytearray(pk)
        b[pos] ^= 1 << bit
        return bytes(b)

    def first(name, pred=lambda a: True):
        return next((o, a, p) for o, a, p in ops if o.name == name and pred(a))

    _, _, p = first("PROTO")
    put("gen_pkl_flip_proto.pkl", flip(p + 1, 1), [("convert", "unsupported pickle protocol 6")],
        "PROTO 4 -> 6 (one bit)")
    _, _, p = first("FRAME")
    put("gen_pkl_flip_frame.pkl", flip(p + 8, 7), [("convert", "FRAME of .* bytes but only")],
        "top bit of the first FRAME length")
    _, _, p = first("STOP")
    put("gen_pkl_flip_stop.pkl", flip(p, 0), [("convert", "unknown opcode 0x2f")], "STOP -> 0x2f")
    _, _, p = first("SHORT_BINUNICODE", lambda a: a == "params")
    put("gen_pkl_flip_params_key.pkl", flip(p + 2, 0), [("convert", "no 'params' dict")], "'params' -> 'qarams'")
    _, _, p = first("SHORT_BINUNICODE", lambda a: a == "numpy.core.multiarray")
    put("gen_pkl_flip_module.pkl", flip(p + 2, 0), [("convert", "global 'ou?mpy[^']*' is not allowed")],
        "'numpy.core.multiarray' -> 'oumpy.core.multiarray'")
    _, _, p = first("BINBYTES", lambda a: len(a) > 1000)
    put("gen_pkl_flip_bytes_len.pkl", flip(p + 4, 7), [("convert", "bytes needs [0-9]+ bytes but only")],
        "top bit of an array's BINBYTES length")
    _, _, p = first("BININT1", lambda a: a == 16)
    put("gen_pkl_flip_shape.pkl", flip(p + 1, 0), [("convert", "shape \\(17,\\) and dtype float16 needs 34 bytes, has 32")],
        "a dimension 16 -> 17")
    _, _, p = first("SHORT_BINUNICODE", lambda a: a == "bias")
    put("gen_pkl_flip_param_name.pkl", flip(p + 3, 0), [("convert", "lacks tensor|unexpected|unknown")],
        "parameter 'bias' -> 'bhas'")
    # Seeded random single-bit flips in opcodes and their short arguments (not in array data):
    # no fixed message, but never a crash; tests/cli/bad_inputs.sh checks exit 0 (then the
    # output must pass --verify) or 2 with one line.
    spots = []
    for op, arg, pos in ops:
        end = pos + 1 + (op.arg.n if op.arg is not None and op.arg.n > 0 else 0)
        if op.arg is not None and op.arg.n < 0:  # length-prefixed: opcode + length field
            end = pos + 1 + {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4,
                             pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8}.get(op.arg.n, 0)
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "SHORT_BINBYTES") and isinstance(arg, (str, bytes)) \
                    and len(arg) < 64:
                end += len(arg.encode() if isinstance(arg, str) else arg)
        spots.extend(range(pos, end))
    rnd = random.Random(2026)
    for i in range(40):
        put("gen_pkl_rflip_%02d.pkl" % i, flip(rnd.choice(spots), rnd.randrange(8)), [("convert", "ANY")],
            "random single-bit flip in the pickle's structure (seed 2026)")

    # The real tiny model (.needle), cut and changed with valid checksums.
    nb = open(needle_path, "rb").read()
    n = Needle(nb)
    dsec = struct.unpack_from("<Q", nb, 48)[0]
    for cut in (8, 72, 200, dsec + 64, len(nb) // 2, len(nb) - 1):
        put("gen_needle_cut_%d.needle" % cut, nb[:cut], [("model", "truncated|sections exceed")],
            "tiny model cut to %d bytes" % cut)

    def variant(name, change, slots_expect, intent):
        m = Needle(nb)
        change(m)
        put(name, m.bytes(keep_data_crc=True), slots_expect, intent)

    t0, t1, tl = n.tensors[0]["name"], n.tensors[1]["name"], n.tensors[-1]["name"]
    variant("gen_needle_overlap.needle", lambda m: m.tensor(t1).update(offset=m.tensor(t0)["offset"]),
            [("model", "tensors overlap")], "second tensor moved onto the first")
    variant("gen_needle_overlap_inside.needle",
            lambda m: m.tensor(t1).update(offset=m.tensor(t0)["offset"] + 64),
            [("model", "tensors overlap")], "second tensor moved inside the embedding")
    variant("gen_needle_out_of_range.needle", lambda m: m.tensor(tl).update(offset=len(m.data)),
            [("model", "lies outside the data section")], "last tensor moved past the data section")
    variant("gen_needle_offset_wrap.needle", lambda m: m.tensor(tl).update(offset=(1 << 64) - 64),
            [("model", "lies outside the data section")], "last tensor at offset 2^64-64")
    variant("gen_needle_size_2p63.needle", lambda m: m.tensor(t0).update(size=1 << 63),
            [("model", "should take")], "embedding size 2^63")
    variant("gen_needle_missing_tensor.needle", lambda m: m.tensor(t1).update(name=t1 + "_renamed"),
            [("model", "lacks tensor")], "a required tensor renamed")
    k = next(t for t in n.tensors if len(t["shape"]) == 2 and t["shape"][0] != t["shape"][1])["name"]
    variant("gen_needle_wrong_shape.needle", lambda m: m.tensor(k).update(shape=m.tensor(k)["shape"][::-1]),
            [("model", "has shape .* expected")], "a kernel's shape transposed (same byte size)")
    variant("gen_needle_config_d_model.needle", lambda m: m.set_meta("config.d_model", 128),
            [("model", "has shape .* expected")], "config.d_model doubled: tensors no longer fit the config")
    variant("gen_needle_config_heads.needle", lambda m: m.set_meta("config.num_heads", 3),
            [("model", "not divisible")], "config.num_heads 3 for d_model 64")
    variant("gen_needle_config_vocab_2p40.needle", lambda m: m.set_meta("config.vocab_size", 1 << 40),
            [("model", "config\\.vocab_size is not an integer")], "config.vocab_size 2^40")
    tok = next(v for k2, _, v in n.meta if k2 == "tokenizer.model")
    variant("gen_needle_tokenizer_garbage.needle", lambda m: m.set_meta("tokenizer.model", b"\x07" * len(tok)),
            [("info", "OK"), ("bench-m", "OK"), ("convert", "embedded tokenizer"), ("run-m", "embedded tokenizer"),
             ("eval-m", "embedded tokenizer"), ("finetune-m", "tokenizer")],
            "the embedded tokenizer overwritten (file structure valid)")
    m = Needle(nb)
    m.data[len(m.data) // 2] ^= 0x10
    put("gen_needle_data_flip.needle", m.bytes(keep_data_crc=True), [("info", "data checksum mismatch"),
                                                                      ("convert", "data checksum mismatch")],
        "one bit flipped in the data section (only --verify and conversion check the data CRC)")
    # A tokenizer cut in half.
    tk = open(tok_path, "rb").read()
    put("gen_tokenizer_cut.model", tk[:len(tk) // 2], [("tokenizer", "tokenizer")], "tiny_tok.model cut in half")
    with open(os.path.join(out, "manifest.tsv"), "w") as f:
        for r in rows:
            f.write("\t".join(r) + "\n")


# ---------------------------------------------------------------------------------------------

README_HEAD = """# Malformed-input corpus

Inputs that every tool must reject cleanly: exit code 2 (bad input; never a signal), exactly one
line on stderr naming the problem, nothing on stdout that looks like a result, and no output
or temporary file left behind. `tests/cli/bad_inputs.sh` (ctest `cli:bad_inputs`) feeds each
file to every tool input it fits (`slots`, see `gen.py`) and checks all of that.

The small files are committed and written by `gen.py` (python3 standard library; run it to
regenerate, `gen.py --check` verifies them, and the test runs that check). Large inputs and
inputs derived from the real tiny model are written at test time by `gen.py --derive`.
`expect` is the `grep -E` pattern the error line must match.

| file | slots | expect | intent |
|---|---|---|---|
"""

README_TAIL = """
Written at test time (`gen.py --derive`), not committed:

| file | slots | expect | intent |
|---|---|---|---|
"""

README_END = """
Also run by the test, without a file here: a directory and a missing file given as every file
argument; a directory as needle-convert's `-o` (exit 1, the directory untouched); the pickles of
`tests/data/bad_pickles/`; the shared e2e tokenizer (2,000 pieces) for the 1,000-piece model; the
100 MB line as needle-run's query on stdin (documented: cut to 256 KiB with a warning, exit 0);
peak memory under 400 MB for each 100 MB input; and `needle-run --jsonl` over every JSONL case
(documented: exit 0, one `{"error":"line N: ..."}` per bad line, processing goes on).

The `[finetune DATA -q]` cases were known failures until needle-finetune's "too little data"
line named the first bad line's problem (docs/security.md).
"""


def md(s):
    return s.replace("|", "\\|")


def write_committed(check):
    bad = []
    rows = []
    for name, data, se, intent in committed():
        path = os.path.join(HERE, name)
        if check:
            if not os.path.exists(path) or open(path, "rb").read() != data:
                bad.append(name)
        else:
            with open(path, "wb") as f:
                f.write(data)
        for slots, expect in se:
            rows.append((name, slots, expect, intent))
    manifest = "".join("\t".join(r) + "\n" for r in rows)
    readme = README_HEAD + "".join("| `%s` | %s | `%s` | %s |\n" % (n, s, md(e), md(i)) for n, s, e, i in rows)
    derived = [("gen_tools_nested_100k.json", "tools", "JSON lists nested 100,000 deep"),
               ("gen_jsonl_nested_100k.jsonl", "jsonl", "a JSONL line nested 100,000 deep"),
               ("gen_config_nested_100k.json", "config", "a config object nested 100,000 deep"),
               ("gen_pkl_{marks,lists,tuples,params}_100k.pkl", "convert", "pickles nested 100,000 deep (MARK, list, tuple, params dicts)"),
               ("gen_pkl_memo_shared_array.pkl", "convert", "one 16 KB array referenced 400 times through the memo"),
               ("gen_line_100mb.jsonl", "jsonl, tools, config, tokenizer, model", "one line of 100 MB"),
               ("gen_pkl_cut_*.pkl", "convert", "tiny_np1_f16.pkl truncated at 6 points"),
               ("gen_pkl_flip_*.pkl", "convert", "targeted single-bit flips: protocol, FRAME length, STOP, the 'params' key, a module name, an array's length, a dimension, a parameter name; each with its expected message"),
               ("gen_pkl_rflip_*.pkl", "convert", "40 seeded random bit flips in opcodes and short arguments: exit 0 (output then passes --verify) or exit 2 with one line"),
               ("gen_needle_cut_*.needle", "model", "the tiny model truncated at 6 points"),
               ("gen_needle_{overlap,overlap_inside,out_of_range,offset_wrap,size_2p63}.needle", "model", "tiny model with overlapping / out-of-range tensors, CRCs recomputed so the range checks must catch them"),
               ("gen_needle_{missing_tensor,wrong_shape,config_*}.needle", "model", "valid containers the model layer must reject"),
               ("gen_needle_tokenizer_garbage.needle", "model", "embedded tokenizer overwritten: loaders and conversion fail, --info/--verify and needle-bench (no tokenizer) succeed"),
               ("gen_needle_data_flip.needle", "info, convert", "one data bit flipped: --verify and conversion report the data CRC"),
               ("gen_tokenizer_cut.model", "tokenizer", "tiny_tok.model cut in half")]
    readme += README_TAIL + "".join("| `%s` | %s | | %s |\n" % (n, s, md(i)) for n, s, i in derived) + README_END
    for name, text in (("manifest.tsv", manifest), ("README.md", readme)):
        path = os.path.join(HERE, name)
        if check:
            if not os.path.exists(path) or open(path).read() != text:
                bad.append(name)
        else:
            with open(path, "w") as f:
                f.write(text)
    if bad:
        print("gen.py --check: differs from the generator: " + ", ".join(bad))
        return 1
    return 0


def main(argv):
    if "--derive" in argv:
        a = dict(zip(argv[::2], argv[1::2]))
        derive(a["--derive"], a["--pkl"], a["--needle"], a["--tok"])
        return 0
    return write_committed("--check" in argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
