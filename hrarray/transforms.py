"""Segment-wise transforms (API.md section 3): same structure in, same structure out.

``softmax``, ``log_softmax``, ``cumsum`` and ``broadcast`` return a compact
``RaggedArray`` with ``x``'s structure; ``attention_pool`` reduces like a
reduction. Each is expressed with the declarations of
:mod:`hrarray._transforms_ops` and four backend kernel kinds:

==================  ==========================================================
``reduce``          the reductions' kernel (softmax statistics)
``reduce_aux``      a reduction whose map reads a per-element value (scores)
``segment_map``     ``out[j] = fn(values[j], per_segment[i])`` over segment i
``segment_scan``    a declaration's running state, restarting per segment
==================  ==========================================================

A backend without one of them raises ``NotImplementedError`` naming the op and
the device; nothing falls back to another device silently.
"""

from __future__ import annotations

import numpy as np

from hrarray import _ops
from hrarray import _transforms_ops as T
from hrarray._backends import backend_of
from hrarray.ragged import RaggedArray
from hrarray.reduce import _check_levels, _fill_ok, _finite_for_int, _partitioned

__all__ = ["attention_pool", "broadcast", "cumsum", "log_softmax", "softmax"]


# ---------------------------------------------------------------- plumbing


def _kernel(be, method: str, op: str):
    """The backend's kernel entry point ``method``, or a NotImplementedError."""
    fn = getattr(be, method, None)
    if fn is None:
        raise NotImplementedError(
            f"{op}() is not implemented on the {be.name!r} device yet "
            f"(its backend has no {method}() kernel)"
        )
    return fn


def _check_ragged(obj, argname: str, op: str) -> RaggedArray:
    if not isinstance(obj, RaggedArray):
        raise TypeError(f"{op}(): {argname} must be a RaggedArray, got {type(obj).__name__}")
    return obj


def _native(dt: np.dtype) -> np.dtype:
    return dt if dt.isnative else dt.newbyteorder("=")


def _flatten(x: RaggedArray, levels: int):
    """``(levels of compact x, leaf offsets of the level-``levels`` segments, leaf)``.

    Compacting first makes every level's offsets start at 0 (the result is
    compact) and rebases the leaf to the reachable values (a view).
    """
    xc = x._compact()
    lv = xc._levels()
    target = lv[len(lv) - levels]
    return lv, target._composed_offsets(), xc.leaf_values


def _rebuild(leaf, lv):
    """``leaf`` values wrapped in the (compact) levels ``lv``, outermost first."""
    return RaggedArray._rewrap(leaf, lv)


def _first_mismatch(be, a, b) -> int | None:
    """First position where offsets ``a`` and ``b`` differ (None: equal)."""
    if a is b:
        return None
    if a.shape[0] != b.shape[0]:
        return min(a.shape[0], b.shape[0])
    return be.first_mismatch(a, b)


# ---------------------------------------------------------------- softmax


def _softmax(name: str, x, levels):
    if not isinstance(x, RaggedArray) and (hd := _partitioned(x)) is not None:
        return getattr(hd, name)(x, levels=levels)
    x = _check_ragged(x, "x", name)
    levels = _check_levels(x, levels)
    in_dtype = _native(x.dtype)
    stats = T.softmax_stats(name, in_dtype)
    mdecl = T.softmax_map(name, in_dtype)
    be = x._backend
    seg_map = _kernel(be, "segment_map", name)
    lv, offsets, leaf = _flatten(x, levels)
    st = be.reduce(stats, leaf, offsets, 0, False)
    # (compact: the composed offsets run from 0 to len(leaf), known without a read)
    return _rebuild(seg_map(mdecl, leaf, offsets, st, ends=(0, leaf.shape[0])), lv)


def softmax(x, *, levels=1):
    """Softmax within each segment, numerically stable.

    ``out_j = exp(x_j - m) / sum_k exp(x_k - m)`` with ``m`` the segment's
    maximum, computed in two passes over the values: one reduction of the
    online log-sum-exp state ``(m, s)`` per segment, one elementwise map.

    Parameters
    ----------
    x : RaggedArray
        Bool, integer or real float values, any inner shape (each column is
        normalised on its own).
    levels : int, default 1
        Normalise over the flattened leaf range of each level-``levels``
        segment (``levels=x.depth``: over each top segment).

    Returns
    -------
    RaggedArray
        Compact, with ``x``'s structure. dtype: floats keep their type
        (float16/float32 computed in float64 and rounded once), bool/int give
        float64.

    Notes
    -----
    Empty segments stay empty. NaN propagates: a segment column holding a NaN
    is all NaN. A column whose values are all ``-inf`` gives NaN (``0/0``),
    as does one holding ``+inf`` (``inf - inf``), as in PyTorch. ``-inf``
    elements of an otherwise finite column give 0. Complex values are a
    TypeError.

    Examples
    --------
    >>> import numpy as np, hrarray as hr
    >>> x = hr.from_lengths(np.log(np.array([1.0, 3.0, 2.0, 2.0])), [2, 0, 2])
    >>> hr.softmax(x).to_list()
    [[0.25, 0.75], [], [0.5, 0.5]]
    """
    return _softmax("softmax", x, levels)


