"""Native entries (``hrarray._kernels.native``): the CPU kernels called from a
disk-cached object without Numba's dispatcher. Every other CPU test runs
through them too (they are the default); these pin that they give the
dispatcher's results bit for bit, that a warm process never imports Numba,
and that every way an entry can be unusable falls back to the dispatcher."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import strategies as hst

import hrarray as hr
from hrarray._backends import cpu as cpu_backend
from hrarray._kernels import cpu as kc
from hrarray._kernels import native

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.skipif(native.engine() is None, reason="native entries are off here"),
]


def _functions():
    fns = [getattr(k, n) for k in kc._compiled.values() for n in kc._FUNCTIONS]
    if cpu_backend._validator is not None:
        fns.append(cpu_backend._validator)
    return fns


def _entries() -> dict:
    return {(id(f), k): e for f in _functions() for k, e in f._entries.items()}


@pytest.fixture
def dispatcher_only(monkeypatch):
    """Run a callable with the native path off (entries forgotten, no engine),
    then restore; a function, not a context, to keep call sites short."""

    def run(fn):
        saved = {id(f): dict(f._entries) for f in _functions()}
        for f in _functions():
            f._entries.clear()
        monkeypatch.setattr(native, "_engine", False)
        try:
            return fn()
        finally:
            monkeypatch.undo()
            for f in _functions():
                f._entries.clear()
                f._entries.update(saved.get(id(f), {}))

    return run


def _data(rng, dtype, ndim, strided, off32):
    n = 700
    v = rng.standard_normal((n, 10) if ndim == 2 else (2 * n,))
    if strided:
        v = v[:, ::3] if ndim == 2 else v[::2]
    else:
        v = v[:n]
    dt = np.dtype(dtype)
    if dt.kind == "f":
        v = v.astype(dt)
        v[rng.integers(0, n, 9)] = np.nan
        v[rng.integers(0, n, 3)] = np.inf
        v[rng.integers(0, n, 3)] = -np.inf
    elif dt.kind == "b":
        v = v > 0
    elif dt.kind == "c":
        v = (v + 1j * v[::-1]).astype(dt)
        v[rng.integers(0, n, 5)] = complex(np.nan, 1.0)
    else:
        v = (v * 20).astype(dt)
    lens = rng.integers(0, 9, 150)
    lens[rng.integers(0, 150, 60)] = 0
    off = np.concatenate([[0], np.cumsum(lens)])
    off = off[off <= n].astype(np.int32 if off32 else np.int64)
    return hr.RaggedArray(v, off)


# one op of each kernel style (simd sum, lanes, extreme, arg-extreme, lse,
# var's float64 kernel, nan variants, bool) on the dtypes that reach them
CASES = [
    ("sum", "float32"), ("sum", "int64"), ("mean", "float64"), ("prod", "float64"),
    ("max", "float32"), ("min", "int32"), ("argmax", "float32"), ("argmin", "float64"),
    ("nanargmax", "float64"), ("nanmax", "float32"), ("nansum", "float64"),
    ("logsumexp", "float32"), ("var", "float32"), ("std", "float64"), ("any", "bool"),
    ("count_nonzero", "float64"), ("sum", "complex128"), ("mean", "complex64"),
]
# strided values with int32 offsets in chunks: an entry unpacks arrays by layout and dtype
# kind, the same code for every op, so a few cases (each one more compile of 1-3 s) cover
# float, integer, bool and complex arrays of both layouts
STRIDED_CASES = {("sum", "float32"), ("min", "int32"), ("logsumexp", "float32"),
                 ("any", "bool"), ("mean", "complex64")}


@pytest.mark.parametrize(("op", "dtype"), CASES)
def test_native_matches_dispatcher(op, dtype, dispatcher_only, monkeypatch):
    rng = np.random.default_rng(zlib.crc32(f"{op}{dtype}".encode()))
    fn = getattr(hr, op)
    # sum float32 on both layouts, the others on the one this run's seed picks (the kernels
    # the other tests compile; every case meets both layouts within a few seeds): each
    # layout is one more compiled kernel of 1-3 s, ~40 s of the suite for all of them
    both = (op, dtype) == ("sum", "float32")
    for ndim in (1, 2) if both else (hst.kernel_ndim(op, dtype),):
        variants = ((False, False, None), (True, True, 3))
        for strided, off32, chunks in variants if (op, dtype) in STRIDED_CASES else variants[:1]:
            x = _data(rng, dtype, ndim, strided, off32)
            monkeypatch.setattr(kc, "FORCE_CHUNKS", chunks)
            before = _entries()
            got = fn(x)
            new = {k: e for k, e in _entries().items() if k not in before}
            # entries made for this call (none if an earlier test made them)
            assert all(e is not None for e in new.values()), "the native path was not taken"
            want = dispatcher_only(lambda x=x: fn(x))
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_fill_value_and_levels(dispatcher_only):
    x = hr.from_lengths(np.arange(12.0, dtype=np.float32), [3, 0, 4, 0, 5])
    nested = hr.nest(x.values, x.offsets, [0, 2, 5])
    for f in (lambda: hr.max(x, fill_value=-7.5), lambda: hr.argmax(x, fill_value=-1),
              lambda: hr.sum(nested, levels=2), lambda: hr.mean(nested, levels=2)):
        np.testing.assert_array_equal(f(), dispatcher_only(f))


def test_unsupported_arguments_take_the_dispatcher():
    # unaligned values have no entry; their results stay right
    raw = np.zeros(8 * 40 + 1, np.uint8)
    vals = np.frombuffer(raw.data, dtype=np.float64, count=40, offset=1)
    assert not vals.flags.aligned
    keys = native.call_key([vals, np.complex128(1), vals.copy(), np.float32(1), 2])
    assert [native.arg_key(k) for k in keys] == [None, "D", ("a", "d", 1, True), "f", "q"]
    x = hr.from_lengths(vals, [10, 0, 30])
    np.testing.assert_array_equal(hr.sum(x), [0.0, 0.0, 0.0])
    z = hr.from_lengths(np.arange(6) * (1 + 1j), [2, 0, 4])
    np.testing.assert_array_equal(hr.sum(z), [1 + 1j, 0, 14 + 14j])


def test_off_switch(monkeypatch):
    monkeypatch.setenv("HRARRAY_NATIVE", "0")
    monkeypatch.setattr(native, "_engine", None)
    assert native.engine() is None
    monkeypatch.setattr(native, "_engine", None)  # a later engine() starts afresh


def test_unresolvable_symbol_is_refused():
    eng = native.engine()
    # checked before anything is added to the engine: nothing to load here
    assert eng.load(b"", "nothing", ["hrarray_no_such_symbol"]) is None
    assert eng.resolvable("memset")
    assert not eng.resolvable("hrarray_no_such_symbol")


def test_undefined_symbols_reads_elf_only():
    with pytest.raises(ValueError, match="ELF"):
        native.undefined_symbols(b"MZ" + bytes(100))


def _run(code: str, env: dict) -> str:
    full = dict(os.environ)
    full.update(env)
    full.pop("NUMBA_ENABLE_CUDASIM", None)
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=full, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


WARM = """
import sys
import numpy as np, hrarray as hr
x = hr.from_lengths(np.arange(6.0), [2, 0, 4])
assert hr.sum(x).tolist() == [1.0, 0.0, 14.0]
# 2-D float32 max past the parallel threshold (cpu.PARALLEL_MIN_WORK_2D: 2**20
# scalars + segments): chunk and fix-up kernels
rng = np.random.default_rng(1)
v = rng.standard_normal((150000, 8)).astype(np.float32)
lens = rng.integers(0, 9, 36000)  # ~144k rows x 8: past it with room
off = np.concatenate([[0], np.cumsum(lens)])
off = off[off <= len(v)]
y = hr.RaggedArray(v, off)
got = hr.max(y)
want = np.stack([v[a:b].max(axis=0) if b > a else np.full(8, -np.inf, np.float32)
                 for a, b in zip(off[:-1], off[1:])])
