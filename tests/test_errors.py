"""Bad input (API.md section 6, research/reliability.md (b)).

Each case asserts the exception type and that the message names the argument
and, where there is one, the first bad position. Per API.md, offsets that do
not start at 0 or do not end at ``len(values)`` are legal (unlike the strict
recommendation of reliability.md): they are checked in test_ragged /
test_reductions, not here.
"""

import math
import re

import numpy as np
import pytest
from conftest import CUDA_MODE, make_ragged, to_backend, to_host

import hrarray as hr

needs_cuda = pytest.mark.skipif(CUDA_MODE is None, reason="numba-cuda is not usable here")


def raises(exc_type, *patterns):
    """``pytest.raises`` that also checks every regex in ``patterns`` against the message."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc_type)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            out = self.ctx.__exit__(*exc)
            msg = str(self.info.value)
            for p in patterns:
                assert re.search(p, msg), f"message {msg!r} does not match {p!r}"
            return out

    return _Check()


# --------------------------------------------------------------------------
# offsets values (ValueError naming the first bad position), on both backends
# --------------------------------------------------------------------------

BAD_OFFSETS = [
    # (id, offsets, len(values), pattern naming the first bad position)
    ("non-monotonic", [0, 3, 2, 5], 5, r"offsets\[2\]"),
    ("non-monotonic-late", [0, 1, 2, 3, 3, 1], 5, r"offsets\[5\]"),
    ("negative-first", [-1, 2, 5], 5, r"offsets\[0\]"),
    ("negative-middle", [0, -2, 5], 5, r"offsets\[1\]"),
    ("past-the-end", [0, 2, 9], 5, r"offsets\[2\]=9"),
    ("past-the-end-huge", [0, 2, 2**40], 5, r"offsets\[2\]"),
    ("past-empty-values", [0, 1], 0, r"offsets\[1\]"),
    # the first offset past the end, not the last
    ("past-the-end-early", [0, 6, 7, 9], 5, r"offsets\[1\]=6"),
    ("past-the-end-middle", [0, 1, 5, 6, 6, 8], 5, r"offsets\[3\]=6"),
    # int32 cumsum of [2**31 - 1, 1] wrapped negative: caught as non-monotonic
    ("int32-wrapped-cumsum", np.array([0, 2, -(2**31)], np.int32), 5, r"offsets\[2\]"),
    # a decrease after one past the end: that one comes first (helper I's audit: the
    # decrease was named, offsets[2] here)
    ("past-the-end-then-decreasing", [0, 30, 11, 11], 10, r"offsets\[1\]=30 is past the end"),
    ("past-the-end-at-the-decrease", [0, 4, 12, 3], 10, r"offsets\[2\]=12 is past the end"),
    ("decreasing-then-past-the-end", [0, 5, 3, 11], 10, r"offsets\[2\]=3 < offsets\[1\]"),
]


@pytest.mark.parametrize(
    ("offsets", "n", "pattern"), [c[1:] for c in BAD_OFFSETS], ids=[c[0] for c in BAD_OFFSETS]
)
def test_bad_offsets_values(offsets, n, pattern, backend):
    offsets = np.asarray(offsets)
    values = np.arange(float(n))
    before = (values.copy(), offsets.copy())
    with raises(ValueError, r"\boffsets\b", pattern):
        hr.RaggedArray(to_backend(values, backend), to_backend(offsets, backend))
    np.testing.assert_array_equal(values, before[0])
    np.testing.assert_array_equal(offsets, before[1])


def test_uint64_offsets_beyond_int64(backend):
    """uint64 offsets are converted to int64: a value past 2**63 must still be rejected,
    named as given, on every backend (on CUDA the conversion wrapped it negative on a GPU
    and raised OverflowError under the simulator), in either byte order."""
    values = to_backend(np.arange(5.0), backend)
    for dt in ("<u8", ">u8"):
        for offs, pattern in [([0, 2**64 - 1], r"offsets\[1\]=18446744073709551615"),
                              ([0, 1, 2**63 + 5], r"offsets\[2\]=9223372036854775813"),
                              ([2**63, 5], r"offsets\[0\]=9223372036854775808")]:
            with raises(ValueError, pattern, "does not even fit int64"):
                hr.RaggedArray(values, to_backend(np.array(offs, dt), backend))
    x = hr.RaggedArray(values, to_backend(np.array([0, 2, 5], ">u8"), backend))
    assert to_host(x.lengths).tolist() == [2, 3]
    assert to_host(hr.sum(x)).tolist() == [1.0, 9.0]


def test_uint64_offsets_beyond_int64_after_an_earlier_bad_position():
    """Positions count in index order for uint64 offsets too: an earlier decrease or
    offset past the end is the one named, not a later value past int64 (an audit: the
    uint64 check ran before the validation and named the later one)."""
    values = np.arange(5.0)
    for offs, pattern in [([0, 3, 2, 2**63], r"offsets\[2\]=2 < offsets\[1\]=3"),
                          ([7, 2**63], r"offsets\[0\]=7 is past the end"),
                          ([0, 2, 2**63, 1], r"offsets\[2\]=9223372036854775808.*int64")]:
        with raises(ValueError, pattern):
            hr.RaggedArray(values, np.array(offs, np.uint64))
    # without validation a value past int64 is still refused (it would wrap negative)
    with raises(ValueError, r"offsets\[2\]=9223372036854775808"):
        hr.RaggedArray(values, np.array([0, 3, 2**63], np.uint64), validate=False)


def test_integer_arguments_take_a_0d_integer_array():
    """As NumPy's (``operator.index``): a 0-d integer array is an integer for nsegments,
    max_length, levels and ddof (an audit: nsegments and max_length refused it); a 0-d
    bool or float array is not."""
    v = np.arange(5.0)
    assert hr.from_segment_ids(v, [0, 0, 1, 1, 2], nsegments=np.array(4)).lengths.tolist() == [
        2, 2, 1, 0]
    x = hr.from_lengths(v, [2, 3])
    padded, _ = x.to_padded(max_length=np.array(2, np.uint8))
    assert padded.tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert hr.sum(x, levels=np.array(1)).tolist() == [1.0, 9.0]
    np.testing.assert_array_equal(hr.var(x, ddof=np.array(1)), [0.5, 1.0])
    for bad in (np.array(True), np.array(2.0), np.array([2])):
        with raises(TypeError, r"\bnsegments must be an integer"):
            hr.from_segment_ids(v, [0, 0, 1, 1, 2], nsegments=bad)
        with raises(TypeError, r"\bmax_length must be an integer"):
            x.to_padded(max_length=bad)
        with raises(TypeError, r"\blevels must be an integer"):
            hr.sum(x, levels=bad)
        with raises(TypeError, r"\bddof must be an integer"):
            hr.var(x, ddof=bad)


def test_uint64_device_offsets_checked_after_a_wrapping_conversion(monkeypatch):
    """On a GPU the uint64 -> int64 conversion wraps (the simulator's raises): the wrapped
    offsets fail validation, and only then are the given ones searched for the value past
    int64, so valid uint64 offsets cost one host synchronisation, as int64 ones do."""
    if CUDA_MODE != "sim":
        pytest.skip("simulates a GPU's wrapping conversion under the simulator")
    from numba import cuda

    import hrarray._backends.cuda as bc

    real = bc.CUDA.astype

    def wrapping(a, dtype):
        if np.dtype(dtype) == np.int64 and bc._view(a).dtype.kind == "u":
            return cuda.to_device(bc._view(a).copy_to_host().astype(np.int64))  # wraps
        return real(a, dtype)

    fetched = []
    real_fetch = bc._fetch
    monkeypatch.setattr(bc, "_fetch", lambda v, st: fetched.append(1) or real_fetch(v, st))
    monkeypatch.setattr(bc.CUDA, "astype", wrapping)
    values = cuda.to_device(np.arange(5.0))
    for offs, pattern in [([0, 1, 2**63 + 5], r"offsets\[2\]=9223372036854775813"),
                          ([2**64 - 1, 5], r"offsets\[0\]=18446744073709551615")]:
        with raises(ValueError, pattern, "does not even fit int64"):
            hr.RaggedArray(values, cuda.to_device(np.array(offs, np.uint64)))
    fetched.clear()
    x = hr.RaggedArray(values, cuda.to_device(np.array([0, 2, 5], np.uint64)))
    assert len(fetched) == 1  # the validation only
    assert hr.sum(x).copy_to_host().tolist() == [1.0, 9.0]


def test_validate_false_skips_the_check():
    x = hr.RaggedArray(np.arange(5.0), np.array([0, 3, 2, 5]), validate=False)
    assert len(x) == 3
    y = hr.RaggedArray(np.arange(5.0), np.array([0, 3, 2, 5]), validate=np.False_)
    assert len(y) == 3


@pytest.mark.parametrize("flag", [None, 0, 1, "no", "false", []])
def test_validate_takes_only_a_bool(flag):
    """validate is the memory-safety switch: a non-bool (None, 0, a string) is refused
    rather than read as truthy or falsy (None or 0 would otherwise skip the check)."""
    with raises(TypeError, r"\bvalidate\b"):
        hr.RaggedArray(np.arange(5.0), np.array([0, 3, 2, 5]), validate=flag)
    with raises(ValueError, r"\boffsets\b"):
        hr.RaggedArray(np.arange(5.0), np.array([0, 3, 2, 5]), validate=np.True_)


# --------------------------------------------------------------------------
# offsets kind and shape
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offsets",
    [
        np.array([0.0, 2.0, 5.0]),
        np.array([0.0, 2.0, 5.0], np.float32),
        np.array([False, True, True]),
        np.array([0, 2, 5], dtype=object),
        np.array([0, 2, 5], dtype=np.complex128),
    ],
    ids=["float64", "float32", "bool", "object", "complex"],
)
def test_offsets_wrong_dtype(offsets, backend):
    if backend == "cuda" and offsets.dtype == object:
        pytest.skip("object arrays cannot be moved to a device")
    with raises(TypeError, r"\boffsets\b"):
        hr.RaggedArray(to_backend(np.arange(5.0), backend), to_backend(offsets, backend))


def test_a_bool_in_a_list_of_integers_is_refused():
    """A bool among the integers of a list is a TypeError naming it, as a bool array is
    (an audit: NumPy reads [0, True, 5] as int64, and the bool became 1). An index list
    keeps NumPy's reading (x[[0, True]] gathers segments 0 and 1)."""
    v = np.arange(5.0)
    with raises(TypeError, r"^offsets must be integers, not bool: offsets\[1\]=True$"):
        hr.RaggedArray(v, [0, True, 5])
    with raises(TypeError, r"offsets\[1\]=np.True_"):
        hr.RaggedArray(v, (0, np.True_, 5))
    with raises(TypeError, r"^lengths must be integers, not bool: lengths\[1\]=True$"):
        hr.from_lengths(v, [2, True, 2])
    with raises(TypeError, r"^ids must be integers, not bool: ids\[1\]=True$"):
        hr.from_segment_ids(np.arange(3.0), [0, True, 1])
    with raises(TypeError, r"^level 2: offsets must be integers, not bool"):
        hr.nest(v, [0, 2, 5], [0, True, 2])
    with raises(TypeError, r"^lengths must be integers, not bool: lengths\[0\]=True$"):
        hr.from_padded(np.zeros((2, 3)), [True, 2])
    x = hr.RaggedArray(v, [0, 2, 5])
    np.testing.assert_array_equal(x[[0, True]].lengths, [2, 3])


@pytest.mark.parametrize(
    "offsets",
    [np.array([], np.int64), np.array([[0, 2], [2, 5]]), np.array(3)],
    ids=["empty", "2-D", "0-d"],
)
def test_offsets_wrong_shape(offsets):
    with raises(ValueError, r"\boffsets\b"):
        hr.RaggedArray(np.arange(5.0), offsets)


# --------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------


def test_values_0d():
    with raises(ValueError, r"\bvalues\b"):
        hr.RaggedArray(np.array(1.0), np.array([0, 1]))


def test_values_object_dtype():
    values = np.array([1, "a", None], dtype=object)
    with raises(TypeError, r"\bvalues\b", "object"):
        hr.sum(hr.RaggedArray(values, np.array([0, 3])))


@pytest.mark.parametrize("op", ["max", "min", "argmax", "argmin", "nanmax", "nanargmin"])
def test_complex_ordering_ops(op, backend):
    x = make_ragged(np.array([1 + 2j, 3 - 1j, 0j]), [np.array([0, 2, 3])], backend)
    with raises(TypeError, "complex", op.removeprefix("nan")):
        getattr(hr, op)(x)


# --------------------------------------------------------------------------
# nested levels
# --------------------------------------------------------------------------


def test_mismatched_nested_levels(backend):
    """Level-2 offsets past the level-1 segment count."""
    inner = make_ragged(np.arange(5.0), [np.array([0, 2, 5])], backend)  # 2 segments
    with raises(ValueError, r"\boffsets\b", r"offsets\[(2|-1)\]"):
        hr.RaggedArray(inner, to_backend(np.array([0, 1, 3]), backend))


def test_mismatched_nested_levels_nest():
    with raises(ValueError, r"\[2\]"):
        hr.nest(np.arange(5.0), np.array([0, 2, 5]), np.array([0, 1, 3]))
    with raises(ValueError, r"offsets\[1\]"):
        hr.nest(np.arange(5.0), np.array([0, 3, 2]))


# --------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------


@needs_cuda
def test_mixed_host_and_device_arrays():
    host_values, host_offsets = np.arange(5.0), np.array([0, 2, 5])
    dev_values, dev_offsets = to_backend(host_values, "cuda"), to_backend(host_offsets, "cuda")
    with raises(TypeError, r"\bvalues\b", r"\boffsets\b"):
        hr.RaggedArray(host_values, dev_offsets)
    with raises(TypeError, r"\bvalues\b", r"\boffsets\b"):
        hr.RaggedArray(dev_values, host_offsets)
    inner = hr.RaggedArray(dev_values, dev_offsets)
    with raises(TypeError, r"\boffsets\b"):
        hr.RaggedArray(inner, np.array([0, 2]))
    # nothing was copied implicitly: the inputs are unchanged
    np.testing.assert_array_equal(to_host(dev_values), host_values)


@needs_cuda
def test_operation_arrays_on_another_device():
    x = make_ragged(np.arange(5.0), [np.array([0, 2, 5])], "cuda")
    y = hr.from_lengths(np.arange(3.0), [3])
    with pytest.raises(TypeError):
        x[np.array([0, 1])]
    with pytest.raises(TypeError):
        x.with_values(np.arange(5.0))
    with pytest.raises(TypeError):
        hr.concatenate([x, y])


# --------------------------------------------------------------------------
# constructors
# --------------------------------------------------------------------------


def test_from_segment_ids_unsorted():
    with raises(ValueError, r"\bids\b", r"ids\[2\]"):
        hr.from_segment_ids(np.arange(4.0), np.array([0, 1, 0, 2]))


def test_from_segment_ids_bad_content():
    with raises(ValueError, r"\bids\b"):
        hr.from_segment_ids(np.arange(3.0), np.array([-1, 0, 0]))
    with raises(ValueError, r"\bnsegments\b"):
        hr.from_segment_ids(np.arange(3.0), np.array([0, 1, 4]), nsegments=3)
    with raises(ValueError, r"\bids\b"):
        hr.from_segment_ids(np.arange(3.0), np.array([0, 1]))
    with raises(TypeError, r"\bids\b"):
        hr.from_segment_ids(np.arange(3.0), np.array([0.0, 1.0, 1.0]))


def test_from_lengths_bad():
    with raises(ValueError, r"lengths\[1\]"):
        hr.from_lengths(np.arange(5.0), np.array([2, -1, 4]))
    with raises(ValueError, r"lengths\[1\]"):  # sums past len(values): names lengths
        hr.from_lengths(np.arange(5.0), np.array([2, 4]))
    with raises(TypeError, r"\blengths\b"):
        hr.from_lengths(np.arange(5.0), np.array([2.0, 3.0]))


def test_from_list_unequal_inner_shapes():
    """The first item whose shape differs is named (NumPy's own message names none)."""
    with raises(ValueError, r"nested_lists\[0\]\[1\]", r"\(2,\)"):
        hr.from_list([[np.ones(3), np.ones(2)]])
    with raises(ValueError, r"nested_lists\[1\]\[0\]\[0\]", r"\(3, 1\)"):
        hr.from_list([[[np.ones(3)], [np.ones(3)]], [[np.ones((3, 1))]]])
    with raises(TypeError, r"\bnested_lists\b"):
        hr.from_list(np.ones(3))


def test_from_list_names_the_item_it_cannot_use():
    """Mixed nesting depth, a number no dtype holds, a number the dtype cannot take: each
    names ``nested_lists[i][j]...`` (NumPy's messages name no item)."""
    with raises(ValueError, r"nested_lists\[0\]\[0\]=1 is not a list", r"nested 3 lists"):
        hr.from_list([[1, 2], [[3]]])
    with raises(ValueError, r"nested_lists\[1\]\[0\]=3 is not a list"):
        hr.from_list([[[1], [2]], [3]])
    with raises(ValueError, r"nested_lists\[0\]\[1\]=1180591620717411303424", r"float64"):
        hr.from_list([[1, 2**70]])
    with raises(TypeError, r"nested_lists\[1\]\[0\]=1j", r"float64"):
        hr.from_list([[1.0], [1j]], dtype=float)


def test_masked_arrays_are_refused():
    """A numpy.ma array's mask would be ignored (the kernels read its data): TypeError
    naming the argument, wherever an array comes in."""
    v = np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0])
    with raises(TypeError, r"\bvalues\b", r"masked"):
        hr.RaggedArray(v, np.array([0, 3]))
    with raises(TypeError, r"\boffsets\b", r"masked"):
        hr.RaggedArray(np.arange(3.0), np.ma.array([0, 1, 3]))
    x = hr.from_lengths(np.arange(3.0), [1, 2])
    with raises(TypeError, r"\bper_segment\b", r"masked"):
        hr.broadcast(np.ma.array([1.0, 2.0], mask=[1, 0]), x)
    with raises(TypeError, r"\bnew_values\b", r"masked"):
        x.with_values(v)
    with raises(TypeError, r"\blengths\b", r"masked"):
        hr.from_lengths(np.arange(3.0), np.ma.array([1, 2], mask=[0, 1]))
    with raises(TypeError, r"masked"):
        x[np.ma.array([1, 0], mask=[1, 0])]
    # other ndarray subclasses are arrays as they are
    mm = np.arange(3.0).view(np.recarray)
    np.testing.assert_array_equal(hr.sum(hr.RaggedArray(mm, np.array([0, 1, 3]))), [0.0, 3.0])


