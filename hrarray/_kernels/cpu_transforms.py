"""CPU kernels of the segment-wise transforms: ``segment_map``, ``segment_scan``,
``reduce_aux``.

These are the three kernel kinds that ``hrarray.transforms`` needs beyond a
plain reduction; each backend implements them from the same declarations
(:mod:`hrarray._transforms_ops`):

``segment_map(mdecl, values, offsets, per_segment)``
    ``out[j] = fn(values[j], per_segment[i])`` for every element ``j`` of
    segment ``i`` (``fn(per_segment[i])`` when the map does not read the
    values): the second pass of softmax, and broadcast.
``segment_scan(spec, values, offsets, exclusive)``
    a scan of a reduction declaration restarting at every segment:
    ``out[j] = finalize(combine(map(v_s), ..., map(v_j)), j - s + 1)``
    (exclusive: the state before ``v_j``); cumsum with the ``sum``
    declaration.
``reduce_aux(spec, values, offsets, aux, fill, use_fill)``
    a reduction whose ``map(v, w, j)`` reads a per-element auxiliary value
    ``w = aux[j]`` (attention scores); ``aux`` of shape ``(n, h)`` runs the
    reduction once per column of ``aux`` (head) and gives ``(nseg, h, ...)``.
    Attention pooling of 2-D values runs a hand-tuned row kernel (one running
    max and sum per row instead of per scalar); 1-D values, and every other
    declaration, run the generic reduction kernel of ``hrarray._kernels.cpu``.

Schedule
--------
Like the reductions (``hrarray._kernels.cpu``), the work is cut into
chunks (as many as its size calls for, whatever the thread count) along the
*merge path* of elements and segment ends, so a
chunk costs the same whether it holds a piece of one huge segment or
thousands of empty ones. A map needs no fix-up: each chunk writes the
elements it owns. A scan is *reduce-then-scan*::

    phase 1 (parallel)  each chunk reduces its open tail piece: the elements
                        of the segment still running at its right edge
    phase 2 (serial)    carry[c] = state of the segment running at the left
                        edge of chunk c, from the tails of chunks < c: O(T)
    phase 3 (parallel)  each chunk scans its elements, starting its first
                        piece from carry[c]

so a scan reads the values at most twice (only the tail pieces in phase 1:
once for many short segments) and writes them once. The map and scan
kernels are generated per declaration, like the reduction kernels, with the
few state load/store lines written from the state's arity.

float16 cannot be stored by Numba on the CPU: float16 results are computed
into float64 and rounded once (``astype``), which rounds each result
correctly.
"""

from __future__ import annotations

import numpy as np

from hrarray._kernels import _codegen as cg
from hrarray._kernels import _locks, native
from hrarray._kernels import cpu as _cpu
from hrarray._kernels.cpu import CALLEE_OPTS, FASTMATH, NO_WRAPPERS, decl_jits, get_kernel, launch
from hrarray._ops import _value_dtype
from hrarray._transforms_ops import exp_nonpos
from hrarray.reducer import Decl

__all__ = ["get_map_kernel", "get_scan_kernel", "reduce_aux", "segment_map", "segment_scan"]

_compiled: dict = {}
_compiled_lock = _locks.RLock()


# The map kernels compute each element on its own: no reduction for
# ``reassoc`` to vectorise, and it let LLVM rewrite log_softmax's
# ``(v - m) - log(s)`` as ``v - (m + log(s))``, whose rounding at ``|m|``
# (ulp(2**31) = 4.8e-7) showed in results near 0 (abs. error 1.1e-7 for
# float64 values near 2**31; exact without it, as on CUDA).
MAP_FASTMATH = FASTMATH - {"reassoc"}


def _header(cache: bool, fastmath=FASTMATH) -> list[str]:
    return [
        "import numba\n",
        "import numpy as np\n",
        # sorted: the same source text in every process, so the disk cache is hit
        f"_OPTS = dict(nogil=True, error_model='numpy', fastmath=set({sorted(fastmath)!r}), "
        f"cache={cache})\n\n",
    ]




def _kernel_out_dtype(dt: np.dtype) -> np.dtype:
    """The dtype a kernel writes: float64 for float16 (rounded once afterwards)."""
    return np.dtype(np.float64) if dt == np.float16 else dt


def _finish(out, dt: np.dtype):
    if out.dtype == dt:
        return out
    with np.errstate(over="ignore"):
        return out.astype(dt)