np.testing.assert_array_equal(got, want)
print("numba" in sys.modules)
"""


def test_warm_process_imports_no_numba(tmp_path):
    env = {"HRARRAY_CACHE_DIR": str(tmp_path / "c"), "HRARRAY_NUM_THREADS": "2"}
    assert _run(WARM, env) == "True"  # builds the kernels and their entries
    entries = sorted((tmp_path / "c" / "native").glob("*.hrn"))
    assert len(entries) >= 4  # check_offsets, chunks_1d, chunks_2d, fixup_2d
    assert _run(WARM, env) == "False"
    # damaged entries (checksum) are rebuilt, with the dispatcher meanwhile
    for p in entries:
        data = bytearray(p.read_bytes())
        data[-1] ^= 0xFF
        p.write_bytes(bytes(data))
    assert _run(WARM, env) == "True"
    assert _run(WARM, env) == "False"
    # and off, the same results through the dispatcher
    assert _run(WARM, {**env, "HRARRAY_NATIVE": "0"}) == "True"


def test_entries_are_private_to_the_cache(tmp_path):
    # no cache, no entries: nothing written next to a read-only install
    env = {"HRARRAY_CACHE_DIR": str(tmp_path / "c"), "HRARRAY_CACHE": "0"}
    assert _run(WARM, env) == "True"
    assert not list(Path(tmp_path).rglob("*.hrn"))


ONE_CODEGEN = """
import numpy as np, hrarray as hr
from hrarray._kernels import cpu as kc, native

