"""Bit-level and LLVM vector-IR helpers for the CPU kernels.

LLVM does not vectorise a floating-point ``select`` max reduction as Numba
emits it, but it does vectorise an integer one. A float's bits, with the
magnitude bits flipped for negative numbers, order exactly like the float
(for non-NaN values), so the max of the keys is the key of the max.

The ``masked_*8`` steps reduce a 1-D segment of 0-8 elements in one
branch-free vector step (float and integer sums, nansum, var, max/min and
argmax/argmin): Numba
compiles the same written out as scalar selects, one lane after another.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

_INT_OF = {types.float32: types.int32, types.float64: types.int64}
_FLOAT_OF = {types.int32: types.float32, types.int64: types.float64}


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM use 512-bit vectors in the function that calls this.

    LLVM tunes Intel's AVX-512 server cores with ``prefer-256-bit``: its loop
    vectoriser stops at 256 bits, and 512-bit vector types of a function
    that does not ask for them are split in two. Numba fixes the target's
    features once per process (``NUMBA_CPU_FEATURES``); the LLVM function
    attributes ``prefer-vector-width`` and ``min-legal-vector-width`` set
    here make the choice for one function instead. On a CPU without AVX-512
    they change nothing (vectors stay the target's widest legal ones). Call
    it first thing in a kernel's body; it emits no code.

    Used only where it measured faster (bench/RESULTS.md, Runs 26 and 28), in
    kernels bound by a polynomial ``exp`` per element: the 2-D logsumexp
    column sums (``lse_rows_sum``; 25M float32 as (n, 64), 2 threads,
    19.1-19.6 -> 15.9-16.9 ms), the transforms' map (softmax: 0.75-0.98x the
    time), for float32 values only attention_pool's 2-D row kernel
    (0.91-0.96x; float64 took 1.12x: ``wide_vectors_if_float32``), and the 1-D
    logsumexp block ``lse_block`` once its max no longer ran as one scalar
    chain (Run 28; with that chain it had taken 1.08-1.10x). Not in the
    reduction kernels, bound by memory and per-segment branches (1-D:
    0.94-1.04x; float64 2-D up to 1.17x), nor in ``pool_block`` (0.93-1.13x).
    """
    def codegen(context, builder, sig, args):
        _wide(builder)
        return context.get_dummy_value()

    return types.none(), codegen


def _wide(builder):
    attrs = builder.function.attributes
    # string attributes ("key"="value"): llvmlite's add() takes only its list
    # of keyword attributes; the set itself holds any text
    set.add(attrs, '"prefer-vector-width"="512"')
    set.add(attrs, '"min-legal-vector-width"="512"')


@intrinsic
def wide_vectors_if_float32(typingctx, values):
    """``wide_vectors()`` where ``values`` holds float32, else nothing: for
    attention_pool's 2-D row kernel, whose float32 signatures gained from
    512-bit vectors and float64 ones lost (bench/RESULTS.md, Run 26)."""
    if not isinstance(values, types.Array):
        return None

    def codegen(context, builder, sig, args):
        if sig.args[0].dtype == types.float32:
            _wide(builder)
        return context.get_dummy_value()

    return types.none(values), codegen


@intrinsic
def bitcast_to_int(typingctx, x):
    rt = _INT_OF.get(x)
    if rt is None:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(sig.return_type))

    return rt(x), codegen


@intrinsic
def bitcast_to_float(typingctx, x):
    rt = _FLOAT_OF.get(x)
    if rt is None:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(sig.return_type))

    return rt(x), codegen


@intrinsic
def select(typingctx, c, a, b):
    """``a if c else b`` as one LLVM ``select``, no branch.

    Numba lowers a conditional expression to two branches, whose arms LLVM
    may treat apart. The 2-D extremes' one pass and float32 argmax's narrow
    pass (cpu's fold_rows) fold two rows into a column's state with two of
    these before its one store.
    (A store of "the value just loaded unless the row wins", ``s[i] = v if c
    else s[i]``, becomes a masked store, AVX2's ``vmaskmovps``, slow on AMD
    Zen 3, with or without this select: 2-D float32 max ran at 0.4x sum's
    speed. Two rows per store avoid that form.)
    """
    if not isinstance(c, types.Boolean) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.select(args[0], args[1], args[2])

    return a(c, a, b), codegen


def _prefetch_codegen(context, builder, sig, args):
    # llvm.prefetch(address, rw=0 (read), locality=3 (keep in all cache
    # levels), cache type=1 (data)). A prefetch never faults, but callers
    # still keep the index inside the array.
    from llvmlite import ir
    from numba.core import cgutils

    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    idx = [
        context.cast(builder, v, t, types.intp)
        for v, t in zip(args[1:], sig.args[1:], strict=True)
    ]
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
    builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
    return context.get_dummy_value()


@intrinsic
def prefetch(typingctx, ary, i):
    """Software prefetch of ``ary[i]`` (1-D): the hardware prefetcher alone
    left a float64-accumulating read of float32 values at 0.6-0.7 of a
    float32 one; a prefetch 8 KiB ahead closed the gap (measured 9 -> 12 GB/s
    single thread, 25 -> 41 GB/s on 2 threads, 25M float32)."""
    if not isinstance(ary, types.Array) or ary.ndim != 1 or not isinstance(i, types.Integer):
        return None
    return types.none(ary, i), _prefetch_codegen


@intrinsic
def prefetch2(typingctx, ary, i, j):
    """Software prefetch of ``ary[i, j]`` (2-D)."""
    if (
        not isinstance(ary, types.Array)
        or ary.ndim != 2
        or not isinstance(i, types.Integer)
        or not isinstance(j, types.Integer)
    ):
        return None
    return types.none(ary, i, j), _prefetch_codegen


def _splat(builder, x, vt):
    """A vector of type ``vt`` whose every lane is ``x``."""
    from llvmlite import ir

    i32 = ir.IntType(32)
    return builder.shuffle_vector(
        builder.insert_element(ir.Constant(vt, ir.Undefined), x, i32(0)),
        ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(i32, vt.count), [0] * vt.count))


def _takes_ir(builder, is_max: bool, skip: bool, v, b):
    """Lane by lane, whether ``v`` replaces the best so far ``b`` (float
    vectors): strictly better (neither NaN) or, unless ``skip``, ``v`` NaN,
    never over a NaN ``b`` (the first NaN stays); ``skip`` (the nan forms):
    strictly better, or over a NaN ``b`` (which holds nothing yet)."""
    cmp = ">" if is_max else "<"
    if skip:
        return builder.or_(builder.fcmp_ordered(cmp, v, b), builder.fcmp_unordered("uno", b, b))
    return builder.and_(builder.fcmp_unordered(cmp, v, b), builder.fcmp_ordered("ord", b, b))