# ====================================================================== map


def _map_source(reads_values: bool, cache: bool) -> str:
    """``map_1d`` / ``map_2d`` (serial and parallel): chunk ``c`` writes the
    elements ``bj[c]:bj[c+1]`` it owns, segment piece by segment piece.
    The module also defines the CPU's ``exp_nonpos`` (``_cpu._EXP_NONPOS_SRC``),
    compiled with the map so that LLVM can inline and vectorise it."""
    src = _header(cache, MAP_FASTMATH)
    src.append("from hrarray._kernels._cpu_bits import bitcast_to_float, bitcast_to_int, "
               "wide_vectors\n")
    src.append(_cpu._EXP_NONPOS_SRC)
    v = "values, " if reads_values else ""
    if reads_values:
        row1, elem1 = "p = per[k]", "fn(values[j], p)"
        elem2 = "fn(values[j, col], per[k, col])"
    else:
        # the values are not read: fn(p) once per piece
        row1, elem1 = "p = fn(per[k])", "p"
        elem2 = "fn(per[k, col])"
    src.append(f"""
@numba.njit(**_OPTS)
def map_1d(c0, c1, {v}offsets, per, bi, bj, out):
    # 512-bit vectors where the CPU has them (_cpu_bits.wide_vectors): softmax's
    # map, an exp per element, is bound by arithmetic (0.75-0.98x the time)
    wide_vectors()
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    for c in range(c0, c1):
        i0 = bi[c]
        i1 = bi[c + 1]
        if i1 > nseg - 1:
            i1 = nseg - 1
        j0 = bj[c] + base
        j1 = bj[c + 1] + base
        for k in range(i0, i1 + 1):
            s = offsets[k]
            e = offsets[k + 1]
            a = s if s > j0 else j0
            b = e if e < j1 else j1
            {row1}
            # unsigned indices: no negative-index wrap-around, so LLVM writes
            # and reads contiguous vectors (signed, it vectorised fn with
            # gathers and scatters: 1-D log_softmax's map 1.5x slower)
            ubase = np.uint64(base)
            for j in range(np.uint64(a), np.uint64(b)):
                out[j - ubase] = {elem1}


@numba.njit(**_OPTS)
def map_2d(c0, c1, {v}offsets, per, bi, bj, out):
    wide_vectors()
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    m = out.shape[1]
    for c in range(c0, c1):
        i0 = bi[c]
        i1 = bi[c + 1]
        if i1 > nseg - 1:
            i1 = nseg - 1
        j0 = bj[c] + base
        j1 = bj[c + 1] + base
        for k in range(i0, i1 + 1):
            s = offsets[k]
            e = offsets[k + 1]
            a = s if s > j0 else j0
            b = e if e < j1 else j1
            for j in range(a, b):
                jj = j - base
                for col in range(m):
                    out[jj, col] = {elem2}
""")
    return "".join(src)


class CpuMapKernel:
    """The compiled map functions of one :class:`~hrarray._transforms_ops.MapDecl`."""

    def __init__(self, mdecl):
        self.mdecl = mdecl
        folder, disk = cg.generated_dir()
        path = cg.module_path(_map_source(mdecl.reads_values, disk), repr(("map",) + mdecl.key))

        def load():
            import numba

            jit = numba.njit(**{**CALLEE_OPTS, "fastmath": MAP_FASTMATH})
            # the CPU's own exp for declarations that close over exp_nonpos
            # (softmax: math.exp is a scalar libm call the loop cannot vectorise;
            # 25M float32, one thread, 131 ms against 28 ms). Set before any
            # function of the module compiles (they read fn then).
            mod = cg.import_module(path, {})
            mod.fn = cg.jitify(mdecl.fn, jit, {id(exp_nonpos): mod.exp_nonpos})
            return mod

        # native entries where cached (see hrarray._kernels.native)
        self._lazy = native.Lazy(load)
        self.map_1d, self.map_2d = native.functions(
            folder if disk else None, path.stem, ("map_1d", "map_2d"), self._lazy)

    def functions(self):
        m = self._lazy.loaded
        return [] if m is None else [m.map_1d, m.map_2d]

    def run(self, values, offsets, per, out):
        """``out`` (``(nvalues,)`` or ``(nvalues, m)``) from validated offsets."""
        if out.shape[0] == 0 or offsets.shape[0] < 2:
            return out
        two_d = out.ndim == 2
        m = out.shape[1] if two_d else 1
        _, bi, bj = _cpu.chunking(offsets, m)
        fn = self.map_2d if two_d else self.map_1d
        if two_d and self.mdecl.reads_values:
            values = _cpu._rows_view(values)  # map_2d reads out's m columns
        args = ((values,) if self.mdecl.reads_values else ()) + (offsets, per, bi, bj, out)
        launch(fn.resolve(None, (0, 1, *args)), bi.shape[0] - 1, *args)
        return out