def test_failed_dlpack_export_is_named():
    """A producer whose ``__dlpack__`` export fails: the error says so (NumPy's fallback
    read it as an object array)."""

    class Refusing:
        def __dlpack__(self, stream=None, **kw):
            raise BufferError("cannot export")

        def __dlpack_device__(self):
            return (1, 0)

    with raises(TypeError, r"\bvalues\b", r"DLPack export failed", r"cannot export"):
        hr.RaggedArray(Refusing(), np.array([0, 1]))


def test_oversized_requests_name_the_argument():
    with raises(ValueError, r"\bnsegments=1180591620717411303424\b"):
        hr.from_segment_ids(np.arange(3.0), np.array([0, 0, 0]), nsegments=2**70)
    with raises(ValueError, r"to_padded", r"max_length=4611686018427387904"):
        hr.from_list([[1.0]]).to_padded(max_length=2**62)
    with raises(ValueError, r"ids\[2\]=5 >= nsegments=5"):
        hr.from_segment_ids(np.arange(6.0), np.array([0, 0, 5, 5, 6, 7]), nsegments=5)


def test_with_values_wrong_length():
    x = hr.from_lengths(np.arange(5.0), [2, 3])
    with raises(ValueError, r"new_values|values"):
        x.with_values(np.arange(4.0))


