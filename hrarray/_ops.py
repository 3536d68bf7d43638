"""The built-in reductions, each declared once; ``nan*`` variants generated.

Every op is a builder ``build(in_dtype, dtype, ddof) -> Spec`` that picks the
accumulator and result dtypes (the table in ``API.md`` section 2) and returns
the :class:`~hrarray.reducer.Decl` that the CPU and CUDA kernel factories
compile. The state and element functions are closures over NumPy scalar
types, so the same Python source compiles for every dtype.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from dataclasses import dataclass, replace

import numpy as np

from hrarray.reducer import Decl

__all__ = ["NAN_OPS", "OPS", "Spec", "build"]

NAN = math.nan
INF = math.inf


@dataclass(frozen=True)
class Spec:
    """What a reduction needs: the declaration and its dtypes.

    ``value_dtype`` is the dtype the kernel reads: float16 values are read
    as float32 (Numba has no float16 arithmetic on the CPU), everything else
    as it is.
    """

    decl: Decl
    out_dtype: np.dtype
    value_dtype: np.dtype
    # The result dtype when the kernel's (``out_dtype``, float64) differs: a
    # NaN-for-empty op (mean, var, std and their nan* forms) asked for an
    # integer or bool ``dtype=``; the caller checks the float64 results are
    # finite (NaN is not representable) and casts them, as NumPy's mean does.
    cast_to: np.dtype | None = None
    # The elements are cast to an integer ``dtype=`` before they are summed
    # (``sum``, ``prod``, ``mean`` of float values, as NumPy), so a NaN, an inf
    # or an out-of-range element becomes an arbitrary integer before the
    # result could show it; the caller checks the values themselves
    # (``nan_skipped``: ``nansum``, whose NaN are skipped, not cast).
    finite_values: bool = False
    nan_skipped: bool = False


# ---------------------------------------------------------------- dtype rules


def _kind(dt: np.dtype) -> str:
    return "b" if dt == np.bool_ else dt.kind


def _check_dtype_kw(name: str, dtype):
    if dtype is not None and name not in _TAKES_DTYPE:
        raise TypeError(f"{name}() does not take dtype=")


def _sum_out(dt: np.dtype, dtype) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    k = _kind(dt)
    if k in "bi":
        return np.dtype(np.int64)
    if k == "u":
        return np.dtype(np.uint64)
    return dt


def _float_out(dt: np.dtype, dtype) -> np.dtype:
    """mean, logsumexp: ints and bool give float64, floats keep their type."""
    if dtype is not None:
        return np.dtype(dtype)
    return dt if _kind(dt) in "fc" else np.dtype(np.float64)


def _acc_of(out: np.dtype) -> np.dtype:
    """Accumulate float16/32 in float64 and complex64 in complex128."""
    if out.kind == "f":
        return np.dtype(np.float64)
    if out.kind == "c":
        return np.dtype(np.complex128)
    return out


# np.exceptions from NumPy 1.25 on; np.ComplexWarning before (removed in 2.0)
_COMPLEX_WARNING = getattr(np, "exceptions", np).ComplexWarning


def _caller_level() -> int:
    """``stacklevel`` for a warning raised in the caller of this function that
    names the first frame outside hrarray (the user's call, whichever of
    ``hr.sum``, ``x.sum`` or ``hr.reduce`` led here)."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    f, level = sys._getframe(1), 1
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(pkg):
        f, level = f.f_back, level + 1
    return level


def complex_cast(out: np.dtype):
    """How a complex value becomes one of the real, integer or bool dtype ``out``,
    as NumPy's cast: its real part (NumPy warns ComplexWarning: see ``build``),
    or for bool, whether either part is non-zero (no warning). The built-in
    ops' elements and a Reducer's complex results (``Reducer._decl``) alike."""
    if out.kind == "b":

        def cast(v):
            return v != 0
    else:

        def cast(v):
            return v.real

    return cast


