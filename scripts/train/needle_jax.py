"""JAX backend for needle_model.py / needle_optim.py: the Ops that differ from numpy (lax.scan over
the stacked layers, dropout from jax.random, stop_gradient, compute dtype and matmul precision),
and the jitted training / evaluation steps. Imported only where JAX is installed (the GPU
machine); the model and optimizer math itself lives in the numpy-testable modules.
"""
import jax
import jax.numpy as jnp
import numpy as np

import needle_model as M
import needle_optim as O

COMPUTE = {
    # name: (matmul input dtype, lax precision). Activations, norms, softmax, losses stay float32.
    "bf16": (jnp.bfloat16, jax.lax.Precision.DEFAULT),   # the original's dtype "bfloat16"
    "tf32": (jnp.float32, jax.lax.Precision.DEFAULT),    # float32 storage, TF32 tensor cores on GPU
    "f32": (jnp.float32, jax.lax.Precision.HIGHEST),     # true float32 (parity checks)
}


class JaxOps(M.Ops):
    def __init__(self, compute="bf16", dropout=0.0, remat=False):
        super().__init__(jnp, np.float32)
        self.cdt, self.precision = COMPUTE[compute]
        self.rate = float(dropout)
        self.remat = remat

    def dense(self, x, w):
        return jnp.matmul(x.astype(self.cdt), w.astype(self.cdt), precision=self.precision,
                          preferred_element_type=jnp.float32)

    def scan(self, f, carry, xs):
        body = jax.checkpoint(f) if self.remat else f
        xs = {k: jnp.asarray(v) for k, v in xs.items()}
        return jax.lax.scan(lambda c, x: (body(c, x), None), carry, xs)[0]

    def stop_gradient(self, x):
        return jax.lax.stop_gradient(x)

    def fold(self, key, i):
        return None if key is None else jax.random.fold_in(key, i)

    def dropout(self, y, key, branch):
        """Dropout on a residual branch: keep with probability 1 - rate, scale by 1 / (1 - rate)."""
        if key is None or self.rate <= 0:
            return y
        keep = jax.random.bernoulli(jax.random.fold_in(key, branch), 1.0 - self.rate, y.shape)
        return jnp.where(keep, y / (1.0 - self.rate), 0.0).astype(y.dtype)


def qat_params(params, qat):
    """Straight-through INT4 fake quantization of every kernel when qat == 1 (a traced 0/1 float, so
    QAT steps share the compiled step): forward sees fq(w), the gradient flows to w unchanged."""
    out = {}
    for k, v in params.items():
        if M.is_kernel(k):
            out[k] = v + qat * jax.lax.stop_gradient(M.fake_quant(jnp, v) - v)
        else:
            out[k] = v
    return out


def make_train_step(c, hp, ops, z_coef=M.Z_LOSS, class_weights=M.CLASS_WEIGHTS, clip_weight=0.1):
    """-> (step, clip_step): jitted (params, opt_state, batch, key, qat, lr_scale[, cq, ct]) ->
    (params, opt_state, metrics). clip_step adds clip_weight * CLIP loss on (cq, ct)."""

    def loss_fn(params, batch, key, qat, cq=None, ct=None):
        p = qat_params(params, qat)
        loss, aux = M.text_loss(ops, c, p, batch, key, z_coef, class_weights)
        aux = dict(aux, text=loss)
        if cq is not None:
            cl = M.clip_loss(ops, c, p, cq, ct, jax.random.fold_in(key, 7))
            loss = loss + clip_weight * cl
            aux["clip"] = cl
        return loss, aux

    def step(params, opt_state, batch, key, qat, lr_scale, cq=None, ct=None):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key, qat, cq, ct)
        grads, gnorm = O.clip_by_global_norm(jnp, grads, hp.clip)
        params, opt_state = O.apply(jnp, params, grads, opt_state, lr_scale, hp)
        return params, opt_state, dict(aux, loss=loss, grad_norm=gnorm)

    text_step = jax.jit(lambda p, s, b, k, q, lr: step(p, s, b, k, q, lr), donate_argnums=(0, 1))
    clip_step = jax.jit(step, donate_argnums=(0, 1))
    return text_step, clip_step


def make_eval_step(c, ops, z_coef=M.Z_LOSS, class_weights=M.CLASS_WEIGHTS):
    """Jitted (params, batch) -> (sum of plain CE, target tokens, weighted text loss) without
    dropout or QAT: the numbers needle-eval --loss reports (mean CE per target token)."""

    def ev(params, batch):
        loss, aux = M.text_loss(ops, c, params, batch, None, z_coef, class_weights)
        return aux["ce_plain_sum"], aux["tokens"], loss * jnp.maximum(aux["tokens"], 1)

    return jax.jit(ev)


def to_device(tree):
    return jax.tree_util.tree_map(jnp.asarray, tree)


def to_numpy(tree):
    return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), tree)