def get_map_kernel(mdecl) -> CpuMapKernel:
    key = ("map",) + mdecl.key
    k = _compiled.get(key)
    if k is None:
        with _compiled_lock:
            k = _compiled.get(key)
            if k is None:
                k = CpuMapKernel(mdecl)
                _compiled[key] = k
    return k


def _rows(a, inner: tuple):
    """A view of ``a`` as ``(n,)`` when there are no inner dims, else ``(n, m)``."""
    if not inner:
        return a
    m = 1
    for d in inner:
        m *= int(d)
    return a.reshape(a.shape[0], m)


def _kernel_view(values, value_dtype: np.dtype):
    """``(array the kernel reads, inner shape)``: 1-D or 2-D rows, native byte order,
    float16 read as float32 (the only copies); strided arrays are read in place."""
    inner = tuple(values.shape[1:])
    if values.dtype != value_dtype or not values.dtype.isnative:
        values = values.astype(value_dtype.newbyteorder("="))
    return _rows(values, inner), inner


def segment_map(mdecl, values, offsets, per_segment):
    """Elementwise map over segments (see the module docstring).

    ``values`` is ``(n, *inner)`` (or None when the map does not read it),
    ``per_segment`` is ``(nseg, *inner)``; returns ``(nvalues, *inner)`` of
    ``mdecl.out_dtype``, compact (row 0 is element ``offsets[0]``).
    """
    nvals = int(offsets[-1]) - int(offsets[0])
    inner = tuple(per_segment.shape[1:])
    out_dt = mdecl.out_dtype
    per = per_segment
    if not mdecl.reads_values and out_dt == np.float16:
        # a pure copy: move float16 as its bits (Numba has no float16)
        per = per.view(np.uint16)
        kdt = np.dtype(np.uint16)
    else:
        kdt = _kernel_out_dtype(out_dt)
    if not per.dtype.isnative:
        per = per.astype(per.dtype.newbyteorder("="))
    per = _rows(per, inner)
    out = np.empty((nvals, *per.shape[1:]), kdt)
    if mdecl.reads_values:
        values, _ = _kernel_view(values, mdecl.value_dtype)
    else:
        values = None
    get_map_kernel(mdecl).run(values, offsets, per, out)
    if kdt == np.uint16 and out_dt == np.float16:
        out = out.view(np.float16)
    return _finish(out, out_dt).reshape((nvals, *inner))


# ====================================================================== scan


