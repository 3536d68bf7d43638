"""Constructors: from_lengths, from_list, from_segment_ids, from_padded, nest, concatenate."""

from __future__ import annotations

import contextlib

import numpy as np

from hrarray._backends import backend_of, check_same_gpu
from hrarray.ragged import (
    RaggedArray,
    _frozen,
    _int_sequence,
    _named_alloc_error,
    int_arg,
    refuse_objects,
)
from hrarray.reduce import _partitioned

__all__ = ["concatenate", "from_lengths", "from_list", "from_padded", "from_segment_ids", "nest"]


def _check_int_array(be, a, argname):
    a = be.asarray(_int_sequence(be, a, argname), argname)
    if a.dtype == np.bool_ or a.dtype.kind not in "iu":
        raise TypeError(f"{argname} must have an integer dtype, got {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{argname} must be 1-D, got ndim={a.ndim}")
    return be.xpa(a)  # compared and summed with be.xp (CuPy on CUDA; zero-copy)


def from_lengths(values, lengths) -> RaggedArray:
    """Segments of the given lengths: offsets ``[0, cumsum(lengths)]`` (int64).

    ``values`` may be an array or a ``RaggedArray`` (to add a level). The
    lengths may sum to less than ``len(values)`` (trailing values unused).

    Raises
    ------
    TypeError
        ``lengths`` not an integer array.
    ValueError
        ``values`` 0-d; ``lengths`` not 1-D, or one negative or past the rows
        of ``values``, or their running total past them (naming the first
        such ``lengths[i]``).
    """
    be = backend_of(
        ("values", values._values if isinstance(values, RaggedArray) else values),
        ("lengths", lengths),
    )
    lens = _check_int_array(be, lengths, "lengths")
    xp = be.xp
    nested = isinstance(values, RaggedArray)
    if not nested:
        vals = be.asarray(values, "values")
        if vals.ndim == 0:
            raise ValueError("values must be at least 1-D")
    nrows = len(values) if nested else vals.shape[0]
    if lens.size and bool((lens < 0).any()):
        bad = int(xp.nonzero(lens < 0)[0][0])
        raise ValueError(f"lengths[{bad}]={int(lens[bad])} is negative")
    if lens.size and bool((lens > nrows).any()):
        # one length past the rows: named before the running total, which a
        # huge length (a uint64 past int64's range, or a sum of them) wraps
        bad = int(xp.nonzero(lens > nrows)[0][0])
        raise ValueError(
            f"lengths[{bad}]={int(lens[bad])} exceeds the {nrows} "
            f"{'segments' if nested else 'rows'} of values"
        )
    offs = xp.zeros(lens.shape[0] + 1, np.int64)
    # int64: never wraps like an int32 cumsum; each length is at most nrows,
    # so the running total passes nrows long before it could wrap
    xp.cumsum(lens, out=offs[1:])
    if lens.size and int(offs[-1]) > nrows:
        # name the lengths (the caller's argument), not the offsets made from them
        k = int(xp.nonzero(offs[1:] > nrows)[0][0])
        raise ValueError(
            f"lengths sum to {int(offs[-1])} but values has {nrows} "
            f"{'segments' if nested else 'rows'} "
            f"(the running total passes {nrows} at lengths[{k}])"
        )
    return RaggedArray(values, _frozen(offs))


