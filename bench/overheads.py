"""Fixed costs around the kernels (``shared/WORKLOADS.md`` targets).

- ``call_overhead``: median wall time of ``hr.sum(x)`` for 10 segments of 10
  float64 values (after warm-up, many calls), beside ``np.add.reduceat`` on
  the same data for scale.
- ``import``: ``import hrarray`` in fresh interpreters (the best of three;
  the first run is also kept), that it compiled nothing
  (``hrarray._kernels.compiled_count() == 0``) and imported neither torch
  nor CuPy; ``import numpy`` / ``import numba`` alone for scale.
- ``first_call``: a fresh process imports hrarray, builds a RaggedArray and
  calls ``hr.sum`` once (then a 2-D float32 ``hr.max``), and says whether
  Numba got imported; run twice, the second run is reported (its disk cache
  is warm).
- ``cold_compile``: a fresh process with empty ``HRARRAY_CACHE_DIR`` and
  ``NUMBA_CACHE_DIR`` times the first and second call of each signature;
  first minus second is the compile time.  The first signature also pays
  Numba's one-time compiler start-up.
- ``memory``: tracemalloc peak above the baseline during one warm reduction
  (NumPy and Numba NRT allocations are traced), against the size of the
  values and of the output: a 2-D reduction should need O(nsegments x inner),
  not a copy of the values.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def _pkg_root(hr) -> str:
    return str(Path(hr.__file__).resolve().parent.parent)


def _child(code: str, hr, env_extra: dict | None = None, timeout: float = 300) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = _pkg_root(hr) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.update(env_extra or {})
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
    )
    if p.returncode != 0:
        return {"error": f"exit {p.returncode}: {p.stderr.strip()[-400:]}"}
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"unparsable child output: {p.stdout[-200:]!r} {p.stderr[-200:]!r}"}


_IMPORT = r"""
import json, sys, time
t0 = time.perf_counter()
import hrarray
t1 = time.perf_counter()
info = {"import_s": t1 - t0}
try:
    from hrarray import _kernels
    info["compiled_count"] = _kernels.compiled_count()
except Exception as e:
    info["compiled_count_error"] = repr(e)
mods = ("numba", "llvmlite", "cupy", "torch", "numba.cuda")
info["imported"] = {m: m in sys.modules for m in mods}
print(json.dumps(info))
"""

_IMPORT_OTHER = r"""
import json, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import numba
t2 = time.perf_counter()
print(json.dumps({"numpy_s": t1 - t0, "numba_after_numpy_s": t2 - t1}))
"""

_FIRST_CALL = r"""
import json, sys, time
t0 = time.perf_counter()
import hrarray as hr
import numpy as np
t1 = time.perf_counter()
x = hr.RaggedArray(np.arange(100, dtype=np.float64), np.arange(0, 101, 10))
t2 = time.perf_counter()
r = hr.sum(x)
t3 = time.perf_counter()
hr.sum(x)
t4 = time.perf_counter()
assert abs(float(r[0]) - 45.0) < 1e-9
# the embedding case: float32 rows, a 2-D max, after the first result
y = hr.RaggedArray(np.ones((100, 64), np.float32), np.arange(0, 101, 10))
t5 = time.perf_counter()
hr.max(y)
t6 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "construct_s": t2 - t1, "first_call_s": t3 - t2,
                  "second_call_s": t4 - t3, "to_first_result_s": t3 - t1,
                  "first_2d_max_s": t6 - t5, "numba_imported": "numba" in sys.modules,
                  "total_s": t3 - t0}))
"""

_COLD = r"""
import json, sys, time
import numpy as np
import hrarray as hr
sigs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else SIGS
out = []
def ragged(rows, ndim, dtype):
    v = (np.arange(rows * (1 if ndim == 1 else 4)) % 97).astype(dtype)
    v = v if ndim == 1 else v.reshape(rows, 4)
    return hr.RaggedArray(v, np.arange(0, rows + 1, 10))


def call(op, x):
    if op == "attention_pool":
        return hr.attention_pool(x, hr.RaggedArray(np.ones(len(x.leaf_values)), x.offsets))
    return getattr(hr, op)(x)


