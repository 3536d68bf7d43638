"""Apache Arrow and Awkward Array interop: ``from_arrow``/``to_arrow``,
``from_awkward``/``to_awkward``.

Both libraries store a list array the way a ``RaggedArray`` does (a flat
child plus an offsets buffer), so conversions of host data share the
buffers instead of copying them. pyarrow and awkward are imported only when
these functions are called (``import hrarray`` never imports them).

What copies, and why (everything else is zero-copy):

- Arrow booleans are bit-packed: bool values are unpacked (from Arrow) or
  packed (to Arrow).
- Arrow needs contiguous little-endian buffers: strided or byte-swapped
  values (and strided offsets) are made contiguous / native first.
- A chunked Arrow array with more than one chunk is concatenated (one
  ``RaggedArray`` is one buffer).
- An Awkward ``ListArray`` (separate starts and stops) whose lists are not
  laid out back to back is converted with Awkward's own
  ``to_ListOffsetArray64`` (a copy); when they are back to back only the
  offsets are built.
- ``RegularArray`` list levels above a ragged level get their (implicit)
  offsets built.

Missing values have no meaning in a ``RaggedArray``: a null list or null
value (Arrow validity bitmap, Awkward option types) is a ``ValueError``
naming the first one, with the call that removes them. Data on a CUDA
device is a ``TypeError`` (both targets are used here as host structures):
move it with ``x.to_numpy()`` first.
"""

from __future__ import annotations

import math

import numpy as np

from hrarray.construct import concatenate
from hrarray.ragged import RaggedArray

__all__ = ["from_arrow", "from_awkward", "to_arrow", "to_awkward"]


# ------------------------------------------------------------------ Arrow
def _first_null(arr) -> int:
    return int(np.flatnonzero(np.asarray(arr.is_null().to_numpy(zero_copy_only=False)))[0])


def _arrow_dense(arr, pa, what: str):
    """NumPy view of a primitive (or fixed-size-list nested) Arrow array:
    shape ``(len(arr), *inner)``."""
    t = arr.type
    if arr.null_count:
        raise ValueError(
            f"{what} has a null at position {_first_null(arr)}; a RaggedArray has no missing "
            "values (pyarrow.compute.fill_null or drop_null remove them)"
        )
    if pa.types.is_fixed_size_list(t):
        k = t.list_size
        # .values ignores the array's own slice offset: cut the child to it
        child = arr.values.slice(arr.offset * k, len(arr) * k)
        inner = _arrow_dense(child, pa, f"{what} (fixed-size list values)")
        return inner.reshape((len(arr), k, *inner.shape[1:]))
    if pa.types.is_null(t):
        # only empty here (every element of a null array is a null): the type
        # pyarrow infers for lists that are all empty, pa.array([[], []]); float64,
        # as Awkward's EmptyArray reads
        return np.zeros(0, np.float64)
    if pa.types.is_boolean(t):
        return arr.to_numpy(zero_copy_only=False)  # bit-packed: unpacked (a copy)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise TypeError(f"{what} has Arrow type {t}; hrarray reads numeric and bool values")
    return arr.to_numpy(zero_copy_only=True)


def _arrow_has_nulls(arr) -> bool:
    """Whether ``arr`` or any list or fixed-size-list level below it has a null."""
    while True:
        if arr.null_count:
            return True
        if not hasattr(arr, "values"):
            return False
        arr = arr.values


def _arrow_list(arr, pa, what: str) -> RaggedArray:
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        raise TypeError(
            f"{what} has Arrow type {t}; from_arrow takes a ListArray or LargeListArray "
            "(possibly nested, chunked)"
        )
    if arr.null_count:
        raise ValueError(
            f"{what} has a null list at position {_first_null(arr)}; a RaggedArray has no "
            "missing segments (pyarrow.compute.fill_null(arr, []) reads them as empty)"
        )
    # .offsets honours the slice offset and indexes the unsliced .values,
    # so both are used as they are (offsets need not start at 0)
    offsets = arr.offsets.to_numpy(zero_copy_only=True)
    child = arr.values
    if offsets.shape[0] and _arrow_has_nulls(child):
        # nulls the lists do not reach (a slice of a larger array) are not the
        # RaggedArray's: the child cut to the lists' span (zero-copy; a nested
        # child's own offsets then span only what these lists reach), offsets
        # shifted (a copy of the offsets only)
        lo, hi = int(offsets[0]), int(offsets[-1])
        if (lo, hi) != (0, len(child)):
            child, offsets = child.slice(lo, hi - lo), offsets - offsets[0]
    ct = child.type
    if pa.types.is_list(ct) or pa.types.is_large_list(ct):
        values = _arrow_list(child, pa, f"{what} values")
    else:
        values = _arrow_dense(child, pa, f"{what} values")
    return _level(values, offsets, what)