def log_softmax(x, *, levels=1):
    """Log-softmax within each segment, numerically stable.

    ``out_j = (x_j - m) - log(sum_k exp(x_k - m))`` with ``m`` the segment's
    maximum: one reduction pass and one elementwise pass, as :func:`softmax`.

    Parameters
    ----------
    x : RaggedArray
        Bool, integer or real float values, any inner shape.
    levels : int, default 1
        Normalise over the flattened leaf range of each level-``levels``
        segment.

    Returns
    -------
    RaggedArray
        Compact, with ``x``'s structure; dtype as :func:`softmax`.

    Notes
    -----
    Empty segments stay empty. NaN propagates to the whole segment column; a
    column of all ``-inf``, or one holding ``+inf``, gives NaN; ``-inf``
    elements of an otherwise finite column give ``-inf``.
    """
    return _softmax("log_softmax", x, levels)


# ---------------------------------------------------------------- cumsum


def cumsum(x, exclusive=False, *, levels=1, dtype=None):
    """Cumulative sum restarting at each segment.

    Parameters
    ----------
    x : RaggedArray
        Bool, integer, float or complex values, any inner shape (each column
        is scanned on its own).
    exclusive : bool, default False
        ``False``: ``out_j = x_s + ... + x_j`` (inclusive, as ``np.cumsum``);
        ``True``: ``out_j = x_s + ... + x_{j-1}``, so each segment starts at 0.
    levels : int, default 1
        Scan over the flattened leaf range of each level-``levels`` segment.
    dtype : dtype, optional
        Accumulator and result dtype, as in NumPy.

    Returns
    -------
    RaggedArray
        Compact, with ``x``'s structure. dtype as NumPy's ``cumsum`` (and
        :func:`hrarray.sum`): bool/int -> int64, uint -> uint64, floats and
        complex keep their type; float16/float32 are accumulated in float64
        (complex64 in complex128) and each prefix is rounded once.
        Each prefix is a running sum, as in ``np.cumsum``: its rounding error
        is at most about ``j * u * sum(|x|)`` after ``j`` elements (``u`` of
        the accumulator), not the pairwise bound of :func:`hrarray.sum`.

    Notes
    -----
    Empty segments stay empty. NaN and ``inf`` propagate to the rest of their
    segment as in NumPy; integer sums wrap modulo ``2**64``. Float values
    with an integer ``dtype`` are cast to it element by element, as in
    NumPy; a NaN, an inf or a value out of the dtype's range among them is
    a ``ValueError`` naming its segment (NumPy casts it to an arbitrary
    integer).

    Examples
    --------
    >>> import numpy as np, hrarray as hr
    >>> x = hr.from_lengths(np.array([1, 2, 3, 4]), [3, 0, 1])
    >>> hr.cumsum(x).to_list()
    [[1, 3, 6], [], [4]]
    >>> hr.cumsum(x, exclusive=True).to_list()
    [[0, 1, 3], [], [0]]
    """
    if not isinstance(x, RaggedArray) and (hd := _partitioned(x)) is not None:
        return hd.cumsum(x, exclusive=exclusive, levels=levels, dtype=dtype)
    x = _check_ragged(x, "x", "cumsum")
    if not isinstance(exclusive, (bool, np.bool_)):
        raise TypeError(f"cumsum(): exclusive must be a bool, got {type(exclusive).__name__}")
    levels = _check_levels(x, levels)
    spec = T.cumsum_spec(_native(x.dtype), dtype)
    be = x._backend
    scan = _kernel(be, "segment_scan", "cumsum")
    lv, offsets, leaf = _flatten(x, levels)
    if spec.finite_values:  # float values into an integer dtype=: see _finite_for_int
        _finite_for_int(be, leaf, offsets, spec.out_dtype, "cumsum", False)
    return _rebuild(scan(spec, leaf, offsets, bool(exclusive), ends=(0, leaf.shape[0])), lv)


# ---------------------------------------------------------------- broadcast


