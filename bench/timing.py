"""Timers and rooflines.

CPU: the callable has already run once (warm-up: JIT compilation, first-touch
of its output); then it is timed with ``time.perf_counter`` over ``repeats``
calls with the garbage collector off, each result kept alive until its clock
stops (freeing a large output is not part of the call), and the MINIMUM is
reported (the median is kept too).  A per-method cap stops after at least
three calls once the cap is spent (after one, when the warm-up call alone was
longer than the cap: slow anchors on big inputs).

GPU: after the warm-up, a few synchronised wall-clock calls give the single
call latency; then CUDA events bracket batches of ``k`` back-to-back calls
(``k`` so that a batch lasts about 2 ms) and the MEDIAN over the batches,
divided by ``k``, is reported.  Events are recorded on CuPy's current stream
(the legacy default stream, which numba-cuda, torch, CuPy and cuda.compute
use unless told otherwise).  Each batch is also timed by the wall clock up to
a device-wide synchronise; if that is much longer than the events say, work
ran on another stream and the wall-clock time is reported instead (flagged).
"""

from __future__ import annotations

import gc
import math
import statistics
import time

import numpy as np


def time_cpu(fn, repeats: int, cap_s: float, min_reps: int = 3) -> dict:
    times: list[float] = []
    enabled = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    try:
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            r = fn()
            t1 = time.perf_counter()
            del r
            times.append(t1 - t0)
            if len(times) >= min_reps and t1 - start > cap_s:
                break
    finally:
        if enabled:
            gc.enable()
    return {"t_s": min(times), "t_median_s": statistics.median(times), "reps": len(times)}


def time_cpu_paired(fn, ref, repeats: int, cap_s: float, min_reps: int = 3) -> dict:
    """``time_cpu`` with a reference call (the roofline's flat read of the same
    buffer) timed between the calls of ``fn``: both minima then come from the
    same seconds of a machine whose memory bandwidth drifts (this VM's flat
    read moved between 21 and 62 GB/s across runs), so their ratio does not
    depend on when in the run the case came."""
    times: list[float] = []
    refs: list[float] = []
    enabled = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    try:
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            r = ref()
            t1 = time.perf_counter()
            del r
            refs.append(t1 - t0)
            t0 = time.perf_counter()
            r = fn()
            t1 = time.perf_counter()
            del r
            times.append(t1 - t0)
            if len(times) >= min_reps and t1 - start > cap_s:
                break
    finally:
        if enabled:
            gc.enable()
    return {
        "t_s": min(times),
        "t_median_s": statistics.median(times),
        "reps": len(times),
        "t_ref_s": min(refs),
    }


class CudaTimer:
    def __init__(self):
        import cupy as cp

        self.cp = cp
        self.e0 = cp.cuda.Event()
        self.e1 = cp.cuda.Event()

    def sync(self) -> None:
        self.cp.cuda.Device().synchronize()

    def wall(self, fn):
        self.sync()
        t0 = time.perf_counter()
        r = fn()
        self.sync()
        return r, time.perf_counter() - t0

    def time(self, fn, reps: int, cap_s: float, min_reps: int = 5) -> dict:
        lat = [self.wall(fn)[1] for _ in range(3)]
        t1 = min(lat)
        k = int(max(1, min(50, math.ceil(2e-3 / max(t1, 1e-6)))))
        ev: list[float] = []
        walls: list[float] = []
        start = time.perf_counter()
        while len(ev) < max(reps, 1):
            self.sync()
            w0 = time.perf_counter()
            self.e0.record()
            for _ in range(k):
                r = fn()
            self.e1.record()
            self.e1.synchronize()
            self.sync()
            walls.append((time.perf_counter() - w0) / k)
            del r
            ev.append(self.cp.cuda.get_elapsed_time(self.e0, self.e1) / 1e3 / k)
            if len(ev) >= min_reps and time.perf_counter() - start > cap_s:
                break
        t_ev = statistics.median(ev)
        t_wall = statistics.median(walls)
        out = {
            "t_s": t_ev,
            "t_min_s": min(ev),
            "t_wall_s": t_wall,
            "lat_s": statistics.median(lat),
            "reps": len(ev),
            "k": k,
        }
        if t_wall > 1.5 * t_ev + 50e-6:
            out["t_s"] = t_wall
            out["events_suspect"] = True
        return out


# ---------------------------------------------------------------------------- rooflines
_FLAT_SUM = None


def _flat_sum_kernel():
    """All-core Numba flat sum (fastmath: vectorised; accumulates in the input dtype)."""
    global _FLAT_SUM
    if _FLAT_SUM is None:
        import numba

        @numba.njit(parallel=True, fastmath=True, cache=True)
        def flat_sum(x, zero):
            acc = zero
            for i in numba.prange(x.shape[0]):
                acc += x[i]
            return acc

        _FLAT_SUM = flat_sum
    return _FLAT_SUM


def cpu_flat_read(values: np.ndarray):
    """The all-core Numba flat sum of ``values`` as a callable (compiled)."""
    flat = values.reshape(-1)
    kern = _flat_sum_kernel()
    zero = values.dtype.type(0)
    kern(flat, zero)
    return lambda: kern(flat, zero)


def cpu_roofline(values: np.ndarray, repeats: int, cap_s: float) -> dict:
    """GB/s of ``values.nbytes`` for each flat read; the roofline is their maximum."""
    flat = values.reshape(-1)
    nb = values.nbytes
    kern = _flat_sum_kernel()
    zero = values.dtype.type(0)
    fns = {"values.sum()": flat.sum}
    if values.ndim == 2:
        fns["values.sum(axis=0)"] = lambda: values.sum(axis=0)
    fns["numba parallel flat sum"] = lambda: kern(flat, zero)
    out = {}
    for name, fn in fns.items():
        fn()  # warm-up (compiles the numba kernel)
        out[name] = nb / time_cpu(fn, repeats, cap_s)["t_s"] / 1e9
    return out


def gpu_roofline(xv, timer: CudaTimer, reps: int, cap_s: float) -> dict:
    """``copy``: device-to-device copy counting bytes read + written; ``read``: flat CuPy sum."""
    cp = timer.cp
    nb = xv.nbytes
    y = cp.empty_like(xv)
    out = {}
    for name, fn, moved in (("copy", lambda: cp.copyto(y, xv), 2 * nb), ("read", xv.sum, nb)):
        fn()
        out[name] = moved / timer.time(fn, reps, cap_s)["t_s"] / 1e9
    return out
