"""Needle v1 (docs: ../shared/docs/needle-reference.md sections 1-3, 5), written once against an
array namespace so the same code runs as plain numpy on the CPU (parity tests, CI) and as
jax.numpy under jit/grad on the GPU (train_jax.py).

Parameters are a flat dict {"encoder/layers/EncoderBlock_0/self_attn/q_proj/kernel": array, ...}
whose keys are the original pickle's paths; kernels are stored (in, out) and stacked over a
leading layer axis exactly as the pickle holds them, so nothing is transposed or renamed on the
way in or out.

What the array namespace `xp` must provide is the common subset of numpy and jax.numpy
(matmul, transpose, take, take_along_axis, where, exp, log, sqrt, concatenate, ...); everything that
differs between the two (layer scan, dropout, stop_gradient, matmul precision / compute dtype)
goes through an `Ops` object: `numpy_ops()` here, `jax_ops()` in needle_jax.py.
"""
import math
import pickle
import sys

import numpy as np

# ---- config ---------------------------------------------------------------------------------------

# Reference section 2: keys a checkpoint's config may omit take these values.
DEFAULT_CONFIG = {
    "vocab_size": 8192, "d_model": 128, "num_heads": 4, "num_kv_heads": 2, "num_encoder_layers": 2,
    "num_decoder_layers": 2, "d_ff": 512, "max_seq_len": 128, "pad_token_id": 0, "rope_theta": 10000.0,
    "dtype": "bfloat16", "contrastive_dim": 128, "no_feedforward": True,
}
INT_KEYS = ("vocab_size", "d_model", "num_heads", "num_kv_heads", "num_encoder_layers", "num_decoder_layers",
            "d_ff", "max_seq_len", "pad_token_id", "contrastive_dim")

PAD, EOS, BOS, UNK, TOOL_CALL, TOOLS = 0, 1, 2, 3, 4, 5
CLASS_WEIGHTS = (1.0, 2.0, 4.0, 1.5)  # loss classes base / name / value / key
Z_LOSS = 1e-4
RMS_EPS = 1e-6


class Config:
    """The resolved config (defaults filled in) plus the dict as given (written back to pickles)."""

    def __init__(self, given):
        given = dict(given or {})
        c = dict(DEFAULT_CONFIG)
        c.update(given)
        for k in INT_KEYS:
            if int(c[k]) != c[k]:
                raise ValueError(f"config key '{k}' must be an integer, got {c[k]!r}")
            c[k] = int(c[k])
        c["rope_theta"] = float(c["rope_theta"])
        self.given = given
        self.__dict__.update(c)
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        self.head_dim = self.d_model // self.num_heads
        if self.head_dim % 2:
            raise ValueError("head_dim must be even (RoPE)")
        self.kv_dim = self.num_kv_heads * self.head_dim
        self.hidden_dim = self.d_model // 4

    def to_pickle(self):
        """The config dict a checkpoint carries: every key, as plain Python scalars (the C++ reader
        wants ints, a float rope_theta, a str dtype and a bool no_feedforward; it ignores others)."""
        out = {k: int(getattr(self, k)) for k in INT_KEYS}
        out["rope_theta"] = float(self.rope_theta)
        out["dtype"] = str(self.dtype)
        out["no_feedforward"] = bool(self.no_feedforward)
        for k, v in self.given.items():  # keep extra keys the run passed (num_memory_slots, ...)
            if k not in out and isinstance(v, (bool, int, float, str)):
                out[k] = v
        return out


ENC = "encoder/layers/EncoderBlock_0/"
DEC = "decoder/layers/DecoderBlock_0/"
ATTN_KEYS = ("q_proj/kernel", "k_proj/kernel", "v_proj/kernel", "out_proj/kernel", "q_norm/scale", "k_norm/scale")


