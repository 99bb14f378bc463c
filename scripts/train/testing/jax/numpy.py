import numpy as _np
globals().update({k: getattr(_np, k) for k in dir(_np) if not k.startswith("__")})
bfloat16 = _np.float32
def matmul(a, b, precision=None, preferred_element_type=None):
    return _np.matmul(a, b)
def asarray(x, dtype=None): return _np.asarray(x, dtype)