def _arg_keys(is_max: bool, index: bool = True):
    """One pass over a contiguous float block: its largest and smallest order
    keys and the first position of the extreme one (the max's for argmax, the
    min's for argmin).

    LLVM does not vectorise a reduction that carries an index along with its
    extreme (the two depend on one compare), so argmax/argmin searched the
    block a second time for the first element equal to the extreme (after
    the key pass, ``first_index``). Here the loop is written in LLVM vector
    IR: per lane a key extreme and its position (strictly better replaces:
    a lane sees its positions in increasing order), then the extreme over the
    lanes and the least position among the lanes that hold it. The block's
    last ``W`` elements are read once more for a length that is not a
    multiple of ``W`` (no remainder loop; a position seen twice is the same
    position, with the same key, both times). Uniform float32 segments of ~100
    elements, one thread: 9.1-9.5 ms for the two passes, 6.2-6.3 ms here
    (max's key pass alone: 6.1-6.2).

    -0.0 and 0.0 count as equal (their keys differ); a NaN's key is its own.
    ``values`` 1-D float32 or float64; the caller guarantees that its elements
    ``ub .. ub + nt - 1`` are contiguous in memory (unit stride) and ``nt >=
    16``. Returns ``(hi key, lo key, position)``; keys as ``_key`` makes them
    (NaNs lie above +inf's or below -inf's key; the caller checks).

    ``index=False``: the key pass alone, ``(hi key, lo key)``, for max/min
    (whose result is the extreme's own float: -0.0 keeps its key below
    0.0's). Float32 max over ~100-element segments, 2 threads: 3.00-3.05 ms
    through LLVM's vectorised key loop (``block_keys``), 2.26-2.32 here.
    """

    def typer(typingctx, values, ub, nt):
        if not isinstance(values, types.Array) or values.ndim != 1:
            return None
        if not isinstance(ub, types.Integer) or not isinstance(nt, types.Integer):
            return None
        ity = _INT_OF.get(values.dtype)
        if ity is None:
            return None
        if not index:
            return types.UniTuple(ity, 2)(values, ub, nt), _arg_keys_codegen(is_max, False)
        return types.Tuple((ity, ity, types.int64))(values, ub, nt), _arg_keys_codegen(is_max, True)

    name = ("arg_keys_" if index else "block_keys_") + ("max" if is_max else "min")
    typer.__name__ = typer.__qualname__ = name
    return intrinsic(typer)


def _arg_keys_codegen(is_max: bool, index: bool):
    def codegen(context, builder, sig, args):
        from llvmlite import ir
        from numba.core import cgutils

        aryty = sig.args[0]
        fty = aryty.dtype
        bits = fty.bitwidth
        w = 512 // bits  # 16 float32 or 8 float64 lanes: one AVX-512 register
        ary = context.make_array(aryty)(context, builder, args[0])
        ub = context.cast(builder, args[1], sig.args[1], types.intp)
        nt = context.cast(builder, args[2], sig.args[2], types.intp)
        it = ir.IntType(bits)
        i64 = ir.IntType(64)
        vi = ir.VectorType(it, w)
        vf = ir.VectorType(context.get_value_type(fty), w)
        top = (1 << (bits - 1)) - 1

        def splat(c):
            return ir.Constant(vi, [c] * w)

        p0 = cgutils.get_item_pointer(context, builder, aryty, ary, [ub], wraparound=False)
        # loop-carried vectors as allocas: LLVM's SROA makes them registers
        hi_a = cgutils.alloca_once_value(builder, splat(-top - 1))
        lo_a = cgutils.alloca_once_value(builder, splat(top))
        ix_a = cgutils.alloca_once_value(builder, splat(0))
        lanes = ir.Constant(vi, list(range(w)))

        def step(start):
            p = builder.bitcast(builder.gep(p0, [start]), vf.as_pointer())
            # align=1: values may be unaligned (read in place, API.md);
            # x86's unaligned vector loads cost nothing extra on aligned data
            k = builder.bitcast(builder.load(p, align=1), vi)
            key = builder.xor(k, builder.and_(builder.ashr(k, splat(bits - 1)), splat(top)))
            # -0.0's key (-1) as +0.0's (0): the two compare equal, and the
            # first of them is the one to find
            if index:
                key = builder.select(builder.icmp_signed("==", key, splat(-1)), splat(0), key)
            pos = builder.add(_splat(builder, builder.trunc(start, it) if bits < 64 else start, vi),
                              lanes)
            hi, lo, ix = builder.load(hi_a), builder.load(lo_a), builder.load(ix_a)
            up = builder.icmp_signed(">", key, hi)
            down = builder.icmp_signed("<", key, lo)
            builder.store(builder.select(up, key, hi), hi_a)
            builder.store(builder.select(down, key, lo), lo_a)
            if index:
                builder.store(builder.select(up if is_max else down, pos, ix), ix_a)

        with cgutils.for_range(builder, builder.udiv(nt, i64(w))) as loop:
            step(builder.mul(loop.index, i64(w)))
        step(builder.sub(nt, i64(w)))

        def reduce(name, v):
            fnty = ir.FunctionType(it, [vi])
            fn = cgutils.get_or_insert_function(
                builder.module, fnty, f"llvm.vector.reduce.{name}.v{w}i{bits}")
            return builder.call(fn, [v])

        hi, lo, ix = builder.load(hi_a), builder.load(lo_a), builder.load(ix_a)
        khi = reduce("smax", hi)
        klo = reduce("smin", lo)
        if not index:
            return context.make_tuple(builder, sig.return_type, [khi, klo])
        held = builder.icmp_signed("==", hi if is_max else lo,
                                   _splat(builder, khi if is_max else klo, vi))
        first = reduce("smin", builder.select(held, ix, splat(top)))
        first = builder.sext(first, i64) if bits < 64 else first
        return context.make_tuple(builder, sig.return_type, [khi, klo, first])

    return codegen


arg_keys_max = _arg_keys(True)
arg_keys_min = _arg_keys(False)
# the key pass alone (max/min): the keys as they are (-0.0 below 0.0)
block_keys_vec = _arg_keys(True, index=False)