def _to_acc(dt: np.dtype, out: np.dtype, acc):
    """``map`` of sum, prod and mean: the element as the accumulator; complex
    values into a non-complex ``dtype=`` through :func:`complex_cast`."""
    if dt.kind == "c" and out.kind != "c":
        cast = complex_cast(out)

        def map_(v, j):
            return acc(cast(v))
    else:

        def map_(v, j):
            return acc(v)

    return map_


def _value_dtype(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dt == np.float16 else dt


def _ordering(name: str, dt: np.dtype):
    if dt.kind == "c":
        raise TypeError(f"{name}() is not defined for complex values (dtype {dt})")


def _lowest(dt: np.dtype):
    """Identity of max: -inf for floats, the dtype minimum for ints, False."""
    t = dt.type
    if dt.kind == "f":
        return t(-INF)
    if dt == np.bool_:
        return np.bool_(False)
    return t(np.iinfo(dt).min)


def _highest(dt: np.dtype):
    t = dt.type
    if dt.kind == "f":
        return t(INF)
    if dt == np.bool_:
        return np.bool_(True)
    return t(np.iinfo(dt).max)


def _empty_value(dt: np.dtype):
    """first/last of an empty segment: NaN for floats and complex, else 0."""
    if dt.kind in "fc":
        return _nan_of(dt.type)
    return dt.type(0)


def _nan_of(t):
    """NaN of a float or complex scalar type; complex as NumPy's empty mean
    gives it, ``nan+nanj`` (``complex(nan)`` is ``nan+0j``)."""
    return t(complex(NAN, NAN)) if np.dtype(t).kind == "c" else t(NAN)


# ---------------------------------------------------------------- the ops

# Kernel hints (never semantics): "simd" blocks are plain loops that LLVM
# vectorises; "extreme" blocks take a vectorised fast path when a block is
# all finite (see hrarray/_kernels/cpu.py); the default is ILP lanes.
# "rows": the result is the segment's length, first row or last row, so a
# backend may gather it (one row per segment) instead of reducing; empty
# segments keep the declaration's identity / fill_value (hrarray/_backends/cpu.py).
_SIMD = {"style": "simd"}


def _vsum(dt: np.dtype, acc) -> dict:
    """sum/mean's meta. Float32/float64 values summed in float64 (map the
    plain cast, combine ``+``) reduce their segments of 0-8 elements in one
    vector-IR step (``vmask``: ``_cpu_bits.masked_sum8``); float32 ones also
    their blocks (``vsum``: ``_cpu_bits.block_sum``). Float64 ones take
    ``vsum`` "comp": segments of more than ``cpu.COMP_MIN`` elements sum their
    blocks compensated (``_cpu_bits.block_sum_c``), shorter ones in the plain
    loop (the vector-IR pass for all of them had runs of 0-4-element segments
    7-8 % slower, 2 threads, and the compensated one made one-block segments
    1.2-1.5x slower)."""
    if dt.kind == "f" and dt.itemsize in (4, 8) and acc is np.float64:
        # float64 values: "comp" (the rounding errors of the blocks' and the
        # pairwise stack's additions kept; cpu._reduce_1d_code)
        return {**_SIMD, "vmask": True, "vsum": True if dt == np.float32 else "comp"}
    if dt.kind in "biu" and acc in (np.int64, np.uint64):
        # integer sums (and mean into an integer dtype=): _cpu_bits.masked_isum8
        return {**_SIMD, "vmask": "uint" if acc is np.uint64 else "int"}
    return _SIMD


def _extreme_meta(name: str, dt: np.dtype) -> dict:
    if name.startswith("nan") or _value_dtype(dt).kind != "f":
        return {"style": "simd"} if dt.kind in "biu" else {}
    return {"style": "extreme", "kind": name}



def _sum(name, dt, dtype, ddof):
    out = _sum_out(dt, dtype)
    acc = _acc_of(out).type
    zero = acc(0)

    map_ = _to_acc(dt, out, acc)

    def combine(a, b):
        return a + b

    def finalize(s, n):
        return s

    meta = _vsum(dt, acc)
    if dt == np.float64 and meta.get("vmask") is True:
        # runs of 0-4-element segments 8 at a time (the CPU's group step,
        # _cpu_bits.group_sum8): float64 sums gained; not float32 sums (their
        # one-segment step was quicker) nor means (their division per
        # segment made the group slower; bench/RESULTS.md Run 47)
        meta = {**meta, "group": True}
    return Decl(("sum", dt.str, out.str), zero, map_, combine, finalize, meta=meta), out


def _prod(name, dt, dtype, ddof):
    out = _sum_out(dt, dtype)
    acc = _acc_of(out).type
    one = acc(1)

    map_ = _to_acc(dt, out, acc)

    def combine(a, b):
        return a * b

    def finalize(s, n):
        return s

    meta = _SIMD
    if dt.kind == "f" and out == dt:
        # products are taken in lanes: where a lane's partial product overflows
        # and another's underflows (1e200 and 1e-200 alternating), inf * 0 gave
        # NaN where NumPy's in-order product is finite. The CPU backend redoes
        # each segment whose product is not finite in NumPy's order.
        meta = {**_SIMD, "redo_nonfinite_in_order": True}
    return Decl(("prod", dt.str, out.str), one, map_, combine, finalize, meta=meta), out


def _mean(name, dt, dtype, ddof):
    out = _float_out(dt, dtype)
    acc = _acc_of(out).type
    zero = acc(0)
    # an integer dtype= accumulates in it (as NumPy) and divides into float64
    nan = _nan_of(acc) if out.kind in "fc" else np.float64(NAN)
    map_ = _to_acc(dt, out, acc)

    def combine(a, b):
        return a + b

    def finalize(s, n):
        # acc(s): under an integer dtype= the sum wraps in that dtype before the
        # division, as NumPy's (Numba adds small integers in int64: [100] * 3 into
        # int8 gave 100, not 44 / 3 = 14; the 2-D rows, stored in that dtype,
        # wrapped already); a no-op for float and complex sums. The divisor is
        # chosen, not the quotient (0/0 would raise ZeroDivisionError under
        # Python semantics): a select, where ``s / n if n > 0 else nan`` compiled
        # to a branch that segments of 0-4 elements (a fifth of them empty)
        # mispredicted, 1.1-1.5x the time (bench/RESULTS.md Run 52). Same bits:
        # s / NaN is that NaN, and n > 0 divides by float64(n) either way.
        return acc(s) / (n if n > 0 else nan)

    return Decl(("mean", dt.str, out.str), zero, map_, combine, finalize, meta=_vsum(dt, acc)), out


def _var_common(name, dt, dtype, ddof, take_sqrt):
    if dtype is not None:
        out = np.dtype(dtype)
    elif dt.kind == "c":
        out = np.dtype(np.float32) if dt == np.complex64 else np.dtype(np.float64)
    else:
        out = _float_out(dt, None)
    is_complex = dt.kind == "c"
    mt = np.complex128 if is_complex else np.float64
    f64 = np.float64
    ddof_ = np.int64(ddof)
    nan = f64(NAN)
    inf = f64(INF)
    # finite(): a range test, not ``d - d == 0``, which LLVM folds to true
    # under the CPU kernels' reassoc + nsz; ``&``, not ``and``: no branch
    if not is_complex:

        def finite(d):
            return (d > -inf) & (d < inf)

        # Real values: the state is (count, shift, sum of (v - shift), M2), the
        # mean held as shift + sum / count with the shift an element of the
        # segment (exact) and the sum of the data's own scale. Holding the mean
        # itself (Chan's (count, mean, M2)) rounds it at ulp(mean) on every
        # update: the variance of 1e9 + N(0, 1) came out 1e-8 wrong, where
        # NumPy's two passes are 1e-14 and this is 1e-16.
        ident = (np.int64(0), f64(0), f64(0), f64(0))

        def map_(v, j):
            return (np.int64(1), f64(v), f64(0), f64(0))

        def combine(a, b):
            # Chan et al.'s pairwise update of M2, each mean relative to a's
            # shift: associative up to rounding, so runs, blocks and chunks merge.
            na, ka, sa, qa = a
            nb, kb, sb, qb = b
            if nb == 0:
                return a
            if na == 0:
                return b
            fa = f64(na)
            fb = f64(nb)
            sb = sb + fb * (kb - ka)  # b's deviations from a's shift
            e = sb * fa - sa * fb  # na * nb * (mean_b - mean_a)
            inv = 1.0 / (fa * fb * f64(na + nb))  # one division per combine
            q = qa + qb + (e * inv) * e  # not e * e, which overflows first
            # a NaN or +-inf element becomes the shift, and stays: a NaN result
            k = ka if finite(kb) else kb
            return (na + nb, k, sa + sb, q)

        m2 = 3
    else:
        # Complex values keep Chan's (count, mean, M2), whose complex128 state
        # (32 bytes) fits the CUDA kernels' static shared memory where the
        # shifted one (48 bytes) does not (50,192 of 49,152 bytes): a large
        # common offset costs digits here, as it did for real values.
        ident = (np.int64(0), mt(0), f64(0))

        def finite(d):
            return (d.real > -inf) & (d.real < inf) & (d.imag > -inf) & (d.imag < inf)

        def sq(d):
            return d.real * d.real + d.imag * d.imag

        def map_(v, j):
            return (np.int64(1), mt(v), f64(0))

        def combine(a, b):
            na, ma, qa = a
            nb, mb, qb = b
            n = na + nb
            if nb == 0:
                return a
            if na == 0:
                return b
            d = mb - ma
            inv = 1.0 / f64(n)  # one division per combine
            wa = f64(na) * inv
            wb = f64(nb) * inv
            # two finite means whose difference overflows (1e308 and -1e308):
            # the weighted form, which cannot; NaN or inf means give NaN or inf
            # either way
            m1 = ma + d * wb
            m2_ = ma * wa + mb * wb
            m = m1 if finite(d) else m2_
            q = qa + qb + sq(d) * (f64(na) * wb)
            return (n, m, q)

        m2 = 2

    def variance(s):
        c = s[0]
        if not finite(s[1]):  # a NaN or +-inf element: NumPy gives NaN
            return nan
        q = s[m2]
        if q != q:  # finite values whose deviations overflow (inf - inf): inf
            q = inf
        return q / f64(c - ddof_) if c > ddof_ else nan

    if take_sqrt:

        def finalize(s, n):
            return math.sqrt(variance(s))  # sqrt(NaN) is NaN, no error
    else:

        def finalize(s, n):
            return variance(s)

    def is_empty(s, n):
        return s[0] <= ddof_

    key = (name.removeprefix("nan"), dt.str, out.str, int(ddof))
    # style "var": the CPU kernel gets the state of a block of finite real
    # values from two vectorised passes (hrarray._kernels.cpu); every other
    # path runs this declaration
    meta = {} if is_complex else {"style": "var"}
    return Decl(key, ident, map_, combine, finalize, is_empty, meta=meta), out


def _var(name, dt, dtype, ddof):
    return _var_common(name, dt, dtype, ddof, False)


def _std(name, dt, dtype, ddof):
    return _var_common(name, dt, dtype, ddof, True)


def _extreme(name, dt, dtype, ddof):
    _ordering(name, dt)
    vt = _value_dtype(dt).type
    is_max = name.endswith("max")
    ident = _lowest(_value_dtype(dt)) if is_max else _highest(_value_dtype(dt))

    def map_(v, j):
        return vt(v)

    if is_max:

        def combine(a, b):
            # NaN propagates (NumPy): keep a NaN once seen.
            if a != a:
                return a
            if b != b or b > a:
                return b
            return a
    else:

        def combine(a, b):
            if a != a:
                return a
            if b != b or b < a:
                return b
            return a

    def finalize(s, n):
        return s

    key = (name.removeprefix("nan"), dt.str)
    return Decl(key, ident, map_, combine, finalize, meta=_extreme_meta(name, dt)), dt


def _argextreme(name, dt, dtype, ddof):
    _ordering(name, dt)
    vdt = _value_dtype(dt)
    vt = vdt.type
    is_max = name.endswith("max")
    ident = (_lowest(vdt) if is_max else _highest(vdt), np.int64(-1))

    def map_(v, j):
        return (vt(v), np.int64(j))

    if is_max:

        def better(x, y):
            return x > y
    else:

        def better(x, y):
            return x < y

    def combine(a, b):
        # index -1 marks the identity; the first NaN wins (NumPy), then the
        # extreme value, then the lowest index.
        av, ai = a
        bv, bi = b
        if ai < 0:
            return b
        if bi < 0:
            return a
        a_nan = av != av
        b_nan = bv != bv
        if a_nan or b_nan:
            if a_nan and b_nan:
                return a if ai < bi else b
            return a if a_nan else b
        if better(bv, av):
            return b
        if bv == av and bi < ai:
            return b
        return a

    def step(a, v, j):
        # combine(a, map_(v, j)) where j is above a's index: the identity and a
        # NaN already held settle it, then a NaN or a strictly better value
        # wins (a tie keeps a, the lower index); ~1/4 of combine's instructions
        # in the CUDA element loop
        av, ai = a
        x = vt(v)
        # & and |, not and/or: no short-circuit branches, one select per field
        take = (ai < 0) | ((av == av) & ((x != x) | better(x, av)))
        return (x if take else av, np.int64(j) if take else ai)

    def finalize(s, n):
        return s[1]

    key = (name.removeprefix("nan"), dt.str)
    meta = _extreme_meta(name, dt)
    return (Decl(key, ident, map_, combine, finalize, meta=meta, step=step),
            np.dtype(np.int64))


def _nan_extreme(name, dt, dtype, ddof):
    """nanmax/nanmin/nanargmax/nanargmin of float values: max/argmax's state
    with NaN as "nothing taken" instead of a count appended to it.

    The identity's value is NaN and ``combine`` drops a NaN-valued side, so a
    state's value is NaN exactly when its elements are all NaN (or none): that
    is the empty test, and finalize gives the op's empty result (-inf / +inf,
    -1) for it. The state is max/argmax's own, so the CPU kernel's "extreme"
    paths serve these ops too (meta ``skipnan``: their select rule lets a
    value replace a NaN state and never a NaN replace a state); the counted
    variant ran the generic lanes, 2.2x max's time and 9x argmax's (1-D float32).
    """
    vdt = _value_dtype(dt)
    vt = vdt.type
    base = name.removeprefix("nan")
    is_max = base.endswith("max")
    nan = vt(NAN)
    empty = _lowest(vdt) if is_max else _highest(vdt)

    if is_max:

        def better(x, y):
            return x > y
    else:

        def better(x, y):
            return x < y

    meta = {"style": "extreme", "kind": base, "skipnan": True}
    if base in ("max", "min"):

        def map_(v, j):
            return vt(v)

        def combine(a, b):
            if b != b:
                return a
            if a != a or better(b, a):
                return b
            return a

        def finalize(s, n):
            return s if s == s else empty

        def is_empty(s, n):
            return s != s

        return Decl((name, dt.str), nan, map_, combine, finalize, is_empty, meta=meta), dt

    def map_(v, j):
        return (vt(v), np.int64(j))

    def combine(a, b):
        # a NaN-valued side holds nothing; then the extreme value, then the
        # lowest index (as argmax)
        av, ai = a
        bv, bi = b
        if bv != bv:
            return a
        if av != av or better(bv, av):
            return b
        if bv == av and bi < ai:
            return b
        return a

    def step(a, v, j):
        # combine(a, map_(v, j)) for j above a's index, as selects: a
        # value (not NaN) replaces a NaN state or a worse one
        av, ai = a
        x = vt(v)
        take = better(x, av) | ((av != av) & (x == x))
        return (x if take else av, np.int64(j) if take else ai)

    def finalize(s, n):
        return s[1] if s[0] == s[0] else np.int64(-1)

    def is_empty(s, n):
        return s[0] != s[0]

    return (Decl((name, dt.str), (nan, np.int64(-1)), map_, combine, finalize, is_empty,
                 meta=meta, step=step), np.dtype(np.int64))


def _count(name, dt, dtype, ddof):
    zero = np.int64(0)

    def map_(v, j):
        return zero

    def combine(a, b):
        return a

    def finalize(s, n):
        return n

    meta = {**_SIMD, "rows": "count"}
    return Decl(("count", dt.str), zero, map_, combine, finalize, meta=meta), np.dtype(np.int64)


def _count_nonzero(name, dt, dtype, ddof):
    zero = np.int64(0)
    one = np.int64(1)
    vt = _value_dtype(dt).type
    vzero = vt(0)

    def map_(v, j):
        return one if v != vzero else zero

    def combine(a, b):
        return a + b

    def finalize(s, n):
        return s

    key = ("count_nonzero", dt.str)
    return Decl(key, zero, map_, combine, finalize, meta=_SIMD), np.dtype(np.int64)


def _any_all(name, dt, dtype, ddof):
    vt = _value_dtype(dt).type
    vzero = vt(0)
    # ``|`` and ``&``, not ``or`` and ``and``: the same on bools, without the
    # short-circuit branch, so LLVM vectorises the CPU blocks (1-D float32
    # any took 1.7x the time of count_nonzero)
    if name == "any":
        ident = np.bool_(False)

        def combine(a, b):
            return a | b
    else:
        ident = np.bool_(True)

        def combine(a, b):
            return a & b

    def map_(v, j):
        return v != vzero

    def finalize(s, n):
        return s

    return Decl((name, dt.str), ident, map_, combine, finalize, meta=_SIMD), np.dtype(np.bool_)


def _logsumexp(name, dt, dtype, ddof):
    if dt.kind == "c":
        raise TypeError(f"{name}() is not defined for complex values (dtype {dt})")
    out = _float_out(dt, dtype)
    f64 = np.float64
    ident = (f64(-INF), f64(0))

    def map_(v, j):
        return (f64(v), f64(1))

    def combine(a, b):
        # Online log-sum-exp: (running max, sum of exp(x - max)).
        ma, sa = a
        mb, sb = b
        if ma != ma or mb != mb:
            return (ma + mb, sa + sb)  # NaN propagates
        if ma == mb:
            return (ma, sa + sb)
        if ma > mb:
            return (ma, sa + sb * math.exp(mb - ma))
        return (mb, sb + sa * math.exp(ma - mb))

    def finalize(s, n):
        m, t = s
        if m == INF or m == -INF:
            return m
        return m + math.log(t)

    # style "lse": the CPU kernel reduces all-finite blocks with a vectorised
    # exp (hrarray._kernels.cpu); the declaration is what every other path runs
    meta = {"style": "lse"}
    return Decl(("logsumexp", dt.str, out.str), ident, map_, combine, finalize, meta=meta), out


def _first_last(name, dt, dtype, ddof):
    vt = _value_dtype(dt).type
    ident = (vt(_empty_value(_value_dtype(dt))), np.int64(-1))
    first = name == "first"

    def map_(v, j):
        return (vt(v), np.int64(j))

    if first:

        def combine(a, b):
            if a[1] < 0:
                return b
            if b[1] < 0:
                return a
            return a if a[1] <= b[1] else b
    else:

        def combine(a, b):
            if a[1] < 0:
                return b
            if b[1] < 0:
                return a
            return a if a[1] >= b[1] else b

    def finalize(s, n):
        return s[0]

    return Decl((name, dt.str), ident, map_, combine, finalize, meta={"rows": name}), dt


_BASE = {
    "sum": _sum,
    "prod": _prod,
    "mean": _mean,
    "var": _var,
    "std": _std,
    "max": _extreme,
    "min": _extreme,
    "argmax": _argextreme,
    "argmin": _argextreme,
    "count": _count,
    "count_nonzero": _count_nonzero,
    "any": _any_all,
    "all": _any_all,
    "logsumexp": _logsumexp,
    "first": _first_last,
    "last": _first_last,
}

_TAKES_DTYPE = {"sum", "prod", "mean", "var", "std", "nansum", "nanmean", "nanvar", "nanstd"}


# ---------------------------------------------------------------- nan* variants


def _nan_variant(base_decl: Decl) -> Decl:
    """Skip NaN: NaN elements map to the identity and an extra count tracks
    the non-NaN elements, which ``finalize``/``is_empty`` see as ``n``.
    An all-NaN segment therefore counts as empty, as the API promises.
    The state stays flat: the count is appended to the base state."""
    bmap, bcomb, bfin, bempty = (
        base_decl.map,
        base_decl.combine,
        base_decl.finalize,
        base_decl.is_empty,
    )
    zero = np.int64(0)
    one = np.int64(1)
    ident0 = base_decl.identity
    k = base_decl.arity
    if k == 0:

        def map_(v, j):
            if v != v:
                return (ident0, zero)
            return (bmap(v, j), one)

        def combine(a, b):
            return (bcomb(a[0], b[0]), a[1] + b[1])

        def finalize(s, n):
            return bfin(s[0], s[1])

        def is_empty(s, n):
            return bempty(s[0], s[1])

        ident = (ident0, zero)
    else:
        ident_nan = ident0 + (zero,)

        def map_(v, j):
            if v != v:
                return ident_nan
            return bmap(v, j) + (one,)

        def combine(a, b):
            return bcomb(a[:k], b[:k]) + (a[k] + b[k],)

        def finalize(s, n):
            return bfin(s[:k], s[k])

        def is_empty(s, n):
            return bempty(s[:k], s[k])

        ident = ident_nan
    # Kernel hints carried over: nanvar/nanstd of real values take the CPU
    # kernel's fast blocks as var's (see _var_common) where a block has no NaN;
    # nansum/nanmean keep sum's "simd" (their NaN test is a select LLVM
    # vectorises; the generic lanes took 1.06-1.22x the time). (Float
    # nanmax/nanmin/nanargmax/nanargmin are not made here: _nan_extreme.)
    # nansum/nanmean of float32/float64 keep sum's one vector-IR step for
    # segments of 0-8 elements too, as its NaN-skipping form (vmask "nan":
    # _cpu_bits.masked_nansum8, the state (sum, count)).
    style = base_decl.meta.get("style")
    meta = ({"style": "nanvar"} if style == "var"
            else {"style": "simd"} if style == "simd" else {})
    if base_decl.meta.get("vmask") is True and k == 0:  # floats only
        meta["vmask"] = "nan"
    if base_decl.meta.get("vsum") == "comp":
        # float64 nansum/nanmean: sum's compensated blocks over the elements
        # that are not NaN (cpu._comp: "nancomp"); their plain pairwise order
        # was farther from the exact sum than np.nansum on 15 of 20 seeds
        # (10^6 normal values, 1 % NaN; up to 36 ulp)
        meta["vsum"] = "nancomp"
    return Decl(("nan",) + base_decl.key, ident, map_, combine, finalize, is_empty, meta=meta)


NAN_OPS = ("nansum", "nanmean", "nanmax", "nanmin", "nanvar", "nanstd", "nanargmax", "nanargmin")
OPS = tuple(_BASE) + NAN_OPS
_NAN_EXTREMES = ("nanmax", "nanmin", "nanargmax", "nanargmin")


def parse_dtype(dtype, shown: str) -> np.dtype:
    """``np.dtype(dtype)`` in native byte order (a result is always native: '>f8'
    reached Numba as an untypable pyobject, and NumPy's reductions refuse a byte
    order); a TypeError naming ``dtype=`` and the function ``shown``."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{shown}(): dtype={dtype!r} is not a dtype ({exc})") from None
    return dt if dt.isnative else dt.newbyteorder("=")


def build(name: str, in_dtype, *, dtype=None, ddof: int = 0, label: str | None = None) -> Spec:
    """Declaration, result dtype and kernel value dtype of op ``name``.

    ``label``: the function the user called, for messages, where it is not
    ``name`` (``cumsum`` builds ``sum``'s declaration).

    Specs are memoised: the same request returns the same declaration, so the
    per-call cost is a dictionary lookup.
    """
    shown = label or name
    in_dtype = np.dtype(in_dtype)
    if dtype is not None:
        dtype = parse_dtype(dtype, shown)
    spec = _build(name, in_dtype, dtype, int(ddof), shown)
    if (
        dtype is not None
        and in_dtype.kind == "c"
        and dtype.kind not in "cb"
        and name.removeprefix("nan") in ("sum", "prod", "mean")
    ):
        warnings.warn(
            f"{shown}() of complex values into dtype={dtype} discards the imaginary part",
            _COMPLEX_WARNING,
            stacklevel=_caller_level(),
        )
    return spec


def kernel_dtype(dt) -> bool:
    """Whether the kernels take ``dt``: bool, integers, float16/32/64, complex64/128.
    Not ``longdouble`` / ``clongdouble`` (Numba has no such type: its TypingError would
    surface) nor text, dates or objects."""
    dt = np.dtype(dt)
    if dt.kind in "biu":
        return True
    return (dt.kind == "f" and dt.itemsize <= 8) or (dt.kind == "c" and dt.itemsize <= 16)


@functools.lru_cache(maxsize=1024)
def _build(name: str, in_dtype: np.dtype, dtype, ddof: int, shown: str) -> Spec:
    if name not in OPS:
        raise ValueError(f"unknown reduction {name!r}; choose one of {', '.join(OPS)}")
    _check_dtype_kw(name, dtype)
    if not kernel_dtype(in_dtype):
        raise TypeError(
            f"unsupported dtype {in_dtype} for {shown}(): "
            "use bool, integer, float (up to float64) or complex (up to complex128) values"
        )
    if in_dtype.kind == "c" and name.removeprefix("nan") not in _COMPLEX_OK:
        raise TypeError(f"{name}() is not defined for complex values (dtype {in_dtype})")
    if dtype is not None and not kernel_dtype(dtype):
        raise TypeError(f"{shown}(): dtype={dtype} is not a numeric dtype the kernels take "
                        "(bool, integer, float up to float64, complex up to complex128)")
    if (
        dtype is not None
        and name in ("nanmean", "nanvar", "nanstd")
        and in_dtype.kind in "fc"
        and dtype.kind not in "fc"
    ):
        # as NumPy: NaN-skipping means of inexact values stay inexact
        raise TypeError(f"{name}() of {in_dtype} values needs a float or complex dtype=, "
                        f"got dtype={dtype}")
    if ddof < 0:
        raise ValueError(f"ddof must be >= 0, got {ddof}")
    base = name.removeprefix("nan") if name in NAN_OPS else name
    if name in _NAN_EXTREMES and in_dtype.kind == "f":
        decl, out = _nan_extreme(name, in_dtype, dtype, ddof)
    else:
        decl, out = _BASE[base](name, in_dtype, dtype, ddof)
        if name in NAN_OPS and in_dtype.kind in "fc":
            decl = _nan_variant(decl)
    out = np.dtype(out)
    if base in ("var", "std") and out.kind == "f" and not (base == "var" and out == np.float64):
        # A kernel hint: var and std at any float result dtype are the float64 variance
        # (what their finalize computes before the store rounds it), then a square root
        # for std, then that rounding. The CPU backend runs this one declaration for all of
        # them -- one compile per input dtype and ddof instead of up to four, same bits; the
        # CUDA backend runs ``decl`` itself.
        var_name = "nanvar" if name in NAN_OPS else "var"
        var64 = _build(var_name, in_dtype, np.dtype(np.float64), ddof, var_name).decl
        decl = replace(decl, meta={**decl.meta, "var64": (var64, base == "std")})
    if base in ("mean", "var", "std") and out.kind in "biu":
        # NaN for empty: the kernel gives float64, the caller casts (Spec.cast_to)
        return Spec(decl, np.dtype(np.float64), _value_dtype(in_dtype), cast_to=out,
                    finite_values=base == "mean" and in_dtype.kind in "fc")
    if base in ("sum", "prod") and out.kind in "iu" and in_dtype.kind in "fc":
        return Spec(decl, out, _value_dtype(in_dtype), finite_values=True,
                    nan_skipped=name in NAN_OPS)
    return Spec(decl, out, _value_dtype(in_dtype))


_COMPLEX_OK = {"sum", "prod", "mean", "var", "std", "count", "count_nonzero", "any", "all",
               "first", "last"}
