"""``RaggedArray``: flat values plus CSR offsets, nested level by level."""

from __future__ import annotations

import itertools

import numpy as np

from hrarray._backends import backend_of, check_same_gpu, device_of

__all__ = ["RaggedArray"]

_INT_KINDS = "iu"
_INT32 = np.dtype(np.int32)
_INT64 = np.dtype(np.int64)


def _frozen(offsets):
    """Offsets hrarray made (converted or built by a constructor), read-only
    (NumPy; CuPy has no flag): validated once, nothing may write into them (a
    write past the values made kernels read out of bounds)."""
    if offsets.__class__ is np.ndarray:
        offsets.flags.writeable = False
    return offsets


def refuse_objects(be, arr, argname: str) -> None:
    """A TypeError for an array of Python objects, or of records holding some
    (no kernel reads them; a gather of such records copied their pointers)."""
    dt = np.dtype(be.dtype(arr))
    # (not hasobject alone: NumPy 2's StringDType has it, and its strings move)
    if dt.kind == "O" or (dt.names is not None and dt.hasobject):
        raise TypeError(f"{argname} has unsupported dtype object" if dt.kind == "O"
                        else f"{argname} has unsupported dtype {dt} (it holds Python objects)")


def is_int(v) -> bool:
    """Whether NumPy takes ``v`` as an integer (``operator.index``): an int, a
    NumPy integer or a 0-d integer array, not a bool."""
    if isinstance(v, np.ndarray):
        return v.ndim == 0 and v.dtype.kind in _INT_KINDS
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def int_arg(v, argname: str) -> int:
    """``v`` as a Python int where ``is_int``; else a TypeError naming ``argname``."""
    if not is_int(v):
        raise TypeError(f"{argname} must be an integer, got {type(v).__name__}")
    return int(v)


def _host_ints(seq, argname: str):
    """A list or tuple meant as integers (offsets, lengths, ids, an index) as
    a NumPy array, or None where NumPy cannot make one (a ragged list).

    NumPy makes ``[]`` and ``[0, 2**63]`` and ``[0, np.uint64(3)]`` float64
    and ``[0, 2**64]`` object, so valid integers were refused as "float64
    offsets". Integers (Python or NumPy, not bool) give int64, or uint64
    where one needs it; one beyond both is a ValueError naming it."""
    if len(seq) == 0:
        return np.zeros(0, np.int64)  # the length, not the dtype, is what may be wrong
    try:
        arr = np.asarray(seq)
    except Exception as exc:
        if isinstance(exc, ValueError) and "inhomogeneous" in str(exc):
            return None
        raise TypeError(f"{argname} must be an array, got {type(seq).__name__} "
                        f"({type(exc).__name__}: {exc})") from exc
    if arr.dtype.kind not in "fO" or not all(
        isinstance(e, (int, np.integer)) and not isinstance(e, (bool, np.bool_)) for e in seq
    ):
        return arr
    ints = [int(e) for e in seq]
    if min(ints) >= -(2**63) and max(ints) < 2**63:
        return np.array(ints, np.int64)
    if min(ints) >= 0 and max(ints) < 2**64:
        return np.array(ints, np.uint64)
    k = next((i for i, e in enumerate(ints) if not -(2**63) <= e < 2**64), None)
    if k is not None:
        raise ValueError(f"{argname}[{k}]={ints[k]} does not fit a 64-bit integer")
    j = next(i for i, e in enumerate(ints) if e < 0)
    k = next(i for i, e in enumerate(ints) if e >= 2**63)
    raise ValueError(
        f"{argname}[{j}]={ints[j]} and {argname}[{k}]={ints[k]}: no 64-bit integer type "
        "holds both a negative value and one past int64"
    )


def _int_sequence(be, obj, argname: str):
    """``obj`` as ``be.asarray`` should read it where it is a list or tuple
    of integers (``_host_ints``; on CUDA only an empty one, so that a list's
    device mismatch is still named as a list); anything else as it is."""
    if not isinstance(obj, (list, tuple)) or (be.name != "cpu" and len(obj)):
        return obj
    arr = _host_ints(obj, argname)
    if arr is None:
        return obj  # ragged: the backend's conversion says so
    if arr.dtype.kind in "iu":
        # NumPy reads [0, True, 5] as integers; bool offsets, lengths and ids are a
        # TypeError (an all-bool list gives a bool array, refused by the caller)
        k = next((i for i, e in enumerate(obj) if isinstance(e, (bool, np.bool_))), None)
        if k is not None:
            raise TypeError(f"{argname} must be integers, not bool: {argname}[{k}]={obj[k]!r}")
    return arr


