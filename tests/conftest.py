"""Test configuration: CUDA simulator without a GPU, the ``backend`` fixture, helpers.

Without ``nvidia-smi`` the numba CUDA simulator is switched on *before* anything
imports numba, so the ``cuda`` backend runs everywhere (slowly: each simulated
GPU thread is a Python thread, so keep cuda examples tiny and few). Tests marked
``@pytest.mark.cuda`` need a real GPU and are skipped otherwise.
"""

import os
import shutil

if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # The simulator runs each GPU thread of a block as a Python thread. Its block
    # manager, which busy-polled them, now sleeps until they wait at a barrier
    # (_event_driven_simulator_blocks below); with it, 1 ms ran the wide-row
    # simulator tests as fast as the default 5 ms (0.1 ms, needed against the
    # poller: 20% slower) and switches threads more often between barriers, where
    # a kernel's races show. Only this test process's scheduling changes; no
    # kernel or result does.
    import sys

    sys.setswitchinterval(1e-3)

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from reference import to_host

__all__ = [
    "CUDA_MODE",
    "REAL_GPU",
    "examples",
    "make_ragged",
    "needs_cupy_on_cuda",
    "to_backend",
    "to_host",
]

settings.register_profile(
    "hrarray",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
# HRARRAY_HYPOTHESIS=quick: a smoke run (few examples, no shrinking)
settings.register_profile(
    "quick", parent=settings.get_profile("hrarray"), phases=[Phase.explicit, Phase.generate]
)
QUICK = os.environ.get("HRARRAY_HYPOTHESIS") == "quick"
settings.load_profile("quick" if QUICK else "hrarray")


def _cuda_mode():
    """``"gpu"`` (a real device), ``"sim"`` (the numba simulator) or None (no numba-cuda)."""
    try:
        import numba
        from numba import cuda
    except ImportError:
        return None
    if numba.config.ENABLE_CUDASIM:
        return "sim"
    try:
        return "gpu" if cuda.is_available() else None
    except Exception:
        return None


CUDA_MODE = _cuda_mode()
REAL_GPU = CUDA_MODE == "gpu"


def _lock_simulator_shared_arrays():
    """Make the simulator's ``cuda.shared.array`` allocate once per block, race-free.

    numba-cuda's simulator (``simulator/kernelapi.py``, ``FakeCUDAShared.array``) looks a
    block's shared array up by the calling line and creates it when missing, unlocked: two
    simulated threads of a block can both miss and each get their own array, so one
    thread's writes are invisible to the other (seen: an index read from a shared array
    came out of range in ``reduce_2d``, once in a CI run, after the switch interval above
    made thread switches 50x more frequent). Same keying (the caller's file and line),
    looked up and created under a lock; ``sys._getframe`` instead of the original's
    ``traceback.extract_stack``, which read the source of the whole stack per call.
    """
    import sys
    import threading

    try:
        from numba.cuda.simulator import kernelapi

        cls = kernelapi.FakeCUDAShared
        original = cls.array
        kernelapi.types.Type, kernelapi.numpy_support.as_dtype  # noqa: B018
    except (ImportError, AttributeError):  # another simulator layout: leave it as it is
        return
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    cls.array = array


def _event_driven_simulator_blocks():
    """Let the simulator's block manager sleep until its threads all wait at a barrier.

    numba-cuda's ``BlockManager.run`` (``simulator/kernel.py``) polls its threads in a loop
    that never blocks (``is_alive`` and a ``syncthreads_blocked`` flag of each, ~4 million
    ``is_alive`` calls in one 13 s test), so it holds the GIL about half of the time the
    simulated threads need it. Here a thread reaching ``syncthreads`` or ending notifies a
    condition the manager waits on; the rest is the original's logic: when every thread not
    yet ended waits at the barrier, all are released; a thread's exception aborts the others
    and is raised. Where the simulator's layout differs, it is left as it is.
    """
    import threading

    try:
        from numba.cuda.simulator import kernel as simkernel

        thread_cls, manager_cls = simkernel.BlockThread, simkernel.BlockManager
        original_run = thread_cls.run
        thread_cls.syncthreads  # noqa: B018
    except (ImportError, AttributeError):
        return

    def thread_run(self):
        try:
            original_run(self)
        finally:
            cond = self._manager._hr_cond
            with cond:
                self._hr_done = True
                cond.notify()

    def syncthreads(self):
        if self.abort:
            raise RuntimeError("abort flag set on syncthreads call")
        cond = self._manager._hr_cond
        with cond:
            self.syncthreads_blocked = True
            cond.notify()
        self.syncthreads_event.wait()
        self.syncthreads_event.clear()
        if self.abort:
            raise RuntimeError("abort flag set on syncthreads clear")

    def manager_run(self, grid_point, *args):
        self._hr_cond = cond = threading.Condition()

        def target():
            self._f(*args)

        threads = [thread_cls(target, self, grid_point, point, self._debug)
                   for point in np.ndindex(*self._block_dim)]
        for t in threads:
            t._hr_done = False
        for t in threads:
            t.start()
        with cond:
            while True:
                cond.wait_for(lambda: all(t._hr_done or t.syncthreads_blocked for t in threads))
                for t in threads:
                    if t.exception:
                        for other in threads:
                            other.abort = True
                            other.syncthreads_blocked = False
                            other.syncthreads_event.set()
                        raise t.exception[0].with_traceback(t.exception[1])
                live = [t for t in threads if not t._hr_done]
                if not live:
                    return
                for t in live:
                    t.syncthreads_blocked = False
                    t.syncthreads_event.set()

    thread_cls.run = thread_run
    thread_cls.syncthreads = syncthreads
    manager_cls.run = manager_run


if CUDA_MODE == "sim":
    _lock_simulator_shared_arrays()
    _event_driven_simulator_blocks()


def _known_failures() -> dict:
    """Node id -> reason, from tests/known_failures.txt (work items, not passes)."""
    path = os.path.join(os.path.dirname(__file__), "known_failures.txt")
    out = {}
    if os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    node, _, reason = line.partition(" -- ")
                    out[node.strip()] = reason.strip()
    return out


# Tests that take 10-80 s each here (2 cores) whatever ran before them: subprocesses that
# compile their own kernels, the CUDA simulator's widest launches, kernels no other test
# compiles. They run first: xdist hands tests out in collection order, and a run that
# ended on one of them (the last test of a cold run took 27 s) left the other workers idle.
# (None of them uses a module-scoped fixture, which a move would set up twice.)
_LONG_FIRST = frozenset({
    "test_every_kernel_kind_compiles_to_ptx",
    "test_host_path_runs_with_numba_cuda_s_real_objects",
    "test_attention_pool_matches_reference",
    "test_exp_sums_of_strided_values",
    "test_row_lanes_layout_of_the_gpu",
    "test_rows_wider_than_the_row_lanes_take_column_tiles",
    "test_rows_wider_than_the_grid_run_as_column_slices",
    "test_long_segment_rows_wider_than_the_fixup_tile",
    "test_temporary_kernel_folders_are_removed_at_exit",
    "test_a_child_forked_while_another_thread_loads_kernels",
    "test_warm_process_imports_no_numba",
    "test_entries_name_no_numba_runtime_symbol",
    "test_an_entry_under_another_entrys_name_is_not_loaded",
})


def pytest_collection_modifyitems(config, items):
    # (a stable sort: the rest keep their order)
    items.sort(key=lambda item: getattr(item, "originalname", item.name) not in _LONG_FIRST)
    known = _known_failures()
    prefixes = {k[:-1]: v for k, v in known.items() if k.endswith("*")}
    for item in items:
        reason = known.get(item.nodeid) or next(
            (v for k, v in prefixes.items() if item.nodeid.startswith(k)), None
        )
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
    if REAL_GPU:
        return
    skip = pytest.mark.skip(
        reason="needs a real NVIDIA GPU (numba.cuda not available or simulated)"
    )
    for item in items:
        # get_closest_marker, not `"cuda" in item.keywords`: the backend param id is "cuda" too
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def _cgroup_cpu_limit():
    """The CPUs a cgroup's CPU quota allows (rounded up), or None where none is set."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "max 100000" or "200000 100000"
            quota, period = f.read().split()[:2]
        if quota == "max":
            return None
        return -(-int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        return -(-quota // period) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per CPU this process may run on (its affinity mask, less any
    cgroup CPU quota). pytest-xdist's own count, with psutil installed (dask's distributed
    brings it), is the machine's physical cores: the hardware threads of a host with SMT
    were left idle, and a container limited to fewer CPUs than its host got more workers
    than CPUs, each compiling kernels the others compile too (the suite's time is mostly
    Numba compiling). ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides where set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: xdist's count
        return None
    limit = _cgroup_cpu_limit()
    return max(1, min(n, limit) if limit else n)


def pytest_report_header(config):
    import strategies

    return (f"hrarray test seed {strategies.TEST_SEED} (which kernel shape each op x dtype is "
            f"tested in on the CPU; HRARRAY_TEST_SEED pins it)")


def pytest_terminal_summary(terminalreporter):
    """How many kernel specialisations the run compiled (compile time dominates the suite)."""
    import sys

    kernels = sys.modules.get("hrarray._kernels")
    if kernels is not None and hasattr(kernels, "compiled_count"):
        terminalreporter.write_line(f"hrarray kernels compiled: {kernels.compiled_count()}")
    native = sys.modules.get("hrarray._kernels.native")
    if native is not None:
        st = native.stats
        terminalreporter.write_line(
            f"hrarray native entries: {st['built']} built ({st['build_s']:.1f} s beyond their "
            f"kernels' compiles), {st['loaded']} loaded")


@pytest.fixture(params=["cpu", "cuda"])
def backend(request):
    """Runs a test on NumPy input (Numba CPU kernels) and on numba device arrays (numba-cuda
    kernels; the simulator without a GPU)."""
    if request.param == "cuda" and CUDA_MODE is None:
        pytest.skip("numba-cuda is not usable here")
    return request.param


def needs_cupy_on_cuda(backend: str) -> None:
    """Skip on the cuda backend without CuPy: hrarray runs reductions on any CUDA array, but
    some structural operations on CUDA arrays (gather, from_lengths, from_segment_ids,
    segment_ids, local_index, to_padded) use CuPy."""
    if backend == "cuda":
        pytest.importorskip("cupy", reason="this structural operation on CUDA needs CuPy")


def examples(backend: str, cpu: int = 40, cuda: int = 10) -> int:
    """max_examples per backend: ``cpu`` (also on a real GPU); under the simulator, which
    runs each GPU thread as a Python thread, half of ``cuda`` (at least 2): its examples
    took ~700 s of the suite's ~2700 s of worker time on 2 cores."""
    if QUICK:
        return 3
    if backend == "cuda" and not REAL_GPU:
        return max(2, (cuda + 1) // 2)
    return cpu


def to_backend(a, backend: str):
    """``a`` as an array of ``backend``: as is for cpu, a numba device array for cuda."""
    if backend == "cpu":
        return a
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


class DLPackOnly:
    """An array producer with only ``__dlpack__`` / ``__dlpack_device__`` (as a PyTorch or JAX
    tensor is to hrarray, which must read it without importing them): CPU or CUDA, as ``a``."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def make_ragged(values, offsets_list, backend: str = "cpu", *, validate=True):
    """A ``RaggedArray`` from leaf values and per-level offsets (innermost first), by nesting
    ``hr.RaggedArray`` (API section 1), on ``backend``."""
    import hrarray as hr

    node = hr.RaggedArray(
        to_backend(values, backend), to_backend(offsets_list[0], backend), validate=validate
    )
    for offsets in offsets_list[1:]:
        node = hr.RaggedArray(node, to_backend(offsets, backend), validate=validate)
    return node


def is_backend_array(a, backend: str) -> bool:
    """Whether a result array lives in the input's array library: NumPy for cpu, a numba
    device array for cuda."""
    if backend == "cpu":
        return isinstance(a, np.ndarray)
    return not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host")
