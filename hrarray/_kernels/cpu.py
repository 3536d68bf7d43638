"""CPU kernel factory: one declaration in, Numba kernels run on all cores out.

Schedule (balanced by elements, not by segments)
------------------------------------------------
The work of a reduction is the *merged* sequence of elements and segment
ends (merge path, as in Merrill & Garland's merge-based SpMV)::

    elements      e0 e1 e2 | e3 e4 e5 e6 e7 | e8 ...
    segment ends           ^end0           ^end1 ^end2 (empty)
    merged        e0 e1 e2 E0 e3 e4 ... e7 E1 E2 e8 ...
    chunks        |<--- chunk 0 --->|<--- chunk 1 --->| ...

It is cut into chunks of equal length (their number set by the size of
the work alone, see ``nchunks_for``; the threads take contiguous runs of
them), found by a binary search per chunk boundary, so a chunk costs the same
whether it holds one piece of a huge segment or thousands of empty ones.
Inside a chunk, every segment that starts and ends in the chunk is reduced
and written directly. A segment cut by a chunk edge leaves a *tail* partial
state in the chunk where it starts (or passes through) and a *head* partial
in the chunk where it ends; a short serial fix-up pass combines them in
order (O(T)). Runs of tiny segments cost one offsets read each and no
per-segment dispatch.

Accuracy: each segment piece is reduced in blocks of ``BLOCK`` elements (a
loop LLVM vectorises), and the block states are combined pairwise through a
binary-counter stack (NumPy-like pairwise error). float64 sums and means
(and nansum/nanmean) of more than ``COMP_MIN`` elements also keep every
addition's rounding error, within a segment and across the chunk pieces of a
segment, and add them once (``_comp``; about one rounding in all).
A segment's result does not depend on the rows after it (tested): the
masked steps near the array's end read a copy of its last elements with the
same arithmetic (see PAD, _block_code, _ADDX_HELPERS). float16/float32 sums
accumulate in float64 (the declaration's accumulator).

Memory: the chunk loops run a software prefetch stream ``PF_BYTES`` ahead of
the element they read (see ``_PREFETCH_HELPER``).

Kernels are compiled with ``fastmath={"reassoc", "nsz", "contract"}``: this
lets LLVM vectorise the block loops, and keeps NaN and inf semantics (no
``nnan``/``ninf``); the NaN tests pin that.
"""

from __future__ import annotations

import math
import os
import textwrap
import threading

import numpy as np

from hrarray._kernels import _codegen as cg
from hrarray._kernels import _locks, native
from hrarray.reducer import Decl

BLOCK = 128
# float64 sums and means compensate segments longer than this (see _reduce_1d_code)
COMP_MIN = 8 * BLOCK
LANES = 8
SHORT = 16
# Bytes of the blocks argmax/argmin read a long segment in (exact in any
# order: no pairwise tree to keep short). A/B, one thread, segments of ~200
# (empty_heavy) float32: 6.7-6.9 ms in 128-element blocks, 5.4-5.6 in 256;
# float64 powerlaw / one_huge best at 128 (10.6-11.4 / 9.6-10.1 ms; 256:
# 11.9-12.0 / 9.9-10.6; 512: 13-14 / 12.5-13): 1 KiB either way.
ARG_BLOCK_BYTES = 1024
STACK = 64  # pairwise stack depth: 2**64 blocks
# Copies of the last 8 elements of the values (and of the attention scores),
# padded to 16 so that a masked step of 8 starting within them stays inside:
# segments near the array's end run the same masked steps as all others,
# reading these (1-D; see _block_code and _reduce_1d_code).
PAD = 16
# Software prefetch distance in bytes (see _PREFETCH_HELPER): 4-16 KiB
# measured equal, 1 KiB worse.
PF_BYTES = 8192
# Offsets entries the 1-D segment loops prefetch ahead (see _source).
OFFSETS_PF = 512
# 2-D values whose columns are contiguous (Fortran order: a pandas frame's
# .values, the transpose of a C array) with at least this many rows are
# reduced column by column through the 1-D kernel (CpuKernel._by_columns).
COLUMNS_MIN_ROWS = 4096
FASTMATH = {"reassoc", "nsz", "contract"}
JIT_OPTS = {"nogil": True, "error_model": "numpy", "fastmath": FASTMATH}
# Functions only ever called from other kernels (a declaration's map/combine/
# finalize, the generated helpers) get no Python or C entry point: Numba
# otherwise lowers and optimises both wrappers for every signature, ~10% of a
# kernel's cold compile (measured: 10.6 s -> 9.6 s for four first calls).
NO_WRAPPERS = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}
CALLEE_OPTS = {**JIT_OPTS, **NO_WRAPPERS}


def _comp(decl: Decl) -> bool:
    """Whether ``decl`` is a compensated float64 sum or mean (meta ``vsum``
    "comp", set by ``_ops._vsum``) or their NaN-skipping form ("nancomp",
    nansum/nanmean: the state ``(sum, count)``, ``_ops._nan_variant``): its
    blocks keep their rounding errors, its 1-D functions take the chunk
    pieces' errors (``he``/``te``) and a strided block's scratch row
    (``cb``)."""
    return decl.meta.get("vsum") in _COMP


_COMP = ("comp", "nancomp")


def decl_opts(decl) -> dict:
    """Numba options for a declaration's functions: CALLEE_OPTS, without
    fastmath for a declaration whose arithmetic it would break (``strict_fp``,
    see _transforms_ops.attention_spec). Fastmath flags are per instruction:
    they stay off when LLVM inlines the functions into a fastmath kernel."""
    return {**CALLEE_OPTS, "fastmath": False} if decl.meta.get("strict_fp") else CALLEE_OPTS


def decl_jits(decl) -> dict:
    """``decl_namespace``'s compilers for ``decl``: ``jit`` (decl_opts) and, for
    a declaration hinted ``strict_finalize`` (user Reducers), a ``finalize_jit``
    without fastmath. ``finalize`` runs once per segment, so Python's order of
    its operations costs nothing, where strict map/combine made 1-D user
    reductions 1.1-1.4x slower."""
    import numba

    out = {"jit": numba.njit(**decl_opts(decl))}
    if decl.meta.get("strict_finalize"):
        out["finalize_jit"] = numba.njit(**{**CALLEE_OPTS, "fastmath": False})
    return out

# Parallelism: the kernels are plain (non-parallel) nogil functions over a
# range of merge-path chunks, and a large input's chunks are run on a pool of
# Python threads (the calling thread takes chunk 0). Not Numba's
# ``parallel=True``: its parfor machinery doubled the compile time of every
# kernel signature; its default ``workqueue`` layer aborts the process when
# parallel kernels are entered from several Python threads at once
# (research/reliability.md (d)), and its ``omp`` layer loads a second OpenMP
# runtime beside PyTorch's (wrong results and a crash seen with torch CPU ops
# in the same process). Here concurrent callers (Dask's threaded scheduler)
# just share the pool, and no threading layer is ever started.
_pool = None
_pool_pid = None
_pool_lock = _locks.Lock()