def test_from_list_of_a_list_that_holds_itself():
    """A list that holds itself: a ValueError naming where (was an endless loop)."""
    a = []
    a.append(a)
    with raises(ValueError, r"nested_lists\[0\] is one of the lists that hold it"):
        hr.from_list(a)
    b = [1.0]
    b.append(b)
    with raises(ValueError, r"nested_lists\[1\]\[0\]\[1\] is one"):
        hr.from_list([[[2.0]], [b]])
    c = [1.0]  # the same list twice, side by side, is no cycle
    assert hr.from_list([[c, c], [c]]).to_list() == [[[1.0], [1.0]], [[1.0]]]


def test_from_segment_ids_too_many_segments_from_the_ids():
    """Without nsegments, the count comes from the last id: one too large for the
    offsets names that id (the message named nsegments, which the caller never gave)."""
    with raises(ValueError, r"ids\[4\]=9223372036854775806 is too large"):
        hr.from_segment_ids(np.arange(5.0), np.array([0, 0, 1, 1, 2**63 - 2]))


def test_from_segment_ids_nsegments_near_int64_max():
    """nsegments whose arange NumPy computes as empty (its length wraps) names nsegments
    (it blamed the offsets, which are no argument of from_segment_ids)."""
    for ns in (2**63 - 100, 2**63 - 1, 2**64 - 1):
        with raises(ValueError, rf"nsegments={ns} is too large"):
            hr.from_segment_ids(np.arange(3.0), np.array([0, 0, 2]), nsegments=ns)


def test_concatenate_mismatch():
    a = hr.from_lengths(np.arange(3.0), [1, 2])
    with pytest.raises((TypeError, ValueError)):
        hr.concatenate([a, hr.from_lengths(np.arange(3, dtype=np.int32), [3])])
    with pytest.raises((TypeError, ValueError)):
        hr.concatenate([a, hr.from_lengths(np.ones((3, 2)), [3])])
    with pytest.raises((TypeError, ValueError)):
        hr.concatenate([a, hr.RaggedArray(a, np.array([0, 2]))])
    with pytest.raises((TypeError, ValueError)):
        hr.concatenate([])
    with raises(TypeError, r"arrays must be a sequence of RaggedArrays, got ndarray"):
        hr.concatenate(np.array(1.5))  # a 0-d array has __iter__ ("iteration over a 0-d array")


