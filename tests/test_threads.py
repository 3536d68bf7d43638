"""Reductions from 8 Python threads at once (reliability.md (d)).

Inputs are large enough (>= 2e6 elements) to take the parallel CPU path. The
body runs in a subprocess so that an abort (as Numba's workqueue layer does on
concurrent parallel calls, which hrarray avoids by not using it) fails the test
instead of killing pytest.
"""

import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import hrarray as hr

SCRIPT = textwrap.dedent(
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    import hrarray as hr

    rng = np.random.default_rng(0)

    def heavy_tail(total):
        lens = rng.zipf(1.5, size=total // 8).clip(0, total // 4)
        lens[rng.random(lens.size) < 0.3] = 0
        lens = lens[np.cumsum(lens) <= total]
        return np.concatenate([lens, [total - lens.sum()]]).astype(np.int64)

    n = 2_500_000
    lens1 = heavy_tail(n)
    v1 = rng.normal(size=n).astype(np.float32)
    x1 = hr.from_lengths(v1, lens1)
    lens2 = heavy_tail(n // 4)
    v2 = rng.normal(size=(n // 4, 4))
    x2 = hr.from_lengths(v2, lens2)
    inputs = {"x1": x1, "x2": x2}
    OPS = ["sum", "max", "mean", "argmin", "var"]

    def work(k):
        out = []
        for r in range(4):
            op = OPS[(k + r) % len(OPS)]
            name = "x1" if (k + r) % 2 else "x2"
            out.append((op, name, getattr(hr, op)(inputs[name])))
        return out

    # first calls compile concurrently (no warm-up), then a serial run for comparison
    with ThreadPoolExecutor(8) as ex:
        batches = list(ex.map(work, range(8)))
    serial = {(op, name): getattr(hr, op)(x) for op in OPS for name, x in inputs.items()}
    for batch in batches:
        for op, name, got in batch:
            assert got.tobytes() == serial[op, name].tobytes(), (op, name)

    # correctness against NumPy (bincount accumulates in float64)
    for x, v, lens in ((x1, v1, lens1), (x2, v2, lens2)):
        ids = np.repeat(np.arange(len(lens)), lens)
        v64 = v.astype(np.float64).reshape(len(v), -1)
        for c in range(v64.shape[1]):
            ref = np.bincount(ids, weights=v64[:, c], minlength=len(lens))
            scale = np.bincount(ids, weights=np.abs(v64[:, c]), minlength=len(lens))
            got = hr.sum(x).reshape(len(lens), -1)[:, c].astype(np.float64)
            assert np.all(np.abs(got - ref) <= 1e-6 * np.abs(ref) + 1e-9 * scale + 1e-300)
            mx = np.full(len(lens), -np.inf)
            np.maximum.at(mx, ids, v64[:, c])
            np.testing.assert_array_equal(hr.max(x).reshape(len(lens), -1)[:, c], mx)
    print("OK")
    """
)


def run_script(script: str, timeout: int) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter (an abort or a hang fails the test, not pytest)."""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc


def test_concurrent_reductions_from_threads():
    proc = run_script(SCRIPT, timeout=600)
    assert proc.stdout.strip().endswith("OK")


FORK_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    import warnings

    import numpy as np

    import hrarray as hr
    from hrarray._kernels import cpu

    warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
    os.environ["HRARRAY_NUM_THREADS"] = "2"
    rng = np.random.default_rng(1)
    v = rng.normal(size=400_000)
    x = hr.from_lengths(v, np.full(4_000, 100))
    want = hr.sum(x)  # large enough for the pool: the parent's pool now has a thread
    assert cpu._pool is not None
    pid = os.fork()
    if pid == 0:
        # the child inherits the pool object but not its threads: hrarray must make a
        # new pool, not wait forever on the parent's
        ok = hr.sum(x).tobytes() == want.tobytes()
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_reductions_in_a_forked_child():
    """A child forked after the parent used the thread pool runs large reductions (no hang)."""
    if not hasattr(os, "fork"):
        import pytest

        pytest.skip("no fork() on this platform")
    run_script(FORK_SCRIPT, timeout=120)


FORK_WHILE_BUSY = textwrap.dedent(
    """
    import os
    import signal
    import sys
    import threading
    import time
    import warnings

    import numpy as np

    import hrarray as hr
    from hrarray._kernels import _locks, cpu

    warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
    mode = sys.argv[1]
    # trusted (validate=False): the cold cache's validation kernel would import Numba here
    x = hr.RaggedArray(np.arange(1000.0), np.arange(0, 1001, 10), validate=False)
    held, done = threading.Event(), threading.Event()

    def hold(lock, seconds):
        with lock:
            held.set()
            if seconds is None:
                done.wait()
            else:
                time.sleep(seconds)

    def busy_elsewhere(test):
        # spin (holding the GIL little) until another thread is inside `test`
        t0 = time.monotonic()
        while not test():
            if time.monotonic() - t0 > 60:
                print("SKIP: never saw the other thread busy")
                sys.exit(0)
            time.sleep(0.0005)
        held.set()

    # the holders below release only after the fork has returned in the parent, as a
    # thread does that waits for a lock the forking thread holds (a fork hook of another
    # library): the fork's wait must end at its bound, not deadlock the parent
    if mode == "kernel-lock":
        # another thread holds the kernel table's lock (as while it creates a kernel)
        threading.Thread(target=hold, args=(cpu._compiled_lock, None), daemon=True).start()
    elif mode == "loading-lock":
        # another thread is building a native entry (LLVM)
        from hrarray._kernels import native

        threading.Thread(target=hold, args=(native._lock, None), daemon=True).start()
    elif mode == "numba-lock":
        # another thread holds Numba's compiler lock until the fork has returned
        from numba.core.compiler_lock import global_compiler_lock

        _locks.FORK_WAIT_S = 1.0
        threading.Thread(target=hold, args=(global_compiler_lock, None), daemon=True).start()
    elif mode == "importing":
        # another thread is importing Numba (hrarray's first kernel does): the fork
        # waits for the import, else the child holds Numba half imported
        assert "numba" not in sys.modules
        threading.Thread(target=x.max, daemon=True).start()
        busy_elsewhere(lambda: getattr(getattr(sys.modules.get("numba"), "__spec__", None),
                                       "_initializing", False))
    elif mode == "compiling":
        # another thread is compiling a kernel (Numba's and llvmlite's locks held, the
        # typing context half changed): the fork waits for the compile to end
        import numba  # noqa: F401  (so that the other thread's first step is a compile)
        from numba.core.compiler_lock import global_compiler_lock as g

        def compiling():
            if g._lock.acquire(blocking=False):
                g._lock.release()
                return False
            return True

        threading.Thread(target=x.var, daemon=True).start()
        busy_elsewhere(compiling)
    elif mode == "compile-run":
        # another thread compiles one function after another (re-taking Numba's lock at
        # once, without yielding the GIL): the fork must get the next gap, not wait for
        # the whole run (it did, to its bound)
        import numba

        fns = []
        for i in range(200):
            ns = {}
            exec(f"def f{i}(a):\\n    return a * {i}.5 + 1\\n", ns)
            fns.append(numba.njit(ns[f"f{i}"]))
        first = threading.Event()

        def run():
            for f in fns:
                f(1.0)
                first.set()

        threading.Thread(target=run, daemon=True).start()
        first.wait()
        held.set()
    else:  # "first-call": another thread's first reduction loads and compiles its kernel
        threading.Thread(target=x.max, daemon=True).start()
        held.set()
    held.wait()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        signal.alarm(60)  # a hung child dies (SIGALRM) instead of hanging the test
        result = []

        def child_work():
            # a new kernel (a user reducer: compiled here, never cached on disk) and
            # built-ins, in a new thread: the locks the fork held must be released here
            # (max and var: the kernels the other thread loads in the cold modes; each
            # further built-in was one more compile there)
            r = hr.reduce(x, hr.Reducer(0.0, lambda a, b: a + b, map=lambda v: v * 3.0))
            ok = np.array_equal(r, 3 * hr.sum(x)) and np.array_equal(hr.max(x), x.values[9::10])
            result.append(ok and (mode != "compiling" or np.allclose(hr.var(x), 8.25)))

        w = threading.Thread(target=child_work)
        w.start()
        w.join()
        os._exit(0 if result == [True] else 3)
    waited = time.monotonic() - t0
    done.set()
    _, status = os.waitpid(pid, 0)
    print("child", os.waitstatus_to_exitcode(status), "fork waited", round(waited, 3))
    # the wait is bounded (numba-lock: the holder outlasts it), and a run of compiles
    # gives way at its next compile (~0.1 s each here)
    assert waited < getattr(_locks, "FORK_WAIT_S", 0.0) + 1.0, waited
    assert mode != "compile-run" or waited < 2.0, waited
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.parametrize(
    "mode", ["kernel-lock", "loading-lock", "numba-lock", "importing", "compiling", "compile-run",
             "first-call"])
def test_a_child_forked_while_another_thread_loads_kernels(mode, tmp_path):
    """From audits: a child forked while another thread held hrarray's kernel lock (it was
    loading its first kernel) waited on that lock forever, and so did one forked while
    another thread imported Numba or compiled (Numba's module import lock, its compiler
    lock, its typing context's lock or llvmlite's lock, as the fork fell: 7 of 8 forks into
    a cold first reduction). The child gets every hrarray lock afresh; a fork waits, for a
    bounded time, until no other thread imports Numba or compiles, and holds Numba's and
    llvmlite's locks across it. A review found an earlier wait (on hrarray's load lock)
    deadlocking the parent behind logging's fork hook: the wait never blocks, and ends at
    its bound when the other thread waits on the forking one (numba-lock)."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    # cold where the mode needs another thread to import Numba or compile; elsewhere the
    # suite's own cache (the child's built-in kernels load from it: ~10 s less per mode)
    cache = tmp_path
    if mode not in ("importing", "compiling", "first-call"):
        from hrarray._kernels import _codegen

        folder, on_disk = _codegen.generated_dir()
        cache = folder if on_disk else tmp_path
    env = dict(os.environ, HRARRAY_CACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, "-c", FORK_WHILE_BUSY, mode], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    if proc.stdout.startswith("SKIP"):
        pytest.skip(proc.stdout.strip())  # the busy window was never caught (a loaded host)


def test_concurrent_small_reductions_share_no_scratch():
    """One-chunk calls keep their scratch (pairwise stack, end-of-array copies) per thread:
    8 threads reducing different arrays with the same kernels at once, the GIL released
    inside each kernel, get the serial results byte for byte."""
    rng = np.random.default_rng(5)
    n = 40_000  # below the parallel threshold: one chunk, the reused scratch
    xs = [hr.from_lengths(rng.normal(size=n) * 10.0 ** k, rng.multinomial(n, [0.01] * 100))
          for k in range(12)]
    ops = ["sum", "var", "argmax", "logsumexp"]
    want = {(i, op): getattr(hr, op)(x).tobytes() for i, x in enumerate(xs) for op in ops}
    barrier = threading.Barrier(8)

    def work(k):
        barrier.wait()
        bad = []
        for r in range(150):
            i, op = (k * 5 + r) % len(xs), ops[(k + r) % len(ops)]
            if getattr(hr, op)(xs[i]).tobytes() != want[i, op]:
                bad.append((i, op))
        return bad

    with ThreadPoolExecutor(8) as ex:
        bad = [b for got in ex.map(work, range(8)) for b in got]
    assert not bad, bad[:10]


def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    """A large call is cut into chunks by its size alone; 1, 2, 3 or 5 threads share the
    same chunks, so every float result is the same bit for bit (with a chunk per thread,
    sums on 2, 3 and 7 threads differed from 1 thread's in the last bits)."""
    import hrarray._kernels.cpu as kc

    # smaller chunks than the library's (1M work each) cut these few-MB inputs into many
    monkeypatch.setattr(kc, "CHUNK_WORK", 1 << 16)
    rng = np.random.default_rng(7)
    lens = rng.poisson(40, 12_000)
    lens[::5] = 0
    lens[7] = 200_000  # one segment across several chunks
    x1 = hr.from_lengths((rng.standard_normal(lens.sum()) * 1e3).astype(np.float32), lens)
    lens2 = rng.poisson(6, 20_000)
    lens2[3] = 250_000
    x2 = hr.from_lengths(rng.standard_normal((lens2.sum(), 4)), lens2)
    assert kc.nchunks_for(x1.nvalues, len(x1), 1) >= 7  # 3 and 5 threads: uneven shares
    assert kc.nchunks_for(x2.nvalues, len(x2), 4) >= 7
    calls = [lambda: hr.sum(x1), lambda: hr.var(x1), lambda: hr.sum(x2),
             lambda: hr.cumsum(x1).values, lambda: hr.softmax(x1).values]
    want = None
    for threads in ("1", "2", "3", "5"):
        monkeypatch.setenv("HRARRAY_NUM_THREADS", threads)
        got = [f().tobytes() for f in calls]
        if want is None:
            want = got
        assert got == want, threads


def test_worker_rows_own_their_cache_lines():
    """The 2-D kernels' per-worker accumulator rows (kc.worker_rows) each start on a 64-byte
    line, fill whole lines and lie at least kc.ROW_GAP (two lines) from any other row or
    allocation: no two workers, nor a neighbouring allocation, share a line or its
    prefetch neighbour (measured: up to 4x slower otherwise)."""
    import hrarray._kernels.cpu as kc

    assert kc.ROW_GAP >= 128
    for dt, shape in ((np.float32, (2, 64)), (np.float64, (3, 5)), (np.complex128, (2, 64, 7)),
                      (np.int8, (4, 3)), (np.float32, (1, 16)), (np.float64, (2, 16))):
        a = kc.worker_rows(shape, dt)
        isz = np.dtype(dt).itemsize
        assert a.flags.c_contiguous
        assert a.dtype == dt
        assert a.shape[:-1] == shape[:-1]
        assert a.ctypes.data % 64 == 0
        assert a.strides[-2] % 64 == 0
        # the unused end of every row is the gap to the next row (or the allocation's end)
        assert a.shape[-1] * isz - shape[-1] * isz >= kc.ROW_GAP
        buf = a.base
        while buf.base is not None:
            buf = buf.base
        assert a.ctypes.data - buf.ctypes.data >= kc.ROW_GAP
        assert buf.ctypes.data + buf.nbytes >= a.ctypes.data + a.nbytes


class _GuardedNumpy:
    """``numpy`` for a kernel module under test, except that ``np.empty`` returns arrays
    with 256 bytes of a known pattern before and after them: a kernel writing past an
    array it was given (Numba does not bounds-check) changes the pattern."""

    def __init__(self):
        self.bufs = []

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype=float, **kw):
        dt = np.dtype(dtype)
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        buf = np.full(nbytes + 512, 0xAB, np.uint8)
        self.bufs.append(buf)
        return buf[256:256 + nbytes].view(dt).reshape(shape)

    def intact(self) -> bool:
        return all((b[:256] == 0xAB).all() and (b[-256:] == 0xAB).all() for b in self.bufs)


def test_kernels_write_only_inside_their_scratch(monkeypatch):
    """Chunk states and padded accumulator rows (worker_rows) are written within their
    arrays: every scratch array the CPU kernel modules allocate is fenced, and 2-D
    reductions (logsumexp's block passes too), attention pools (2-D rows, 1-D blocks and
    masked short steps) and a scan cut into 5 chunks on 2 threads leave the fences alone
    (attention pool's chunk-state store once looped over the padded width)."""
    import hrarray._kernels.cpu as kc
    import hrarray._kernels.cpu_transforms as kt

    fenced = _GuardedNumpy()
    monkeypatch.setattr(kc, "np", fenced)
    monkeypatch.setattr(kt, "np", fenced)
    monkeypatch.setattr(kc, "FORCE_CHUNKS", 5)
    monkeypatch.setenv("HRARRAY_NUM_THREADS", "2")
    rng = np.random.default_rng(3)
    lens = [0, 7, 40, 1, 0, 90, 3, 33]
    x = hr.from_lengths(rng.standard_normal((sum(lens), 3)), lens)
    scores = hr.from_lengths(rng.standard_normal(sum(lens)), lens)
    got = hr.attention_pool(x, scores)
    np.testing.assert_allclose(got[2], (np.exp(scores[2] - scores[2].max())
                                        / np.exp(scores[2] - scores[2].max()).sum()) @ x[2])
    hr.sum(x)
    hr.max(x)
    hr.logsumexp(x)
    hr.cumsum(x)
    x1 = hr.from_lengths(rng.standard_normal(sum(lens)), lens)
    hr.attention_pool(x1, scores)
    hr.logsumexp(x1)
    assert len(fenced.bufs) > 10
    assert fenced.intact()


def test_from_list_from_threads_leaves_the_warning_filters_alone():
    """from_list's exactness check of integer dtype= silenced the cast's warnings in a
    ``warnings.catch_warnings()`` block, which swaps the process-wide filter list: threads
    interleaving there left an 'ignore every warning' filter installed for good (2 runs
    of 3 with a 1 us switch interval). The check now raises no warning to silence."""
    import warnings

    hr.from_list([[1.0]], dtype=np.int64)
    before = list(warnings.filters)
    start, errors = threading.Barrier(8), []

    def work():
        start.wait()
        try:
            for _ in range(300):
                assert hr.from_list([[1.0, 2.0], [3.0, 1 + 0j]], dtype=np.int64).to_list() \
                    == [[1, 2], [3, 1]]
        except Exception as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: inside the block too
    try:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert warnings.filters == before