def from_segment_ids(values, ids, nsegments=None) -> RaggedArray:
    """Segments from one sorted segment id per value (ids non-decreasing).

    ``values`` may be an array or a ``RaggedArray`` (one id per segment of it:
    a new level). ``nsegments`` defaults to ``ids[-1] + 1``; segments without
    ids are empty.

    Raises
    ------
    TypeError
        ``ids`` not an integer array, ``nsegments`` not an integer.
    ValueError
        ``ids`` unsorted or negative (naming the first bad position), of
        another length than ``values``; ``nsegments`` negative or not above
        the largest id.
    """
    nested = isinstance(values, RaggedArray)  # ids group its segments: a new level
    be = backend_of(("values", values.leaf_values if nested else values), ("ids", ids))
    ids = _check_int_array(be, ids, "ids")
    xp = be.xp
    vals = values if nested else be.asarray(values, "values")
    if not nested and vals.ndim == 0:
        raise ValueError("values must be at least 1-D")
    nrows = len(vals) if nested else vals.shape[0]
    if ids.shape[0] != nrows:
        what = "segments" if nested else "rows"
        raise ValueError(f"ids has {ids.shape[0]} entries but values has {nrows} {what}")
    if ids.shape[0] > 1:
        dec = ids[1:] < ids[:-1]
        if bool(dec.any()):
            i = int(xp.nonzero(dec)[0][0]) + 1
            raise ValueError(
                f"ids must be sorted (non-decreasing); ids[{i}]={int(ids[i])} < "
                f"ids[{i - 1}]={int(ids[i - 1])}"
            )
    if ids.shape[0] and int(ids[0]) < 0:
        raise ValueError(f"ids[0]={int(ids[0])} is negative")
    if ids.shape[0] and int(ids[-1]) >= np.iinfo(np.int64).max:
        # (uint64 ids) no segment count or offset can hold it
        i = int(xp.nonzero(ids >= np.uint64(np.iinfo(np.int64).max))[0][0])
        raise ValueError(f"ids[{i}]={int(ids[i])} is too large (segment ids must be < 2**63 - 1)")
    top = int(ids[-1]) + 1 if ids.shape[0] else 0
    derived = nsegments is None
    nsegments = top if derived else int_arg(nsegments, "nsegments")
    # too many segments to allocate: named by the id that asks for them
    # where the count comes from the ids
    too_large = (f"ids[{ids.shape[0] - 1}]={top - 1} is too large ({top} segments)"
                 if derived else f"nsegments={nsegments} is too large")
    if nsegments < 0:
        raise ValueError(f"nsegments must be >= 0, got {nsegments}")
    if nsegments < top:
        # ids are sorted: the first one past the segments, by binary search
        i = int(xp.searchsorted(ids, nsegments, side="left"))
        raise ValueError(f"ids[{i}]={int(ids[i])} >= nsegments={nsegments}")
    try:
        starts = xp.arange(nsegments + 1)
    except (ValueError, MemoryError) as exc:  # NumPy's message names no argument
        raise _named_alloc_error(exc, too_large) from None
    if starts.shape[0] != nsegments + 1:
        # near 2**63 NumPy's length computation wraps: an empty arange, no error
        raise ValueError(too_large)
    offs = xp.searchsorted(ids, starts, side="left").astype(np.int64)
    return RaggedArray(vals, _frozen(offs))


def from_padded(padded, lengths=None, mask=None) -> RaggedArray:
    """Inverse of :meth:`RaggedArray.to_padded`.

    ``padded`` has shape ``(nsegments, L, *inner)``. Give ``lengths`` (the
    first ``lengths[i]`` entries of row ``i`` are kept) or ``mask`` (the True
    entries of each row are kept, in order); with neither, every entry is kept.
    A bool array of shape ``(nsegments, L)`` in the place of ``lengths`` is
    read as the mask, so ``from_padded(*x.to_padded())`` gives ``x`` back
    (compact).

    Raises
    ------
    TypeError
        ``mask`` is not a bool array, or an argument lives on another device.
    ValueError
        both ``lengths`` and ``mask`` given; ``padded`` below 2-D; ``mask``
        not of shape ``padded.shape[:2]``; bad ``lengths``.
    """
    be = backend_of(("padded", padded), ("lengths", lengths), ("mask", mask))
    xp = be.xp
    p = be.xpa(be.asarray(padded, "padded"))
    if p.ndim < 2:
        raise ValueError(f"padded must be at least 2-D (nsegments, L, ...), got ndim={p.ndim}")
    refuse_objects(be, p, "padded")
    n, L = p.shape[:2]
    if lengths is not None and mask is not None:
        raise ValueError("give lengths or mask, not both")
    if lengths is not None and not isinstance(lengths, (list, tuple)):
        given = be.asarray(lengths, "lengths")
        if be.dtype(given) == np.bool_ and given.shape == (n, L):
            # to_padded's (padded, mask) passed back positionally: from_padded(*x.to_padded());
            # a bool array of that shape cannot be lengths (1-D integers)
            lengths, mask = None, given
        else:
            lengths = given  # (read once: a DLPack producer is not imported twice)
    if mask is not None:
        m = be.xpa(be.asarray(mask, "mask"))
        if m.dtype != np.bool_:
            raise TypeError(f"mask must be a bool array, got dtype {m.dtype}")
        if m.shape != (n, L):
            raise ValueError(f"mask must have shape {(n, L)} (padded's first two), got {m.shape}")
    else:
        if lengths is None:
            lens = xp.full(n, L, np.int64)
        else:
            lens = _check_int_array(be, lengths, "lengths")
            if lens.shape[0] != n:
                raise ValueError(f"lengths has {lens.shape[0]} entries, padded has {n} rows")
            bad = (lens < 0) | (lens > L)
            if bool(bad.any()):
                i = int(xp.nonzero(bad)[0][0])
                raise ValueError(f"lengths[{i}]={int(lens[i])} is outside [0, {L}]")
        m = xp.arange(L)[None, :] < lens[:, None]
    values = p[m]
    return from_lengths(values, m.sum(axis=1).astype(np.int64))


