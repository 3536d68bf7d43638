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

import threading

import numba
import numpy as np

from hrarray._kernels import _codegen as cg
from hrarray.reducer import Decl

BLOCK = 128
LANES = 8
STACK = 64  # pairwise stack depth: 2**64 blocks
FASTMATH = {"reassoc", "nsz", "contract"}
JIT_OPTS = {"nogil": True, "error_model": "numpy", "fastmath": FASTMATH}

# Numba's workqueue threading layer aborts the process when parallel kernels
# are entered from several Python threads at once (research/reliability.md
# (d)); omp/tbb are fine but not always present. Serialising parallel launches
# is cheap (each already uses every core) and makes concurrent callers, such
# as Dask's threaded scheduler, safe on every layer.
_parallel_lock = threading.Lock()

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
        f"_OPTS = dict(nogil=True, error_model='numpy', fastmath={FASTMATH!r}, cache={cache})\n\n",
    ]
    # ---------------- 1-D: pairwise-blocked range reduction, 8 lanes per block
    K1 = max(K, 1)
    KA = cg.args("k", K)
    lanes_init = "".join(f"            l{i} = IDENT\n" for i in range(LANES))
    lanes_ptr = "".join(f"            p{i} = pos + {i} * w\n" for i in range(LANES))
    lanes_body = "".join(
        f"                l{i} = combine(l{i}, map_(values[p{i} + t], {wpi(i)}p{i} + t - s))\n"
        for i in range(LANES)
    )
    tree = [f"l{i}" for i in range(LANES)]
    while len(tree) > 1:  # combine adjacent lanes pairwise, in order
        tree = [f"combine({tree[i]}, {tree[i + 1]})" for i in range(0, len(tree), 2)]
    src.append(f"""
@numba.njit(inline="always", **_OPTS)
def range_1d(values{w1}, a, e, s, {KA}):
    # Blocks of {BLOCK}: each split into {LANES} contiguous lanes reduced in
    # lock step (independent dependency chains: ILP for branchy combines such
    # as NaN-propagating max), lanes combined pairwise in order, blocks merged
    # through a binary-counter stack (pairwise summation order).
    nb = 0
    cnt = 0
    pos = a
    while pos < e:
        q = pos + {BLOCK}
        if q > e:
            q = e
        w = (q - pos) >> {LANES.bit_length() - 1}
        if w > 0:
{lanes_init}{lanes_ptr}            for t in range(w):
{lanes_body}            blk = {tree[0]}
            for j in range(pos + {LANES} * w, q):
                blk = combine(blk, map_(values[j], {wj}j - s))
        else:
            blk = IDENT
            for j in range(pos, q):
                blk = combine(blk, map_(values[j], {wj}j - s))
        if cnt == 0 and q == e:
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
        nthreads = numba.get_num_threads() if work >= PARALLEL_MIN_WORK else 1
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
