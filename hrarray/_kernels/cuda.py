"""CUDA kernel factory: the same declaration as the CPU, compiled with numba-cuda.

Schedule (balanced by elements, not by segments)
------------------------------------------------
As on the CPU, the work is the *merged* sequence of elements (rows in 2-D)
and segment ends (merge path, Merrill & Garland; ModernGPU / CUB spmv). Every
block owns a fixed tile of ``TILE`` merged items, every thread group a run of
``ITEMS`` of them::

    merged items  e e e E e e E E e e e e e e e e e e e e e E e e E ...
    blocks        |<------ block 0 ------->|<------ block 1 ------->| ...
    groups        |<-g0->|<-g1->|<-g2->|...|<-g0->|<-g1->| ...
                  (E = a segment end; an empty segment is an E alone)

    1. partition   one thread per block boundary: binary search in offsets
                   -> bi[b], the first segment whose end is at or after the
                   block's first item (empty segments cost one offsets read)
    2. reduce      per block: offsets[bi[b] .. bi[b+1]] -> shared memory, and
                   the tile's values too (coalesced loads; strided values
                   are gathered here, read in place); each group's first
                   segment scattered from that window (each segment end
                   marks the groups starting after the previous end; the
                   map and scan kernels too), then a register loop over the
                   group's items (float32 data accumulate in the
                   declaration's float64 state):
                     segment inside the group   -> written directly
                     piece ending in the group  -> "head" state
                     piece open at the group end-> "tail" state
                   block-wide *segmented* inclusive scan of the tails
                   (keys = segment ids, in order; no atomics):
                     head + tails before it (same block) -> written, or,
                     if the segment began in an earlier block, the block's
                     head carry H[b];  last group's scan -> tail carry T[b]
    3. fix-up      one thread group per reduce block b: if b has a head
                   carry, the blocks b' < b whose tail is the same segment
                   (doubling steps back in bi, then a binary search) are
                   combined in order + H[b] -> finalize -> out; up to SMALL
                   carries by the group itself, more by the whole block
                   (groups over block ranges, pairwise inside a group, then
                   the same block scan)

A long segment is split across as many blocks as it needs; thousands of
short segments share one block; the result is deterministic (the same
combination order on every run; NO float atomics). Empty segments are items
too, so they are written in step 2 with ``finalize(identity, 0)`` or the
fill value.

2-D rows ``(n, d)``: a block is ``G`` groups x ``CW`` lanes, ``CW = min(d,
BLOCK, ROW_LANES)`` lanes across the row (coalesced loads), ``G = BLOCK // CW``
groups balanced over rows exactly as above; ``d > CW`` adds column tiles on
``gridDim.y``.

The block scan has two phases: a Hillis-Steele scan inside each warp's groups
(the ONE warp-level seam, :func:`_warp_scan_source`: ``shfl_up_sync`` on a
GPU, a shared-memory emulation with the same combination order under the
simulator, which has no warp intrinsics), then a shared-memory scan of the
warps' aggregates. For the same ``BLOCK`` and ``ITEMS`` the simulator and a
GPU therefore combine in the same order (bit-identical results).

The same schedule serves the transforms' kernel kinds (:data:`_KINDS`):
``map`` (each group writes the elements it owns: no carries) and ``scan``
(reduce-then-scan: tail carries per block, a one-block segmented scan of
the carries, then every group scans its elements from its carry).

Accuracy: float sums accumulate in the declaration's float64 state; a
segment of ``n`` elements is combined as <= ``ITEMS`` sequential elements per
thread, a scan of depth <= log2(BLOCK) + 2 per block, and, over the ``R``
blocks it spans, a pairwise (binary counter) combination of ``R/G`` block
carries per fix-up group followed by another block scan. In the reference
error bound ``|error| <= k(n) * eps * sum|x|``: 1-D,
``k(n) <= ITEMS + 2*log2(n / TILE) + 2*log2(BLOCK) + 6`` -- about 54 at
``n = 1e6`` with the defaults (ITEMS 16, BLOCK 256, TILE 4096), about 74 at
``1e9``; NumPy's pairwise bound is ``128 + log2(n / 128)``, about 141 at
``1e6``. Any layout: ``k(n) <= min(n, ITEMS + 2*log2(n) + 8)``.
"""

from __future__ import annotations

import ctypes
import os
import threading
import warnings

import numba
import numpy as np
from numba import cuda

from hrarray._kernels import _codegen as cg
from hrarray._kernels import _locks
from hrarray._kernels._typing_memo import call_type_memo
from hrarray.reducer import Decl

__all__ = ["BLOCK", "ITEMS", "compiled_count", "get_kernel", "launch_count"]

# numba-cuda 0.30 registers an overload of ``np.row_stack`` when it compiles
# its first kernel; NumPy 2.5 removed that alias of ``np.vstack``, and every
# kernel compile then fails with AttributeError (seen on the H100 image:
# numpy 2.5.2 + numba-cuda 0.30.4). Restoring the alias is harmless.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack  # noqa: NPY201

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if not v:
        return default
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"{name}={v!r} is not an integer") from None


#: threads per block (a multiple of 32, at most 1024); tests use 32
BLOCK = _env_int("HRARRAY_CUDA_BLOCK", 32 if SIMULATOR else 256)
#: merged items (elements/rows + segment ends) per thread group; 16 on a GPU:
#: on an H200 (1e8 float32, 1-D, segments of ~100) the reduce kernel ran 1.03 ms
#: at 8 and 0.53 ms at 16 (Nsight Compute), its fixed cost per thread (window,
#: merge-path search then, block scan) spread over twice the items
ITEMS = _env_int("HRARRAY_CUDA_ITEMS", 4 if SIMULATOR else 16)
#: None: warp shuffles in the block scan on a GPU (when every state component
#: can be shuffled); False: the shared-memory emulation everywhere (a test
#: hook: both give bit-identical results)
WARP = None
#: fix-up ranges of at most this many block carries are combined by one group
SMALL = 4
#: pairwise stack depth of the fix-up (2**STACK block carries)
STACK = 48
#: columns per thread group in the 2-D fix-up: a segment spanning R reduce blocks
#: is combined by BLOCK // FIX_CW groups of R / G carries each (with the reduce's
#: layout a 64-column row left 4 groups, R / 4 dependent steps: 2.5 ms of 3.25 on
#: one_huge 2-D in Run 17); 8 columns of a float64 state are two 32-byte sectors
FIX_CW = 8
#: most lanes a group puts across a row (CW); wider rows add column tiles on
#: gridDim.y rather than take fewer rows per block. Every reduce block writes a
#: head and a tail carry per column (float64 for float32 data) where segments
#: cross its edges, and the fix-up reads them back: at CW = BLOCK = 256 (rows of
#: 256 columns or more) a tile was 16 rows, and those carries came to a quarter
#: of float32 rows' bytes, in scratch and written and read again (a predicted
#: ~1.3x on bandwidth-bound wide rows, not yet timed on a GPU); at 64 lanes a
#: tile is 64 rows, a sixteenth. Rows of 64 columns or fewer are unchanged.
ROW_LANES = 64
#: CUDA's limit on gridDim.y: 2-D launches put column tiles there, so rows wider
#: than MAX_GRID_Y tiles (4.19M columns at 64 lanes) run as several launches
#: over column slices (``_column_chunks``); a test hook lowers it
MAX_GRID_Y = 65535

_compiled: dict = {}
_compiled_lock = _locks.RLock()
_launched: set = set()
_launches = 0


def _check_settings(block: int, items: int):
    if block < 32 or block > 1024 or block % 32:
        raise ValueError(
            f"hrarray CUDA block size must be a multiple of 32 in 32..1024, got {block}"
        )
    if items < 1:
        raise ValueError(f"hrarray CUDA items per thread must be >= 1, got {items}")


def compiled_count() -> int:
    """Number of compiled CUDA kernel specialisations so far (0 right after import).

    On a GPU this counts Numba's compiled overloads; under the simulator
    (which compiles nothing) the distinct argument signatures launched.
    """
    with _compiled_lock:
        if SIMULATOR:
            return len(_launched)
        n = 0
        fns = [f for k in _compiled.values() for f in k.functions()]
        if _partition_fn is not None:
            fns.append(_partition_fn)
        for fn in fns:
            n += len(getattr(fn, "overloads", {}))
        return n