def _scan_source(decl: Decl, cache: bool) -> str:
    K = decl.arity
    T = cg.args("t", K)
    C = cg.args("r", K)
    src = _header(cache)
    # ---- 1-D phase 1: the open tail piece of each chunk
    src.append(f"""
@numba.njit(**_OPTS)
def tails_1d(c0, c1, values, offsets, bi, bj, {T}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    for c in range(c0, c1):
        i1 = bi[c + 1]
        st = IDENT
        if i1 < nseg:
            s = offsets[i1]
            j0 = bj[c] + base
            j1 = bj[c + 1] + base
            a = s if s > j0 else j0
            for j in range(a, j1):
                st = combine(st, map_(values[j], j - s))
{cg.store("t", K, "c", "st", "        ")}

@numba.njit(**_OPTS)
def scan_1d(c0, c1, values, offsets, bi, bj, exclusive, out, {C}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    for c in range(c0, c1):
        i0 = bi[c]
        i1 = bi[c + 1]
        if i1 > nseg - 1:
            i1 = nseg - 1
        j0 = bj[c] + base
        j1 = bj[c + 1] + base
        for k in range(i0, i1 + 1):
            s = offsets[k]
            e = offsets[k + 1]
            a = s if s > j0 else j0
            b = e if e < j1 else j1
            st = {cg.load("r", K, "c")} if s < j0 else IDENT
            if exclusive:
                for j in range(a, b):
                    out[j - base] = finalize(st, j - s)
                    st = combine(st, map_(values[j], j - s))
            else:
                for j in range(a, b):
                    st = combine(st, map_(values[j], j - s))
                    out[j - base] = finalize(st, j - s + 1)
""")
    # ---- 2-D: rows (n, m), one state per column
    # the per-column states come in as scratch rows (run(): no kernel allocates)
    alloc = "".join(f"        a{i} = as{i}[c]\n" for i in range(max(K, 1)))
    A = cg.args("as", K)
    init_from_carry = cg.store("a", K, "col", cg.load("r", K, "c, col"), "                    ")
    init_ident = cg.store("a", K, "col", "IDENT", "                    ")
    store_t = cg.store("t", K, "c, col", cg.load("a", K, "col"), "            ")
    src.append(f"""
@numba.njit(**_OPTS)
def tails_2d(c0, c1, values, offsets, bi, bj, {T}, {A}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    m = t0.shape[1]  # values may be a wider view (_cpu._rows_view)
    for c in range(c0, c1):
{alloc}        for col in range(m):
{cg.store("a", K, "col", "IDENT", "            ")}        i1 = bi[c + 1]
        if i1 < nseg:
            s = offsets[i1]
            j0 = bj[c] + base
            j1 = bj[c + 1] + base
            a = s if s > j0 else j0
            for j in range(a, j1):
                jj = j - s
                for col in range(m):
                    st = combine({cg.load("a", K, "col")}, map_(values[j, col], jj))
{cg.store("a", K, "col", "st", "                    ")}
        for col in range(m):
{store_t}

@numba.njit(**_OPTS)
def scan_2d(c0, c1, values, offsets, bi, bj, exclusive, out, {C}, {A}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    m = out.shape[1]  # values may be a wider view (_cpu._rows_view)
    for c in range(c0, c1):
{alloc}        i0 = bi[c]
        i1 = bi[c + 1]
        if i1 > nseg - 1:
            i1 = nseg - 1
        j0 = bj[c] + base
        j1 = bj[c + 1] + base
        for k in range(i0, i1 + 1):
            s = offsets[k]
            e = offsets[k + 1]
            a = s if s > j0 else j0
            b = e if e < j1 else j1
            if s < j0:
                for col in range(m):
{init_from_carry}            else:
                for col in range(m):
{init_ident}            for j in range(a, b):
                jj = j - s
                for col in range(m):
                    st = {cg.load("a", K, "col")}
                    if exclusive:
                        out[j - base, col] = finalize(st, jj)
                        st = combine(st, map_(values[j, col], jj))
                    else:
                        st = combine(st, map_(values[j, col], jj))
                        out[j - base, col] = finalize(st, jj + 1)
{cg.store("a", K, "col", "st", "                    ")}
""")
    # ---- phase 2: carries, serial O(chunks)
    src.append(f"""
@numba.njit(**_OPTS)
def carry_1d(bi, {T}, {C}):
    st = IDENT
    for c in range(bi.shape[0] - 1):
{cg.store("r", K, "c", "st", "        ")}        if bi[c + 1] != bi[c]:
            st = IDENT
        st = combine(st, {cg.load("t", K, "c")})


@numba.njit(**_OPTS)
def carry_2d(bi, {T}, {C}):
    m = t0.shape[1]
    for col in range(m):
        st = IDENT
        for c in range(bi.shape[0] - 1):
{cg.store("r", K, "c, col", "st", "            ")}            if bi[c + 1] != bi[c]:
                st = IDENT
            st = combine(st, {cg.load("t", K, "c, col")})
""")
    return "".join(src)


_SCAN_FNS = ("tails_1d", "scan_1d", "carry_1d", "tails_2d", "scan_2d", "carry_2d")