def _level(values, offsets, what: str) -> RaggedArray:
    """``RaggedArray(values, offsets)``; bad offsets (the producer did not check
    them: ``pa.Array.from_buffers``) named as ``what``'s, the caller's argument."""
    try:
        return RaggedArray(values, offsets)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def from_arrow(list_array) -> RaggedArray:
    """A ``RaggedArray`` sharing the buffers of an Arrow list array.

    Parameters
    ----------
    list_array : pyarrow.ListArray, pyarrow.LargeListArray or pyarrow.ChunkedArray
        Lists of numeric or bool values, nested to any depth (each list level
        becomes a ragged level); ``FixedSizeList`` values become the inner
        shape (``list<fixed_size_list<float, 64>>`` gives values ``(n, 64)``).

    Returns
    -------
    RaggedArray
        On the host, zero-copy: its values and offsets are views of the Arrow
        buffers (ListArray offsets stay int32, LargeListArray offsets int64; a
        sliced array gives offsets that do not start at 0). Copies: bool
        values (Arrow packs them into bits) and chunked arrays of more than
        one chunk (concatenated).

    Raises
    ------
    TypeError
        Not a list array, or values of another type (strings, structs...).
    ValueError
        A null list or null value (the message names the first).
    """
    import pyarrow as pa

    if isinstance(list_array, pa.ChunkedArray):
        # empty chunks are skipped, but messages number the chunks as the caller does
        chunks = [(k, c) for k, c in enumerate(list_array.chunks) if len(c)]
        chunks = chunks or list(enumerate(list_array.chunks))
        if not chunks:
            # no chunks at all: an empty array of the same type
            return from_arrow(pa.array([], type=list_array.type))
        parts = [_arrow_list(c, pa, f"list_array chunk {k}") for k, c in chunks]
        return parts[0] if len(parts) == 1 else concatenate(parts)
    if not isinstance(list_array, pa.Array):
        raise TypeError(
            f"list_array must be a pyarrow Array or ChunkedArray, got {type(list_array).__name__}"
        )
    return _arrow_list(list_array, pa, "list_array")


def _host_or_raise(x: RaggedArray, fn: str) -> None:
    if x.device != "cpu":
        raise TypeError(
            f"{fn} builds a host structure but x is on {x.device}; "
            "move it explicitly with x.to_numpy()"
        )


def _arrow_values(values: np.ndarray, pa):
    """An Arrow array over ``values`` (n, *inner): fixed-size lists for the
    inner dimensions, sharing the buffer where it is contiguous."""
    dt = values.dtype
    if dt.kind == "c":
        raise TypeError(f"Arrow has no complex type: cannot convert values of dtype {dt}")
    # Arrow's floats are 16, 32 and 64 bits: np.longdouble (kind "f" too) is not one
    if dt.kind not in "biuf" or dt.itemsize > 8:
        raise TypeError(f"cannot convert values of dtype {dt} to Arrow")
    if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian):
        dt = dt.newbyteorder("<")
        values = values.astype(dt)  # Arrow buffers are little-endian
    n = values.shape[0]
    inner = values.shape[1:]
    flat = np.ascontiguousarray(values).reshape(-1)  # a view when already contiguous
    if dt.kind == "b":
        arr = pa.array(flat, type=pa.bool_())  # bit-packed: a copy
    else:
        arr = pa.Array.from_buffers(pa.from_numpy_dtype(dt), flat.shape[0],
                                    [None, pa.py_buffer(flat)])
    # from_buffers, not FixedSizeListArray.from_arrays, which refuses a size of 0
    # (fixed_size_list<...>[0] is an Arrow type, and from_arrow reads it)
    for i in range(len(inner), 0, -1):
        rows = n * math.prod(inner[: i - 1])
        arr = pa.Array.from_buffers(pa.list_(arr.type, int(inner[i - 1])), rows, [None],
                                    children=[arr])
    assert len(arr) == n
    return arr


def to_arrow(x: RaggedArray):
    """The Arrow list array of ``x``, sharing its buffers.

    Returns
    -------
    pyarrow.ListArray or pyarrow.LargeListArray
        ``ListArray`` for int32 offsets, ``LargeListArray`` for int64 ones;
        nested levels become nested lists, the inner shape fixed-size lists.
        Offsets are passed as they are (they may start above 0: Arrow allows
        it). Zero-copy for contiguous numeric values and offsets; bool values
        (bit-packed in Arrow), strided or byte-swapped buffers are copied.

    Raises
    ------
    TypeError
        ``x`` is on a CUDA device (call ``x.to_numpy()`` first) or its dtype
        has no Arrow type (complex, np.longdouble).
    """
    import pyarrow as pa

    if not isinstance(x, RaggedArray):
        raise TypeError(f"x must be a RaggedArray, got {type(x).__name__}")
    _host_or_raise(x, "to_arrow")
    offs = np.ascontiguousarray(x.offsets)
    if isinstance(x.values, RaggedArray):
        child = to_arrow(x.values)
    else:
        child = _arrow_values(x.values, pa)
    if offs.dtype == np.int32:
        lt = pa.list_(child.type)
    else:
        offs = offs.astype(np.int64, copy=False)
        lt = pa.large_list(child.type)
    return pa.Array.from_buffers(lt, offs.shape[0] - 1, [None, pa.py_buffer(offs)],
                                 children=[child])