def kernels_with_entries():
    fns = [getattr(k, n) for k in kc._compiled.values() for n in kc._FUNCTIONS]
    return [f for f in fns if f.loaded()]

x = hr.from_lengths(np.arange(6.0), [2, 0, 4])
assert hr.sum(x).tolist() == [1.0, 0.0, 14.0]
fns = kernels_with_entries()
assert fns and native.stats["built"] >= 1
# the entry holds the kernel's code: Numba compiled none for its dispatcher
assert sum(len(f._dispatcher().overloads) for f in fns) == 0

def fail(*args):
    raise RuntimeError("Numba's internals otherwise")

native._kernel_module = fail  # the fallback: compiled through the dispatcher
y = hr.from_lengths(np.arange(6, dtype=np.int16), [2, 0, 4])
assert hr.sum(y).tolist() == [1, 0, 14]
new = [f for f in kernels_with_entries() if f not in fns]
assert new and all(f._dispatcher().overloads for f in new)
print("ok")
"""


def test_entries_compile_no_machine_code_for_the_dispatcher(tmp_path):
    """An entry's build compiles the kernel for the entry's object only (``_kernel_module``:
    no machine code, CPython wrapper or disk cache for Numba's dispatcher, ~0.2-0.5 s of a
    2-3 s cold compile); where Numba's internals differ, it compiles through the dispatcher
    and the entry is built all the same."""
    assert _run(ONE_CODEGEN, {"HRARRAY_CACHE_DIR": str(tmp_path / "c")}) == "ok"


# counts Numba's typings of each (function, argument types) pair; ``want``: the logsumexp
# of the scripts' small input x (made after their own set-up: its offsets check compiles)
COUNT_TYPINGS = """
import collections
import numpy as np, hrarray as hr
from numba.core.types import functions

calls = collections.Counter()
orig = functions.BaseFunction.get_call_type

def counting(fnty, context, args, kws):
    calls[(fnty, tuple(args), tuple(sorted(kws.items())))] += 1
    return orig(fnty, context, args, kws)

functions.BaseFunction.get_call_type = counting
want = [np.logaddexp(0.0, 1.0), -np.inf, np.log(np.exp(np.arange(2.0, 6.0)).sum())]
"""

TYPED_ONCE = COUNT_TYPINGS + """
from hrarray._kernels import native

x = hr.from_lengths(np.arange(6.0), [2, 0, 4])
np.testing.assert_allclose(hr.logsumexp(x), want, rtol=1e-14)
assert native.stats["built"] >= 1 and len(calls) > 50
# the method is Numba's again (here: the counter) once the build is over
assert functions.BaseFunction.__dict__["get_call_type"] is counting
# each (function, argument types) typed once per entry built, not per call site
worst = max(calls.items(), key=lambda kv: kv[1])
assert worst[1] <= native.stats["built"], (worst, native.stats["built"])
print("ok")
"""


def test_entry_builds_type_each_function_call_once(tmp_path):
    """An entry's build types each (function, argument types) pair once (``_typing_memo``):
    Numba tried the templates at every call site again, ~1800 typings of ~190 pairs for one
    logsumexp kernel (``bool`` of a bool 185 times), 11-16 % of a cold compile. The
    result is checked, and Numba's method is back once the build is over."""
    assert _run(TYPED_ONCE, {"HRARRAY_CACHE_DIR": str(tmp_path / "c")}) == "ok"