@intrinsic
def block_sum(typingctx, values, ub, nt):
    """The float64 sum of a contiguous float32/float64 block, in LLVM vector IR.

    16 float64 lanes: whole vectors of 16 elements, then the block's last 16
    elements once more with the lanes already summed zeroed (so the last
    ``nt % 16`` elements are added once; nothing outside the block is read),
    then the lanes summed as a fixed tree (8 + 8, 4 + 4, 2 + 2, 1 + 1: the
    same order on every target). No remainder loop: LLVM's vectorised loop
    had one or two whose exits were mispredicted per block. NaN and inf
    propagate as in any sum (a zeroed lane adds 0.0, not its element). The
    caller guarantees unit stride for ``values[ub:ub + nt]`` and ``nt >=
    16``.
    """
    if not isinstance(values, types.Array) or values.ndim != 1:
        return None
    if values.dtype not in (types.float32, types.float64):
        return None
    if not isinstance(ub, types.Integer) or not isinstance(nt, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        from llvmlite import ir
        from numba.core import cgutils

        aryty = sig.args[0]
        fty = aryty.dtype
        w = 16
        ary = context.make_array(aryty)(context, builder, args[0])
        ub = context.cast(builder, args[1], sig.args[1], types.intp)
        nt = context.cast(builder, args[2], sig.args[2], types.intp)
        i64 = ir.IntType(64)
        f64 = ir.DoubleType()
        ft = context.get_value_type(fty)
        vf = ir.VectorType(ft, w)
        vd = ir.VectorType(f64, w)
        p0 = cgutils.get_item_pointer(context, builder, aryty, ary, [ub], wraparound=False)
        acc_a = cgutils.alloca_once_value(builder, ir.Constant(vd, [0.0] * w))

        def widen(v):
            return builder.fpext(v, vd) if fty == types.float32 else v

        ng = builder.udiv(nt, i64(w))
        with cgutils.for_range(builder, ng) as loop:
            p = builder.gep(p0, [builder.mul(loop.index, i64(w))])
            v = builder.load(builder.bitcast(p, vf.as_pointer()), align=1)
            builder.store(builder.fadd(builder.load(acc_a), widen(v)), acc_a)
        tail = _block_tail(builder, p0, nt, vf)
        return _tree_sum(builder, builder.fadd(builder.load(acc_a), widen(tail)))

    return types.float64(values, ub, nt), codegen


def _block_tail(builder, p0, nt, vt):
    """The last ``w`` elements of the block at ``p0`` (``nt >= w`` of them) as a
    vector of type ``vt`` (``w`` lanes), the lanes the block's whole vectors
    already summed (below ``w - nt % w``) zeroed: a plain in-bounds load (a
    masked-load intrinsic's name depends on the LLVM version's pointers)."""
    from llvmlite import ir

    keep, tail = _block_tail_keep(builder, p0, nt, vt)
    return builder.select(keep, tail, ir.Constant(vt, [0.0] * vt.count))


def _block_tail_keep(builder, p0, nt, vt):
    """``_block_tail``'s ``(keep, loaded)``: the lanes not yet summed (an
    ``<w x i1>``) and the last ``w`` elements as loaded."""
    from llvmlite import ir

    w = vt.count
    i32, i64 = ir.IntType(32), ir.IntType(64)
    rem = builder.trunc(builder.urem(nt, i64(w)), i32)
    vi = ir.VectorType(i32, w)
    first_new = builder.sub(i32(w), rem)
    keep = builder.icmp_unsigned(">=", ir.Constant(vi, list(range(w))),
                                 _splat(builder, first_new, vi))
    ptail = builder.bitcast(builder.gep(p0, [builder.sub(nt, i64(w))]), vt.as_pointer())
    return keep, builder.load(ptail, align=1)


def _two_sum(builder, a, b):
    """Knuth's TwoSum of scalars or vectors: ``(s, e)`` with ``s = fl(a + b)``
    and ``a + b == s + e`` exactly (finite operands, no overflow; otherwise
    ``e`` is NaN or inf, which the caller discards). Six additions, each with
    a flag (arcp: no effect on an addition) so that Numba's fastmath pass
    gives none of them the kernel's reassoc, under which LLVM folds ``e`` to 0."""

    def add(x, y):
        return builder.fadd(x, y, flags=("arcp",))

    def sub(x, y):
        return builder.fsub(x, y, flags=("arcp",))

    s = add(a, b)
    bv = sub(s, a)
    e = add(sub(a, sub(s, bv)), sub(b, bv))
    return s, e


@intrinsic
def two_sum(typingctx, a, b):
    """``(s, e)``: ``s = a + b`` rounded, ``e`` its rounding error (float64;
    ``_two_sum``)."""
    if a != types.float64 or b != types.float64:
        return None

    def codegen(context, builder, sig, args):
        s, e = _two_sum(builder, args[0], args[1])
        return context.make_tuple(builder, sig.return_type, [s, e])

    return types.UniTuple(types.float64, 2)(a, b), codegen


def _block_sum_c(skip: bool):
    """block_sum_c, or (``skip``) block_nansum_c."""

    def typer(typingctx, values, ub, nt):
        if not isinstance(values, types.Array) or values.ndim != 1 or (
                values.dtype != types.float64):
            return None
        if not isinstance(ub, types.Integer) or not isinstance(nt, types.Integer):
            return None
        f64 = types.float64
        out = types.Tuple((f64, types.int64, f64)) if skip else types.UniTuple(f64, 2)
        return out(values, ub, nt), codegen

    def codegen(context, builder, sig, args):
        from llvmlite import ir
        from numba.core import cgutils

        aryty = sig.args[0]
        w = 16
        ary = context.make_array(aryty)(context, builder, args[0])
        ub = context.cast(builder, args[1], sig.args[1], types.intp)
        nt = context.cast(builder, args[2], sig.args[2], types.intp)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        vd = ir.VectorType(ir.DoubleType(), w)
        vi = ir.VectorType(i64, w)
        zero = ir.Constant(vd, [0.0] * w)
        p0 = cgutils.get_item_pointer(context, builder, aryty, ary, [ub], wraparound=False)
        acc_a = cgutils.alloca_once_value(builder, zero)
        err_a = cgutils.alloca_once_value(builder, zero)
        # (skip) the counts per lane: a lane kept subtracts its mask's -1 (a
        # compare result as it is, where a popcount of the mask needed it
        # moved out of the vector registers every 16 elements)
        cnt_a = cgutils.alloca_once_value(builder, ir.Constant(vi, [0] * w)) if skip else None

        def add_in(keep, v):
            # keep: the lanes to add (None: all); skip: NaN lanes are not
            if skip:
                ok = builder.fcmp_ordered("ord", v, v)
                keep = ok if keep is None else builder.and_(keep, ok)
                builder.store(builder.sub(builder.load(cnt_a), builder.sext(keep, vi)), cnt_a)
            if keep is not None:
                v = builder.select(keep, v, zero)
            s, e = _two_sum(builder, builder.load(acc_a), v)
            builder.store(s, acc_a)
            builder.store(builder.fadd(builder.load(err_a), e, flags=("arcp",)), err_a)

        with cgutils.for_range(builder, builder.udiv(nt, i64(w))) as loop:
            p = builder.gep(p0, [builder.mul(loop.index, i64(w))])
            add_in(None, builder.load(builder.bitcast(p, vd.as_pointer()), align=1))
        # the tail as block_sum's (a zeroed lane adds 0.0 exactly: error 0)
        add_in(*_block_tail_keep(builder, p0, nt, vd))
        # the lanes as _tree_sum's tree, each level's errors kept
        acc, err = builder.load(acc_a), builder.load(err_a)
        while acc.type.count > 1:
            acc, e = _two_sum(builder, *_halves(builder, acc))
            err = builder.fadd(builder.fadd(*_halves(builder, err), flags=("arcp",)), e,
                               flags=("arcp",))
        s = builder.extract_element(acc, i32(0))
        c = builder.extract_element(err, i32(0))
        if not skip:
            return context.make_tuple(builder, sig.return_type, [s, c])
        n = _tree_sum(builder, builder.load(cnt_a))
        return context.make_tuple(builder, sig.return_type, [s, n, c])

    return intrinsic(typer)


# A contiguous float64 block's sum as ``(s, c)``: ``s`` as ``block_sum`` adds
# it (16 lanes, the block's last 16 elements once more with the lanes already
# summed zeroed, then the lanes as a fixed tree), ``c`` the sum of every one
# of those additions' rounding errors (``_two_sum``), so ``s + c`` is the
# block's exact sum but for ``c``'s own few roundings (of errors ~2**-53 the
# size of the partial sums). ``c`` is NaN or inf where a sum met inf or NaN or
# overflowed (then ``s`` is inf or NaN, and ``c`` is discarded). The caller
# guarantees unit stride and ``nt >= 16``.
block_sum_c = _block_sum_c(False)
# block_sum_c of the block's elements that are not NaN, as ``(s, n, c)``: NaN
# lanes are zeroed before each addition (so the same additions in the same
# order as block_sum_c of the block with its NaN replaced by 0.0) and not
# counted; ``n`` the count of the others (nansum/nanmean's state).
block_nansum_c = _block_sum_c(True)


def _tree_sum(builder, acc):
    """The lanes of vector ``acc`` added as a fixed tree: halves lane by lane
    (8 + 8, 4 + 4, 2 + 2, 1 + 1 for 16), the same order on every target
    (integer lanes: addition modulo 2**bits, exact in any order)."""
    from llvmlite import ir

    add = builder.add if isinstance(acc.type.element, ir.IntType) else builder.fadd
    while acc.type.count > 1:
        acc = add(*_halves(builder, acc))
    return builder.extract_element(acc, ir.IntType(32)(0))


def _halves(builder, v):
    """The low and the high half of vector ``v``'s lanes, as two vectors."""
    from llvmlite import ir

    k = v.type.count // 2
    half = ir.VectorType(ir.IntType(32), k)
    return (builder.shuffle_vector(v, v, ir.Constant(half, list(range(k)))),
            builder.shuffle_vector(v, v, ir.Constant(half, list(range(k, 2 * k)))))


def _step_args(values, ub, n, dtypes=(types.float32, types.float64)) -> bool:
    """Whether a masked_*8 step takes these argument types: 1-D values of
    ``dtypes``, integer ``ub`` and ``n``."""
    return (isinstance(values, types.Array) and values.ndim == 1 and values.dtype in dtypes
            and isinstance(ub, types.Integer) and isinstance(n, types.Integer))


def _step_prologue(context, builder, sig, args, strided: bool):
    """A masked_*8 step's ``(dtype, values[ub:ub + 8] as a vector, n as an
    intp, the lanes below n as an <8 x i1>)``."""
    from llvmlite import ir

    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    ub = context.cast(builder, args[1], sig.args[1], types.intp)
    n = context.cast(builder, args[2], sig.args[2], types.intp)
    vi = ir.VectorType(ir.IntType(32), 8)
    keep = builder.icmp_signed("<", ir.Constant(vi, list(range(8))),
                               _splat(builder, builder.trunc(n, ir.IntType(32)), vi))
    return aryty.dtype, _load8(context, builder, aryty, ary, ub, strided), n, keep


def _load8(context, builder, aryty, ary, ub, strided: bool):
    """``values[ub:ub + 8]`` as an LLVM vector: one load (unit stride), or
    element by element (``strided``: any stride; the same vector, so the same
    results)."""
    from llvmlite import ir
    from numba.core import cgutils

    i32, i64 = ir.IntType(32), ir.IntType(64)
    # (the element as stored: a boolean is a byte there)
    vf = ir.VectorType(context.get_data_type(aryty.dtype), 8)
    if not strided:
        p0 = cgutils.get_item_pointer(context, builder, aryty, ary, [ub], wraparound=False)
        return builder.load(builder.bitcast(p0, vf.as_pointer()), align=1)
    v = ir.Constant(vf, ir.Undefined)
    for t in range(8):
        p = cgutils.get_item_pointer(context, builder, aryty, ary, [builder.add(ub, i64(t))],
                                     wraparound=False)
        v = builder.insert_element(v, builder.load(p), i32(t))
    return v


def _masked_sum8(strided: bool, skip: bool = False):
    """masked_sum8, or (``strided``) its form for values of any stride;
    ``skip``: masked_nansum8."""

    def typer(typingctx, values, ub, n):
        if not _step_args(values, ub, n):
            return None
        if skip:
            return types.Tuple((types.float64, types.int64))(values, ub, n), codegen
        return types.float64(values, ub, n), codegen

    def codegen(context, builder, sig, args):
        from llvmlite import ir

        fty, v, _, keep = _step_prologue(context, builder, sig, args, strided)
        if skip:  # NaN lanes zeroed and not counted
            keep = builder.and_(keep, builder.fcmp_ordered("ord", v, v))
        v = builder.select(keep, v, ir.Constant(v.type, [0.0] * 8))
        vd = ir.VectorType(ir.DoubleType(), 8)
        total = _tree_sum(builder, builder.fpext(v, vd) if fty == types.float32 else v)
        if not skip:
            return total
        from numba.core import cgutils

        i8 = ir.IntType(8)
        ctpop = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i8, [i8]), "llvm.ctpop.i8")
        cnt = builder.zext(builder.call(ctpop, [builder.bitcast(keep, i8)]), ir.IntType(64))
        return context.make_tuple(builder, sig.return_type, (total, cnt))

    return intrinsic(typer)