# --------------------------------------------------------------------------
# operation arguments
# --------------------------------------------------------------------------


def test_bad_levels():
    x = hr.nest(np.arange(5.0), np.array([0, 2, 5]), np.array([0, 2]))
    with raises(ValueError, r"\blevels\b"):
        hr.sum(x, levels=0)
    with raises(ValueError, r"\blevels\b"):
        hr.sum(x, levels=3)
    with raises(TypeError, r"\blevels\b"):
        hr.sum(x, levels=1.5)


def test_unknown_op_name():
    x = hr.from_lengths(np.arange(5.0), [2, 3])
    with raises(ValueError, "median"):
        hr.reduce(x, "median")


def test_reduction_of_a_plain_array():
    with raises(TypeError, r"RaggedArray"):
        hr.sum(np.arange(5.0))


def test_tuple_index_is_not_a_gather():
    """NumPy reads x[0, 1] as two dimensions: not the gather x[[0, 1]]."""
    x = hr.from_list([[1.0, 2.0], [3.0]])
    with pytest.raises(IndexError, match=r"x\[i\]\[j\]"):
        x[0, 1]
    assert x[[0, 1]].to_list() == [[1.0, 2.0], [3.0]]


def test_ellipsis_is_a_view_and_a_new_axis_is_refused():
    """x[...] is the whole array, as in NumPy; x[None] is named (it had read as an
    index of dtype object)."""
    x = hr.from_list([[1.0, 2.0], [], [3.0]])
    y = x[...]
    assert y.values is x.values
    assert y.offsets is x.offsets
    assert y.to_list() == [[1.0, 2.0], [], [3.0]]
    with pytest.raises(TypeError, match=r"new axis \(x\[None\]\)"):
        x[None]


def test_arguments_of_the_wrong_kind_are_named():
    """A string where an array goes, a non-sequence or empty list for concatenate, an
    unknown dtype, an empty tuple identity: TypeError/ValueError naming the argument."""
    x = hr.from_list([[1.0, 2.0], [3.0]])
    with raises(TypeError, r"new_values must be an array, got str"):
        x.with_values("aaa")
    with raises(TypeError, r"per_segment must be an array, got str"):
        hr.broadcast("ab", x)
    with raises(TypeError, r"arrays must be a sequence of RaggedArrays, got NoneType"):
        hr.concatenate(None)
    with raises(TypeError, r"arrays must be a sequence of RaggedArrays, got RaggedArray"):
        hr.concatenate(x)
    with raises(ValueError, r"arrays is empty"):
        hr.concatenate([])
    for f in (hr.sum, hr.cumsum, hr.mean):
        with raises(TypeError, r"dtype='foo' is not a dtype"):
            f(x, dtype="foo")
    with raises(TypeError, r"identity must be a number or a non-empty tuple"):
        hr.Reducer((), lambda a, b: a)


def test_reducer_identities_the_kernels_cannot_hold():
    """From helper R's audit: an int identity past 64 bits raised Python's OverflowError
    naming nothing; NumPy text, dates, records and longdouble identities were accepted and
    failed at reduce time (NumPy's DTypePromotionError, or Numba's 'Untyped global name
    IDENT'). Each is now refused by Reducer(), naming the identity; an int past int64 that
    fits a uint64 is a uint64, as NumPy reads it."""
    add = lambda a, b: a + b
    for ident in (2**70, (2**70, 0.0), -(2**63) - 1):
        with raises(ValueError, r"identity .* does not fit a 64-bit integer"):
            hr.Reducer(ident, add)
    wide = [np.longdouble(1), np.clongdouble(1)] if np.dtype(np.longdouble).itemsize > 8 else []
    for ident in (np.str_("a"), np.datetime64(1, "D"), np.timedelta64(1), np.void(b"x"), *wide):
        with raises(TypeError, r"identity must be a number the kernels take"):
            hr.Reducer(ident, add)
    top = hr.Reducer(2**64 - 1, lambda a, b: min(a, b))
    assert top.identity.dtype == np.uint64
    x = hr.from_lengths(np.array([5, 2, 3], np.uint64), [3, 0])
    assert hr.reduce(x, top).tolist() == [2, 2**64 - 1]


def test_from_list_checks_array_items_and_text():
    """From an audit: an integer dtype was checked on Python ints only; array items, NumPy
    scalars and NaN were cast (300 -> 44 in int8, NaN -> int64's min), and text became a
    string array. Each is now an error naming the item; exact values stay accepted."""
    bad = [
        (lambda: hr.from_list([np.array([300, 1])], dtype=np.int8), r"nested_lists\[0\]\[0\]=300"),
        (lambda: hr.from_list([[np.array([300, 1])]], dtype=np.int8), r"\[0\]\[0\] holds 300"),
        (lambda: hr.from_list([np.array([-1, 5])], dtype=np.uint8), r"=-1 does not fit .*uint8"),
        (lambda: hr.from_list([np.array([np.nan])], dtype=np.int64), r"=nan does not fit"),
        (lambda: hr.from_list([[1.0], [float("nan")]], dtype=np.int64), r"\[1\]\[0\]=nan"),
        (lambda: hr.from_list([[1], [np.int64(300)]], dtype=np.int8), r"\[1\]\[0\]=300"),
        (lambda: hr.from_list([[2**63 - 1, 1.5]], dtype=np.int64), r"\[0\]\[1\]=1.5"),
    ]
    for call, msg in bad:
        with raises(ValueError, msg):
            call()
    for call in (lambda: hr.from_list([[1, "a"]]), lambda: hr.from_list([["a"]]),
                 lambda: hr.from_list([[1]], dtype=str)):
        with pytest.raises(TypeError, match=r"from_list: .*(not a number|not supported)"):
            call()
    # exact as given: accepted (NumPy reads [2**63 - 1, 1.0] as float64, which rounds)
    assert hr.from_list([[2**63 - 1, 1.0]], dtype=np.int64).to_list() == [[2**63 - 1, 1]]
    assert hr.from_list([[2**64 - 1]], dtype=np.uint64).to_list() == [[2**64 - 1]]
    assert hr.from_list([np.array([1, 2], np.uint64), np.array([3])], dtype=np.int8).to_list() \
        == [[1, 2], [3]]


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="longdouble is float64 here")
def test_longdouble_is_a_type_error_not_numbas():
    """From an audit: longdouble / clongdouble values (or dtype=) reached Numba, whose
    TypingError (no TypeError, naming a generated file) surfaced; max/argmax said "data type
    'i16' not understood". Each op now refuses them by name, as text or dates."""
    x = hr.RaggedArray(np.ones(3, np.longdouble), [0, 3])
    xc = hr.RaggedArray(np.ones(3, np.clongdouble), [0, 3])
    xf = hr.RaggedArray(np.arange(3.0), [0, 3])
    calls = [
        (lambda: hr.sum(x), r"unsupported dtype float\d+ for sum\(\)"),
        (lambda: hr.argmax(x), r"for argmax\(\)"),
        (lambda: hr.var(x), r"for var\(\)"),
        (lambda: hr.sum(xc), r"unsupported dtype complex\d+ for sum"),
        (lambda: hr.sum(xf, dtype=np.longdouble), r"sum\(\): dtype=.* is not a numeric dtype"),
        (lambda: hr.sum(xf, dtype=str), r"sum\(\): dtype=<U0 is not a numeric dtype"),
        (lambda: hr.cumsum(xf, dtype=str), r"cumsum\(\): dtype=<U0 is not a numeric"),
        (lambda: hr.cumsum(x), r"for cumsum\(\)"),
        (lambda: hr.softmax(x), r"softmax\(\) needs"),
        (lambda: hr.attention_pool(x, xf), r"attention_pool\(\) needs"),
        (lambda: hr.attention_pool(xf, x), r"attention_pool\(\) needs .* scores"),
        (lambda: hr.broadcast(np.ones(1, np.longdouble), xf), r"per_segment has unsupported"),
        (lambda: hr.reduce(x, hr.Reducer(identity=0.0, combine=lambda a, b: a + b)),
         r"for a Reducer"),
    ]
    for call, msg in calls:
        with pytest.raises(TypeError, match=msg) as info:
            call()
        assert type(info.value).__module__ == "builtins"  # not numba's TypingError