def launch_count() -> int:
    """Number of reduction kernel launches so far (a test hook)."""
    return _launches


def _note_launch(name, args) -> None:
    global _launches
    with _compiled_lock:
        _launches += 1
    if SIMULATOR:  # the signature is what compiled_count() counts there (host time on a GPU)
        sig = tuple(
            (getattr(a, "dtype", type(a).__name__).__str__(), getattr(a, "ndim", 0))
            for a in args
        )
        with _compiled_lock:
            _launched.add((name, sig))


# ------------------------------------------------------------------ codegen


def _shfl_expr(var: str, dt: np.dtype) -> str:
    """``shfl_up_sync`` of one state component (shuffles move 32/64-bit words)."""
    up = "cuda.shfl_up_sync(FULL, {x}, delta)"
    if dt == np.bool_:
        return f"({up.format(x=f'np.int32({var})')} != 0)"
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return up.format(x=var)
    if dt.kind in "iu":
        if dt == np.int64 or dt == np.int32:
            return up.format(x=var)
        return f"np.{dt.name}({up.format(x=f'np.int64({var})')})"
    if dt.kind == "c":
        ft = "float32" if dt == np.complex64 else "float64"
        re = up.format(x=f"np.{ft}({var}.real)")
        im = up.format(x=f"np.{ft}({var}.imag)")
        return f"np.{dt.name}(complex({re}, {im}))"
    raise TypeError(f"no warp shuffle for state dtype {dt}")


def _warp_scan_source(K: int, dtypes, warp: bool) -> str:
    """THE warp seam: Hillis-Steele segmented scan of the groups of one warp.

    Both versions combine in the same order (so the simulator checks the GPU's
    arithmetic bit for bit); ``warp=False`` emulates the shuffles through
    shared memory for the simulator, which has no warp intrinsics.
    """
    SH = cg.args("sh", K)
    if warp:
        comps = [_shfl_expr(f"st{i}" if K else "st", dt) for i, dt in enumerate(dtypes)]
        unpack = f"        {', '.join(f'st{i}' for i in range(K))}, = st\n" if K else ""
        shfl = "".join(f"        o{i} = {c}\n" for i, c in enumerate(comps))
        other = "o0" if K == 0 else "(" + ", ".join(f"o{i}" for i in range(K)) + ",)"
        return f"""
@cuda.jit(device=True)
def warp_scan(st, key, tid, CW, WG, {SH}, sk):
    # every lane of the warp executes every shuffle: the loop bound is uniform
    wl = tid & 31
    off = 1
    while off < WG:
        delta = np.int32(off * CW)
        okey = cuda.shfl_up_sync(FULL, key, delta)
{unpack}{shfl}        if wl >= delta and okey == key:
            st = combine({other}, st)
        off *= 2
    return st
"""
    return f"""
@cuda.jit(device=True)
def warp_scan(st, key, tid, CW, WG, {SH}, sk):
    # shared-memory emulation of the shuffles (simulator): same order
    g = tid // CW
    off = 1
    while off < WG:
{cg.store("sh", K, "tid", "st", "        ")}        sk[tid] = key
        cuda.syncthreads()
        src = tid - off * CW
        take = False
        other = st
        if (g % WG) >= off:
            if sk[src] == key:
                take = True
                other = {cg.load("sh", K, "src")}
        cuda.syncthreads()
        if take:
            st = combine(other, st)
        off *= 2
    return st
"""


def _block_scan_source(K: int) -> str:
    SH = cg.args("sh", K)
    return f"""
@cuda.jit(device=True)
def block_scan(st, key, tid, CW, G, WG, {SH}, sk):
    # inclusive segmented scan over groups g (per lane l); keys non-decreasing
    # in g. Must be called by every thread of the block. Leaves each thread's
    # result in sh[tid].
    st = warp_scan(st, key, tid, CW, WG, {SH}, sk)
    g = tid // CW
    l = tid - g * CW
    NC = G // WG
    c = g // WG
    cuda.syncthreads()
    if g < G and (g % WG) == WG - 1:
        q = c * CW + l
{cg.store("sh", K, "q", "st", "        ")}        sk[q] = key
    cuda.syncthreads()
    off = 1
    while off < NC:
        take = False
        other = st
        if g < NC and g >= off:
            src = (g - off) * CW + l
            if sk[src] == sk[tid]:
                take = True
                other = {cg.load("sh", K, "src")}
        cuda.syncthreads()
        if take:
            v = combine(other, {cg.load("sh", K, "tid")})
{cg.store("sh", K, "tid", "v", "            ")}        cuda.syncthreads()
        off *= 2
    if g < G and c > 0:
        src = (c - 1) * CW + l
        if sk[src] == key:
            st = combine({cg.load("sh", K, "src")}, st)
    cuda.syncthreads()
{cg.store("sh", K, "tid", "st", "    ")}    cuda.syncthreads()
    return st
"""


_PARTITION = """
import numpy as np
from numba import cuda


@cuda.jit(cache=CACHE)
def partition(offsets, tile, bi):
    # bi[b] = first segment whose end lies at or after merged item b * tile
    b = cuda.grid(1)
    if b < bi.shape[0]:
        nseg = offsets.shape[0] - 1
        base = np.int64(offsets[0])
        total = np.int64(offsets[nseg]) - base + nseg
        d = b * tile
        if d > total:
            d = total
        lo = 0
        hi = nseg
        while lo < hi:
            mid = (lo + hi) // 2
            if np.int64(offsets[mid + 1]) - base + mid < d:
                lo = mid + 1
            else:
                hi = mid
        bi[b] = lo
"""

_FIRST_CARRY = """
@cuda.jit(device=True)
def first_carry(bi, b, k):
    # first block q < b whose tail carry is segment k (bi[q + 1] >= k, true at
    # q = b - 1): doubling steps back from b - 1, then a binary search, so R
    # carries cost O(log R) reads of bi (a segment spans 1-2 blocks mostly)
    hi = b - 1
    lo = np.int64(0)
    step = np.int64(1)
    while hi - step >= 0:
        q = hi - step
        if bi[q + 1] < k:
            lo = q + 1
            break
        hi = q
        step *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if bi[mid + 1] < k:
            lo = mid + 1
        else:
            hi = mid
    return lo
"""

_GROUP_STARTS = """    # group g owns items [d0(g), d0(g + 1)), d0(g) = D0 + g * ITEMS, and segment
    # ends sI[g] .. sI[g + 1] - 1, where sI[g] is the first segment s whose end
    # item P(s) = offsets[s + 1] - base + s is at or after d0(g). Scattered, not
    # searched: segment s = bi0 + q writes the groups with P(s - 1) < d0 <= P(s)
    # (bi0 from the first group, bi1 to the last): one pass over the window
    # instead of a binary search per group (~6-11 steps of ~20 instructions)
    q = tid
    while q < cnt:
        s = bi0 + q
        glo = np.uint64(0)
        if q > 0:  # P(s - 1) >= D0 here
            glo = np.uint64(sOff[np.uint64(q)] + s - D0)
            glo = (glo + np.uint64(ITEMS - 1)) // np.uint64(ITEMS)
        ghi = np.uint64(G - 1)
        if q < cnt - 1:  # P(s) < D1 <= D0 + tile here
            ghi = np.uint64(sOff[np.uint64(q + 1)] + s - D0) // np.uint64(ITEMS)
        gg = glo
        while gg <= ghi:
            sI[gg] = s
            gg += np.uint64(1)
        q += BLOCK
    if tid == 0:
        sI[G] = bi1
    cuda.syncthreads()
"""


def _shared_decls(K: int, dtypes, indent: str) -> str:
    s = f"{indent}sk = cuda.shared.array(BLOCK, np.int64)\n"
    for i in range(max(K, 1)):
        s += f"{indent}sh{i} = cuda.shared.array(BLOCK, DT{i})\n"
    return s


def _shared_bytes(dtypes, block: int, items: int, vdt) -> int:
    """Static shared memory of a reduce block (window, group starts, scan
    state and keys, and the staged tile of values when ``vdt`` is given)."""
    n = (block * items + 1) * 8 + (block + 1) * 8 + block * 8
    n += block * sum(np.dtype(d).itemsize for d in dtypes)
    if vdt is not None:
        n += block * (items + 1) * np.dtype(vdt).itemsize
    return n