def _num_threads() -> int:
    """Threads a large reduction uses: ``HRARRAY_NUM_THREADS`` if set, else
    ``NUMBA_NUM_THREADS`` (Numba's default: the CPUs this process may use)."""
    for name in ("HRARRAY_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env = os.environ.get(name)
        if env:
            try:
                return max(1, int(env))
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {env!r}") from None
    # Numba's default for NUMBA_NUM_THREADS, read without importing Numba
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _get_pool(workers: int):
    global _pool, _pool_pid
    with _pool_lock:
        # a pool inherited through fork() has no threads in the child
        if _pool is None or _pool_pid != os.getpid() or _pool._max_workers < workers:
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hrarray")
            _pool_pid = os.getpid()
        return _pool


def workers(nchunks: int) -> int:
    """Threads that run a call cut into ``nchunks`` chunks (the calling
    thread included): one per chunk, at most ``_num_threads()``."""
    if nchunks <= 1:
        return 1  # small calls: no environment or affinity read (per-call overhead)
    return max(1, min(nchunks, _num_threads()))


# Bytes between two rows of worker_rows, and before the first and after the
# last: two cache lines (the spatial prefetchers pull neighbouring lines).
ROW_GAP = 128


def worker_rows(shape: tuple, dtype) -> np.ndarray:
    """Scratch of ``shape`` (``(workers, ..., m)``) whose rows of ``m`` each
    start on a 64-byte cache line, fill whole lines and are kept ``ROW_GAP``
    bytes (two lines) away from any other row or allocation: each row is
    padded to whole lines plus the gap, and a gap lies before the first (the
    array stays C-contiguous; the kernels use the first ``m`` columns).

    The 2-D kernels update a worker's row of column accumulators once per
    input row. From a plain ``np.empty`` (16-byte aligned), float32 rows of
    64 columns straddled lines: every vector update touched two, and the
    two workers' rows shared one. 25M float32 as (n, 64), 2 threads: sum
    1.9 ms or 8.6 ms, max 1.9 ms or 3.9-6.3 ms, by where malloc put the
    scratch; line-aligned, 1.9-2.3 ms. Rows on their own lines but adjacent
    (one worker's last line next to the other's first) still cost the
    kernels that select (masked stores): float64 max 9.6 against 6.2-6.6 ms
    with a 128-byte gap or more (64 bytes: 8.0-8.6 ms), float32 argmax 4.4
    against 2.5 ms; sum unchanged."""
    dt = np.dtype(dtype)
    m = shape[-1]
    mp = -(-(-(-m * dt.itemsize // 64) * 64 + ROW_GAP) // dt.itemsize)
    n = math.prod(shape[:-1]) * mp  # (np.prod: ~4 us per call on small tuples)
    buf = np.empty(n * dt.itemsize + ROW_GAP + 64, np.uint8)
    lead = ROW_GAP + (-(buf.ctypes.data + ROW_GAP)) % 64
    return buf[lead:lead + n * dt.itemsize].view(dt).reshape(*shape[:-1], mp)


def launch(fn, nchunks: int, *args, row: bool = False) -> None:
    """Run chunks ``0..nchunks-1``: worker ``w`` of ``workers(nchunks)`` calls
    ``fn(c0, c1, *args)`` once for its contiguous range of chunks (worker 0
    on the calling thread, the others on the pool; ``fn`` is compiled with
    ``nogil``). With ``row``, ``fn(c0, c1, w, *args)``: ``w`` selects the
    worker's row of working scratch (a stack per worker, not per chunk).

    Which chunks exist depends on the data only (``chunking``), not on how
    many threads run them, so results do not depend on the thread count."""
    nw = workers(nchunks)
    if nw == 1:
        if row:
            fn(0, nchunks, 0, *args)
        else:
            fn(0, nchunks, *args)
        return
    cut = [(w * nchunks) // nw for w in range(nw + 1)]
    pool = _get_pool(nw - 1)
    if row:
        futures = [pool.submit(fn, cut[w], cut[w + 1], w, *args) for w in range(1, nw)]
    else:
        futures = [pool.submit(fn, cut[w], cut[w + 1], *args) for w in range(1, nw)]
    try:
        if row:
            fn(cut[0], cut[1], 0, *args)
        else:
            fn(cut[0], cut[1], *args)
    finally:
        for f in futures:
            f.result()


# Rows of a float32 argmax/argmin 2-D piece reduced in one pass with an int32
# row index (range_2d_arg_narrow); written into the kernel source as a literal
# (tests lower it to reach the row-block path).
NARROW_ROWS = 2**31 - 1
# Work (elements x row width + segments) from which a call is cut into
# several chunks run in parallel. Below it the pool's hand-off costs more than the second
# thread saves: float32 sum / max, 1 thread against 2 on the 2-core VM (us):
# 1-D 2**16 work 54 / 121, 2**17 113 / 177, 2**18 285 / 217, 2**19 645 / 465;
# rows of 768, 2**17 62 / 142, 2**19 269 / 298, 2**20 493 / 454 (max 446 / 461),
# 2**22 2117 / 1662. (Was 2**16 for both: mid-size calls ran 1.5-2.8x slower.)
PARALLEL_MIN_WORK = 1 << 18
PARALLEL_MIN_WORK_2D = 1 << 20
# Above those, the number of chunks is set by the work alone, one per
# CHUNK_WORK (at least 2, at most MAX_CHUNKS; rounded, see nchunks_for),
# never by the thread count: a chunk edge that cuts a segment changes how
# its pieces are combined, so chunks per thread made float results depend
# on the machine (and on HRARRAY_NUM_THREADS). Workers take contiguous runs
# of chunks (``launch``); up to MAX_CHUNKS threads share a large call. The chunk states cost
# 2 x MAX_CHUNKS x row width per state component; the working stacks are
# per worker.
CHUNK_WORK = 1 << 20
MAX_CHUNKS = 128
_I64 = np.dtype(np.int64)
# Tests set this to cut every reduction, map and scan into that many merge-path
# chunks, so chunk edges cut segments even on tiny inputs.
FORCE_CHUNKS: int | None = None


def nchunks_for(nvals: int, nseg: int, m: int) -> int:
    """Merge-path chunks of a call over ``nvals`` rows of ``m`` scalars in
    ``nseg`` segments: a function of the data's size only."""
    if FORCE_CHUNKS:
        return int(FORCE_CHUNKS)
    work = nvals * m + nseg
    if work < (PARALLEL_MIN_WORK if m == 1 else PARALLEL_MIN_WORK_2D):
        return 1
    # rounded up to 2, 4 or a multiple of 8 chunks, so that 2, 4 or 8 threads
    # take equal shares: 25M float32 as (n, 64) made 23 chunks, and of 2
    # threads one ran 12 and finished ~9 % after the other (a sum's second
    # worker ended 0.15-0.3 ms after the first, of ~2.2 ms)
    n = max(2, work // CHUNK_WORK)
    n = n if n <= 2 else 4 if n <= 4 else -(-n // 8) * 8
    return min(MAX_CHUNKS, n)


def chunking(offsets, m: int):
    """``(parallel, bi, bj)``: the merge-path chunks of a reduction, map or
    scan over validated ``offsets`` with ``m`` scalars per row (one chunk
    below ``PARALLEL_MIN_WORK`` (1-D) or ``PARALLEL_MIN_WORK_2D`` (rows of
    ``m > 1``), else ``nchunks_for``)."""
    nseg = offsets.shape[0] - 1
    nvals = int(offsets[-1] - offsets[0])
    nchunks = nchunks_for(nvals, nseg, m)
    if nchunks == 1:
        # zeros + one store: ~0.3 us less per array than np.array([0, n]), which
        # counts in the per-call overhead of small reductions
        bi = np.zeros(2, _I64)
        bi[1] = nseg
        bj = np.zeros(2, _I64)
        bj[1] = nvals
        return False, bi, bj
    bi, bj = merge_path(offsets, nchunks)
    return True, bi, bj

_compiled: dict = {}
_compiled_lock = _locks.RLock()


def compiled_count() -> int:
    """Kernel specialisations compiled by Numba or loaded as native entries
    in this process so far (0 right after import; a kernel compiled for its
    entry counts once, as the entry: Numba's dispatcher gets no overload)."""
    n = 0
    with _compiled_lock:
        for k in _compiled.values():
            for fn in k.functions():
                n += len(fn.signatures)
            n += sum(getattr(k, name).loaded() for name in k.names())
    return n


def _takes(v: str, s: str, better: str, skip: bool = False) -> str:
    """Source of the extreme fast paths' select rule: ``v`` replaces the state
    ``s`` when ``better`` (``v > s`` or ``v < s``) holds or ``v`` is the first
    NaN, the order the declaration's combine gives when elements come in
    order (its index tie-break cannot fire then). ``skip`` (nanmax and the
    like, meta ``skipnan``): a NaN never replaces ``s`` (``better`` is false
    for it) and anything replaces a NaN ``s``, which holds nothing yet."""
    if skip:
        return f"({better}) | ({s} != {s})"
    return f"({better}) | (({v} != {v}) & ({s} == {s}))"


def _indented(src: str) -> str:
    """Generated code ``src`` one level (4 spaces) deeper: nested in a branch."""
    return textwrap.indent(src, "    ")


def _lanes_code(aux: bool, ind: str) -> str:
    """Block ``values[ub:ub + nt]`` (local index ``off``) reduced into ``blk``
    as LANES contiguous lanes in lock step.

    Independent dependency chains give instruction-level parallelism to
    combines that LLVM cannot vectorise (branchy NaN-propagating max, tuple
    states); lanes are combined pairwise in order, so a non-commutative
    combine still sees adjacent ranges, earlier first.
    """
    def w(idx):
        return f"w[{idx}], " if aux else ""

    lines = [f"{ind}w8 = nt >> U3\n"]
    for i in range(LANES):
        lines.append(f"{ind}b{i} = ub + w8 * U{i}\n")
        lines.append(f"{ind}l{i} = IDENT\n")
    lines.append(f"{ind}for t in range(w8):\n")
    for i in range(LANES):
        lines.append(
            f"{ind}    l{i} = combine(l{i}, map_(values[b{i} + t], {w(f'b{i} + t')}"
            f"off + np.int64(b{i} - ub + t)))\n"
        )
    tree = [f"l{i}" for i in range(LANES)]
    while len(tree) > 1:
        tree = [f"combine({tree[i]}, {tree[i + 1]})" for i in range(0, len(tree), 2)]
    lines.append(f"{ind}blk = {tree[0]}\n")
    lines.append(f"{ind}for t in range(w8 * U8, nt):\n")
    lines.append(
        f"{ind}    blk = combine(blk, map_(values[ub + t], {w('ub + t')}off + np.int64(t)))\n"
    )
    return "".join(lines)


# Styles whose blocks are checked first, then reduced by a block function of
# their own: style -> (check, block function, arrays they read). The check
# says whether the block must run the declaration instead.
# - "lse": logsumexp / softmax statistics, (max, sum of exp(x - max)) from
#   two loops without a libm call per element (_LSE_HELPERS); NaN/inf blocks
#   run the declaration.
# - "pool": attention_pool (_POOL_HELPERS).
# - "var", "nanvar": var/std of real values and their nan variants
#   (_VAR_HELPERS).
_CHECKED_BLOCKS = {
    "lse": ("nonfinite", "lse_block", "values"),
    "pool": ("pool_nonfinite", "pool_block", "values, w"),
    "var": ("var_bad", "var_block", "values"),
    "nanvar": ("var_bad", "nanvar_block", "values"),
}
# Styles whose block function has a form for values of other than unit stride
# (attention_pool: values or scores). var_block's passes without reassoc
# (var_block_strict): inlined into the chunk loop, where LLVM does not
# vectorise a strided loop, reassoc regrouped the deviations' sums: 1e9 +
# N(0, 1) in strided segments of 129 elements came out 3e-10 off (1e12: 6e-7;
# NumPy 2e-16 and 6e-10). A stride check in var_block itself made contiguous
# var 1.9-2.6x slower. lse_block and pool_block, whose exp sums were one
# chain per strided block: partial sums of 16 (_exp_partials_source).
_STRIDED_BLOCKS = {"var": "var_block_strict", "nanvar": "nanvar_block_strict",
                   "lse": "lse_block_strided", "pool": "pool_block_strided"}


def _block_code(style: str, aux: bool, ind: str, vsum: bool | str = False,
                vmask: bool | str = False) -> str:
    """Source that reduces block ``values[ub:ub + nt]`` into ``blk``.

    ``vsum``: the declaration's meta "vsum" (True, "comp", "nancomp");
    ``vmask``: its meta "vmask" (True or "nan" give the block's tail step
    as their vector-IR step).

    Indices are unsigned (``ub``, ``nt``, ``t`` are uint64): LLVM then needs
    no negative-index wrap-around check and vectorises the loop, as it does
    for a slice, but no array object (and no atomic refcount) is created.
    """
    ww = "w[ub + t], " if aux else ""
    if vsum:
        # float sum/mean (float64 accumulator, the element as it is): unit-
        # stride blocks in one vector-IR pass with a masked tail (block_sum);
        # strided values take the loop below. "comp" (float64 values): the
        # pass also returns its additions' rounding errors (block_sum_c),
        # gathered in ``comp`` (see _reduce_1d_code)
        assert style == "simd"
        assert not aux
        if vsum in _COMP:
            # (segments of up to COMP_MIN elements keep the plain loop: see
            # _reduce_1d_code). A long segment's last block of under 16
            # elements is added in order with TwoSum (vsumc_short): in the
            # plain loop its roundings, of sums as large as its elements,
            # were the ones left (3 ulp of 3e7 in a sum of 300). Strided
            # values are first copied into the worker's row ``cbr`` (see
            # _scratch) and summed from there the same way, so a long
            # segment gives the same bits at any stride: their partial sums
            # of 16 had left 10^6 float64s of mixed scales up to 103 ulp
            # off, farther than np.sum of the same view on 12 of 20 seeds
            # (four scalar TwoSum chains instead cost 1.6x their time).
            return (
                f"{ind}if long_seg:\n"
                f"{ind}    if not unit:\n"
                f"{ind}        for t in range(nt):\n"
                f"{ind}            cbr[t] = values[ub + t]\n"
                f"{ind}        if nt >= U16:\n"
                f"{ind}            blk, bc = vsumc_block(cbr, U0, nt)\n"
                f"{ind}        else:\n"
                f"{ind}            blk, bc = vsumc_short(cbr, U0, nt)\n"
                f"{ind}    elif nt >= U16:\n"
                f"{ind}        blk, bc = vsumc_block(values, ub, nt)\n"
                f"{ind}    else:\n"
                f"{ind}        blk, bc = vsumc_short(values, ub, nt)\n"
                f"{ind}    comp += bc\n"
                f"{ind}else:\n"
                + _indented(_block_code(style, aux, ind, vmask=vmask))
            )
        return (
            f"{ind}if unit and nt >= U16:\n"
            f"{ind}    blk = vsum_block(values, ub, nt)\n"
            f"{ind}else:\n"
            + _indented(_block_code(style, aux, ind, vmask=vmask))
        )
    if style == "simd" and not aux:
        # A plain loop over the multiple of 8 (with reassoc LLVM vectorises
        # sums, products, counts), the last 1-7 elements as one masked step
        # of 8 when the array extends that far (the overread is discarded by
        # the select; combine(s, IDENT) == s): LLVM's own remainder loops
        # cost a mispredicted exit each. Segments of ~30 elements: 18.6 ->
        # 13.7 ns each, ~100: 38 -> 34 (float32 sum, single thread).
        # Within 8 elements of the array's end the same step reads ``vpad``,
        # a copy of the last elements (see PAD): LLVM reassociates the masked
        # step, so the element loop that ran there rounded differently, and a
        # segment's sum depended on whether 8 more elements followed it. (One
        # step reading either array would be one code path, but a variable
        # bound to two arrays costs Numba refcounts per segment: 3.7x slower.)
        # Float sums, means and their nan forms (``vmask`` True / "nan"): the
        # step is their one vector-IR step (masked_sum8 / masked_nansum8, a
        # fixed tree), the same code on either array. The element loop,
        # written twice, was reassociated by LLVM as it chose in each copy:
        # once float64 nansum's kernel grew (its compensated path), a
        # segment of 27 elements rounded 1 ulp apart with 7 and with 8 rows
        # after it (the test of that caught it).
        def step(arr: str) -> str:
            if vmask in (True, "nan"):
                fn = "masked_nansum8" if vmask == "nan" else "masked_sum8"
                at = "b8" if arr == "values" else "b8 - pbu"
                sx = STRIDED if arr == "values" else ""
                return (f"{ind}        s8 = {fn}{sx}({arr}, {at}, r8)\n"
                        f"{ind}        blk = combine(blk, s8)\n")
            return (
                f"{ind}        s8 = IDENT\n"
                f"{ind}        for t in range(U8):\n"
                f"{ind}            mv = map_({arr}[b8 + t], o8 + np.int64(t))\n"
                f"{ind}            s8 = combine(s8, mv if t < r8 else IDENT)\n"
                f"{ind}        blk = combine(blk, s8)\n"
            )

        unit_loop = (
            f"{ind}blk = IDENT\n"
            f"{ind}n8 = nt & M8\n"
            f"{ind}for t in range(n8):\n"
            f"{ind}    blk = combine(blk, map_(values[ub + t], off + np.int64(t)))\n"
            f"{ind}r8 = nt - n8\n"
            f"{ind}if r8 != U0:\n"
            f"{ind}    b8 = ub + n8\n"
            f"{ind}    o8 = off + np.int64(n8)\n"
            f"{ind}    if b8 + U8 <= nvu:\n"
            + step("values")
            + f"{ind}    else:\n"
            + ("" if vmask in (True, "nan") else f"{ind}        b8 -= pbu\n")
            + step("vpad")
        )
        # Values of other than unit stride: partial sums of 16 elements, added
        # in order. LLVM does not vectorise a strided loop, so the plain loop
        # was one chain per block, 127 roundings deep (a float64 sum of [1, u,
        # u, ...] read with a step of 2 came out 127u off, where np.sum of the
        # same view is 15u off; now 16u). Not 8 lanes written out: those cost
        # ~0.6 s of compile per kernel (written twice in each). Not a called
        # helper: the unit-stride path's masked step then compiled otherwise,
        # and a float64 nansum of 27 elements rounded 1 ulp apart with and
        # without rows after the segment (the test of that caught it).
        strided = (
            f"{ind}blk = IDENT\n"
            f"{ind}t16 = U0\n"
            f"{ind}while t16 < nt:\n"
            f"{ind}    k16 = min(U16, nt - t16)\n"
            f"{ind}    p16 = IDENT\n"
            f"{ind}    for t in range(t16, t16 + k16):\n"
            f"{ind}        p16 = combine(p16, map_(values[ub + t], off + np.int64(t)))\n"
            f"{ind}    blk = combine(blk, p16)\n"
            f"{ind}    t16 += k16\n"
        )
        return (
            f"{ind}if not unit:\n"
            + _indented(strided)
            + f"{ind}else:\n"
            + _indented(unit_loop)
        )
    if style == "simd":
        return (
            f"{ind}blk = IDENT\n"
            f"{ind}for t in range(nt):\n"
            f"{ind}    blk = combine(blk, map_(values[ub + t], {ww}off + np.int64(t)))\n"
        )
    if style == "extreme":
        # Float max/min/argmax/argmin: one vectorised pass finds the block's
        # largest and smallest order keys; without a NaN in the block the
        # extreme is the key's float (infinities order correctly), else the
        # exact declaration runs. Same result either way, by construction.
        # (nanmax/nanmin: a block with a NaN runs their declaration's lanes
        # too; block_keys_skip and fast_block, as nanargmax's arg_long, took
        # 1.12-1.28x their time with 1 % NaN)
        return (
            f"{ind}if unit and nt >= U16:\n"
            f"{ind}    khi, klo = block_keys_vec(values, ub, nt)\n"
            f"{ind}else:\n"
            f"{ind}    khi, klo = block_keys(values, ub, nt)\n"
            f"{ind}if khi > KPINF or klo < KNINF:\n"
            + _lanes_code(aux, ind + "    ")
            + f"{ind}else:\n"
            + f"{ind}    blk = fast_block(values, ub, nt, off, khi if IS_MAX else klo)\n"
        )
    if style in _CHECKED_BLOCKS:
        # A block the style's check passes (all finite, within bounds) gets
        # its state from the style's block function; others run the
        # declaration (see _CHECKED_BLOCKS)
        check, fn, arrs = _CHECKED_BLOCKS[style]
        assert aux == (style == "pool")
        strided = (
            f"{ind}elif not unit:\n{ind}    blk = {_STRIDED_BLOCKS[style]}({arrs}, ub, nt)\n"
            if style in _STRIDED_BLOCKS else "")
        return (
            f"{ind}if {check}({arrs}, ub, nt):\n"
            + _lanes_code(aux, ind + "    ")
            + strided
            + f"{ind}else:\n"
            + f"{ind}    blk = {fn}({arrs}, ub, nt)\n"
        )
    return _lanes_code(aux, ind)


# The chunk loops run a software prefetch stream PF_BYTES ahead of the
# element they read. The hardware prefetcher alone did not keep up with a
# float32 read accumulated in float64: 25M float32 in one flat loop read
# 9 GB/s single thread, 25 on 2 threads, against 12 and 41 with the
# prefetch (and 13 / 42 for a float32-accumulating loop, the roofline's).
# ``pf`` is the first element not yet prefetched; one prefetch per cache
# line (``step`` elements); never past the array.
_PREFETCH_HELPER = '''
from hrarray._kernels._cpu_bits import (
    bitcast_to_float, bitcast_to_int, block_nansum_c, block_sum, block_sum_c, two_sum,
    masked_max8, masked_max8_s, masked_min8, masked_min8_s, masked_nanmax8, masked_nanmax8_s,
    masked_nanmin8, masked_nanmin8_s,
    masked_isum8, masked_isum8_s, masked_nansum8, masked_nansum8_s, masked_sum8, masked_sum8_s,
    masked_usum8, masked_usum8_s, masked_var8, masked_var8_s, prefetch, prefetch2, select,
    wide_vectors, group_sum8, group_max8, group_min8, group_nanmax8, group_nanmin8,
    group_max8w, group_min8w, group_nanmax8w, group_nanmin8w)
'''

# pf_1d and pf_step do not depend on the declaration: one module holds them,
# compiled once per values type and process (and cached on disk), instead of
# once per kernel module (~0.25 s of each signature's cold compile).
_SHARED_SRC = '''
import numba
from hrarray._kernels._cpu_bits import prefetch


@numba.njit(cache=CACHE, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def pf_1d(values, pf, upto, nv, step):
    if upto > nv:
        upto = nv
    while pf < upto:
        prefetch(values, pf)
        pf += step
    return pf


@numba.njit(cache=CACHE, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def pf_step(stride):
    # elements per 64-byte cache line; 1 for strides of a line or more (and
    # for a zero stride, where prefetching is pointless but harmless)
    st = stride if stride >= 0 else -stride
    return 64 // st if 0 < st < 64 else 1
'''
# the helper modules loaded so far: "cpu-shared", "cpu-keys-<bits>" -> module
_helpers: dict = {}


def _helper_module(name: str, src: str, constants: dict):
    """The generated helper module ``name`` (source ``src``, namespace
    ``constants`` and the disk-cache flag), loaded once per process."""
    got = _helpers.get(name)
    if got is None:
        with _compiled_lock:
            got = _helpers.get(name)
            if got is None:
                _, disk = cg.generated_dir()
                got = _helpers[name] = cg.load_module(src, name, {"CACHE": disk, **constants})
    return got


def shared_helpers():
    """The module of declaration-independent kernel helpers (pf_1d, pf_step)."""
    return _helper_module("cpu-shared", _SHARED_SRC, {})


# block_keys and first_index depend on the values' width only (the order
# keys' integer type and its constants): one module per width holds them,
# compiled once per values type and process (and cached on disk), instead of
# once per extreme kernel module (block_keys alone was ~1.1 s of a float
# argmax signature's ~2.3 s cold compile).
_KEYS_SRC = '''
import numba
import numpy as np
from hrarray._kernels._cpu_bits import bitcast_to_int

_NOWRAP = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}
U0 = np.uint64(0)
U1 = np.uint64(1)
U2 = np.uint64(2)
U3 = np.uint64(3)
U4 = np.uint64(4)
U16 = np.uint64(16)
M4 = ~np.uint64(3)


@numba.njit(inline="always", cache=CACHE, **_NOWRAP)
def _key(v):
    k = bitcast_to_int(v)
    # IT(...): Numba widens int32 arithmetic to int64; keep the key's width
    return IT(k ^ ((k >> SHIFT) & MAG))


@numba.njit(nogil=True, error_model="numpy", cache=CACHE, **_NOWRAP)
def block_keys(values, ub, nt):
    # The largest and smallest order key of the block (float bits with the
    # magnitude flipped for negatives: they order like the floats). A NaN's
    # key lies above +inf's (sign clear) or below -inf's (sign set), so the
    # same pass tells whether the block holds a NaN. Blocks of 16 or more
    # unit-stride elements take the vector-IR passes instead (block_keys_vec,
    # arg_keys: _cpu_bits); this one reads short blocks and strided values.
    if nt < U16:
        k = _key(values[ub])
        hi = k
        lo = k
        for t in range(U1, nt):
            k = _key(values[ub + t])
            hi = k if k > hi else hi
            lo = k if k < lo else lo
        return hi, lo
    # Only strided values come here (see above), and LLVM does not vectorise
    # a strided loop: four chains of each, not one (a step-2 view of 25M
    # float32, 1 thread: max 37.9 -> 20.4 ms; bench/RESULTS.md Run 33). The
    # keys are integers, so the order of the compares changes nothing.
    h0 = KLOW
    h1 = KLOW
    h2 = KLOW
    h3 = KLOW
    l0 = KHIGH
    l1 = KHIGH
    l2 = KHIGH
    l3 = KHIGH
    n4 = nt & M4
    t = U0
    while t < n4:
        k0 = _key(values[ub + t])
        k1 = _key(values[ub + t + U1])
        k2 = _key(values[ub + t + U2])
        k3 = _key(values[ub + t + U3])
        h0 = k0 if k0 > h0 else h0
        h1 = k1 if k1 > h1 else h1
        h2 = k2 if k2 > h2 else h2
        h3 = k3 if k3 > h3 else h3
        l0 = k0 if k0 < l0 else l0
        l1 = k1 if k1 < l1 else l1
        l2 = k2 if k2 < l2 else l2
        l3 = k3 if k3 < l3 else l3
        t += U4
    while t < nt:
        k0 = _key(values[ub + t])
        h0 = k0 if k0 > h0 else h0
        l0 = k0 if k0 < l0 else l0
        t += U1
    h0 = h1 if h1 > h0 else h0
    h2 = h3 if h3 > h2 else h2
    l0 = l1 if l1 < l0 else l0
    l2 = l3 if l3 < l2 else l2
    return (h2 if h2 > h0 else h0), (l2 if l2 < l0 else l0)


@numba.njit(nogil=True, cache=CACHE, **_NOWRAP)
def first_index(values, ub, nt, m):
    # min over t of (t where values[ub + t] == m): a vectorisable integer
    # reduction instead of an early-exit scan
    # (in IT, the width of the values: a float32 block's compare and index
    # then fill the same vector lanes; nt <= BLOCK fits)
    if values.strides[0] != values.itemsize:
        # strided values: LLVM does not vectorise the reduction below, which
        # is then one chain of selects; a scan that stops at the first match
        # gives the same index (with the four chains of block_keys, a step-2
        # view of 25M float32, 1 thread: argmax 54.6 -> 31.1 ms; Run 33)
        for t in range(nt):
            if values[ub + t] == m:
                return np.int64(t)
        return np.int64(nt - U1)
    last = IT(nt - U1)
    best = last
    for t in range(nt):
        c = IT(t) if values[ub + t] == m else last
        best = c if c < best else best
    return np.int64(best)

'''


def keys_helpers(bits: int):
    """The module of block_keys and first_index for values ``bits`` wide."""
    return _helper_module(f"cpu-keys-{bits}", _KEYS_SRC, _key_constants(bits))


def _key_constants(bits: int) -> dict:
    """The order keys' integer type and constants for values ``bits`` wide
    (see block_keys), for the keys module and the extreme kernels' own."""
    it = np.dtype(f"i{bits // 8}")
    return {"IT": it.type, "SHIFT": it.type(bits - 1), "MAG": it.type((1 << (bits - 1)) - 1),
            "KLOW": it.type(np.iinfo(it).min), "KHIGH": it.type(np.iinfo(it).max)}


_NONFINITE_HELPER = '''
@numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc", "nsz"}, cache=_OPTS["cache"],
            **_NOWRAP)
def nonfinite(values, ub, nt):
    # x * 0 is 0 for finite x and NaN for NaN or +-inf; no nnan/ninf flags,
    # so LLVM may vectorise the sum but not fold the product away.
    acc = values.dtype.type(0)
    for t in range(nt):
        acc += values[ub + t] * 0
    return acc != 0
'''

# exp(d) for d <= 0 as a polynomial: LLVM vectorises it (a math.exp call per
# element it cannot), 2.8x faster than libm on blocks of 128 measured. Cody-
# Waite reduction d = k ln2 + r (|r| <= ln2/2, ln2 split in two parts, so
# k ln2 is exact), exp(r) by its degree-13 Taylor polynomial (truncation
# < 2e-16 relative), times 2**k built from the exponent bits. One source,
# two instances: exp_le0 for logsumexp (below), exp_nonpos for the softmax
# map (the shared helpers).
# k's integer bits are those of k + 1.5 * 2**52 less those of 1.5 * 2**52
# (k is integral and |k| < 2**51, so the add is exact): AVX2 has no vector
# float64 -> int64 conversion, and np.int64(k) had LLVM take the vector
# apart, convert lane by lane and put it together again. Same k, same bits:
# the results are unchanged; blocks of 128, 1 thread, 2.17 -> 1.69 ns per
# element (bench/RESULTS.md, Run 39).
_EXP_CONSTS = '''
LN2_INV = 1.4426950408889634
LN2_HI = 0.693147180369123816490
LN2_LO = 1.90821492927058770002e-10
E2 = 1.0 / 2.0
E3 = 1.0 / 6.0
E4 = 1.0 / 24.0
E5 = 1.0 / 120.0
E6 = 1.0 / 720.0
E7 = 1.0 / 5040.0
E8 = 1.0 / 40320.0
E9 = 1.0 / 362880.0
E10 = 1.0 / 3628800.0
E11 = 1.0 / 39916800.0
E12 = 1.0 / 479001600.0
E13 = 1.0 / 6227020800.0
I52 = np.int64(52)
SHIFTER = 6755399441055744.0
SHIFTER_BITS = np.int64(0x4338000000000000)
'''


def _exp_source(name: str, decorator: str, lo: float, subnormal: bool) -> str:
    """Source of ``name(d)``, the polynomial ``exp(d)`` for ``d <= 0``, 0 at
    or below ``lo``. ``subnormal``: results below 2**-1022 too (2**(k + 64)
    scaled by 2**-64 in one rounding); else the scale is 2**k, which ``lo``
    must keep normal. Uses ``_EXP_CONSTS``, ``np``, ``bitcast_to_float`` and
    ``bitcast_to_int``."""
    bias, tail = ("1087", " * (2.0 ** -64)") if subnormal else ("1023", "")
    return f"""
{decorator}
def {name}(d):
    dc = d if d > {lo} else {lo}
    k = np.floor(dc * LN2_INV + 0.5)
    r = (dc - k * LN2_HI) - k * LN2_LO
    p = E13 * r + E12
    p = p * r + E11
    p = p * r + E10
    p = p * r + E9
    p = p * r + E8
    p = p * r + E7
    p = p * r + E6
    p = p * r + E5
    p = p * r + E4
    p = p * r + E3
    p = p * r + E2
    p = p * r + 1.0
    p = p * r + 1.0
    ki = bitcast_to_int(k + SHIFTER) - SHIFTER_BITS
    res = (p * bitcast_to_float((ki + np.int64({bias})) << I52)){tail}
    return res if d > {lo} else 0.0
"""


# exp_le0 is inlined into lse_block's IR, whose reassoc then lets LLVM fold
# the two-part ln2 reduction: against NumPy's exp, 1 ulp on [-1, 0], 7 ulp on
# [-40, -10], 1e-14 relative below -100 (measured), on terms far below the
# block sum's rounding (it holds exp(0) = 1 for the max). Below -708 (exp <
# 3.3e-308) it gives 0, below that rounding by ~300 orders of magnitude.
# Only called on all-finite blocks (nonfinite() said so): nnan is then true.
# No ninf: x - m may overflow to -inf for float64 values near the range ends.
_EXP_LE0 = _EXP_CONSTS + _exp_source(
    "exp_le0",
    '@numba.njit(inline="always", fastmath={"reassoc", "nsz", "contract", "nnan"},\n'
    '            cache=_OPTS["cache"], **_NOWRAP)',
    -708.0, subnormal=False)

# block_max: the largest of an all-finite block, in its own dtype (the
# conversion to float64 is monotone: the same max). Eight independent
# chains: LLVM neither vectorised the single-chain select loop nor broke its
# latency (a scalar max per element, 4 cycles each), which took half of
# lse_block's time: 128-element blocks, 1 thread, 2.0 -> 1.2 ns per element.
# (The chains stay scalar: Numba runs no SLP vectoriser, NUMBA_SLP_VECTORIZE
# defaults to 0, so only LLVM's loop vectoriser packs operations.)
def _block_max_source() -> str:
    """``block_max(values, ub, nt)``: LANES independent max chains over the
    block's multiple of LANES, the rest into chain 0, the chains merged as a
    fixed tree."""
    assert LANES == 8  # the loop steps by U8 and masks with M8
    m = [f"m{i}" for i in range(LANES)]
    lines = [
        "",
        "",
        '@numba.njit(inline="always", fastmath={"reassoc", "nsz", "contract", "nnan"},',
        '            cache=_OPTS["cache"], **_NOWRAP)',
        "def block_max(values, ub, nt):",
        "    x = values[ub]",
        f"    {' = '.join(m)} = x",
        "    n8 = nt & M8",
        "    for t in range(U0, n8, U8):",
        "        b = ub + t",
    ]
    for i in range(LANES):
        lines.append(f"        v = values[b{' + U' + str(i) if i else ''}]")
        lines.append(f"        m{i} = v if v > m{i} else m{i}")
    lines += ["    for t in range(n8, nt):", "        v = values[ub + t]",
              "        m0 = v if v > m0 else m0"]
    span = 1
    while span < LANES:
        for i in range(0, LANES, 2 * span):
            a, b = f"m{i}", f"m{i + span}"
            if 2 * span == LANES:
                lines.append(f"    return np.float64({b} if {b} > {a} else {a})")
            else:
                lines.append(f"    {a} = {b} if {b} > {a} else {a}")
        span *= 2
    return "\n".join(lines) + "\n"


_BLOCK_MAX = _block_max_source()


def _exp_partials_source(name: str, pool: bool) -> str:
    """``name``: lse_block (``pool``: pool_block) for values (and scores) of
    other than unit stride, the sums of exp(x - max) taken 16 terms at a
    time, each partial sum then added to the total. LLVM does not vectorise a
    strided loop, so lse_block's and pool_block's sums there were one chain
    per block, 127 roundings deep: logsumexp of [0, -37, -37, ...] read with a
    step of 2 came out 98u off where contiguous values are 2u off. No
    reassoc, which could regroup the partial sums (it did var_block's: see
    _STRIDED_BLOCKS)."""
    w, x = ("w", "values, w") if pool else ("values", "values")
    acc = ("s", "a") if pool else ("s",)
    zero = "".join(f"    {c} = 0.0\n" for c in acc)
    part = "".join(f"        {c}{c} = 0.0\n" for c in acc)
    terms = (f"            f = exp_le0(np.float64({w}[t + k]) - m)\n"
             "            ss += f\n"
             + ("            aa += np.float64(values[t + k]) * f\n" if pool else ""))
    add = "".join(f"        {c} += {c}{c}\n" for c in acc)
    ret = ("    return (m, s, a / s)  # s >= 1: the max's own term is exp(0)\n" if pool
           else "    return (m, s)\n")
    return f"""

@numba.njit(nogil=True, error_model="numpy", fastmath={{"nsz", "contract", "nnan"}},
            cache=_OPTS["cache"], **_NOWRAP)
def {name}({x}, ub, nt):
    m = block_max({w}, ub, nt)
{zero}    e = ub + nt
    t = ub
    while t < e:
        k16 = min(np.uint64(16), e - t)
{part}        for k in range(k16):
{terms}{add}        t += k16
{ret}"""

# The masked steps' exp terms and their sums (and attention_pool's weighted
# values): ``exp_le0`` and ``addx`` (a plain ``+``), inlined into the kernel
# with its fastmath flags, in the unit-stride form; ``exp_le0_s`` and
# ``addx_s``, the same without fastmath (their own functions, which LLVM
# inlines keeping their flags), in the form for other strides. There the step
# is written twice, on the strided values and, near the array's end, on the
# contiguous copy of its last elements (PAD), and LLVM compiled the two
# copies' reassociated and contracted arithmetic otherwise (one vectorised,
# one not): attention_pool with two heads (strided scores) gave a 5-element
# segment 1 ulp apart with and without 8 rows after it (a Dask partition
# ends at its last segment: test_dask's attention_pool test under another
# day's seed caught it), and so did logsumexp of strided values (24 of 200
# random cases). Without fastmath both copies round alike.
_ADDX_HELPERS = '''

@numba.njit(inline="always", cache=_OPTS["cache"], **_NOWRAP)
def addx(a, b):
    return a + b


@numba.njit(nogil=True, error_model="numpy", cache=_OPTS["cache"], **_NOWRAP)
def addx_s(a, b):
    return a + b
''' + _exp_source(
    "exp_le0_s", '@numba.njit(nogil=True, error_model="numpy", cache=_OPTS["cache"], **_NOWRAP)',
    -708.0, subnormal=False)

# attention_pool (1-D values, style "pool"): an all-finite block's state
# (max score, sum of exp(w - max), the values' mean weighted by those terms;
# see _transforms_ops.attention_spec) from two loops with exp_le0, as
# lse_block; a block with a NaN or an infinity in its scores or values, or a
# value beyond POOL_BIG in magnitude, runs the declaration (math.exp and a
# branch per element). POOL_BIG = 2**1016: a block's sum of v * exp(w - max)
# over at most 128 elements (BLOCK, SHORT, the masked steps' 8) then stays
# below 2**1023, so it cannot overflow before it is divided by the sum of
# the exps (values of 1e308 had summed to inf, and the result was inf or
# NaN where the weighted mean was finite).
POOL_BIG = 2.0**1016
_POOL_HELPERS = _EXP_LE0 + _BLOCK_MAX + _ADDX_HELPERS + '''

@numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc", "nsz"}, cache=_OPTS["cache"],
            **_NOWRAP)
def pool_nonfinite(values, w, ub, nt):
    # x * 0 is 0 for finite x and NaN for NaN or +-inf (as nonfinite); in
    # float64, so integer and bool scores type too. (Under reassoc LLVM sums
    # v + w before the multiply, so v + w overflowing sends a finite block to
    # the declaration too: slower, the same result.) A value beyond POOL_BIG
    # adds 1.
    acc = 0.0
    for t in range(nt):
        v = np.float64(values[ub + t])
        acc += v * 0.0 + np.float64(w[ub + t]) * 0.0 + (1.0 if abs(v) > POOL_BIG else 0.0)
    return acc != 0


@numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract", "nnan"},
            cache=_OPTS["cache"], **_NOWRAP)
def pool_block(values, w, ub, nt):
    m = block_max(w, ub, nt)
    s = 0.0
    a = 0.0
    for t in range(nt):
        f = exp_le0(np.float64(w[ub + t]) - m)
        s += f
        a += np.float64(values[ub + t]) * f
    return (m, s, a / s)  # s >= 1: the max's own term is exp(0)
''' + _exp_partials_source("pool_block_strided", pool=True)

_LSE_HELPERS = _EXP_LE0 + _BLOCK_MAX + _ADDX_HELPERS + '''

@numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract", "nnan"},
            cache=_OPTS["cache"], **_NOWRAP)
def lse_block(values, ub, nt):
    # 512-bit vectors for the exp where the CPU has them (wide_vectors)
    wide_vectors()
    m = block_max(values, ub, nt)
    s = 0.0
    for t in range(nt):
        s += exp_le0(np.float64(values[ub + t]) - m)
    return (m, s)
''' + _exp_partials_source("lse_block_strided", pool=False) + '''


@numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract"},
            cache=_OPTS["cache"], **_NOWRAP)
def lse_rows_max(values, m, p, q, a0, a1, pfr, pfs):
    # 2-D rows p..q (a block, at most BLOCK rows) of the first m columns
    # (chunks_2d's m): each column's max into a0, and whether every value is
    # finite (x * 0 is 0 only for finite x; no nnan/ninf flags here, so it is
    # not folded away). a1 is scratch.
    nr = values.shape[0]
    for col in range(m):
        a0[col] = np.float64(values[p, col])
        a1[col] = 0.0
    for j in range(p, q):
        jp = j + pfr
        if jp < nr:
            for col in range(0, m, pfs):
                prefetch2(values, jp, col)
        for col in range(m):
            v = np.float64(values[j, col])
            av = a0[col]
            a0[col] = v if v > av else av
            a1[col] += v * 0.0
    z = 0.0
    for col in range(m):
        z += a1[col]
    return z == 0.0


@numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract", "nnan"},
            cache=_OPTS["cache"], **_NOWRAP)
def lse_rows_sum(values, m, p, q, a0, a1):
    # rows p..q, all finite (lse_rows_max said so), a0 their column maxima:
    # each column's sum of exp(x - max) into a1, the polynomial exp
    # vectorised across the columns (the block is in L1/L2 from the first pass)
    # in 512-bit vectors where the CPU has them (bound by the exp's arithmetic:
    # 2-D logsumexp 0.82-0.91x the time, _cpu_bits.wide_vectors)
    wide_vectors()
    for col in range(m):
        a1[col] = 0.0
    for j in range(p, q):
        for col in range(m):
            a1[col] += exp_le0(np.float64(values[j, col]) - a0[col])
'''


def _var_block_source(name: str, flags: str) -> str:
    """``name(values, ub, nt)``: var_block's state of a block (see _VAR_HELPERS),
    compiled with fastmath ``flags``."""
    return f"""
@numba.njit(nogil=True, error_model="numpy", fastmath={flags}, cache=_OPTS["cache"],
            **_NOWRAP)
def {name}(values, ub, nt):
    k = np.float64(values[ub])
    s = 0.0
    for t in range(nt):
        s += np.float64(values[ub + t]) - k
    fn = np.float64(nt)
    c = s / fn
    q = 0.0
    r = 0.0
    for t in range(nt):
        d = (np.float64(values[ub + t]) - k) - c
        q += d * d
        r += d
    # M2 >= 0 exactly; the max keeps it so after rounding (a negative
    # variance would read as the -1 that marks empty results for fill_value)
    m2 = q - r * r / fn
    return (np.int64(nt), k, s, m2 if m2 > 0.0 else 0.0)
"""


# var/std of real values (style "var"; "nanvar" for nanvar/nanstd, whose
# state appends the count of non-NaN elements): the declaration's state is (count,
# shift, sum of (v - shift), M2) and its combine divides once per element
# (Chan's pairwise update; 1-D float32 var took 4.5x the time of sum). A block
# whose values are all finite and at most VAR_BIG in magnitude gets that
# state from two vectorised passes instead: the shift its first element, the
# sum of deviations from it, then M2 by the corrected two-pass formula
# (sum of d * d minus (sum of d)**2 / n, d = v - mean: the second term makes
# up for the mean's rounding), as accurate as the element-wise update or
# more. VAR_BIG = 2**500: a square of a difference stays below 2**1002 and a
# block's sum of 128 of them finite. Other blocks run the declaration (its
# NaN/inf shift and its overflow to inf).
VAR_BIG = 2.0**500
_VAR_HELPERS = '''

@numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc", "nsz"}, cache=_OPTS["cache"],
            **_NOWRAP)
def var_bad(values, ub, nt):
    # x * 0 is 0 for finite x, NaN for NaN or +-inf (as nonfinite); a value
    # beyond VAR_BIG adds 1
    acc = 0.0
    for t in range(nt):
        v = np.float64(values[ub + t])
        acc += v * 0.0 + (1.0 if abs(v) > VAR_BIG else 0.0)
    return acc != 0


''' + _var_block_source("var_block_strict", '{"nsz", "contract"}') + _var_block_source(
    "var_block", '{"reassoc", "nsz", "contract", "nnan"}') + "".join(f"""

# nanvar/nanstd: {base}'s state and the count of non-NaN elements (all)
@numba.njit(inline="always", cache=_OPTS["cache"], **_NOWRAP)
def nan{base}(values, ub, nt):
    n, k, s, q = {base}(values, ub, nt)
    return (n, k, s, q, n)
""" for base in ("var_block", "var_block_strict")) + '''

@numba.njit(nogil=True, error_model="numpy", fastmath={"nsz", "contract"}, cache=_OPTS["cache"],
            **_NOWRAP)
def var_rows_first(values, m, p, q, a1, a2, a3, pfr, pfs):
    # 2-D rows p..q (a block, at most BLOCK rows) of the first m columns
    # (chunks_2d's m): each column's shift (its first value) into a1, the sum
    # of the deviations from it into a2, and whether every value is finite and
    # at most VAR_BIG in magnitude (var_bad's test; a3 is scratch). Each
    # column's sums in row order, as var_block_strict's: the loops vectorise
    # across the columns, without reassoc.
    nr = values.shape[0]
    for col in range(m):
        a1[col] = np.float64(values[p, col])
        a2[col] = 0.0
        a3[col] = 0.0
    for j in range(p, q):
        jp = j + pfr
        if jp < nr:
            for col in range(0, m, pfs):
                prefetch2(values, jp, col)
        for col in range(m):
            v = np.float64(values[j, col])
            a2[col] += v - a1[col]
            a3[col] += v * 0.0 + (1.0 if abs(v) > VAR_BIG else 0.0)
    z = 0.0
    for col in range(m):
        z += a3[col]
    return z == 0.0


@numba.njit(nogil=True, error_model="numpy", fastmath={"nsz", "contract"}, cache=_OPTS["cache"],
            **_NOWRAP)
def var_rows_second(values, m, p, q, a0, a1, a2, a3, c, r):
    # rows p..q, all finite and at most VAR_BIG (var_rows_first said so; a1 the
    # shifts, a2 the sums of deviations): each column's count into a0 and M2
    # into a3 by var_block's corrected two-pass formula; c (the block means)
    # and r (the sums of deviations from them) are scratch
    n = q - p
    fn = np.float64(n)
    for col in range(m):
        c[col] = a2[col] / fn
        a3[col] = 0.0
        r[col] = 0.0
    for j in range(p, q):
        for col in range(m):
            d = (np.float64(values[j, col]) - a1[col]) - c[col]
            a3[col] += d * d
            r[col] += d
    for col in range(m):
        m2 = a3[col] - r[col] * r[col] / fn
        a3[col] = m2 if m2 > 0.0 else 0.0
        a0[col] = n
'''

# The CPU map kernels' exp_nonpos (hrarray._transforms_ops.exp_nonpos, which
# it replaces there; defined in each map module, compiled only where a map
# uses it): subnormal results as math.exp's, and a call, not
# inline="always", so that its own flags (no reassoc) stay on its reduction:
# within 2.6e-16 of math.exp's results on [-700, 0], most bit for bit, where
# the inlined form had 1.2e-14 median relative error. A caller never passes
# NaN (softmax's map takes its NaN branch first), so nnan holds.
_EXP_NONPOS_SRC = "\n" + _EXP_CONSTS + _exp_source(
    "exp_nonpos",
    '@numba.njit(fastmath={"nsz", "contract", "nnan"}, cache=_OPTS["cache"],\n'
    '            no_cpython_wrapper=True, no_cfunc_wrapper=True)',
    -746.0, subnormal=True)

# block_sum in a function of its own (a call per block of 17 or more
# elements): inlined into the segment loop it made runs of 0-4-element
# segments, which never reach it, 5-7 % slower (float32 sum and mean).
_VSUM_HELPER = '''

@numba.njit(nogil=True, cache=_OPTS["cache"], **_NOWRAP)
def vsum_block(values, ub, nt):
    return block_sum(values, ub, nt)
'''

# float64 sums and means (meta vsum "comp"): the block's sum and its
# rounding errors (_cpu_bits.block_sum_c; see _reduce_1d_code)
_VSUMC_HELPER = '''

@numba.njit(nogil=True, cache=_OPTS["cache"], **_NOWRAP)
def vsumc_block(values, ub, nt):
    return block_sum_c(values, ub, nt)


@numba.njit(nogil=True, cache=_OPTS["cache"], **_NOWRAP)
def vsumc_short(values, ub, nt):
    s = values[ub]
    c = 0.0
    for t in range(U1, nt):
        s, e = two_sum(s, values[ub + t])
        c += e
    return s, c
'''

# nansum/nanmean of float64 (meta vsum "nancomp"): the same, over the
# elements that are not NaN, the block's state ``(sum, count)``
# (_cpu_bits.block_nansum_c). The short block starts from -0.0, the
# addition's identity (+0.0 would turn a sum of -0.0s into +0.0).
_VSUMCN_HELPER = '''

@numba.njit(nogil=True, cache=_OPTS["cache"], **_NOWRAP)
def vsumc_block(values, ub, nt):
    s, n, c = block_nansum_c(values, ub, nt)
    return (s, n), c


@numba.njit(nogil=True, cache=_OPTS["cache"], **_NOWRAP)
def vsumc_short(values, ub, nt):
    s = -0.0
    c = 0.0
    n = np.int64(0)
    for t in range(nt):
        v = values[ub + t]
        if v == v:
            s, e = two_sum(s, v)
            c += e
            n += 1
    return (s, n), c
'''

_EXTREME_HELPERS = '''

@numba.njit(inline="always", cache=_OPTS["cache"], **_NOWRAP)
def _key(v):
    k = bitcast_to_int(v)
    # IT(...): Numba widens int32 arithmetic to int64; keep the key's width
    return IT(k ^ ((k >> SHIFT) & MAG))


@numba.njit(nogil=True, error_model="numpy", cache=_OPTS["cache"], **_NOWRAP)
def fast_block(values, ub, nt, off, k):
    # k: the block's extreme key (no NaN in the block; +-inf order as keys)
    m = bitcast_to_float(IT(k ^ ((k >> SHIFT) & MAG)))
    if IS_ARG:
        return (VT(m), np.int64(off + first_index(values, ub, nt, m)))
    return VT(m)
'''


# nanargmax/nanargmin (meta skipnan, arg_long): a block that holds a NaN is
# reduced over its other elements' order keys, then the index search;
# KNONE (the lowest key for max, the highest for min; a NaN's key only) when
# it has none. The declaration's lanes had run such blocks: 1 % NaN, 25M
# float32, 0.36-0.50x the time.
_SKIP_KEYS_HELPER = '''

@numba.njit(nogil=True, error_model="numpy", cache=_OPTS["cache"], **_NOWRAP)
def block_keys_skip(values, ub, nt):
    hi = KLOW
    lo = KHIGH
    for t in range(nt):
        k = _key(values[ub + t])
        ok = (k <= KPINF) & (k >= KNINF)
        hi = k if ok & (k > hi) else hi
        lo = k if ok & (k < lo) else lo
    return hi, lo
'''


def _block_head(ind: str, size: str) -> str:
    """Source opening a block of a long segment's loop: the block
    ``pos:q`` (at most ``size`` elements, clamped to ``b``), its unsigned
    start ``ub`` and length ``nt``, its offset ``off`` in the segment, and the
    prefetch stream moved to its end."""
    return (
        f"{ind}q = pos + {size}\n"
        f"{ind}if q > b:\n"
        f"{ind}    q = b\n"
        f"{ind}ub = np.uint64(pos)\n"
        f"{ind}nt = np.uint64(q - pos)\n"
        f"{ind}off = pos - s\n"
        f"{ind}pf = pf_1d(values, pf, q + pfd, nv, pfs)\n"
    )


# Marks, in the 1-D chunk loop's source, a call of a vector-IR step on
# ``values``: "" in chunks_1d, "_s" (the element-by-element form) in
# chunks_1d_s (_source).
STRIDED = "@STRIDED@"


# When a compensated sum adds its gathered rounding error ``e``: not where it
# is 0 (-0.0 + 0.0 would be +0.0) nor where it is not finite (a sum met inf or
# NaN, or overflowed: the result is inf or NaN already). The pieces' fold and
# the fix-up's (_source) apply the same rule.
_KEEP_ERR = "{e} != 0.0 and abs({e}) < np.inf"


def _reduce_1d_code(style: str, aux: bool, K: int, ind: str, small: bool = True,
                    vsum: bool | str = False, skip: bool = False,
                    vmask: bool | str = False, carry: bool = False) -> str:
    """Source reducing ``values[a:b]`` (segment start ``s``) into ``st``.

    Written into the chunk loop itself, not called: a call or a slice per
    segment costs an atomic refcount increment and decrement (NRT), which
    made segments of 0-4 elements 3-4x slower than this. ``small=False``
    writes only the empty case and the blocked path: the chunk's head and
    tail pieces, at most two per chunk, need no fast path for short
    segments, and every copy of the code costs compile time. ``carry``
    (those pieces of a "comp" sum) also sets ``cres``, the rounding error of
    the piece's compensated result, which the fix-up carries on.
    """
    wu = "w[u + np.uint64(t)], " if aux else ""
    wj = "w[j], " if aux else ""
    li = ind + "    "  # indentation of the blocked path
    block = _block_code(style, aux, li + "    ", vsum, vmask)

    # In the masked short-segment paths, every 8th segment prefetches the
    # offsets OFFSETS_PF entries ahead and continues the values' stream
    # (pf_1d): runs of short segments had prefetched nothing and waited on
    # memory. 12.5M segments of 0-4 float32, a minimal masked loop, 1 thread:
    # 69 ms -> 28 ms with both (54 offsets only, 43 values only; the output
    # stream needs none). Not in the segment loop itself: a prefetch check
    # per segment there cost segments of ~100 elements 5 %.
    tiny_pf = (
        f"{ind}    if (k & 7) == 0:\n"
        f"{ind}        prefetch(offsets, min(k + OFFSETS_PF, nseg))\n"
        f"{ind}        pf = pf_1d(values, max(pf, a), a + pfd, nv, pfs)\n"
    )

    def masked(width: int, kw: str, padded: bool = False) -> str:
        if style == "extreme" and not aux:
            return masked_extreme(width, kw)
        # ``padded``: the same step for a segment within ``width`` elements
        # of the array's end, reading the copies of the last elements (see
        # PAD), so that its result does not depend on what follows it
        arr, wa = ("vpad", wu.replace("w[", "wpad[")) if padded else ("values", wu)
        cond = f"b - a <= {width}" if padded else f"b - a <= {width} and a + {width} <= nv"
        u = "np.uint64(a - pb)" if padded else "np.uint64(a)"
        head = (
            f"{ind}{kw} {cond}:\n"
            + ("" if padded else tiny_pf)
            + f"{ind}    L = b - a\n"
            f"{ind}    u = {u}\n"
        )
        decl_steps = (
            f"{ind}    st = IDENT\n"
            f"{ind}    off = a - s\n"
            f"{ind}    for t in range({width}):\n"
            f"{ind}        cst = combine(st, map_({arr}[u + np.uint64(t)], {wa}off + t))\n"
            f"{ind}        st = cst if t < L else st\n"
        )
        # the vector-IR steps (_cpu_bits.masked_*8) load 8 elements as one
        # vector: on ``values``, STRIDED marks the call that the kernel's
        # form for other strides turns into its element-by-element _s form
        # (see _source); ``vpad`` is contiguous in both forms
        sx = "" if padded else STRIDED
        if vmask:
            fn = {"nan": "masked_nansum8", "int": "masked_isum8",
                  "uint": "masked_usum8"}.get(vmask, "masked_sum8")
            return head + f"{ind}    st = {fn}{sx}({arr}, u, L)\n"
        if style in ("lse", "pool"):
            # logsumexp / softmax statistics: the segment's max, then its sum
            # of exp(x - max) with the polynomial exp, as masked steps; a
            # segment with NaN or +-inf runs the declaration's combines (a
            # math.exp call and branches per element: segments of 0-4
            # elements took ~20 ns each). One element gives (x, 1), as the
            # declaration does. attention_pool ("pool"): the same for (max
            # score, sum of exp(w - max), sum of v * exp(w - max)), NaN or
            # +-inf in scores or values; one element gives (w, 1, v).
            i2, i3 = ind + "        ", ind + "            "
            pool = style == "pool"
            sarr = ("wpad" if padded else "w") if pool else arr  # the scores
            sv = "x" if pool else "v"
            # attention_pool: a value beyond POOL_BIG runs the declaration
            # too (see _POOL_HELPERS)
            pool_z = " + v * 0.0 + (1.0 if abs(v) > POOL_BIG else 0.0)" if pool else ""
            return (
                head
                + f"{ind}    z = 0.0\n"
                f"{ind}    mx = -np.inf\n"
                f"{ind}    for t in range({width}):\n"
                f"{i2}{sv} = np.float64({sarr}[u + np.uint64(t)])\n"
                + (f"{i2}v = np.float64({arr}[u + np.uint64(t)])\n" if pool else "")
                + f"{i2}z += {sv} * 0.0{pool_z} if t < L else 0.0\n"
                f"{i2}mx = {sv} if (t < L) & ({sv} > mx) else mx\n"
                f"{ind}    if z == 0.0:\n"
                f"{i2}sx = 0.0\n"
                + (f"{i2}ax = 0.0\n" if pool else "")
                + f"{i2}for t in range({width}):\n"
                f"{i3}d = np.float64({sarr}[u + np.uint64(t)]) - mx if t < L else 0.0\n"
                f"{i3}ex = exp_le0{STRIDED}(d)\n"
                f"{i3}sx = addx{STRIDED}(sx, ex if t < L else 0.0)\n"
                + (f"{i3}ax = addx{STRIDED}(ax, np.float64({arr}[u + np.uint64(t)]) * ex "
                   "if t < L else 0.0)\n"
                   if pool else "")
                # (an empty segment: sx = 0, the identity (-inf, 0, 0))
                + f"{i2}st = {'(mx, sx, ax / sx if sx > 0.0 else 0.0)' if pool else '(mx, sx)'}\n"
                f"{ind}    else:\n"
                + _indented(decl_steps)
            )
        if style in ("var", "nanvar"):
            # var/std (and their nan variants without NaN): var_block's state
            # from one step in LLVM vector IR (_cpu_bits.masked_var8: two
            # passes over 8 lanes, two divisions per segment where the
            # declaration's combines divide once per element); a segment
            # with NaN, +-inf or a value beyond VAR_BIG runs the declaration.
            # It replaced var_masked, scalar masked steps of 4 and 8 (no
            # reassoc there: in the unrolled steps it turned (x - k) - c into
            # x - (k + c), and the variance of 1e9 + N(0, 1) in 3-element
            # segments lost 1e-3 of it; the IR has no such flags). 1 thread,
            # float32 var, ns per segment: 0-4 elements 15.4 -> 12.8, 8 each
            # 30.0 -> 11.8, 1 + Poisson(4) 26.8 -> 13.5 (bench/RESULTS.md
            # Run 37).
            i2 = ind + "        "
            st = "(vn, vk, vs, vq)" + (" + (np.int64(L),)" if style == "nanvar" else "")
            return (
                head
                + f"{ind}    ok, vn, vk, vs, vq = masked_var8{sx}({arr}, u, L, VAR_BIG)\n"
                f"{ind}    if ok:\n"
                f"{i2}st = {st}\n"
                f"{ind}    else:\n"
                + _indented(decl_steps)
            )
        return head + decl_steps

    def masked_extreme(width: int, kw: str) -> str:
        # Float max/min/argmax/argmin (and the nan forms' fast path) over
        # 0-8 elements: one step in LLVM vector IR (_cpu_bits.masked_max8
        # and the like), adjacent lanes merged as a tree of selects, lanes
        # past the segment copies of its first element (see there). It
        # replaced a 4-wide and an 8-wide step of scalar selects (trees;
        # argmax's 4-wide one a chain), which return the same element: the
        # branch between them was mispredicted on mixed lengths. 1 thread,
        # ns per segment, float32: max 1 + Poisson(4) elements 11.6 -> 5.4,
        # 8 each 8.8 -> 4.3, 0-4 5.3 -> 4.8; argmax 18.1 -> 9.3, 13.1 -> 5.3,
        # 7.3 -> 6.0. float64's 0-4 lost some (max 5.8 -> 6.0, nanmax 5.2 ->
        # 6.3; 8 doubles are two vectors here) and gained the rest (1 +
        # Poisson(4) 0.56-0.64x); bench/RESULTS.md Run 37.
        assert width == 8
        nan = "nan" if skip else ""
        call = (f"(masked_{nan}max8{STRIDED}(values, u, L) if IS_MAX "
                f"else masked_{nan}min8{STRIDED}(values, u, L))")
        i1 = ind + "    "
        ident = f"IDENT{'[0]' if K == 2 else ''}"
        res = "(xm0, np.int64(off + im0) if L > 0 else np.int64(-1))" if K == 2 else "xm0"
        return (
            f"{ind}{kw} b - a <= {width} and a + {width} <= nv:\n"
            + tiny_pf
            + f"{i1}L = b - a\n"
            f"{i1}off = a - s\n"
            f"{i1}u = np.uint64(a)\n"
            f"{i1}xm0, im0 = {call}\n"
            f"{i1}xm0 = xm0 if L > 0 else {ident}\n"
            f"{i1}st = {res}\n"
        )

    if style == "extreme" and K == 2 and not aux:
        # argmax/argmin: a segment of one unit-stride block (16 elements to
        # 1 KiB) without NaN here, in one arg_keys pass; all others through
        # arg_long (see _arg_long_source)
        blocked = (
            # (khi and klo are read only where set: the strided form of the
            # kernel has the first branch pruned, and them undefined)
            f"{li}kix = np.int64(-1)\n"
            f"{li}if unit and b - a <= ABLK and b - a >= 16:\n"
            f"{li}    pf = pf_1d(values, pf, b + pfd, nv, pfs)\n"
            f"{li}    khi, klo, kix = arg_keys(values, np.uint64(a), np.uint64(b - a))\n"
            f"{li}    if khi > KPINF or klo < KNINF:\n"
            f"{li}        kix = np.int64(-1)\n"
            f"{li}    else:\n"
            f"{li}        kx = khi if IS_MAX else klo\n"
            f"{li}        st = (VT(bitcast_to_float(IT(kx ^ ((kx >> SHIFT) & MAG)))), "
            "(a - s) + kix)\n"
            f"{li}if kix < 0:\n"
            f"{li}    st, pf = arg_long(values, a, b, s, pf, nv, pfd, pfs, unit)\n"
        )
    else:
        # Long: blocks of BLOCK elements merged through a binary-counter stack
        # (k0, k1, ...), i.e. in pairwise order. "comp" (float64 sums and
        # means): every addition of the blocks and of the stack keeps its
        # rounding error (block_sum_c, two_sum) in ``comp``, added to the
        # result once at the end: within ~1 rounding of the exact sum, where
        # the pairwise order alone (as NumPy's) lands a few roundings off
        # either way (added only as _KEEP_ERR allows). Segments (pieces) of up to
        # COMP_MIN elements sum their blocks in the plain loop (``long_seg``;
        # the merges of their up to 8 blocks keep their errors all the same:
        # one TwoSum per block; a segment of one block is unchanged): the
        # compensated blocks' lane trees (a chain of TwoSums per block) ran
        # such segments 1.1-1.5x slower (2 threads: Poisson(100) lengths,
        # one block, 1.2-1.5x; Poisson(200), two blocks, 1.13-1.23x).
        comp = vsum in _COMP
        # the state: the sum (K == 0), or (sum, count) ("nancomp", K == 2)
        arity = 2 if vsum == "nancomp" else 0
        assert not comp or arity == K

        # the state's sum (``sum_of``) and the state made of a new sum ``s0``
        # (``with_sum``): the state itself, or nansum/nanmean's (sum, count)
        def sum_of(v: str) -> str:
            return f"{v}[0]" if K else v

        def with_sum(v: str, count: str = "") -> str:
            return f"(s0, {count}{v}[1])" if K else "s0"

        def merge(acc: str, ind2: str) -> str:
            if comp:
                return (f"{ind2}s0, ce = two_sum(k0[nb], {sum_of(acc)})\n"
                        f"{ind2}comp += ce\n"
                        f"{ind2}{acc} = {with_sum(acc, 'k1[nb] + ')}\n")
            return f"{ind2}{acc} = combine({cg.load('k', K, 'nb')}, {acc})\n"

        # A piece of a segment cut by chunk edges (``carry``) keeps the
        # fold's own rounding error in ``cres`` (0 where nothing is folded):
        # the fix-up adds the pieces with TwoSum and these errors once, so
        # that a long segment rounds about once in all, not once per piece.
        fold = ""
        if comp:
            fold = (f"{li}        if {_KEEP_ERR.format(e='comp')}:\n"
                    + (f"{li}            s0, cres = two_sum({sum_of('st')}, comp)\n" if carry
                       else f"{li}            s0 = {sum_of('st')} + comp\n")
                    + f"{li}            st = {with_sum('st')}\n")
        blocked = (
            f"{li}nb = 0\n"
            f"{li}cnt = 0\n"
            f"{li}pos = a\n"
            + (f"{li}comp = 0.0\n{li}long_seg = b - a > {COMP_MIN}\n" if comp else "")
            + f"{li}while True:\n"
            + _block_head(li + "    ", str(BLOCK))
            + block
            + f"{li}    if cnt == 0 and q == b:\n"
            f"{li}        st = blk\n"
            + fold
            + f"{li}        break\n"
            f"{li}    cnt += 1\n"
            f"{li}    m = cnt\n"
            f"{li}    while (m & 1) == 0:\n"
            f"{li}        nb -= 1\n"
            + merge("blk", li + "        ")
            + f"{li}        m >>= 1\n"
            + cg.store("k", K, "nb", "blk", li + "    ")
            + f"{li}    nb += 1\n"
            f"{li}    pos = q\n"
            f"{li}    if pos >= b:\n"
            f"{li}        nb -= 1\n"
            f"{li}        st = {cg.load('k', K, 'nb')}\n"
            f"{li}        while nb > 0:\n"
            f"{li}            nb -= 1\n"
            + merge("st", li + "            ")
            + fold
            + f"{li}        break\n"
        )
    seg_pf = f"{ind}pf = pf_1d(values, pf, a + pfd, nv, pfs)\n"
    if not small:
        # an empty piece must not reach the block code: the fast block
        # helpers read their first element unconditionally
        cres0 = f"{ind}cres = 0.0\n" if carry else ""
        return seg_pf + cres0 + f"{ind}if b <= a:\n{ind}    st = IDENT\n{ind}else:\n" + blocked
    # After a run of tiny segments (which prefetch nothing) ``pf`` lags
    # behind ``a``: restart the stream at ``a`` rather than re-prefetching
    # the lines already read.
    seg_pf_in = f"{ind}    pf = pf_1d(values, max(pf, a), a + pfd, nv, pfs)\n"
    # the masked steps (see below)
    widths = ((8,) if style in ("lse", "var", "nanvar") or vmask
              or (style == "extreme" and not aux) else (4, 8))
    short = (
        f"{ind}    st = IDENT\n"
        f"{ind}    for j in range(a, b):\n"
        f"{ind}        st = combine(st, map_(values[j], {wj}j - s))\n"
    )
    if style in _CHECKED_BLOCKS:
        # as one block of the style's when its check passes (see masked)
        check, blk, arrs = _CHECKED_BLOCKS[style]
        strided = (
            f"{ind}    elif not unit:\n"
            f"{ind}        st = {_STRIDED_BLOCKS[style]}({arrs}, np.uint64(a), np.uint64(b - a))\n"
            if style in _STRIDED_BLOCKS else "")
        short = (
            f"{ind}    if {check}({arrs}, np.uint64(a), np.uint64(b - a)):\n"
            + _indented(short)
            + strided
            + f"{ind}    else:\n"
            f"{ind}        st = {blk}({arrs}, np.uint64(a), np.uint64(b - a))\n"
        )
    return (
        # Tiny: a fixed-trip, branch-free loop over 4 (or 8) elements whose
        # extra iterations are masked by a select (random lengths would
        # otherwise cost a mispredicted loop exit per segment). The overread
        # stays inside the arrays (checked: a + 4 <= nv) and is discarded.
        # Two widths: segments of 0-4 elements ran 1.6x faster through the
        # 4-wide loop than through the 8-wide one (sum, float32, scalar
        # code). Not for sums (vmask: float sum/mean and their nan forms,
        # integer sums), var/std and their nan forms, and the float
        # extremes: one step in LLVM vector IR (masked_sum8, masked_isum8,
        # masked_var8, masked_max8...) takes 0-8
        # elements faster than either scalar step, and no branch between
        # two steps is mispredicted on mixed lengths (bench/RESULTS.md Run
        # 37). Nor for the logsumexp/softmax statistics ("lse"): their
        # 8-wide step (the polynomial exp across 8 lanes) ran 0-4 elements
        # faster than the 4-wide one, and the branch between the two was
        # mispredicted on mixed lengths (1 thread, float32, ns per segment:
        # 0-4 elements 27.0 -> 21.4, 4 each 26.6 -> 20.7, 1 + Poisson(4)
        # 30.3 -> 24.6; cold compile 3.0 -> 2.3-2.4 s; bench/RESULTS.md Run
        # 36). attention_pool ("pool") keeps both: without the 4-wide step
        # its float32 long segments ran 1.06-1.09x slower (the same block
        # code, compiled otherwise). No software prefetch here: the stream's
        # loop exit, taken at random segments, cost ~2 ns of ~8 per segment
        # of 0-4 elements, and the hardware prefetcher follows such a
        # sequential read.
        "".join(masked(w, "if" if i == 0 else "elif") for i, w in enumerate(widths))
        + ("".join(masked(w, "elif", True) for w in widths) if _padded(style, aux) else "")
        # Short: one plain loop, no block machinery.
        + f"{ind}elif b - a <= {SHORT}:\n"
        + seg_pf_in
        + short
        + f"{ind}else:\n"
        + seg_pf_in
        + blocked
    )


def _group_code(style: str, aux: bool, K: int, skip: bool, vmask, group: bool,
                is_max: bool, ind: str) -> str:
    """Source, at the head of a run of 8 segments of the 1-D chunk loop, that
    reduces segments ``k .. k + 7`` in one group step where all 8 lie inside
    the chunk and are short (_cpu_bits.group_sum8: float64 sums of 0-4
    elements each; group_max8 and the like: float extremes of 0-4, else
    group_max8w... of 0-8; one AVX2 gather per element position across the 8
    segments; the same bits as the masked_*8 steps), then moves past them
    (``continue``); "" for the declarations without one (``group``: the
    declaration's meta asks for it; the extremes always). A run of longer
    segments pays one offsets load per 8 segments (the ``cap`` check)."""
    if group and vmask is True:
        cap = 32  # 0-4 elements each
        calls = ["gok, gst = group_sum8(values, offsets, k)"]
        state = "st = gst[{t}]"
    elif style == "extreme" and not aux:
        nan = "nan" if skip else ""
        cap = 64  # 0-8 elements each
        ident = f"IDENT{'[0]' if K == 2 else ''}"
        # only this kernel's kind is named (``a if IS_MAX else b`` left the
        # dead step for Numba to prune)
        op = ("max" if is_max else "min")
        calls = [f"gok, gx, gi = group_{nan}{op}8{w}(values, offsets, k, {ident})"
                 for w in ("", "w")]
        state = "st = (gx[{t}], gi[{t}])" if K == 2 else "st = gx[{t}]"
    else:
        return ""
    i1, i2 = ind + "    ", ind + "        "
    return (
        # (8 segments of 0-4 elements hold at most 32 elements, of 0-8 at
        # most 64: one load rules out most groups of longer segments before
        # the step's 9)
        f"{ind}if k >= gfirst and k + 8 <= i1 and offsets[k + 8] - s <= {cap}:\n"
        # the first step, then each next one where the one before did not fit
        + f"{i1}{calls[0]}\n"
        + "".join(f"{i1}if not gok:\n{i2}{c}\n" for c in calls[1:])
        + f"{i1}if gok:\n"
        # the masked steps' prefetches (tiny_pf), once per group
        f"{i2}prefetch(offsets, min(k + OFFSETS_PF, nseg))\n"
        f"{i2}pf = pf_1d(values, max(pf, s), s + pfd, nv, pfs)\n"
        # the 8 results written out (~0.5 s of an extreme kernel's cold
        # compile): a loop indexing the returned tuple took a switch per
        # element (1 thread, tiny float32 sum 84-86 ms against 59), and one
        # over results the step stored to memory kept the nan forms' empty
        # test a mispredicted branch per segment (tiny float32 nanargmax
        # 100-103 ms against 67; bench/RESULTS.md Run 47)
        + "".join(
            f"{i2}n = offsets[k + {t + 1}] - offsets[k + {t}]\n"
            f"{i2}{state.format(t=t)}\n"
            f"{i2}if use_fill and is_empty(st, n):\n"
            f"{i2}    out[k + {t}] = fill\n"
            f"{i2}else:\n"
            f"{i2}    out[k + {t}] = finalize(st, n)\n"
            for t in range(8))
        + f"{i2}kg = k + 8\n"
        f"{i2}s = offsets[kg]\n"
        f"{i2}continue\n"
    )


def _arg_long_source(skip: bool = False) -> str:
    """``arg_long``: argmax/argmin of ``values[a:b]`` (segment start ``s``),
    a segment past the short paths (or a chunk's edge piece).

    Blocks of ABLK elements (1 KiB) in order, no pairwise stack (the result
    is exact in any order); a NaN-free block's extreme and first position
    from arg_keys (one vector pass), or, for strided values and blocks under
    16 elements, from block_keys and then first_index (a second pass), only
    where the block's extreme beats the state's strictly (the state holds
    the first NaN or the first of equal extremes; -0.0 == 0.0 as the
    declaration compares). nanargmax/nanargmin (``skip``): a block with a
    NaN takes the keys of its other elements (block_keys_skip) and then the
    index search; a block of NaN only changes nothing. Merging every block
    had searched every block: one_huge float32 argmax read at 0.49 of the
    flat read, max at 0.75.

    A function of its own, called once per such segment: written into the
    chunk loop, its code made the loop's runs of 0-4-element segments (which
    never reach it) 1.1-1.5x slower (float32 argmax, tiny, 2 threads: 48.4
    before the blocks went in order, 69-72 ms with this code in the loop,
    45 as a function). A segment of one NaN-free unit-stride block stays in
    the loop (arg_keys and a select): through the call, uniform float32
    argmax took 3.2-3.4 ms, 2.5 this way.
    """
    li = "    "
    better = "(mv > st[0]) if IS_MAX else (mv < st[0])"
    return (
        '\n@numba.njit(nogil=True, error_model="numpy", cache=_OPTS["cache"], **_NOWRAP)\n'
        "def arg_long(values, a, b, s, pf, nv, pfd, pfs, unit):\n"
        f"{li}st = IDENT\n"
        f"{li}pos = a\n"
        f"{li}while pos < b:\n"
        + _block_head(li + "    ", "ABLK")
        + f"{li}    if unit and nt >= U16:\n"
        f"{li}        khi, klo, kix = arg_keys(values, ub, nt)\n"
        f"{li}    else:\n"
        f"{li}        khi, klo = block_keys(values, ub, nt)\n"
        f"{li}        kix = np.int64(-1)\n"
        f"{li}    if khi > KPINF or klo < KNINF:\n"
        + (
            f"{li}        khi, klo = block_keys_skip(values, ub, nt)\n"
            f"{li}        kix = np.int64(-1)\n"
            f"{li}    kx = khi if IS_MAX else klo\n"
            f"{li}    if kx != KNONE:\n"
            if skip else
            _lanes_code(False, li + "        ")
            + f"{li}        st = combine(st, blk)\n"
            f"{li}    else:\n"
            f"{li}        kx = khi if IS_MAX else klo\n"
        )
        + f"{li}        mv = VT(bitcast_to_float(IT(kx ^ ((kx >> SHIFT) & MAG))))\n"
        f"{li}        if st[1] < 0 or ({better}):\n"
        f"{li}            if kix >= 0:\n"
        f"{li}                st = (mv, off + kix)\n"
        f"{li}            else:\n"
        f"{li}                st = fast_block(values, ub, nt, off, kx)\n"
        f"{li}    pos = q\n"
        f"{li}return st, pf\n"
    )


def _padded(style: str, aux: bool) -> bool:
    """Whether the 1-D code has masked steps (all but the extreme fast path,
    whose selects give the same result whichever path runs) and so the
    end-of-array copies ``vpad``/``wpad``."""
    return not (style == "extreme" and not aux)


def _widened_arg(decl: Decl) -> bool:
    """argmax/argmin of float values narrower than float64: their 2-D state is
    float64 (AT0), and their 2-D one pass runs in the values' width
    (range_2d_arg_narrow)."""
    dt = cg.component_dtypes(decl.identity)[0]
    return decl.meta.get("kind") in ("argmax", "argmin") and dt.kind == "f" and dt.itemsize < 8


def _two_forms(decl: Decl) -> bool:
    """Whether the kernel's chunks_1d has a unit-stride and a strided form
    (chunks_1d_s; see _source)."""
    style = decl.meta.get("style", "lanes")
    return (not decl.aux and style in ("extreme", "simd")) or style in _STRIDED_BLOCKS


def _signature_text(decl: Decl) -> str:
    return repr(decl.key)


def _source(decl: Decl, cache: bool) -> str:
    K = decl.arity
    aux = decl.aux
    w1 = ", w" if aux else ""
    wjc = "w[j], " if aux else ""

    H = cg.args("h", K)
    Tl = cg.args("t", K)
    # "comp" sums (see _reduce_1d_code): the 1-D functions also take each
    # chunk's head and tail pieces' rounding errors (he, te), for the fix-up
    comp = _comp(decl)
    H1, Tl1 = (f"{H}, he", f"{Tl}, te") if comp else (H, Tl)
    src = [
        "import numba\n",
        "import numpy as np\n",
        # sorted: a set's repr depends on the hash seed, and the source text
        # names the cache file (it must be the same in every process)
        f"_OPTS = dict(nogil=True, error_model='numpy', "
        f"fastmath=set({sorted(FASTMATH)!r}), cache={cache})\n"
        f"_NOWRAP = {NO_WRAPPERS!r}\n\n",
    ]
    # ---------------- 1-D: pairwise-blocked range reduction, 8 lanes per block
    K1 = max(K, 1)
    style = decl.meta.get("style", "lanes")
    # nanmax and the like: the extreme paths' NaN rule reversed (see _takes)
    skip = bool(decl.meta.get("skipnan"))
    src.append("".join(f"U{i} = np.uint64({i})\n" for i in range(LANES + 1)))
    src.append(f"PF_BYTES = {PF_BYTES}\nOFFSETS_PF = {OFFSETS_PF}\nM8 = ~np.uint64(7)\n"
               "M4 = ~np.uint64(3)\n"
               "U16 = np.uint64(16)\n")
    src.append(_PREFETCH_HELPER)
    if style == "lse":
        src.append(_NONFINITE_HELPER)
    if style == "extreme":
        src.append(_EXTREME_HELPERS)
        if skip and K == 2:
            src.append(_SKIP_KEYS_HELPER)
        if K == 2 and not aux:
            src.append(_arg_long_source(skip))
    if comp:
        src.append(_VSUMCN_HELPER if K else _VSUMC_HELPER)
    elif decl.meta.get("vsum"):
        src.append(_VSUM_HELPER)
    if style == "lse":
        src.append(_LSE_HELPERS)
    if style == "pool":
        src.append(f"POOL_BIG = {POOL_BIG!r}\n" + _POOL_HELPERS)
    if style in ("var", "nanvar"):
        src.append(f"VAR_BIG = {VAR_BIG!r}\n" + _VAR_HELPERS)
    # scratch arrays come in from run() (see _scratch): a kernel that
    # allocates needs Numba's runtime, which the native entries do without
    stk_alloc = "".join(f"    k{i} = ks{i}[r]\n" for i in range(K1))
    if comp:
        stk_alloc += "    cbr = cb[r]\n"  # a strided block's copy (see _block_code)
    sc = _scratch(decl)

    def extra(fname: str) -> str:
        return "".join(f", {p}" for p, _, _ in sc[fname])

    X1d, X2d = extra("chunks_1d"), extra("chunks_2d")
    pad_fill = ""
    if _padded(style, aux):
        # this chunk call's copies of the last elements (see PAD); with no
        # elements they stay unset, and only empty segments read them (masked)
        wfill = "            wpad[t] = w[pb + min(t, kp - 1)]\n" if aux else ""
        pad_fill = (
            "    vpad = vp[r]\n"
            + ("    wpad = wp[r]\n" if aux else "")
            + "    kp = min(nv, 8)\n"
            "    pb = nv - kp\n"
            "    pbu = np.uint64(pb)\n"
            "    if kp > 0:\n"
            f"        for t in range({PAD}):\n"
            "            vpad[t] = values[pb + min(t, kp - 1)]\n"
            + wfill
        )

    nv = "min(values.shape[0], w.shape[0])" if aux else "values.shape[0]"
    # Chunks c0..c1-1: the serial call runs them all, the parallel launch
    # (``launch``) one contiguous run per worker; r is the worker's row of
    # working scratch (the stack, the end copies). A chunk
    # reduces the segments ending in it, then its head and open tail pieces.
    # Segments ending in the chunk end at or before j1, so b = min(e, j1)
    # only cuts the tail.
    vsum = decl.meta.get("vsum", False)  # True, "comp" (see _reduce_1d_code) or False
    # True (float sum/mean), "nan" (nansum/nanmean), "int"/"uint" (integer sums) or False
    vmask = decl.meta.get("vmask", False)
    red = _reduce_1d_code(style, aux, K, "            ", vsum=vsum, skip=skip, vmask=vmask)
    # Segments k of the chunk: a for loop, or, where a group step can take 8
    # segments at once (_group_code), a while loop it can move k in.
    group = _group_code(style, aux, K, skip, vmask, bool(decl.meta.get("group")),
                        decl.meta.get("kind") in ("max", "argmax"), "            ")

    def seg_loop(first: str, end: str, body: str) -> str:
        # ``body``: one segment k's code, indented for the for loop
        if not group:
            return f"        for k in range({first}, {end}):\n" + body
        # runs of 8 segments: the group step, or else the for loop over
        # them (the loop the kernels without a group step run; a while
        # loop stepping k one by one made runs of 1 + Poisson(4) elements
        # 2-6 % slower); gfirst: the chunk's first segment wholly inside it
        return (f"        gfirst = i0 + 1 if i0 < i1 and offsets[i0] < j0 else i0\n"
                f"        kg = {first}\n"
                f"        while kg < {end}:\n"
                f"            k = kg\n"
                f"            kk = min(kg + 8, {end})\n"
                + group
                + "            for k in range(kg, kk):\n"
                + textwrap.indent(body, "    ")
                + "            kg = kk\n")
    te_store = "                te[c] = cres\n" if comp else ""
    he_store = "                he[c] = cres\n" if comp else ""
    assert style == "simd" or not comp  # (the carry is written for the simd form only)
    if style == "simd":
        # Segments lo..i1-1 lie wholly inside the chunk: no clamping, no
        # head/tail branch, each start is the previous end (one offsets read
        # per segment); the edge pieces after. Sum, float32, segments of 0-4:
        # 1.3x over the single loop below. Not for the other styles: their
        # larger block code, written twice, compiled 1.6-1.9x slower (which
        # the test suite, compiling ~900 signatures, could not afford), though
        # argmax gained 2.4x on tiny segments (a next step: a smaller edge
        # path).
        red_edge = _reduce_1d_code(style, aux, K, "            ", small=False, vsum=vsum,
                                   skip=skip, carry=comp)
        body = f"""            e = offsets[k + 1]
            a = s
            b = e
{red}            n = e - s
            if use_fill and is_empty(st, n):
                out[k] = fill
            else:
                out[k] = finalize(st, n)
            s = e
"""
        loop = f"""        lo = i0 + 1 if i0 < i1 and offsets[i0] < j0 else i0
        s = offsets[lo]
{seg_loop("lo", "i1", body)}        # The edge pieces, reduced as partial states for the fix-up: the
        # head (segment i0, begun in an earlier chunk) and the open tail
        # (segment i1, still running at the chunk's end; may be the same
        # segment).
        for edge in range(2):  # (the reduction code uses q, m, n... itself)
            if edge == 0:
                if lo == i0:
                    continue
                k = i0
            else:
                if i1 >= nseg:
                    continue
                k = i1
            s = offsets[k]
            e = offsets[k + 1]
            a = s if s > j0 else j0
            b = e if e < j1 else j1
            pf = a  # the head piece lies behind the interior segments
{red_edge}            if edge == 1:
{cg.store("t", K, "c", "st", "                ")}{te_store}            else:
{cg.store("h", K, "c", "st", "                ")}{he_store}"""
    else:
        # One loop over the chunk's segments and its open tail (k == i1);
        # a and b clamp the head and tail pieces; one copy of the code.
        body = f"""            e = offsets[k + 1]
            a = s if s > j0 else j0
            b = e if e < j1 else j1
{red}            if k == i1:
{cg.store("t", K, "c", "st", "                ")}            elif s < j0:
{cg.store("h", K, "c", "st", "                ")}            else:
                n = e - s
                if use_fill and is_empty(st, n):
                    out[k] = fill
                else:
                    out[k] = finalize(st, n)
            s = e
"""
        loop = f"""        kend = i1 + 1 if i1 < nseg else i1
        s = offsets[i0]
{seg_loop("i0", "kend", body)}"""
    # the blocks' code tests ``unit`` where it has a form for values of unit
    # stride only (vector-IR passes: arg_keys, block_sum) or one for strided
    # values (the simd style's partial sums; _STRIDED_BLOCKS: attention_pool's
    # scores too). Such a kernel is written twice, ``unit`` a constant in each:
    # chunks_1d for unit stride, chunks_1d_s for other strides (run() picks by
    # the same test). Numba prunes the branches a constant rules out before
    # typing, so a signature compiles one form: written into one function, both
    # were compiled for every signature (logsumexp and attention_pool ~0.5 s
    # more cold compile each; sum about the same; bench/RESULTS.md Run 32).
    two_forms = _two_forms(decl)
    assert two_forms or not group  # (the group steps take unit stride only)
    # (a vector-IR step on ``values`` needs both forms: see STRIDED)
    assert two_forms or STRIDED not in red
    chunks_1d = f"""
@numba.njit(**_OPTS)
def @NAME@(c0, c1, r, values{w1}, offsets, bi, bj, out, fill, use_fill, {H1}, {Tl1}{X1d}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
{stk_alloc}    nv = {nv}
    nvu = np.uint64(nv)
{pad_fill}    pfd = PF_BYTES // values.itemsize
    pfs = pf_step(values.strides[0])
@UNIT@    for c in range(c0, c1):
        i0 = bi[c]
        i1 = bi[c + 1]
        j0 = bj[c] + base
        j1 = bj[c + 1] + base
        pf = j0
{loop}
"""
    if two_forms:
        src.append(chunks_1d.replace("@NAME@", "chunks_1d").replace("@UNIT@", "    unit = True\n")
                   .replace(STRIDED, ""))
        # the strided form without the group step (a constant False there: its
        # code, which Numba would type and lower before LLVM drops it, cost
        # ~0.2-0.5 s of such a kernel's cold compile)
        src.append(chunks_1d.replace("@NAME@", "chunks_1d_s").replace(group, "")
                   .replace("@UNIT@", "    unit = False\n").replace(STRIDED, "_s"))
    else:
        src.append(chunks_1d.replace("@NAME@", "chunks_1d").replace("@UNIT@", ""))
        src.append("\nchunks_1d_s = chunks_1d\n")
    # The fix-up: a segment cut by chunk edges has its open pieces in the
    # tails of chunks cs..c-1 and its last piece in chunk c's head. The tails
    # are combined pairwise in place (neighbours at distance 1, 2, 4, ...;
    # order kept), then the head: log2(chunks) more combines on a piece's
    # way to the result, where a running state took one per chunk (63 for a
    # segment across 64 chunks, beyond the sums' declared error bound).
    pair_1d = f"""            span = 1
            while span < kk:
                for q in range(cs, cs + kk - span, 2 * span):
                    st = combine({cg.load("t", K, "q")}, {cg.load("t", K, "q + span")})
{cg.store("t", K, "q", "st", "                    ")}                span *= 2
"""
    head_1d = f"""            prev = {cg.load("t", K, "cs")} if kk > 0 else IDENT
            st = combine(prev, {cg.load("h", K, "c")})
"""
    if comp:
        # the pieces added with TwoSum, their errors and the pieces' own
        # (he, te) summed and added once, under the rule of the pieces' fold
        # (an error that is not finite is dropped: the sum is inf or NaN);
        # nansum/nanmean's counts (t1, h1) added as they are
        cnt_pair = "                    t1[q] = t1[q] + t1[q + span]\n" if K else ""
        pair_1d = f"""            span = 1
            while span < kk:
                for q in range(cs, cs + kk - span, 2 * span):
                    st, ce = two_sum(t0[q], t0[q + span])
                    t0[q] = st
{cnt_pair}                    te[q] = (te[q] + te[q + span]) + ce
                span *= 2
"""
        ident0 = "IDENT[0]" if K else "IDENT"
        head_1d = f"""            prev = t0[cs] if kk > 0 else {ident0}
            perr = te[cs] if kk > 0 else 0.0
            st, ce = two_sum(prev, h0[c])
            err = (perr + he[c]) + ce
            if {_KEEP_ERR.format(e="err")}:
                st = st + err
"""
        if K:
            head_1d += "            st = (st, (t1[cs] if kk > 0 else IDENT[1]) + h1[c])\n"
    src.append(f"""
@numba.njit(**_OPTS)
def fixup_1d(offsets, bi, bj, out, fill, use_fill, {H1}, {Tl1}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    run_row = -1
    cs = 0
    for c in range(bi.shape[0] - 1):
        i0 = bi[c]
        i1 = bi[c + 1]
        if i0 < i1 and offsets[i0] < bj[c] + base:
            kk = c - cs if run_row == i0 else 0
{pair_1d}{head_1d}            n = offsets[i0 + 1] - offsets[i0]
            if use_fill and is_empty(st, n):
                out[i0] = fill
            else:
                out[i0] = finalize(st, n)
        if i1 < nseg and run_row != i1:
            run_row = i1
            cs = c
""")
    # ---------------- 2-D: rows (n, m), threads of a chunk walk rows, SIMD across m
    def range_2d_extreme(end: str, ind: str) -> str:
        # Float max/min/argmax/argmin over rows a..end: rows come in order, so
        # a row replaces a column's state when it is strictly better or the
        # first NaN (_takes), as selects LLVM vectorises across the columns
        # (the generic combine's branches it did not: 2-D float32 argmax ran
        # at a quarter of sum's speed).
        cmp = ">" if decl.meta["kind"] in ("max", "argmax") else "<"
        arg = K == 2
        i1, i2 = ind + "    ", ind + "    " * 2
        ident = (
            f"{i2}a0[col] = IDENT[0]\n{i2}a1[col] = IDENT[1]\n" if arg
            else f"{i2}a0[col] = IDENT\n"
        )
        # float32 argmax/argmin: one narrow pass (range_2d_arg_narrow), the
        # row blocks (range_2d_argblocks) only beyond its int32 row range.
        # float64: the one pass below, value and row in 8-byte lanes. Its
        # pieces longer than 32 KiB of rows took the row blocks until the
        # workers' scratch rows were kept apart (ROW_GAP); since, the one
        # pass is 1.3-1.45x faster on every large workload (25M float64 as
        # (n, 64), 2 threads: uniform 8.74 -> 6.33 ms, one_huge 8.15 -> 5.52).
        # (Integer argmax/argmin are style "simd", not this.)
        if arg and _widened_arg(decl):
            return range_2d_strips(end, ind) + (
                range_2d_arg_narrow(end, ind, cmp) + range_2d_argblocks(end, ind, cmp)
            ).replace(f"{ind}if ", f"{ind}elif ", 1) + (
                f"{ind}else:\n"
                f"{i1}for col in range(m):\n"
                + ident
            )
        # Two rows per trip (fold_rows).
        return (
            f"{ind}if a < {end}:\n"
            f"{i1}for col in range(m):\n"
            f"{i2}a0[col] = values[a, col]\n"
            + (f"{i2}a1[col] = a - s\n" if arg else "")
            + f"{i1}j = a + 1\n"
            + fold_rows(end, ind, cmp, "AT0", "a0", "a1" if arg else None, ("av", "bv"),
                        ("jj = j - s",) if arg else (), ("jj", "jj + 1"))
            + f"{ind}else:\n"
            f"{i1}for col in range(m):\n"
            + ident
        )

    def fold_rows(end: str, ind: str, cmp: str, conv: str, best: str, row, tmp: tuple,
                  row_setup: tuple, rows: tuple) -> str:
        # The rows j, j + 1, ... < end folded into each column's running
        # ``best`` (and its ``row``, when there is one), two rows per trip,
        # the second row's select on the first's: a column's state is loaded
        # and stored once per two rows, and its store is never "the loaded
        # value unless the row wins", which LLVM turns into a masked store
        # (AVX2's vmaskmovps, slow on AMD Zen: 2-D float32 max ran at 0.4x
        # sum's speed there; see _cpu_bits.select). Rows still come in order:
        # the same results. ``conv`` reads an element in the state's type,
        # ``tmp`` names the two temporaries, ``row_setup`` the lines that set
        # the row expressions ``rows`` (of rows j and j + 1) before the
        # columns (the first line alone serves the last, odd row).
        i1, i2, i3, i4 = (ind + "    " * d for d in range(1, 5))
        p, q = tmp
        setup2 = "".join(f"{i2}{line}\n" for line in row_setup)
        setup1 = "".join(f"{i2}{line}\n" for line in row_setup[:1])
        return (
            f"{i1}while j + 1 < {end}:\n"
            f"{i2}for jp in range(j + pfr, min(j + 2 + pfr, nr)):\n"
            f"{i3}for col in range(0, m, pfs):\n"
            f"{i4}prefetch2(values, jp, col)\n"
            + setup2
            + f"{i2}for col in range(m):\n"
            f"{i3}{p} = {best}[col]\n"
            f"{i3}v = {conv}(values[j, col])\n"
            f"{i3}tk = {_takes('v', p, f'v {cmp} {p}', skip)}\n"
            f"{i3}{q} = select(tk, v, {p})\n"
            f"{i3}w = {conv}(values[j + 1, col])\n"
            f"{i3}tk2 = {_takes('w', q, f'w {cmp} {q}', skip)}\n"
            f"{i3}{best}[col] = select(tk2, w, {q})\n"
            + (f"{i3}{row}[col] = select(tk2, {rows[1]}, select(tk, {rows[0]}, {row}[col]))\n"
               if row else "")
            + f"{i2}j += 2\n"
            f"{i1}if j < {end}:\n"
            f"{i2}jp = j + pfr\n"
            f"{i2}if jp < nr:\n"
            f"{i3}for col in range(0, m, pfs):\n"
            f"{i3}    prefetch2(values, jp, col)\n"
            + setup1
            + f"{i2}for col in range(m):\n"
            f"{i3}v = {conv}(values[j, col])\n"
            f"{i3}{p} = {best}[col]\n"
            f"{i3}tk = {_takes('v', p, f'v {cmp} {p}', skip)}\n"
            f"{i3}{best}[col] = select(tk, v, {p})\n"
            + (f"{i3}{row}[col] = select(tk, {rows[0]}, {row}[col])\n" if row else "")
        )

    def range_2d_strips(end: str, ind: str) -> str:
        # float32 argmax/argmin, values with unit column stride and at least
        # SW columns: rows in blocks of srb (in L1), each block strip by strip
        # (SW columns, one vector register), the strip's best and row carried
        # in registers through the block's rows (_cpu_bits.strip_arg*): the
        # narrow pass below loads and stores each column's best and row once
        # per row. The last strip of a width that is not a multiple of SW
        # overlaps the one before (idempotent). The row is int32, local to
        # the piece: pieces beyond NARROW_ROWS rows take the row blocks.
        # 25M float32 as (n, 64), best of 4 rounds, one thread: uniform 5.33
        # -> 3.83 ms, empty_heavy 4.66 -> 3.96, one_huge 6.57 -> 5.23; two
        # threads 1.1-1.2x. Not float64 (8 lanes; 5-10 % slower:
        # its row-by-row pass is bound by memory, not by the state) nor
        # max/min (no faster). Blocks of 2 KiB of rows (at least 4 rows):
        # A/B, 3 rounds, 1 and 2 threads, against 4 KiB 0.92-0.97x the time,
        # 8 KiB 1.03-1.18x, 1 KiB 0.95-1.22x.
        i1, i2, i3, i4 = (ind + "    " * d for d in range(1, 5))
        return (
            f"{ind}if a < {end} and sw > 0 and {end} - a <= {int(NARROW_ROWS)}:\n"
            f"{i1}for col in range(m):\n"
            f"{i2}bm[col] = values[a, col]\n"
            f"{i2}ix[col] = np.int32(0)\n"
            f"{i1}p = a + 1\n"
            f"{i1}while p < {end}:\n"
            f"{i2}q = p + srb\n"
            f"{i2}if q > {end}:\n"
            f"{i3}q = {end}\n"
            f"{i2}for jp in range(p + pfr, min(q + pfr, nr)):\n"
            f"{i3}for col in range(0, m, pfs):\n"
            f"{i4}prefetch2(values, jp, col)\n"
            f"{i2}cw = 0\n"
            f"{i2}while cw < m:\n"
            f"{i3}strip(values, p, q, cw if cw + sw <= m else m - sw, bm, ix, np.int32(p - a))\n"
            f"{i3}cw += sw\n"
            f"{i2}p = q\n"
            f"{i1}for col in range(m):\n"
            f"{i2}a0[col] = AT0(bm[col])\n"
            f"{i2}a1[col] = (a - s) + np.int64(ix[col])\n"
        )

    def range_2d_arg_narrow(end: str, ind: str, cmp: str) -> str:
        # float32 (and float16, read as float32) argmax/argmin: the running
        # best and its row (local to the piece, so it fits int32) are held in
        # the values' width, so value and index select in the same vector
        # lanes; the widened float64/int64 state loaded and stored 24 bytes
        # per 4-byte element. The piece's state is widened once at its end.
        # One pass for every piece (25M float32 x 64 columns, 2 threads:
        # uniform 1.45x, empty_heavy and hierarchy 1.4x faster than the
        # widened pass or the row blocks); only a piece longer than
        # NARROW_ROWS (the int32 row range) takes the row blocks.
        # Two rows per trip (fold_rows; with one, (n, 8) float32 argmax took
        # 2.8x sum's time on AMD Zen 3).
        i1, i2 = ind + "    ", ind + "    " * 2
        return (
            f"{ind}if a < {end} and {end} - a <= {int(NARROW_ROWS)}:\n"
            f"{i1}for col in range(m):\n"
            f"{i2}bm[col] = VT(values[a, col])\n"
            f"{i2}ix[col] = IT(0)\n"
            f"{i1}j = a + 1\n"
            + fold_rows(end, ind, cmp, "VT", "bm", "ix", ("bv", "cv"),
                        ("jb = IT(j - a)", "jb1 = IT(j + 1 - a)"), ("jb", "jb1"))
            + f"{i1}for col in range(m):\n"
            f"{i2}a0[col] = AT0(bm[col])\n"
            f"{i2}a1[col] = (a - s) + np.int64(ix[col])\n"
        )

    def range_2d_argblocks(end: str, ind: str, cmp: str) -> str:
        # float32 argmax/argmin pieces longer than NARROW_ROWS (beyond the
        # narrow pass's int32 row index): rows in blocks of rb rows (a block
        # stays in L1):
        # pass 1 keeps only each column's best value in the values' width
        # (NaN sticky: the block's best is NaN iff it holds one), pass 2 --
        # only when some column improved -- walks the block's rows backwards
        # and keeps the last row equal to that best (or NaN when it is NaN),
        # i.e. the first. A row-by-row (value, index) select loads and stores
        # 16 bytes of state per 4-byte float32 element. Same result as the
        # declaration: first NaN, else the strictly best value, else the
        # lowest index.
        i1, i2, i3, i4 = (ind + "    " * d for d in range(1, 5))
        improve = _takes("tv", "av", f"tv {cmp} av", skip)
        # pass 1's rule (skip: a NaN best holds nothing; NaN iff all are)
        pass1 = f"(v {cmp} bv) | (bv != bv)" if skip else f"(v {cmp} bv) | (v != v)"
        return (
            f"{ind}elif a < {end}:\n"
            f"{i1}for col in range(m):\n"
            f"{i2}a0[col] = values[a, col]\n"
            f"{i2}a1[col] = a - s\n"
            f"{i1}p = a + 1\n"
            f"{i1}while p < {end}:\n"
            f"{i2}q = p + rb\n"
            f"{i2}if q > {end}:\n"
            f"{i3}q = {end}\n"
            f"{i2}for col in range(m):\n"
            f"{i3}bm[col] = VT(values[p, col])\n"
            f"{i2}for j in range(p, q):\n"
            f"{i3}jp = j + pfr\n"
            f"{i3}if jp < nr:\n"
            f"{i4}for col in range(0, m, pfs):\n"
            f"{i4}    prefetch2(values, jp, col)\n"
            f"{i3}for col in range(m):\n"
            f"{i4}v = VT(values[j, col])\n"
            f"{i4}bv = bm[col]\n"
            f"{i4}bm[col] = v if {pass1} else bv\n"
            f"{i2}up = False\n"
            f"{i2}for col in range(m):\n"
            f"{i3}tv = AT0(bm[col])\n"
            f"{i3}av = a0[col]\n"
            f"{i3}up |= {improve}\n"
            f"{i2}if up:\n"
            f"{i3}for col in range(m):\n"
            f"{i4}ix[col] = IT(0)\n"
            f"{i3}for j in range(q - 1, p - 1, -1):\n"
            f"{i4}jb = IT(j - p)\n"
            f"{i4}for col in range(m):\n"
            f"{i4}    v = VT(values[j, col])\n"
            f"{i4}    tv = bm[col]\n"
            f"{i4}    hit = (v == tv) | ((v != v) & (tv != tv))\n"
            f"{i4}    ix[col] = jb if hit else ix[col]\n"
            f"{i3}for col in range(m):\n"
            f"{i4}tv = AT0(bm[col])\n"
            f"{i4}av = a0[col]\n"
            f"{i4}ok = {improve}\n"
            f"{i4}a0[col] = tv if ok else av\n"
            f"{i4}a1[col] = (p - s) + np.int64(ix[col]) if ok else a1[col]\n"
            f"{i2}p = q\n"
        )

    def range_2d(end: str, ind: str) -> str:
        # Reduces rows a..end into the per-column states a0, a1, ... Written
        # into the chunk loop, not called: no refcounting per segment.
        if style == "extreme" and not aux:
            return range_2d_extreme(end, ind)
        def reset(i2: str) -> str:
            return "".join(
                f"{i2}a{i}[col] = IDENT{'' if K == 0 else f'[{i}]'}\n" for i in range(K1)
            )

        a_col = cg.load("a", K, "col")
        i1_, i2_, i3_ = ind + "    ", ind + "        ", ind + "            "

        def rows(i1: str) -> str:
            # the block's rows p..q, one combine per element (the declaration)
            i2, i3 = i1 + "    ", i1 + "        "
            loop = (
                f"{i1}for j in range(p, q):\n"
                # the prefetch stream: row j + pfr, one prefetch per cache line
                f"{i2}jp = j + pfr\n"
                f"{i2}if jp < nr:\n"
                f"{i3}for col in range(0, m, pfs):\n"
                f"{i3}    prefetch2(values, jp, col)\n"
                f"{i2}jj = j - s\n"
                f"{i2}for col in range(m):\n"
                f"{i3}st = combine({a_col}, map_(values[j, col], {wjc}jj))\n"
                + cg.store("a", K, "col", "st", i3)
            )
            if style in ("var", "nanvar"):
                # var/std and their nan forms: a block whose values are all
                # finite and at most VAR_BIG gets its column states (count,
                # shift, sum of deviations, M2) from two passes vectorised
                # across the columns, var_block's formula per column; other
                # blocks run the declaration (Chan's update, a division per
                # element). The block starts from the identity, so its state
                # is the block's own. Scratch: the stack's next free row
                # (g{i}[nb], written only after the block).
                nanc = (f"{i2}for col in range(m):\n{i3}a4[col] = a0[col]\n"
                        if style == "nanvar" else "")
                return (
                    f"{i1}if var_rows_first(values, m, p, q, a1, a2, a3, pfr, pfs):\n"
                    f"{i2}var_rows_second(values, m, p, q, a0, a1, a2, a3, g1[nb], g2[nb])\n"
                    + nanc
                    + f"{i1}else:\n"
                    f"{i2}for col in range(m):\n{reset(i3)}"
                    + _indented(loop)
                )
            if style != "lse":
                return loop
            # logsumexp / softmax statistics: an all-finite block's column
            # states (max, sum of exp(x - max)) from two passes with the
            # polynomial exp (the 1-D kernel's lse_block, across columns);
            # a block holding NaN or +-inf runs the declaration. The block
            # starts from the identity, so its state is the block's own.
            # 25M as (n, 64), 2 threads: float32 86 -> 14.6 ms, float64 85 ->
            # 19.5 ms (the declaration's math.exp per element is a scalar call).
            return (
                f"{i1}if lse_rows_max(values, m, p, q, a0, a1, pfr, pfs):\n"
                f"{i2}lse_rows_sum(values, m, p, q, a0, a1)\n"
                f"{i1}else:\n"
                f"{i2}for col in range(m):\n{reset(i3)}"
                + _indented(loop)
            )
        # Rows in blocks of BLOCK, each block's per-column states merged
        # pairwise through a binary-counter stack (g0, g1, ...: STACK x m), as
        # in 1-D: a column summed row after row lost n*u (found by the
        # property test: 766 rows of 0.1**2, error 1.21e-13 > bound 1.20e-13);
        # now BLOCK*u + log2(n/BLOCK) merges, the bound of the 1-D path.
        return (
            f"{ind}for col in range(m):\n{reset(i1_)}"
            f"{ind}nb = 0\n"
            f"{ind}cnt = 0\n"
            f"{ind}p = a\n"
            f"{ind}while p < {end}:\n"
            f"{i1_}q = p + {BLOCK}\n"
            f"{i1_}if q > {end}:\n"
            f"{i2_}q = {end}\n"
            + rows(i1_)
            + f"{i1_}if cnt == 0 and q == {end}:\n"
            f"{i2_}break\n"  # one block: its states are the result
            f"{i1_}cnt += 1\n"
            f"{i1_}mm = cnt\n"
            f"{i1_}while (mm & 1) == 0:\n"
            f"{i2_}nb -= 1\n"
            f"{i2_}for col in range(m):\n"
            f"{i3_}st = combine({cg.load('g', K, 'nb, col')}, {a_col})\n"
            + cg.store("a", K, "col", "st", i3_)
            + f"{i2_}mm >>= 1\n"
            f"{i1_}for col in range(m):\n"
            + cg.store("g", K, "nb, col", a_col, i2_)
            + reset(i2_)
            + f"{i1_}nb += 1\n"
            f"{i1_}p = q\n"
            f"{i1_}if p >= {end}:\n"
            f"{i2_}nb -= 1\n"
            f"{i2_}for col in range(m):\n"
            + cg.store("a", K, "col", cg.load("g", K, "nb, col"), i3_)
            + f"{i2_}while nb > 0:\n"
            f"{i2_}    nb -= 1\n"
            f"{i2_}    for col in range(m):\n"
            f"{i2_}        st = combine({cg.load('g', K, 'nb, col')}, {a_col})\n"
            + cg.store("a", K, "col", "st", i2_ + "        ")
        )

    copy_h = cg.store("h", K, "c, col", cg.load("a", K, "col"), "                    ")
    copy_t = cg.store("t", K, "c, col", cg.load("a", K, "col"), "                    ")
    # AT{i}: the 2-D per-column accumulator type (see CpuKernel: float64 for the
    # float32/float16 values of argmax/argmin, exact, and LLVM then vectorises
    # the (value, index) select across columns: 2.5x measured).
    acc_alloc1 = "".join(f"    a{i} = as{i}[r]\n" for i in range(max(K, 1)))
    if style == "extreme" and not aux and K == 2 and _widened_arg(decl):
        # float32 argmax/argmin: the strips' and the narrow pass's best and
        # row, the row-block pass's block best (range_2d_strips, _arg_narrow,
        # _argblocks); the strips' width (0: not this layout) and block rows
        acc_alloc1 += (
            "    bm = bms[r]\n    ix = ixs[r]\n"
            "    rb = max(8, 32768 // max(1, m * values.itemsize))\n"
            "    sw = SW if values.strides[1] == values.itemsize and m >= SW else 0\n"
            "    srb = max(4, 2048 // max(1, m * values.itemsize))\n"
        )
    if not (style == "extreme" and not aux):
        acc_alloc1 += "".join(
            f"    g{i} = gs{i}[r]\n" for i in range(max(K, 1))
        )
    src.append(f"""
@numba.njit(**_OPTS)
def chunks_2d(c0, c1, r, values{w1}, offsets, bi, bj, out, fill, use_fill, {H}, {Tl}{X2d}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    # the row width is out's: values may be a wider view (run(), _rows_view),
    # whose columns from m on are never read
    m = out.shape[1]
    nr = values.shape[0]
    # the prefetch stream's distance in rows; none in a wider view's rows
    # (_rows_view): there float64 sum took 1.4-1.6x the time of none (Run 34)
    rowb = m * values.itemsize
    pfr = max(1, PF_BYTES // max(1, rowb))
    if values.strides[1] == values.itemsize and values.strides[0] > rowb:
        pfr = nr
    pfs = pf_step(values.strides[1])
{acc_alloc1}    for c in range(c0, c1):
        i0 = bi[c]
        i1 = bi[c + 1]
        j0 = bj[c] + base
        j1 = bj[c + 1] + base
        # one loop over the chunk's segments and its open tail (k == i1),
        # so the row-reduction code exists once (compile time)
        kend = i1 + 1 if i1 < nseg else i1
        for k in range(i0, kend):
            s = offsets[k]
            e = offsets[k + 1]
            a = s if s > j0 else j0
            b = e if e < j1 else j1
{range_2d("b", "            ")}            if k == i1:
                for col in range(m):
{copy_t}            elif s < j0:
                for col in range(m):
{copy_h}            else:
                n = e - s
                for col in range(m):
                    st = {cg.load("a", K, "col")}
                    if use_fill and is_empty(st, n):
                        out[k, col] = fill
                    else:
                        out[k, col] = finalize(st, n)
""")
    right = cg.load("t", K, "q + span, col")
    pair_2d = f"""            span = 1
            while span < kk:
                for q in range(cs, cs + kk - span, 2 * span):
                    for col in range(m):
                        st = combine({cg.load("t", K, "q, col")}, {right})
{cg.store("t", K, "q, col", "st", "                        ")}                span *= 2
"""
    src.append(f"""
@numba.njit(**_OPTS)
def fixup_2d(offsets, bi, bj, out, fill, use_fill, {H}, {Tl}{extra('fixup_2d')}):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    m = out.shape[1]
    run_row = -1
    cs = 0
    for c in range(bi.shape[0] - 1):
        i0 = bi[c]
        i1 = bi[c + 1]
        if i0 < i1 and offsets[i0] < bj[c] + base:
            n = offsets[i0 + 1] - offsets[i0]
            kk = c - cs if run_row == i0 else 0
{pair_2d}            for col in range(m):
                prev = {cg.load("t", K, "cs, col")} if kk > 0 else IDENT
                st = combine(prev, {cg.load("h", K, "c, col")})
                if use_fill and is_empty(st, n):
                    out[i0, col] = fill
                else:
                    out[i0, col] = finalize(st, n)
        if i1 < nseg and run_row != i1:
            run_row = i1
            cs = c
""")
    return "".join(src)


_MERGE_PATH_SRC = """
import numba


@numba.njit(nogil=True, cache=CACHE)
def merge_path_k(offsets, bi, bj):
    nseg = offsets.shape[0] - 1
    base = offsets[0]
    total = (offsets[nseg] - base) + nseg
    nchunks = bi.shape[0] - 1
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
"""
_merge_path_fn = None


def _merge_path_kernel():
    """``merge_path_k`` (a ``NativeFunction``: a disk-cached native entry
    where there is one, so a warm process still imports no Numba)."""
    global _merge_path_fn
    if _merge_path_fn is None:
        with _compiled_lock:
            if _merge_path_fn is None:
                folder, disk = cg.generated_dir()
                src = _MERGE_PATH_SRC.replace("CACHE", repr(bool(disk)))
                path = cg.module_path(src, "merge-path")
                (_merge_path_fn,) = native.functions(
                    folder if disk else None, path.stem, ("merge_path_k",),
                    native.Lazy(lambda: cg.import_module(path, {})))
    return _merge_path_fn


def merge_path(offsets, nchunks):
    """Chunk boundaries ``(bi, bj)``: chunk ``c`` owns segment ends
    ``bi[c]:bi[c+1]`` and elements ``bj[c]:bj[c+1]`` (relative to offsets[0]).

    Boundary ``c`` lies on merge diagonal ``d = total * c // nchunks``; ``bi[c]``
    is the first segment whose end lies at or after ``d`` in the merged
    sequence of elements and segment ends (``offsets[k + 1] - offsets[0] + k``
    grows strictly with ``k``). One binary search per boundary in a small
    kernel: 2.3 us for 24 chunks over 12.5M segments (4.9 us for 128), where
    the same loop in Python took ~100 us (NumPy in lockstep: ~80 us)."""
    bi = np.empty(nchunks + 1, np.int64)
    bj = np.empty(nchunks + 1, np.int64)
    fn = _merge_path_kernel()
    fn.resolve(None, (offsets, bi, bj))(offsets, bi, bj)
    return bi, bj


def _acc_dtypes(decl: Decl) -> list[np.dtype]:
    """AT{i}: the 2-D per-column accumulator types. argmax/argmin only compare
    and select values, so holding a float32/float16 value as float64 is exact;
    other ops keep their type (1-D and 2-D agree bit for bit), and plain
    max/min ran 1.5x slower widened."""
    dts = cg.component_dtypes(decl.identity)
    return [np.dtype(np.float64) if i == 0 and _widened_arg(decl) else dt
            for i, dt in enumerate(dts)]


def _scratch(decl: Decl) -> dict:
    """The scratch arrays each kernel function takes after its states:
    ``(parameter, dtype, shape)``, where a shape entry ``"c"`` is the number
    of workers (a chunk call uses row ``r``, its worker's: working stacks and
    accumulators, not results) and ``"m"`` the row width. run() allocates
    them, so that no kernel allocates (see ``native``)."""
    dts = cg.component_dtypes(decl.identity)
    ats = _acc_dtypes(decl)
    K1 = len(dts)
    style = decl.meta.get("style", "lanes")
    c2 = [(f"as{i}", ats[i], ("c", "m")) for i in range(K1)]
    if style == "extreme" and not decl.aux and decl.arity == 2 and _widened_arg(decl):
        c2 += [("bms", dts[0], ("c", "m")), ("ixs", np.dtype(np.int32), ("c", "m"))]
    if not (style == "extreme" and not decl.aux):
        c2 += [(f"gs{i}", ats[i], ("c", STACK, "m")) for i in range(K1)]
    # "values"/"aux": the dtype of that argument (known only in run())
    pads = [("vp", "values", ("c", PAD))] if _padded(style, decl.aux) else []
    if pads and decl.aux:
        pads.append(("wp", "aux", ("c", PAD)))
    return {
        "chunks_1d": [(f"ks{i}", dts[i], ("c", STACK)) for i in range(K1)] + pads
        # float64 sums: a strided block's contiguous copy (_block_code)
        + ([("cb", np.dtype(np.float64), ("c", BLOCK))] if _comp(decl) else []),
        "fixup_1d": [],
        "chunks_2d": c2,
        "fixup_2d": [],
    }


# chunks_1d_s: chunks_1d's form for values (or scores) of other than unit
# stride, where the kernel has two (_two_forms); else the same function
_FUNCTIONS = ("chunks_1d", "chunks_1d_s", "fixup_1d", "chunks_2d", "fixup_2d")


class CpuKernel:
    """The kernel functions of one declaration.

    Nothing is compiled or imported here: the generated module is written
    (its name hashes its source) and each function is a
    ``native.NativeFunction``, which runs a disk-cached native entry where it
    has one and otherwise imports the module (Numba, its disk cache or a
    compile) on first use.
    """

    def __init__(self, decl: Decl):
        self.decl = decl
        self.dtypes = cg.component_dtypes(decl.identity)
        self.persistent = decl.key[0] != "user"
        folder, disk = cg.generated_dir()
        self.disk = disk and self.persistent
        self.path = cg.module_path(_source(decl, cache=self.disk), _signature_text(decl),
                                   persistent=self.persistent)
        self.scratch = _scratch(decl)
        # the head and tail states' dtypes, 2-D and 1-D ("comp" sums' 1-D
        # functions also take the pieces' rounding errors: see _source)
        err = [np.dtype(np.float64)] if _comp(decl) else []
        self.states_2d = self.dtypes + self.dtypes
        self.states_1d = self.dtypes + err + self.dtypes + err
        self._specs: dict = {}
        self._tls = threading.local()
        self._lazy = native.Lazy(self._import)
        self.two_forms = _two_forms(decl)
        (self.chunks_1d, chunks_1d_s, self.fixup_1d, self.chunks_2d,
         self.fixup_2d) = native.functions(
            folder if self.disk else None, self.path.stem, _FUNCTIONS, self._lazy)
        # one function (and one native entry per signature) where one form
        self.chunks_1d_s = chunks_1d_s if self.two_forms else self.chunks_1d

    def _import(self):
        decl = self.decl
        helpers = shared_helpers()
        ns = cg.decl_namespace(decl, dtypes=self.dtypes, is_empty=True, **decl_jits(decl))
        ns["pf_1d"] = helpers.pf_1d
        ns["pf_step"] = helpers.pf_step
        for i, at in enumerate(_acc_dtypes(decl)):
            ns[f"AT{i}"] = at.type
        if decl.meta.get("style") == "extreme":
            kind = decl.meta["kind"]
            ns["IS_MAX"] = kind in ("max", "argmax")
            ns["IS_ARG"] = kind in ("argmax", "argmin")
            ns["VT"] = self.dtypes[0].type
            bits = self.dtypes[0].itemsize * 8
            ns.update(_key_constants(bits))
            # the order keys of +inf and -inf (see block_keys)
            it = np.dtype(f"i{bits // 8}")
            pinf = int(np.array(np.inf, self.dtypes[0]).view(it))
            ninf = int(np.array(-np.inf, self.dtypes[0]).view(it))
            ns["KPINF"] = it.type(pinf)
            ns["KNINF"] = it.type(ninf ^ ((1 << (bits - 1)) - 1))
            ns["KNONE"] = ns["KLOW"] if ns["IS_MAX"] else ns["KHIGH"]
            keys = keys_helpers(bits)
            ns["block_keys"] = keys.block_keys
            ns["first_index"] = keys.first_index
            ns["ABLK"] = ARG_BLOCK_BYTES // self.dtypes[0].itemsize
            from hrarray._kernels._cpu_bits import arg_keys_max, arg_keys_min, block_keys_vec

            ns["arg_keys"] = arg_keys_max if ns["IS_MAX"] else arg_keys_min
            ns["block_keys_vec"] = block_keys_vec
            from hrarray._kernels import _cpu_bits

            ns["strip"] = getattr(_cpu_bits, "strip_" + ("nan" if decl.meta.get("skipnan") else "")
                                  + ("argmax" if ns["IS_MAX"] else "argmin"))
            ns["SW"] = 16  # float32 lanes of the strips (_widened_arg: float32 only)
        return cg.import_module(self.path, ns)

    def names(self):
        """The kernel's functions by name, each once (chunks_1d_s only where
        it is a form of its own, _two_forms; else it is chunks_1d)."""
        return [n for n in _FUNCTIONS if n != "chunks_1d_s" or self.two_forms]

    def functions(self):
        """The module's Numba dispatchers (empty while it is not imported)."""
        m = self._lazy.loaded
        return [] if m is None else [getattr(m, n) for n in self.names()]

    def scratch_for(self, fname: str, rows: int, m: int, vdt=None, adt=None) -> list:
        """The scratch arrays of kernel function ``fname`` (see _scratch), with
        ``rows`` rows (one per worker)."""
        key = (fname, rows, m, vdt, adt)
        if rows == 1 and m > 1:
            # One worker: the calling thread runs the whole call, so its
            # scratch can be kept per thread (a kernel call never re-enters)
            # and reused; building cache-line-aligned rows took ~2.5 us per
            # array, a third of a small 2-D reduction. At most 16 row widths.
            kept = self._tls.__dict__.setdefault("rows1", {})
            got = kept.get(key)
            if got is None:
                if len(kept) >= 16:
                    kept.clear()
                got = kept[key] = self._scratch_new(key, fname, rows, m, vdt, adt)
            return got
        return self._scratch_new(key, fname, rows, m, vdt, adt)

    def _scratch_new(self, key, fname, rows, m, vdt, adt) -> list:
        specs = self._specs.get(key)
        if specs is None:
            # resolved once per kernel and shape (building them per call:
            # 1.6 us, measured; the one-chunk 1-D path skips this altogether)
            sub = {"c": rows, "m": m}
            dts = {"values": vdt, "aux": adt}
            specs = [(tuple(sub.get(d, d) for d in dims), dts[dt] if isinstance(dt, str) else dt)
                     for _, dt, dims in self.scratch[fname]]
            if len(self._specs) < 1024:  # bounded: one entry per row width m
                self._specs[key] = specs
        # rows of m (2-D kernels' accumulators and stacks): cache-line aligned
        return [worker_rows(shape, dt) if len(shape) > 1 and shape[-1] == m > 1
                else np.empty(shape, dt) for shape, dt in specs]

    def run(self, values, offsets, out, fill, use_fill, aux=None, serial=None):
        """Reduce ``values`` (1-D, or 2-D rows) by validated int64/int32 ``offsets``.

        ``serial``: ``chunking(offsets, 1)``, made once for many 1-D calls over
        the same offsets (``_by_columns``), whose chunks this thread runs alone.
        """
        nseg = offsets.shape[0] - 1
        if nseg == 0:
            return out
        two_d = values.ndim == 2
        m = values.shape[1] if two_d else 1
        if two_d:
            if (values.strides[0] == values.itemsize and m > 1
                    and values.shape[0] >= COLUMNS_MIN_ROWS and not values.flags.c_contiguous):
                return self._by_columns(values, offsets, out, fill, use_fill, aux)
            values = _rows_view(values)
        parallel, bi, bj = chunking(offsets, m) if serial is None else serial
        nchunks = bi.shape[0] - 1
        adt = None if aux is None else aux.dtype
        if two_d:
            chunk, fix, cname, fname = self.chunks_2d, self.fixup_2d, "chunks_2d", "fixup_2d"
        else:
            # the same test as the kernel's own before it had two forms: a
            # unit-stride form given other strides would read wrong memory.
            # Empty values (NumPy gives them stride 0) read nothing: the unit
            # form, which a first call has likely compiled already (the
            # strided form was one more compile, 2-3 s, for no work).
            unit = values.shape[0] == 0 or (values.strides[0] == values.itemsize and (
                aux is None or aux.strides[0] == aux.itemsize))
            chunk = self.chunks_1d if unit else self.chunks_1d_s
            fix, cname, fname = self.fixup_1d, "chunks_1d", "fixup_1d"
        if nchunks == 1 and not two_d:
            # A small call's scratch, kept by the calling thread: its 3-4
            # allocations were ~2 us of a ~12 us reduction. Per thread, so
            # concurrent callers never share it; a kernel call never re-enters.
            key = (values.dtype, adt)
            tl = self._tls.__dict__
            got = tl.get(key)
            if got is None:
                got = tl[key] = (
                    tuple(np.empty(1, dt) for dt in self.states_1d),
                    self.scratch_for(cname, 1, 1, values.dtype, adt))
            scratch, work = got
        else:
            shape = (nchunks, m) if two_d else nchunks
            # every chunk's head states, then its tail states
            scratch = tuple(np.empty(shape, dt)
                            for dt in (self.states_2d if two_d else self.states_1d))
            work = self.scratch_for(cname, 1 if serial else workers(nchunks), m,
                                    values.dtype, adt)
        if self.decl.aux:
            args = (values, aux, offsets, bi, bj, out, fill, use_fill, *scratch, *work)
            short = (values.dtype, values.ndim, values.flags.num, aux.dtype, aux.ndim,
                     aux.flags.num, offsets.dtype, offsets.flags.num, type(fill), out.dtype,
                     out.ndim, out.flags.num)
        else:
            args = (values, offsets, bi, bj, out, fill, use_fill, *scratch, *work)
            short = (values.dtype, values.ndim, values.flags.num, offsets.dtype,
                     offsets.flags.num, type(fill), out.dtype, out.ndim, out.flags.num)
        # the other arguments are made here (C-contiguous, of the kernel's
        # types): with the given ones' types, the short key fixes the type of
        # every argument (native.resolve)
        fn = chunk.resolve(short, (0, 1, 0, *args))
        if serial is None:
            launch(fn, nchunks, *args, row=True)
        else:
            fn(0, nchunks, 0, *args)
        if parallel:
            fargs = (offsets, bi, bj, out, fill, use_fill, *scratch,
                     *self.scratch_for(fname, 1, m))
            fix.resolve(short, fargs)(*fargs)
        return out

    def _by_columns(self, values, offsets, out, fill, use_fill, aux):
        """2-D ``values`` whose columns are contiguous (``strides[0]`` one
        item: Fortran order, a transpose), column by column through the 1-D
        kernel, each column's results gathered in one ``(nseg,)`` scratch
        and copied into ``out``'s column (extra memory: one result column).

        The row kernel reads such values with a column stride of a whole
        column: nothing vectorises, every row touches ``m`` cache lines.
        25M float32 as a Fortran-order (n, 32), 1 thread: see
        bench/RESULTS.md Run 35. Each column's result is what the 1-D kernel
        gives for it (sums round as 1-D sums do, within the same bound).

        Columns are shared out to the threads, each column's chunks run by
        one (the chunks are the 1-D call's, a function of the data only, so
        results do not depend on the thread count): every column cut into
        chunks run in parallel paid the pool's hand-off per column, and
        float32 sum over 64 columns took 1.4x the row kernel's time on 2
        threads. With fewer columns than threads, each column in turn uses
        them all.
        """
        m = values.shape[1]
        threads = _num_threads()
        nw = min(m, threads) if values.shape[0] * m >= PARALLEL_MIN_WORK else 1
        sched = chunking(offsets, 1) if nw > 1 and m >= threads else None

        def columns(c0, c1):
            col = np.empty(out.shape[0], out.dtype)
            for c in range(c0, c1):
                self.run(values[:, c], offsets, col, fill, use_fill, aux, serial=sched)
                out[:, c] = col

        if sched is None:
            columns(0, m)
            return out
        cut = [(w * m) // nw for w in range(nw + 1)]
        pool = _get_pool(nw - 1)
        futures = [pool.submit(columns, cut[w], cut[w + 1]) for w in range(1, nw)]
        try:
            columns(cut[0], cut[1])
        finally:
            for f in futures:
                f.result()
        return out


def _rows_view(values: np.ndarray) -> np.ndarray:
    """2-D ``values`` whose rows are unit-stride but spaced wider than a row
    (``a[:, :32]`` of a wider ``a``) as a C-contiguous view ``(n, pitch)``
    of the same memory, of which the kernels read the first ``m`` columns
    (their ``m`` is the result's width); others as they are.

    Numba compiles a non-contiguous array with run-time strides, and LLVM
    vectorises no loop across columns of unknown stride: a[:, :32] of a
    float32 (n, 64) array took 3.4x (sum) to 5x (logsumexp) the time of a
    contiguous copy of it, 1 thread. The view is the contiguous layout's
    own code (the same signature, the same results). Its last row reaches
    ``pitch - m`` elements past the array's end, memory nothing reads.
    """
    n, m = values.shape
    isz = values.itemsize
    s0, s1 = values.strides
    if values.flags.c_contiguous or n < 2 or s1 != isz or s0 % isz or s0 < m * isz:
        return values
    return np.lib.stride_tricks.as_strided(values, (n, s0 // isz), (s0, isz))


def get_kernel(decl: Decl) -> CpuKernel:
    """The kernel of a declaration (generated once per declaration key)."""
    k = _compiled.get(decl.key)
    if k is None:
        with _compiled_lock:
            k = _compiled.get(decl.key)
            if k is None:
                k = CpuKernel(decl)
                _compiled[decl.key] = k
    return k