# The float64 sum of the ``n`` (0 to 8) float32/float64 elements at
# ``values[ub:]``, in LLVM vector IR: 8 elements loaded, the lanes from ``n``
# on zeroed, widened to float64 and added as a fixed tree (4 + 4, 2 + 2,
# 1 + 1), the same order on every target and in both forms. No branch on
# ``n``: segments of 0-8 elements take this one step, where a 4-wide / 8-wide
# branch was mispredicted on mixed lengths. NaN and inf propagate as in any
# sum (a zeroed lane adds 0.0, not its element). The caller guarantees
# ``values[ub + 7]`` inside the array (what is read past the segment is
# discarded by the select). masked_sum8 loads the 8 as one vector (unit
# stride); masked_sum8_s element by element (any stride).
masked_sum8 = _masked_sum8(False)
masked_sum8_s = _masked_sum8(True)
# nansum/nanmean's state: the sum of the non-NaN elements among the ``n`` (the
# same tree, NaN lanes zeroed) and their count
masked_nansum8 = _masked_sum8(False, skip=True)
masked_nansum8_s = _masked_sum8(True, skip=True)


def _masked_isum8(strided: bool, unsigned: bool):
    """masked_isum8 / masked_usum8, or (``strided``) their form for values of
    any stride."""
    ints = (*sorted(types.integer_domain, key=str), types.boolean)
    out = types.uint64 if unsigned else types.int64

    def typer(typingctx, values, ub, n):
        if not _step_args(values, ub, n, ints):
            return None
        return out(values, ub, n), codegen

    def codegen(context, builder, sig, args):
        from llvmlite import ir

        fty, v, _, keep = _step_prologue(context, builder, sig, args, strided)
        vl = ir.VectorType(ir.IntType(64), 8)
        # each element as the accumulator takes it: sign-extended from a
        # signed type, zero-extended from an unsigned one or a boolean's byte
        if v.type.element.width < 64:
            signed = isinstance(fty, types.Integer) and fty.signed
            v = builder.sext(v, vl) if signed else builder.zext(v, vl)
        return _tree_sum(builder, builder.select(keep, v, ir.Constant(vl, [0] * 8)))

    return intrinsic(typer)