def broadcast(per_segment, x, *, levels=1):
    """Repeat row ``i`` of ``per_segment`` over segment ``i`` of ``x``.

    Parameters
    ----------
    per_segment : array of shape ``(nsegments, *row)``, or RaggedArray
        One row per level-``levels`` segment of ``x``, on ``x``'s device. A
        ``RaggedArray`` (such as ``hr.max(x)`` of a deeper ``x``) must have
        the structure of ``x``'s levels above the broadcast ones; its leaf
        rows are used.
    x : RaggedArray
        The structure to broadcast to (its values are not read).
    levels : int, default 1
        Repeat over the flattened leaf range of each level-``levels`` segment.

    Returns
    -------
    RaggedArray
        Compact, with ``x``'s structure; leaf values of shape
        ``(n, *row)``, ``n`` the leaf elements inside ``x``'s segments, and
        ``per_segment``'s dtype (in native byte order: ``'>f8'`` gives
        ``float64``). Empty segments stay empty; NaN is copied
        like any value.

    Raises
    ------
    TypeError
        ``x`` is not a RaggedArray, or ``per_segment`` is not array-like (a
        nested list is read as NumPy reads it), has a non-numeric dtype or
        lives on another device.
    ValueError
        ``per_segment`` has not one row per segment (or, as a RaggedArray,
        another structure).

    Examples
    --------
    >>> import numpy as np, hrarray as hr
    >>> x = hr.from_lengths(np.array([1.0, 2.0, 3.0, 4.0]), [3, 0, 1])
    >>> (x.values - hr.broadcast(hr.max(x), x).values).tolist()
    [-2.0, -1.0, 0.0, 0.0]
    """
    if not isinstance(x, RaggedArray) and (hd := _partitioned(x)) is not None:
        return hd.broadcast(per_segment, x, levels=levels)
    x = _check_ragged(x, "x", "broadcast")
    levels = _check_levels(x, levels)
    lv, offsets, leaf = _flatten(x, levels)
    above = lv[: len(lv) - levels]
    nseg = lv[len(lv) - levels].nsegments
    if isinstance(per_segment, RaggedArray):
        backend_of(("x", x.leaf_values), ("per_segment", per_segment.leaf_values))
        if per_segment.depth != len(above):
            raise ValueError(
                f"broadcast(): per_segment has depth {per_segment.depth} but x has "
                f"{len(above)} level(s) above the {levels} broadcast one(s)"
            )
        pc = per_segment._compact()
        be = x._backend
        for k, (a, b) in enumerate(zip(pc._levels(), above, strict=True)):
            if len(a) != len(b):
                raise ValueError(
                    f"broadcast(): per_segment's level {k + 1} (outermost first) has "
                    f"{len(a)} segments, x's has {len(b)}"
                )
            pos = _first_mismatch(be, a._offsets, b._offsets)
            if pos is not None:
                raise ValueError(
                    f"broadcast(): per_segment's level {k + 1} (outermost first) differs "
                    f"from x's at offsets position {pos}"
                )
        per = pc.leaf_values
    else:
        if isinstance(per_segment, (int, float, complex, np.number, np.bool_)):
            # a Python or NumPy number is no array on any device: the same
            # ValueError for every x (CUDA's device check had made it a
            # TypeError, "per_segment is on cpu")
            raise ValueError("broadcast(): per_segment must have one row per segment, got a "
                             f"scalar ({per_segment!r})")
        be = backend_of(("x", x.leaf_values), ("per_segment", per_segment))
        per = be.asarray(per_segment, "per_segment")
    be = x._backend
    if per.ndim == 0:
        raise ValueError("broadcast(): per_segment must have one row per segment, got a scalar")
    if per.shape[0] != nseg:
        raise ValueError(
            f"broadcast(): per_segment has {per.shape[0]} rows but x has {nseg} "
            f"level-{levels} segments"
        )
    dt = np.dtype(be.dtype(per))
    if not _ops.kernel_dtype(dt):
        raise TypeError(f"broadcast(): per_segment has unsupported dtype {dt}")
    mdecl = T.broadcast_map(_native(dt))
    seg_map = _kernel(be, "segment_map", "broadcast")
    return _rebuild(seg_map(mdecl, None, offsets, per, ends=(0, leaf.shape[0])), lv)


# ---------------------------------------------------------------- attention_pool