SWAP = """
import numpy as np, hrarray as hr
x = hr.RaggedArray(np.arange(8, dtype=np.float32), [0, 3, 8])
assert hr.sum(x).tolist() == [3.0, 25.0]
assert hr.argmax(x).tolist() == [2, 4]
print("ok")
"""


def test_an_entry_under_another_entrys_name_is_not_loaded(tmp_path):
    """From an audit: an entry file copied over another's name (the same folder, another
    kernel) was loaded as that kernel: its SHA-256 covers its object, not its key, so sum
    ran argmax's code on sum's arguments (a segmentation fault; another pair gave a wrong
    result, then a heap corruption abort). The header's name must match the file's."""
    env = {"HRARRAY_CACHE_DIR": str(tmp_path / "c")}
    assert _run(SWAP, env) == "ok"
    entries = sorted(p for p in (tmp_path / "c" / "native").glob("*.hrn")
                     if "check_offsets" not in p.name)
    assert len(entries) >= 2
    # every entry replaced by the next one's file
    blobs = [p.read_bytes() for p in entries]
    for p, blob in zip(entries, blobs[1:] + blobs[:1], strict=True):
        p.write_bytes(blob)
    assert _run(SWAP, env) == "ok"  # rebuilt, not loaded
    assert _run(SWAP, env) == "ok"


NRT_RACE = """
import json, pathlib, sys
import numpy as np, hrarray as hr
x = hr.from_lengths(np.arange(12.0), [3, 0, 4, 5])
if sys.argv[-1] == "race":
    # the interleaving a 32-thread run hit: entries loaded (by another thread) after
    # Numba registered its runtime symbols, before it compiled its runtime module
    from numba.core.runtime import nrtdynmod
    orig = nrtdynmod.compile_nrt_functions
    def patched(ctx):
        hr.logsumexp(x), hr.nanmean(x)
        return orig(ctx)
    nrtdynmod.compile_nrt_functions = patched
    r = hr.Reducer(identity=0.0, combine=lambda a, b: a + b, map=lambda v: v * v)
    assert hr.reduce(x, r).tolist() == [5.0, 0.0, 86.0, 415.0]
    print("ok")
else:
    hr.logsumexp(x), hr.nanmean(x)
    heads = [json.loads(p.read_bytes().split(b"\\n")[1])
             for p in pathlib.Path(sys.argv[-1]).glob("native/*.hrn")]
    print(len(heads), sorted({n for h in heads for n in h.get("undefined", [])}))
"""


def test_entries_name_no_numba_runtime_symbol(tmp_path):
    """From a helper's audit: an entry naming Numba's ``NRT_MemInfo_call_dtor`` (the
    destructor call in an inlined decref, never reached for our views) was loaded after
    ``llvm.add_symbol(name, abort)``, which is process-wide: between Numba's registering
    its runtime symbols and compiling its runtime module, that linked Numba's own decref
    to abort(), and the process died (SIGABRT) at the first destructor. Entries now define
    the stub themselves (internal); none names a runtime symbol, nothing is added to the
    symbol table, and the forced interleaving runs."""
    cache = tmp_path / "c"
    env = {"HRARRAY_CACHE_DIR": str(cache)}
    full = dict(os.environ, **env)
    full.pop("NUMBA_ENABLE_CUDASIM", None)

    def run(arg):
        return subprocess.run([sys.executable, "-c", NRT_RACE, arg], capture_output=True,
                              text=True, env=full, timeout=600, check=False)

    res = run(str(cache))  # builds the entries
    assert res.returncode == 0, res.stderr
    n, names = res.stdout.split(maxsplit=1)
    assert int(n) >= 2
    assert "NRT_" not in names, names
    res = run("race")  # a warm process: the entries load inside Numba's runtime start
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.strip() == "ok"


DISPATCHER_TYPED_ONCE = COUNT_TYPINGS + """
from numba.core import dispatcher

compiles, depth = [0], [0]
orig_compile = dispatcher.Dispatcher.compile

def compile(self, sig):
    depth[0] += 1
    try:
        if depth[0] == 1:
            compiles[0] += 1
        return orig_compile(self, sig)
    finally:
        depth[0] -= 1

dispatcher.Dispatcher.compile = compile
x = hr.from_lengths(np.arange(6.0), [2, 0, 4])
np.testing.assert_allclose(hr.logsumexp(x), want, rtol=1e-14)
r = hr.Reducer(identity=0.0, combine=lambda a, b: a + b, map=lambda v: v * v)
assert hr.reduce(x, r).tolist() == [1.0, 0.0, 4.0 + 9.0 + 16.0 + 25.0]
assert compiles[0] >= 2 and len(calls) > 50
worst = max(calls.items(), key=lambda kv: kv[1])
assert worst[1] <= compiles[0], (worst, compiles[0])
print("ok")
"""