class CpuScanKernel:
    """The compiled scan functions of one reduction declaration."""

    def __init__(self, decl: Decl):
        self.decl = decl
        self.dtypes = cg.component_dtypes(decl.identity)
        persistent = decl.key[0] != "user"
        folder, disk = cg.generated_dir()
        disk = disk and persistent
        path = cg.module_path(_scan_source(decl, disk), repr(("scan",) + decl.key),
                              persistent=persistent)

        def load():
            ns = cg.decl_namespace(decl, dtypes=self.dtypes, **decl_jits(decl))
            return cg.import_module(path, ns)

        # native entries where cached (see hrarray._kernels.native)
        self._lazy = native.Lazy(load)
        (self.tails_1d, self.scan_1d, self.carry_1d, self.tails_2d, self.scan_2d,
         self.carry_2d) = native.functions(folder if disk else None, path.stem, _SCAN_FNS,
                                           self._lazy)

    def functions(self):
        m = self._lazy.loaded
        return [] if m is None else [getattr(m, n) for n in _SCAN_FNS]

    def run(self, values, offsets, out, exclusive: bool):
        """Scan ``values`` (1-D, or 2-D rows) into compact ``out``."""
        nseg = offsets.shape[0] - 1
        if nseg == 0 or out.shape[0] == 0:
            return out
        two_d = values.ndim == 2
        m = values.shape[1] if two_d else 1
        if two_d:
            values = _cpu._rows_view(values)  # the 2-D scans read m columns
        parallel, bi, bj = _cpu.chunking(offsets, m)
        nchunks = bi.shape[0] - 1
        shape = (nchunks, m) if two_d else (nchunks,)
        carries = [np.empty(shape, dt) for dt in self.dtypes]
        if two_d:
            scan_fn, tails_fn, carry_fn = self.scan_2d, self.tails_2d, self.carry_2d
            # rows per chunk on their own cache lines when chunks run in parallel
            alloc = _cpu.worker_rows if parallel else (lambda shape, dt: np.empty(shape, dt))
            accs = [alloc((nchunks, m), dt) for dt in self.dtypes]
        else:
            scan_fn, tails_fn, carry_fn = self.scan_1d, self.tails_1d, self.carry_1d
            accs = []
        sargs = (values, offsets, bi, bj, bool(exclusive), out, *carries, *accs)
        if not parallel:
            # one chunk: nothing is carried in
            ident = self.decl.identity
            for i, arr in enumerate(carries):
                arr[...] = ident[i] if isinstance(ident, tuple) else ident
            scan_fn(0, 1, *sargs)
            return out
        tails = [np.empty(shape, dt) for dt in self.dtypes]
        targs = (values, offsets, bi, bj, *tails, *accs)
        launch(tails_fn.resolve(None, (0, 1, *targs)), nchunks, *targs)
        carry_fn(bi, *tails, *carries)
        launch(scan_fn.resolve(None, (0, 1, *sargs)), nchunks, *sargs)
        return out


def get_scan_kernel(decl: Decl) -> CpuScanKernel:
    key = ("scan",) + decl.key
    k = _compiled.get(key)
    if k is None:
        with _compiled_lock:
            k = _compiled.get(key)
            if k is None:
                k = CpuScanKernel(decl)
                _compiled[key] = k
    return k


def segment_scan(spec, values, offsets, exclusive: bool):
    """Scan of ``spec.decl`` restarting at each segment: ``(nvalues, *inner)``
    of ``spec.out_dtype``, compact."""
    nvals = int(offsets[-1]) - int(offsets[0])
    values, inner = _kernel_view(values, spec.value_dtype)
    out_dt = spec.out_dtype
    out = np.empty((nvals, *values.shape[1:]), _kernel_out_dtype(out_dt))
    get_scan_kernel(spec.decl).run(values, offsets, out, exclusive)
    return _finish(out, out_dt).reshape((nvals, *inner))


# ====================================================================== reduce_aux