def nest(values, *offsets) -> RaggedArray:
    """A multi-level hierarchy: ``nest(values, offsets_level1, offsets_level2, ...)``.

    Innermost level first: ``offsets_level1`` groups ``values``,
    ``offsets_level2`` groups the level-1 segments, and so on. Every level is
    validated against the one below.
    """
    if not offsets:
        raise TypeError("nest() needs at least one offsets array")
    x = values
    for k, o in enumerate(offsets, start=1):
        try:
            x = RaggedArray(x, o)
        except (TypeError, ValueError) as exc:
            try:
                err = type(exc)(f"level {k}: {exc}")
            except Exception:  # an exception class with another signature
                err = (ValueError if isinstance(exc, ValueError) else TypeError)(
                    f"level {k}: {exc}")
            raise err from None
    return x


def _conversion_error(v, dtype):
    """The exception ``np.asarray(v, dtype=dtype)`` raises, or None."""
    try:
        np.asarray(v, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        return exc
    return None


def _unfit(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Flat indices of the elements of ``raw`` (numbers as NumPy read them) that the integer
    ``dtype`` cannot hold exactly: a fraction, NaN/inf, a value out of range. NumPy's cast
    would wrap or truncate them without a word."""
    flat = raw.reshape(-1)
    if flat.dtype.kind in "iu":  # exact: compare in range of both types
        info, have = np.iinfo(dtype), np.iinfo(flat.dtype)
        lo, hi = max(info.min, have.min), min(info.max, have.max)
        bad = (flat < flat.dtype.type(lo)) | (flat > flat.dtype.type(hi))
    elif flat.dtype.kind in "fc":
        # the real part cast on its own: complex-to-int astype would warn (ComplexWarning),
        # and silencing it with warnings.catch_warnings() is not thread-safe (it swaps the
        # process-wide filter list); np.errstate, for the invalid casts, is per thread
        real = flat.real
        with np.errstate(all="ignore"):
            back = real.astype(dtype).astype(real.dtype)
        bad = back != real  # NaN != NaN: flagged too
        if flat.dtype.kind == "c":
            bad |= flat.imag != 0
    else:
        bad = np.zeros(flat.shape, bool)
    return np.flatnonzero(bad)


def _check_int_leaves(nested, depth: int, leaves: list, raw: np.ndarray, dtype) -> None:
    """``ValueError`` naming the first leaf holding a number the integer ``dtype`` cannot
    hold exactly. ``raw`` is NumPy's reading of the leaves: a Python int beside a float is
    read as a float64 that may round, so such a leaf is judged as given."""
    size = max(1, int(np.prod(raw.shape[1:])))
    info = np.iinfo(dtype)
    for k in _unfit(raw, dtype):
        leaf = int(k) // size
        v = leaves[leaf]
        if (size == 1 and isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                and info.min <= int(v) <= info.max):
            continue  # exact as given; only NumPy's float64 reading rounded it
        shown = v if size == 1 else raw.reshape(-1)[k]
        shown = shown.item() if isinstance(shown, np.generic) else shown
        where = f"nested_lists{_leaf_path(nested, depth, leaf)}"
        what = f"={shown!r}" if size == 1 else f" holds {shown!r}, which"
        raise ValueError(f"from_list: {where}{what} does not fit dtype {dtype}")


def _not_numbers(kind: str) -> bool:
    return kind not in "biufc"


def _leaf_path(nested, depth: int, k: int) -> str:
    """``[i][j]...``: where the ``k``-th innermost item of ``nested`` is."""
    count = 0  # innermost items before the list on top of the stack
    stack: list = [(nested, ())]  # depth first, in order: a stack, for any depth
    while stack:
        obj, path = stack.pop()
        if len(path) + 1 == depth:
            if k < count + len(obj):
                return "".join(f"[{i}]" for i in (*path, k - count))
            count += len(obj)
        else:
            stack.extend((item, (*path, i)) for i, item in reversed(list(enumerate(obj))))
    raise AssertionError(f"no innermost item {k}")  # callers pass k < len(leaves)


def _unequal_leaf(nested, depth: int, leaves: list) -> None:
    """Raise the ``ValueError`` naming, as ``nested[i][j]...``, the first
    innermost item that is no number (a None) or whose shape differs from the
    first one's (if there is one)."""
    first = np.shape(leaves[0])

    def missing(v):  # a None, or another object NumPy cannot make a number of
        return np.asarray(v).dtype == object

    k = next((i for i, v in enumerate(leaves) if missing(v) or np.shape(v) != first), None)
    if k is None:
        return
    where = _leaf_path(nested, depth, k)
    v = leaves[k]
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
        raise ValueError(
            f"from_list: nested_lists{where}={v!r} does not fit any integer dtype "
            "(int64, uint64); pass dtype=np.float64 to store it as a float"
        )
    if v is None:
        raise ValueError(
            f"from_list: nested_lists{where} is None, not a number or an array of numbers "
            "(missing values are not supported)"
        )
    if missing(v):  # a dict, a set, any other object: the wrong kind of thing
        raise TypeError(
            f"from_list: nested_lists{where} is {v!r} ({type(v).__name__}), not a number "
            "or an array of numbers"
        )
    raise ValueError(
        f"from_list: innermost items must be scalars or equal-shape arrays; "
        f"nested_lists{where} has shape {np.shape(leaves[k])}, the first item {first}"
    )


def from_list(nested_lists, dtype=None) -> RaggedArray:
    """Build from nested Python lists (``nested_lists``) of any depth.

    The innermost items are scalars or equal-shape arrays; every list level
    above them becomes a ragged level. A flat list of NumPy arrays is a list
    of segments (each array's rows are its items). ``dtype`` chooses the values dtype
    (NumPy's inference otherwise). Not a list: ``TypeError``; an innermost
    item whose shape differs from the first one's: ``ValueError`` naming it
    (``nested_lists[i][j]...``); a non-list where the nesting needs a list:
    ``ValueError`` naming the level and the item; a number an integer ``dtype``
    cannot hold exactly (out of range, a fraction, NaN or inf; in a list or an
    array item): ``ValueError`` naming it; an item that is no number (text):
    ``TypeError`` naming it; ``dtype=object``, a non-numeric dtype or not a
    dtype: ``TypeError``.
    """
    if not isinstance(nested_lists, (list, tuple)):
        raise TypeError(
            f"from_list: nested_lists must be a list, got {type(nested_lists).__name__}"
        )
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"from_list: dtype={dtype!r} is not a dtype ({exc})") from None
        if _not_numbers(dtype.kind):
            raise TypeError(f"from_list: dtype={dtype} is not supported (values are numbers)")

    def depth_of(obj):
        # The deepest list nesting anywhere: a branch of empty lists such as
        # [[]] says nothing about the depth of its siblings, so every branch
        # counts (walk() then rejects items at an inconsistent level). A list
        # that holds itself (at any depth) has none: ValueError, not a loop.
        best = 0
        on_path: set[int] = set()  # ids of the lists above the current one
        stack: list = [(obj, ())]
        while stack:
            o, path = stack.pop()
            if path is None:  # every item of list o done
                on_path.discard(id(o))
                continue
            if id(o) in on_path:
                raise ValueError("from_list: nested_lists" + "".join(f"[{i}]" for i in path)
                                 + " is one of the lists that hold it (a list that holds "
                                 "itself nests without an end)")
            on_path.add(id(o))
            stack.append((o, None))
            best = max(best, len(path) + 1)
            stack.extend((c, (*path, i)) for i, c in enumerate(o) if isinstance(c, (list, tuple)))
        return best

    depth = depth_of(nested_lists)
    if depth == 1 and len(nested_lists) == 0:
        empty = np.empty(0, dtype=np.float64 if dtype is None else dtype)
        return RaggedArray(empty, _frozen(np.zeros(1, np.int64)))
    if depth == 1 and all(isinstance(a, np.ndarray) and a.ndim >= 1 for a in nested_lists):
        # a list of arrays: each array is a segment (its rows the items), the
        # one reading possible at this depth (as Awkward's)
        shapes = {a.shape[1:] for a in nested_lists}
        if len(shapes) > 1:
            i = next(i for i, a in enumerate(nested_lists)
                     if a.shape[1:] != nested_lists[0].shape[1:])
            raise ValueError(f"from_list: nested_lists[{i}] has rows of shape "
                             f"{nested_lists[i].shape[1:]}, nested_lists[0] of "
                             f"{nested_lists[0].shape[1:]}")
        k = next((i for i, a in enumerate(nested_lists) if np.ma.isMaskedArray(a)), None)
        if k is not None:  # (np.concatenate would read the data under its mask)
            raise TypeError(f"from_list: nested_lists[{k}] is a masked array (numpy.ma), "
                            "which hrarray does not support: pass .filled(value) or the "
                            "unmasked elements only")
        values = np.concatenate(nested_lists)
        lens = np.array([len(a) for a in nested_lists], np.int64)

        def where(flat):  # nested_lists[i][row] of a flat element index of values
            row = flat // max(1, int(np.prod(values.shape[1:])))
            i = int(np.searchsorted(np.cumsum(lens), row, side="right"))
            return f"[{i}][{row - int(lens[:i].sum())}]"

        if _not_numbers(values.dtype.kind):
            i = next(i for i, a in enumerate(nested_lists) if _not_numbers(a.dtype.kind))
            raise TypeError(f"from_list: nested_lists[{i}] has dtype {nested_lists[i].dtype}; "
                            "values are numbers")
        if dtype is not None:
            if dtype.kind in "iu" and (bad := _unfit(values, dtype)).size:
                k = int(bad[0])
                raise ValueError(f"from_list: nested_lists{where(k)}="
                                 f"{values.reshape(-1)[k].item()!r} does not fit dtype {dtype}")
            values = values.astype(dtype, copy=False)
        return from_lengths(values, lens)
    if depth < 2:
        raise ValueError("from_list needs a list of segments (a list of lists)")
    offs: list[list[int]] = [[0] for _ in range(depth)]
    leaves: list = []

    # Each list at nesting `level` (1 = a top-level segment) in order, its
    # offset appended once its items are done. A stack, not recursion: any
    # depth (Python's recursion limit stopped lists nested ~1000 deep).
    stack: list = [(item, 1, (i,)) for i, item in reversed(list(enumerate(nested_lists)))]
    while stack:
        obj, level, path = stack.pop()
        if path is None:  # obj's items are done: the offset after it
            offs[level].append(len(offs[level + 1]) - 1)
            continue
        if not isinstance(obj, (list, tuple)):
            where = "".join(f"[{i}]" for i in path)
            raise ValueError(
                f"from_list: nested_lists{where}={obj!r} is not a list, but other items are "
                f"nested {depth} lists deep (innermost items must all be at one depth)"
            )
        if level + 1 == depth:
            leaves.extend(obj)
            offs[level].append(len(leaves))
        else:
            stack.append((obj, level, None))
            stack.extend((item, level + 1, (*path, i))
                         for i, item in reversed(list(enumerate(obj))))
    # a masked array as an item: NumPy's conversion reads the data under its mask
    k = next((i for i, v in enumerate(leaves) if np.ma.isMaskedArray(v)), None)
    if k is not None:
        raise TypeError(f"from_list: nested_lists{_leaf_path(nested_lists, depth, k)} is a "
                        "masked array (numpy.ma), which hrarray does not support: pass "
                        ".filled(value) or the unmasked elements only")
    raw = None  # the leaves as NumPy reads them (None: unequal shapes, named below)
    if leaves:
        with contextlib.suppress(ValueError):
            raw = np.asarray(leaves)
    if raw is not None and raw.dtype != object and _not_numbers(raw.dtype.kind):
        # text or dates (NumPy makes text of numbers beside a string), whatever the dtype
        k = next(i for i, v in enumerate(leaves) if _not_numbers(np.asarray(v).dtype.kind))
        raise TypeError(f"from_list: nested_lists{_leaf_path(nested_lists, depth, k)}="
                        f"{leaves[k]!r} is not a number (values are numbers)")
    to_int = dtype is not None and dtype.kind in "iu" and raw is not None
    if to_int and raw.dtype.kind in "iufc":
        # checked before converting: NumPy's cast wraps array items and NaN without a word
        _check_int_leaves(nested_lists, depth, leaves, raw, dtype)
    if leaves:
        try:
            if dtype is None and raw is not None:
                values = raw
            elif to_int and raw.dtype.kind == "c":
                values = raw.real.astype(dtype)  # checked above: no imaginary parts
            else:
                values = np.asarray(leaves, dtype=dtype)
        except ValueError as exc:  # NumPy's "inhomogeneous shape" names no item
            _unequal_leaf(nested_lists, depth, leaves)
            raise ValueError(f"from_list: {exc}") from None
        except TypeError as exc:  # e.g. a complex number for a real dtype
            k = next((i for i, v in enumerate(leaves)
                      if _conversion_error(v, dtype) is not None), None)
            if k is None:
                raise TypeError(f"from_list: {exc}") from None
            raise TypeError(
                f"from_list: nested_lists{_leaf_path(nested_lists, depth, k)}={leaves[k]!r} "
                f"cannot be converted to dtype {dtype} ({exc})"
            ) from None
        except OverflowError as exc:  # a Python int past dtype's range
            k = next((i for i, v in enumerate(leaves)
                      if isinstance(_conversion_error(v, dtype), OverflowError)), None)
            if k is None:
                raise ValueError(f"from_list: {exc}") from None
            raise ValueError(
                f"from_list: nested_lists{_leaf_path(nested_lists, depth, k)}={leaves[k]!r} "
                f"does not fit dtype {dtype}"
            ) from None
    else:
        values = np.empty(0, dtype=np.float64 if dtype is None else dtype)
    if values.dtype == object:
        _unequal_leaf(nested_lists, depth, leaves)
        raise ValueError("from_list: innermost items must be scalars or equal-shape arrays")
    x = values
    for level in range(depth - 1, 0, -1):
        x = RaggedArray(x, _frozen(np.asarray(offs[level], np.int64)))
    return x


def concatenate(arrays) -> RaggedArray:
    """Join ragged arrays end to end (same depth, dtype, inner shape and device).

    Copies: the result is compact, with int64 offsets (int32 where every
    input's offsets at that level are int32 and the total fits). Given a
    ``hrarray.dask.RaggedDaskArray`` among them, returns one (see
    ``hrarray.dask.concatenate``).
    """
    if (isinstance(arrays, RaggedArray) or not hasattr(arrays, "__iter__")
            or getattr(arrays, "ndim", None) == 0):  # a 0-d array has __iter__, yet raises
        raise TypeError(
            f"concatenate(): arrays must be a sequence of RaggedArrays, got {type(arrays).__name__}"
        )
    arrays = list(arrays)
    if not arrays:
        raise ValueError("concatenate(): arrays is empty; it needs at least one RaggedArray")
    for k, a in enumerate(arrays):
        if not isinstance(a, RaggedArray):
            # hrarray.dask's partitioned arrays join lazily
            for b in arrays:
                if (hd := _partitioned(b)) is not None:
                    return hd.concatenate(arrays)
            raise TypeError(f"arrays[{k}] is a {type(a).__name__}, not a RaggedArray")
    a0 = arrays[0]
    for k, a in enumerate(arrays[1:], start=1):
        if a.device != a0.device:
            raise TypeError(
                f"arrays[{k}] is on {a.device} but arrays[0] is on {a0.device}; "
                "move them explicitly"
            )
        if a0.device != "cpu":
            check_same_gpu(("arrays[0]", a0._offsets), (f"arrays[{k}]", a._offsets))
        for attr in ("depth", "dtype", "inner_shape"):
            if getattr(a, attr) != getattr(a0, attr):
                raise ValueError(
                    f"arrays[{k}].{attr}={getattr(a, attr)!r} differs from "
                    f"arrays[0].{attr}={getattr(a0, attr)!r}"
                )
    return _concat([a._compact() for a in arrays])


def _concat(compact: list[RaggedArray]) -> RaggedArray:
    be = compact[0]._backend
    parts = []
    shift = 0
    for k, a in enumerate(compact):
        o = be.astype(a._offsets, np.int64)[(0 if k == 0 else 1) :]
        parts.append(be.shift(o, -shift) if shift else o)
        shift += be.ends(a._offsets, a._ends)[1]
    offs = be.concatenate(parts)
    if shift <= np.iinfo(np.int32).max and all(
        np.dtype(be.dtype(a._offsets)) == np.int32 for a in compact
    ):
        # int32 offsets in, int32 out where the total fits (as the partitions of
        # hrarray.dask had them: computing one joins them here)
        offs = be.astype(offs, np.int32)
    if isinstance(compact[0]._values, RaggedArray):
        inner = _concat([a._values for a in compact])
    else:
        inner = be.concatenate([a._values for a in compact])
    return RaggedArray._trusted(inner, offs, (0, shift))
