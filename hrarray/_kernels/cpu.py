"""CPU kernel factory: one declaration in, parallel Numba kernels out.

Schedule (balanced by elements, not by segments)
------------------------------------------------
The work of a reduction is the *merged* sequence of elements and segment
ends (merge path, as in Merrill & Garland's merge-based SpMV)::

    elements      e0 e1 e2 | e3 e4 e5 e6 e7 | e8 ...
    segment ends           ^end0           ^end1 ^end2 (empty)
    merged        e0 e1 e2 E0 e3 e4 ... e7 E1 E2 e8 ...
    chunks        |<--- chunk 0 --->|<--- chunk 1 --->| ...

It is cut into ``T`` chunks of equal length (``T`` = number of threads),
found by a binary search per chunk boundary, so a chunk costs the same
whether it holds one piece of a huge segment or thousands of empty ones.
Inside a chunk, every segment that starts and ends in the chunk is reduced
and written directly. A segment cut by a chunk edge leaves a *tail* partial
state in the chunk where it starts (or passes through) and a *head* partial
in the chunk where it ends; a short serial fix-up pass combines them in
order (O(T)). Runs of tiny segments cost one offsets read each and no
per-segment dispatch.

Accuracy: each segment piece is reduced in blocks of ``BLOCK`` elements (a
loop LLVM vectorises), and the block states are combined pairwise through a
binary-counter stack, so long float64 sums carry NumPy-like pairwise error.
float16/float32 sums accumulate in float64 (the declaration's accumulator).

Kernels are compiled with ``fastmath={"reassoc", "nsz", "contract"}``: this
lets LLVM vectorise the block loops, and keeps NaN and inf semantics (no
``nnan``/``ninf``); the NaN tests pin that.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np

from hrarray._kernels import _codegen as cg
from hrarray.reducer import Decl

BLOCK = 128
LANES = 8
SHORT = 16
STACK = 64  # pairwise stack depth: 2**64 blocks
FASTMATH = {"reassoc", "nsz", "contract"}
JIT_OPTS = {"nogil": True, "error_model": "numpy", "fastmath": FASTMATH}

# Numba's workqueue threading layer aborts the process when parallel kernels
# are entered from several Python threads at once (research/reliability.md
# (d)); omp/tbb are fine but not always present. Serialising parallel launches
# is cheap (each already uses every core) and makes concurrent callers, such
# as Dask's threaded scheduler, safe on every layer.
_parallel_lock = threading.Lock()


def _choose_threading_layer() -> None:
    """Prefer Numba's own ``workqueue`` layer unless the user chose one.

    The OpenMP layer loads a second OpenMP runtime beside PyTorch's own in
    processes that use both, which is undefined behaviour (wrong results and
    crashes were seen with torch CPU ops in the same process). The workqueue
    layer needs no OpenMP; it is not safe for concurrent parallel launches,
    but hrarray serialises its parallel launches anyway (``_parallel_lock``).
    ``NUMBA_THREADING_LAYER`` (or setting ``numba.config.THREADING_LAYER``
    before the first hrarray call) keeps the user's choice.
    """
    if os.environ.get("NUMBA_THREADING_LAYER") or numba.config.THREADING_LAYER != "default":
        return
    try:
        numba.threading_layer()  # raises until some parallel code has run
    except ValueError:
        numba.config.THREADING_LAYER = "workqueue"


_layer_checked = False


def _num_threads() -> int:
    # get_num_threads() starts Numba's threading layer: choose it first.
    global _layer_checked
    if not _layer_checked:
        _choose_threading_layer()
        _layer_checked = True
    return numba.get_num_threads()

PARALLEL_MIN_WORK = 1 << 16

_compiled: dict = {}
_compiled_lock = threading.RLock()


def compiled_count() -> int:
    """Number of compiled kernel specialisations so far (0 right after import)."""
    n = 0
    with _compiled_lock:
        for k in _compiled.values():
            for fn in k.functions():
                n += len(fn.signatures)
    return n


def _lanes_code(aux: bool, ind: str) -> str:
    """Block ``seg`` reduced as LANES contiguous lanes in lock step.

    Independent dependency chains give instruction-level parallelism to
    combines that LLVM cannot vectorise (branchy NaN-propagating max, tuple
    states); lanes are combined pairwise in order, so a non-commutative
    combine still sees adjacent ranges, earlier first.
    """
    wv = (lambda i, t: f"ws{i}[{t}], ") if aux else (lambda i, t: "")
    lines = [f"{ind}w8 = seg.shape[0] >> {LANES.bit_length() - 1}\n"]
    for i in range(LANES):
        lines.append(f"{ind}s{i} = seg[{i} * w8:{i + 1} * w8]\n")
        if aux:
            lines.append(f"{ind}ws{i} = wseg[{i} * w8:{i + 1} * w8]\n")
        lines.append(f"{ind}l{i} = IDENT\n")
    lines.append(f"{ind}for t in range(w8):\n")
    for i in range(LANES):
        lines.append(
            f"{ind}    l{i} = combine(l{i}, map_(s{i}[t], {wv(i, 't')}off + {i} * w8 + t))\n"
        )
    tree = [f"l{i}" for i in range(LANES)]
    while len(tree) > 1:
        tree = [f"combine({tree[i]}, {tree[i + 1]})" for i in range(0, len(tree), 2)]
    lines.append(f"{ind}blk = {tree[0]}\n")
    lines.append(f"{ind}for t in range({LANES} * w8, seg.shape[0]):\n")
    ww = "wseg[t], " if aux else ""
    lines.append(f"{ind}    blk = combine(blk, map_(seg[t], {ww}off + t))\n")
    return "".join(lines)


def _block_code(style: str, aux: bool, ind: str) -> str:
    """Source that reduces block ``seg`` (local offset ``off``) into ``blk``."""
    ww = "wseg[t], " if aux else ""
    if style == "simd":
        # A plain loop: with reassoc LLVM vectorises sums, products, counts.
        return (
            f"{ind}blk = IDENT\n"
            f"{ind}for t in range(seg.shape[0]):\n"
            f"{ind}    blk = combine(blk, map_(seg[t], {ww}off + t))\n"
        )
    if style == "extreme":
        # Float max/min/argmax/argmin: when the block is all finite (checked
        # with a vectorised NaN/inf probe compiled WITHOUT fast-math), its
        # extreme comes from a vectorised fast-math loop; otherwise the exact
        # declaration runs. Same result either way, by construction.
        return (
            f"{ind}if nonfinite(seg):\n"
            + _lanes_code(aux, ind + "    ")
            + f"{ind}else:\n"
            + f"{ind}    blk = fast_block(seg, off)\n"
        )
    return _lanes_code(aux, ind)


_EXTREME_HELPERS = '''
from hrarray._kernels._cpu_bits import bitcast_to_float, bitcast_to_int
@numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc", "nsz"}, cache=_OPTS["cache"])
def nonfinite(seg):
    # x * 0 is 0 for finite x and NaN for NaN or +-inf; no nnan/ninf flags,
    # so LLVM may vectorise the sum but not fold the product away.
    acc = seg.dtype.type(0)
    for t in range(seg.shape[0]):
        acc += seg[t] * 0
    return acc != 0


@numba.njit(nogil=True, error_model="numpy", cache=_OPTS["cache"])
def block_extreme(seg):
    # Only called on all-finite blocks. The max/min runs on integer order
    # keys (float bits with the magnitude flipped for negatives), which LLVM
    # vectorises; the float select reduction it does not.
    m = _key(seg[0])
    if IS_MAX:
        for t in range(1, seg.shape[0]):
            k = _key(seg[t])
            m = k if k > m else m
    else:
        for t in range(1, seg.shape[0]):
            k = _key(seg[t])
            m = k if k < m else m
    return bitcast_to_float(IT(m ^ ((m >> SHIFT) & MAG)))


@numba.njit(nogil=True, cache=_OPTS["cache"])
def first_index(seg, m):
    # min over t of (t where seg[t] == m): a vectorisable integer reduction
    # instead of an early-exit scan
    n = seg.shape[0]
    best = n - 1
    for t in range(n):
        c = t if seg[t] == m else n
        best = c if c < best else best
    return best


@numba.njit(inline="always", cache=_OPTS["cache"])
def _key(v):
    k = bitcast_to_int(v)
    # IT(...): Numba widens int32 arithmetic to int64; keep the key's width
    return IT(k ^ ((k >> SHIFT) & MAG))


@numba.njit(nogil=True, error_model="numpy", cache=_OPTS["cache"])
def fast_block(seg, off):
    m = block_extreme(seg)
    if IS_ARG:
        return (VT(m), np.int64(off + first_index(seg, m)))
    return VT(m)
'''


def _signature_text(decl: Decl) -> str:
    return repr(decl.key)


def _source(decl: Decl, cache: bool) -> str:
    K = decl.arity
    aux = decl.aux
    w1 = ", w" if aux else ""
    wj = "w[j], " if aux else ""
    wjc = "w[j], " if aux else ""

    def wpi(i):
        return f"w[p{i} + t], " if aux else ""

    H = cg.args("h", K)
    Tl = cg.args("t", K)
    src = [
        "import numba\n",
        "import numpy as np\n",
        "from numba import prange\n\n",
        # sorted: a set's repr depends on the hash seed, and the source text
        # names the cache file (it must be the same in every process)
        f"_OPTS = dict(nogil=True, error_model='numpy', "
        f"fastmath=set({sorted(FASTMATH)!r}), cache={cache})\n\n",
    ]
    # ---------------- 1-D: pairwise-blocked range reduction, 8 lanes per block
    K1 = max(K, 1)
    KA = cg.args("k", K)
    style = decl.meta.get("style", "lanes")
    block = _block_code(style, aux, "        ")
    src.append(f"""
