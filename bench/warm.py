"""Compile what a CPU bench run will call before any of it is timed, on every core.

A bench run on fresh caches used to spend most of its first case compiling: a
``--quick`` run on the 2-core development VM took 81-91 s, 59 s of it in the
first case (hrarray's 1-D kernels ~26 s, the numpy-groupies and numbagg JITs
~33 s) and ~12 s in the first 2-D case, all on one core.  Compiling is single
threaded, so here every (workload, dtype, ndim, op, implementation) the run
will time is called once on the run's first cases, spread over this process
and ``min(cores, 4) - 1`` worker processes taking jobs from one queue.  What
the workers compile reaches this process through the disk caches: hrarray's
kernel cache and Numba's ``cache=True`` files (numpy-groupies).  An anchor
whose JIT is not cached on disk (numbagg's, unless ``NUMBAGG_CACHE`` is set)
is warmed in this process only.

Nothing here is timed or checked: a job that fails is left to the measurement,
which reports the failure where it belongs.  The sizes are the run's own,
capped at ``CAP_SCALARS`` (``--quick``'s own sizes; for a full run large enough
for hrarray's parallel paths).

Run as a worker: ``python warm.py --worker`` reads one JSON job per line from
stdin and answers one JSON line per job.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import anchors as anchors_mod  # noqa: E402
import hrcall  # noqa: E402
import workloads as wl  # noqa: E402

HR = "hrarray cpu"
MAX_PROCESSES = 4
# Large enough for hrarray's parallel paths (their fix-up kernels compile only
# there: 1-D from 2**18 scalars, 2-D from 2**20), small enough to build at once.
CAP_SCALARS = 1 << 21
WORKER_DEADLINE_S = 900.0


def plan(cases, ops, anchor_names, has_hr: bool, extra=()) -> list[dict]:
    """The jobs, first workload of each (dtype, ndim) first: those compile; the
    later workloads mostly load what they compiled (hierarchy's ``levels=3`` and a
    tiny workload's short segments may still take other paths).  ``extra``: more
    hrarray (op, dtype, ndim) signatures, called on the ``uniform`` workload."""
    impls = ([HR] if has_hr else []) + list(anchor_names)
    first, rest = [], []
    if has_hr:
        covered = {(op, dt, nd) for dt, nd, _ in cases for op in ops}
        for op, dt, nd in extra:
            if (op, dt, nd) not in covered:
                covered.add((op, dt, nd))
                first.append({"workload": "uniform", "dtype": dt, "ndim": nd, "op": op,
                              "impl": HR})
    seen = set()
    for dt, nd, name in cases:
        dest = rest if (dt, nd) in seen else first
        seen.add((dt, nd))
        for op in ops:
            for impl in impls:
                dest.append({"workload": name, "dtype": dt, "ndim": nd, "op": op, "impl": impl})
    return first + rest


class _Caller:
    """Runs jobs in one process, keeping each workload and anchor it built."""

    def __init__(self, hr, anchor_names, n: int):
        self.hr = hr
        self.n = n
        pool = anchors_mod.cpu_anchors(tuple(anchor_names))
        self.anchors = {a.name: a for a in pool if a.name in anchor_names}
        self._cases: dict[tuple, tuple] = {}

    def _case(self, name, dt, nd):
        key = (name, dt, nd)
        if key not in self._cases:
            if len(self._cases) > 2:  # keep memory flat: jobs come grouped by case
                self._cases.clear()
            w = wl.make_workload(name, dt, nd, self.n)
            x = hrcall.build(self.hr, w.values, w.offsets) if self.hr is not None else None
            case = SimpleNamespace(
                values=w.values, offsets_levels=w.offsets, scores=None, xp=np, ndim=nd
            )
            self._cases[key] = (w, x, case)
        return self._cases[key]

    def run(self, job: dict) -> None:
        w, x, case = self._case(job["workload"], job["dtype"], job["ndim"])
        op = job["op"]
        if op == "attention_pool":
            case.scores = w.scores
        if job["impl"] == HR:
            sx = None
            if op == "attention_pool":
                sx = hrcall.with_scores(self.hr, x, w.scores, w.offsets)
            by = [False] + ([True] if w.depth > 1 and op in hrcall.LEVEL_BY_LEVEL_OPS else [])
            for by_level in by:
                hrcall.op_callable(self.hr, op, x, w.depth, sx, by_level=by_level)()
            return
        anc = self.anchors.get(job["impl"])
        fn = anc.build(op, case) if anc is not None else None
        if fn is not None:
            fn()


def _label(job: dict) -> str:
    return f"{job['impl']} {job['op']} {job['workload']} {job['dtype']} {job['ndim']}-D"


def local_only(anchor_names) -> set[str]:
    """Anchors whose compiled code stays in the process that compiled it."""
    # numbagg caches on disk only when NUMBAGG_CACHE says so (its decorators.py)
    cached = os.getenv("NUMBAGG_CACHE", "").lower() in ("true", "1", "t")
    return set() if cached else {"numbagg"} & set(anchor_names)


def warm_up(hr, jobs: list[dict], anchor_names, n: int, log, side=None) -> tuple[dict, dict]:
    """Run ``jobs`` here and in worker processes.

    ``side`` maps names to callables run here first, while the workers compile
    (the overheads' cold-compile timing, a compile in a fresh process of its own:
    one process per core either way).  Returns (counts, wall time and the slowest
    jobs; the side callables' results).
    """
    t0 = time.perf_counter()
    n = min(int(n), CAP_SCALARS)
    here_only = local_only(anchor_names)
    mine = collections.deque(j for j in jobs if j["impl"] in here_only)
    shared = collections.deque(j for j in jobs if j["impl"] not in here_only)
    lock = threading.Lock()
    stats = {"jobs": len(jobs), "failed": 0, "worker_errors": []}
    took: list[tuple[float, str, str]] = []  # (seconds, where, what)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    nworkers = max(0, min(cores, MAX_PROCESSES, len(shared)) - 1)
    env = dict(os.environ)
    roots = [str(HERE)]
    if hr is not None:
        roots.insert(0, str(Path(hr.__file__).resolve().parent.parent))
    env["PYTHONPATH"] = os.pathsep.join(roots + [p for p in [env.get("PYTHONPATH")] if p])
    procs = []
    for _ in range(nworkers):
        try:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(HERE / "warm.py"), "--worker", str(n),
                     json.dumps(sorted(anchor_names)), "1" if hr is not None else "0"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=env,
                )
            )
        except OSError as e:
            stats["worker_errors"].append(f"start: {e}")

    def feed(proc):
        # one job at a time, so that both sides take the next job when free
        while True:
            with lock:
                if not shared:
                    break
                job = shared.popleft()
            try:
                proc.stdin.write(json.dumps(job) + "\n")
                proc.stdin.flush()
                t = time.perf_counter()
                reply = proc.stdout.readline()
                took.append((time.perf_counter() - t, f"worker {proc.pid}", _label(job)))
            except (OSError, ValueError) as e:
                reply = ""
                stats["worker_errors"].append(f"pipe: {e}")
            if not reply:  # the worker died: its job is left to the measurement
                stats["worker_errors"].append("a worker ended early")
                break
            try:
                ok = json.loads(reply).get("ok")
            except (ValueError, AttributeError):
                ok = False
            if not ok:
                with lock:
                    stats["failed"] += 1
        with contextlib.suppress(OSError):
            proc.stdin.close()

    threads = [threading.Thread(target=feed, args=(p,), daemon=True) for p in procs]
    for t in threads:
        t.start()
    side_results = {}
    for name, fn in (side or {}).items():
        t = time.perf_counter()
        try:
            side_results[name] = fn()
        except Exception as e:
            side_results[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        took.append((time.perf_counter() - t, "here", name))
    caller = _Caller(hr, anchor_names, n)
    while True:
        with lock:
            job = mine.popleft() if mine else (shared.popleft() if shared else None)
        if job is None:
            break
        t = time.perf_counter()
        try:
            caller.run(job)
        except Exception:
            with lock:
                stats["failed"] += 1
        took.append((time.perf_counter() - t, "here", _label(job)))
    # a worker stuck in a job must not hold the run: after the deadline it is
    # killed, its pipe closes and its feeder ends
    deadline = t0 + WORKER_DEADLINE_S
    for t, p in zip(threads, procs, strict=True):
        t.join(max(0.0, deadline - time.perf_counter()))
        if t.is_alive():
            p.kill()
            stats["worker_errors"].append(f"a worker passed {WORKER_DEADLINE_S} s: killed")
            t.join()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    stats["processes"] = 1 + len(procs)
    stats["busy_s"] = {}
    for s, where, _ in took:
        stats["busy_s"][where] = round(stats["busy_s"].get(where, 0.0) + s, 1)
    stats["slowest"] = [
        f"{s:.1f} s {what} ({where})" for s, where, what in sorted(took, key=lambda t: -t[0])[:12]
    ]
    stats["wall_s"] = round(time.perf_counter() - t0, 1)
    log(
        f"warm-up: {stats['jobs']} calls over {stats['processes']} processes in "
        f"{stats['wall_s']} s (compiling before timing; {stats['failed']} failed, left to "
        "the measurement)" + (f"; beside it: {', '.join(side_results)}" if side_results else "")
    )
    return stats, side_results


def _worker(argv) -> int:
    n, names, with_hr = int(argv[0]), json.loads(argv[1]), argv[2] == "1"
    hr = None
    if with_hr:
        try:
            import hrarray as hr
        except Exception:
            hr = None
    # the replies go to stdout alone: anything a library prints goes to stderr
    reply_to, sys.stdout = sys.stdout, sys.stderr
    caller = _Caller(hr, names, n)
    for line in sys.stdin:
        try:
            caller.run(json.loads(line))
            reply = {"ok": True}
        except Exception:
            traceback.print_exc()
            reply = {"ok": False}
        reply_to.write(json.dumps(reply) + "\n")
        reply_to.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker(sys.argv[2:]))
    sys.exit("usage: warm.py --worker N ANCHORS_JSON WITH_HR")