def param_shapes(c):
    """{path: shape} of every parameter (reference section 2), in the pickle's (sorted) order."""
    d, hd, kv, Le, Ld = c.d_model, c.head_dim, c.kv_dim, c.num_encoder_layers, c.num_decoder_layers

    def attn(prefix, L):
        return {prefix + "q_proj/kernel": (L, d, d), prefix + "k_proj/kernel": (L, d, kv),
                prefix + "v_proj/kernel": (L, d, kv), prefix + "out_proj/kernel": (L, d, d),
                prefix + "q_norm/scale": (L, hd), prefix + "k_norm/scale": (L, hd)}

    s = {
        "embedding/embedding": (c.vocab_size, d),
        ENC + "attn_gate": (Le,), ENC + "ZCRMSNorm_0/scale": (Le, d), "encoder/final_norm/scale": (d,),
        DEC + "self_attn_gate": (Ld,), DEC + "cross_attn_gate": (Ld,),
        DEC + "ZCRMSNorm_0/scale": (Ld, d), DEC + "ZCRMSNorm_1/scale": (Ld, d), "decoder/ZCRMSNorm_0/scale": (d,),
        "contrastive_hidden/kernel": (d, c.hidden_dim), "contrastive_hidden/bias": (c.hidden_dim,),
        "contrastive_proj/kernel": (c.hidden_dim, c.contrastive_dim), "log_temp": (),
    }
    s.update(attn(ENC + "self_attn/", Le))
    s.update(attn(DEC + "self_attn/", Ld))
    s.update(attn(DEC + "cross_attn/", Ld))
    return dict(sorted(s.items()))


def is_kernel(path):
    """Dense kernels: fake-quantized by QAT, trained by Muon (the embedding is neither)."""
    return path.endswith("/kernel")


def count_params(c, contrastive=True):
    n = sum(int(np.prod(s)) for s in param_shapes(c).values())
    if not contrastive:
        n -= sum(int(np.prod(s)) for p, s in param_shapes(c).items() if p.startswith("contrastive") or p == "log_temp")
    return n


def init_params(c, seed):
    """Training-from-scratch initialization, the same law as the C++ trainer's init_params
    (docs/training.md): embedding N(0, 0.02), kernels N(0, 1/fan_in) (std 1/sqrt(in)), norm
    scales, gates and bias 0 (so 1 + scale = 1 and sigmoid(gate) = 0.5), log_temp = ln 0.07.
    numpy's PCG64, so the same seed gives the same start on every machine."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, shape in param_shapes(c).items():
        if path == "embedding/embedding":
            out[path] = rng.normal(0.0, 0.02, shape).astype(np.float32)
        elif is_kernel(path):
            out[path] = rng.normal(0.0, 1.0 / math.sqrt(shape[-2]), shape).astype(np.float32)
        elif path == "log_temp":
            out[path] = np.asarray(math.log(0.07), np.float32)
        else:
            out[path] = np.zeros(shape, np.float32)
    return out


def check_params(c, params):
    want = param_shapes(c)
    missing = [k for k in want if k not in params]
    extra = [k for k in params if k not in want]
    bad = [f"{k}: {tuple(np.shape(params[k]))} != {want[k]}" for k in want if k in params
           and tuple(np.shape(params[k])) != tuple(want[k])]
    if missing or extra or bad:
        raise ValueError(f"parameters do not match the config: missing {missing[:5]}, unexpected {extra[:5]}, "
                         f"shapes {bad[:5]}")


# ---- pickle I/O (the original layout) ---------------------------------------------------------------

_NUMPY2 = int(np.__version__.split(".")[0]) >= 2
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"), ("numpy", "ndarray"),
    ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Only the globals a numpy checkpoint needs (any numpy 1.x/2.x spelling); anything else is an
    error, so loading a checkpoint never runs code from it."""

    def find_class(self, module, name):
        canon = module.replace("numpy._core", "numpy.core")
        if (canon, name) in _ALLOWED:
            real = canon.replace("numpy.core", "numpy._core") if _NUMPY2 else canon
            return super().find_class(real, name)
        if module == "ml_dtypes" and name in ("bfloat16",):
            import ml_dtypes  # noqa: F401  (registers the dtype; only where it is installed)
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"checkpoint references {module}.{name}, which a Needle checkpoint never does")


def flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + k + "/"))
        else:
            out[prefix + k] = v
    return out


def unflatten(flat):
    tree = {}
    for path, v in flat.items():
        node = tree
        parts = path.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return tree


def load_pickle(path, dtype=np.float32):
    """-> (Config, flat params as `dtype`, the whole dict). float16 / float32 leaves (and bfloat16
    where ml_dtypes is installed)."""
    with open(path, "rb") as f:
        d = _SafeUnpickler(f).load()
    if not isinstance(d, dict) or "params" not in d:
        raise ValueError(f"{path}: not a Needle checkpoint (expected a dict with 'params')")
    c = Config(d.get("config") or {})
    params = {k: np.asarray(v).astype(dtype) for k, v in flatten(d["params"]).items()}
    check_params(c, params)
    return c, params, d


