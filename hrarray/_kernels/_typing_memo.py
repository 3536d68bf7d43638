"""Numba types each (function, argument types) pair once while hrarray compiles.

Numba's ``BaseFunction.get_call_type`` tries a function type's templates anew
at every call site it types: for ``+`` on two integers it first runs NumPy's
ufunc loop matching (the array operator's template, which then rejects
scalars), then the integer templates. A CPU kernel's ~1000 call sites hold
~60-190 distinct (function, argument types) pairs: typing them was 11-16 % of
a cold CPU kernel compile (0.19-0.40 s of 1.7-3.1 s measured, 93-95 % of it
repeats); the test suite's 67 CUDA signatures compiled to PTX in 65.6-80.5 s
without it, 48.0-67.4 s with it (this host is noisy), the PTX identical but
for one kernel's order of declarations and stack-slot addresses (the order in
which Numba compiles overload implementations changes), the same registers.

``call_type_memo()`` puts a remembering ``get_call_type`` on Numba's class for
as long as one or more hrarray compiles are inside it (any thread; the last
one out puts Numba's own back and drops the memo, so nothing outlives the
compiles). The signature depends only on the function type (an interned
object holding its templates), the argument types, the typing context and the
target, all in the key; the first call's side effects (the implementation key
recorded on the function type, an ``@overload``'s compiled implementation)
stay valid for the repeats. Failures are not remembered. A compile of someone
else's code that overlaps one of hrarray's in another thread gets the same
signatures it would have got. numba-cuda, beside Numba, types with the same
class. Where Numba's internals differ (no such method, or anything failing
while it is put in place), nothing is changed and the compile goes on.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_depth = 0
_saved = None  # (class, Numba's method) while installed


def _install():
    try:
        from numba.core.target_extension import get_local_target
        from numba.core.types import functions

        cls = functions.BaseFunction
        orig = cls.__dict__["get_call_type"]
    except Exception:  # another Numba: type as it does
        return None
    memo: dict = {}

    def get_call_type(fnty, context, args, kws):
        try:
            key = (fnty, context, get_local_target(context), tuple(args),
                   tuple(sorted(kws.items())))
            hit = memo.get(key)
        except TypeError:  # an unhashable argument type: typed as Numba does
            return orig(fnty, context, args, kws)
        if hit is not None and hit[0] is fnty:
            return hit[1]
        sig = orig(fnty, context, args, kws)
        if sig is not None:
            memo[key] = (fnty, sig)
        return sig

    cls.get_call_type = get_call_type
    return cls, orig


class call_type_memo:
    """Context manager: inside it, Numba types each call of a function type
    once per argument types (see the module's docstring)."""

    def __enter__(self):
        global _depth, _saved
        with _lock:
            if _depth == 0:
                _saved = _install()
            _depth += 1
        return self

    def __exit__(self, *exc):
        global _depth, _saved
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                cls, orig = _saved
                cls.get_call_type = orig
                _saved = None
        return False