def _named_alloc_error(exc: Exception, what: str) -> Exception:
    """NumPy's allocation error (it names no argument) as the same kind of
    error, saying ``what`` was asked: MemoryError stays one, else ValueError."""
    kind = MemoryError if isinstance(exc, MemoryError) else ValueError
    return kind(f"{what}: {exc}")


def _normalize_offsets(be, offsets, argname: str, what: str = "values", nvals=None):
    """Type and shape checks of an offsets array (values are checked later).

    int32 and int64 are used as they are (zero-copy); other integer dtypes
    are converted to int64 (a copy of the offsets only). ``nvals``: see
    ``_check_uint64``.
    """
    given = offsets
    offsets = be.asarray(_int_sequence(be, offsets, argname), argname)
    if offsets is not given:
        # an array hrarray made (from a list, a DLPack export...), read-only as
        # converted offsets are; or one an object's __array__ handed over, which
        # may be the caller's own ndarray (a pandas Series' data): a read-only
        # view then, so the caller's array keeps its flags (an audit: freezing
        # the array itself made the caller's next write raise)
        if offsets.__class__ is np.ndarray:
            offsets = offsets.view()
        offsets = _frozen(offsets)
    dt = be.dtype(offsets)
    if dt == np.bool_ or dt.kind not in _INT_KINDS:
        raise TypeError(f"{argname} must have an integer dtype, got {dt}")
    if offsets.ndim != 1:
        raise ValueError(f"{argname} must be 1-D, got ndim={offsets.ndim}")
    if offsets.shape[0] < 1:
        raise ValueError(f"{argname} must have at least one element (nsegments + 1)")
    # dtype equality, not the scalar type: np.longlong is int64's equal with
    # another type object, and is used as it is too
    if not (dt.isnative and dt in (_INT32, _INT64)):
        u64 = dt.kind == "u" and dt.itemsize == 8
        if u64 and be.name == "cpu":
            _check_uint64(be, offsets, argname, what, nvals)
        try:
            offsets = _frozen(be.astype(offsets, np.int64))
        except OverflowError:
            # (the CUDA simulator's conversion raises where a GPU wraps)
            if u64:
                _check_uint64(be, offsets, argname, what, nvals)
            raise
    return offsets


def _check_uint64(be, offsets, argname, what, nvals=None):
    """uint64 offsets beyond int64 would wrap negative when converted: a
    ValueError naming the first one as given. On the CPU before the conversion;
    on CUDA only once the converted offsets failed validation (the wrapped
    value always fails it), which spares valid input a second synchronisation.
    ``nvals`` (the offsets are to be validated against it): the offsets before
    that one are validated first, so that an earlier bad position is the one
    named (positions count in index order)."""
    bad = be.first_past_int64(offsets)
    if bad is not None:
        if nvals is not None and bad[0] > 0:
            be.validate(be.astype(offsets[: bad[0]], np.int64), nvals, argname, what)
        raise ValueError(
            f"{argname}[{bad[0]}]={bad[1]} is past the end of {what} "
            "(it does not even fit int64)"
        )


def _rebuild(values, offsets):
    """A RaggedArray from unpickled (or deep-copied) parts: validated again (a pickle
    may be damaged or edited, and validated offsets are the memory-safety boundary),
    with NumPy offsets copied into a read-only array of hrarray's own (an unpickled
    writable array let a write send kernels out of bounds; a view of it was not
    enough, since ``pickle.loads(pickle.dumps((x, x.offsets)))`` hands the caller
    that same array). The copy is O(nsegments), as the validation."""
    if offsets.__class__ is np.ndarray:
        offsets = _frozen(offsets.copy())
    return RaggedArray(values, offsets)


class SegmentIndexError(IndexError, ValueError):
    """An index out of range (or of the wrong shape) for ``x[...]``: an
    ``IndexError`` as NumPy raises, and a ``ValueError`` (API.md section 6:
    right kind, wrong content), so either ``except`` works."""


class FillValueKindError(TypeError, ValueError):
    """A ``fill_value`` that is not a numeric scalar (a string, an array, a
    list...): the wrong kind of thing, so a ``TypeError``
    (API.md section 6), and also a ``ValueError``, which NumPy raises for the
    same mistake (``np.full(3, "a", dtype=float)``): either ``except`` works."""


