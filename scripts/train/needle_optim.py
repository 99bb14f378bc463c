"""The reference optimizer (needle-reference.md section 5; docs/training.md "Optimizer"), written
against an array namespace like needle_model.py, on flat parameter dicts:

- global-norm clipping at 1.0 (optax.clip_by_global_norm: scale by 1/norm when norm > 1);
- Muon on every Dense kernel, one 2-D matrix per layer (stacked kernels are batched over the
  layer axis): m = mu m + (1-mu) g; Nesterov u = mu m + (1-mu) g; O = NS5(u / (||u||_F + 1e-7)),
  X <- a X + (b A + c A^2) X with A = X X^T, (a, b, c) = (3.4445, -4.7750, 2.0315), on the wide
  orientation; p <- p (1 - lr wd) - lr sqrt(max(1, out/in)) O; mu 0.95, wd 0.01, peak lr 0.02;
- AdamW (optax.adamw) on everything else: b1 0.9, b2 0.95, eps 1e-8, wd 0, bias-corrected;
- schedule (multiplies both learning rates): linear warmup from 0 over floor(5%) of the steps,
  constant, cosine decay over the last floor(5%) to 0.05 x peak.
"""
import math

import numpy as np

import needle_model as M

NS_COEFFS = (3.4445, -4.7750, 2.0315)


class Hyper:
    def __init__(self, muon=True, muon_lr=0.02, adam_lr=3e-5, mu=0.95, muon_wd=0.01, b1=0.9, b2=0.95, eps=1e-8,
                 adam_wd=0.0, clip=1.0, ns_steps=5):
        self.muon, self.muon_lr, self.adam_lr, self.mu, self.muon_wd = muon, muon_lr, adam_lr, mu, muon_wd
        self.b1, self.b2, self.eps, self.adam_wd, self.clip, self.ns_steps = b1, b2, eps, adam_wd, clip, ns_steps

    def to_dict(self):
        return dict(self.__dict__)


def schedule(step, total, warmup_frac=0.05, decay_frac=0.05, final=0.05):
    """Learning-rate multiplier at `step` (0-based) of `total` (docs/training.md "Schedule")."""
    W = int(math.floor(warmup_frac * total))
    D = int(math.floor(decay_frac * total))
    if W > 0 and step < W:
        return step / W
    if D > 0 and step >= total - D:
        t = min(step - (total - D), D)
        return final + (1 - final) * (1 + math.cos(math.pi * t / D)) / 2
    return 1.0


def is_muon(path, hp):
    return hp.muon and M.is_kernel(path)


def init_state(params, hp):
    """{"count": 0, "m": first moments (all), "v": second moments (AdamW tensors only)} as numpy."""
    m = {k: np.zeros(np.shape(v), np.float32) for k, v in params.items()}
    v = {k: np.zeros(np.shape(x), np.float32) for k, x in params.items() if not is_muon(k, hp)}
    return {"count": np.zeros((), np.int32), "m": m, "v": v}


def global_norm(xp, grads):
    return xp.sqrt(sum(xp.sum(g.astype(np.float32) ** 2) for g in grads.values()))


def clip_by_global_norm(xp, grads, max_norm):
    n = global_norm(xp, grads)
    scale = xp.where(n > max_norm, max_norm / xp.maximum(n, 1e-30), 1.0).astype(np.float32)
    return {k: g * scale for k, g in grads.items()}, n


def newton_schulz(xp, G, steps=5, coeffs=NS_COEFFS, eps=1e-7):
    """Orthogonalizes the last two axes of G (any leading batch axes)."""
    a, b, c = coeffs
    tall = G.shape[-2] > G.shape[-1]
    X = xp.swapaxes(G, -1, -2) if tall else G
    X = X / (xp.sqrt(xp.sum(X * X, axis=(-2, -1), keepdims=True)) + eps)
    for _ in range(steps):
        A = xp.matmul(X, xp.swapaxes(X, -1, -2))
        B = b * A + c * xp.matmul(A, A)
        X = a * X + xp.matmul(B, X)
    return xp.swapaxes(X, -1, -2) if tall else X


def muon_factor(shape):
    return math.sqrt(max(1.0, shape[-1] / shape[-2]))


def apply(xp, params, grads, state, lr_scale, hp):
    """One optimizer step on clipped gradients -> (params, state). lr_scale = schedule(step)."""
    count = state["count"] + 1
    t = count.astype(np.float32)
    bc1 = 1 - hp.b1 ** t
    bc2 = 1 - hp.b2 ** t
    new_p, new_m, new_v = {}, {}, {}
    for k, p in params.items():
        g = grads[k].astype(np.float32)
        m = state["m"][k]
        if is_muon(k, hp):
            lr = hp.muon_lr * lr_scale
            m = hp.mu * m + (1 - hp.mu) * g
            u = hp.mu * m + (1 - hp.mu) * g
            o = newton_schulz(xp, u, hp.ns_steps)
            new_p[k] = p * (1 - lr * hp.muon_wd) - (lr * muon_factor(p.shape)) * o
        else:
            lr = hp.adam_lr * lr_scale
            v = state["v"][k]
            m = hp.b1 * m + (1 - hp.b1) * g
            v = hp.b2 * v + (1 - hp.b2) * g * g
            upd = (m / bc1) / (xp.sqrt(v / bc2) + hp.eps) + hp.adam_wd * p
            new_p[k] = p - lr * upd
            new_v[k] = v
        new_m[k] = m
    return new_p, {"count": count, "m": new_m, "v": new_v}
