"""GPU-only behaviour the simulator cannot show: streams, host syncs, threads, contexts.

Run on a machine with an NVIDIA GPU and CuPy (``bench/gpu_check.sh`` step 4e runs it):

    python bench/gpu_probes.py            # every probe; one PASS / FAIL / INFO line each

Each probe checks one promise of docs/backends.md that only real streams can break:

- ``stream``: a reduction queued behind pending work on a non-blocking CuPy stream reads
  the values that work wrote (kernels run on the values' stream);
- ``nosync``: that reduction returns before the pending work finishes (a depth-1 reduction
  never synchronises the host);
- ``threads``: threads reducing their own arrays concurrently under per-thread default
  streams (``CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1``, a subprocess) each get their own
  results (a scratch buffer shared across threads would mix them);
- ``fast``: the fast launch (``hrarray._kernels.cuda``) is in use after a call;
- ``torch``: a PyTorch tensor written on a side stream (INFO only: documented as needing a
  synchronisation, since its interface names no stream);
- ``reset``: a reduction after ``numba.cuda.close()`` (INFO: a subprocess, numba arrays only).

A FAIL line names what differed. The exit status is the number of FAILs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

FAILS = []


def report(name, ok, msg):
    tag = "INFO" if ok is None else ("PASS" if ok else "FAIL")
    if ok is False:
        FAILS.append(name)
    print(f"{tag} {name}: {msg}", flush=True)


def _queue_increments(cp, v, s, reps):
    """Queue ``reps`` in-place increments of ``v`` on ``s``; events around them."""
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    with s:
        e0.record(s)
        for _ in range(reps):
            v += 1
        e1.record(s)
    return e0, e1


def probe_stream_and_nosync(cp, hr):
    n, seg = 1 << 26, 1024  # 256 MB of float32: each increment ~0.1-0.2 ms on an H100/H200
    v = cp.zeros(n, cp.float32)
    offs = cp.arange(0, n + 1, seg, dtype=cp.int64)
    x = hr.RaggedArray(v, offs)
    hr.sum(x)  # compile and warm the launch path
    cp.cuda.Device().synchronize()
    s = cp.cuda.Stream(non_blocking=True)
    reps = 400
    e0, e1 = _queue_increments(cp, v, s, reps)
    with s:
        t0 = time.perf_counter()
        r = hr.sum(x)
        call_ms = (time.perf_counter() - t0) * 1e3
    s.synchronize()
    gpu_ms = cp.cuda.get_elapsed_time(e0, e1)
    got = cp.asnumpy(r)
    want = float(reps * seg)
    bad = np.flatnonzero(got != want)
    report("stream", bad.size == 0,
           f"{got.size} segment sums behind {reps} increments on a non-blocking stream: "
           + ("all equal" if bad.size == 0 else
              f"{bad.size} differ, first [{bad[0]}] = {got[bad[0]]} (want {want})"))
    report("nosync", call_ms < 0.5 * gpu_ms,
           f"hr.sum returned in {call_ms:.2f} ms while {gpu_ms:.1f} ms of queued work ran "
           "(a host sync would wait for it)")


# the children run without bench/_py_compat.py: they apply its NumPy alias themselves
_PRELUDE = "import numpy as np\nif not hasattr(np, 'row_stack'):\n    np.row_stack = np.vstack\n"

_THREADS_CHILD = _PRELUDE + r"""
import threading, numpy as np, cupy as cp, hrarray as hr
nthreads, rounds = 8, 40
rng = np.random.default_rng(0)
lens = np.concatenate([[200_000], rng.integers(0, 40, 3000), [150_000]])
offs_h = np.concatenate([[0], np.cumsum(lens)])
errors = []
def work(t):
    v = cp.full(int(offs_h[-1]), float(t + 1), cp.float32)
    o = cp.asarray(offs_h)
    x = hr.RaggedArray(v, o)
    want = (t + 1) * lens.astype(np.float64)
    for _ in range(rounds):
        got = cp.asnumpy(hr.sum(x))
        if not np.array_equal(got, want.astype(np.float32)):
            k = int(np.flatnonzero(got != want)[0])
            errors.append(f"thread {t}: [{k}] = {got[k]}, want {want[k]}")
            return
ts = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
[t.start() for t in ts]; [t.join() for t in ts]
print("ERRORS" if errors else "OK", nthreads, rounds, errors[:3])
"""


def probe_threads():
    env = dict(os.environ, CUPY_CUDA_PER_THREAD_DEFAULT_STREAM="1")
    p = subprocess.run([sys.executable, "-c", _THREADS_CHILD], env=env, capture_output=True,
                       text=True, timeout=120)
    line = (p.stdout.strip().splitlines() or [""])[-1]
    ok = p.returncode == 0 and line.startswith("OK")
    report("threads", ok, (line or p.stderr.strip()[-300:]) + " (per-thread default streams)")


def probe_fast(cp, hr):
    from hrarray._kernels import cuda as kc

    hr.max(hr.RaggedArray(cp.arange(10.0), cp.asarray([0, 4, 10])))
    api = kc._fast_api[0] if kc._fast_api else None
    report("fast", api is not None and len(kc._fast_entries) > 0,
           f"fast-launch module {'found' if api is not None else 'NOT usable'}, "
           f"{len(kc._fast_entries)} entries")


def probe_torch(hr):
    try:
        import torch
    except ImportError:
        report("torch", None, "PyTorch not installed")
        return
    if not torch.cuda.is_available():
        report("torch", None, "PyTorch without CUDA")
        return
    n, seg = 1 << 26, 1024
    v = torch.zeros(n, device="cuda")
    offs = torch.arange(0, n + 1, seg, device="cuda")
    x = hr.RaggedArray(v, offs)
    hr.sum(x)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        for _ in range(200):
            v += 1
    r = hr.sum(x)  # documented: runs on the legacy default stream, not `side`
    torch.cuda.synchronize()
    got = r.cpu().numpy()
    report("torch", None, f"without a sync, {int((got == 200 * seg).sum())} of {got.size} sums "
           "saw all of the side stream's work (docs/backends.md: synchronise first)")


_RESET_CHILD = _PRELUDE + r"""
import numpy as np, hrarray as hr
from numba import cuda
def run():
    v = cuda.to_device(np.arange(1 << 20, dtype=np.float32))
    o = cuda.to_device(np.arange(0, (1 << 20) + 1, 1024, dtype=np.int64))
    return hr.sum(hr.RaggedArray(v, o)).copy_to_host()
a = run()
cuda.close()
b = run()
print("OK" if np.array_equal(a, b) else "DIFFER", a[:2], b[:2])
"""


def probe_reset():
    p = subprocess.run([sys.executable, "-c", _RESET_CHILD], capture_output=True, text=True,
                       timeout=120)
    line = (p.stdout.strip().splitlines() or [""])[-1]
    report("reset", None, f"rc={p.returncode} {line or p.stderr.strip()[-300:]}")


def main() -> int:
    import cupy as cp

    import hrarray as hr

    for name, fn in (("stream", lambda: probe_stream_and_nosync(cp, hr)),
                     ("threads", probe_threads), ("fast", lambda: probe_fast(cp, hr)),
                     ("torch", lambda: probe_torch(hr)), ("reset", probe_reset)):
        try:
            fn()
        except Exception as exc:  # a probe that cannot run says why; the others still run
            report(name, False, f"{type(exc).__name__}: {str(exc)[:300]}")
    print(f"gpu_probes: {len(FAILS)} FAIL" + (f" ({', '.join(FAILS)})" if FAILS else ""))
    return len(FAILS)


if __name__ == "__main__":
    sys.exit(main())