def save_pickle(path, c, params, extra=None):
    """Writes {"params": tree, "config": dict} (pickle protocol 4, float16 leaves) exactly as the
    original training code saves checkpoints; `extra` keys (e.g. pretrain_step) are added."""
    check_params(c, params)
    tree = unflatten({k: np.asarray(np.asarray(params[k], np.float32)).astype(np.float16)
                      for k in sorted(params)})
    d = {"params": tree, "config": c.to_pickle()}
    d.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=4)


# ---- the backend ---------------------------------------------------------------------------------


class Ops:
    """What differs between numpy and jax: a layer scan, dropout, stop_gradient, and how a
    matrix product is computed (compute dtype, precision). Defaults are numpy's."""

    def __init__(self, xp, dtype):
        self.xp = xp
        self.dtype = dtype  # activation / residual dtype (float32, or float64 for exact references)

    def dense(self, x, w):
        """matmul (with broadcasting over leading axes): every product of the model goes here."""
        return self.xp.matmul(x, w)

    def scan(self, f, carry, xs):
        """carry = f(carry, {k: v[i]}) for every i along the leading axis of xs (a dict)."""
        n = len(next(iter(xs.values())))
        for i in range(n):
            carry = f(carry, {k: v[i] for k, v in xs.items()})
        return carry

    def stop_gradient(self, x):
        return x

    def dropout(self, y, key, branch):
        return y

    def fold(self, key, i):
        return key


def numpy_ops(dtype=np.float32):
    return Ops(np, dtype)


# ---- layers --------------------------------------------------------------------------------------


def zc_rms_norm(ops, x, scale):
    """ZCRMSNorm over the last axis: (1 + scale) * x / sqrt(mean(x^2) + 1e-6), in f32 (or wider)."""
    xp = ops.xp
    ms = xp.mean(x * x, axis=-1, keepdims=True)
    return (1 + scale) * (x / xp.sqrt(ms + RMS_EPS))


