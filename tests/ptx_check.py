"""Compile hrarray's CUDA kernels to PTX with the real numba-cuda compiler, no GPU needed.

The CUDA simulator (which the test suite uses without a GPU) runs kernels as Python: it
never types, lowers or compiles them, so a kernel that a real GPU would reject (a type that
does not unify, a warp shuffle of a type it cannot move, an unsupported NumPy call) passes
every simulator test. This script closes that gap: in a process *without*
``NUMBA_ENABLE_CUDASIM`` it drives each kernel object's ``run()`` exactly as the CUDA
backend does, on NumPy stand-ins for device arrays, and replaces every launch by
``numba.cuda.compile_ptx`` with the argument types the launch would have (NVVM only: the
``test`` extra brings libNVVM with numba-cuda). The kernels are generated with the GPU
settings (BLOCK 256, ITEMS 8, warp shuffles where the state allows), i.e. the code a GPU
runs, not the simulator's emulation. Each PTX is then assembled for sm_90 by nvJitLink
(ptxas inside; also brought by the ``test`` extra), which rejects what a GPU would refuse to
load (too much static shared memory, too many registers) and reports registers per thread.

Usage::

    python tests/ptx_check.py           # smoke set: one op per kind of state, 1-D and 2-D
    python tests/ptx_check.py --seed N  # the test suite's: sum both, the others one layout
    python tests/ptx_check.py --wide    # every op, every state dtype, every layout (~650)
    python tests/ptx_check.py --all     # every op x every dtype x layout (~1 s per kernel)

Exit status: 0 all compiled, 1 a kernel failed (listed), 3 no libNVVM here (nothing checked).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
import zlib

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    sys.exit("ptx_check: run without NUMBA_ENABLE_CUDASIM (the simulator compiles nothing)")

import numba
import numpy as np
from numba import cuda

CC = (9, 0)

# No driver here: device functions ask the current device for its compute capability, and the
# carry buffers come from cuda.device_array. Both are stood in for; nothing is launched.
import numba.cuda.dispatcher as _dispatcher  # noqa: E402

_dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC, id=0)
cuda.device_array = lambda n, dtype, stream=0: np.empty(n, dtype)

import hrarray._backends.cuda as B  # noqa: E402
import hrarray._kernels.cuda as K  # noqa: E402
from hrarray import _ops  # noqa: E402
from hrarray import _transforms_ops as T  # noqa: E402
from hrarray._kernels._typing_memo import call_type_memo  # noqa: E402

_done: dict = {}
_failures: list = []


def _compile(fn, args, what: str) -> None:
    argtys = tuple(numba.typeof(a) for a in args)
    key = (id(fn), argtys)
    if key in _done:
        return
    t = time.perf_counter()
    name = fn.py_func.__name__
    try:
        # each (function, argument types) typed once, as on a GPU's first launch
        with call_type_memo():
            ptx, _ = cuda.compile_ptx(fn.py_func, argtys, cc=CC)
    except Exception as e:  # report every failing kernel, not just the first
        _failures.append((what, name, argtys, e))
        print(f"FAIL {what}: {name}{argtys}: {type(e).__name__}: {str(e)[:400]}", flush=True)
        _done[key] = False
        return
    used = ""
    if _nvjitlink() is not None:
        ok, log = assemble(ptx, name)
        if not ok:
            _failures.append((what, name, argtys, log[:2000]))
            print(f"FAIL {what}: {name}{argtys}: nvJitLink: {log[:400]}", flush=True)
            _done[key] = False
            return
        used = "; ".join(ln.split(": ", 1)[-1].strip() for ln in log.splitlines() if "Used" in ln)
    _done[key] = True
    print(f"ok   {what}: {name} ({len(ptx)} chars, {time.perf_counter() - t:.2f} s) {used}",
          flush=True)


_current = ["?"]


def _fake_launch(fn, grid, block, stream, args):
    _compile(fn, args, _current[0])


K.launch = _fake_launch
B.launch = _fake_launch

ALL_DTYPES = ("bool", "int8", "uint16", "int32", "int64", "uint64", "float16", "float32",
              "float64", "complex64", "complex128")

# The smoke set: one op per kind of state the warp seam and the kernels handle (float64
# sum state, tuple (value, index), complex, bool, a narrow integer shuffled as int64, the
# float64 pair of logsumexp), 1-D and 2-D, plus the transforms' kernel kinds.
SMOKE = {
    "sum": ("float32",),
    "argmax": ("float32",),
    "var": ("complex64",),
    "any": ("bool",),
    "max": ("int8",),
    "first": ("complex128",),
    "logsumexp": ("float32",),
    "nanargmin": ("float16",),
}

# Wide: every op once per *state type* its declaration can have (float/int/uint/
# bool/complex accumulators, tuple states, the float64-widened float16/float32 states).
QUICK = {
    "sum": ("bool", "int8", "uint16", "float16", "float32", "complex64"),
    "prod": ("int32", "float64", "complex128"),
    "mean": ("int64", "float32", "complex64"),
    "var": ("uint16", "float32", "complex128"),
    "std": ("float64",),
    "max": ("bool", "int8", "uint64", "float16", "float32"),
    "min": ("int32", "float64"),
    "argmax": ("int8", "float32", "float64"),
    "argmin": ("uint16", "float16"),
    "count": ("float32",),
    "count_nonzero": ("complex64", "int8"),
    "any": ("bool", "float64"),
    "all": ("int32",),
    "logsumexp": ("int8", "float32", "float64"),
    "first": ("complex128", "float32", "bool"),
    "last": ("int64",),
    "nansum": ("float32",),
    "nanmean": ("float16",),
    "nanvar": ("float64",),
    "nanstd": ("float32",),
    "nanmax": ("float32",),
    "nanmin": ("float64",),
    "nanargmax": ("float32",),
    "nanargmin": ("float64",),
}


def _values(dt, layout: str, n: int = 40, m: int = 3):
    dt = np.dtype(dt)
    if layout == "1d":
        return np.zeros(n, dt)
    if layout == "1d-strided":
        return np.zeros(2 * n, dt)[::2]
    if layout == "2d":
        return np.zeros((n, m), dt)
    return np.zeros((n, 2 * m), dt)[:, ::2]  # 2d-strided


def _out(shape_nseg, values, dt):
    return np.empty((shape_nseg,) if values.ndim == 1 else (shape_nseg, values.shape[1]), dt)


OFFSETS = np.array([0, 10, 10, 40], np.int64)
LAYOUTS = ("1d", "2d", "1d-strided", "2d-strided")


def check_reduction(op, dt, layouts, unstaged=True) -> None:
    try:
        spec = _ops.build(op, dt)
    except TypeError:
        return  # not defined for this dtype (complex max, ...)
    for layout in layouts:
        _current[0] = f"{op}[{dt}, {layout}]"
        v = _values(spec.value_dtype, layout)
        out = _out(3, v, spec.out_dtype)
        K.get_kernel(spec.decl, value_dtype=v.dtype).run(
            v, OFFSETS, out, spec.out_dtype.type(0), False)
        if unstaged:
            # without a staging dtype the tile is read from global memory in place
            K.get_kernel(spec.decl).run(v, OFFSETS, out, spec.out_dtype.type(0), True)


def check_transforms(dtypes, layouts, scores=("float32", "float64", "int8")) -> None:
    for dt in dtypes:
        ndt = np.dtype(dt)
        for layout in layouts:
            if ndt.kind in "biuf":
                for name in ("softmax", "log_softmax"):
                    _current[0] = f"{name}[{dt}, {layout}]"
                    stats = T.softmax_stats(name, ndt)
                    v = _values(stats.value_dtype, layout)
                    per = _out(3, v, stats.out_dtype)
                    K.get_kernel(stats.decl, value_dtype=v.dtype).run(
                        v, OFFSETS, per, stats.out_dtype.type(0), False)
                    mdecl = T.softmax_map(name, ndt)
                    out = _out(40, v, mdecl.out_dtype)
                    K.get_kernel(mdecl, "map").run(v, OFFSETS, per, out)
                for sdt in scores:
                    _current[0] = f"attention_pool[{dt}, scores {sdt}, {layout}]"
                    spec = T.attention_spec(ndt, np.dtype(sdt))
                    v = _values(spec.value_dtype, layout)
                    w = np.zeros(40, np.float32 if sdt == "float16" else sdt)
                    wh = np.zeros((40, 2), w.dtype)[:, 1]  # one head of (n, h) scores
                    out = _out(3, v, spec.out_dtype)
                    k = K.get_kernel(spec.decl, value_dtype=v.dtype)
                    fill = spec.out_dtype.type(0)
                    k.run(v, OFFSETS, out, fill, False, aux=w)
                    k.run(v, OFFSETS, out, fill, True, aux=wh)
            _current[0] = f"cumsum[{dt}, {layout}]"
            spec = T.cumsum_spec(ndt)
            v = _values(spec.value_dtype, layout)
            out = _out(40, v, spec.out_dtype)
            K.get_kernel(spec.decl, "scan").run(v, OFFSETS, out, False)
            K.get_kernel(spec.decl, "scan").run(v, OFFSETS, out, True)
            _current[0] = f"broadcast[{dt}, {layout}]"
            mdecl = T.broadcast_map(ndt)
            per = _out(3, _values(ndt, layout), ndt)
            K.get_kernel(mdecl, "map").run(None, OFFSETS, per, _out(40, per, ndt))


def tuple_reducer(k: int):
    """A user Reducer whose state is ``k`` float64s (also host_path_check's)."""
    import hrarray as hr

    terms = ", ".join(f"a[{i}] + b[{i}]" for i in range(k))
    maps = ", ".join(f"v * {i + 1}.0" for i in range(k))
    ns: dict = {}
    exec(f"def combine(a, b):\n    return ({terms},)\n"
         f"def map_(v):\n    return ({maps},)\n"
         "def finalize(s, n):\n    return s[0]\n", ns)
    return hr.Reducer(identity=(0.0,) * k, combine=ns["combine"], map=ns["map_"],
                      finalize=ns["finalize"])


def check_large_states() -> None:
    """User Reducers whose per-thread state passes the shared memory a 256 x 16 block
    has room for (six float64s needed 49,168 bytes; 48 KiB allowed): the kernel must
    shrink its block (K._fit_shared) and still assemble. 1-D only: the state sizes, not
    the layouts, are what is checked. 40 components: past the 30 items a tuple display
    may hold before CPython builds it through a list (the kernels add tuples of 30)."""
    import sys as _sys

    red = _sys.modules["hrarray.reduce"]
    for k in (6, 24, 40):
        r = tuple_reducer(k)
        spec = red._spec_for(r, np.dtype(np.float64), None, 0)
        _current[0] = f"user Reducer, {k} float64 state"
        v = _values(np.float64, "1d")
        K.get_kernel(spec.decl, value_dtype=v.dtype).run(
            v, OFFSETS, _out(3, v, spec.out_dtype), spec.out_dtype.type(0), False)


def check_backend_kernels() -> None:
    """The small structural kernels of the CUDA backend, with the types it launches."""
    _current[0] = "backend"
    for odt in (np.int64, np.int32, np.uint32):
        offs = np.zeros(5, odt)
        _compile(B._k_validate, (offs, np.int64(0), np.zeros(5, np.int64)), "backend")
        _compile(B._k_diff, (offs, np.zeros(4, np.int64)), "backend")
        _compile(B._k_ends, (offs, np.zeros(2, np.int64)), "backend")
        _compile(B._k_shift, (offs, odt(0), np.zeros(5, odt)), "backend")
    _compile(B._k_first_past_int64, (np.zeros(5, np.uint64), np.zeros(1, np.int64)), "backend")
    for adt, bdt in ((np.int64, np.int64), (np.int32, np.int32), (np.int32, np.int64),
                     (np.int64, np.int32)):
        _compile(B._k_first_mismatch, (np.zeros(5, adt), np.zeros(5, bdt), np.zeros(1, np.int64)),
                 "backend")
    for adt in (np.int64, np.float32, np.bool_):
        _compile(B._k_take, (np.zeros(5, adt), np.zeros(3, np.int64), np.zeros(3, adt)),
                 "backend")
    # astype: float16 read as float32, strided inner shapes made contiguous
    for nd, src, dst_dt in ((1, np.zeros(8, np.float16)[::2], np.float32),
                            (2, np.zeros((4, 3), np.float64), np.float64),
                            (3, np.zeros((2, 3, 4), np.int32).transpose(2, 0, 1), np.int32)):
        dst = np.zeros(src.shape, dst_dt)
        _compile(B._cast_kernel(nd), (src, dst, np.int64(src.size)), "backend")
    # byte swap of non-native values (word views: a strided one, a complex's halves)
    for nd, word, unit, src in ((1, 4, 4, np.zeros(8, np.uint32)[::2]),
                                (2, 8, 4, np.zeros((3, 4), np.uint64)),
                                (1, 2, 2, np.zeros(5, np.uint16)),
                                (2, 8, 8, np.zeros((6, 2), np.uint64)[::2])):
        dst = np.zeros(src.shape, src.dtype)
        _compile(B._swap_kernel(nd, word, unit), (src, dst, np.int64(src.size)), "backend")


def _nvjitlink():
    try:
        from cuda.bindings import nvjitlink
    except ImportError:
        return None
    return nvjitlink


def assemble(ptx: str, name: str):
    """Assemble ``ptx`` for the target with nvJitLink (ptxas inside; a compiler library, no
    driver): catches what NVVM accepts but the GPU would not load (too much shared memory,
    too many registers). Returns ``(ok, log)``."""
    nvjitlink = _nvjitlink()
    opts = [f"-arch=sm_{CC[0]}{CC[1]}", "-verbose"]
    h = nvjitlink.create(len(opts), opts)
    try:
        data = ptx.encode()
        nvjitlink.add_data(h, nvjitlink.InputType.PTX, data, len(data), name)
        try:
            nvjitlink.complete(h)
            ok = True
        except nvjitlink.nvJitLinkError:
            ok = False
        logs = []
        for size_fn, get_fn in ((nvjitlink.get_error_log_size, nvjitlink.get_error_log),
                                (nvjitlink.get_info_log_size, nvjitlink.get_info_log)):
            buf = bytearray(size_fn(h))
            get_fn(h, buf)
            logs.append(buf.decode(errors="replace").strip("\x00").strip())
        return ok, "\n".join(x for x in logs if x)
    finally:
        nvjitlink.destroy(h)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("numba-cuda")
    except PackageNotFoundError:
        return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wide", action="store_true", help="every op, every kind of state")
    ap.add_argument("--all", action="store_true", help="every op x every dtype, every layout")
    ap.add_argument("--seed", type=int, default=None,
                    help="smoke set: besides sum, each op on one layout chosen by this seed "
                         "(the test suite passes its per-run seed: ~half the compiles; the "
                         "next seeds check the other layouts)")
    a = ap.parse_args(argv)
    try:
        cuda.compile_ptx(lambda x: None, (numba.float32[:],), cc=CC)
    except Exception as e:  # no libNVVM on this machine
        print(f"ptx_check: cannot compile PTX here ({type(e).__name__}: {e})")
        return 3
    print(f"numba-cuda {_version()}, cc {CC}, BLOCK {K.BLOCK}, "
          f"ITEMS {K.ITEMS}")
    t0 = time.perf_counter()
    if a.all:
        for op in _ops.OPS:
            for dt in ALL_DTYPES:
                check_reduction(op, dt, LAYOUTS)
        check_transforms(ALL_DTYPES, LAYOUTS)
    elif a.wide:
        for op, dts in QUICK.items():
            for i, dt in enumerate(dts):
                # every layout once per op; other dtypes on the plain 1-D/2-D layouts
                check_reduction(op, dt, LAYOUTS if i == 0 else ("1d", "2d"))
        check_transforms(("float32",), LAYOUTS)
        check_transforms(("float16", "int8", "complex64", "bool"), ("1d", "2d"))
        missing = sorted(set(_ops.OPS) - set(QUICK))
        if missing:
            _failures.append(("coverage", "QUICK", (), f"ops without a wide check: {missing}"))
    else:
        for op, dts in SMOKE.items():
            for dt in dts:
                layouts = ("1d", "2d")
                if a.seed is not None and op != "sum":
                    layouts = (layouts[zlib.crc32(f"{op}:{dt}:{a.seed}".encode()) & 1],)
                check_reduction(op, dt, layouts, unstaged=op == "sum")
        check_transforms(("float32",), ("1d",), scores=("float32",))
    check_large_states()
    check_backend_kernels()
    ok = sum(1 for v in _done.values() if v)
    print(f"{ok} kernel signatures compiled, {len(_failures)} failures, "
          f"{time.perf_counter() - t0:.1f} s")
    for what, name, argtys, e in _failures:
        print(f"  FAILED {what}: {name} {argtys}: {e!r}"[:600])
    return 1 if _failures else 0


if __name__ == "__main__":
    sys.exit(main())