# 2-D values with one score per row (attention_pool with an inner shape): every
# column sees the same scores, so the running max and sum are shared by the
# columns. This hand-tuned row kernel updates them once per row (one exp per
# row, not one per scalar) and the weighted sums with a vectorisable loop over
# the columns, then divides them by the sum of the exps: the declaration's
# state (m, s, mean), which its fix-up combines at chunk edges. A piece whose
# sums are not all finite (a value near the float64 range's end, or a NaN or
# an infinity) runs again in ``rows_exact``: the declaration's own map and
# combine, column by column (an exp per element; only such pieces). Carrying
# the mean on every row took 1.25-1.5x the time (2-D float32 uniform, one
# thread: 11.2-11.5 ms, 14.2-14.5 mean, 16.9-17.9 with the overflow check).
_ROWS_SRC = """
import math
import numba
import numpy as np

from hrarray._kernels._cpu_bits import wide_vectors_if_float32

_OPTS = dict(nogil=True, error_model='numpy', fastmath=FASTMATH, cache=CACHE)
_NOWRAP = WRAPPER_OPTS
BIG = np.finfo(np.float64).max


@numba.njit(**_OPTS, **_NOWRAP)
def rows_exact(values, ncol, w, a, e, acc):
    # the declaration's steps, combine(state, map_(v, w, j)), column by
    # column; m and s depend on the scores only, the same in every column
    m = -np.inf
    s = 0.0
    for col in range(ncol):
        st = IDENT
        for j in range(a, e):
            st = combine(st, map_(values[j, col], w[j], j - a))
        m, s, acc[col] = st
    return m, s


@numba.njit(inline="always", **_OPTS, **_NOWRAP)
def rows_piece(values, ncol, w, a, e, acc):
    m = -np.inf
    s = 0.0
    for col in range(ncol):
        acc[col] = 0.0
    for j in range(a, e):
        wj = np.float64(w[j])
        if m != m or wj != wj:
            m = m + wj
            s = s + 1.0
            for col in range(ncol):
                acc[col] = acc[col] + np.float64(values[j, col])
        elif m == wj:
            s = s + 1.0
            for col in range(ncol):
                acc[col] = acc[col] + np.float64(values[j, col])
        elif m > wj:
            f = math.exp(wj - m)
            s = s + f
            for col in range(ncol):
                acc[col] = acc[col] + np.float64(values[j, col]) * f
        else:
            f = math.exp(m - wj)
            s = 1.0 + s * f
            for col in range(ncol):
                acc[col] = np.float64(values[j, col]) + acc[col] * f
            m = wj
    return m, s


@numba.njit(inline="always", **_OPTS, **_NOWRAP)
def to_mean(values, ncol, w, a, e, acc, m, s):
    # rows_piece's sums divided by s in place (a piece cut by a chunk edge,
    # whose state the fix-up combines); rows_exact where one is not finite
    if s > 0.0:  # else no row: the identity (-inf, 0, 0)
        bad = 0
        for col in range(ncol):
            x = acc[col]
            bad += 0 if abs(x) <= BIG else 1
            acc[col] = x / s
        if bad:
            return rows_exact(values, ncol, w, a, e, acc)
    return m, s


@numba.njit(inline="always", **_OPTS, **_NOWRAP)
def store(hm, hs, ha, c, m, s, acc):
    # the states' width, not acc's: acc rows are padded to whole cache lines
    for col in range(ha.shape[1]):
        hm[c, col] = m
        hs[c, col] = s
        ha[c, col] = acc[col]


"""

_ROWS_CHUNKS = """
@numba.njit(**_OPTS)
def pool_rows(c0, c1, values, w, offsets, bi, bj, out, fill, use_fill, h0, h1, h2, t0, t1, t2,
              accs):
    wide_vectors_if_float32(values)
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    ncol = out.shape[1]  # values may be a wider view (_rows_view)
    for c in range(c0, c1):
        acc = accs[c]  # scratch from the caller: no kernel allocates
        i0 = bi[c]
        i1 = bi[c + 1]
        j0 = bj[c] + base
        j1 = bj[c + 1] + base
        for k in range(i0, i1):
            s0 = offsets[k]
            e = offsets[k + 1]
            a = s0 if s0 > j0 else j0
            m, s = rows_piece(values, ncol, w, a, e, acc)
            if s0 < j0:
                m, s = to_mean(values, ncol, w, a, e, acc, m, s)
                store(h0, h1, h2, c, m, s, acc)
            else:
                # a whole segment: its sums divided and checked in the loop
                # that writes its row (a pass of its own cost segments of 0-4
                # rows 1.13x the time)
                n = e - s0
                d = s if s > 0.0 else 1.0
                bad = 0
                for col in range(ncol):
                    x = acc[col]
                    bad += 0 if abs(x) <= BIG else 1
                    st = (m, s, x / d)
                    if use_fill and is_empty(st, n):
                        out[k, col] = fill
                    else:
                        out[k, col] = finalize(st, n)
                if bad:
                    m, s = rows_exact(values, ncol, w, a, e, acc)
                    for col in range(ncol):
                        st = (m, s, acc[col])
                        if use_fill and is_empty(st, n):
                            out[k, col] = fill
                        else:
                            out[k, col] = finalize(st, n)
        if i1 < nseg:
            s0 = offsets[i1]
            a = s0 if s0 > j0 else j0
            m, s = rows_piece(values, ncol, w, a, j1, acc)
            m, s = to_mean(values, ncol, w, a, j1, acc, m, s)
            store(t0, t1, t2, c, m, s, acc)
"""