def repeat_by(xp, a, counts, *, general: bool = False):
    """``a[k]`` repeated ``counts[k]`` times along axis 0 (``np.repeat(a, counts, axis=0)``).

    NumPy's ``repeat`` where ``xp`` is NumPy; otherwise the segment of each output row is
    found by a search in the running total of ``counts``, because CuPy's ``repeat`` takes no
    array of counts (it raises ``ValueError``). ``general=True`` takes that path on NumPy
    too (tests).
    """
    if xp is np and not general:
        return np.repeat(a, counts, axis=0)
    ends = xp.cumsum(counts.astype(np.int64))
    total = int(ends[-1]) if counts.shape[0] else 0
    # side="right": the first segment ending after row j holds it (empty ones end earlier)
    k = xp.searchsorted(ends, xp.arange(total, dtype=np.int64), side="right")
    return a[k]


def check_fill(fill_value, dtype: np.dtype, argname: str = "fill_value"):
    """Raise unless ``fill_value`` is a scalar that ``dtype`` can hold:
    ``FillValueKindError`` (a ``TypeError`` and a ``ValueError``) for a
    non-numeric or non-scalar one, ``ValueError`` for a number ``dtype``
    cannot represent. Returns the value to write: a complex with no imaginary
    part as its real part for a real ``dtype`` (the kernels' ``float()`` /
    ``int()`` of a Python complex would raise), else ``fill_value``."""
    given = fill_value
    try:
        f = np.asarray(fill_value)
    except (TypeError, ValueError):  # a ragged list, an object NumPy rejects
        f = np.asarray(None)
    if f.dtype == object and isinstance(fill_value, int) and not isinstance(fill_value, bool):
        # a Python int past int64 and uint64 (NumPy holds it as an object): a number
        # still, which a float dtype may hold (np.full(2, 2**64, dtype=float) works)
        if dtype.kind not in "fc":
            raise ValueError(f"{argname}={fill_value!r} cannot be represented as {dtype}")
        try:
            fill_value = float(fill_value)
        except OverflowError:
            raise ValueError(f"{argname}={fill_value!r} cannot be represented as {dtype}") \
                from None
        f = np.asarray(fill_value)
    if f.ndim != 0 or f.dtype.kind not in "biufc":
        raise FillValueKindError(f"{argname} must be a numeric scalar, got {fill_value!r}")
    bad = False
    if dtype.kind in "biu":
        if f.dtype.kind in "biu":
            iv = int(f)  # exact: through complex() int64's max would round to 2**63
        else:
            v = complex(f)
            ok = v.imag == 0 and np.isfinite(v.real) and v.real == int(v.real)
            iv = int(v.real) if ok else None
        if iv is None:
            bad = True
        elif dtype.kind == "b":
            bad = iv not in (0, 1)  # NumPy would make 2 or -1 True
        else:
            info = np.iinfo(dtype)
            bad = not info.min <= iv <= info.max
    elif dtype.kind in "fc":
        if dtype.kind == "f" and f.dtype.kind == "c":
            bad = complex(f).imag != 0
        if not bad:
            # a finite value past the dtype's range would become inf
            src = f.real if f.dtype.kind == "c" and dtype.kind == "f" else f  # imag is 0
            with np.errstate(over="ignore", invalid="ignore"):
                c = src.astype(dtype)
            if src.dtype.kind == "c":
                pairs = ((src.real, c.real), (src.imag, c.imag))
            else:
                pairs = ((src, c),)
            bad = any(np.isfinite(a) and not np.isfinite(b) for a, b in pairs)
    if bad:
        raise ValueError(f"{argname}={given!r} cannot be represented as {dtype}")
    if f.dtype.kind == "c" and dtype.kind != "c":
        return f.real[()]
    return fill_value


def _fill_other(fill_value, dtype: np.dtype, argname: str = "fill_value"):
    """``to_padded``'s fill for values that are not numbers (strings, bytes,
    datetime64, timedelta64, records). ``0``, the default, is the dtype's zero
    (``np.zeros``: ``''``, ``b''``, the epoch, a zero duration, a zeroed
    record), not ``0`` converted (``'0'`` was the padding of strings); else a
    scalar of the values' own kind (a ``str`` for strings, ``NaT``...) that
    the dtype holds as it is: ``FillValueKindError`` for another kind,
    ``ValueError`` for one that would be cut or rounded (a string longer than
    the dtype holds, a time finer than its unit)."""
    if type(fill_value) is int and fill_value == 0:
        return np.zeros((), dtype)[()]
    if dtype.kind == "V":
        try:
            f = np.asarray(fill_value, dtype=dtype)
        except (TypeError, ValueError):
            f = None
        if f is None or f.ndim != 0:
            raise FillValueKindError(
                f"{argname} must be a record of dtype {dtype}, got {fill_value!r}")
        return f[()]
    try:
        f = np.asarray(fill_value)
    except (TypeError, ValueError):
        f = np.asarray(None)
    # NumPy 2's variable-width StringDType (kind "T") holds a str (kind "U")
    kind = "U" if dtype.kind == "T" else dtype.kind
    if f.ndim != 0 or f.dtype.kind != kind:
        what = {"U": "a str", "S": "bytes", "M": "a datetime64", "m": "a timedelta64"}.get(
            kind, "a scalar of the values' kind")
        raise FillValueKindError(
            f"{argname} must be {what} for "
            f"{dtype} values (or 0, the dtype's zero), got {fill_value!r}")
    c = f.astype(dtype)
    if c.astype(f.dtype) != f and not (dtype.kind in "Mm" and np.isnat(f)):
        raise ValueError(f"{argname}={fill_value!r} cannot be represented as {dtype}")
    return c[()]