def test_complex_without_imaginary_part_and_text_items():
    """From an audit: a complex fill_value with no imaginary part passed the check and then
    crashed the kernels' float()/int() (TypeError) for real results; from_list took an exact
    complex item into an integer dtype as NumPy's TypeError, and text there as a ValueError
    naming nothing."""
    x = hr.from_list([[1.5, 2.0], []])
    np.testing.assert_array_equal(hr.sum(x, fill_value=1 + 0j), [3.5, 1.0])
    np.testing.assert_array_equal(hr.max(hr.from_list([[1, 2], []]), fill_value=7 + 0j), [2, 7])
    assert hr.argmax(x, fill_value=-1 + 0j)[1] == -1
    assert x.to_padded(fill_value=4 + 0j)[0][1, 0] == 4.0
    with raises(ValueError, r"fill_value=\(1\+1j\)"):
        hr.sum(x, fill_value=1 + 1j)
    assert hr.from_list([[1 + 0j, 2]], dtype=np.int32).to_list() == [[1, 2]]
    with raises(ValueError, r"nested_lists\[0\]\[0\]=\(1\+2j\) does not fit"):
        hr.from_list([[1 + 2j]], dtype=np.uint32)
    with pytest.raises(TypeError, match=r"nested_lists\[0\]\[1\]='a' is not a number"):
        hr.from_list([[1, "a"]], dtype=np.int8)


def test_offsets_mistakes_name_the_level():
    """An empty offsets list is a length error (NumPy would make it float64, a dtype
    error); nest() prefixes the level to TypeErrors too, and a nested level's huge offset
    is past the end of the inner level, not of values."""
    with raises(ValueError, r"offsets must have at least one element"):
        hr.RaggedArray(np.arange(3.0), [])
    with pytest.raises(TypeError, match=r"^level 2: offsets must have an integer dtype"):
        hr.nest(np.arange(10.0), [0, 3, 10], np.array([0.0, 1.0]))
    with raises(ValueError, r"level 2: offsets\[1\]=9223372036854775808 is past the end of the "
                r"inner level"):
        hr.nest(np.arange(10.0), [0, 3, 10], np.array([0, 2**63], np.uint64))


def test_constructor_and_index_mistakes_are_named():
    """From an audit: a 0-d values, lengths or ids past int64's range (which had wrapped
    into a message about offsets), a from_list item its dtype cannot hold or an object
    dtype, an object with_values, a cumsum dtype error (it said sum()), a bool index
    (it was x[1]): each an error naming the argument and position."""
    with raises(ValueError, r"values must be at least 1-D"):
        hr.from_lengths(np.array(1.0), np.array([0]))
    with raises(ValueError, r"lengths\[0\]=18446744073709551615 exceeds the 3 rows"):
        hr.from_lengths(np.zeros(3), np.array([2**64 - 1], np.uint64))
    with raises(ValueError, r"lengths\[2\]=4611686018427387904 exceeds the 3 rows"):
        hr.from_lengths(np.zeros(3), np.array([1, 0, 2**62, 2**62, 2**62, 2**62]))
    for ns in (None, 3):
        with raises(ValueError, r"ids\[1\]=9223372036854775808 is too large"):
            hr.from_segment_ids(np.zeros(2), np.array([0, 2**63], np.uint64), nsegments=ns)
    with raises(ValueError, r"nested_lists\[1\]\[1\]=1000 does not fit dtype uint8"):
        hr.from_list([[1], [2, 1000]], dtype="uint8")
    with raises(TypeError, r"dtype=object is not supported"):
        hr.from_list([[1]], dtype=object)
    with raises(TypeError, r"dtype='nope' is not a dtype"):
        hr.from_list([[1]], dtype="nope")
    x = hr.from_list([[1.0, 2.0], [], [3.0]])
    with raises(TypeError, r"new_values has unsupported dtype object"):
        x.with_values(np.array([None, 1, 2], object))
    # records that hold Python objects too (an audit: they were taken)
    rec = np.zeros(3, dtype=[("a", "f8"), ("b", "O")])
    with raises(TypeError, r"new_values has unsupported dtype .*holds Python objects"):
        x.with_values(rec)
    with raises(TypeError, r"^values has unsupported dtype .*holds Python objects"):
        hr.RaggedArray(rec, [0, 3])
    with raises(TypeError, r"^padded has unsupported dtype .*holds Python objects"):
        hr.from_padded(rec.reshape(1, 3))
    with raises(TypeError, r"^cumsum\(\): dtype='nope'"):
        hr.cumsum(x, dtype="nope")
    with raises(TypeError, r"for cumsum\(\)"):
        hr.cumsum(hr.RaggedArray(np.array(["a", "b"]), np.array([0, 2])))
    for key in (True, False, np.True_):
        with raises(IndexError, r"boolean index has shape \(\)"):
            x[key]


def test_reducer_mistakes_name_the_function():
    """A user function with the wrong arity, or a map that does not return the identity's
    tuple shape: TypeError naming the Reducer and which call failed."""
    x = hr.from_lengths(np.array([0.5, 2.0, 3.0]), [2, 1])
    cases = [
        (hr.Reducer(0.0, lambda a: a, name="r"), r"'r': combine\(identity, state\) fails"),
        (hr.Reducer(0.0, lambda a, b: a + b, finalize=lambda a: a, name="r"),
         r"'r': finalize\(state, n\) fails"),
        (hr.Reducer(0.0, lambda a, b: a + b, map=lambda v, w: v, name="r"),
         r"'r': map\(element\) fails"),
        (hr.Reducer((0.0, 0), lambda a, b: a, map=lambda v: v, finalize=lambda a, n: a[0],
                    name="r"), r"'r': identity is a tuple of 2, so map must return one"),
    ]
    for reducer, msg in cases:
        with raises(TypeError, msg):
            hr.reduce(x, reducer)