# ---------------------------------------------------------------- Awkward
def _xp_of(a):
    return np if isinstance(a, np.ndarray) else __import__("cupy")


def _ak_offsets_of(layout):
    """Offsets (NumPy, or CuPy for Awkward's CUDA backend) of one Awkward
    list level, and its content."""
    import awkward as ak

    c = ak.contents
    if isinstance(layout, c.ListOffsetArray):
        return layout.offsets.data, layout.content
    if isinstance(layout, c.ListArray):
        starts = layout.starts.data[: layout.length]
        stops = layout.stops.data[: layout.length]
        xp = _xp_of(starts)
        if starts.shape[0] == 0:
            return xp.zeros(1, np.int64), layout.content
        if bool(xp.all(starts[1:] == stops[:-1])):
            # back to back: offsets are [starts[0], stops...], a copy of the
            # offsets only (the content is shared)
            return xp.concatenate([starts[:1], stops]), layout.content
        lo = layout.to_ListOffsetArray64(True)  # Awkward's own repacking: a copy
        return lo.offsets.data, lo.content
    # RegularArray: every list has `size` elements
    xp = __import__("cupy") if layout.backend.name == "cuda" else np
    return xp.arange(layout.length + 1, dtype=np.int64) * layout.size, layout.content


def _ak_is_list(layout) -> bool:
    import awkward as ak

    c = ak.contents
    return isinstance(layout, (c.ListOffsetArray, c.ListArray))


def _ak_has_ragged(layout) -> bool:
    import awkward as ak

    c = ak.contents
    # through option and indexed nodes too (a regular level above an option of
    # lists): whether they hold a missing value is _ak_unwrap's to say
    wrappers = (c.IndexedOptionArray, c.ByteMaskedArray, c.BitMaskedArray, c.UnmaskedArray,
                c.IndexedArray)
    while isinstance(layout, (c.RegularArray, c.ListOffsetArray, c.ListArray, *wrappers)):
        if not isinstance(layout, wrappers) and _ak_is_list(layout):
            return True
        layout = layout.content
    return False


def _ak_unwrap(layout, what: str):
    """Strip wrappers that hold no missing value; refuse missing values."""
    import awkward as ak

    c = ak.contents
    if isinstance(layout, c.UnmaskedArray):
        return _ak_unwrap(layout.content, what)
    if isinstance(layout, (c.IndexedOptionArray, c.ByteMaskedArray, c.BitMaskedArray)):
        missing = layout.mask_as_bool(valid_when=False)
        xp = _xp_of(missing)
        if bool(xp.any(missing)):
            first = int(xp.flatnonzero(missing)[0])
            raise ValueError(
                f"{what} has a missing value at position {first}; a RaggedArray has no "
                "missing values (ak.fill_none or ak.drop_none remove them)"
            )
        return _ak_unwrap(layout.project(), what)  # Awkward's own gather: a copy
    if isinstance(layout, c.IndexedArray):
        return _ak_unwrap(layout.project(), what)  # Awkward's own gather: a copy
    return layout


def _ak_has_missing(layout) -> bool:
    """Whether ``layout`` or any level below it holds a missing value."""
    import awkward as ak

    c = ak.contents
    while True:
        if isinstance(layout, (c.IndexedOptionArray, c.ByteMaskedArray, c.BitMaskedArray)):
            missing = layout.mask_as_bool(valid_when=False)
            if bool(_xp_of(missing).any(missing)):
                return True
        if not hasattr(layout, "content"):
            return False
        layout = layout.content


def _ak_dense(layout, what: str):
    """The dense values below the last ragged level: (n, *inner)."""
    import awkward as ak

    c = ak.contents
    layout = _ak_unwrap(layout, what)
    if isinstance(layout, c.EmptyArray):
        return np.zeros(0, np.float64)  # Awkward's type of an empty list's content
    if isinstance(layout, c.NumpyArray):
        _ak_no_text(layout, what)
        return layout.data
    if isinstance(layout, c.RegularArray):
        inner = _ak_dense(layout.content, what)
        n = layout.length
        k = layout.size
        return inner[: n * k].reshape((n, k, *inner.shape[1:]))
    raise TypeError(f"{what} is an Awkward {type(layout).__name__}; hrarray reads lists of numbers")