@numba.njit(inline="always", **_OPTS)
def range_1d(values{w1}, a, e, s, {KA}):
    # Tiny ranges: a fixed-trip, branch-free loop over 8 elements whose
    # extra iterations are masked out by a select (random lengths 0..8 would
    # otherwise cost a mispredicted loop exit per segment). The overread
    # stays inside `values` (checked) and its results are discarded.
    if e - a <= 8 and a + 8 <= values.shape[0]:
        st = IDENT
        seg = values[a:a + 8]
{"        wseg = w[a:a + 8]" + chr(10) if aux else ""}        L = e - a
        off = a - s
        for t in range(8):
            c = combine(st, map_(seg[t], {"wseg[t], " if aux else ""}off + t))
            st = c if t < L else st
        return st
    # Short ranges: one plain loop, no block machinery.
    if e - a <= {SHORT}:
        st = IDENT
        for j in range(a, e):
            st = combine(st, map_(values[j], {wj}j - s))
        return st
    # Blocks of {BLOCK} elements, reduced from a slice (slices have
    # non-negative indices, so LLVM can vectorise without wrap-around
    # checks), then merged through a binary-counter stack: pairwise order.
    nb = 0
    cnt = 0
    pos = a
    while pos < e:
        q = pos + {BLOCK}
        if q > e:
            q = e
        seg = values[pos:q]
{"        wseg = w[pos:q]" + chr(10) if aux else ""}        off = pos - s
{block}        if cnt == 0 and q == e:
            return blk
        cnt += 1
        m = cnt
        while (m & 1) == 0:
            nb -= 1
            blk = combine({cg.load("k", K, "nb")}, blk)
            m >>= 1
{cg.store("k", K, "nb", "blk", "        ")}        nb += 1
        pos = q
    if cnt == 0:
        return IDENT
    nb -= 1
    st = {cg.load("k", K, "nb")}
    while nb > 0:
        nb -= 1
        st = combine({cg.load("k", K, "nb")}, st)
    return st
