"""Segmented reductions: ``hr.reduce`` and one function per op.

Dtype rules, ``levels=``, ``fill_value=`` and dispatch live here; the op
semantics live in :mod:`hrarray._ops` (built-ins) or a :class:`Reducer`.
"""

from __future__ import annotations

import builtins
import inspect
import sys
import warnings

import numpy as np

from hrarray import _ops
from hrarray.ragged import RaggedArray, check_fill, int_arg
from hrarray.reducer import Reducer

__all__ = ["reduce", *_ops.OPS]


def _partitioned(x):
    """``hrarray.dask`` if ``x`` is its partitioned array, else None.

    Looked up in ``sys.modules`` so that hrarray never imports Dask: a
    ``RaggedDaskArray`` exists only once the user imported ``hrarray.dask``.
    Entry points call this only after their ``RaggedArray`` check failed, so
    the common call pays nothing for it.
    """
    hd = sys.modules.get("hrarray.dask")
    if hd is not None and isinstance(x, hd.RaggedDaskArray):
        return hd
    return None


def _check_levels(x: RaggedArray, levels) -> int:
    levels = int_arg(levels, "levels")
    d = x.depth
    if not 1 <= levels <= d:
        raise ValueError(f"levels={levels} is outside 1..depth={d}")
    return levels


def _split(x: RaggedArray, levels: int):
    """(levels above the reduced ones, composed offsets, leaf values).

    For ``levels < depth`` the array is compacted first so that the result's
    offsets start at 0 (every returned ``RaggedArray`` is compact) and no
    unreachable segment is reduced.
    """
    if levels < x.depth:
        x = x._compact()
    lv = x._levels()
    above = lv[: len(lv) - levels]
    target = lv[len(lv) - levels]
    return above, target._composed_offsets(), x.leaf_values


def _spec_for(op, in_dtype: np.dtype, dtype, ddof):
    if isinstance(op, Reducer):
        vdt = np.dtype(np.float32) if in_dtype == np.float16 else in_dtype
        if not _ops.kernel_dtype(in_dtype):
            raise TypeError(f"unsupported dtype {in_dtype} for a Reducer")
        cast_complex = False
        if dtype is None:
            out = op._result_dtype(vdt)
        else:
            out = _ops.parse_dtype(dtype, "reduce")
            if not _ops.kernel_dtype(out):
                raise TypeError(f"reduce(): dtype={out} is not supported for a Reducer's "
                                "result (bool, integer, float or complex)")
            # complex results into a real dtype= keep their real part, as the built-in
            # ops and NumPy's cast (Numba cannot store a complex into a real array: the
            # CPU raised a TypeError blaming the user's functions), whether the values
            # are complex or a complex map/identity makes real values' state complex
            cast_complex = out.kind != "c" and op._result_dtype(vdt).kind == "c"
            if cast_complex and out.kind != "b":  # into bool: non-zero, no warning (NumPy)
                warnings.warn(f"reduce(): Reducer {op.name!r} gives complex results; "
                              f"dtype={out} keeps their real part", _ops._COMPLEX_WARNING,
                              stacklevel=_ops._caller_level())
        return _ops.Spec(op._decl(vdt, out, cast_complex), out, vdt)
    if not isinstance(op, str):
        raise TypeError(f"op must be an op name or a hrarray.Reducer, got {type(op).__name__}")
    return _ops.build(op, in_dtype, dtype=dtype, ddof=ddof)


_NUMBA_NOISE = ("Failed in", "During:", "File ", "<source", "^", "def ", "Rewrite", "[")


def _is_numba_error(exc: BaseException) -> bool:
    """Numba's compile errors (TypingError, ...) derive from NumbaError, not
    TypeError (and UnsupportedBytecodeError, for an ``import`` in a function,
    from Exception alone); told by class name so that this module need not
    import Numba."""
    # (builtins.any: this module's ``any`` is the reduction)
    if builtins.any(c.__name__ in _NUMBA_ERRORS for c in type(exc).__mro__):
        return True
    # an operation Numba types but cannot lower (complex ``>``): a bare
    # NotImplementedError out of its lowering pass
    return isinstance(exc, NotImplementedError) and str(exc).startswith(
        "No definition for lowering")


