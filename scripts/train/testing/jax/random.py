import numpy as _np
def PRNGKey(s): return _np.array([0, s], _np.uint32)
def fold_in(k, i): return _np.array([int(k[1]), int(i)], _np.uint32)
def bernoulli(k, p, shape): return _np.random.default_rng(list(int(x) for x in k)).random(shape) < p