# The integer sum of the ``n`` (0 to 8) integer or boolean elements at
# ``values[ub:]`` in 64 bits, wrapping as the declaration's int64 (isum) or
# uint64 (usum) accumulator does, in LLVM vector IR: integer sums of segments
# of 0-8 elements in one step, as masked_sum8 for floats. Exact in any order.
masked_isum8 = _masked_isum8(False, False)
masked_isum8_s = _masked_isum8(True, False)
masked_usum8 = _masked_isum8(False, True)
masked_usum8_s = _masked_isum8(True, True)


def _masked_ext8(is_max: bool, skip: bool, strided: bool):
    """masked_ext8's forms: max or min, nan-skipping or not, strided or not."""

    def typer(typingctx, values, ub, n):
        if not _step_args(values, ub, n):
            return None
        return types.Tuple((values.dtype, types.int64))(values, ub, n), codegen

    def codegen(context, builder, sig, args):
        from llvmlite import ir

        i32, i64 = ir.IntType(32), ir.IntType(64)
        vl = ir.VectorType(i64, 8)
        _, v, _, keep = _step_prologue(context, builder, sig, args, strided)
        # lanes past the segment: copies of its first element (index 0)
        x = builder.select(keep, v, _splat(builder, builder.extract_element(v, i32(0)), v.type))
        ix = builder.select(keep, ir.Constant(vl, list(range(8))), ir.Constant(vl, [0] * 8))
        k = 8
        while k > 1:  # adjacent lanes: the earlier e (even), the later r (odd)
            k //= 2
            ev = ir.Constant(ir.VectorType(i32, k), list(range(0, 2 * k, 2)))
            od = ir.Constant(ir.VectorType(i32, k), list(range(1, 2 * k, 2)))
            e, r = builder.shuffle_vector(x, x, ev), builder.shuffle_vector(x, x, od)
            ei, ri = builder.shuffle_vector(ix, ix, ev), builder.shuffle_vector(ix, ix, od)
            tk = _takes_ir(builder, is_max, skip, r, e)  # the strips' rule
            x = builder.select(tk, r, e)
            ix = builder.select(tk, ri, ei)
        res = (builder.extract_element(x, i32(0)), builder.extract_element(ix, i32(0)))
        return context.make_tuple(builder, sig.return_type, res)

    return intrinsic(typer)


# The extreme of the ``n`` (1 to 8) float32/float64 elements at
# ``values[ub:]`` and its index (0-7), in LLVM vector IR: the segments of 1-D
# float max/min/argmax/argmin (and nan forms) of 0-8 elements, one step
# whatever the length (a 4-wide / 8-wide branch was mispredicted on mixed
# lengths). The lanes past the segment hold copies of its first element
# (index 0), which never beat the first element itself; adjacent lanes are
# merged as a tree (0-1, 2-3, ...; then pairs of pairs), the later replacing
# the earlier when strictly better or the first NaN (``skip``: when better or
# the earlier is NaN): the rule and tree of the scalar selects it replaced,
# so the first of equal extremes wins, -0.0 beside 0.0 included. ``n == 0``
# returns the first element: the caller substitutes the identity. The caller
# guarantees ``values[ub + 7]`` inside the array. Names: masked_<op>8, and
# masked_<op>8_s for values of any stride (element by element, same results).
masked_max8 = _masked_ext8(True, False, False)
masked_min8 = _masked_ext8(False, False, False)
masked_nanmax8 = _masked_ext8(True, True, False)
masked_nanmin8 = _masked_ext8(False, True, False)
masked_max8_s = _masked_ext8(True, False, True)
masked_min8_s = _masked_ext8(False, False, True)
masked_nanmax8_s = _masked_ext8(True, True, True)
masked_nanmin8_s = _masked_ext8(False, True, True)


def _strip_arg(is_max: bool, skip: bool = False):
    """Rows ``p .. q - 1`` of one strip of 2-D float32 values into a column
    state held in vector registers: argmax/argmin across rows.

    The 2-D narrow pass keeps each column's running best and its row in
    scratch arrays, loaded and stored for every row (LLVM cannot keep them in
    registers across a row loop whose width ``m`` it does not know): 16
    bytes of state moved per 4-byte element. Here one strip of 16 columns
    (one AVX-512 register) is loaded once, carried through the rows as
    vectors and stored once; the caller walks a few rows (a block in L1)
    strip by strip.

    A row replaces a column's best when it is strictly better or the first
    NaN (``ugt``/``ult`` and an ordered best: a NaN best stays), as the
    declaration's combine: the first NaN, else the first extreme; -0.0 and
    0.0 compare equal (the first stays). ``values`` 2-D with unit column
    stride (the caller checks), columns ``c .. c + 15`` inside the row;
    ``bm`` (float32) and ``ix`` (int32: the row of the best relative to the
    piece; ``jb`` is row ``p``'s) are 1-D and contiguous. A strip may
    overlap the one before it (the last strip of a width that is not a
    multiple of 16): rows seen twice by a column change nothing the second
    time. ``skip`` (nanargmax/nanargmin): a NaN never replaces the best and
    anything replaces a NaN best, which holds nothing yet.
    """

    def check(values, p, q, c, bm):
        return (
            isinstance(values, types.Array) and values.ndim == 2
            and values.dtype == types.float32
            and isinstance(bm, types.Array) and bm.ndim == 1 and bm.dtype == values.dtype
            and all(isinstance(t, types.Integer) for t in (p, q, c))
        )

    def typer(typingctx, values, p, q, c, bm, ix, jb):
        if not check(values, p, q, c, bm) or jb != types.int32:
            return None
        if not isinstance(ix, types.Array) or ix.ndim != 1 or ix.dtype != types.int32:
            return None
        return types.none(values, p, q, c, bm, ix, jb), _strip_codegen(is_max, skip)

    name = "strip_" + ("nan" if skip else "") + "arg" + ("max" if is_max else "min")
    typer.__name__ = typer.__qualname__ = name
    return intrinsic(typer)


