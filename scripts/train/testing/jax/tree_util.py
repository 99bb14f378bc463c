def tree_map(f, t):
    if isinstance(t, dict): return {k: tree_map(f, v) for k, v in t.items()}
    return f(t)