def timed(op, x):
    t0 = time.perf_counter(); call(op, x); t1 = time.perf_counter(); call(op, x)
    return t1 - t0, time.perf_counter() - t1


def count():
    try:
        from hrarray import _kernels
        return _kernels.compiled_count()
    except Exception:
        return None


for op, dtype, ndim in sigs:
    first, second = timed(op, ragged(100, ndim, dtype))
    row = {"op": op, "dtype": dtype, "ndim": ndim, "first_s": first, "second_s": second,
           "compile_s": first - second}
    c = count()
    if c is not None:
        row["compiled_count"] = c
    # then an input large enough to be cut into parallel chunks (2**20 scalars in
    # 1-D, 2**21 in 2-D): the kernels only that path uses
    first, second = timed(op, ragged(1 << 20 if ndim == 1 else 1 << 19, ndim, dtype))
    row["parallel_compile_s"] = first - second
    c2 = count()
    if c2 is not None:
        row["parallel_compiled"] = c2 - c
    out.append(row)
print(json.dumps(out))
"""


def call_overhead(hr, n_calls: int = 3000) -> dict:
    values = np.arange(100, dtype=np.float64)
    offsets = np.arange(0, 101, 10)
    x = hr.RaggedArray(values, offsets)
    for _ in range(20):
        hr.sum(x)

    def med(fn):
        ts = []
        for _ in range(n_calls):
            t0 = time.perf_counter_ns()
            fn()
            ts.append(time.perf_counter_ns() - t0)
        ts.sort()
        return statistics.median(ts) / 1e3, ts[int(0.9 * len(ts))] / 1e3

    hr_med, hr_p90 = med(lambda: hr.sum(x))
    m_med, _ = med(lambda: x.sum()) if hasattr(x, "sum") else (None, None)
    np_med, _ = med(lambda: np.add.reduceat(values, offsets[:-1]))
    c_med, _ = med(lambda: hr.RaggedArray(values, offsets))
    return {
        "hr.sum_median_us": hr_med,
        "hr.sum_p90_us": hr_p90,
        "x.sum()_median_us": m_med,
        "np.add.reduceat_median_us": np_med,
        "RaggedArray()_median_us": c_med,
        "calls": n_calls,
    }


def import_time(hr, runs: int = 3) -> dict:
    rows = [_child(_IMPORT, hr) for _ in range(runs)]
    good = [r for r in rows if "import_s" in r]
    out = {"runs": rows}
    if good:
        best = min(good, key=lambda r: r["import_s"])
        out.update(
            import_s=best["import_s"],
            first_run_import_s=good[0]["import_s"],
            compiled_count=best.get("compiled_count", best.get("compiled_count_error")),
            imported=best.get("imported"),
        )
    out["context"] = _child(_IMPORT_OTHER, hr)
    return out


_NJIT_MODULE = """
import numba


@numba.njit(cache=True)
def f(a):
    s = 0
    for i in range(a.shape[0] - 1):
        if a[i + 1] < a[i]:
            s += 1
    return s
"""

_NJIT_FIRST = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import numba_first_call_probe as m
t0 = time.perf_counter()
m.f(np.arange(10))
print(json.dumps({"first_call_s": time.perf_counter() - t0}))
"""


def first_call(hr) -> dict:
    """Time to the first result in a fresh process (second run: warm disk cache).

    The target metric is ``to_first_result_s``, everything after ``import
    hrarray``: building the first RaggedArray (its offsets check is a kernel)
    and the first ``hr.sum``. With the kernels' native entries cached
    (``hrarray._kernels.native``) neither imports Numba, which the child
    reports (``numba_imported``). For scale, the first call of a trivial
    disk-cached ``@numba.njit`` function in a fresh process (Numba's own
    dispatch start-up, which a Numba-dispatched library pays once).
    """
    first = _child(_FIRST_CALL, hr)
    second = _child(_FIRST_CALL, hr)
    with tempfile.TemporaryDirectory(prefix="hrbench-njit-") as tmp:
        Path(tmp, "numba_first_call_probe.py").write_text(_NJIT_MODULE)
        code = _NJIT_FIRST.replace("sys.argv[1]", repr(tmp))
        _child(code, hr, env_extra={"NUMBA_CACHE_DIR": os.path.join(tmp, "c")})
        njit = _child(code, hr, env_extra={"NUMBA_CACHE_DIR": os.path.join(tmp, "c")})
    return {"reported": second, "first_run": first, "plain_njit_cached_first_call": njit}