def attention_pool(x, scores, *, levels=1, fill_value=None):
    """Softmax-weighted sum of each segment, in one pass.

    ``out_i = sum_j softmax(scores_i)_j * x_j`` over the elements ``j`` of
    segment ``i``, computed online (a running max ``m``, a rescaled running
    sum ``s`` of ``exp(score - m)`` and a rescaled weighted sum): the weights
    are never materialised and values and scores are read once.

    Parameters
    ----------
    x : RaggedArray
        Bool, integer or real float values of shape ``(n, *inner)``.
    scores : RaggedArray
        ``x``'s structure (the same segment lengths at every level; e.g.
        ``x.with_values(s)``), on ``x``'s device, with leaf values of shape
        ``(n,)`` or ``(n, h)`` for ``h`` heads. Bool, integer or real float.
    levels : int, default 1
        Reduce the ``levels`` innermost levels at once, like a reduction.
    fill_value : scalar, optional
        Result of every empty segment (default 0).

    Returns
    -------
    array or RaggedArray
        ``(nsegments, *inner)``, or ``(nsegments, h, *inner)`` with heads;
        dense when ``levels == x.depth``, else a compact RaggedArray of depth
        ``x.depth - levels``. dtype: ``np.result_type(x.dtype,
        scores.dtype)``, bool/int results give float64; accumulated in
        float64.

    Notes
    -----
    Empty segments give 0 (or ``fill_value``). NaN in a segment's scores or
    values gives NaN; a segment whose scores are all ``-inf``, or hold
    ``+inf``, gives NaN (as :func:`softmax`). A one-element segment gives
    that element; equal scores give the mean. Heads run one pass each over a
    strided column of the scores.

    Examples
    --------
    >>> import numpy as np, hrarray as hr
    >>> x = hr.from_lengths(np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]]), [2, 0, 1])
    >>> s = x.with_values(np.array([0.0, 0.0, 7.0]))
    >>> hr.attention_pool(x, s)
    array([[2., 1.],
           [0., 0.],
           [5., 5.]])
    """
    if not (isinstance(x, RaggedArray) and isinstance(scores, RaggedArray)) and (
        (hd := _partitioned(x) or _partitioned(scores)) is not None
    ):
        return hd.attention_pool(x, scores, levels=levels, fill_value=fill_value)
    x = _check_ragged(x, "x", "attention_pool")
    scores = _check_ragged(scores, "scores", "attention_pool")
    be = backend_of(("x", x.leaf_values), ("scores", scores.leaf_values))
    levels = _check_levels(x, levels)
    if scores.depth != x.depth:
        raise ValueError(
            f"attention_pool(): scores must have x's structure, but its depth is "
            f"{scores.depth}, not {x.depth}"
        )
    lv, offsets, leaf = _flatten(x, levels)
    sc = scores._compact()
    for k, (a, b) in enumerate(zip(lv, sc._levels(), strict=True)):
        if len(a) != len(b):
            raise ValueError(
                f"attention_pool(): scores must have x's structure; level {k + 1} "
                f"(outermost first) has {len(b)} segments in scores, {len(a)} in x"
            )
        pos = _first_mismatch(be, a._offsets, b._offsets)
        if pos is not None:
            raise ValueError(
                f"attention_pool(): scores must have x's structure; level {k + 1} "
                f"(outermost first) differs at (compacted) offsets position {pos}"
            )
    svals = sc.leaf_values
    if svals.ndim not in (1, 2):
        raise ValueError(
            f"attention_pool(): scores values must have shape (n,) or (n, heads), "
            f"got {tuple(svals.shape)}"
        )
    spec = T.attention_spec(_native(x.dtype), _native(scores.dtype))
    use_fill = fill_value is not None
    if use_fill:
        fill_value = _fill_ok(fill_value, spec.out_dtype)
    pool = _kernel(be, "reduce_aux", "attention_pool")
    out = pool(spec, leaf, offsets, svals, fill_value if use_fill else 0, use_fill)
    return RaggedArray._rewrap(out, lv[: len(lv) - levels])


# ---------------------------------------------------------------- methods
# softmax, log_softmax, cumsum and attention_pool are methods too, as the
# reductions are. broadcast is not: its structure argument comes second
# (hr.broadcast(per_segment, x)), and x.broadcast(per_segment) would read as
# broadcasting x.


def _softmax_method(self, *, levels=1):
    return softmax(self, levels=levels)


def _log_softmax_method(self, *, levels=1):
    return log_softmax(self, levels=levels)


def _cumsum_method(self, exclusive=False, *, levels=1, dtype=None):
    return cumsum(self, exclusive=exclusive, levels=levels, dtype=dtype)


def _attention_pool_method(self, scores, *, levels=1, fill_value=None):
    return attention_pool(self, scores, levels=levels, fill_value=fill_value)


for _name, _fn, _impl in (
    ("softmax", softmax, _softmax_method),
    ("log_softmax", log_softmax, _log_softmax_method),
    ("cumsum", cumsum, _cumsum_method),
    ("attention_pool", attention_pool, _attention_pool_method),
):
    _impl.__name__ = _impl.__qualname__ = _name
    _impl.__doc__ = f"``x.{_name}(...)`` is ``hr.{_name}(x, ...)``.\n\n" + (_fn.__doc__ or "")
    setattr(RaggedArray, _name, _impl)
del _name, _fn, _impl