#: static shared memory a block may use (the limit is 48 KiB; some slack)
SHARED_LIMIT = 47 * 1024


def _fit_shared(dtypes, block: int, items: int) -> tuple[int, int]:
    """``(block, items)`` whose reduce (or map, or scan) block fits in static
    shared memory, which holds a window of ``block * items`` segment ends and a
    state per thread: halved blocks (the items per thread kept), then
    fewer items, for a large (user Reducer) state. A Reducer of six float64s needed 49,168 bytes
    at 256 x 16 (over the 48 KiB a GPU gives; the simulator has no limit).
    TypeError when not even 32 threads of one item fit."""
    state = sum(np.dtype(d).itemsize for d in dtypes)
    fit = 0
    while True:
        fixed = _shared_bytes(dtypes, block, 0, None)
        fit = (SHARED_LIMIT - fixed) // (block * 8)  # window slots per item: 8 bytes
        if fit >= items or block <= 32:
            break
        block = max(32, block // 2 // 32 * 32)  # keep the items (Nsight: 16 halves 8's time)
    if fit < 1:
        raise TypeError(
            f"identity: a reduction state of {state} bytes does not fit in a CUDA block's "
            f"shared memory ({SHARED_LIMIT} bytes for 32 threads); use fewer or smaller "
            "state components")
    return block, min(items, fit)


def _stage_dtype(dtypes, block: int, items: int, value_dtype):
    """The dtype to stage each tile's values in shared memory (coalesced
    loads), or None to read them from global memory in place."""
    if value_dtype is None:
        return None
    vdt = np.dtype(value_dtype)
    if vdt.kind not in "biuf" or vdt.itemsize > 8 or not vdt.isnative:
        return None
    if _shared_bytes(dtypes, block, items, vdt) > SHARED_LIMIT:
        return None
    return vdt


def _reduce_source(decl: Decl, dtypes, block: int, items: int, warp: bool, cache: bool,
                   stage=None) -> str:
    K = decl.arity
    SH = cg.args("sh", K)
    H = cg.args("h", K)
    T = cg.args("t", K)
    w1 = ", w" if decl.aux else ""
    src = [
        "import numpy as np\n",
        "from numba import cuda\n\n",
        f"BLOCK = {block}\n",
        f"ITEMS = {items}\n",
        f"WIN = {block * items + 1}\n",
        f"STACK = {STACK}\n",
        f"SMALL = {SMALL}\n",
        f"CACHE = {cache}\n",
        f"SV = {block * (items + 1)}\n",
        f"BP1 = {block + 1}\n",
        "FULL = 0xFFFFFFFF\n",
        _warp_scan_source(K, dtypes, warp),
        _block_scan_source(K),
        _FIRST_CARRY,
    ]
    for two_d in (False, True):
        nd = "2d" if two_d else "1d"
        cix = ", col" if two_d else ""
        wj = "w[ub + np.uint64(j)], " if decl.aux else ""

        if stage is not None:
            # the tile's rows live in sV, row r of the tile (lane l) at
            # r * CW + l + r // ITEMS (one pad slot per group: no bank conflicts)
            def val(j, _two_d=two_d):
                r = "np.uint64(j - J0)"
                return (f"sV[{r} * np.uint64(CW) + np.uint64(l) + {r} // np.uint64(ITEMS)]"
                        if _two_d else f"sV[{r} + {r} // np.uint64(ITEMS)]")

            if two_d:
                stage_src = """    J1 = D1 - bi1
    nrows = J1 - J0
    c0 = cuda.blockIdx.y * CW
    for r in range(ITEMS):  # constant trip count: the loads are all in flight
        e = tid + r * BLOCK
        rr = e // CW
        c = e - rr * CW
        if rr < nrows and c0 + c < m:
            sV[e + rr // ITEMS] = values[ub + np.uint64(J0 + rr), c0 + c]
"""
            else:
                stage_src = """    J1 = D1 - bi1
    nrows = J1 - J0
    for r in range(ITEMS):  # constant trip count: the loads are all in flight
        e = tid + r * BLOCK
        if e < nrows:
            sV[e + e // ITEMS] = values[ub + np.uint64(J0 + e)]
"""
            stage_decl = "    sV = cuda.shared.array(SV, VDT)\n"
        else:
            def val(j, _two_d=two_d):
                return "values[ub + np.uint64(j), col]" if _two_d else "values[ub + np.uint64(j)]"

            stage_src = ""
            stage_decl = ""

        def fold(acc, v, wj):
            if decl.step is not None:
                return f"step({acc}, {v}, j - s)"
            return f"combine({acc}, map_({v}, {wj}j - s))"

        m_expr = "values.shape[1]" if two_d else "1"
        src.append(f"""
@cuda.jit(cache=CACHE)
def reduce_{nd}(values{w1}, offsets, bi, G, CW, WG, tile, out, fill, use_fill, {H}, {T}):
    sOff = cuda.shared.array(WIN, np.int64)
    sI = cuda.shared.array(BP1, np.int64)
{stage_decl}{_shared_decls(K, dtypes, "    ")}    tid = cuda.threadIdx.x
    b = cuda.blockIdx.x
    nseg = offsets.shape[0] - 1
    base = np.int64(offsets[0])
    # unsigned indices from here: Numba wraps a signed index (a negative one
    # counts from the end), a compare and select per access
    ub = np.uint64(base)
    total = np.int64(offsets[nseg]) - base + nseg
    D0 = b * tile
    if D0 >= total:
        return  # whole block past the end (the grid is sized from an upper bound)
    D1 = D0 + tile
    if D1 > total:
        D1 = total
    bi0 = bi[b]
    bi1 = bi[b + 1]
    cnt = bi1 - bi0 + 1
    q = tid
    while q < cnt:
        sOff[np.uint64(q)] = np.int64(offsets[np.uint64(bi0 + q)]) - base
        q += BLOCK
    g = tid // CW
    l = tid - g * CW
    col = cuda.blockIdx.y * CW + l
    m = {m_expr}
    J0 = D0 - bi0
{stage_src}    cuda.syncthreads()
{_GROUP_STARTS}    st = IDENT
    hst = IDENT
    has_head = False
    i0 = bi1
    s0 = np.int64(0)
    key = nseg + 1 + g
    if g < G:
        d0 = D0 + g * ITEMS
        if d0 > D1:
            d0 = D1
        d1 = d0 + ITEMS
        if d1 > D1:
            d1 = D1
        i0 = sI[g]
        i1 = sI[g + 1]
        key = i1
        if col < m:
            j0 = d0 - i0
            j1 = d1 - i1
            # while loops, not range(): Numba's range() handles a negative step
            # with selects in every iteration (~4x the instructions of this loop)
            kk = i0
            while kk < i1:
                s = sOff[np.uint64(kk - bi0)]
                e = sOff[np.uint64(kk + 1 - bi0)]
                a = s if s > j0 else j0
                acc = IDENT
                j = a
                while j < e:
                    acc = {fold("acc", val("j"), wj)}
                    j += 1
                if s < j0:
                    hst = acc
                    has_head = True
                    s0 = s
                else:
                    n = e - s
                    if use_fill and is_empty(acc, n):
                        out[kk{cix}] = fill
                    else:
                        out[kk{cix}] = finalize(acc, n)
                kk += 1
            if i1 < nseg:
                s = sOff[np.uint64(i1 - bi0)]
                a = s if s > j0 else j0
                j = a
                while j < j1:
                    st = {fold("st", val("j"), wj)}
                    j += 1
    block_scan(st, key, tid, CW, G, WG, {SH}, sk)
    if has_head:
        if g > 0:
            p = tid - CW
            hst = combine({cg.load("sh", K, "p")}, hst)
        if s0 >= J0:
            n = sOff[np.uint64(i0 + 1 - bi0)] - s0
            if use_fill and is_empty(hst, n):
                out[i0{cix}] = fill
            else:
                out[i0{cix}] = finalize(hst, n)
        else:
{cg.store("h", K, "b" + cix, "hst", "            ")}    if g == G - 1 and bi1 < nseg and col < m:
        r = {cg.load("sh", K, "tid")}
{cg.store("t", K, "b" + cix, "r", "        ")}
""")
        stack_alloc = "".join(
            f"    k{i} = cuda.local.array(STACK, DT{i})\n" for i in range(max(K, 1))
        )
        src.append(f"""
@cuda.jit(device=True)
def tails_{nd}({T}, q0, q1, col):
    # in-order pairwise (binary counter) combination of carries q0..q1-1
{stack_alloc}    nb = 0
    cnt = 0
    for q in range(q0, q1):
        blk = {cg.load("t", K, "q" + cix)}
        cnt += 1
        mm = cnt
        while (mm & 1) == 0:
            nb -= 1
            blk = combine({cg.load("k", K, "nb")}, blk)
            mm >>= 1
{cg.store("k", K, "nb", "blk", "        ")}        nb += 1
    st = IDENT
    if nb > 0:
        nb -= 1
        st = {cg.load("k", K, "nb")}
        while nb > 0:
            nb -= 1
            st = combine({cg.load("k", K, "nb")}, st)
    return st


@cuda.jit(cache=CACHE)
def fixup_{nd}(offsets, bi, nb, G, CW, WG, tile, m, out, fill, use_fill, {H}, {T}):
    # Group g screens reduce block b = c * G + g (chunks c of G blocks in a
    # block-stride loop): a block whose first segment k ends in it but began
    # in an earlier block needs the tail carries of blocks lo..b-1 and its
    # head carry combined. Up to SMALL carries, the group's lanes do it at
    # once (no barrier); more, the whole block does it after the screening,
    # one such block at a time (the branch reads a shared flag, so every
    # thread takes it together: barriers match).
{_shared_decls(K, dtypes, "    ")}    sBig = cuda.shared.array(BLOCK, np.int64)
    tid = cuda.threadIdx.x
    nseg = offsets.shape[0] - 1
    base = np.int64(offsets[0])
    total = np.int64(offsets[nseg]) - base + nseg
    g = tid // CW
    l = tid - g * CW
    col = cuda.blockIdx.y * CW + l
    nchunks = (nb + G - 1) // G
    c = np.int64(cuda.blockIdx.x)
    while c < nchunks:
        b = c * G + g
        big = np.int64(-1)
        if g < G and b < nb:
            D0 = b * tile
            if D0 < total:
                k = bi[b]
                # a segment ends in block b and it started before block b
                if k < bi[b + 1] and np.int64(offsets[k]) - base < D0 - k:
                    lo = first_carry(bi, b, k)
                    if b - lo > SMALL:
                        big = b
                    elif col < m:
                        n = np.int64(offsets[k + 1]) - np.int64(offsets[k])
                        acc = IDENT
                        for q in range(lo, b):
                            acc = combine(acc, {cg.load("t", K, "q" + cix)})
                        acc = combine(acc, {cg.load("h", K, "b" + cix)})
                        if use_fill and is_empty(acc, n):
                            out[k{cix}] = fill
                        else:
                            out[k{cix}] = finalize(acc, n)
        if l == 0 and g < G:
            sBig[g] = big
        cuda.syncthreads()
        for gg in range(G):
            bb = sBig[gg]
            if bb >= 0:
                k = bi[bb]
                lo = first_carry(bi, bb, k)
                R = bb - lo
                n = np.int64(offsets[k + 1]) - np.int64(offsets[k])
                per = (R + G - 1) // G
                acc = IDENT
                if g < G and col < m:
                    q0 = lo + g * per
                    q1 = q0 + per
                    if q1 > bb:
                        q1 = bb
                    acc = tails_{nd}({T}, q0, q1, col)
                block_scan(acc, 0, tid, CW, G, WG, {SH}, sk)
                if g == G - 1 and col < m:
                    acc = combine({cg.load("sh", K, "tid")}, {cg.load("h", K, "bb" + cix)})
                    if use_fill and is_empty(acc, n):
                        out[k{cix}] = fill
                    else:
                        out[k{cix}] = finalize(acc, n)
        cuda.syncthreads()  # sBig is rewritten by the next chunk
        c += cuda.gridDim.x
""")
    return "".join(src)


# ------------------------------------------------------------------ kernels


def _disk_cache(persistent: bool) -> bool:
    """Whether Numba may cache compiled kernels on disk (``HRARRAY_CACHE``,
    ``HRARRAY_CUDA_CACHE=0`` turns it off; never under the simulator)."""
    if not persistent or SIMULATOR:
        return False
    if os.environ.get("HRARRAY_CUDA_CACHE", "1").lower() in {"0", "false", "no", "off"}:
        return False
    return cg.generated_dir()[1]


def launch(fn, grid, block, stream, args):
    """Launch a kernel: through its fast entry where it has one (see
    ``_fast_launch``), else through numba-cuda, silencing the warnings that are
    noise here: Numba's low-occupancy hint (small inputs give small grids) and,
    under the simulator, NumPy's scalar warnings (the simulator runs the
    declaration as Python on NumPy scalars, which warn where a GPU quietly gives
    inf/NaN)."""
    key = None
    if FAST_LAUNCH:
        key = _fast_key(fn, args)
        if key is not None and _fast_launch(key, grid, block, stream, args):
            return
    first = key is not None and key not in _fast_entries
    if first:
        # a first launch through numba: it compiles (or loads numba's disk
        # cache), each (function, argument types) typed once (_typing_memo)
        with call_type_memo():
            _numba_launch(fn, grid, block, stream, args)
    else:
        _numba_launch(fn, grid, block, stream, args)
    if first:
        # the entry is built against the parameters numba marshalled for this
        # very launch
        if len(_fast_entries) >= 4096:
            _fast_entries.clear()
        _fast_entries[key] = _fast_entry(fn, args, stream)


_warnings_lock = _locks.Lock()


def _numba_launch(fn, grid, block, stream, args):
    if not SIMULATOR:
        gx, gy = grid if isinstance(grid, tuple) else (grid, 1)
        if gx * gy >= 128:  # numba-cuda warns below 128 blocks (its min_grid_size)
            fn[grid, block, stream](*args)  # no warnings context: ~host time per launch
            return
    # catch_warnings saves and restores the process-wide filter list: two threads'
    # blocks interleaving restored each other's lists (the silencing filter stayed
    # installed for good), so hrarray's blocks take turns; and on a GPU the block
    # covers only the launch configuration, where numba-cuda warns, not the call,
    # which compiles on a first launch (seconds) under catch_warnings blocks of
    # numba's own (those the lock does not order: a short window leaves them little
    # to interleave with; Python 3.14's context-aware warnings would end this)
    if not SIMULATOR:
        with _warnings_lock, warnings.catch_warnings():
            # numba-cuda has its own NumbaPerformanceWarning class: match the text
            warnings.filterwarnings("ignore", message=".*under-utilization")
            configured = fn[grid, block, stream]
        configured(*args)
        return
    with _warnings_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the kernel runs as Python here
        fn[grid, block, stream](*args)


# ------------------------------------------------------------ fast launch
#
# A numba-cuda launch costs ~45 us of host time for a 3-argument kernel (Run 17,
# H200): typing every argument, the dispatcher's launch-configuration machinery,
# and a generic per-argument marshalling. A reduction makes three launches of up to
# 14 arguments, and its kernels take ~0.5 ms for 1e8 values, so the call is
# host-bound. The fast path launches the compiled kernel itself with cuda.core, as
# numba-cuda's _Kernel.launch does, from a per-(kernel, device, argument types)
# entry: the kernel handle and one marshaller per argument. Each entry is made
# after a launch through numba (which compiles), and kept only if its
# marshalling gives exactly the kernel arguments numba's own gives for that
# launch (compared value by value and byte by byte); otherwise, or if numba-cuda's
# internals differ from what it expects, that kernel keeps numba's launch. That
# check proves the marshalling, not the arrays: both sides read the same
# argument objects, so whether a launch view describes its array as numba's own
# array would is what tests/launch_check.py checks. A launch that raises sends
# its kernel back to numba's path for good (cuLaunchKernel enqueues nothing when
# it fails, so the relaunch is safe).
# The same switch lets the CUDA backend pass CuPy (and other CUDA array interface)
# arrays as light launch views instead of numba device arrays (_launch_view there).
# tests/launch_check.py checks both against numba's own arrays and marshalling for
# every kernel signature ptx_check builds, without a GPU. Not yet timed on a GPU;
# off with HRARRAY_CUDA_FAST_LAUNCH=0.

FAST_LAUNCH = (not SIMULATOR) and os.environ.get(
    "HRARRAY_CUDA_FAST_LAUNCH", "1").lower() not in {"0", "false", "no", "off"}
_fast_entries: dict = {}
_fast_configs: dict = {}
_fast_api: list = []  # [numba-cuda's dispatcher module], or [None] when unusable


def _fast_module():
    if not _fast_api:
        try:
            import numba.cuda.dispatcher as nd

            for name in ("launch", "LaunchConfig", "CUDA_CORE_GE_1_0",
                         "normalize_kernel_dimensions", "driver"):
                getattr(nd, name)
            if not hasattr(nd.driver, "_to_core_stream"):
                raise AttributeError("_to_core_stream")
            _fast_api.append(nd)
        except (ImportError, AttributeError):
            _fast_api.append(None)
    return _fast_api[0]


def _argument_key(a):
    """What numba types an argument by: the numba type of a device array (a
    cached property), the Python type of a scalar; None if not handled here."""
    t = getattr(a, "_numba_type_", None)
    if t is not None:
        return t
    if type(a) is int and not -(1 << 63) <= a < (1 << 63):
        return None  # typed as uint64 or refused by numba
    if isinstance(a, (bool, int, float, np.generic)):
        return type(a)
    return None


def _marshaller(ty):
    """Appends one argument's kernel parameters (numba-cuda's _prepare_args, for
    the types hrarray's kernels take); None for any other type."""
    from numba.cuda import types as nt

    if isinstance(ty, nt.Array):
        from numba.cuda.np import numpy_support

        def array(a, out):
            v = a._strided_memory_view_shim  # numba device arrays (a cached property)
            lay = v._layout
            itemsize = v.dtype.itemsize
            out += (0, 0, v.size, itemsize, v.ptr)
            out.extend(v.shape)
            out.extend(lay.strides_in_bytes or numpy_support.strides_from_shape(
                shape=v.shape, itemsize=itemsize, c_contiguous=lay.is_contiguous_c,
                f_contiguous=lay.is_contiguous_f))
        return array
    if isinstance(ty, nt.Integer):
        ct = getattr(ctypes, f"c_{ty}")
        return lambda a, out: out.append(ct(a))
    if ty == nt.float64:
        return lambda a, out: out.append(ctypes.c_double(a))
    if ty == nt.float32:
        return lambda a, out: out.append(ctypes.c_float(a))
    if ty == nt.boolean:
        return lambda a, out: out.append(a)
    if ty == nt.float16:
        return lambda a, out: out.append(ctypes.c_uint16(np.float16(a).view(np.uint16)))
    if ty in (nt.complex64, nt.complex128):
        ct = ctypes.c_float if ty == nt.complex64 else ctypes.c_double

        def complex_(a, out):
            out += (ct(a.real), ct(a.imag))
        return complex_
    return None


def _same_parameters(mine, ref) -> bool:
    if len(mine) != len(ref):
        return False
    for x, y in zip(mine, ref, strict=True):
        if type(x) is not type(y):
            return False
        if isinstance(x, ctypes._SimpleCData):
            if bytes(x) != bytes(y):
                return False
        elif x != y:
            return False
    return True


def _fast_entry(fn, args, stream):
    """(cuda.core kernel, marshallers) for ``fn`` on ``args``' types, or None."""
    try:
        stream = _fast_module().driver._to_core_stream(stream)
        types_ = tuple(fn.typeof_pyval(a) for a in args)
        kernel = fn.overloads.get(types_)
        if kernel is None or getattr(kernel, "debug", False) or kernel.cooperative:
            return None
        if getattr(fn, "_launch_config_sensitive", False) or getattr(
                kernel, "launch_config_sensitive", False):
            return None  # numba picks such a kernel per grid and block; the key has neither
        if getattr(kernel, "extensions", None):
            return None
        ms = [_marshaller(t) for t in kernel.argument_types]
        if any(m is None for m in ms):
            return None
        mine: list = []
        for m, a in zip(ms, args, strict=True):
            m(a, mine)
        ref: list = []
        retr: list = []
        for t, a in zip(kernel.argument_types, args, strict=True):
            kernel._prepare_args(t, a, stream, retr, ref)
        if not _same_parameters(mine, ref):
            return None
        return kernel._codelibrary.get_cufunc().kernel, ms
    except Exception:  # numba-cuda internals not as expected: numba's launch stays
        return None


def _fast_key(fn, args):
    """``(fn, device, argument keys)``, or None where an argument is not handled here
    (or numba-cuda's dispatcher lacks what the fast launch uses)."""
    if _fast_module() is None:
        return None
    # the current context (its generation on its device), not the device number
    # alone: after numba.cuda.close() a new context holds new modules, and an
    # entry's kernel handle belongs to the old one
    key = [fn, context_key()]
    for a in args:
        k = _argument_key(a)
        if k is None:
            return None
        key.append(k)
    return tuple(key)


def _fast_launch(key, grid, block, stream, args) -> bool:
    """Launch through the entry of ``key``; False if it has none (yet), or if the
    launch is refused (the caller then launches through numba)."""
    ent = _fast_entries.get(key)
    if ent is None:
        return False
    kernel, ms = ent
    nd = _fast_module()
    try:
        params: list = []
        for m, a in zip(ms, args, strict=True):
            m(a, params)
        cfg = _fast_configs.get((grid, block))
        if cfg is None:
            g, b = nd.normalize_kernel_dimensions(grid, block)
            if nd.CUDA_CORE_GE_1_0:
                cfg = nd.LaunchConfig(grid=g, block=b, shmem_size=0, is_cooperative=False)
            else:
                cfg = nd.LaunchConfig(grid=g, block=b, shmem_size=0, cooperative_launch=False)
            if len(_fast_configs) >= 4096:
                _fast_configs.clear()
            _fast_configs[(grid, block)] = cfg
        nd.launch(nd.driver._to_core_stream(stream), cfg, kernel, *params)
    except Exception:
        # refused before anything ran: this kernel goes back to numba's launch
        # (every hrarray kernel rewrites its whole output: a relaunch is safe)
        _fast_entries[key] = None
        return False
    return True


_partition_fn = None


def _partition():
    """The block-boundary search kernel (shared by every declaration)."""
    global _partition_fn
    if _partition_fn is None:
        with _compiled_lock:
            if _partition_fn is None:
                mod = cg.load_module(_PARTITION, "cuda-partition", {"CACHE": _disk_cache(True)})
                _partition_fn = mod.partition
    return _partition_fn


def _warp_ok(dtypes) -> bool:
    for dt in dtypes:
        try:
            _shfl_expr("x", dt)
        except TypeError:
            return False
    return True


class _Scratch:
    """Per (device, stream) scratch buffer for block carries, reused across
    calls: kernels on one stream run in order, and the lock keeps the
    launches of two host threads sharing a stream from interleaving."""

    def __init__(self):
        self.buf = None
        self.lock = _locks.Lock()
        # carved views of buf by layout: each slice and view of a numba device
        # array is host time (context checks) on every call otherwise
        self.views: dict = {}

    def get(self, nbytes: int, stream):
        if self.buf is None or self.buf.shape[0] < nbytes:
            size = max(nbytes, 1 << 16)
            if self.buf is not None:
                size = max(size, 2 * self.buf.shape[0])
            self.buf = cuda.device_array(size, np.uint8, stream=stream)
            self.views.clear()
        return self.buf

    def carved(self, key, nbytes: int, stream, carve):
        """``carve(buf)`` for a layout ``key`` needing ``nbytes``, made once per buffer."""
        buf = self.get(nbytes, stream)
        v = self.views.get(key)
        if v is None:
            if len(self.views) >= 64:
                self.views.clear()
            v = self.views[key] = carve(buf)
        return v


_scratch: dict = {}
_scratch_lock = _locks.Lock()
#: most streams (other than the threads' default streams) with a scratch buffer kept
SCRATCH_STREAMS = 64


_contexts: dict = {}  # device number -> (its current numba Context, generation)


def context_key() -> tuple[int, int]:
    """``(device, generation)`` of the current CUDA context: the generation
    grows each time the device's context object changes (``numba.cuda.close()``
    then a new context). numba's ``Context`` compares by handle, which a new
    context may reuse, and defines no hash, so keys hold these numbers; the
    context is kept here only until it is replaced."""
    ctx = cuda.current_context()
    dev = ctx.device.id
    ent = _contexts.get(dev)
    if ent is not None and ent[0] is ctx:
        return dev, ent[1]
    with _scratch_lock:
        ent = _contexts.get(dev)
        if ent is None or ent[0] is not ctx:
            ent = _contexts[dev] = (ctx, 0 if ent is None else ent[1] + 1)
        return dev, ent[1]


#: scratch of the default-stream keys, whose stream key names the calling
#: thread: held by that thread, so that its buffers go when it ends (in a
#: process whose threads come and go, a table of them all kept every dead
#: thread's device memory)
_thread_scratch = threading.local()


def _scratch_for(key) -> _Scratch:
    """The scratch of ``key`` = ((device, generation), stream key): after
    ``numba.cuda.close()`` the device's new context must not get the old one's
    buffers (their memory went with it); the first scratch of a new generation
    drops those of older generations of the same device. (Under the simulator,
    and for a caller's None, the key holds no context.) A stream key of
    (handle, thread) is the calling thread's own: kept in a table of its own."""
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], tuple):
        table = getattr(_thread_scratch, "table", None)
        if table is None:
            table = _thread_scratch.table = {}
        s = table.get(key)
        if s is None:
            _drop_older_contexts(table, key)
            s = table[key] = _Scratch()
        return s
    with _scratch_lock:
        s = _scratch.get(key)
        if s is None:
            _drop_older_contexts(_scratch, key)
            if len(_scratch) >= SCRATCH_STREAMS:
                # streams made per request (a server's) would each keep a buffer for
                # good: the oldest goes (a caller still holding it keeps it alive)
                del _scratch[next(iter(_scratch))]
            s = _scratch[key] = _Scratch()
        return s


