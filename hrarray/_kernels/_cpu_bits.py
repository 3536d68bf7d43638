"""Bit-level helpers for the CPU kernels' vectorised max/min fast path.

LLVM does not vectorise a floating-point ``select`` max reduction as Numba
emits it, but it does vectorise an integer one. A float's bits, with the
magnitude bits flipped for negative numbers, order exactly like the float
(for non-NaN values), so the max of the keys is the key of the max.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

_INT_OF = {types.float32: types.int32, types.float64: types.int64}
_FLOAT_OF = {types.int32: types.float32, types.int64: types.float64}


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