_NUMBA_ERRORS = ("NumbaError", "UnsupportedBytecodeError")
_DDOF_OPS = ("var", "std")
_DDOF_MAX = 2**62


def _uncompilable(op: Reducer, in_dtype: np.dtype, exc: BaseException) -> TypeError:
    """A user function Numba cannot compile is the wrong kind of thing: a
    TypeError quoting the first line of Numba's message that says what failed
    (not which pipeline step, not where)."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(_NUMBA_NOISE)]
    first = lines[0] if lines else type(exc).__name__
    return TypeError(
        f"Reducer {op.name!r}: Numba cannot compile its combine/map/finalize for "
        f"{in_dtype} values ({first}); they must be plain numeric Python"
    )


def _cast_result(be, out, dtype: np.dtype, op):
    """float64 results of mean/var/std (and nan*) cast to an integer or bool
    ``dtype=``: NaN (an empty segment, or NaN/inf values) has no such value,
    so a non-finite result is a ValueError naming its segment (NumPy casts
    it to an arbitrary integer and warns). The check reads the results on
    the host (O(nsegments x inner); on CUDA a copy, as CuPy may be absent)."""
    h = be.to_host(out)
    # (no rows, or rows of zero size: nothing to check; reshape cannot infer -1)
    bad = ~np.isfinite(h).reshape(h.shape[0], -1).all(axis=1) if h.size else h[:0]
    if bad.any():
        name = op if isinstance(op, str) else "reduce"
        raise ValueError(
            f"{name}() gives NaN for segment {int(np.argmax(bad))} (empty, or NaN/inf values), "
            f"which dtype={dtype} cannot represent: pass fill_value= or a float dtype"
        )
    return be.astype(out, dtype)


def _finite_for_int(be, leaf, offsets, dtype: np.dtype, name: str, nan_skipped: bool):
    """``sum``, ``prod``, ``mean`` and ``cumsum`` of float values into an
    integer ``dtype`` (``mean``: or bool) cast each element to it first (as
    NumPy), so a NaN, an inf or a value beyond the dtype's range became an
    arbitrary integer and the result said nothing of it (NumPy warns and
    returns it). A ValueError naming the first segment that holds one and
    the value, as for the NaN results of var/std (``_cast_result``); for
    ``nansum`` NaN is skipped (complex: NaN in either part). Reads the values
    in the segments on the host (on CUDA a copy of that range)."""
    o = be.to_host(offsets)
    lo, hi = int(o[0]), int(o[-1])
    v = be.to_host(leaf[lo:hi])
    skip = np.isnan(v) if nan_skipped else None  # (complex: either part)
    if v.dtype.kind == "c":
        v = v.real  # the part the cast keeps
    with np.errstate(invalid="ignore"):
        if dtype.kind == "b":
            ok = np.isfinite(v)
        else:
            info = np.iinfo(dtype)
            # the cast truncates; NaN and inf fail both tests. In float64: float16's
            # range would turn the bounds into +-inf (review R3: -inf passed into int64)
            t = np.trunc(v.astype(np.float64, copy=False))
            ok = (t >= float(info.min)) & (t < float(info.max) + 1.0)
    if skip is not None:
        ok |= skip
    bad = ~ok.reshape(hi - lo, -1).all(axis=1) if v.size else v[:0]
    if bad.any():
        k = int(np.argmax(bad))
        seg = int(np.searchsorted(o, lo + k, side="right")) - 1
        first = v[k].reshape(-1)[~ok[k].reshape(-1)][0]  # (a scalar or a row)
        raise ValueError(
            f"{name}() of segment {seg} meets the value {float(first)!r}, which "
            f"dtype={dtype} cannot represent (NaN, inf or out of its range): pass a float dtype"
        )


def reduce(x, op, *, levels=1, fill_value=None, dtype=None, ddof=None):
    """Reduce the ``levels`` innermost ragged levels of ``x`` with ``op``.

    Parameters
    ----------
    x : RaggedArray
    op : str or Reducer
        A built-in op name (``"sum"``, ``"nanmax"``, ...) or a user
        :class:`~hrarray.Reducer`.
    levels : int, default 1
        How many innermost levels to reduce at once, over the flattened leaf
        range of each level-``levels`` segment; ``levels=x.depth`` gives one
        row per top segment.
    fill_value : scalar, optional
        Result of every empty segment (for ``nan*`` ops also all-NaN
        segments; for ``var``/``std`` also segments with length <= ``ddof``).
    dtype : dtype, optional
        Accumulator/result dtype, as in NumPy (sum, prod, mean, var, std and
        their nan variants). Complex values into a real or integer dtype keep
        their real part (``ComplexWarning``). An integer or bool dtype for
        mean/var/std cannot hold NaN: see Raises.
    ddof : int, optional
        Delta degrees of freedom of ``var``/``std`` (0 when not given); any
        other op given one is a ``TypeError``.

    Returns
    -------
    array or RaggedArray
        Dense ``(nsegments_top, *inner)`` when ``levels == x.depth``, else a
        compact ``RaggedArray`` of depth ``x.depth - levels``; same array
        library and device as ``x``.

    Raises
    ------
    TypeError
        ``x`` is not a RaggedArray; ``op`` unknown in kind; ``dtype=`` for an
        op that takes none, ``ddof=`` for an op other than var/std, or an
        integer ``dtype`` for nanmean/nanvar/nanstd of float values; ordering
        ops on complex values; a Reducer whose functions Numba cannot compile.
    ValueError
        Unknown op name; ``levels`` out of range; ``ddof < 0``; a
        ``fill_value`` the result dtype cannot hold; mean/var/std into an
        integer or bool ``dtype`` with a segment whose result is NaN (empty,
        or NaN/inf values) and no ``fill_value`` (the message names it); sum,
        prod or mean of float values into an integer ``dtype`` with a value
        it cannot represent (NaN, inf, out of range; nansum skips NaN) in a
        segment (named).
    """
    if not isinstance(x, RaggedArray):
        hd = _partitioned(x)
        if hd is not None:
            return hd.reduce(x, op, levels=levels, fill_value=fill_value, dtype=dtype, ddof=ddof)
        raise TypeError(f"x must be a RaggedArray, got {type(x).__name__}")
    # The common call (one level of a flat array, an op name, default dtype and
    # ddof) takes the short path: at ~10 segments the Python around the kernel
    # is the whole cost of a reduction.
    flat = levels.__class__ is int and levels == 1 and not isinstance(x._values, RaggedArray)
    if not flat:
        levels = _check_levels(x, levels)
    be = x._backend
    in_dtype = be.dtype(x._values) if flat else x.dtype
    if not in_dtype.isnative:
        in_dtype = in_dtype.newbyteorder("=")
    if ddof is None:
        ddof = 0
    else:
        if ddof.__class__ is not int:
            ddof = int_arg(ddof, "ddof")
        if ddof > _DDOF_MAX:
            # any ddof >= the longest segment gives NaN; the kernels hold it as int64
            ddof = _DDOF_MAX
        if not (op.__class__ is str and op.removeprefix("nan") in _DDOF_OPS):
            what = repr(op) if isinstance(op, str) else "a Reducer"
            raise TypeError(f"reduce(): ddof applies to var/std (and their nan variants), "
                            f"not to {what}")
    key = (op, in_dtype, ddof) if dtype is None and op.__class__ is str else None
    spec = _SPECS.get(key) if key is not None else None
    if spec is None:
        spec = _spec_for(op, in_dtype, dtype, int(ddof))
        if key is not None and len(_SPECS) < 4096:
            _SPECS[key] = spec
    use_fill = fill_value is not None
    if use_fill:
        fill_value = check_fill(fill_value,
                                spec.out_dtype if spec.cast_to is None else spec.cast_to)
    try:
        if flat and spec.cast_to is None and not spec.finite_values:
            return be.reduce(spec, x._values, x._offsets, fill_value if use_fill else 0, use_fill)
        above, offsets, leaf = (), x._offsets, x._values
        if not flat:
            above, offsets, leaf = _split(x, levels)
        if spec.finite_values:
            _finite_for_int(be, leaf, offsets, spec.out_dtype if spec.cast_to is None
                            else spec.cast_to, op, spec.nan_skipped)
        out = be.reduce(spec, leaf, offsets, fill_value if use_fill else 0, use_fill)
    except Exception as exc:
        if isinstance(op, Reducer) and _is_numba_error(exc):
            raise _uncompilable(op, in_dtype, exc) from exc
        raise
    if spec.cast_to is not None:
        out = _cast_result(be, out, spec.cast_to, op)
    return RaggedArray._rewrap(out, above)


# (op name, input dtype, ddof) -> Spec for calls without ``dtype=``; bounded so
# that a caller sweeping ddof cannot grow it without limit
_SPECS: dict = {}


def _make(name: str):
    takes_ddof = name.removeprefix("nan") in {"var", "std"}
    takes_dtype = name in _ops._TAKES_DTYPE
    parts = []
    if takes_dtype:
        parts.append("dtype=None")
    if takes_ddof:
        parts.append("ddof=0")

    def op(x, *, levels=1, fill_value=None, **kw):
        bad = set(kw) - ({"dtype"} if takes_dtype else set()) - ({"ddof"} if takes_ddof else set())
        if bad:
            raise TypeError(f"{name}() got an unexpected keyword argument {sorted(bad)[0]!r}")
        return reduce(x, name, levels=levels, fill_value=fill_value, **kw)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = _DOCS.get(name.removeprefix("nan"), "").format(
        name=name,
        nan=(
            "NaN elements are skipped; an all-NaN segment counts as empty."
            if name.startswith("nan") and name not in {"nan"}
            else "NaN propagates as in NumPy."
        ),
        extra=", ".join(["levels=1", "fill_value=None", *parts]),
        length=("its count of non-NaN elements" if name.startswith("nan") else "length"),
        argnan=(" A NaN element is the extreme: its first index is returned."
                if name in ("argmax", "argmin") else ""),
    )
    # the signature help() and inspect show: the keywords this op takes
    params = [inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=d)
               for k, d in (("levels", 1), ("fill_value", None))]
    if takes_dtype:
        params.append(inspect.Parameter("dtype", inspect.Parameter.KEYWORD_ONLY, default=None))
    if takes_ddof:
        params.append(inspect.Parameter("ddof", inspect.Parameter.KEYWORD_ONLY, default=0))
    op.__signature__ = inspect.Signature(params)
    return op


_DOCS = {
    "sum": """Segment sums: ``{name}(x, *, {extra})``.