def rope_tables(ops, pos, hd, theta):
    """cos/sin [..., L, 1, hd/2] for integer positions [..., L]. As the original: freqs and
    angle = pos * freq in float32, then cos / sin."""
    xp = ops.xp
    freqs = (1.0 / (theta ** (np.arange(0, hd, 2)[: hd // 2].astype(np.float64) / hd))).astype(np.float32)
    ang = pos.astype(np.float32)[..., None] * xp.asarray(freqs)
    return xp.cos(ang)[..., None, :].astype(ops.dtype), xp.sin(ang)[..., None, :].astype(ops.dtype)


def rope(ops, x, cs):
    """Half-split rotation of x [..., L, heads, hd]: [x1 cos - x2 sin, x2 cos + x1 sin]."""
    cos, sin = cs
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return ops.xp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def sigmoid(ops, g):
    return 1 / (1 + ops.xp.exp(-g))


def attention(ops, c, lp, prefix, x, kv_in, mask, rope_q=None, rope_k=None):
    """One attention block. x [B, Lq, d] (normed), kv_in [B, Lk, d]; mask [B, Lq, Lk] (True = may
    attend). q = x Wq, k = kv Wk, v = kv Wv; q_norm / k_norm (ZCRMSNorm over head_dim) right after
    projection; RoPE (self-attention only); query head h reads kv head h // (H / Hkv); scores
    q.k / sqrt(hd); masked scores = the lowest finite value; softmax; weighted sum; out_proj."""
    xp = ops.xp
    B, Lq, _ = x.shape
    Lk = kv_in.shape[1]
    H, Hkv, hd = c.num_heads, c.num_kv_heads, c.head_dim
    G = H // Hkv
    q = ops.dense(x, lp[prefix + "q_proj/kernel"]).reshape(B, Lq, H, hd)
    k = ops.dense(kv_in, lp[prefix + "k_proj/kernel"]).reshape(B, Lk, Hkv, hd)
    v = ops.dense(kv_in, lp[prefix + "v_proj/kernel"]).reshape(B, Lk, Hkv, hd)
    q = zc_rms_norm(ops, q, lp[prefix + "q_norm/scale"])
    k = zc_rms_norm(ops, k, lp[prefix + "k_norm/scale"])
    if rope_q is not None:
        q = rope(ops, q, rope_q)
        k = rope(ops, k, rope_k)
    # [B, Hkv, G, Lq, hd] x [B, Hkv, 1, hd, Lk]: query head h = kv * G + g reads kv head h // G.
    q = xp.transpose(q.reshape(B, Lq, Hkv, G, hd), (0, 2, 3, 1, 4))
    s = ops.dense(q, xp.transpose(k, (0, 2, 3, 1))[:, :, None]).astype(ops.dtype) / math.sqrt(hd)
    s = xp.where(mask[:, None, None, :, :], s, np.finfo(np.float32).min)
    m = ops.stop_gradient(xp.max(s, axis=-1, keepdims=True))
    e = xp.exp(s - m)
    p = e / xp.sum(e, axis=-1, keepdims=True)
    o = ops.dense(p, xp.transpose(v, (0, 2, 1, 3))[:, :, None])  # [B, Hkv, G, Lq, hd]
    o = xp.transpose(o, (0, 3, 1, 2, 4)).reshape(B, Lq, H * hd).astype(ops.dtype)
    return ops.dense(o, lp[prefix + "out_proj/kernel"]).astype(ops.dtype)


def layer_slice(params, prefix):
    """The stacked parameters under `prefix`, keyed by the rest of their path (scan's xs)."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def embed(ops, c, params, tokens):
    E = params["embedding/embedding"]
    x = ops.xp.take(E, tokens, axis=0).astype(ops.dtype)
    return x * np.asarray(np.sqrt(np.float32(c.d_model)), ops.dtype)


def encode(ops, c, params, tokens, seg, pos, key=None):
    """Encoder: tokens / seg / pos [B, L] (seg 0 = padding; several segments in a row are packed
    examples that do not see each other; pos restarts at 0 in each). -> final-normed [B, L, d].
    A query attends to keys of its own segment that are not padding; with one segment per row that
    is the original's key-padding mask."""
    mask = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
    cs = rope_tables(ops, pos, c.head_dim, c.rope_theta)
    x = embed(ops, c, params, tokens)
    xs = layer_slice(params, ENC)
    xs["_layer"] = np.arange(c.num_encoder_layers)

    def body(x, lp):
        h = zc_rms_norm(ops, x, lp["ZCRMSNorm_0/scale"])
        y = attention(ops, c, lp, "self_attn/", h, h, mask, cs, cs)
        k = ops.fold(key, lp["_layer"])
        return x + sigmoid(ops, lp["attn_gate"]) * ops.dropout(y, k, 0)

    x = ops.scan(body, x, xs)
    return zc_rms_norm(ops, x, params["encoder/final_norm/scale"])


def decode(ops, c, params, enc_out, enc_seg, tokens, seg, pos, key=None):
    """Decoder (teacher forcing) -> final-normed hidden states [B, Ld, d]. Self-attention: causal
    within a segment; cross-attention: the encoder positions of the same segment (so padded
    encoder positions are masked); RoPE on self-attention only."""
    xp = ops.xp
    L = tokens.shape[1]
    causal = np.tril(np.ones((L, L), dtype=bool))
    self_mask = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0) & xp.asarray(causal)[None]
    cross_mask = (seg[:, :, None] == enc_seg[:, None, :]) & (enc_seg[:, None, :] > 0)
    cs = rope_tables(ops, pos, c.head_dim, c.rope_theta)
    x = embed(ops, c, params, tokens)
    xs = layer_slice(params, DEC)
    xs["_layer"] = np.arange(c.num_decoder_layers)

    def body(x, lp):
        k = ops.fold(key, lp["_layer"])
        h = zc_rms_norm(ops, x, lp["ZCRMSNorm_0/scale"])
        y = attention(ops, c, lp, "self_attn/", h, h, self_mask, cs, cs)
        x = x + sigmoid(ops, lp["self_attn_gate"]) * ops.dropout(y, k, 1)
        h = zc_rms_norm(ops, x, lp["ZCRMSNorm_1/scale"])
        y = attention(ops, c, lp, "cross_attn/", h, enc_out, cross_mask)
        return x + sigmoid(ops, lp["cross_attn_gate"]) * ops.dropout(y, k, 2)

    x = ops.scan(body, x, xs)
    return zc_rms_norm(ops, x, params["decoder/ZCRMSNorm_0/scale"])


def logits_of(ops, params, h):
    """Tied output head: logits = h @ embedding^T."""
    return ops.dense(h, params["embedding/embedding"].T).astype(ops.dtype)


def contrastive_embedding(ops, c, params, tokens, key=None):
    """Tool-retrieval head on a padded batch [B, L] (pad id = padding): mean-pool the encoder
    output over non-pad positions -> Dense(d/4) + bias -> ReLU -> Dense(contrastive_dim) ->
    x / sqrt(sum x^2 + 1e-12)."""
    xp = ops.xp
    valid = tokens != c.pad_token_id
    seg = valid.astype(np.int32)
    pos = xp.broadcast_to(xp.arange(tokens.shape[1], dtype=np.int32)[None], tokens.shape)
    h = encode(ops, c, params, tokens, seg, pos, key)
    vf = valid.astype(ops.dtype)[..., None]
    n = xp.maximum(xp.sum(vf, axis=1), 1)
    pooled = xp.sum(h * vf, axis=1) / n
    hid = ops.dense(pooled, params["contrastive_hidden/kernel"]) + params["contrastive_hidden/bias"]
    hid = xp.maximum(hid, 0)
    out = ops.dense(hid, params["contrastive_proj/kernel"]).astype(ops.dtype)
    return out / xp.sqrt(xp.sum(out * out, axis=-1, keepdims=True) + 1e-12)


# ---- losses --------------------------------------------------------------------------------------


def logsumexp(ops, x):
    xp = ops.xp
    m = ops.stop_gradient(xp.max(x, axis=-1, keepdims=True))
    return (m + xp.log(xp.sum(xp.exp(x - m), axis=-1, keepdims=True)))[..., 0]


def token_losses(ops, c, params, batch, key=None):
    """Teacher-forced forward of a (packed) batch -> (ce_t, lse_t, mask_t), each [B, Ld].
    batch: enc_tokens/enc_seg/enc_pos [B, Le], dec_in/dec_out/dec_seg/dec_pos [B, Ld]."""
    xp = ops.xp
    k_enc = ops.fold(key, 1000) if key is not None else None
    k_dec = ops.fold(key, 2000) if key is not None else None
    enc = encode(ops, c, params, batch["enc_tokens"], batch["enc_seg"], batch["enc_pos"], k_enc)
    h = decode(ops, c, params, enc, batch["enc_seg"], batch["dec_in"], batch["dec_seg"], batch["dec_pos"], k_dec)
    logits = logits_of(ops, params, h)
    lse = logsumexp(ops, logits)
    tgt = xp.take_along_axis(logits, batch["dec_out"][..., None].astype(np.int32), axis=-1)[..., 0]
    m = (batch["dec_seg"] > 0).astype(ops.dtype)
    return lse - tgt, lse, m


def text_loss(ops, c, params, batch, key=None, z_coef=Z_LOSS, class_weights=CLASS_WEIGHTS):
    """The reference training loss (section 5): ce + z, with
    ce = sum(CE_t * w[class_t] * m_t) / max(sum m_t, 1) and z = z_coef * sum(lse_t^2 m_t) / max(sum m_t, 1)
    (z averaged over non-pad positions, as reference section 5 and the grads_tiny fixture define it).
    Returns (loss, {"ce", "z", "tokens", "ce_plain_sum"}); ce_plain_sum = sum of unweighted CE."""
    xp = ops.xp
    ce_t, lse, m = token_losses(ops, c, params, batch, key)
    w = xp.asarray(np.asarray(class_weights, np.float32)).astype(ops.dtype)[batch["dec_cls"]]
    n = xp.maximum(xp.sum(m), 1)
    ce = xp.sum(ce_t * w * m) / n
    z = z_coef * xp.sum(lse * lse * m) / n
    return ce + z, {"ce": ce, "z": z, "tokens": xp.sum(m), "ce_plain_sum": xp.sum(ce_t * m)}


def clip_loss(ops, c, params, query_tokens, tool_tokens, key=None):
    """Symmetric CLIP loss on (query i, tool i) pairs: temp = exp(clip(log_temp, -ln 100, ln 100)),
    logits = q t^T / temp, (mean row-wise CE + mean column-wise CE) / 2, diagonal targets."""
    xp = ops.xp
    q = contrastive_embedding(ops, c, params, query_tokens, ops.fold(key, 3000) if key is not None else None)
    t = contrastive_embedding(ops, c, params, tool_tokens, ops.fold(key, 4000) if key is not None else None)
    temp = xp.exp(xp.clip(params["log_temp"], -math.log(100.0), math.log(100.0)))
    logits = ops.dense(q, t.T) / temp
    n = logits.shape[0]
    eye = xp.asarray(np.eye(n, dtype=bool))
    diag = xp.sum(xp.where(eye, logits, 0), axis=-1)
    rows = logsumexp(ops, logits) - diag
    cols = logsumexp(ops, logits.T) - diag
    return (xp.mean(rows) + xp.mean(cols)) / 2


# ---- INT4 fake quantization (reference section 3) -----------------------------------------------------


def fake_quant(xp, w, group=32):
    """Groups of `group` consecutive elements along the input axis (axis -2 of (..., in, out)), per
    output column: scale = max|w| / 7 floored at 1e-8, q = clip(round_half_even(w / scale), -8, 7),
    w' = q * scale. A column shorter than a group is one group; a partial last group (in not a
    multiple of 32) is its own group, as the C++ quantizer. Computed in float32 whatever the input
    dtype."""
    n_in = w.shape[-2]
    g = n_in if n_in < group else group
    pad = (-n_in) % g
    lead = w.shape[:-2]
    if pad:
        w = xp.concatenate([w, xp.zeros(lead + (pad, w.shape[-1]), w.dtype)], axis=-2)
    wg = w.reshape(lead + ((n_in + pad) // g, g, w.shape[-1]))
    # In float32 exactly as the original evaluates it (and nk::quantize_row_q4): scale = amax * (1/7),
    # q = round(w * (1/scale)); dividing instead moves a few values across a rounding boundary.
    f32 = np.float32
    scale = xp.maximum(xp.max(xp.abs(wg), axis=-2, keepdims=True).astype(f32) * f32(1.0 / 7.0), f32(1e-8))
    q = xp.clip(xp.round(wg.astype(f32) * (f32(1.0) / scale)), -8, 7)
    out = (q * scale).astype(w.dtype).reshape(lead + (n_in + pad, w.shape[-1]))
    return out[..., :n_in, :] if pad else out


def fake_quant_params(xp, params):
    return {k: (fake_quant(xp, v) if is_kernel(k) else v) for k, v in params.items()}


# ---- batches -------------------------------------------------------------------------------------


def single_batch(enc_tokens, dec_in, dec_out=None, dec_cls=None, enc_lens=None, dec_lens=None):
    """A padded batch with one example per row (seg 1 on the first *_lens tokens, 0 after), as the
    original builds it. Arrays may be [L] (one example) or [B, L]."""
    enc_tokens = np.atleast_2d(np.asarray(enc_tokens, np.int32))
    dec_in = np.atleast_2d(np.asarray(dec_in, np.int32))
    B, Le = enc_tokens.shape
    Ld = dec_in.shape[1]
    el = np.full(B, Le) if enc_lens is None else np.asarray(enc_lens)
    dl = np.full(B, Ld) if dec_lens is None else np.asarray(dec_lens)
    enc_seg = (np.arange(Le)[None] < el[:, None]).astype(np.int32)
    dec_seg = (np.arange(Ld)[None] < dl[:, None]).astype(np.int32)
    pos_e = np.broadcast_to(np.arange(Le, dtype=np.int32), (B, Le)).copy()
    pos_d = np.broadcast_to(np.arange(Ld, dtype=np.int32), (B, Ld)).copy()
    out = {"enc_tokens": enc_tokens, "enc_seg": enc_seg, "enc_pos": pos_e, "dec_in": dec_in, "dec_seg": dec_seg,
           "dec_pos": pos_d}
    out["dec_out"] = np.zeros_like(dec_in) if dec_out is None else np.atleast_2d(np.asarray(dec_out, np.int32))
    out["dec_cls"] = np.zeros_like(dec_in) if dec_cls is None else np.atleast_2d(np.asarray(dec_cls, np.int32))
    return out


def forward_logits(ops, c, params, batch):
    """(encoder output [B, Le, d], logits [B, Ld, V]) for a batch (no dropout)."""
    enc = encode(ops, c, params, batch["enc_tokens"], batch["enc_seg"], batch["enc_pos"])
    h = decode(ops, c, params, enc, batch["enc_seg"], batch["dec_in"], batch["dec_seg"], batch["dec_pos"])
    return enc, logits_of(ops, params, h)


if __name__ == "__main__":
    sys.exit("needle_model.py is a module (see train_jax.py, parity.py)")
