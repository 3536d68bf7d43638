"""Smoke test for ``gpu_check.sh``: a few hrarray reductions on the GPU against the CPU.

A small ragged array (300 segments, every 7th empty), 1-D and (n, 3) float32, as CuPy
arrays (when CuPy imports) and as numba device arrays; sum, max and argmax on each, compared
with hrarray's CPU result on the same data, twice (the first call launches through numba,
the second through hrarray's fast launch where it is on).  Prints one line per check and
its seconds (the first call's include compilation); exits non-zero at the first wrong or
raising call, so the check script can stop before spending a lease's minutes on steps that
would fail alike.
Under ``NUMBA_ENABLE_CUDASIM=1`` it runs on the simulator (numba arrays only).
"""

import time

import numpy as np
from numba import cuda

import hrarray as hr


def converters():
    out = []
    try:
        import cupy as cp

        out.append(("cupy", cp.asarray))
    except Exception as e:  # the numba path still says whether the kernels work
        print(f"smoke: cupy not importable ({type(e).__name__}: {e}); numba arrays only")
    out.append(("numba", cuda.to_device))
    return out


def host(a):
    if hasattr(a, "get"):
        return a.get()
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    return np.asarray(a)


def main() -> None:
    rng = np.random.default_rng(0)
    lens = rng.integers(0, 40, 300)
    lens[::7] = 0
    offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    v = rng.standard_normal((int(offs[-1]), 3)).astype(np.float32)
    for name, conv in converters():
        for vv in (np.ascontiguousarray(v[:, 0]), v):
            x_cpu = hr.RaggedArray(vv, offs)
            x_gpu = hr.RaggedArray(conv(vv), conv(offs))
            for op in ("sum", "max", "argmax"):
                c = getattr(x_cpu, op)()
                # the first call launches through numba (and compiles); the second
                # through hrarray's fast launch, where it is on
                for call in ("first", "second"):
                    t = time.perf_counter()
                    g = host(getattr(x_gpu, op)())
                    dt = time.perf_counter() - t
                    if op == "sum":
                        ok = g.shape == c.shape and np.allclose(g, c, rtol=1e-5, atol=1e-5)
                    else:
                        ok = g.shape == c.shape and np.array_equal(g, c, equal_nan=op == "max")
                    print(f"smoke {name} {op} {vv.ndim}-D, {call} call: "
                          f"{'ok' if ok else 'WRONG'} ({dt:.3f} s)", flush=True)
                    if not ok:
                        raise SystemExit(f"smoke {name} {op} {vv.ndim}-D, {call} call: "
                                         f"GPU {g[:4]} != CPU {c[:4]}")
    from hrarray._kernels import cuda as kc

    print(f"smoke ok (fast launch {'on' if kc.FAST_LAUNCH else 'off'})")


if __name__ == "__main__":
    main()
