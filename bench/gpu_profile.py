"""Where a CUDA reduction's time goes, on a GPU (a diagnosis script, not the benchmark).

``python3 bench/gpu_profile.py``: for a few 1e8-float32 cases (CuPy data made on the device)
prints, per case, the event-timed median of ``x.sum()`` and ``x.max()``, the wall time per
call, and each kernel launch's own event time (every launch of one call bracketed by events:
synchronising, for the split only); then each compiled kernel's registers, shared and local
memory per thread.  ``--once``: one warm call per case (for ``ncu``).  ``--cases`` picks
cases (``uniform2dD``: rows of ``D`` columns, e.g. ``uniform2d768``); ``--row-lanes 256,64``
times each at those lanes across a row (``kc.ROW_LANES``).  Environment
``HRARRAY_CUDA_BLOCK`` / ``HRARRAY_CUDA_ITEMS`` select the schedule.
"""

import argparse
import statistics
import time

import cupy as cp
import numpy as np

import hrarray as hr
from hrarray._kernels import cuda as kc

N = 100_000_000
M = 64


def offsets_uniform(n, mean):
    k = n // mean
    return cp.asarray(np.linspace(0, n, k + 1).round().astype(np.int64))


def offsets_one_huge(n, nseg=100_000):
    rng = np.random.default_rng(1)
    small = rng.integers(0, 20, nseg - 1)
    big = n - int(small.sum())
    lens = np.concatenate([[big], small])
    return cp.asarray(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))


