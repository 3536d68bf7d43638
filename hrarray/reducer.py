"""Reduction declarations: the one description every kernel factory compiles.

A reduction is four plain Python functions over a running *state* (a scalar
or a tuple of scalars), in the style of CuPy's ``ReductionKernel``:

``identity``
    the state of an empty range;
``map(v, j)``
    the state of one element ``v`` at local index ``j`` (its position inside
    the reduced segment);
``combine(a, b)``
    merges the states of two adjacent ranges, ``a`` before ``b``; it must be
    associative (kernels combine runs, blocks and chunks in order, so it need
    not be commutative);
``finalize(acc, n)``
    the result of a segment of ``n`` elements whose combined state is ``acc``;
``is_empty(acc, n)``
    whether the segment counts as empty for ``fill_value=`` (``n == 0`` unless
    an op says otherwise: all-NaN segments for ``nan*`` ops, ``n <= ddof`` for
    ``var``).

The CPU factory (``hrarray._kernels.cpu``) wraps these with ``numba.njit``,
the CUDA factory (``hrarray._kernels.cuda``) with ``cuda.jit(device=True)``:
the semantics of an op are written once, here or in ``hrarray._ops``.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Reducer"]


def _count_empty(acc, n):
    return n == 0


@dataclass(frozen=True, eq=False)
class Decl:
    """A compiled-ready op declaration (internal).

    ``key`` identifies the declaration for the compiled-kernel cache: two
    declarations with the same key must compile to the same kernel.
    ``aux`` is True when ``map`` takes a per-element auxiliary value,
    ``map(v, w, j)`` (attention scores). ``step``, where given, is
    ``combine(acc, map(v, j))`` for an element ``j`` after every element folded
    into ``acc`` (the CUDA element loop runs in index order): a cheaper
    equivalent where ``combine`` must handle either side's order (argmax).
    """

    key: tuple
    identity: Any
    map: Callable
    combine: Callable
    finalize: Callable
    is_empty: Callable = _count_empty
    aux: bool = False
    meta: dict = field(default_factory=dict)
    step: Callable | None = None

    @property
    def arity(self) -> int:
        """0 for a scalar state, else the length of the state tuple."""
        return len(self.identity) if isinstance(self.identity, tuple) else 0


def _as_state(value):
    """Normalise an identity: NumPy scalars, tuples of NumPy scalars."""
    if isinstance(value, tuple):
        if not value:
            raise TypeError("Reducer identity must be a number or a non-empty tuple of numbers")
        return tuple(_as_state(v) for v in value)
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.generic):
        if -(2**63) <= value < 2**63:
            return np.int64(value)
        if 0 <= value < 2**64:
            return np.uint64(value)  # (NumPy's reading of such an int)
        raise ValueError(f"Reducer identity {value} does not fit a 64-bit integer")
    if isinstance(value, float):
        return np.float64(value)
    if isinstance(value, complex):
        return np.complex128(value)
    if isinstance(value, np.generic):
        # the kernels' types: no text, dates, records, or longdouble (which Numba
        # does not type; it failed at compile time naming an internal global)
        if value.dtype.kind in "biufc" and value.dtype.itemsize <= 16 and not (
                value.dtype.kind == "f" and value.dtype.itemsize > 8):
            return value
        raise TypeError(
            f"Reducer identity must be a number the kernels take (bool, integer, float up "
            f"to float64, complex up to complex128), got a NumPy {value.dtype}"
        )
    raise TypeError(
        f"Reducer identity must be a number or a tuple of numbers, got {type(value).__name__}"
    )


# ------------------------------------------------------------ kernel cache keys
# A Reducer's kernels are cached on what its functions compute, not on the
# object: ``hr.reduce(x, hr.Reducer(...))`` written inside a function builds a
# new, equal Reducer on every call, and keying on identity compiled it again
# each time (1.1-1.4 s per call, measured) and kept every copy alive. Numba
# freezes a function's globals and closure values into the code it compiles,
# so those values are part of the key; anything whose value cannot be keyed
# (an array, a mutable object) keys the Reducer by identity, as before.


class _Unkeyable(Exception):
    pass


_PLAIN = (bool, int, str, bytes, type(None))
_ABSENT = object()


def _value_key(v, watch: list, depth: int = 0):
    """A hashable key equal for two values Numba would compile alike.

    ``watch`` collects what the key was read from, ``(kind, where, name,
    object)``, so a later call can check in a few identity tests that nothing
    was rebound (``_unchanged``) instead of building the key again (~9 us).
    """
    if isinstance(v, _PLAIN):
        return (type(v), v)
    if isinstance(v, (float, complex)):
        return (type(v), repr(v))  # repr tells -0.0 from 0.0 and NaN == NaN
    if isinstance(v, np.generic):
        return (v.dtype.str, v.tobytes())
    if isinstance(v, tuple) and depth < 8:
        return (tuple, tuple(_value_key(e, watch, depth + 1) for e in v))
    if isinstance(v, types.FunctionType):
        return _function_key(v, watch, depth + 1)
    if isinstance(v, (types.ModuleType, types.BuiltinFunctionType, np.ufunc, type)) or (
        callable(v) and type(v).__module__.startswith("numba")
    ):
        # modules, builtins, ufuncs, classes, jitted functions: the object
        # itself (held by the key, so its identity is never reused)
        return ("obj", v)
    raise _Unkeyable(type(v).__name__)


def _code_names(code: types.CodeType, out: set) -> set:
    """Names a code object (and the code nested in it) may load as globals."""
    out.update(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _code_names(c, out)
    return out


def _function_key(f, watch: list, depth: int = 0):
    if depth > 8:
        raise _Unkeyable("deeply nested functions")
    code = getattr(f, "__code__", None)
    if code is None:
        return _value_key(f, watch, depth)  # a callable object: keyed if a known kind
    g = f.__globals__
    glob = []
    names = sorted(_code_names(code, set()))
    for name in names:
        v = g.get(name, _ABSENT)
        # also watched while absent: a global defined later shadows a builtin
        watch.append((0, g, name, v))
        if v is not _ABSENT:  # attribute names, builtins: not values
            glob.append((name, _value_key(v, watch, depth + 1)))
            if isinstance(v, types.ModuleType):
                glob.append((name, _module_attrs_key(v, names, watch, depth + 1)))
    cells = []
    for c in f.__closure__ or ():
        try:
            v = c.cell_contents
        except ValueError:  # an empty cell
            raise _Unkeyable("empty closure cell") from None
        watch.append((1, c, None, v))
        cells.append(_value_key(v, watch, depth + 1))
    watch.append((2, f, "__code__", code))
    watch.append((2, f, "__defaults__", f.__defaults__))
    watch.append((2, f, "__kwdefaults__", f.__kwdefaults__))
    defaults = _value_key(f.__defaults__ or (), watch, depth + 1)
    kwdefaults = tuple(sorted(
        (k, _value_key(v, watch, depth + 1)) for k, v in (f.__kwdefaults__ or {}).items()))
    # the code object compares by its bytecode, constants, names and line
    return ("fn", code, tuple(glob), tuple(cells), defaults, kwdefaults)


def _module_attrs_key(mod: types.ModuleType, names: list, watch: list, depth: int):
    """The attributes of a global module that a function may read (``cfg.S``: the
    code's names found in the module's namespace). Numba freezes them into the
    kernel as it does globals, so a changed one must compile anew (helper R's
    audit: ``cfg.S = 10.0`` reused the kernel built with 2.0). Read from the
    namespace itself (no module ``__getattr__`` hooks, which may warn). Data only:
    functions, classes and modules stay part of the module object, as before
    (keying ``np.where``, a dispatcher object, would make every Reducer calling it
    unkeyable); data that cannot be keyed (an array) keys the Reducer by identity,
    as a global array does."""
    ns = vars(mod)
    out = []
    for attr in names:
        v = ns.get(attr, _ABSENT)
        if v is _ABSENT or callable(v) or isinstance(v, (types.ModuleType, type)):
            continue
        watch.append((3, ns, attr, v))
        out.append((attr, _value_key(v, watch, depth)))
    return tuple(out)


def _unchanged(watch: list) -> bool:
    """Whether every object a key was built from is still bound where it was."""
    for kind, where, name, obj in watch:
        if kind in (0, 3):  # a global, a module attribute: both a namespace dict
            cur = where.get(name, _ABSENT)
        elif kind == 1:
            try:
                cur = where.cell_contents
            except ValueError:
                return False
        else:
            cur = getattr(where, name)
        if cur is not obj:
            return False
    return True


def _promoted(*values, widen: bool = True):
    """The scalar type holding every one of ``values`` (Python or NumPy
    scalars): NumPy's promotion, and with ``widen`` integers at 64 bits (Numba
    computes small integers as int64)."""
    dt = np.result_type(*[np.asarray(x).dtype for x in values])
    if not widen:
        return dt.type
    if dt.kind == "i" and dt.itemsize < 8:
        dt = np.dtype(np.int64)
    elif dt.kind == "u" and dt.itemsize < 8:
        dt = np.dtype(np.uint64)
    return dt.type


class _TrialFailed(TypeError):
    """A user function raised in the Python trial run (``Reducer._trial``)."""


def _trial_elements(in_dtype: np.dtype) -> list:
    """The elements of ``in_dtype`` a Reducer's trial run tries, in order."""
    kind = in_dtype.kind
    if kind == "b":
        cands = (True, False)
    elif kind == "u":
        cands = (1, 0, 2, 10)
    elif kind == "i":
        cands = (1, 0, 2, -1, 10)
    else:
        cands = (1, 0, 2, -1, 0.5, 10)
    return [in_dtype.type(c) for c in cands]


