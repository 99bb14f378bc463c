class Precision:
    DEFAULT = 0; HIGHEST = 2
def stop_gradient(x): return x
def scan(f, carry, xs):
    n = len(next(iter(xs.values())))
    for i in range(n):
        carry, _ = f(carry, {k: v[i] for k, v in xs.items()})
    return carry, None
