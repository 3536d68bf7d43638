"""Compilation: lazy, cached on disk where writable, silently off where not."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _run(code: str, env: dict) -> str:
    full = dict(os.environ)
    full.update(env)
    full.pop("NUMBA_ENABLE_CUDASIM", None)
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=full, timeout=600, check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


PROBE = """
import numpy as np, hrarray as hr
from hrarray._kernels import _codegen as cg
x = hr.from_lengths(np.arange(6.0), [2, 0, 4])
assert hr.sum(x).tolist() == [1.0, 0.0, 14.0]
folder, disk = cg.generated_dir()
import pathlib
cached = sorted(p.name for p in pathlib.Path(folder).rglob("*.nbi"))
print(disk, len(cached))
"""


def test_cache_dir_is_used_and_reused(tmp_path):
    env = {"HRARRAY_CACHE_DIR": str(tmp_path / "c")}
    disk, n = _run(PROBE, env).split()
    assert disk == "True"
    assert int(n) > 0
    # a second process finds the index files and adds none for the same kernels
    disk2, n2 = _run(PROBE, env).split()
    assert disk2 == "True"
    assert n2 == n


def test_cache_off_switch(tmp_path):
    env = {"HRARRAY_CACHE_DIR": str(tmp_path / "c"), "HRARRAY_CACHE": "0"}
    disk, n = _run(PROBE, env).split()
    assert disk == "False"
    assert int(n) == 0
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.nbi"))


def test_unwritable_locations_fall_back_silently(tmp_path):
    code = (
        "from hrarray._kernels import _codegen as cg\n"
        "cg._writable = lambda path: False  # a read-only install and HOME\n" + PROBE
    )
    disk, n = _run(code, {}).split()
    assert disk == "False"
    assert int(n) == 0


DAMAGE_PROBE = """
import numpy as np, hrarray as hr
x = hr.from_lengths(np.arange(6.0), [2, 0, 4])
assert hr.sum(x).tolist() == [1.0, 0.0, 14.0]
assert hr.max(x).tolist() == [1.0, -np.inf, 5.0]
print("ok")
"""


@pytest.fixture(scope="module")
def probed_cache(tmp_path_factory):
    """A cache folder that DAMAGE_PROBE has filled (``HRARRAY_NATIVE=0``), once per worker:
    the damage tests copy it (a copy loads: 0.5 s, against 5.2 s cold) instead of each
    compiling the same kernels first."""
    folder = tmp_path_factory.mktemp("probed") / "c"
    env = {"HRARRAY_CACHE_DIR": str(folder), "HRARRAY_NATIVE": "0"}
    assert _run(DAMAGE_PROBE, env).strip() == "ok"
    return folder


@pytest.mark.parametrize("damage", ["truncate-index", "garbage-index", "garbage-data"])
def test_damaged_numba_cache_files_are_recompiled(tmp_path, damage, probed_cache):
    """From an audit: one truncated or overwritten Numba cache file (``.nbi`` index, ``.nbc``
    data) made every later call raise ``UnpicklingError``, in every process, until the file
    was deleted by hand (even the constructor: its validation kernel). A damaged file is
    now a cache miss: the kernel is compiled and cached again. (``HRARRAY_NATIVE=0``: the
    native entries alone would not read Numba's files.)"""
    env = {"HRARRAY_CACHE_DIR": str(tmp_path / "c"), "HRARRAY_NATIVE": "0"}
    shutil.copytree(probed_cache, tmp_path / "c")
    pattern = "*.nbc" if damage == "garbage-data" else "*.nbi"
    files = sorted((tmp_path / "c").rglob(pattern))
    assert files
    for f in files:
        if damage == "truncate-index":
            f.write_bytes(f.read_bytes()[:20])
        else:
            f.write_bytes(b"\x80\x04not a pickle" * 3)
    assert _run(DAMAGE_PROBE, env).strip() == "ok"
    # the cache is whole again: a third process still runs (and reads it)
    assert _run(DAMAGE_PROBE, env).strip() == "ok"


def test_a_shared_dispatcher_is_wrapped_once():
    """A review: helpers injected into many generated modules (the prefetch helper) were
    wrapped again at each module's import; after ~1,200 user-reducer modules a load hit the
    recursion limit inside the wrappers, was taken for a damaged file, and turned the healthy
    cache off."""
    numba = pytest.importorskip("numba")
    from hrarray._kernels import _codegen as cg

    @numba.njit(cache=True)
    def helper(a):
        return a + 1

    cg._tolerate_damaged_cache(helper)
    wrapped = helper._cache.load_overload
    for _ in range(5):
        cg._tolerate_damaged_cache(helper)
    assert helper._cache.load_overload is wrapped
    assert helper(1) == 2


TEMP_PROBE = """
import os, sys, numpy as np, hrarray as hr
from hrarray._kernels import _codegen as cg

def run(k):
    # A kernel's module is written (its folder made) when the kernel is built: with no
    # segments nothing is compiled (a compile is 2-3 s; the two cases made ~20)
    empty = hr.from_lengths(np.arange(0.0), [])
    r = hr.Reducer(identity=0.0, combine=lambda a, b: a + b, map=lambda v: v * k)
    assert hr.reduce(empty, r).shape == (0,)
    assert any(f.endswith(".py") for f in os.listdir(cg._private_dir))
    if k == 2.0:  # and one built-in kernel run on values
        assert hr.sum(hr.from_lengths(np.arange(6.0), [2, 0, 4])).tolist() == [1.0, 0.0, 14.0]
    else:
        assert hr.sum(empty).shape == (0,)

run(2.0)
pid = os.fork()
if pid == 0:
    run(3.0)  # a new user kernel in the child, which then exits normally
    sys.exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status
run(4.0)  # the parent's private folders outlived the child's exit
# fork workers end with os._exit (no atexit): they must not make folders of their own
import multiprocessing
with multiprocessing.get_context("fork").Pool(2) as pool:
    pool.map(run, [5.0])
if os.environ["HRARRAY_CACHE"] == "0":
    with multiprocessing.get_context("fork").Pool(1) as pool:  # a new built-in kernel too
        assert pool.apply(hr.max, (hr.from_lengths(np.arange(0, dtype=np.int16), []),)).size == 0
print(len(os.listdir(os.environ["TMPDIR"])))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("cache", ["1", "0"])
def test_temporary_kernel_folders_are_removed_at_exit(tmp_path, cache):
    """From a review: each process that built a user Reducer, and each process without a
    disk cache, left a ``hrarray-*kernels-*`` folder in the temp dir (hundreds piled up
    here). They go when their process exits, not when a forked child does; forked
    children, Pool workers included (which skip atexit), write into their parent's."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "HRARRAY_CACHE_DIR": str(tmp_path / "c"), "HRARRAY_CACHE": cache}
    assert _run(TEMP_PROBE, env).strip() != "0"  # the folders exist while it runs
    assert sorted(os.listdir(tmp)) == []
    # workers forked before the parent made any folder make their own (review R3), and
    # the Pool's terminate() ends them with SIGTERM: no atexit. Their folders carry their
    # pid, and the next process that makes a folder removes those of processes gone
    cold = TEMP_PROBE.replace("run(2.0)\npid = os.fork()", "pid = os.fork()", 1)
    cold = cold.replace("run(4.0)  #", "pass  #", 1)
    assert cold.count("run(") == 2  # the child's and the Pool's
    _run(cold, env)
    left = sorted(os.listdir(tmp))
    assert left
    assert all(re.fullmatch(r"hrarray-(user-)?kernels-\d+-\w+", n) for n in left)
    assert _run("import hrarray as hr\n" + TEMP_PROBE.split("run(2.0)")[0] + "run(2.0)\n"
                "print(0)", env).strip() == "0"
    assert sorted(os.listdir(tmp)) == []


def test_damaged_generated_modules_are_written_again(tmp_path, probed_cache):
    """From a helper's audit: a generated kernel module (``hrk_*.py``) truncated or edited
    in the cache raised SyntaxError from every later process that had to compile from it
    (the docs promise a damaged cache file is a miss). It is now compared with its source
    and written again; a removed private folder is made again too."""
    env = {"HRARRAY_CACHE_DIR": str(tmp_path / "c"), "HRARRAY_NATIVE": "0"}
    shutil.copytree(probed_cache, tmp_path / "c")
    files = sorted((tmp_path / "c").glob("hrk_*.py"))
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:300])
    assert _run(DAMAGE_PROBE, env).strip() == "ok"
    assert _run(DAMAGE_PROBE, env).strip() == "ok"
    code = """
    import shutil, numpy as np, hrarray as hr
    from hrarray._kernels import _codegen as cg
    x = hr.from_lengths(np.arange(6.0), [2, 0, 4])
    def r(k):
        return hr.Reducer(identity=0.0, combine=lambda a, b: a + b, map=lambda v: v * k)
    assert hr.reduce(x, r(2.0)).tolist() == [2.0, 0.0, 28.0]
    shutil.rmtree(cg._private_dir)  # as a temp cleaner would
    assert hr.reduce(x, r(3.0)).tolist() == [3.0, 0.0, 42.0]
    print("ok")
    """
    assert _run(code, env).strip() == "ok"