def _rows_function(decl: Decl):
    """The row kernel ``pool_rows`` of a declaration (a ``NativeFunction``)."""
    key = ("pool_rows",) + decl.key
    fn = _compiled.get(key)
    if fn is None:
        with _compiled_lock:
            fn = _compiled.get(key)
            if fn is None:
                folder, disk = cg.generated_dir()
                src = _ROWS_SRC.replace("FASTMATH", f"set({sorted(FASTMATH)!r})")
                src = src.replace("CACHE", repr(bool(disk)))
                src = src.replace("WRAPPER_OPTS", repr(NO_WRAPPERS))
                src += _ROWS_CHUNKS
                path = cg.module_path(src, repr(key))

                def load():
                    ns = cg.decl_namespace(decl, dtypes=cg.component_dtypes(decl.identity),
                                           is_empty=True, **decl_jits(decl))
                    return cg.import_module(path, ns)

                (fn,) = native.functions(folder if disk else None, path.stem, ("pool_rows",),
                                         native.Lazy(load))
                _compiled[key] = fn
    return fn


def _pool_rows(decl: Decl, values, offsets, aux, out, fill, use_fill):
    """The row kernel (see ``_ROWS_SRC``); the fix-up is the generic kernel's."""
    nseg = offsets.shape[0] - 1
    if nseg == 0:
        return out
    ncol = values.shape[1]
    values = _cpu._rows_view(values)  # pool_rows reads out's ncol columns
    parallel, bi, bj = _cpu.chunking(offsets, ncol)
    fn = _rows_function(decl)
    nchunks = bi.shape[0] - 1
    heads = [np.empty((nchunks, ncol), np.float64) for _ in range(3)]
    tails = [np.empty((nchunks, ncol), np.float64) for _ in range(3)]
    args = (values, aux, offsets, bi, bj, out, fill, use_fill, *heads, *tails,
            _cpu.worker_rows((nchunks, ncol), np.float64) if parallel
            else np.empty((1, ncol), np.float64))
    launch(fn.resolve(None, (0, 1, *args)), nchunks, *args)
    if not parallel:
        return out
    k = get_kernel(decl)
    k.fixup_2d(offsets, bi, bj, out, fill, use_fill, *heads, *tails,
               *k.scratch_for("fixup_2d", 1, ncol))
    return out


def reduce_aux(spec, values, offsets, aux, fill, use_fill):
    """Reduction whose map reads ``aux[j]`` next to ``values[j]``.

    ``aux`` is ``(n,)`` -- result ``(nseg, *inner)`` -- or ``(n, h)`` --
    result ``(nseg, h, *inner)``, one pass per head over a strided column of
    ``aux``. ``aux`` rows are aligned with ``values`` rows (same indexing).
    Declarations marked ``meta["rows"] == "online_softmax"`` (attention_pool)
    run 2-D values through the row kernel above.
    """
    nseg = offsets.shape[0] - 1
    values, inner = _kernel_view(values, spec.value_dtype)
    # the values' rule (_value_dtype) on the native dtype: '>f2' too is read as
    # float32 (its native float16 copy reached Numba: NotImplementedError)
    adt = _value_dtype(aux.dtype.newbyteorder("="))
    if aux.dtype != adt:
        aux = aux.astype(adt)
    out_dt = spec.out_dtype
    kdt = _kernel_out_dtype(out_dt)
    m = values.shape[1] if values.ndim == 2 else None
    heads = None if aux.ndim == 1 else aux.shape[1]
    cols = () if m is None else (m,)
    out = np.empty((nseg, *((heads,) if heads is not None else ()), *cols), kdt)
    fill_v = kdt.type(fill) if use_fill else kdt.type(0)
    decl = spec.decl
    if m is not None and decl.meta.get("rows") == "online_softmax":
        def one(o, w):
            _pool_rows(decl, values, offsets, w, o, fill_v, bool(use_fill))
    else:
        kernel = get_kernel(decl)

        def one(o, w):
            kernel.run(values, offsets, o, fill_v, bool(use_fill), aux=w)
    if heads is None:
        one(out, aux)
    else:
        for h in range(heads):
            one(out[:, h], aux[:, h])
    shape = (nseg, *((heads,) if heads is not None else ()), *inner)
    return _finish(out, out_dt).reshape(shape)
