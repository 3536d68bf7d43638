"""Declarations of the segment-wise transforms (API.md section 3).

Every transform is built from two kinds of declaration, each compiled by the
kernel factories of every backend:

* a reduction :class:`~hrarray.reducer.Decl` run through ``backend.reduce``
  (or ``backend.reduce_aux`` when its ``map`` reads a per-element auxiliary
  value) -- the per-segment statistics of ``softmax``, the online softmax of
  ``attention_pool``, the running state of ``cumsum``;
* a :class:`MapDecl`, an elementwise function ``fn(v, p)`` of an element
  ``v`` and the row ``p`` of a per-segment array (``fn(p)`` when the values
  are not read), run through ``backend.segment_map``.

Builders are memoised (the same request returns the same declaration), so
the per-call cost is a dictionary lookup. The transforms are then:

==================  ==================================================
``softmax``         ``reduce(stats)`` then ``segment_map(exp(v - m) / s)``
``log_softmax``     ``reduce(stats)`` then ``segment_map(v - m - log s)``
``cumsum``          ``segment_scan(sum)`` (the ``sum`` declaration)
``broadcast``       ``segment_map(p)`` (values not read)
``attention_pool``  ``reduce_aux(online softmax)``: one pass
==================  ==================================================

The softmax statistics are the online log-sum-exp state ``(m, s)`` (running
max, sum of ``exp(v - m)``), kept *separately* rather than as ``m + log s``:
``exp(v - lse)`` would carry the rounding error of ``|lse|`` (about
``|m| * eps``) into every result, ``exp(v - m) / s`` does not. The two
float64 numbers travel as one complex128 per segment and column
(``complex(m, s)``), so the statistics pass is an ordinary reduction with a
scalar result on every backend.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hrarray import _ops
from hrarray._ops import Spec
from hrarray.reducer import Decl

__all__ = [
    "MapDecl",
    "attention_spec",
    "broadcast_map",
    "cumsum_spec",
    "softmax_map",
    "softmax_stats",
]

NAN = math.nan
INF = math.inf


@dataclass(frozen=True, eq=False)
class MapDecl:
    """An elementwise map over segments (internal).

    For element ``j`` of segment ``i``, column ``c``:
    ``out[j, c] = fn(values[j, c], per_segment[i, c])``, or
    ``fn(per_segment[i, c])`` when ``value_dtype`` is None (the values are not
    read: ``broadcast``). ``key`` identifies the declaration for the kernel
    cache. ``out_dtype`` is the dtype of the result; ``value_dtype`` the dtype
    the kernel reads the values as (float16 is read as float32).
    """

    key: tuple
    fn: Callable
    out_dtype: np.dtype
    value_dtype: np.dtype | None = None

    @property
    def reads_values(self) -> bool:
        return self.value_dtype is not None


def _float_kind(name: str, dt: np.dtype) -> None:
    if dt.kind not in "biuf" or not _ops.kernel_dtype(dt):
        raise TypeError(
            f"{name}() needs bool, integer or real float (up to float64) values, got dtype {dt}"
        )


# ---------------------------------------------------------------- softmax


@functools.lru_cache(maxsize=256)
def softmax_stats(name: str, in_dtype: np.dtype) -> Spec:
    """The per-segment statistics of ``softmax`` / ``log_softmax``.

    The online log-sum-exp state ``(m, s)`` in float64, finalised as
    ``complex(m, s)`` (softmax) or ``complex(m, log(s))`` (log_softmax): one
    complex128 per segment and column. NaN propagates into ``m``; an empty
    or all ``-inf`` segment has ``m = -inf``.
    """
    in_dtype = np.dtype(in_dtype)
    _float_kind(name, in_dtype)
    base = _ops.build("logsumexp", in_dtype)  # its state (m, s) is float64 for every dtype
    log = name == "log_softmax"
    lse = base.decl
    if log:

        def finalize(st, n):
            m, s = st
            return complex(m, math.log(s)) if s > 0.0 else complex(m, -INF)
    else:

        def finalize(st, n):
            return complex(st[0], st[1])

    decl = Decl(
        ("softmax_stats", log, in_dtype.str),
        lse.identity,
        lse.map,
        lse.combine,
        finalize,
        meta=lse.meta,
    )
    return Spec(decl, np.dtype(np.complex128), base.value_dtype)


def exp_nonpos(d):
    """``exp(d)`` for ``d <= 0`` (never NaN). A declaration that closes over it
    gets the backend's own version: ``math.exp`` on CUDA; on the CPU a
    vectorisable polynomial with the same results to 2.6e-16
    (``hrarray._kernels.cpu``: the map kernels substitute it when compiling)."""
    return math.exp(d)


def softmax_out_dtype(in_dtype: np.dtype) -> np.dtype:
    """Floats keep their type (computed in float64), bool/int give float64."""
    in_dtype = np.dtype(in_dtype)
    return in_dtype if in_dtype.kind == "f" else np.dtype(np.float64)


@functools.lru_cache(maxsize=256)
def softmax_map(name: str, in_dtype: np.dtype) -> MapDecl:
    """``exp(v - m) / s`` (softmax) or ``(v - m) - log s`` (log_softmax).

    A segment column whose ``m`` is not finite gives NaN for every element:
    NaN present (NaN propagates), all ``-inf`` (``0/0``) or a ``+inf`` present
    (``inf - inf``), as PyTorch.
    """
    in_dtype = np.dtype(in_dtype)
    _float_kind(name, in_dtype)
    out = softmax_out_dtype(in_dtype)
    vdt = _ops._value_dtype(in_dtype)
    f64 = np.float64
    nan = f64(NAN)
    log = name == "log_softmax"
    # Selects, not an early return: the 2-D map's columns have their own m, and
    # LLVM vectorises the loop over them only without the branch (with it, the
    # CPU's 2-D softmax map ran a scalar exp per element: (n, 64) rows, 1
    # thread, float32 105 -> 67-75 ms, float64 148 -> 76; bench/RESULTS.md Run
    # 39). 1-D maps hoist the branch out of the segment's loop either way. The
    # same arithmetic wherever m is finite: the same results.
    if log:

        def fn(v, p):
            m = p.real
            ok = (m > -INF) & (m < INF)
            r = (f64(v) - m) - p.imag
            return r if ok else nan
    else:
        exp_ = exp_nonpos  # a closure cell: backends substitute their own (see jitify)

        def fn(v, p):
            m = p.real
            ok = (m > -INF) & (m < INF)
            # v - m <= 0 where m is finite (the column's max: no NaN, no +inf);
            # elsewhere exp_(0) / 1, never a NaN argument nor a division by
            # zero (the simulator's Python floats would raise), and NaN returned
            e = exp_(f64(v) - m if ok else 0.0) / (p.imag if ok else 1.0)
            return e if ok else nan

    return MapDecl(("softmax_map", log, vdt.str), fn, out, vdt)


# ---------------------------------------------------------------- cumsum


def cumsum_spec(in_dtype: np.dtype, dtype=None) -> Spec:
    """The scan of ``cumsum`` is the ``sum`` declaration: its state is the
    running sum (float16/float32 accumulated in float64), ``finalize`` the
    identity; result dtype as ``sum`` (bool/int -> int64, uint -> uint64,
    floats and complex -> same)."""
    return _ops.build("sum", np.dtype(in_dtype), dtype=dtype, label="cumsum")


# ---------------------------------------------------------------- broadcast


@functools.lru_cache(maxsize=256)
def broadcast_map(dt: np.dtype) -> MapDecl:
    """``out[j] = per_segment[i]``: the values are not read."""

    def fn(p):
        return p

    return MapDecl(("broadcast", np.dtype(dt).str), fn, np.dtype(dt), None)


# ---------------------------------------------------------------- attention_pool


def attention_out_dtype(x_dtype: np.dtype, score_dtype: np.dtype) -> np.dtype:
    """``np.result_type`` of values and scores; bool/int results give float64."""
    out = np.result_type(np.dtype(x_dtype), np.dtype(score_dtype))
    return out if out.kind == "f" else np.dtype(np.float64)


@functools.lru_cache(maxsize=256)
def attention_spec(x_dtype: np.dtype, score_dtype: np.dtype) -> Spec:
    """The online softmax-weighted sum, one pass: state ``(m, s, mean)`` in float64.

    ``m`` is the running max score, ``s`` the sum of ``exp(w - m)``, ``mean``
    the values' mean weighted by those terms (``sum v exp(w - m) / s``).
    ``map(v, w, j)`` turns an element ``v`` with score ``w`` into
    ``(w, 1, v)``; ``combine`` rescales the state with the smaller running
    max by ``exp(m_small - m_big)`` (Milakov & Gimelshein's online softmax),
    so the weights ``softmax(scores)`` are never materialised and the scores
    and values are read once. The mean, not the weighted sum, is carried: a
    convex combination of two means cannot overflow, where the sum did for
    values near the float64 range's end (17 values of 1e308 summed to inf;
    then, weighted by an ``exp`` that underflowed to 0, inf * 0 gave NaN for
    a finite result). ``finalize`` gives the mean; an empty segment gives 0
    (``fill_value=`` replaces it); a NaN score or value, an all ``-inf`` or a
    ``+inf`` score column gives NaN (as ``softmax``).
    """
    x_dtype, score_dtype = np.dtype(x_dtype), np.dtype(score_dtype)
    _float_kind("attention_pool", x_dtype)
    if score_dtype.kind not in "biuf" or not _ops.kernel_dtype(score_dtype):
        raise TypeError(
            f"attention_pool() needs bool, integer or real float scores, got dtype {score_dtype}"
        )
    out = attention_out_dtype(x_dtype, score_dtype)
    f64 = np.float64
    zero = f64(0)
    one = f64(1)
    nan = f64(NAN)
    big = f64(np.finfo(np.float64).max)
    ident = (f64(-INF), zero, zero)

    def map_(v, w, j):
        return (f64(w), one, f64(v))

    def mix(xa, xb, r):
        # (1 - r) xa + r xb, r in [0, 1]: xa + (xb - xa) r (exactly xa when
        # the two are equal), or, where xb - xa overflows (means of opposite
        # sign near the range's end) or is NaN, the convex form
        d = xb - xa
        if abs(d) <= big:
            return xa + d * r
        return xa * (one - r) + xb * r

    def combine(a, b):
        ma, sa, xa = a
        mb, sb, xb = b
        if ma != ma or mb != mb:
            return (ma + mb, sa + sb, xa + xb)  # NaN score propagates
        if ma == mb:  # also both -inf (the identity) and both +inf
            s = sa + sb
            if s == zero:  # two identities
                return (ma, s, xa + xb)
            return (ma, s, mix(xa, xb, sb / s))
        if ma > mb:
            t = sb * math.exp(mb - ma)
            s = sa + t
            return (ma, s, mix(xa, xb, t / s))
        t = sa * math.exp(ma - mb)
        s = sb + t
        return (mb, s, mix(xb, xa, t / s))

    def finalize(st, n):
        m, _s, mean = st
        if n == 0:
            return zero
        if not (m > -INF and m < INF):
            return nan
        return mean

    vdt = _ops._value_dtype(x_dtype)
    decl = Decl(
        ("attention_pool", vdt.str, out.str),
        ident,
        map_,
        combine,
        finalize,
        aux=True,
        # a backend may run 2-D values with one state (m, s) per row: the row
        # step must agree with combine(state, map_(v, w, j)) column by column
        # (the CPU's row kernel: weighted sums divided at the piece's end,
        # equal up to rounding; the declaration's own steps where they
        # overflow)
        # strict_fp: its functions compiled without fastmath's reassoc, which
        # folds mix's convex form back into xa + (xb - xa) r, the overflowing
        # one (-inf for the means 1e308 and -1e308)
        meta={"rows": "online_softmax", "style": "pool", "strict_fp": True},
    )
    return Spec(decl, out, vdt)