def test_dispatcher_path_types_each_function_call_once(tmp_path):
    """Where a kernel takes Numba's dispatcher (``HRARRAY_NATIVE=0`` here; user reducers
    everywhere) it is compiled before its first call under the same memo
    (``native._compile_typed_once``): each (function, argument types) pair typed at most
    once per kernel compiled, where Numba's own first call typed it at every call site."""
    env = {"HRARRAY_CACHE_DIR": str(tmp_path / "c"), "HRARRAY_NATIVE": "0",
           "NUMBA_CACHE_DIR": str(tmp_path / "n")}
    assert _run(DISPATCHER_TYPED_ONCE, env) == "ok"


READ_ONLY_ONCE = """
import numpy as np
import hrarray as hr
from hrarray import _kernels
r = hr.Reducer(identity=0.0, combine=lambda a, b: a + b, map=lambda v: v * v)
v = np.arange(100.0)
off = np.arange(0, 101, 10)
want = np.add.reduceat(v * v, off[:-1])
ro_v, ro_o = v.copy(), off.copy()
ro_v.flags.writeable = ro_o.flags.writeable = False
np.testing.assert_array_equal(hr.reduce(hr.RaggedArray(v, off), r), want)
first = _kernels.compiled_count()
assert first >= 1, first
for vals, offs in ((ro_v, off), (v, ro_o), (ro_v, ro_o)):
    np.testing.assert_array_equal(hr.reduce(hr.RaggedArray(vals, offs), r), want)
assert _kernels.compiled_count() == first, (first, _kernels.compiled_count())
assert v.flags.writeable and off.flags.writeable  # the caller's arrays as they were
print("ok")
"""


def test_dispatcher_path_compiles_once_for_read_only_arrays(tmp_path):
    """A user reducer (the dispatcher path) over read-only values or offsets (an Arrow
    buffer, a memmap, a transform's offsets) runs the kernel compiled for writable ones:
    Numba types a read-only array apart, and each such call compiled the kernel again
    (1-3 s). The caller's arrays stay writable."""
    env = {"HRARRAY_CACHE_DIR": str(tmp_path / "c"), "NUMBA_CACHE_DIR": str(tmp_path / "n")}
    assert _run(READ_ONLY_ONCE, env) == "ok"


def test_call_type_memo_puts_numba_s_method_back_after_overlapping_scopes():
    """Compiles in two threads overlap (a CPU entry's build, a GPU kernel's first launch):
    both type through one memo, and Numba's own method is back when the last leaves, not
    when the first does (nor the memo of one left installed by the other)."""
    import threading

    from numba.core.types import functions

    from hrarray._kernels._typing_memo import call_type_memo

    def current():
        return functions.BaseFunction.__dict__["get_call_type"]

    numba_s = current()
    first = call_type_memo()
    first.__enter__()
    memo = current()
    assert memo is not numba_s
    entered, leave, seen = threading.Event(), threading.Event(), []

    def other():
        with call_type_memo():
            seen.append(current())
            entered.set()
            leave.wait(30)
        seen.append(current())

    t = threading.Thread(target=other)
    t.start()
    assert entered.wait(30)
    first.__exit__(None, None, None)  # the first one out: the other still compiles
    assert current() is memo
    leave.set()
    t.join(30)
    assert seen == [memo, numba_s]
    assert current() is numba_s


def test_call_type_memo_changes_nothing_where_numba_differs(monkeypatch):
    """Where Numba's internals are not what the memo expects (here a function it imports is
    missing), entering it changes nothing, raises nothing, and Numba types as it does."""
    from numba.core import target_extension
    from numba.core.types import functions

    from hrarray._kernels._typing_memo import call_type_memo

    numba_s = functions.BaseFunction.__dict__["get_call_type"]
    monkeypatch.delattr(target_extension, "get_local_target")
    with call_type_memo():
        assert functions.BaseFunction.__dict__["get_call_type"] is numba_s
    assert functions.BaseFunction.__dict__["get_call_type"] is numba_s