class Reducer:
    """A user-defined segmented reduction, compiled for the CPU and CUDA.

    Parameters
    ----------
    identity : number or tuple of numbers
        State of an empty segment. A tuple gives a tuple state (for example
        ``(0.0, 0)`` for a running sum and count).
    combine : callable
        ``combine(a, b) -> state``; must be associative. It may be
        non-commutative: hrarray always passes the earlier range first.
    map : callable, optional
        ``map(v) -> state`` applied to each element first. Without it the
        element itself is the state, in the promoted type of the identity and
        the element (``np.result_type``: an integer identity over float
        values gives a float64 state).
    finalize : callable, optional
        ``finalize(acc, n) -> scalar`` with ``n`` the segment length; it runs
        for every segment, empty ones too (``n == 0``). Without it an empty
        segment gives ``identity`` (the state must then be a scalar).

    Notes
    -----
    The functions must be plain Python that Numba can compile (``njit`` on the
    CPU, ``cuda.jit(device=True)`` on CUDA): arithmetic, ``math`` functions,
    tuples, conditionals. The result dtype is inferred by running the
    declaration once in Python on one element of the input dtype (1, or where
    a function raises there 0, 2, -1, 0.5, 10 in turn); pass ``dtype=``
    to :func:`hrarray.reduce` to choose it. ``fill_value=`` replaces the
    result of empty segments.

    Kernels are cached on the functions' code and the values of the globals
    and closure variables they read: an equal Reducer built again (inside a
    function called in a loop) compiles nothing. One that reads an array or
    another mutable object is cached on the Reducer object instead.

    Examples
    --------
    >>> import numpy as np, hrarray as hr
    >>> x = hr.from_lengths(np.array([1.0, 2.0, 3.0, 4.0]), [3, 0, 1])
    >>> rms = hr.Reducer(identity=0.0, combine=lambda a, b: a + b,
    ...                  map=lambda v: v * v,
    ...                  finalize=lambda acc, n: (acc / n) ** 0.5 if n > 0 else 0.0)
    >>> hr.reduce(x, rms)
    array([2.1602469, 0.       , 4.       ])
    """

    def __init__(self, identity, combine, map=None, finalize=None, *, name=None):
        for arg, f, wrap in (("combine", combine, "lambda a, b: f(a, b)"),
                             ("map", map, "lambda v: f(v)"),
                             ("finalize", finalize, "lambda acc, n: f(acc, n)")):
            if not isinstance(f, types.FunctionType) and (f is not None or arg == "combine"):
                # a builtin (max), a ufunc (np.add), a callable object, a
                # jitted dispatcher: the kernels compile the function's Python
                # code (and its closure), which these lack
                raise TypeError(
                    f"Reducer {arg} must be a Python function (def or lambda) that Numba "
                    f"can compile, got {type(f).__name__} {f!r} (wrap it in one: {wrap})"
                )
        self.identity = _as_state(identity)
        if finalize is None and isinstance(self.identity, tuple):
            raise TypeError("a Reducer with a tuple identity needs a finalize function")
        self.combine = combine
        self.map = map
        self.finalize = finalize
        self.name = name or getattr(combine, "__name__", "reducer")
        self._key_memo = None

    def __getstate__(self):
        # the key memo refers to module globals: never pickled (rebuilt on use)
        return {**self.__dict__, "_key_memo": None}

    def __repr__(self) -> str:
        return f"Reducer(name={self.name!r}, identity={self.identity!r})"

    def _try(self, what: str, in_dtype: np.dtype, f, *args):
        """``f(*args)``; a failure is a ``_TrialFailed`` naming the Reducer and the call."""
        try:
            return f(*args)
        except Exception as exc:
            raise _TrialFailed(
                f"Reducer {self.name!r}: {what} fails in Python on every trial element "
                f"of {in_dtype} ({', '.join(map(str, _trial_elements(in_dtype)))}; hrarray "
                f"runs the Reducer once in Python to infer its types), first: {exc}"
            ) from exc

    def _trial(self, in_dtype: np.dtype, run) -> list:
        """``run(v)`` for every trial element ``v`` on which the user's
        functions all return (at least one, or a TypeError). A function valid
        on the data may fail on one value (``math.log`` at 0, ``assert v > 0.5``),
        so several are tried: 1, 0, 2, -1, 0.5, 10. The types they give are then
        promoted together, as Numba unifies a function's branches: ``v if v > 0
        else 0.5`` is an int at 1 and a float at 0, so a float state. NumPy's
        floating-point warnings are off for the run (``1.0 / v`` at 0 warned)."""
        outs, first = [], None
        for v in _trial_elements(in_dtype):
            try:
                with np.errstate(all="ignore"):
                    outs.append(run(v))
            except _TrialFailed as exc:
                first = first or exc
        if not outs:
            raise TypeError(str(first)) from first.__cause__
        return outs

    def _state_type(self, in_dtype: np.dtype):
        """Without ``map`` the element is the state: the scalar type of the
        identity's and the element's promoted dtype."""
        return np.result_type(np.asarray(self.identity).dtype, in_dtype).type

    def _state(self, in_dtype: np.dtype, widen: bool = True):
        """(identity, one element's state) as the kernels hold them (``_states``)."""
        ident, states = self._states(in_dtype, widen)
        return ident, states[0]

    def _states(self, in_dtype: np.dtype, widen: bool = True):
        """(identity, the state of each trial element) as the kernels hold them,
        run in Python. Each state component is of the promoted type of the
        identity's and of every trial's ``map`` and ``combine`` values for it
        (``widen``: integers widened to 64 bits, as Numba's arithmetic computes
        them): the kernels' stacks and row accumulators take the identity's
        types, and an integer identity under a float ``map`` (identity=0,
        map=lambda v: v * 0.5) had them truncate every partial state to an
        integer."""
        ident = self.identity
        if self.map is None and not isinstance(ident, tuple):
            # without map, the element is the state (whatever combine(0, 0.0)
            # returns in Python: max(0, 0.0) is the int 0)
            st_type = self._state_type(in_dtype)
            return st_type(ident), [st_type(0)]
        runs = self._trial(in_dtype, lambda v: self._raw_state(v, in_dtype))
        states = [st for st, _ in runs]
        combined = [both for _, both in runs]
        if isinstance(ident, tuple):
            if not all(isinstance(b, tuple) and len(b) == len(ident) for b in combined):
                return ident, states  # the kernel's typing names the mismatch
            types = [_promoted(*col, widen=widen)
                     for col in zip(ident, *states, *combined, strict=True)]
            return (tuple(t(c) for t, c in zip(types, ident, strict=True)),
                    [tuple(t(c) for t, c in zip(types, st, strict=True)) for st in states])
        if any(isinstance(x, tuple) for x in (*states, *combined)):
            return ident, states
        t = _promoted(ident, *states, *combined, widen=widen)
        return t(ident), [t(st) for st in states]

    def _raw_state(self, v, in_dtype: np.dtype):
        """(``map(v)``, ``combine(identity, map(v))``) as Python gives them."""
        ident = self.identity
        st = self._try("map(element)", in_dtype, self.map, v) if self.map is not None else v
        if isinstance(ident, tuple) and not (isinstance(st, tuple) and len(st) == len(ident)):
            who = "map must return" if self.map is not None else "without map the state is"
            raise TypeError(
                f"Reducer {self.name!r}: identity is a tuple of {len(ident)}, so {who} one; "
                f"got {type(st).__name__}"
            )
        return st, self._try("combine(identity, state)", in_dtype, self.combine, ident, st)

    def _result_dtype(self, in_dtype: np.dtype) -> np.dtype:
        """Infer the result dtype by running the declaration in Python on the
        trial elements' states (their promoted types, not widened: an int8
        state stays an int8 result) and promoting what they give."""
        ident, states = self._states(in_dtype, widen=False)
        results, first = [], None
        for st in states:
            try:
                with np.errstate(all="ignore"):
                    acc = self._try("combine(identity, state)", in_dtype, self.combine, ident, st)
                    if self.finalize is not None:
                        acc = self._try("finalize(state, n)", in_dtype, self.finalize, acc, 1)
                results.append(acc)
            except _TrialFailed as exc:
                first = first or exc
        if not results:
            raise TypeError(str(first)) from first.__cause__
        for res in results:
            if isinstance(res, tuple):
                raise TypeError(
                    f"Reducer {self.name!r} finalize must return a scalar, not a tuple")
            if np.asarray(res).dtype.kind not in "biufc":
                # a string would be a '<U1' array cut to one character, a date... no state
                who = "finalize" if self.finalize is not None else "combine"
                raise TypeError(
                    f"Reducer {self.name!r}: {who} must return a number (bool, int, float or "
                    f"complex), got {type(res).__name__} {res!r}"
                )
        return np.result_type(*[np.asarray(r).dtype for r in results])

    def _cache_key(self):
        """What the compiled kernels are cached on (see ``_value_key``):
        equal for two Reducers built from the same code and values."""
        memo = self._key_memo
        if memo is not None and _unchanged(memo[0]):
            return memo[1]
        watch = [(2, self, name, getattr(self, name))
                 for name in ("identity", "combine", "map", "finalize")]
        try:
            key = (
                _value_key(self.identity, watch),
                _function_key(self.combine, watch),
                None if self.map is None else _function_key(self.map, watch),
                None if self.finalize is None else _function_key(self.finalize, watch),
            )
        except (_Unkeyable, RecursionError):
            # the object itself (alive while its kernels are, so its id is never
            # reused by another Reducer while the cache holds the key)
            key = ("id", id(self), self)
        self._key_memo = (watch, key)
        return key

    def _decl(self, in_dtype: np.dtype, out_dtype: np.dtype, cast_complex: bool = False) -> Decl:
        """The declaration the kernels run; ``cast_complex``: finalize casts a complex
        result into the non-complex ``out_dtype`` as the built-in ops do
        (``_ops.complex_cast``: the real part; for bool, non-zero)."""
        user_map, user_fin = self.map, self.finalize
        ident = self._state(in_dtype)[0]  # of the state's types (see _state)
        if user_map is None:
            # The element is the state: of the identity's and the element's
            # promoted type (an integer identity over floats was an int64 state
            # that truncated 0.5 to 0 and NaN to INT64_MIN).
            st_type = self._state_type(in_dtype)

            def map_(v, j):
                return st_type(v)
        else:

            def map_(v, j):
                return user_map(v)

        if user_fin is None:

            def fin0(acc, n):
                return acc
        else:

            def fin0(acc, n):
                return user_fin(acc, n)

        if cast_complex:  # a complex result into a non-complex dtype= (reduce._spec_for)
            from hrarray._ops import complex_cast

            cast = complex_cast(out_dtype)

            def fin(acc, n):
                return cast(fin0(acc, n))
        else:
            fin = fin0

        return Decl(
            key=("user", self._cache_key(), in_dtype.str, out_dtype.str),
            identity=ident,
            map=map_,
            combine=self.combine,
            finalize=fin,
            # finalize keeps Python's order of operations: no fastmath on the CPU
            # (s - m * n + c * 10 was reordered into (s + c * 10) - m * n, which
            # loses c * 10 against s ~ 9e18, where CUDA gave 10)
            meta={"reducer": self, "strict_finalize": True},
        )


# ``math`` is re-exported for user reducers written against it in docs.
_ = math