def cold_compile(hr, sigs: list[tuple[str, str, int]]) -> dict:
    with tempfile.TemporaryDirectory(prefix="hrbench-cold-") as tmp:
        env = {
            "HRARRAY_CACHE_DIR": os.path.join(tmp, "hr"),
            "NUMBA_CACHE_DIR": os.path.join(tmp, "numba"),
        }
        code = _COLD.replace("SIGS", repr([list(s) for s in sigs]))
        res = _child(code, hr, env_extra=env, timeout=900)
    return {"signatures": res} if isinstance(res, list) else res


MEMORY_CASES = [
    ("sum", "float32", 2),
    ("sum", "float64", 2),
    ("max", "float32", 2),
    ("mean", "float32", 2),
    ("sum", "float32", 1),
]
# every (op, dtype, ndim) the in-process and warm-cache steps call: the bench
# compiles them before timing anything (warm.py)
SIGNATURES_USED = [("sum", "float64", 1), ("max", "float32", 2), *MEMORY_CASES]
COLD_SIGNATURES_QUICK = [("sum", "float64", 1)]
COLD_SIGNATURES = [
    ("sum", "float64", 1),
    ("sum", "float32", 1),
    ("sum", "float64", 2),
    ("mean", "float32", 1),
    ("max", "float32", 1),
    ("argmax", "float32", 1),
    ("max", "float32", 2),
    ("argmax", "float32", 2),
    ("logsumexp", "float32", 1),
    ("softmax", "float32", 1),
    ("attention_pool", "float32", 1),
]


def memory(hr, rows: int = 200_000) -> list[dict]:
    """tracemalloc peak of warm reductions, against values and output sizes."""
    rng = np.random.default_rng(7)
    out = []
    for op, dtype, ndim in MEMORY_CASES:
        n = rows * 64
        lens = rng.poisson(100, size=n // 100 if ndim == 1 else rows // 100)
        total = n if ndim == 1 else rows
        lens = lens[np.cumsum(lens) <= total]
        offsets = np.zeros(len(lens) + 2, np.int64)
        np.cumsum(lens, out=offsets[1:-1])
        offsets[-1] = total
        values = rng.standard_normal(n, dtype=np.float32).astype(dtype)
        if ndim == 2:
            values = values.reshape(rows, 64)
        x = hr.RaggedArray(values, offsets)
        f = getattr(hr, op)
        f(x)  # warm: compilation allocates too
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            r = f(x)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        extra = peak - base
        nseg = len(offsets) - 1
        inner = 64 if ndim == 2 else 1
        out.append(
            {
                "op": op,
                "dtype": dtype,
                "ndim": ndim,
                "nsegments": nseg,
                "inner": inner,
                "values_bytes": int(values.nbytes),
                "output_bytes": int(np.asarray(r).nbytes),
                "peak_extra_bytes": int(extra),
                "extra_over_values": extra / values.nbytes,
                "extra_over_nseg_x_inner_x8": extra / (nseg * inner * 8),
            }
        )
        del r, x, values
    return out


def measure_all(hr, quick: bool = False, log=print, done: dict | None = None) -> dict:
    """Every step below; ``done``: steps already measured (by name), kept as given."""
    res: dict = {}
    steps = [
        ("call_overhead", lambda: call_overhead(hr, 1000 if quick else 5000)),
        ("import", lambda: import_time(hr, 2 if quick else 3)),
        ("first_call", lambda: first_call(hr)),
        (
            "cold_compile",
            lambda: cold_compile(hr, COLD_SIGNATURES_QUICK if quick else COLD_SIGNATURES),
        ),
        ("memory", lambda: memory(hr, 50_000 if quick else 200_000)),
    ]
    for name, fn in steps:
        if done and name in done:
            res[name] = done[name]
            log(f"overheads: {name} measured during the warm-up")
            continue
        t = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as e:
            res[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        log(f"overheads: {name} done in {time.perf_counter() - t:.1f} s")
    return res