def _ak_no_text(layout, what: str) -> None:
    """Awkward's strings and bytestrings are lists of uint8 marked as such: refuse
    them, as from_arrow does, rather than read their bytes as numbers."""
    kind = layout.parameter("__array__")
    if kind in ("string", "bytestring", "char", "byte"):
        raise TypeError(
            f"{what} holds Awkward {kind}s; hrarray reads lists of numbers, not text "
            "or bytes"
        )


def _ak_ragged(layout, what: str) -> RaggedArray:
    layout = _ak_unwrap(layout, what)
    _ak_no_text(layout, what)
    offsets, content = _ak_offsets_of(layout)
    if offsets.shape[0] and _ak_has_missing(content):
        # missing values the lists do not reach (a slice of a larger array) are not
        # the RaggedArray's: the content cut to the lists' span (Awkward's slice, a
        # view; a nested content's own offsets then span only what these lists
        # reach), offsets shifted (a copy of the offsets only)
        lo, hi = int(offsets[0]), int(offsets[-1])
        if (lo, hi) != (0, content.length):
            content, offsets = content[lo:hi], offsets - offsets[0]
    content = _ak_unwrap(content, f"{what} content")
    if _ak_has_ragged(content):
        values = _ak_ragged(content, f"{what} content")
    else:
        values = _ak_dense(content, f"{what} content")
    return _level(values, offsets, what)


def from_awkward(array) -> RaggedArray:
    """A ``RaggedArray`` sharing the buffers of an Awkward array.

    Parameters
    ----------
    array : awkward.Array or awkward.contents.Content
        Variable-length lists of numbers, nested to any depth (``var * var *
        float32`` gives depth 2); regular dimensions below the last ragged
        one become the inner shape (``var * 64 * float32`` gives values
        ``(n, 64)``).

    Returns
    -------
    RaggedArray
        Zero-copy for ``ListOffsetArray`` levels (offsets int32 or int64 as
        they are; uint32 offsets are converted to int64, a copy of the
        offsets only). A ``ListArray`` level copies only its offsets when
        its lists are back to back, else it is repacked by Awkward (a copy);
        ``IndexedArray`` content is projected (a copy).

    Raises
    ------
    TypeError
        Records, unions, strings... (anything but lists of numbers), or no
        ragged level at all.
    ValueError
        Missing values (option types holding a None; the message names the first).
    """
    import awkward as ak

    # a dict would reach Awkward as one record, which it refuses with a ValueError
    if array is None or isinstance(array, (str, bytes, int, float, complex, dict)):
        raise TypeError(f"array must be an Awkward array, got {type(array).__name__}")
    try:
        layout = ak.to_layout(array, allow_record=False)
    except TypeError as exc:  # Awkward's own message names no argument
        raise TypeError(
            f"array must be an Awkward array, got {type(array).__name__} ({exc})"
        ) from None
    if not _ak_has_ragged(_ak_unwrap(layout, "array")):
        raise TypeError(
            f"array has Awkward type {ak.types.ArrayType(layout.form.type, layout.length)}; "
            "from_awkward needs at least one variable-length list level"
        )
    return _ak_ragged(layout, "array")


def to_awkward(x: RaggedArray):
    """The Awkward array of ``x``, sharing its buffers.

    Returns
    -------
    awkward.Array
        ``ListOffsetArray`` levels over a ``NumpyArray`` of the values (inner
        dimensions as regular dimensions: ``var * 64 * float32``). Zero-copy:
        offsets (int32 or int64) and values are the same buffers; offsets that
        do not start at 0 are kept. Values in non-native byte order are the
        one copy (Awkward takes native order only).

    Raises
    ------
    TypeError
        ``x`` is on a CUDA device (call ``x.to_numpy()`` first).
    """
    import awkward as ak

    if not isinstance(x, RaggedArray):
        raise TypeError(f"x must be a RaggedArray, got {type(x).__name__}")
    _host_or_raise(x, "to_awkward")
    return ak.Array(_ak_layout(x, ak))


def _ak_layout(x: RaggedArray, ak):
    offs = x.offsets
    index = ak.index.Index32(offs) if offs.dtype == np.int32 else ak.index.Index64(offs)
    if isinstance(x.values, RaggedArray):
        content = _ak_layout(x.values, ak)
    else:
        vals = x.values
        if not vals.dtype.isnative:
            # Awkward takes native byte order only: one copy, as to_arrow's
            vals = vals.astype(vals.dtype.newbyteorder("="))
        content = ak.contents.NumpyArray(vals)
    return ak.contents.ListOffsetArray(index, content)