def _strip_codegen(is_max: bool, skip: bool):
    def codegen(context, builder, sig, args):
        from llvmlite import ir
        from numba.core import cgutils

        aryty, bmty = sig.args[0], sig.args[4]
        w = 16
        i32 = ir.IntType(32)
        vf = ir.VectorType(ir.FloatType(), w)
        vi = ir.VectorType(i32, w)
        ary = context.make_array(aryty)(context, builder, args[0])
        p, q, c = (context.cast(builder, a, t, types.intp)
                   for a, t in zip(args[1:4], sig.args[1:4], strict=True))

        def vec_ptr(arrty, arr, vty):
            a = context.make_array(arrty)(context, builder, arr)
            ptr = cgutils.get_item_pointer(context, builder, arrty, a, [c], wraparound=False)
            return builder.bitcast(ptr, vty.as_pointer())

        # loop-carried vectors as allocas: LLVM's SROA makes them registers
        pbm = vec_ptr(bmty, args[4], vf)
        bm_a = cgutils.alloca_once_value(builder, builder.load(pbm, align=1))
        pix = vec_ptr(sig.args[5], args[5], vi)
        ix_a = cgutils.alloca_once_value(builder, builder.load(pix, align=1))
        jb = args[6]
        with cgutils.for_range(builder, builder.sub(q, p)) as loop:
            j = builder.add(p, loop.index)
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [j, c], wraparound=False)
            # align=1: values are read in place (API.md), any alignment
            v = builder.load(builder.bitcast(ptr, vf.as_pointer()), align=1)
            b = builder.load(bm_a)
            up = _takes_ir(builder, is_max, skip, v, b)
            builder.store(builder.select(up, v, b), bm_a)
            row = builder.add(jb, builder.trunc(loop.index, i32))
            builder.store(builder.select(up, _splat(builder, row, vi), builder.load(ix_a)), ix_a)
        builder.store(builder.load(bm_a), pbm, align=1)
        builder.store(builder.load(ix_a), pix, align=1)
        return context.get_dummy_value()

    return codegen


strip_argmax = _strip_arg(True)
strip_argmin = _strip_arg(False)
strip_nanargmax = _strip_arg(True, True)
strip_nanargmin = _strip_arg(False, True)


def _masked_var8(strided: bool):
    """masked_var8, or (``strided``) its form for values of any stride."""

    def typer(typingctx, values, ub, n, big):
        reals = tuple(t for t in types.real_domain | types.integer_domain if t != types.float16)
        if not _step_args(values, ub, n, (*reals, types.boolean)):
            return None
        if not isinstance(big, types.Float):
            return None
        f64, i64 = types.float64, types.int64
        sig = types.Tuple((types.boolean, i64, f64, f64, f64))(values, ub, n, big)
        return sig, codegen

    def codegen(context, builder, sig, args):
        from llvmlite import ir

        fty, v, n, keep = _step_prologue(context, builder, sig, args, strided)
        big = context.cast(builder, args[3], sig.args[3], types.float64)
        f64 = ir.DoubleType()
        vd = ir.VectorType(f64, 8)
        zero = ir.Constant(vd, [0.0] * 8)
        # as float64, as np.float64(v) converts
        if fty == types.float32:
            x = builder.fpext(v, vd)
        elif isinstance(fty, types.Float):
            x = v
        elif isinstance(fty, types.Integer) and fty.signed:
            x = builder.sitofp(v, vd)
        else:  # unsigned, boolean (a byte of 0 or 1)
            x = builder.uitofp(v, vd)
        # -big <= x <= big: finite, not NaN, within VAR_BIG (lanes past pass)
        bigv = _splat(builder, big, vd)
        fine = builder.and_(builder.fcmp_ordered("<=", x, bigv),
                            builder.fcmp_ordered(">=", x, builder.fneg(bigv)))
        fine = builder.or_(fine, builder.not_(keep))
        ok = builder.icmp_unsigned(
            "==", builder.bitcast(fine, ir.IntType(8)), ir.Constant(ir.IntType(8), 255))
        has = builder.icmp_signed(">", n, ir.Constant(n.type, 0))
        k0 = builder.select(has, builder.extract_element(x, ir.IntType(32)(0)),
                            ir.Constant(f64, 0.0))
        xk = builder.fsub(x, _splat(builder, k0, vd))
        s = _tree_sum(builder, builder.select(keep, xk, zero))
        fn = builder.sitofp(builder.select(has, n, ir.Constant(n.type, 1)), f64)
        c = builder.fdiv(s, fn)
        e = builder.select(keep, builder.fsub(xk, _splat(builder, c, vd)), zero)
        q = _tree_sum(builder, builder.fmul(e, e))
        r = _tree_sum(builder, e)
        m2 = builder.fsub(q, builder.fdiv(builder.fmul(r, r), fn))
        m2 = builder.select(builder.fcmp_ordered(">", m2, ir.Constant(f64, 0.0)), m2,
                            ir.Constant(f64, 0.0))
        cnt = context.cast(builder, n, types.intp, types.int64)
        return context.make_tuple(builder, sig.return_type, (ok, cnt, k0, s, m2))

    return intrinsic(typer)


# var/std's state (var_block's: count, shift k = the first element, sum of x -
# k, M2) for the ``n`` (0 to 8) elements at ``values[ub:]`` (any real dtype
# Numba stores, read as float64), with whether all lie within +-``big``
# (finite, not NaN), in LLVM vector IR: the two passes of the scalar steps it
# replaced (the shifted sum, its mean c, then the sums of (x - k) - c and of
# its square; M2 = q - r * r / n, not below 0) over 8 lanes at once, each sum
# a fixed tree (masked_sum8's), no regrouping of (x - k) - c. Where not all
# pass the caller runs the declaration. The caller guarantees ``values[ub +
# 7]`` inside the array.
masked_var8 = _masked_var8(False)
masked_var8_s = _masked_var8(True)