def test_bad_indices_are_index_and_value_errors():
    """Out-of-range or ill-shaped indices: IndexError (as NumPy) that is also a ValueError
    (API.md section 6: right kind, wrong content), naming the bad position."""
    x = hr.from_list([[1.0, 2.0], [3.0], []])
    cases = [
        (10, "segment index 10 is out of range for 3 segments"),
        (-4, "segment index -4"),
        (np.array([0, 7]), r"index\[1\]=7 is out of range for 3 segments"),
        # uint64 past int64: named as given, not wrapped to a negative index (which would
        # pick the last segment)
        (np.array([1, 2**64 - 1], np.uint64), r"index\[1\]=18446744073709551615 is out of"),
        ([2**63], r"index\[0\]=9223372036854775808 is out of range"),
        (np.array([True, False]), r"boolean index has shape \(2,\), expected \(3,\)"),
        (np.array([[0, 1]]), r"must be 1-D, got shape \(1, 2\)"),
        ((0, 1), r"x\[i\]\[j\]"),
    ]
    for key, msg in cases:
        for kind in (IndexError, ValueError):
            with pytest.raises(kind, match=msg):
                x[key]
    np.testing.assert_array_equal(x[np.array(1)], [3.0])  # 0-d: an integer, as NumPy


@pytest.mark.parametrize("fill", ["a", np.zeros(2), object(), [1.0, 2.0]])
def test_fill_value_of_the_wrong_kind(fill):
    """Not a numeric scalar: the wrong kind of thing, a TypeError (API.md section 6), which
    is also a ValueError (what NumPy raises for ``np.full(3, "a", dtype=float)``)."""
    x = hr.from_lengths(np.arange(5.0), [2, 0, 3])
    for call in (lambda: hr.sum(x, fill_value=fill), lambda: hr.argmax(x, fill_value=fill),
                 lambda: x.to_padded(fill_value=fill)):
        with raises(TypeError, r"\bfill_value\b"):
            call()
        with raises(ValueError, r"\bfill_value\b"):
            call()


def test_fill_value_the_result_dtype_cannot_hold():
    x = hr.from_lengths(np.arange(5.0), [2, 0, 3])
    with raises(ValueError, r"fill_value=1\.5", "int64"):
        hr.argmax(x, fill_value=1.5)
    with pytest.raises(ValueError) as info:
        hr.argmax(x, fill_value=1.5)
    assert not isinstance(info.value, TypeError)  # a number: the right kind, wrong content
    # past the range of a bool, or a float dtype's finite range (it would become inf)
    cases = [(np.array([True, False]), 2), (np.array([True, False]), -1),
             (np.ones(2, np.float32), 1e300), (np.ones(2, np.float16), 1e5),
             (np.ones(2, np.complex64), 1e300j), (np.ones(2, np.int64), 2.0**63)]
    for values, fill in cases:
        y = hr.from_lengths(values, [1, 0])
        with raises(ValueError, r"\bfill_value\b", str(values.dtype)):
            y.to_padded(fill_value=fill)


def test_fill_value_at_the_ends_of_integer_ranges():
    """int64's and uint64's extremes are representable: checked exactly, not through a
    float64 (where 2**63 - 1 rounds to 2**63 and failed the range check)."""
    for dt in (np.int64, np.uint64, np.int32):
        info = np.iinfo(dt)
        y = hr.from_lengths(np.array([1, 2, 3], dt), [2, 0, 1])
        for fill in (info.max, info.min, dt(info.max)):
            padded, _ = y.to_padded(fill_value=fill)
            assert padded.dtype == dt
            assert padded[1, 0] == fill
            assert hr.max(y, fill_value=fill)[1] == fill
    b = hr.from_lengths(np.array([True, False]), [1, 0])
    assert b.to_padded(fill_value=True)[0].tolist() == [[True], [True]]
    assert hr.from_lengths(np.ones(2, np.float32), [1, 0]).to_padded(np.inf)[0][1, 0] == np.inf


def test_to_padded_max_length():
    x = hr.from_lengths(np.arange(5.0), [2, 0, 3])
    for bad in ("3", 2.0, True):
        with raises(TypeError, r"\bmax_length\b"):
            x.to_padded(max_length=bad)
    with raises(ValueError, r"\bmax_length\b"):
        x.to_padded(max_length=-1)
    assert x.to_padded(max_length=np.int32(1))[0].shape == (3, 1)


def test_constructed_offsets_are_read_only():
    """Offsets the constructors build are hrarray's own, validated once: read-only, so that
    no write can send a kernel past the values (a write then hr.sum segfaulted)."""
    built = [
        hr.from_lengths(np.arange(5.0), np.array([2, 3])),
        hr.from_segment_ids(np.arange(3.0), np.array([0, 0, 1])),
        hr.from_padded(np.ones((2, 3))),
        hr.from_list([[1.0, 2.0], [3.0]]),
        hr.from_list([[[1.0]], [[2.0], [3.0]]]),
        hr.from_list([]),
    ]
    for x in built:
        levels = [x, x.values] if x.depth > 1 else [x]
        for lvl in levels:
            with pytest.raises(ValueError, match="read-only"):
                lvl.offsets[-1] = 10**12


def test_reducer_functions_must_be_python_functions():
    """A builtin, a ufunc or a callable object has no Python code for the kernels to
    compile: TypeError naming the argument when the Reducer is built (it was an
    AttributeError at the first reduction)."""

    class Add:
        def __call__(self, a, b):
            return a + b

    for bad in (max, np.add, Add()):
        with raises(TypeError, r"Reducer combine must be a Python function"):
            hr.Reducer(0.0, bad)
    with raises(TypeError, r"Reducer map must be a Python function"):
        hr.Reducer(0.0, lambda a, b: a + b, map=abs)
    with raises(TypeError, r"Reducer finalize must be a Python function"):
        hr.Reducer(0.0, lambda a, b: a + b, finalize=divmod)


def test_reducer_result_dtype_and_finalize_checked():
    x = hr.from_lengths(np.arange(5.0), [2, 3])
    add = hr.Reducer(0.0, lambda a, b: a + b)
    with raises(TypeError, r"dtype='foo' is not a dtype"):
        hr.reduce(x, add, dtype="foo")
    for dt in ("M8[s]", object, "U3"):
        with raises(TypeError, r"reduce\(\): dtype=.* is not supported for a Reducer"):
            hr.reduce(x, add, dtype=dt)
    # a string result would come back cut to one character ('<U1')
    text = hr.Reducer(0.0, lambda a, b: a + b, finalize=lambda s, n: "hello")
    with raises(TypeError, r"finalize must return a number", r"'hello'"):
        hr.reduce(x, text)


def test_huge_ddof_gives_nan():
    """Any ddof at or past a segment's length gives NaN (a ddof beyond int64 raised
    OverflowError)."""
    x = hr.from_lengths(np.arange(5.0), [2, 3])
    for ddof in (10, 2**63, 10**30):
        np.testing.assert_array_equal(hr.var(x, ddof=ddof), [np.nan, np.nan])
        np.testing.assert_array_equal(hr.std(x, ddof=ddof, fill_value=-1.0), [-1.0, -1.0])


# "T": NumPy 2's variable-width StringDType (a str fill was refused: an audit)
_STRING_DTYPE = ["T"] if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else []


@pytest.mark.parametrize("dt", ["U2", "S2", "M8[s]", "m8[ms]", [("a", "f4"), ("b", "i2")],
                                *_STRING_DTYPE])