def offsets_tiny(n):
    rng = np.random.default_rng(2)
    lens = rng.integers(0, 5, n // 2)
    o = np.minimum(np.concatenate([[0], np.cumsum(lens)]), n).astype(np.int64)
    o[-1] = n
    return cp.asarray(o)


def make(case):
    v1 = cp.random.default_rng(0).standard_normal(N, dtype=cp.float32)
    if case == "uniform1d":
        return v1, offsets_uniform(N, 100)
    if case == "one_huge1d":
        return v1, offsets_one_huge(N)
    if case == "tiny1d":
        return v1, offsets_tiny(N)
    if case.startswith("uniform2d") and case != "uniform2d":  # uniform2d768: wide rows
        d = int(case.removeprefix("uniform2d"))
        return v1[: N // d * d].reshape(N // d, d), offsets_uniform(N // d, 100)
    v2 = v1.reshape(N // M, M)
    if case == "uniform2d":
        return v2, offsets_uniform(N // M, 100)
    if case == "one_huge2d":
        return v2, offsets_one_huge(N // M, 20_000)
    if case == "tiny2d":
        return v2, offsets_tiny(N // M)
    raise SystemExit(f"unknown case {case}")


def event_median(fn, reps=10):
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    ts, walls = [], []
    for _ in range(reps):
        cp.cuda.Device().synchronize()
        w = time.perf_counter()
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        walls.append(time.perf_counter() - w)
        ts.append(cp.cuda.get_elapsed_time(e0, e1) / 1e3)
    return statistics.median(ts), statistics.median(walls)


def split(fn):
    """Each launch's own event time in one call (launches synchronised)."""
    orig = kc.launch
    rows = []

    def timed(f, grid, block, stream, args):
        e0, e1 = cp.cuda.Event(), cp.cuda.Event()
        cp.cuda.Device().synchronize()
        e0.record()
        orig(f, grid, block, stream, args)
        e1.record()
        e1.synchronize()
        name = getattr(getattr(f, "py_func", None), "__name__", str(f))
        rows.append((name, grid, cp.cuda.get_elapsed_time(e0, e1) / 1e3))

    kc.launch = timed
    try:
        fn()
        cp.cuda.Device().synchronize()
    finally:
        kc.launch = orig
    return rows


def resources():
    seen = set()
    for k in list(kc._compiled.values()):
        for f in k.functions():
            for sig, ov in getattr(f, "overloads", {}).items():
                key = (f.py_func.__name__, str(sig)[:60])
                if key in seen:
                    continue
                seen.add(key)
                try:
                    print(f"  {f.py_func.__name__:10s} regs {ov.regs_per_thread:3d}  shared "
                          f"{ov.shared_mem_per_block:6d} B  local {ov.local_mem_per_thread:5d} B  "
                          f"max threads {ov.max_threads_per_block}")
                except Exception as e:
                    print(f"  {f.py_func.__name__}: {type(e).__name__}: {e}")


def sass_summary(path):
    """Instruction mix of each compiled reduce/fixup kernel's SASS (nvdisasm needed)."""
    import collections
    import re

    lines = []
    for k in list(kc._compiled.values()):
        for f in k.functions():
            name = f.py_func.__name__
            try:
                sass = f.inspect_sass()
            except Exception as e:
                print(f"  sass {name}: {type(e).__name__}: {str(e)[:100]}")
                continue
            texts = sass.values() if isinstance(sass, dict) else [sass]
            for text in texts:
                ops = collections.Counter()
                for ln in text.splitlines():
                    mm = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", ln)
                    if mm:
                        ops[mm.group(1)] += 1
                top = ", ".join(f"{o} {c}" for o, c in ops.most_common(18))
                print(f"  sass {name}: {sum(ops.values())} instructions: {top}")
                lines.append(f"// ===== {name}\n{text}")
    if path:
        with open(path, "w") as fh:
            fh.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--cases", default="uniform1d,one_huge1d,tiny1d,uniform2d,one_huge2d,tiny2d")
    ap.add_argument("--ops", default="sum,max")
    ap.add_argument("--row-lanes", default="",
                    help="comma list of kc.ROW_LANES values (lanes across a row) to time each "
                    "case at, in this process (a same-run A/B of the 2-D layout)")
    ap.add_argument("--sass", default="", help="write the kernels' SASS to this file and "
                    "print their instruction mix (after the cases ran)")
    ap.add_argument("--cprofile", action="store_true",
                    help="host-side profile of 50 uniform1d sums (top 25 by own time)")
    a = ap.parse_args()
    if a.cprofile:
        import cProfile
        import pstats

        from numba import cuda

        v, offs = make("uniform1d")
        x = hr.RaggedArray(v, offs)
        x.sum()
        cp.cuda.Device().synchronize()

        def host_us(fn, n=200):
            fn()
            cp.cuda.Device().synchronize()
            t = time.perf_counter()
            for _ in range(n):
                fn()
            dt = (time.perf_counter() - t) / n
            cp.cuda.Device().synchronize()
            return dt * 1e6

        ov = cuda.as_cuda_array(offs, sync=False)
        bi = cuda.device_array(1000, np.int64)
        part = kc._partition()
        def numba_launches(f):
            # the same call with every launch through numba's dispatcher
            def g():
                kc.FAST_LAUNCH = False
                try:
                    return f()
                finally:
                    kc.FAST_LAUNCH = fast
            return g

        fast = kc.FAST_LAUNCH
        for name in ("sum", "max", "argmax"):
            a = cp.asnumpy(getattr(x, name)())
            b = cp.asnumpy(numba_launches(getattr(x, name))())
            same = np.array_equal(a, b, equal_nan=True)
            print(f"x.{name}(): fast launch (on: {fast}) and numba launches agree: {same}")
        print("host us per call (no sync, no profiler):")
        for label, fn in (
            ("x.sum()", x.sum),
            ("x.sum(), numba launches", numba_launches(x.sum)),
            ("x.max()", x.max),
            ("x.max(), numba launches", numba_launches(x.max)),
            ("cuda.as_cuda_array(cupy)", lambda: cuda.as_cuda_array(offs, sync=False)),
            ("cupy.empty(1e6 f32)", lambda: cp.empty(1_000_000, np.float32)),
            ("numba launch, 3 args (partition)", lambda: part[4, 256, 0](ov, 2048, bi)),
            ("hrarray launch(), 3 args", lambda: kc.launch(part, 4, 256, 0, (ov, 2048, bi))),
        ):
            print(f"  {label:36s} {host_us(fn):8.1f}")
        pr = cProfile.Profile()
        t = time.perf_counter()
        pr.enable()
        for _ in range(50):
            x.sum()
        pr.disable()
        host_s = (time.perf_counter() - t) / 50
        cp.cuda.Device().synchronize()
        print(f"host time per sum call under cProfile: {host_s * 1e6:.0f} us")
        pstats.Stats(pr).sort_stats("tottime").print_stats(20)
        pstats.Stats(pr).sort_stats("cumulative").print_stats(45)
        return
    print(f"BLOCK {kc.BLOCK} ITEMS {kc.ITEMS} WARP {kc.WARP}", flush=True)
    for case in a.cases.split(","):
        v, o = make(case)
        x = hr.RaggedArray(v, o)
        gb = (v.nbytes + o.nbytes) / 1e9
        lanes = [int(k) for k in a.row_lanes.split(",") if k] or [kc.ROW_LANES]
        for op, rl in ((op, rl) for op in a.ops.split(",") for rl in lanes):
            kc.ROW_LANES = rl  # a runtime argument of the kernels: no recompile
            fn = getattr(x, op)
            t = time.perf_counter()
            fn()
            cp.cuda.Device().synchronize()
            first = time.perf_counter() - t
            if a.once:
                continue
            te, tw = event_median(fn)
            parts = " ".join(f"{n}{tuple(g) if isinstance(g, tuple) else (g,)}={s * 1e3:.3f}"
                             for n, g, s in split(fn))
            tag = f" lanes {rl}" if a.row_lanes else ""
            print(f"{case:11s} {op:4s}{tag} events {te * 1e3:7.3f} ms ({gb / te:6.0f} GB/s)  wall "
                  f"{tw * 1e3:7.3f} ms  first {first:5.2f} s | {parts}", flush=True)
        del x, v, o
        cp.get_default_memory_pool().free_all_blocks()
    if not a.once:
        resources()
    if a.sass:
        sass_summary(a.sass)


if __name__ == "__main__":
    main()
