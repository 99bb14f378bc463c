"""A numpy stand-in for the few parts of JAX that train_jax.py touches, so that its control flow
(prepare, packing, QAT/CLIP steps, evaluation, saving, exact and warm resume, export, assemble)
runs in CI where JAX is not installed (tests/cli/jax_parity.sh puts this folder on PYTHONPATH).
NOT a JAX: no tracing, no compilation, and gradients are zeros (the math is checked against the
original's fixtures by parity.py instead; parity.py --jax runs the real thing on the GPU)."""
import numpy as _np
from . import numpy, lax, random, tree_util  # noqa
__version__ = "fake-0"
class _Cfg:
    def update(self, *a): pass
config = _Cfg()
def devices(): return ["cpu-fake"]
def jit(f, donate_argnums=None, **kw): return f
def checkpoint(f): return f
def device_get(x): return x
def block_until_ready(x): return x
def value_and_grad(f, has_aux=False):
    def g(params, *a):
        out = f(params, *a)
        grads = {k: _np.zeros_like(v) for k, v in params.items()}
        return out, grads
    return g
def grad(f):
    return lambda p, *a: {k: _np.zeros_like(v) for k, v in p.items()}
