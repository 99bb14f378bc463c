#!/usr/bin/env python3
"""Regenerates the pickle samples in this directory (run with numpy 1.x: /usr/bin/python3).

bad_*.pkl must be rejected by read_pickle_checkpoint; good_*.pkl must load and all hold
the same values (see tests/unit/pickle_test.cpp):
  params: w = arange(6).reshape(2,3)*0.5-1, v = arange(24).reshape(2,3,4)*0.25,
          b/c = [1.5, -2], t = 0.25 (0-d)
  config: n=3, name='x', f=2.5, flag=True, none=None, big=2**40;  extra: step=7
"""
import collections
import os
import pickle
import subprocess
import sys

import numpy as np

OUT = os.path.dirname(os.path.abspath(__file__))


def tree(dtype, fortran=False, ordered=False):
    w = (np.arange(6).reshape(2, 3) * 0.5 - 1).astype(dtype)
    v = (np.arange(24).reshape(2, 3, 4) * 0.25).astype(dtype)
    if fortran:
        w, v = np.asfortranarray(w), np.asfortranarray(v)
        assert not w.flags.c_contiguous and not v.flags.c_contiguous
    d = collections.OrderedDict if ordered else dict
    params = d(w=w, v=v, b=d(c=np.array([1.5, -2], dtype=dtype)), t=np.array(0.25, dtype=dtype))
    config = d(n=3, name="x", f=2.5, flag=True, none=None, big=2**40)
    if ordered:  # numpy scalars as config values
        config["n"] = np.int64(3)
        config["f"] = np.float32(2.5)
    return {"params": params, "config": config, "step": 7}


class Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def write(name, obj, protocol):
    with open(os.path.join(OUT, name), "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def main():
    write("good_p2_f16.pkl", tree(np.float16), 2)
    write("good_p3_f16.pkl", tree(np.float16), 3)
    write("good_p5_f32_fortran.pkl", tree(np.float32, fortran=True), 5)
    write("good_p4_bigendian_fortran.pkl", tree(np.dtype(">f4"), fortran=True), 4)
    write("good_p4_f64_ordered.pkl", tree(np.float64, ordered=True), 4)

    write("bad_os_system.pkl", {"params": Reduce(os.system, ("echo pwned",))}, 4)  # posix.system
    write("bad_eval_p2.pkl", {"params": Reduce(eval, ("1+1",))}, 2)  # __builtin__.eval
    write("bad_subprocess.pkl", {"params": Reduce(subprocess.Popen, (["true"],))}, 4)
    write("bad_object_array.pkl", {"params": {"w": np.array([1, "a"], dtype=object)}}, 4)
    write("bad_int_array.pkl", {"params": {"w": np.arange(4, dtype=np.int32)}}, 4)
    write("bad_no_params.pkl", {"config": {"n": 1}}, 4)
    write("bad_set.pkl", {"params": {}, "config": {"s": {1, 2}}}, 4)
    t = tree(np.float16)
    t["config"]["bad"] = [1, 2]
    write("bad_config_list.pkl", t, 4)


if __name__ == "__main__":
    sys.exit(main())