Empty segment: 0. {nan} Result dtype: bool/int -> int64, uint -> uint64,
float16/float32 -> same (accumulated in float64), float64 -> float64 (blocked
pairwise summation; on the CPU ``sum``, ``mean``, ``nansum`` and ``nanmean`` also
keep the rounding errors of segments of more than 1,024 elements, about one
rounding in all: see docs/semantics.md), complex -> same. Integer sums wrap
modulo 2**64 like NumPy.
See :func:`hrarray.reduce` for ``levels``, ``fill_value``, ``dtype``.
""",
    "prod": """Segment products: ``{name}(x, *, {extra})``.

Empty segment: 1. {nan} Result dtype as ``sum``.
""",
    "mean": """Segment means: ``{name}(x, *, {extra})``.

Empty segment: NaN (no warning). {nan} Result dtype: int/bool -> float64,
floats -> same (accumulated in float64), complex -> same.
""",
    "var": """Segment variances: ``{name}(x, *, {extra})``.

Empty segment, or {length} <= ddof: NaN. {nan} Result dtype as ``mean``
(complex input gives a real result). Computed with Chan's pairwise update of
M2; for real values each mean is held as an element of the segment plus a sum
of deviations, so a large common offset costs no accuracy (on the CPU, blocks
of finite 1-D values start from a corrected two-pass M2 of the block).
""",
    "std": """Segment standard deviations: ``{name}(x, *, {extra})``.

