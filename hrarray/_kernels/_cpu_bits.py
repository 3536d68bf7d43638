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