def test_non_numeric_values_move_but_do_not_reduce(dt):
    """docs/semantics.md: values of a dtype the kernels do not take build a RaggedArray whose
    structural operations (they only move rows) work, while every reduction and transform
    is a TypeError naming the dtype."""
    v = np.zeros(5, dtype=dt)
    if v.dtype.fields is None:
        v[:] = np.arange(1, 6).astype(v.dtype)
    x = hr.RaggedArray(v, [0, 2, 2, 5])
    assert x[2].tolist() == v[2:5].tolist()
    assert x[np.array([2, 0])].to_list() == [v[2:5].tolist(), v[0:2].tolist()]
    assert hr.concatenate([x[:1], x[1:]]).to_list() == x.to_list()
    assert x.with_values(v[::-1].copy()).to_list() == [v[::-1][0:2].tolist(), [],
                                                         v[::-1][2:5].tolist()]
    padded, mask = x.to_padded()
    assert padded[2].tolist() == v[2:5].tolist()
    assert mask.tolist() == [[True, True, False], [False] * 3, [True] * 3]
    # the default pads with the dtype's zero ('' for strings: 0 converted had made '0'); a
    # fill of the values' own kind is taken (an audit: every one was a TypeError), one of
    # another kind is a TypeError, one the dtype would cut or round a ValueError
    assert padded[1].tolist() == [np.zeros((), v.dtype).tolist()] * 3
    own, cut, other = {
        "U": ("-", "xyz", b"-"), "S": (b"-", b"xyz", "-"), "T": ("-", None, b"-"),
        "M": (np.datetime64("NaT"), np.datetime64("2020-01-01T00:00:00.5"),
              np.timedelta64(1, "s")),
        "m": (np.timedelta64("NaT"), np.timedelta64(1, "us"), np.datetime64(1, "s")),
        "V": ((1.5, 7), None, "a"),
    }[v.dtype.kind]
    padded, _ = x.to_padded(fill_value=own)
    if v.dtype.kind in "Mm":
        assert np.isnat(padded[1, 0])
    else:
        assert padded[1, 0:1].tolist() == [np.array(own, dtype=v.dtype).tolist()]
    with raises(TypeError, "fill_value must be"):
        x.to_padded(fill_value=other)
    if cut is not None:
        with raises(ValueError, "cannot be represented"):
            x.to_padded(fill_value=cut)
    for f in (hr.sum, hr.max, hr.first, hr.count, hr.argmax, hr.softmax, hr.cumsum):
        with raises(TypeError, re.escape(f"dtype {np.dtype(dt)}")):
            f(x)