Empty segment, or {length} <= ddof: NaN. {nan} Result dtype as ``var``.
""",
    "max": """Segment maxima: ``{name}(x, *, {extra})``.

Empty segment: -inf for floats, the dtype minimum for ints, False for bool.
{nan} Result dtype: the input dtype. Complex is a TypeError.
""",
    "min": """Segment minima: ``{name}(x, *, {extra})``.

Empty segment: +inf for floats, the dtype maximum for ints, True for bool.
{nan} Result dtype: the input dtype. Complex is a TypeError.
""",
    "argmax": """Index of each segment's maximum, local to the segment.

``{name}(x, *, {extra})``.

Empty segment: -1. First occurrence wins. {nan}{argnan} With ``levels=k``
the index is the position in the flattened leaf range of the level-k
segment. Result dtype: int64.
""",
    "argmin": """Index of each segment's minimum, local to the segment.

``{name}(x, *, {extra})``.

Empty segment: -1. First occurrence wins. {nan}{argnan} Result dtype: int64.
""",
    "count": """Elements per segment, as rows ``(nsegments, *inner)``.

``{name}(x, *, {extra})``.

Empty segment: 0. Every element counts, NaN included. Result dtype:
int64 (``x.lengths`` is the 1-D form).
""",
    "count_nonzero": """Non-zero elements per segment: ``{name}(x, *, {extra})``.