class RaggedArray:
    """A ragged array: segment ``i`` is ``values[offsets[i]:offsets[i+1]]``.

    Parameters
    ----------
    values : array of shape ``(n, *inner)``, or RaggedArray
        The flat values (NumPy, CuPy, or any ``__cuda_array_interface__`` /
        DLPack producer), or a ``RaggedArray`` whose segments the new level
        groups (this is how hierarchies nest).
    offsets : 1-D integer array, length ``nsegments + 1``
        Non-decreasing, ``0 <= offsets[0]`` and ``offsets[-1] <= len(values)``.
        Offsets need not start at 0 nor end at ``len(values)`` (a slice is a
        view). int32 and int64 are used as they are; other integer dtypes
        are converted to int64 (a copy of the offsets only).
    validate : bool, default True
        Check the offsets (O(nsegments), compiled, on the offsets' device).
        Only ``True`` or ``False`` (a NumPy bool too); anything else is a
        ``TypeError``, so that ``None`` or ``0`` never skips the check.
        ``validate=False`` is for trusted input only: kernels do not bounds
        check, so invalid offsets then read out of bounds.

    Notes
    -----
    Construction never copies ``values`` and never copies int32/int64
    ``offsets``; any strides and read-only arrays are accepted. Mutating
    ``offsets`` after validation voids the check.
    """

    # _ends: (offsets[0], offsets[-1]) where known (validation read them, or the
    # offsets are compact by construction), else None. On CUDA reading them is a
    # host synchronisation, which compacting (every levels < depth reduction,
    # every transform) would otherwise pay per level; the CPU backend reads them
    # afresh (backend.ends). Ends belong to the offsets array: whatever reuses
    # the same offsets reuses them.
    __slots__ = ("_backend", "_ends", "_offsets", "_values")

    def __init__(self, values, offsets, *, validate=True):
        if isinstance(values, RaggedArray):
            be = backend_of(("values", values.leaf_values), ("offsets", offsets))
            vals = values
            nvals = len(values)
            what = "the inner level's segments"
        else:
            be = backend_of(("values", values), ("offsets", offsets))
            vals = be.asarray(values, "values")
            if vals.ndim == 0:
                raise ValueError("values must be at least 1-D (n, *inner), got ndim=0")
            refuse_objects(be, vals, "values")
            nvals = vals.shape[0]
            what = "values"
        if validate is not True and validate is not False and type(validate) is not np.bool_:
            # the memory-safety switch: validate=None or 0 must not silently skip the check
            raise TypeError(f"validate must be True or False, got {validate!r}")
        offs = _normalize_offsets(be, offsets, "offsets", what, nvals if validate else None)
        try:
            self._ends = be.validate(offs, nvals, "offsets", what) if validate else None
        except ValueError:
            if offs is not offsets and be.name != "cpu":
                given = be.asarray(offsets, "offsets")
                dt = be.dtype(given)
                if dt.kind == "u" and dt.itemsize == 8:
                    _check_uint64(be, given, "offsets", what, nvals)
            raise
        self._backend = be
        self._values = vals
        self._offsets = offs

    @classmethod
    def _trusted(cls, values, offsets, ends=None):
        """Build without checks (internal: offsets already valid).

        Every array hrarray derives (results, slices, ``with_values``) comes
        through here, often sharing offsets with its input: NumPy offsets are
        kept as a read-only view, so that writing into a derived array's
        offsets cannot change (and invalidate) the validated offsets of the
        array it came from -- its kernels would then read out of bounds.
        ``ends``: ``(offsets[0], offsets[-1])`` where the caller knows them."""
        if offsets.__class__ is np.ndarray and offsets.flags.writeable:
            offsets = offsets.view()
            offsets.flags.writeable = False
        self = object.__new__(cls)
        self._backend = values._backend if isinstance(values, RaggedArray) else backend_of(
            ("values", values)
        )
        self._values = values
        self._offsets = offsets
        self._ends = ends
        return self

    @staticmethod
    def _rewrap(inner, levels):
        """``inner`` nested in the offsets (and known ends) of ``levels``, outermost
        first (``levels[-1]`` wraps ``inner`` directly): how every derived result
        gets the structure of the levels it keeps."""
        for lvl in reversed(levels):
            inner = RaggedArray._trusted(inner, lvl._offsets, lvl._ends)
        return inner

    # ------------------------------------------------------------ copies
    def __reduce__(self):
        # (every pickle protocol; __slots__ alone fails protocols 0 and 1)
        return (_rebuild, (self._values, self._offsets))

    def __copy__(self):
        # shares both arrays, as before; not through _rebuild, which would freeze (a
        # view of) offsets a caller may still own writable
        return RaggedArray._trusted(self._values, self._offsets, self._ends)

    def __deepcopy__(self, memo):
        import copy

        return _rebuild(copy.deepcopy(self._values, memo), copy.deepcopy(self._offsets, memo))

    # ------------------------------------------------------------ attributes
    @property
    def values(self):
        """The flat values, or the inner ``RaggedArray`` for depth > 1."""
        return self._values

    @property
    def offsets(self):
        """Segment boundaries, length ``nsegments + 1``."""
        return self._offsets

    @property
    def lengths(self):
        """Segment lengths as int64."""
        return self._backend.diff(self._offsets)

    @property
    def nsegments(self) -> int:
        """Number of segments of the top level (``len(x)``, ``len(offsets) - 1``)."""
        return int(self._offsets.shape[0]) - 1

    def __len__(self) -> int:
        return self.nsegments

    @property
    def nvalues(self) -> int:
        """``offsets[-1] - offsets[0]``: the elements inside segments."""
        lo, hi = self._backend.ends(self._offsets, self._ends)
        return hi - lo

    @property
    def depth(self) -> int:
        """Number of ragged levels (1 for flat values)."""
        d = 1
        v = self._values
        while isinstance(v, RaggedArray):
            d += 1
            v = v._values
        return d

    @property
    def leaf_values(self):
        """The innermost dense array."""
        v = self._values
        while isinstance(v, RaggedArray):
            v = v._values
        return v

    @property
    def dtype(self) -> np.dtype:
        """dtype of the leaf values (as given: non-native byte order included)."""
        return np.dtype(self._backend.dtype(self.leaf_values))

    @property
    def inner_shape(self) -> tuple:
        """Shape of one leaf element: ``leaf_values.shape[1:]`` (``()`` for scalars)."""
        return tuple(self.leaf_values.shape[1:])

    @property
    def device(self) -> str:
        """``"cpu"`` (NumPy values) or ``"cuda"`` (CuPy or other CUDA arrays)."""
        return self._backend.name

    # ------------------------------------------------------------ structure
    def _levels(self) -> list[RaggedArray]:
        """This array and every inner level, outermost first."""
        out = [self]
        v = self._values
        while isinstance(v, RaggedArray):
            out.append(v)
            v = v._values
        return out

    def _compact(self) -> RaggedArray:
        """Same content with offsets starting at 0 and ending at ``len(values)``
        at every level (copies offsets where they must be rebased, never values)."""
        lo, hi = self._backend.ends(self._offsets, self._ends)
        ragged = isinstance(self._values, RaggedArray)
        # (shape[0], not len(): an array argument need not have __len__)
        whole = (lo, hi) == (0, len(self._values) if ragged else self._values.shape[0])
        if ragged:
            # (the whole inner level keeps its own known ends: no slice)
            inner = (self._values if whole else self._values[lo:hi])._compact()
        else:
            inner = self._values if whole else self._values[lo:hi]
        offs = self._offsets if whole else self._backend.shift(self._offsets, lo)
        return RaggedArray._trusted(inner, offs, (0, hi - lo))

    def _composed_offsets(self):
        """Offsets of each top segment into the leaf values (levels flattened)."""
        offs = self._offsets
        v = self._values
        while isinstance(v, RaggedArray):
            offs = v._backend.take(v._offsets, offs)
            v = v._values
        return offs

    # ------------------------------------------------------------ indexing
    def __getitem__(self, key):
        """Segments by position.

        ``x[i]``: segment ``i`` (negative counts from the end), an array view
        at depth 1, a ``RaggedArray`` deeper. ``x[i:j]`` (and ``x[i:j:k]``):
        a ``RaggedArray`` view sharing both buffers (a step copies).
        ``x[int_array]`` / ``x[bool_mask]``: a gather, copied, compact.
        ``x[...]``: a view of the whole array; ``x[None]`` is a ``TypeError``.
        Out-of-range positions, a mask of the wrong length, an index array
        that is not 1-D and ``x[i, j]`` raise an ``IndexError`` that is also
        a ``ValueError``, naming the bad position.
        """
        be = self._backend
        n = self.nsegments
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            # (a bool is a 0-d boolean index below, as np.True_: an error, not x[1])
            i = int(key)
            if i < -n or i >= n:
                raise SegmentIndexError(f"segment index {i} is out of range for {n} segments")
            i %= n
            lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
            return self._values[lo:hi]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                stop = max(stop, start)
                whole = start == 0 and stop == n  # the same ends, if known
                return RaggedArray._trusted(self._values, self._offsets[start : stop + 1],
                                            self._ends if whole else None)
            # a step past the length picks the start alone (clamped: np.arange with
            # a step of 2**63 made float64 indices, then "not an integer array")
            key = np.arange(start, stop, max(-n, min(step, n)) if n else 1, dtype=np.int64)
            if be.name != "cpu":
                key = be.xp.asarray(key)
        if key is Ellipsis:  # as NumPy: a view of everything
            return RaggedArray._trusted(self._values, self._offsets, self._ends)
        if key is None:
            raise TypeError(
                "a RaggedArray cannot take a new axis (x[None]); index it with a segment, "
                "a slice, or an integer or boolean array"
            )
        if isinstance(key, tuple):
            # NumPy reads x[i, j] as two dimensions; a segment's elements are x[i][j]
            raise SegmentIndexError(
                "a RaggedArray takes one index (a segment, a slice, an integer or boolean "
                "array); use x[i][j] for an element of segment i"
            )
        if isinstance(key, list):
            # an empty list gathers nothing, as in NumPy (not a float64 array)
            try:
                key = _host_ints(key, "index")
            except ValueError as exc:
                # an integer past 64 bits is out of range for any array: the same
                # IndexError (and ValueError) as any other out-of-range index
                raise SegmentIndexError(str(exc)) from None
            if key is None:  # NumPy's "inhomogeneous shape" names no argument
                raise TypeError(
                    "index must be an integer or boolean array, got a ragged list "
                    "(nested lists of unequal lengths)"
                )
            if be.name != "cpu":
                key = be.xp.asarray(key)
        if isinstance(key, (bool, np.bool_)) or (isinstance(key, np.ndarray) and key.ndim == 0):
            # host scalars, the same on every backend: a 0-d integer array is an
            # integer, a boolean a 0-d mask (the device check below took them for
            # host index arrays on CUDA)
            k = np.asarray(key)
            if k.dtype == np.bool_:
                raise SegmentIndexError(f"boolean index has shape (), expected ({n},)")
            if k.dtype.kind not in _INT_KINDS:
                raise TypeError(f"index must be an integer or boolean array, got dtype {k.dtype}")
            return self[k.item()]
        if device_of(key) != be.name:
            raise TypeError(f"index array is on {device_of(key)} but the array is on {be.name}")
        if be.name != "cpu":
            check_same_gpu(("the array", self._offsets), ("index", key))
        idx = be.xpa(be.asarray(key, "index"))
        if idx.dtype == np.bool_:
            if idx.shape != (n,):
                raise SegmentIndexError(f"boolean index has shape {idx.shape}, expected ({n},)")
            idx = be.xp.nonzero(idx)[0]
        elif idx.dtype.kind not in _INT_KINDS:
            raise TypeError(f"index must be an integer or boolean array, got dtype {idx.dtype}")
        elif idx.ndim == 0:  # a 0-d integer array is an integer, as in NumPy
            return self[int(idx)]
        elif idx.ndim != 1:
            raise SegmentIndexError(f"an integer index array must be 1-D, got shape {idx.shape}")
        if idx.dtype.kind == "u" and idx.size:
            # checked before the int64 cast, where 2**63 and up would wrap negative
            big = idx >= np.uint64(n)
            if bool(big.any()):
                k = int(be.xp.nonzero(big)[0][0])
                raise SegmentIndexError(
                    f"index[{k}]={int(idx[k])} is out of range for {n} segments")
        return self._take(idx.astype(np.int64, copy=False))

    def _take(self, idx):
        """Gather segments ``idx`` (copies)."""
        xp = self._backend.xp
        n = self.nsegments
        if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
            bad = int(xp.nonzero((idx < -n) | (idx >= n))[0][0])
            raise SegmentIndexError(
                f"index[{bad}]={int(idx[bad])} is out of range for {n} segments"
            )
        idx = xp.where(idx < 0, idx + n, idx)
        offs = self._backend.xpa(self._offsets)
        starts = offs[idx].astype(np.int64)
        lens = (offs[idx + 1] - offs[idx]).astype(np.int64)
        new_offs = xp.zeros(idx.shape[0] + 1, np.int64)
        xp.cumsum(lens, out=new_offs[1:])
        total = int(new_offs[-1])
        elem = repeat_by(xp, starts - new_offs[:-1], lens) + xp.arange(total, dtype=np.int64)
        if isinstance(self._values, RaggedArray):
            inner = self._values._take(elem)
        else:
            inner = self._backend.xpa(self._values)[elem]
        return RaggedArray._trusted(inner, new_offs, (0, total))

    # ------------------------------------------------------------ conversions
    def segment_ids(self):
        """Segment of each of the ``nvalues`` elements (int64).

        Together with :meth:`local_index` this lets a user encoder apply
        position-dependent weights with one segmented sum and no padding::

            w = W[x.local_index()]              # weight per element, (nvalues, d)
            y = x.with_values(x.values[x.offsets[0]:x.offsets[-1]] * w).sum()

        Examples
        --------
        >>> import numpy as np, hrarray as hr
        >>> x = hr.from_lengths(np.arange(5.0), [2, 0, 3])
        >>> x.segment_ids()
        array([0, 0, 2, 2, 2])
        """
        xp = self._backend.xp
        lens = self._backend.xpa(self.lengths)
        return repeat_by(xp, xp.arange(self.nsegments, dtype=np.int64), lens)

    def local_index(self):
        """Position of each of the ``nvalues`` elements inside its segment (int64).

        Examples
        --------
        >>> import numpy as np, hrarray as hr
        >>> x = hr.from_lengths(np.arange(5.0), [2, 0, 3])
        >>> x.local_index()
        array([0, 1, 0, 1, 2])
        >>> W = np.array([1.0, 10.0, 100.0])        # one weight per position
        >>> hr.sum(x.with_values(x.values * W[x.local_index()]))
        array([ 10.,   0., 432.])
        """
        be = self._backend
        xp = be.xp
        lens = be.xpa(self.lengths)
        offs = be.xpa(self._offsets)
        starts = (offs[:-1] - offs[0]).astype(np.int64)
        return xp.arange(self.nvalues, dtype=np.int64) - repeat_by(xp, starts, lens)

    def with_values(self, new_values) -> RaggedArray:
        """Same structure, new leaf values (one per leaf element inside segments).

        Parameters
        ----------
        new_values : array
            One row per leaf element inside the segments: at depth 1 ``x.nvalues``
            rows; deeper, the leaf elements the segments reach (the characters,
            not the words, of a characters -> words -> sentences array; where
            every level's offsets span its values, ``len(x.leaf_values)``). Any
            dtype and inner shape; on ``x``'s device. Not copied.

        Returns
        -------
        RaggedArray
            ``x``'s levels over ``new_values``, compact (offsets start at 0; a
            copy of the offsets only where ``x``'s did not).

        Raises
        ------
        ValueError
            ``new_values`` has another number of rows (the message names the
            number wanted).
        TypeError
            ``new_values`` is on another device, or of dtype object.

        Examples
        --------
        >>> import numpy as np, hrarray as hr
        >>> x = hr.nest(np.arange(5.0), np.array([0, 2, 5]), np.array([0, 1, 2]))
        >>> x.nvalues, len(x.leaf_values)
        (2, 5)
        >>> x.with_values(np.ones(5)).to_list()
        [[[1.0, 1.0]], [[1.0, 1.0, 1.0]]]
        """
        # (checked before _compact(), which may run a kernel)
        be = backend_of(("x", self.leaf_values), ("new_values", new_values))
        c = self._compact()
        levels = c._levels()
        leaf = levels[-1]
        new = be.asarray(new_values, "new_values")
        refuse_objects(be, new, "new_values")  # as the constructor
        n_need = leaf.nvalues
        if new.ndim == 0 or new.shape[0] != n_need:
            got = "a scalar" if new.ndim == 0 else f"{new.shape[0]}"
            raise ValueError(f"new_values must have {n_need} rows (the leaf values), got {got}")
        del be
        return RaggedArray._rewrap(new, levels)

    def to_numpy(self) -> RaggedArray:
        """A copy on the host (NumPy); ``self`` if already there."""
        if self._backend.name == "cpu":
            return self
        inner = (
            self._values.to_numpy()
            if isinstance(self._values, RaggedArray)
            else self._backend.to_host(self._values)
        )
        return RaggedArray._trusted(inner, self._backend.to_host(self._offsets), self._ends)

    def to_cupy(self) -> RaggedArray:
        """A copy on the current CUDA device as CuPy arrays (needs CuPy)."""
        try:
            import cupy
        except ImportError as exc:
            raise ModuleNotFoundError(
                "to_cupy() needs CuPy: pip install 'hrarray[cuda12]' or 'hrarray[cuda13]' "
                f"(the CUDA major of your driver) ({exc})", name="cupy"
            ) from exc

        inner = (
            self._values.to_cupy()
            if isinstance(self._values, RaggedArray)
            else cupy.asarray(self._values)
        )
        # (ends read here: on the CPU they are not kept current, and are free to read)
        offs = self._offsets
        ends = (int(offs[0]), int(offs[-1])) if self._backend.name == "cpu" else self._ends
        return RaggedArray._trusted(inner, cupy.asarray(offs), ends)

    def to_arrow(self):
        """The Arrow list array of this array, sharing its buffers (see
        :func:`hrarray.to_arrow`; needs pyarrow)."""
        from hrarray.interop import to_arrow

        return to_arrow(self)

    def to_awkward(self):
        """The Awkward array of this array, sharing its buffers (see
        :func:`hrarray.to_awkward`; needs awkward)."""
        from hrarray.interop import to_awkward

        return to_awkward(self)

    def to_list(self) -> list:
        """Nested Python lists (a host copy)."""
        node = self.to_numpy()
        levels = []  # each level's offsets of the segments used, outermost first
        lo, hi = 0, node.nsegments
        while isinstance(node, RaggedArray):
            offs = np.asarray(node._offsets)[lo : hi + 1].tolist()
            levels.append(offs)
            lo, hi = offs[0], offs[-1]  # the elements of the next level inward they cover
            node = node._values
        # Built from the leaves outward, each level from the lists of the one
        # inside it (no recursion: any depth; no RaggedArray per segment)
        items = np.asarray(node)[lo:hi].tolist()
        for offs in reversed(levels):
            base = offs[0]
            items = [items[a - base : b - base] for a, b in itertools.pairwise(offs)]
        return items

    def to_padded(self, fill_value=0, max_length=None):
        """Dense ``(nsegments, L, *inner)`` array and its mask.

        ``L`` is ``max_length`` or the longest segment; longer segments are
        truncated. ``mask[i, j]`` is True where element ``j`` of segment ``i``
        exists. Depth-1 arrays only. ``fill_value`` must fit the values' dtype
        (a ``ValueError`` where it would not); values that are not numbers
        (strings, datetime64...) take one of their own kind, and ``0``, the
        default, is their dtype's zero (``''``, the epoch...).
        """
        if self.depth != 1:
            raise ValueError(
                "to_padded needs a depth-1 RaggedArray; pad one level at a time "
                "(x.values.to_padded(), x[i].to_padded()) or reduce levels first"
            )
        xp = self._backend.xp
        lens = self._backend.xpa(self.lengths)
        if max_length is not None:
            max_length = int_arg(max_length, "max_length")
        L = int(lens.max()) if self.nsegments and max_length is None else int(max_length or 0)
        if L < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        dt = np.dtype(self._backend.dtype(self._values))
        if dt.kind in "biufc":
            fill_value = check_fill(fill_value, dt)
        else:
            fill_value = _fill_other(fill_value, dt)
        n = self.nsegments
        try:
            padded = xp.full((n, L, *self.inner_shape), fill_value, dtype=self._values.dtype)
        except (ValueError, MemoryError) as exc:  # NumPy's message names no argument
            raise _named_alloc_error(
                exc, f"to_padded: a padded array of shape {(n, L, *self.inner_shape)} "
                f"(max_length={L}) cannot be allocated") from None
        mask = xp.arange(L)[None, :] < lens[:, None]
        lo = int(self._offsets[0]) if n else 0
        seg = self.segment_ids()
        pos = self.local_index()
        keep = pos < L
        src = xp.arange(self.nvalues, dtype=np.int64) + lo
        padded[seg[keep], pos[keep]] = self._backend.xpa(self._values)[src[keep]]
        return padded, mask

    # ------------------------------------------------------------ display
    def __repr__(self) -> str:
        """Short: depth, number of segments, length summary, dtype, device."""
        n = self.nsegments
        if n:
            lens = np.asarray(self._backend.to_host(self.lengths))
            ls = f"lengths=[min {lens.min()}, median {np.median(lens):g}, max {lens.max()}]"
        else:
            ls = "lengths=[]"
        inner = f" inner_shape={self.inner_shape}" if self.inner_shape else ""
        return (
            f"<RaggedArray depth={self.depth} nsegments={n} {ls} "
            f"dtype={self.dtype}{inner} device={self.device}>"
        )

    def __array__(self, *args, **kwargs):
        raise TypeError(
            "a RaggedArray has no dense NumPy form; use .values, .to_padded() or a reduction"
        )