def _drop_older_contexts(table: dict, key) -> None:
    ctx = key[0] if isinstance(key, tuple) and key else None
    if isinstance(ctx, tuple):
        for k in [k for k in table if isinstance(k, tuple) and isinstance(k[0], tuple)
                  and k[0][0] == ctx[0] and k[0] != ctx]:
            del table[k]


def _carve(buf, offset: int, shape, dt: np.dtype):
    nbytes = int(np.prod(shape)) * dt.itemsize
    a = buf[offset : offset + nbytes].view(dt)
    if len(shape) > 1:
        a = a.reshape(shape)
    return a, offset + ((nbytes + 15) // 16) * 16


def _fix_grid(nb: int, g: int) -> int:
    """Blocks of the fix-up launch: one per chunk of ``g`` reduce blocks (a
    group screens one reduce block) on a GPU; at most two under the simulator,
    whose cost is per launched thread (its block-stride loop then covers every
    chunk)."""
    chunks = max(1, -(-nb // g))
    return min(chunks, 2) if SIMULATOR else chunks


def _columns(a, c0: int, c1: int):
    """``a[:, c0:c1]`` of a kernel argument (a numba device array, or the CUDA
    backend's light launch view, which slices by its ``columns``)."""
    cols = getattr(a, "columns", None)
    return cols(c0, c1) if cols is not None else a[:, c0:c1]


def _column_chunks(m: int, block: int):
    """The ``(c0, c1)`` column slices a 2-D launch over ``m`` columns runs as:
    one, unless its column tiles (``_layout``'s CW lanes each) would pass
    CUDA's gridDim.y limit; then slices of MAX_GRID_Y tiles."""
    width = MAX_GRID_Y * _layout(True, m, block)[0]
    if m <= width:
        return None
    return [(c0, min(c0 + width, m)) for c0 in range(0, m, width)]


def _layout(two_d: bool, m: int, block: int):
    """(CW lanes per group, G groups, WG groups per warp chunk) of a block."""
    cw = min(m, block, ROW_LANES) if two_d else 1
    g = block // cw
    wg = 32 // cw if (cw <= 32 and 32 % cw == 0) else 1
    return cw, g, wg


class CudaReduceKernel:
    """The compiled CUDA functions of one reduction declaration."""

    kind = "reduce"

    def __init__(self, decl: Decl, block: int, items: int, warp=None, value_dtype=None):
        _check_settings(block, items)
        self.decl = decl
        self.dtypes = cg.component_dtypes(decl.identity)
        block, items = _fit_shared(self.dtypes, block, items)
        self.block = block
        self.items = items
        self.warp = (not SIMULATOR) and warp is not False and _warp_ok(self.dtypes)
        self.stage = _stage_dtype(self.dtypes, block, items, value_dtype)
        persistent = decl.key[0] != "user"
        src = _reduce_source(decl, self.dtypes, block, items, self.warp, _disk_cache(persistent),
                             self.stage)
        ns = cg.decl_namespace(decl, cuda.jit(device=True), self.dtypes, is_empty=True)
        if decl.step is not None:
            ns["step"] = cg.jitify(decl.step, cuda.jit(device=True))
        if self.stage is not None:
            ns["VDT"] = self.stage.type
        stag = None if self.stage is None else self.stage.str
        tag = repr(("cuda", decl.key, block, items, self.warp, stag))
        self.mod = cg.load_module(src, tag, ns, persistent=persistent)

    def functions(self):
        m = self.mod
        return [m.reduce_1d, m.fixup_1d, m.reduce_2d, m.fixup_2d]

    def _launch(self, fn, name, grid, args, stream):
        _note_launch((self.decl.key, self.block, self.items, name), args)
        launch(fn, grid, self.block, stream, args)

    def run(self, values, offsets, out, fill, use_fill, aux=None, stream=0, scratch_key=None):
        """Reduce numba device ``values`` (1-D, or 2-D rows) by validated
        ``offsets`` into ``out`` (``(nseg,)`` or ``(nseg, m)``); asynchronous
        on ``stream``."""
        nseg = offsets.shape[0] - 1
        if nseg <= 0:
            return out
        if self.stage is not None and values.dtype != self.stage:
            raise TypeError(f"this kernel stages {self.stage} values, got {values.dtype}")
        two_d = values.ndim == 2
        m = values.shape[1] if two_d else 1
        if m == 0:
            return out
        block, items = self.block, self.items
        chunks = _column_chunks(m, block) if two_d else None
        if chunks is not None:
            for c0, c1 in chunks:
                self.run(_columns(values, c0, c1), offsets, _columns(out, c0, c1), fill,
                         use_fill, aux=aux, stream=stream, scratch_key=scratch_key)
            return out
        cw, g, wg = _layout(two_d, m, block)
        tile = g * items
        # Upper bound of the merged length: no host read of offsets (no sync);
        # blocks past the true end return at once.
        total_ub = values.shape[0] + nseg
        nb = max(1, -(-total_ub // tile))
        ny = -(-m // cw)
        cshape = (nb, m) if two_d else (nb,)
        need = ((nb + 1) * 8 + 15) // 16 * 16
        for dt in self.dtypes:
            need += 2 * (((int(np.prod(cshape)) * dt.itemsize) + 15) // 16 * 16)
        mod = self.mod
        vals = (values, aux) if self.decl.aux else (values,)
        dtypes = self.dtypes

        def carve(buf):
            bi, off = _carve(buf, 0, (nb + 1,), np.dtype(np.int64))
            heads, tails = [], []
            for dt in dtypes:
                a, off = _carve(buf, off, cshape, dt)
                heads.append(a)
            for dt in dtypes:
                a, off = _carve(buf, off, cshape, dt)
                tails.append(a)
            return bi, heads, tails

        sc = _scratch_for(scratch_key)
        with sc.lock:
            key = ("reduce", nb, cshape, tuple(dt.str for dt in dtypes))
            bi, heads, tails = sc.carved(key, need, stream, carve)
            launch(_partition(), -(-(nb + 1) // block), block, stream, (offsets, tile, bi))
            if two_d:
                args = (*vals, offsets, bi, g, cw, wg, tile, out, fill, use_fill, *heads, *tails)
                self._launch(mod.reduce_2d, "reduce_2d", (nb, ny), args, stream)
                # the fix-up's own layout: FIX_CW columns per group, so more groups
                # share a long span's carries (the reduce's 64-column rows gave 4);
                # wider groups where FIX_CW-column tiles would pass gridDim.y's limit
                fcw, fg, fwg = _layout(True, min(m, max(FIX_CW, -(-m // MAX_GRID_Y))), block)
                args = (offsets, bi, nb, fg, fcw, fwg, tile, m, out, fill, use_fill,
                        *heads, *tails)
                self._launch(mod.fixup_2d, "fixup_2d", (_fix_grid(nb, fg), -(-m // fcw)), args,
                             stream)
            else:
                args = (*vals, offsets, bi, g, cw, wg, tile, out, fill, use_fill, *heads, *tails)
                self._launch(mod.reduce_1d, "reduce_1d", nb, args, stream)
                args = (offsets, bi, nb, g, cw, wg, tile, 1, out, fill, use_fill, *heads, *tails)
                self._launch(mod.fixup_1d, "fixup_1d", _fix_grid(nb, g), args, stream)
        return out


# ------------------------------------------------------------------ map / scan

_BLOCK_HEAD = """    tid = cuda.threadIdx.x
    b = cuda.blockIdx.x
    nseg = offsets.shape[0] - 1
    base = np.int64(offsets[0])
    ub = np.uint64(base)  # unsigned indices: no negative-index wraparound
    total = np.int64(offsets[nseg]) - base + nseg
    D0 = b * tile
    if D0 >= total:
        return
    D1 = D0 + tile
    if D1 > total:
        D1 = total
    bi0 = bi[b]
    bi1 = bi[b + 1]
    cnt = bi1 - bi0 + 1
    q = tid
    while q < cnt:
        sOff[np.uint64(q)] = np.int64(offsets[np.uint64(bi0 + q)]) - base
        q += BLOCK
    cuda.syncthreads()
    g = tid // CW
    l = tid - g * CW
    col = cuda.blockIdx.y * CW + l
""" + _GROUP_STARTS

_GROUP_RANGE = """        d0 = D0 + g * ITEMS
        if d0 > D1:
            d0 = D1
        d1 = d0 + ITEMS
        if d1 > D1:
            d1 = D1
        i0 = sI[g]
        i1 = sI[g + 1]
        j0 = d0 - i0
        j1 = d1 - i1
"""


def _header_source(block: int, items: int, cache: bool) -> str:
    return (
        "import numpy as np\nfrom numba import cuda\n\n"
        f"BLOCK = {block}\nITEMS = {items}\nWIN = {block * items + 1}\nBP1 = {block + 1}\n"
        f"STACK = {STACK}\nSMALL = {SMALL}\nCACHE = {cache}\nFULL = 0xFFFFFFFF\n"
    )


def _map_source(reads_values: bool, block: int, items: int, cache: bool) -> str:
    src = [_header_source(block, items, cache)]
    v = "values, " if reads_values else ""
    for two_d in (False, True):
        nd = "2d" if two_d else "1d"
        cix = ", col" if two_d else ""
        if reads_values:
            row = f"p = per[k{cix}]"
            elem = f"fn(values[ub + np.uint64(j){cix}], p)"
        else:
            row = f"p = fn(per[k{cix}])"
            elem = "p"
        src.append(f"""
@cuda.jit(cache=CACHE)
def map_{nd}({v}offsets, per, bi, G, CW, tile, out):
    # out[j] = fn(values[j], per[k]) for the elements j of segment k that
    # this group owns (merge-path items of the block tile); out is compact
    sOff = cuda.shared.array(WIN, np.int64)
    sI = cuda.shared.array(BP1, np.int64)
{_BLOCK_HEAD}    m = {"out.shape[1]" if two_d else "1"}
    nout = np.int64(out.shape[0])
    if g < G and col < m:
{_GROUP_RANGE}        klast = i1 if i1 < nseg else nseg - 1
        k = i0
        while k <= klast:  # while loops: see reduce_1d
            s = sOff[np.uint64(k - bi0)]
            a = s if s > j0 else j0
            e = sOff[np.uint64(k + 1 - bi0)] if k < i1 else j1
            if e > nout:
                # out was sized from the offsets' ends kept at validation: offsets
                # edited in place since must not make a write land past it
                e = nout
            {row}
            j = a
            while j < e:
                out[np.uint64(j){cix}] = {elem}
                j += 1
            k += 1
""")
    return "".join(src)


class CudaMapKernel:
    """``segment_map`` of one :class:`~hrarray._transforms_ops.MapDecl`:
    the reductions' block schedule, each group writing the elements it owns
    (no carries)."""

    kind = "map"

    def __init__(self, mdecl, block: int, items: int, warp=None):
        _check_settings(block, items)
        # the window of segment ends (block x items int64s) must fit too: at
        # HRARRAY_CUDA_BLOCK=1024 it took 128 KiB and the kernel did not assemble
        block, items = _fit_shared((), block, items)
        self.mdecl = mdecl
        self.block = block
        self.items = items
        src = _map_source(mdecl.reads_values, block, items, _disk_cache(True))
        ns = {"fn": cg.jitify(mdecl.fn, cuda.jit(device=True), {})}
        self.mod = cg.load_module(src, repr(("cuda-map", mdecl.key, block, items)), ns)

    def functions(self):
        return [self.mod.map_1d, self.mod.map_2d]

    def run(self, values, offsets, per, out, stream=0, scratch_key=None):
        """``out`` (compact ``(nvalues,)`` or ``(nvalues, m)``) from validated offsets."""
        nseg = offsets.shape[0] - 1
        if nseg <= 0 or out.shape[0] == 0:
            return out
        two_d = out.ndim == 2
        m = out.shape[1] if two_d else 1
        if m == 0:
            return out
        chunks = _column_chunks(m, self.block) if two_d else None
        if chunks is not None:
            for c0, c1 in chunks:
                self.run(None if values is None else _columns(values, c0, c1), offsets,
                         _columns(per, c0, c1), _columns(out, c0, c1), stream=stream,
                         scratch_key=scratch_key)
            return out
        cw, g, _ = _layout(two_d, m, self.block)
        tile = g * self.items
        nb = max(1, -(-(out.shape[0] + nseg) // tile))
        ny = -(-m // cw)
        nd = "2d" if two_d else "1d"
        sc = _scratch_for(scratch_key)
        with sc.lock:
            bi, _ = _carve(sc.get((nb + 1) * 8, stream), 0, (nb + 1,), np.dtype(np.int64))
            launch(_partition(), -(-(nb + 1) // self.block), self.block, stream,
                   (offsets, tile, bi))
            vals = (values,) if self.mdecl.reads_values else ()
            args = vals + (offsets, per, bi, g, cw, tile, out)
            _note_launch((self.mdecl.key, self.block, self.items, "map_" + nd), args)
            launch(getattr(self.mod, "map_" + nd), (nb, ny), self.block, stream, args)
        return out


def _scan_source(decl: Decl, dtypes, block: int, items: int, warp: bool, cache: bool) -> str:
    K = decl.arity
    SH = cg.args("sh", K)
    T = cg.args("t", K)
    C = cg.args("c", K)
    src = [
        _header_source(block, items, cache),
        _warp_scan_source(K, dtypes, warp),
        _block_scan_source(K),
    ]
    for two_d in (False, True):
        nd = "2d" if two_d else "1d"
        cix = ", col" if two_d else ""

        def val(row, _two_d=two_d):
            return f"values[np.uint64({row}), col]" if _two_d else f"values[np.uint64({row})]"

        m_expr = "values.shape[1]" if two_d else "1"
        tail = f"""    st = IDENT
    key = nseg + 1 + g
    i0 = bi1
    i1 = bi1
    j0 = np.int64(0)
    j1 = np.int64(0)
    if g < G:
{_GROUP_RANGE}        key = i1
        if col < m and i1 < nseg:
            s = sOff[np.uint64(i1 - bi0)]
            a = s if s > j0 else j0
            j = a
            while j < j1:
                st = combine(st, map_({val("base + j")}, j - s))
                j += 1
    block_scan(st, key, tid, CW, G, WG, {SH}, sk)
"""
        src.append(f"""
@cuda.jit(cache=CACHE)
def tails_{nd}(values, offsets, bi, G, CW, WG, tile, {T}):
    # phase 1: t[b] = this block's piece of the segment open at its end
    sOff = cuda.shared.array(WIN, np.int64)
    sI = cuda.shared.array(BP1, np.int64)
{_shared_decls(K, dtypes, "    ")}{_BLOCK_HEAD}    m = {m_expr}
{tail}    if g == G - 1 and col < m and bi1 < nseg:
        r = {cg.load("sh", K, "tid")}
{cg.store("t", K, "b" + cix, "r", "        ")}

@cuda.jit(cache=CACHE)
def carry_{nd}(bi, nb, G, CW, WG, m, {T}, {C}):
    # phase 2 (one block per column tile): c[b] = state of segment bi[b]
    # over the blocks before b (exclusive segmented scan of the tails;
    # the tail of block q belongs to segment bi[q + 1])
{_shared_decls(K, dtypes, "    ")}    tid = cuda.threadIdx.x
    g = tid // CW
    l = tid - g * CW
    col = cuda.blockIdx.y * CW + l
    per = (nb + G - 1) // G
    q0 = g * per
    q1 = q0 + per
    if q1 > nb:
        q1 = nb
    st = IDENT
    key = bi[nb] + 1 + g
    if g < G and q0 < nb:
        key = bi[q0 + 1]
        if col < m:
            for q in range(q0, q1):
                k = bi[q + 1]
                if k != key:
                    st = IDENT
                    key = k
                st = combine(st, {cg.load("t", K, "q" + cix)})
        else:
            key = bi[q1]
    block_scan(st, key, tid, CW, G, WG, {SH}, sk)
    if g < G and q0 < nb and col < m:
        st = IDENT
        if g > 0:
            p = tid - CW
            st = {cg.load("sh", K, "p")}
        key = bi[q0]
        for q in range(q0, q1):
{cg.store("c", K, "q" + cix, "st", "            ")}            k = bi[q + 1]
            if k != key:
                st = IDENT
                key = k
            st = combine(st, {cg.load("t", K, "q" + cix)})


@cuda.jit(cache=CACHE)
def scan_{nd}(values, offsets, bi, G, CW, WG, tile, exclusive, out, {C}):
    # phase 3: every group scans the elements it owns, its first piece
    # starting from the carry of the earlier groups and blocks
    sOff = cuda.shared.array(WIN, np.int64)
    sI = cuda.shared.array(BP1, np.int64)
{_shared_decls(K, dtypes, "    ")}{_BLOCK_HEAD}    m = {m_expr}
    nout = np.int64(out.shape[0])
{tail}    if g < G and col < m:
        pre = IDENT
        if g > 0:
            p = tid - CW
            pre = {cg.load("sh", K, "p")}
        if i0 == bi0 and sOff[0] < D0 - bi0:
            pre = combine({cg.load("c", K, "b" + cix)}, pre)
        klast = i1 if i1 < nseg else nseg - 1
        k = i0
        while k <= klast:  # while loops: see reduce_1d
            s = sOff[np.uint64(k - bi0)]
            a = s if s > j0 else j0
            e = sOff[np.uint64(k + 1 - bi0)] if k < i1 else j1
            if e > nout:
                # out was sized from the offsets' ends kept at validation: offsets
                # edited in place since must not make a write land past it
                e = nout
            acc = pre if s < j0 else IDENT
            j = a
            if exclusive:
                while j < e:
                    out[np.uint64(j){cix}] = finalize(acc, j - s)
                    acc = combine(acc, map_({val("base + j")}, j - s))
                    j += 1
            else:
                while j < e:
                    acc = combine(acc, map_({val("base + j")}, j - s))
                    out[np.uint64(j){cix}] = finalize(acc, j - s + 1)
                    j += 1
            k += 1
""")
    return "".join(src)


class CudaScanKernel:
    """``segment_scan`` of one reduction declaration: reduce-then-scan on the
    reductions' block schedule (tails per block, one-block carry scan, then
    every group scans its elements from its carry)."""

    kind = "scan"

    def __init__(self, decl: Decl, block: int, items: int, warp=None):
        _check_settings(block, items)
        self.decl = decl
        self.dtypes = cg.component_dtypes(decl.identity)
        block, items = _fit_shared(self.dtypes, block, items)  # as the reduce's blocks
        self.block = block
        self.items = items
        self.warp = (not SIMULATOR) and warp is not False and _warp_ok(self.dtypes)
        persistent = decl.key[0] != "user"
        src = _scan_source(decl, self.dtypes, block, items, self.warp, _disk_cache(persistent))
        ns = cg.decl_namespace(decl, cuda.jit(device=True), self.dtypes)
        tag = repr(("cuda-scan", decl.key, block, items, self.warp))
        self.mod = cg.load_module(src, tag, ns, persistent=persistent)

    def functions(self):
        m = self.mod
        return [m.tails_1d, m.carry_1d, m.scan_1d, m.tails_2d, m.carry_2d, m.scan_2d]

    def run(self, values, offsets, out, exclusive, stream=0, scratch_key=None):
        nseg = offsets.shape[0] - 1
        if nseg <= 0 or out.shape[0] == 0:
            return out
        two_d = values.ndim == 2
        m = values.shape[1] if two_d else 1
        if m == 0:
            return out
        block = self.block
        chunks = _column_chunks(m, block) if two_d else None
        if chunks is not None:
            for c0, c1 in chunks:
                self.run(_columns(values, c0, c1), offsets, _columns(out, c0, c1), exclusive,
                         stream=stream, scratch_key=scratch_key)
            return out
        cw, g, wg = _layout(two_d, m, block)
        tile = g * self.items
        nb = max(1, -(-(values.shape[0] + nseg) // tile))
        ny = -(-m // cw)
        cshape = (nb, m) if two_d else (nb,)
        need = ((nb + 1) * 8 + 15) // 16 * 16
        for dt in self.dtypes:
            need += 2 * (((int(np.prod(cshape)) * dt.itemsize) + 15) // 16 * 16)
        mod = self.mod
        nd = "2d" if two_d else "1d"
        sc = _scratch_for(scratch_key)
        with sc.lock:
            buf = sc.get(need, stream)
            bi, off = _carve(buf, 0, (nb + 1,), np.dtype(np.int64))
            tails, carries = [], []
            for dt in self.dtypes:
                a, off = _carve(buf, off, cshape, dt)
                tails.append(a)
            for dt in self.dtypes:
                a, off = _carve(buf, off, cshape, dt)
                carries.append(a)
            launch(_partition(), -(-(nb + 1) // block), block, stream, (offsets, tile, bi))
            key = (self.decl.key, block, self.items)
            if nb > 1:
                args = (values, offsets, bi, g, cw, wg, tile, *tails)
                _note_launch(key + ("tails_" + nd,), args)
                launch(getattr(mod, "tails_" + nd), (nb, ny), block, stream, args)
                args = (bi, nb, g, cw, wg, m, *tails, *carries)
                _note_launch(key + ("carry_" + nd,), args)
                launch(getattr(mod, "carry_" + nd), (1, ny), block, stream, args)
            args = (values, offsets, bi, g, cw, wg, tile, bool(exclusive), out, *carries)
            _note_launch(key + ("scan_" + nd,), args)
            launch(getattr(mod, "scan_" + nd), (nb, ny), block, stream, args)
        return out


#: kernel kinds a declaration can be compiled into: a reduction (also with an
#: auxiliary per-element array), a segment-wise map, a segment-wise scan
_KINDS = {"reduce": CudaReduceKernel, "map": CudaMapKernel, "scan": CudaScanKernel}



def get_kernel(decl, kind: str = "reduce", value_dtype=None):
    """The compiled kernel of a declaration (a reduction ``Decl``, or a
    ``MapDecl`` for ``kind="map"``), generated once per declaration key, kind,
    block size, items per thread, warp setting and, for a reduction, the
    dtype of the values it will read (``value_dtype``: its tiles are staged
    through shared memory; without it values are read in place)."""
    block, items, warp = BLOCK, ITEMS, WARP
    vkey = None if value_dtype is None or kind != "reduce" else np.dtype(value_dtype).str
    key = (kind, decl.key, block, items, warp, vkey)
    k = _compiled.get(key)
    if k is None:
        with _compiled_lock:
            k = _compiled.get(key)
            if k is None:
                if vkey is None:
                    k = _KINDS[kind](decl, block, items, warp)
                else:
                    k = _KINDS[kind](decl, block, items, warp, value_dtype=np.dtype(vkey))
                _compiled[key] = k
    return k