# ---------------------------------------------------------------- groups of 8 short segments
#
# Runs of segments of a few elements (characters per word, neighbours per
# node) are bound by the work per segment, not by memory: one masked_*8 step
# each (an offsets read, a vector load, a tree, a store, and for the
# extremes a mispredicted branch on empty ones). The group steps below take
# 8 such segments at once, segment t in lane t: lane t's j-th element comes
# from one AVX2 gather per j (``vgatherdps`` / ``vgatherdpd``, 32-bit
# indices from the group's first start), and the lanes hold the 8
# segments' trees side by side. They return the same bits as the masked_*8
# steps they stand in for (the same tree over the same lanes), so a
# segment's result does not depend on whether its neighbours let its group
# take this path (tested). Only where every one of the 8 segments has at
# most 4 elements (group_sum8, group_max8...) or 8 (group_max8w...; 8
# gathers and the whole tree) (``ok``); the caller runs the others one by
# one. Masked lanes read nothing, so no element outside a segment is read.
# Unit stride only (a kernel's strided form has no group step). On a target
# without AVX2 ``ok`` is a constant False and the caller's group code is
# dead (LLVM's generic masked gather scalarises to a branch per lane,
# slower than the steps). 2.5e7 values, 2 threads (bench/RESULTS.md Run 47): segments of
# 0-4 elements, float32 argmax 58.9 -> 33.9 ms, max 46.7 -> 29.8, float64
# argmax 62.7 -> 39.4, max 55.9 -> 39.7, sum 40.7 -> 34.5; words of 1 +
# Poisson(4) characters, 1 thread, max/argmax 0.86-0.92x the time. Not for
# float32 sums (their one-segment step was quicker: 50 ms against the
# group's 59, 1 thread) nor means (a division per segment; the group took
# 1.2-1.3x).
GROUP = 8
GROUP_MAX = 8


def _avx2(context) -> bool:
    """Whether the target machine Numba compiles for has AVX2: the
    features it created the target machine with (NUMBA_CPU_FEATURES, or the
    host's), on x86-64."""
    import llvmlite.binding as llvm
    from numba.core import config

    feats = getattr(context.codegen(), "_tm_features", None)
    if feats is None:
        feats = config.CPU_FEATURES
    if feats is None:
        feats = llvm.get_host_cpu_features().flatten()
    triple = llvm.get_process_triple()
    return triple.startswith(("x86_64", "amd64")) and "+avx2" in feats.split(",")


def _group_args(values, offsets, k) -> bool:
    # (layout "C": the gathers step by the item size, so a strided array must
    # fail to type rather than read the wrong elements)
    return (isinstance(values, types.Array) and values.ndim == 1 and values.layout == "C"
            and values.dtype in (types.float32, types.float64)
            and isinstance(offsets, types.Array) and offsets.ndim == 1
            and isinstance(offsets.dtype, types.Integer) and isinstance(k, types.Integer))