Empty segment: 0. NaN counts as non-zero (NumPy). Result dtype: int64.
""",
    "any": """Whether any element of a segment is non-zero.

``{name}(x, *, {extra})``.

Empty segment: False. NaN is non-zero. Result dtype: bool.
""",
    "all": """Whether every element of a segment is non-zero.

``{name}(x, *, {extra})``.

Empty segment: True. NaN is non-zero. Result dtype: bool.
""",
    "logsumexp": """``log(sum(exp(x)))`` per segment: ``{name}(x, *, {extra})``.

Computed online in one pass (a running max and a rescaled sum).

Empty segment: -inf. {nan} Result dtype: float (int/bool -> float64;
float32 accumulated in float64).
""",
    "first": """First element of each segment: ``{name}(x, *, {extra})``.

Empty segment: NaN for floats and complex, 0 for ints (False for bool).
A NaN element is returned as it is. Result dtype: the input dtype.
""",
    "last": """Last element of each segment: ``{name}(x, *, {extra})``.

Empty segment: NaN for floats and complex, 0 for ints (False for bool).
A NaN element is returned as it is. Result dtype: the input dtype.
""",
}

for _name in _ops.OPS:
    globals()[_name] = _make(_name)
    setattr(RaggedArray, _name, globals()[_name])
del _name


def _method_reduce(self, op, *, levels=1, fill_value=None, dtype=None, ddof=None):
    """``x.reduce(op, ...)``: :func:`hrarray.reduce` of ``x`` (an op name or a
    :class:`~hrarray.Reducer`); see there for the arguments and results."""
    return reduce(self, op, levels=levels, fill_value=fill_value, dtype=dtype, ddof=ddof)


RaggedArray.reduce = _method_reduce


# kept for hrarray.transforms, which validates fill values the same way
_fill_ok = check_fill