def test_reducer_trial_run_accepts_functions_that_fail_at_zero():
    """From an audit: the Python trial run that infers a Reducer's types ran on a zero, so a
    geometric mean (map=math.log) or a map asserting v > 0.5 was a TypeError saying the map
    'fails on a float64 element', with no such element in the data; 1.0 / v warned
    (a RuntimeWarning, an error under this suite's filters). Trials start at 1."""
    x = hr.RaggedArray(np.array([1.0, 2.0, 4.0, 4.0, 5.0]), [0, 2, 5])
    geo = hr.Reducer(0.0, lambda a, b: a + b, map=lambda v: math.log(v),
                     finalize=lambda a, n: math.exp(a / n) if n > 0 else math.nan)
    np.testing.assert_allclose(hr.reduce(x, geo), [2.0**0.5, 80.0 ** (1 / 3)], rtol=1e-12)

    def at_least_one(v):  # (an assert here would be pytest's rewritten one: not Numba's)
        if v < 0.5:
            raise ValueError("element below 0.5")
        return v

    np.testing.assert_array_equal(
        hr.reduce(x, hr.Reducer(0.0, lambda a, b: a + b, map=at_least_one)), [3.0, 13.0])
    np.testing.assert_allclose(
        hr.reduce(x, hr.Reducer(0.0, lambda a, b: a + b, map=lambda v: 1.0 / v)), [1.5, 0.7])
    xi = hr.RaggedArray(np.array([1, 2, 4], np.uint8), [0, 1, 3])
    np.testing.assert_array_equal(
        hr.reduce(xi, hr.Reducer(0, lambda a, b: a + b, map=lambda v: 100 // v)), [100, 75])
    # a map whose type depends on the value: the trials' types are promoted together, as
    # Numba unifies its branches (from 1 alone the state was an int and 0.5 truncated)
    xs = hr.RaggedArray(np.array([3, -1, -2, 0], np.int32), [0, 4])
    half = hr.reduce(xs, hr.Reducer(0, lambda a, b: a + b, map=lambda v: v if v > 0 else 0.5))
    assert half.dtype == np.float64
    np.testing.assert_array_equal(half, [4.5])
    # a function that raises on every trial element is still a TypeError naming the Reducer
    with raises(TypeError, r"Reducer 'far'", r"map\(element\) fails in Python on every trial",
                r"math domain error"):
        hr.reduce(x, hr.Reducer(0.0, lambda a, b: a + b, map=lambda v: math.sqrt(v - 1e9),
                                name="far"))


def test_byte_ordered_dtype_argument_gives_a_native_result():
    """From a fuzz audit: dtype='>f8' (a byte order, as NumPy's reductions refuse) reached
    Numba as an untypable object (a TypingError; for a Reducer a TypeError blaming its
    lambdas). The dtype is read in native byte order."""
    x = hr.RaggedArray(np.array([1.0, 2.0, 3.0]), np.array([0, 2, 3]))
    cases = [(hr.sum, ">f8", [3.0, 3.0]), (hr.mean, ">f4", [1.5, 3.0]), (hr.prod, ">i8", [2, 3]),
             (hr.nansum, ">u8", [3, 3]), (hr.var, ">f8", [0.25, 0.0])]
    for f, dt, want in cases:
        r = f(x, dtype=dt)
        assert r.dtype == np.dtype(dt).newbyteorder("=")
        assert r.tolist() == want
    assert hr.cumsum(x, dtype=">i8").values.dtype == np.int64
    assert hr.reduce(x, hr.Reducer(0.0, lambda a, b: a + b), dtype=">f8").dtype == np.float64


def test_python_ints_past_64_bits_as_fill_value():
    """From a fuzz audit: fill_value=2**64 for a float result was 'not a numeric scalar'
    (NumPy holds such an int as an object); np.full(2, 2**64, dtype=float) works."""
    x = hr.RaggedArray(np.array([1.0, 2.0, 3.0]), np.array([0, 2, 2, 3]))
    np.testing.assert_array_equal(hr.mean(x, fill_value=2**64), [1.5, 2.0**64, 3.0])
    np.testing.assert_array_equal(hr.sum(x, fill_value=-(2**64)), [3.0, -(2.0**64), 3.0])
    assert x.to_padded(fill_value=2**64)[0][1, 0] == 2.0**64
    with raises(ValueError, r"fill_value=10{400} cannot be represented as float64"):
        hr.mean(x, fill_value=10**400)
    with raises(ValueError, rf"fill_value={2**200} cannot be represented as float32"):
        hr.max(x.with_values(np.array([1.0, 2.0, 3.0], np.float32)), fill_value=2**200)
    with raises(ValueError, r"fill_value=18446744073709551616 cannot be represented as int64"):
        hr.count(x, fill_value=2**64)


def test_bare_cuda_array_interface_producer_is_read_or_a_type_error():
    """From a fuzz audit: an object with only ``__cuda_array_interface__`` (no shape, ndim
    or dtype attributes) raised AttributeError ('no attribute ndim'). It is viewed through
    numba-cuda (zero-copy); where that fails (no driver, the simulator) a TypeError names
    the argument."""

    class Bare:
        def __init__(self, n, typestr):
            self.__cuda_array_interface__ = {"shape": (n,), "typestr": typestr,
                                             "data": (0, False), "version": 3, "strides": None}

    with raises(TypeError, r"^values: cannot view Bare as a CUDA array"):
        hr.RaggedArray(Bare(10, "<f8"), Bare(2, "<i8"))
    with raises(TypeError, r"^lengths: cannot view Bare as a CUDA array"):
        hr.from_lengths(Bare(10, "<f8"), Bare(2, "<i8"))


def test_masked_array_inside_from_list_is_refused():
    """From a fuzz audit: a masked array as an item of from_list was read with the data
    under its mask (docs: masked arrays are a TypeError wherever an array comes in)."""
    m = np.ma.masked_array([1.0, 999.0], mask=[0, 1])
    with raises(TypeError, r"from_list: nested_lists\[0\]\[0\] is a masked array"):
        hr.from_list([[m]])
    with raises(TypeError, r"nested_lists\[0\]\[1\]\[0\] is a masked array"):
        hr.from_list([[[1.0], [m]]])
    # a list of arrays (each a segment): named as an item too (was "values")
    with raises(TypeError, r"from_list: nested_lists\[1\] is a masked array"):
        hr.from_list([np.arange(2.0), m])
    assert hr.from_list([[np.array([1.0, 2.0])]]).to_list() == [[[1.0, 2.0]]]


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_ndarray_subclass_values_give_plain_results():
    """From a fuzz audit: first/last of np.matrix values returned np.matrix (indexing keeps
    the subclass) where every other reduction returns an ndarray."""
    xm = hr.RaggedArray(np.matrix([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), np.array([0, 2, 3, 3]))
    for f in (hr.first, hr.last, hr.sum, hr.max, hr.count):
        assert type(f(xm)) is np.ndarray
    np.testing.assert_array_equal(hr.last(xm), [[3.0, 4.0], [5.0, 6.0], [np.nan, np.nan]])


def test_slice_with_a_step_past_the_length():
    """From a fuzz audit: x[::2**63] was 'TypeError: index must be an integer or boolean
    array, got dtype float64' (np.arange made float indices); a list gives its first item."""
    x = hr.RaggedArray(np.arange(10.0), np.array([0, 3, 3, 7, 10]))
    segs = x.to_list()
    for step in (2**63, -(2**63), 2**70, 5, 4, -4, -5, 3, -1):
        for start in (None, 0, 1, -1, 3, -5):
            for stop in (None, 0, 2, -1, -10):
                assert x[start:stop:step].to_list() == segs[start:stop:step]
    assert hr.RaggedArray(np.zeros(0), np.array([0]))[:: 2**63].to_list() == []


def test_ragged_lists_and_segment_counts_are_named():
    """From an audit: a ragged Python list as an index gave NumPy's bare "inhomogeneous
    shape" ValueError, and as an array argument "must be an array, got list"; scores or
    per_segment with another number of segments than x named an offsets position x does
    not have. Each now says what differs."""
    x = hr.from_lengths(np.arange(6.0), [2, 0, 3, 1])
    with raises(TypeError, r"^index must be an integer or boolean array, got a ragged list"):
        x[[[1], [2, 3]]]
    with raises(TypeError, r"^per_segment must be an array, got a ragged list"):
        hr.broadcast([[1.0, 2.0], [3.0], [5.0, 6.0], [7.0, 8.0]], x)
    with raises(TypeError, r"^values must be an array, got a ragged tuple"):
        hr.RaggedArray(([1.0, 2.0], [3.0]), [0, 1, 2])
    for lengths, n in (([2, 0, 3, 1, 0], 5), ([2, 0, 4], 3)):
        with raises(ValueError, rf"level 1 \(outermost first\) has {n} segments in scores, 4 in x"):
            hr.attention_pool(x, hr.from_lengths(np.zeros(6), lengths))
    y = hr.nest(np.arange(6.0), [0, 2, 2, 5, 6], [0, 1, 4])
    with raises(ValueError, r"per_segment's level 1 \(outermost first\) has 3 segments, x's has 2"):
        hr.broadcast(hr.from_lengths(np.zeros(4), [1, 2, 1]), y, levels=1)


def test_broadcast_of_a_scalar_is_a_value_error(backend):
    """A Python or NumPy scalar as per_segment is the same ValueError on every backend (on
    CUDA the device check had made it a TypeError saying the scalar is "on cpu")."""
    x = make_ragged(np.arange(3.0), [np.array([0, 1, 3])], backend)
    for per in (2.0, 3, np.float32(2.0), True):
        with raises(ValueError, r"^broadcast\(\): per_segment must have one row per segment, "
                    r"got a scalar"):
            hr.broadcast(per, x)


def test_lists_of_integers_beyond_int64_are_integers():
    """From an audit: NumPy makes [0, 2**63] and [0, np.uint64(3)] float64 and [0, 2**64]
    object, so lists of valid integers were refused as "float64 offsets" (also lengths,
    ids and index lists), and out-of-range ones named no position. Integers are read as
    integers now: valid ones are used, others are a ValueError naming the first."""
    v = np.arange(6.0)
    assert hr.RaggedArray(v, [0, np.uint64(3), 6]).to_list() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert hr.RaggedArray(v, (0, np.uint64(3), 6)).to_list() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    with raises(ValueError, r"^offsets\[2\]=9223372036854775808 is past the end of values"):
        hr.RaggedArray(v, [0, 3, 2**63])
    with raises(ValueError, r"^offsets\[1\]=18446744073709551616 does not fit a 64-bit integer"):
        hr.RaggedArray(v, [0, 2**64])
    assert hr.from_lengths(v, [1, np.uint64(2)]).to_list() == [[0.0], [1.0, 2.0]]
    with raises(ValueError, r"^lengths\[1\]=9223372036854775808 exceeds the 6 rows"):
        hr.from_lengths(v, [1, 2**63])
    assert hr.from_segment_ids(v, [0, 0, 1, 1, 2, np.uint64(2)]).lengths.tolist() == [2, 2, 2]
    x = hr.RaggedArray(v, [0, 3, 6])
    assert x[[0, np.uint64(1)]].to_list() == x.to_list()
    with raises(IndexError, r"^index\[1\]=9223372036854775808 is out of range for 2 segments"):
        x[[0, 2**63]]
    # past 64 bits: out of range too, the same IndexError (and ValueError) as above
    # (an audit: a plain ValueError before, which `except IndexError` missed)
    for key, msg in (([2**64], r"^index\[0\]=18446744073709551616 does not fit"),
                     ([0, -(2**63) - 1], r"^index\[1\]=-9223372036854775809 does not fit"),
                     ([-1, 2**63], r"^index\[0\]=-1 and index\[1\]=9223372036854775808")):
        with raises(IndexError, msg):
            x[key]
        with raises(ValueError, msg):
            x[key]
    # floats in a list are still floats
    with raises(TypeError, r"offsets must have an integer dtype, got float64"):
        hr.RaggedArray(v, [0, 1.0, 6])
    # no 64-bit type holds -1 and 2**63: both named (review R3)
    with raises(ValueError, r"^offsets\[0\]=-1 and offsets\[1\]=9223372036854775808: no 64-bit"):
        hr.RaggedArray(v, [-1, 2**63])

    class Unreadable:
        def __array__(self, dtype=None, copy=None):
            raise TypeError("no conversion")

    # NumPy's own errors keep the argument's name (review R3: raw TypeError before)
    with raises(TypeError, r"^offsets must be an array, got list \(TypeError: no conversion\)"):
        hr.RaggedArray(v, [Unreadable()])
    with raises(TypeError, r"^index must be an array, got list \(TypeError: no conversion\)"):
        x[[Unreadable()]]