def _group_gather(context, builder, sig, args, width: int):
    """``(ok, short, lengths as <8 x i32>, [g_0 .. g_7])``: lane t of ``g_j``
    holds ``values[offsets[k + t] + j]`` where ``j`` is below segment ``k +
    t``'s length, else the passthrough 0.0; gathered only where ``ok`` (all
    8 lengths at most ``width``, 4 or 8), ``g_4 .. g_7`` only where some
    length exceeds 4 (not ``short``; else they are 0.0 like every lane past
    a segment). The caller has checked ``_avx2``."""
    from llvmlite import ir
    from numba.core import cgutils

    vty, oty, kty = sig.args[:3]
    va = context.make_array(vty)(context, builder, args[0])
    oa = context.make_array(oty)(context, builder, args[1])
    k = context.cast(builder, args[2], kty, types.intp)
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    v8l, v8i = ir.VectorType(i64, 8), ir.VectorType(i32, 8)
    # the 9 offsets, element by element (offsets may be int32 or strided)
    o = []
    for t in range(GROUP + 1):
        p = cgutils.get_item_pointer(context, builder, oty, oa, [builder.add(k, i64(t))],
                                     wraparound=False)
        o.append(context.cast(builder, builder.load(p), oty.dtype, types.int64))
    o0 = ir.Constant(v8l, ir.Undefined)
    o1 = ir.Constant(v8l, ir.Undefined)
    for t in range(GROUP):
        o0 = builder.insert_element(o0, o[t], i32(t))
        o1 = builder.insert_element(o1, o[t + 1], i32(t))
    lens = builder.sub(o1, o0)

    def all_within(m):
        fits = builder.icmp_unsigned("<=", lens, ir.Constant(v8l, [m] * GROUP))
        return builder.icmp_unsigned("==", builder.bitcast(fits, i8), i8(255))

    ok = all_within(width)
    short = all_within(GROUP_MAX // 2) if width > GROUP_MAX // 2 else ok
    fty = vty.dtype
    ft = context.get_data_type(fty)
    vf = ir.VectorType(ft, GROUP)
    slots = [cgutils.alloca_once_value(builder, ir.Constant(vf, [0.0] * GROUP))
             for _ in range(GROUP_MAX)]
    len32 = builder.trunc(lens, v8i)
    i8p = i8.as_pointer()
    size = context.get_abi_sizeof(ft)
    if fty == types.float32:
        gty = ir.FunctionType(vf, [vf, i8p, v8i, vf, i8])
        gather = cgutils.get_or_insert_function(builder.module, gty,
                                                "llvm.x86.avx2.gather.d.ps.256")
    else:
        v4f, v4i = ir.VectorType(ft, 4), ir.VectorType(i32, 4)
        gty = ir.FunctionType(v4f, [v4f, i8p, v4i, v4f, i8])
        gather = cgutils.get_or_insert_function(builder.module, gty,
                                                "llvm.x86.avx2.gather.d.pd.256")

    def gather_rows(rel, base, rows):
        for j in rows:
            idx = builder.add(rel, ir.Constant(v8i, [j] * GROUP))
            take = builder.icmp_signed(">", len32, ir.Constant(v8i, [j] * GROUP))
            zero = ir.Constant(vf, [0.0] * GROUP)
            if fty == types.float32:
                # the mask: a lane's sign bit
                m = builder.bitcast(builder.sext(take, v8i), vf)
                g = builder.call(gather, [zero, base, idx, m, i8(size)])
            else:
                halves = []
                for h in range(2):
                    sel = ir.Constant(ir.VectorType(i32, 4), list(range(4 * h, 4 * h + 4)))
                    ih = builder.shuffle_vector(idx, idx, sel)
                    th = builder.shuffle_vector(take, take, sel)
                    m = builder.bitcast(builder.sext(th, ir.VectorType(i64, 4)), v4f)
                    z4 = ir.Constant(v4f, [0.0] * 4)
                    halves.append(builder.call(gather, [z4, base, ih, m, i8(size)]))
                g = builder.shuffle_vector(halves[0], halves[1],
                                           ir.Constant(v8i, list(range(GROUP))))
            builder.store(g, slots[j])

    with builder.if_then(ok, likely=False):
        # every start lies within 8 * 7 of the first: 32-bit indices
        rel = builder.trunc(builder.sub(o0, _splat(builder, o[0], v8l)), v8i)
        p0 = cgutils.get_item_pointer(context, builder, vty, va, [o[0]], wraparound=False)
        base = builder.bitcast(p0, i8p)
        gather_rows(rel, base, range(GROUP_MAX // 2))
        if width > GROUP_MAX // 2:
            with builder.if_then(builder.not_(short), likely=False):
                gather_rows(rel, base, range(GROUP_MAX // 2, GROUP_MAX))
    return ok, short, len32, [builder.load(s) for s in slots]


def _group_sum():
    """group_sum8 (unit stride; ``ok`` a constant False without AVX2)."""

    def typer(typingctx, values, offsets, k):
        if not _group_args(values, offsets, k):
            return None
        rt = types.Tuple((types.boolean, types.UniTuple(types.float64, GROUP)))
        return rt(values, offsets, k), codegen

    def codegen(context, builder, sig, args):
        from llvmlite import ir

        f64 = ir.DoubleType()
        vd = ir.VectorType(f64, GROUP)
        if _avx2(context):
            # (segments of 5-8 elements: the float64 sums of 1 + Poisson(4)
            # elements took 1.3x the one-by-one steps' time this way)
            ok, _, _, g = _group_gather(context, builder, sig, args, GROUP_MAX // 2)
            if sig.args[0].dtype == types.float32:
                g = [builder.fpext(x, vd) for x in g]
            # masked_sum8's tree over lanes 0-7 of one segment (lanes past
            # it 0.0): ((x0 + x4) + (x2 + x6)) + ((x1 + x5) + (x3 + x7))
            # (x + 0.0 is kept: it turns -0.0 into 0.0, as there). Each fadd carries
            # a flag (arcp: no effect on an addition) because Numba's
            # fastmath pass gives the kernel's reassoc and nsz to every
            # float instruction without one, and LLVM then regrouped these
            # lane-wise adds (there, not masked_sum8's shuffle tree): other
            # bits than the step's, found by the A/B of bench/RESULTS.md
            # Run 47.

            def add(x, y):
                return builder.fadd(x, y, flags=("arcp",))

            a = [add(g[j], g[j + 4]) for j in range(4)]
            tot = add(add(a[0], a[2]), add(a[1], a[3]))
        else:
            ok = ir.Constant(ir.IntType(1), 0)
            tot = ir.Constant(vd, [0.0] * GROUP)
        i32 = ir.IntType(32)
        lanes = [builder.extract_element(tot, i32(t)) for t in range(GROUP)]
        tup = context.make_tuple(builder, sig.return_type.types[1], lanes)
        return context.make_tuple(builder, sig.return_type, (ok, tup))

    return intrinsic(typer)


def _group_ext(is_max: bool, skip: bool, width: int = GROUP_MAX // 2):
    """group_<op>8 (unit stride; ``width`` 8: group_<op>8w; ``ok`` a constant
    False without AVX2)."""

    def typer(typingctx, values, offsets, k, ident):
        if not _group_args(values, offsets, k) or ident != values.dtype:
            return None
        rt = types.Tuple((types.boolean, types.UniTuple(values.dtype, GROUP),
                          types.UniTuple(types.int64, GROUP)))
        return rt(values, offsets, k, ident), codegen

    def codegen(context, builder, sig, args):
        from llvmlite import ir

        i32, i64 = ir.IntType(32), ir.IntType(64)
        vl = ir.VectorType(i64, GROUP)
        ft = context.get_data_type(sig.args[0].dtype)
        vf = ir.VectorType(ft, GROUP)
        if _avx2(context):
            ok, _, len32, g = _group_gather(context, builder, sig, args, width)
            # lanes past a segment: copies of its first element (index 0),
            # as in masked_max8; then its tree: (0, 1), (2, 3), (4, 5), (6,
            # 7), then pairs of those, then the two halves
            ix = []
            x = []
            for j in range(width):
                take = builder.icmp_signed(">", len32, ir.Constant(len32.type, [j] * GROUP))
                x.append(builder.select(take, g[j], g[0]) if j else g[0])
                ix.append(builder.select(take, ir.Constant(vl, [j] * GROUP),
                                         ir.Constant(vl, [0] * GROUP)) if j
                          else ir.Constant(vl, [0] * GROUP))

            def merge(e, ei, r, ri):
                tk = _takes_ir(builder, is_max, skip, r, e)
                return builder.select(tk, r, e), builder.select(tk, ri, ei)

            def tree(lv):
                while len(lv) > 1:
                    lv = [merge(*lv[i], *lv[i + 1]) for i in range(0, len(lv), 2)]
                return lv[0]

            lanes = list(zip(x, ix, strict=True))
            if width == GROUP_MAX:
                best, bix = tree(lanes)
            else:
                # 0-4 elements: lanes 4-7 all copies of element 0, whose
                # merges give (x0, 0): the same result from 4 merges
                best, bix = tree(lanes[:4])
                best, bix = merge(best, bix, x[0], ix[0])
            # an empty segment: (ident, -1), as the caller's masked step
            # gives it (a select per lane here; a branch per segment there
            # was mispredicted on random lengths)
            has = builder.icmp_signed(">", len32, ir.Constant(len32.type, [0] * GROUP))
            best = builder.select(has, best, _splat(builder, args[3], vf))
            bix = builder.select(has, bix, ir.Constant(vl, [-1] * GROUP))
        else:
            ok = ir.Constant(ir.IntType(1), 0)
            best = ir.Constant(vf, [0.0] * GROUP)
            bix = ir.Constant(vl, [0] * GROUP)
        xs = [builder.extract_element(best, i32(t)) for t in range(GROUP)]
        ixs = [builder.extract_element(bix, i32(t)) for t in range(GROUP)]
        rt = sig.return_type
        return context.make_tuple(builder, rt, (
            ok, context.make_tuple(builder, rt.types[1], xs),
            context.make_tuple(builder, rt.types[2], ixs)))

    return intrinsic(typer)


# The sums (float64; masked_sum8's bits) of the 8 float32/float64 segments
# k .. k + 7, and whether all have 0-4 elements. Unit stride only: a kernel's
# strided form is written without the group step (cpu._source).
group_sum8 = _group_sum()
# The extremes and their indices (masked_<op>8's), of the 8 segments k .. k +
# 7, and whether all have 0-4 elements; a segment of 0 elements gives
# (``ident``, -1).
group_max8 = _group_ext(True, False)
group_min8 = _group_ext(False, False)
group_nanmax8 = _group_ext(True, True)
group_nanmin8 = _group_ext(False, True)
# The same for segments of 0-8 elements (8 gathers, the whole tree), tried
# where a group of 0-4 did not fit.
group_max8w = _group_ext(True, False, GROUP_MAX)
group_min8w = _group_ext(False, False, GROUP_MAX)
group_nanmax8w = _group_ext(True, True, GROUP_MAX)
group_nanmin8w = _group_ext(False, True, GROUP_MAX)