""")
    if style == "extreme":
        src.append(_EXTREME_HELPERS)
    stk_alloc = "".join(f"        k{i} = np.empty({STACK}, DT{i})\n" for i in range(K1))
    for par in (False, True):
        name = "chunks_1d_par" if par else "chunks_1d"
        src.append(f"""
@numba.njit(parallel={par}, **_OPTS)
def {name}(values{w1}, offsets, bi, bj, out, fill, use_fill, {H}, {Tl}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    for c in prange(bi.shape[0] - 1):
{stk_alloc}        i0 = bi[c]
        i1 = bi[c + 1]
        j0 = bj[c] + base
        j1 = bj[c + 1] + base
        for k in range(i0, i1):
            s = offsets[k]
            e = offsets[k + 1]
            a = s if s > j0 else j0
            st = range_1d(values{w1}, a, e, s, {KA})
            if s < j0:
{cg.store("h", K, "c", "st", "                ")}            else:
                n = e - s
                if use_fill and is_empty(st, n):
                    out[k] = fill
                else:
                    out[k] = finalize(st, n)
        if i1 < nseg:
            s = offsets[i1]
            a = s if s > j0 else j0
            st = range_1d(values{w1}, a, j1, s, {KA})
{cg.store("t", K, "c", "st", "            ")}
""")
    src.append(f"""
@numba.njit(**_OPTS)
def fixup_1d(offsets, bi, bj, out, fill, use_fill, {H}, {Tl}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    run = IDENT
    run_row = -1
    for c in range(bi.shape[0] - 1):
        i0 = bi[c]
        i1 = bi[c + 1]
        if i0 < i1 and offsets[i0] < bj[c] + base:
            prev = run if run_row == i0 else IDENT
            st = combine(prev, {cg.load("h", K, "c")})
            n = offsets[i0 + 1] - offsets[i0]
            if use_fill and is_empty(st, n):
                out[i0] = fill
            else:
                out[i0] = finalize(st, n)
        if i1 < nseg:
            if run_row != i1:
                run = IDENT
                run_row = i1
            run = combine(run, {cg.load("t", K, "c")})
""")
    # ---------------- 2-D: rows (n, m), threads of a chunk walk rows, SIMD across m
    acc_alloc = "".join(f"        a{i} = np.empty(m, DT{i})\n" for i in range(max(K, 1)))
    init_acc = "".join(
        f"        a{i}[col] = IDENT{'' if K == 0 else f'[{i}]'}\n" for i in range(max(K, 1))
    )
    A = cg.args("a", K)
    src.append(f"""
@numba.njit(inline="always", **_OPTS)
def range_2d(values{w1}, a, e, s, {A}):
    m = values.shape[1]
    for col in range(m):
{init_acc}    for j in range(a, e):
        jj = j - s
        for col in range(m):
            st = combine({cg.load("a", K, "col")}, map_(values[j, col], {wjc}jj))
{cg.store("a", K, "col", "st", "            ")}
""")
    copy_h = cg.store("h", K, "c, col", cg.load("a", K, "col"), "                    ")
    copy_t = cg.store("t", K, "c, col", cg.load("a", K, "col"), "                ")
    for par in (False, True):
        name = "chunks_2d_par" if par else "chunks_2d"
        src.append(f"""
@numba.njit(parallel={par}, **_OPTS)
def {name}(values{w1}, offsets, bi, bj, out, fill, use_fill, {H}, {Tl}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    m = values.shape[1]
    for c in prange(bi.shape[0] - 1):
{acc_alloc}        i0 = bi[c]
        i1 = bi[c + 1]
        j0 = bj[c] + base
        j1 = bj[c + 1] + base
        for k in range(i0, i1):
            s = offsets[k]
            e = offsets[k + 1]
            a = s if s > j0 else j0
            range_2d(values{w1}, a, e, s, {A})
            if s < j0:
                for col in range(m):
{copy_h}            else:
                n = e - s
                for col in range(m):
                    st = {cg.load("a", K, "col")}
                    if use_fill and is_empty(st, n):
                        out[k, col] = fill
                    else:
                        out[k, col] = finalize(st, n)
        if i1 < nseg:
            s = offsets[i1]
            a = s if s > j0 else j0
            range_2d(values{w1}, a, j1, s, {A})
            for col in range(m):
{copy_t}
""")
    run_alloc = "".join(f"    r{i} = np.empty(m, DT{i})\n" for i in range(max(K, 1)))
    run_reset = "".join(
        f"                    r{i}[col] = IDENT{'' if K == 0 else f'[{i}]'}\n"
        for i in range(max(K, 1))
    )
    src.append(f"""
@numba.njit(**_OPTS)
def fixup_2d(offsets, bi, bj, out, fill, use_fill, {H}, {Tl}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    m = out.shape[1]
{run_alloc}    run_row = -1
    for c in range(bi.shape[0] - 1):
        i0 = bi[c]
        i1 = bi[c + 1]
        if i0 < i1 and offsets[i0] < bj[c] + base:
            n = offsets[i0 + 1] - offsets[i0]
            for col in range(m):
                prev = {cg.load("r", K, "col")} if run_row == i0 else IDENT
                st = combine(prev, {cg.load("h", K, "c, col")})
                if use_fill and is_empty(st, n):
                    out[i0, col] = fill
                else:
                    out[i0, col] = finalize(st, n)
        if i1 < nseg:
            if run_row != i1:
                for col in range(m):
{run_reset}                run_row = i1
            for col in range(m):
                st = combine({cg.load("r", K, "col")}, {cg.load("t", K, "c, col")})
{cg.store("r", K, "col", "st", "                ")}
""")
    return "".join(src)


@numba.njit(nogil=True, cache=False)
def merge_path(offsets, nchunks):
    """Chunk boundaries ``(bi, bj)``: chunk ``c`` owns segment ends
    ``bi[c]:bi[c+1]`` and elements ``bj[c]:bj[c+1]`` (relative to offsets[0])."""
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    total = (offsets[nseg] - base) + nseg
    bi = np.empty(nchunks + 1, np.int64)
    bj = np.empty(nchunks + 1, np.int64)
    for c in range(nchunks + 1):
        d = (total * c) // nchunks
        lo = 0
        hi = nseg
        while lo < hi:  # first segment whose end lies at or after diagonal d
            mid = (lo + hi) // 2
            if offsets[mid + 1] - base + mid < d:
                lo = mid + 1
            else:
                hi = mid
        bi[c] = lo
        bj[c] = d - lo
    return bi, bj


class CpuKernel:
    """The compiled functions of one declaration."""

    def __init__(self, decl: Decl):
        self.decl = decl
        self.dtypes = cg.component_dtypes(decl.identity)
        persistent = decl.key[0] != "user"
        _, disk = cg.generated_dir()
        src = _source(decl, cache=disk and persistent)
        jit = numba.njit(**JIT_OPTS)
        memo: dict = {}
        ns = {
            "IDENT": decl.identity,
            "map_": cg.jitify(decl.map, jit, memo),
            "combine": cg.jitify(decl.combine, jit, memo),
            "finalize": cg.jitify(decl.finalize, jit, memo),
            "is_empty": cg.jitify(decl.is_empty, jit, memo),
        }
        for i, dt in enumerate(self.dtypes):
            ns[f"DT{i}"] = dt.type
        if decl.meta.get("style") == "extreme":
            kind = decl.meta["kind"]
            ns["IS_MAX"] = kind in ("max", "argmax")
            ns["IS_ARG"] = kind in ("argmax", "argmin")
            ns["VT"] = self.dtypes[0].type
            bits = self.dtypes[0].itemsize * 8
            ns["SHIFT"] = np.dtype(f"i{bits // 8}").type(bits - 1)
            ns["MAG"] = np.dtype(f"i{bits // 8}").type((1 << (bits - 1)) - 1)
            ns["IT"] = np.dtype(f"i{bits // 8}").type
        self.mod = cg.load_module(src, _signature_text(decl), ns, persistent=persistent)

    def functions(self):
        m = self.mod
        return [m.chunks_1d, m.chunks_1d_par, m.fixup_1d, m.chunks_2d, m.chunks_2d_par, m.fixup_2d]

    def run(self, values, offsets, out, fill, use_fill, aux=None):
        """Reduce ``values`` (1-D, or 2-D rows) by validated int64/int32 ``offsets``."""
        nseg = offsets.shape[0] - 1
        if nseg == 0:
            return out
        two_d = values.ndim == 2
        m = values.shape[1] if two_d else 1
        nvals = int(offsets[-1]) - int(offsets[0])
        work = nvals * m + nseg
        nthreads = _num_threads() if work >= PARALLEL_MIN_WORK else 1
        parallel = nthreads > 1
        nchunks = nthreads if parallel else 1
        if nchunks == 1:
            bi = np.array([0, nseg], np.int64)
            bj = np.array([0, nvals], np.int64)
        else:
            bi, bj = merge_path(offsets, nchunks)
        shape = (nchunks, m) if two_d else (nchunks,)
        heads = [np.empty(shape, dt) for dt in self.dtypes]
        tails = [np.empty(shape, dt) for dt in self.dtypes]
        vals = (values, aux) if self.decl.aux else (values,)
        mod = self.mod
        if two_d:
            chunk, fix = (mod.chunks_2d_par if parallel else mod.chunks_2d), mod.fixup_2d
        else:
            chunk, fix = (mod.chunks_1d_par if parallel else mod.chunks_1d), mod.fixup_1d
        if parallel:
            with _parallel_lock:
                chunk(*vals, offsets, bi, bj, out, fill, use_fill, *heads, *tails)
            fix(offsets, bi, bj, out, fill, use_fill, *heads, *tails)
        else:
            chunk(*vals, offsets, bi, bj, out, fill, use_fill, *heads, *tails)
        return out


def get_kernel(decl: Decl) -> CpuKernel:
    """The compiled kernel of a declaration (generated once per declaration key)."""
    k = _compiled.get(decl.key)
    if k is None:
        with _compiled_lock:
            k = _compiled.get(decl.key)
            if k is None:
                k = CpuKernel(decl)
                _compiled[decl.key] = k
    return k
