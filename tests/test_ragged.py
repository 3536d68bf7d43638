"""The type and its constructors (API.md section 1)."""

import copy
import pickle
import sys

import numpy as np
import pytest
import reference as R
import strategies as hst
from conftest import examples, make_ragged, needs_cupy_on_cuda, to_backend, to_host
from hypothesis import given, settings
from hypothesis import strategies as st

import hrarray as hr

# structure only (no reduction kernels compile here), so both offsets dtypes are cheap
BOTH = (np.int64, np.int32)

try:
    import cupy  # noqa: F401

    HAVE_CUPY = True
except ImportError:
    HAVE_CUPY = False


def to_list_ref(spec):
    return R.segments_list(spec.values, spec.offsets)


def leaf_of(x):
    return to_host(x.leaf_values)


# --------------------------------------------------------------------------
# attributes
# --------------------------------------------------------------------------


def test_attributes(backend):
    @settings(max_examples=examples(backend, cpu=40, cuda=6))
    @given(spec=hst.ragged(small=backend == "cuda", huge=False, offset_dtypes=BOTH))
    def check(spec):
        x = make_ragged(spec.values, spec.offsets, backend)
        top = spec.offsets[-1]
        assert x.depth == spec.depth
        assert x.nsegments == len(x) == len(top) - 1
        assert x.nvalues == int(top[-1]) - int(top[0])
        lengths = to_host(x.lengths)
        assert lengths.dtype == np.int64
        np.testing.assert_array_equal(lengths, np.diff(top.astype(np.int64)))
        assert x.dtype == spec.dtype
        assert x.inner_shape == spec.inner_shape
        assert x.device == backend
        np.testing.assert_array_equal(leaf_of(x), spec.values)
        assert x.to_list() == to_list_ref(spec)
        # nested levels: .values is the RaggedArray of the level below
        node, k = x, spec.depth - 1
        while k > 0:
            assert isinstance(node.values, hr.RaggedArray)
            np.testing.assert_array_equal(to_host(node.offsets), spec.offsets[k])
            node, k = node.values, k - 1
        np.testing.assert_array_equal(to_host(node.offsets), spec.offsets[0])

    check()


def test_zero_copy_construction():
    values = np.arange(20.0).reshape(10, 2)
    offsets = np.array([1, 3, 3, 9])
    x = hr.RaggedArray(values, offsets)
    assert x.values is values
    assert np.shares_memory(x.values, values)
    assert np.shares_memory(x.offsets, offsets)
    assert x.leaf_values is values
    assert x.offsets.dtype == np.int64
    # nested: the inner RaggedArray and its values are kept as is
    y = hr.RaggedArray(x, np.array([0, 2, 3]))
    assert y.values is x
    assert y.leaf_values is values


def test_int32_offsets_kept_other_ints_converted():
    values = np.arange(6.0)
    o32 = np.array([0, 2, 6], np.int32)
    x = hr.RaggedArray(values, o32)
    assert x.offsets.dtype == np.int32
    assert np.shares_memory(x.offsets, o32)
    # C long long is int64 under another type object: kept as it is too
    oll = np.array([0, 2, 6], np.longlong)
    z = hr.RaggedArray(values, oll)
    assert z.offsets is oll
    np.testing.assert_array_equal(hr.sum(z), [1.0, 14.0])
    for dt in (np.int8, np.int16, np.uint8, np.uint16, np.uint32, np.uint64):
        o = np.array([0, 2, 6], dt)
        y = hr.RaggedArray(values, o)
        assert y.offsets.dtype == np.int64, dt
        np.testing.assert_array_equal(y.offsets, [0, 2, 6])
        assert y.to_list() == [[0.0, 1.0], [2.0, 3.0, 4.0, 5.0]]
        np.testing.assert_array_equal(o, [0, 2, 6])  # the caller's offsets untouched


def test_readonly_and_strided_values_zero_copy():
    base = np.arange(40.0).reshape(20, 2)
    strided = base[::2, 1]
    x = hr.RaggedArray(strided, np.array([0, 3, 10]))
    assert np.shares_memory(x.leaf_values, base)
    assert x.to_list() == [strided[:3].tolist(), strided[3:].tolist()]
    ro = np.arange(10.0)
    ro.flags.writeable = False
    y = hr.RaggedArray(ro, np.array([2, 5, 10]))
    assert np.shares_memory(y.leaf_values, ro)
    assert y.to_list() == [[2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0, 9.0]]
    np.testing.assert_array_equal(hr.sum(y), [9.0, 35.0])
    rev = np.arange(6.0)[::-1]
    z = hr.RaggedArray(rev, np.array([0, 2, 6]))
    assert np.shares_memory(z.leaf_values, rev)
    assert z.to_list() == [[5.0, 4.0], [3.0, 2.0, 1.0, 0.0]]


def test_empty_array():
    x = hr.RaggedArray(np.empty(0, np.float32), np.array([0]))
    assert len(x) == 0
    assert x.nvalues == 0
    assert x.to_list() == []
    assert to_host(x.lengths).shape == (0,)


def test_repr_is_short():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 50, size=100_000)
    x = hr.from_lengths(rng.normal(size=(int(lengths.sum()), 3)).astype(np.float32), lengths)
    r = repr(x)
    assert len(r) < 300
    assert "float32" in r
    assert "cpu" in r
    assert "depth" in r
    assert str(x.depth) in r
    y = hr.RaggedArray(x, np.array([0, 10, 100_000]))
    assert "2" in repr(y)
    assert len(repr(y)) < 300


# --------------------------------------------------------------------------
# constructors
# --------------------------------------------------------------------------


@settings(max_examples=40)
@given(
    lens=hst.lengths(huge=False),
    inner=st.sampled_from(hst.INNER_SHAPES),
    dtype=st.sampled_from(hst.REAL_DTYPES),
)
def test_from_lengths(lens, inner, dtype):
    values = hst.make_values(1, dtype, (sum(lens), *inner), hst.value_kinds(dtype)[0])
    x = hr.from_lengths(values, np.asarray(lens, dtype=np.int64))
    expected_offsets = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])
    np.testing.assert_array_equal(x.offsets, expected_offsets)
    np.testing.assert_array_equal(x.lengths, lens)
    assert np.shares_memory(x.values, values) or values.size == 0
    assert x.to_list() == R.segments_list(values, [expected_offsets])
    if lens:  # lengths as a Python list work too
        assert hr.from_lengths(values, list(lens)).to_list() == x.to_list()


def test_from_lengths_empty_list():
    """``from_lengths(values, [])``: zero segments (``np.asarray([])`` is float64, but an
    empty list of lengths is still a list of lengths)."""
    x = hr.from_lengths(np.arange(3.0), [])
    assert len(x) == 0
    assert x.to_list() == []


def test_from_lengths_cuda(backend):
    needs_cupy_on_cuda(backend)
    values = np.arange(7.0)
    lengths = np.array([2, 0, 5])
    x = hr.from_lengths(to_backend(values, backend), to_backend(lengths, backend))
    assert x.device == backend
    np.testing.assert_array_equal(to_host(x.offsets), [0, 2, 2, 7])
    assert x.to_list() == [[0.0, 1.0], [], [2.0, 3.0, 4.0, 5.0, 6.0]]


def has_leaf(nested) -> bool:
    return any(has_leaf(o) if isinstance(o, list) else True for o in nested)


def nested_lists(depth, leaf):
    """Nested lists of a uniform depth with at least one leaf (else the depth of e.g.
    ``[[]]`` is ambiguous)."""
    inner = st.lists(leaf, max_size=5)
    for _ in range(depth - 1):
        inner = st.lists(inner, max_size=4)
    return st.lists(inner, min_size=1, max_size=5).filter(has_leaf)


@settings(max_examples=40)
@given(data=st.data(), depth=st.integers(1, 3))
def test_from_list_round_trip(data, depth):
    leaf = data.draw(st.sampled_from([st.integers(-100, 100), st.floats(-10, 10, width=32)]))
    nested = data.draw(nested_lists(depth, leaf))
    x = hr.from_list(nested, dtype=np.float64)
    assert x.depth == depth
    assert len(x) == len(nested)
    assert x.dtype == np.float64
    assert x.to_list() == nested


def test_from_list_examples():
    x = hr.from_list([[1, 2], [], [3]])
    assert x.depth == 1
    assert x.dtype.kind == "i"
    assert x.to_list() == [[1, 2], [], [3]]
    np.testing.assert_array_equal(x.lengths, [2, 0, 1])
    y = hr.from_list([[[1.5], []], [], [[2.0, 3.0], [4.0]]], dtype=np.float32)
    assert y.depth == 2
    assert y.dtype == np.float32
    assert y.to_list() == [[[1.5], []], [], [[2.0, 3.0], [4.0]]]
    np.testing.assert_array_equal(y.lengths, [2, 0, 2])
    z = hr.from_list([[], [], []], dtype=np.int32)
    assert z.to_list() == [[], [], []]
    assert z.dtype == np.int32


def test_from_list_array_items():
    """Innermost items may be equal-shape arrays: they become the inner shape."""
    a, b, c = np.ones(3), np.zeros(3), np.arange(3.0)
    x = hr.from_list([[a, b], [], [c]])
    assert x.inner_shape == (3,)
    assert x.depth == 1
    np.testing.assert_array_equal(x.leaf_values, np.stack([a, b, c]))
    assert x.to_list() == [[a.tolist(), b.tolist()], [], [c.tolist()]]
    m = np.arange(6).reshape(2, 3)
    y = hr.from_list([[[m], [m, m]]])
    assert y.depth == 2
    assert y.inner_shape == (2, 3)


def test_from_list_names_a_missing_value():
    with pytest.raises(ValueError, match=r"nested_lists\[0\]\[1\] is None, not a number"):
        hr.from_list([[1.0, None]])
    with pytest.raises(ValueError, match=r"nested_lists\[1\]\[1\]\[1\] is None"):
        hr.from_list([[[1, 2]], [[3], [4, None]]])
    # another object is the wrong kind of thing, a TypeError (an audit: a ValueError
    # that spoke of missing values)
    for item, kind in (({}, "dict"), ({1, 2}, "set"), (object(), "object")):
        with pytest.raises(TypeError, match=rf"nested_lists\[0\]\[1\] is .* \({kind}\), not a"):
            hr.from_list([[1.0, item]])


def test_from_list_of_arrays_is_a_list_of_segments():
    """A flat list of arrays can only be segments (from_list needs a list of segments):
    each array's rows are its items, as Awkward reads it."""
    x = hr.from_list([np.array([1.0, 2.0, 3.0]), np.array([], float), np.array([4.0])])
    assert x.to_list() == [[1.0, 2.0, 3.0], [], [4.0]]
    assert x.depth == 1
    y = hr.from_list([np.ones((2, 3), np.int8), np.zeros((1, 3), np.int8)], dtype=np.float32)
    assert y.dtype == np.float32
    assert y.inner_shape == (3,)
    np.testing.assert_array_equal(y.lengths, [2, 1])
    with pytest.raises(ValueError, match=r"nested_lists\[1\] has rows of shape \(2,\)"):
        hr.from_list([np.ones((2, 3)), np.zeros((1, 2))])
    # a flat list of scalars is still not a list of segments
    with pytest.raises(ValueError, match="list of segments"):
        hr.from_list([1.0, 2.0])


def test_from_segment_ids():
    values = np.arange(6.0)
    x = hr.from_segment_ids(values, np.array([0, 0, 2, 2, 2, 3]))
    np.testing.assert_array_equal(x.lengths, [2, 0, 3, 1])
    assert x.to_list() == [[0.0, 1.0], [], [2.0, 3.0, 4.0], [5.0]]
    y = hr.from_segment_ids(values, np.array([1, 1, 1, 2, 2, 2]), nsegments=5)
    np.testing.assert_array_equal(y.lengths, [0, 3, 3, 0, 0])
    z = hr.from_segment_ids(np.empty(0), np.empty(0, np.int64), nsegments=2)
    np.testing.assert_array_equal(z.lengths, [0, 0])
    with pytest.raises(ValueError, match="ids"):
        hr.from_segment_ids(values, np.array([0, 1, 0, 2, 2, 2]))
    # a RaggedArray as values (API.md: how levels nest): one id per segment, a new level
    w = hr.from_segment_ids(x, np.array([0, 0, 1, 1]))
    assert w.depth == 2
    assert w.to_list() == [[[0.0, 1.0], []], [[2.0, 3.0, 4.0], [5.0]]]
    with pytest.raises(ValueError, match="4 segments"):
        hr.from_segment_ids(x, np.array([0, 1]))
    # nsegments: an integer (NumPy's too), at least ids[-1] + 1
    assert len(hr.from_segment_ids(values, np.zeros(6, int), nsegments=np.int32(2))) == 2
    for bad in ("3", 2.7, True, None.__class__):
        with pytest.raises(TypeError, match="nsegments must be an integer"):
            hr.from_segment_ids(values, np.zeros(6, int), nsegments=bad)
    with pytest.raises(ValueError, match="nsegments must be >= 0, got -1"):
        hr.from_segment_ids(np.empty(0), np.empty(0, np.int64), nsegments=-1)


@settings(max_examples=30)
@given(lens=hst.lengths(huge=False), extra=st.integers(0, 3))
def test_from_segment_ids_matches_lengths(lens, extra):
    ids = np.repeat(np.arange(len(lens)), lens)
    values = np.arange(float(len(ids)))
    x = hr.from_segment_ids(values, ids, nsegments=len(lens) + extra)
    np.testing.assert_array_equal(x.lengths, [*lens, *([0] * extra)])
    assert x.to_list()[: len(lens)] == R.segments_list(values, [hst.offsets_from_lengths(lens)])


@settings(max_examples=40)
@given(
    spec=hst.ragged(depths=(1,), huge=False, offset_dtypes=BOTH),
    fill=st.integers(1, 9),
    grow=st.integers(0, 3),
)
def test_padded_round_trip(spec, fill, grow):
    fill = spec.dtype.type(fill)
    x = make_ragged(spec.values, spec.offsets)
    lens = np.diff(spec.offsets[0].astype(np.int64))
    longest = int(lens.max()) if lens.size else 0
    padded, mask = x.to_padded(fill_value=fill)
    assert padded.shape == (len(lens), longest, *spec.inner_shape)
    assert padded.dtype == spec.dtype
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, np.arange(longest)[None, :] < lens[:, None])
    compact_values, _ = R.compact(spec.values, spec.offsets)
    np.testing.assert_array_equal(padded[mask], compact_values)
    np.testing.assert_array_equal(padded[~mask], np.full_like(padded[~mask], fill))
    assert hr.from_padded(padded, lengths=lens).to_list() == x.to_list()
    assert hr.from_padded(padded, mask=mask).to_list() == x.to_list()
    wide, wmask = x.to_padded(max_length=longest + grow)
    assert wide.shape[1] == longest + grow
    assert int(wmask.sum()) == int(lens.sum())
    assert hr.from_padded(wide, mask=wmask).to_list() == x.to_list()


def test_from_padded_mask_errors():
    padded = np.zeros((2, 3))
    # wrong kind of thing (an int mask, as a 0/1 array would be): TypeError
    with pytest.raises(TypeError, match="mask must be a bool array, got dtype int64"):
        hr.from_padded(padded, mask=np.ones((2, 3), np.int64))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 3\).*got \(3, 2\)"):
        hr.from_padded(padded, mask=np.ones((3, 2), bool))
    with pytest.raises(ValueError, match="lengths or mask, not both"):
        hr.from_padded(padded, lengths=[1, 2], mask=np.ones((2, 3), bool))
    # a bool array that cannot be the mask is not read as lengths either
    with pytest.raises(TypeError, match="lengths must have an integer dtype, got bool"):
        hr.from_padded(padded, np.ones(2, bool))
    # the argument named is the caller's (an audit: "values has unsupported dtype")
    with pytest.raises(TypeError, match=r"^padded has unsupported dtype object"):
        hr.from_padded(np.array([[None]]))


def test_from_padded_takes_to_padded_positionally():
    """``from_padded(*x.to_padded())`` is the inverse: the mask in lengths' place."""
    x = hr.from_lengths(np.arange(6.0), [1, 2, 0, 3])
    y = hr.from_padded(*x.to_padded())
    assert y.to_list() == x.to_list()
    padded, mask = x.to_padded(fill_value=-1.0, max_length=5)
    assert hr.from_padded(padded, mask).to_list() == x.to_list()


def test_nest():
    values = np.arange(10.0)
    o1 = np.array([0, 2, 2, 5, 10])
    o2 = np.array([0, 1, 4])
    x = hr.nest(values, o1, o2)
    y = hr.RaggedArray(hr.RaggedArray(values, o1), o2)
    assert x.depth == 2
    assert (
        x.to_list()
        == y.to_list()
        == [[[0.0, 1.0]], [[], [2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0, 9.0]]]
    )
    np.testing.assert_array_equal(x.offsets, o2)
    np.testing.assert_array_equal(x.values.offsets, o1)
    assert np.shares_memory(x.leaf_values, values)
    z = hr.nest(values, o1, o2, np.array([0, 2]))
    assert z.depth == 3
    assert z.to_list() == [x.to_list()]
    assert hr.nest(values, o1).to_list() == hr.RaggedArray(values, o1).to_list()


def test_concatenate(backend):
    @settings(max_examples=examples(backend, cpu=30, cuda=4))
    @given(data=st.data())
    def check(data):
        small = backend == "cuda"
        a = data.draw(hst.ragged(small=small, huge=False, offset_dtypes=BOTH))
        b = data.draw(
            hst.ragged(
                dtypes=(a.dtype.name,),
                inner_shapes=(a.inner_shape,),
                depths=(a.depth,),
                small=small,
                huge=False,
                offset_dtypes=BOTH,
            )
        )
        xa = make_ragged(a.values, a.offsets, backend)
        xb = make_ragged(b.values, b.offsets, backend)
        xc = hr.concatenate([xa, xb])
        assert xc.depth == a.depth
        assert xc.dtype == a.dtype
        assert xc.inner_shape == a.inner_shape
        assert xc.device == backend
        assert xc.to_list() == to_list_ref(a) + to_list_ref(b)
        assert hr.concatenate([xa]).to_list() == to_list_ref(a)
        assert hr.concatenate([xa, xb, xa]).to_list() == to_list_ref(a) + to_list_ref(
            b
        ) + to_list_ref(a)

    check()


# --------------------------------------------------------------------------
# indexing
# --------------------------------------------------------------------------


def test_getitem(backend):
    @settings(max_examples=examples(backend, cpu=40, cuda=5))
    @given(
        spec=hst.ragged(small=backend == "cuda", huge=False, min_segments=1, offset_dtypes=BOTH),
        data=st.data(),
    )
    def check(spec, data):
        x = make_ragged(spec.values, spec.offsets, backend)
        ref = to_list_ref(spec)
        n = len(ref)
        if n == 0:
            return
        i = data.draw(st.integers(-n, n - 1))
        item = x[i]
        if spec.depth == 1:
            assert not isinstance(item, hr.RaggedArray)
            o = spec.offsets[0]
            k = i % n
            np.testing.assert_array_equal(to_host(item), spec.values[o[k] : o[k + 1]])
        else:
            assert isinstance(item, hr.RaggedArray)
            assert item.depth == spec.depth - 1
            assert item.to_list() == ref[i]
        lo = data.draw(st.integers(0, n))
        hi = data.draw(st.integers(0, n))
        view = x[lo:hi]
        assert isinstance(view, hr.RaggedArray)
        assert view.to_list() == ref[lo:hi]
        assert len(view) == len(ref[lo:hi])
        if backend == "cpu":
            assert np.shares_memory(view.leaf_values, spec.values) or spec.values.size == 0
        if backend == "cuda" and not HAVE_CUPY:
            return  # gathers on CUDA arrays use CuPy
        idx = np.asarray(data.draw(st.lists(st.integers(-n, n - 1), max_size=6)), dtype=np.int64)
        gathered = x[to_backend(idx, backend)]
        assert gathered.to_list() == [ref[k] for k in idx]
        mask = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        picked = x[to_backend(mask, backend)]
        assert picked.to_list() == [r for r, m in zip(ref, mask, strict=True) if m]
        if backend == "cpu" and gathered.nvalues:
            assert not np.shares_memory(gathered.leaf_values, spec.values)
        if backend == "cpu":  # a list index, an empty one too, as in NumPy
            as_list = [int(k) for k in idx]
            assert x[as_list].to_list() == [ref[k] for k in as_list]
            assert x[[]].to_list() == []
            assert x[[]].dtype == x.dtype

    check()


def test_getitem_out_of_range():
    x = hr.from_lengths(np.arange(3.0), [1, 2])
    with pytest.raises(IndexError):
        x[2]
    with pytest.raises(IndexError):
        x[-3]
    with pytest.raises(IndexError):
        x[np.array([0, 5])]


def test_getitem_host_scalars(backend):
    """A boolean scalar is a 0-d mask and a 0-d integer array an integer, on every backend
    (on CUDA both were taken for host index arrays: a TypeError)."""
    x = make_ragged(np.arange(6.0), [np.array([0, 2, 2, 6])], backend)
    for key in (True, False, np.True_, np.array(True)):
        with pytest.raises(IndexError, match=r"boolean index has shape \(\), expected \(3,\)"):
            x[key]
    for key, want in ((np.array(0), [0.0, 1.0]), (np.array(-1), [2.0, 3.0, 4.0, 5.0]),
                      (np.array(1, np.uint64), [])):
        np.testing.assert_array_equal(to_host(x[key]), want)
    with pytest.raises(IndexError, match="out of range"):
        x[np.array(3)]
    with pytest.raises(TypeError, match="got dtype float64"):
        x[np.array(1.0)]


def test_deep_nesting_to_list_and_from_list():
    """to_list and from_list at any depth (both recursed: a RecursionError near depth
    1000, to_list near 450)."""
    depth = 1200
    x = hr.nest(np.array([7.0]), *[np.array([0, 1])] * depth)
    assert x.depth == depth
    got = x.to_list()
    for _ in range(depth + 1):  # the segments' list, then a list per level's segment
        assert isinstance(got, list)
        assert len(got) == 1
        got = got[0]
    assert got == 7.0
    nested = [7.0]
    for _ in range(depth - 1):
        nested = [nested]
    y = hr.from_list(nested)
    assert y.depth == depth - 1
    assert hr.sum(y, levels=y.depth).tolist() == [7.0]


def test_to_list_of_views():
    """to_list of slices of a depth-3 array: the levels' offsets taken where they start."""
    x = hr.nest(np.arange(10.0), np.array([0, 1, 3, 3, 6, 10]), np.array([0, 2, 4, 5]),
                np.array([0, 1, 3]))
    full = [[[[0.0], [1.0, 2.0]]], [[[], [3.0, 4.0, 5.0]], [[6.0, 7.0, 8.0, 9.0]]]]
    assert x.to_list() == full
    assert x[1:].to_list() == full[1:]
    assert x[:1].to_list() == full[:1]
    assert x[1].to_list() == full[1]
    assert x[0][1:].to_list() == full[0][1:]


def test_slice_is_a_view_of_values():
    values = np.arange(10.0)
    x = hr.from_lengths(values, [3, 3, 4])
    v = x[1:3]
    assert np.shares_memory(v.leaf_values, values)
    values[4] = 100.0  # the view sees the caller's buffer
    assert v.to_list() == [[3.0, 100.0, 5.0], [6.0, 7.0, 8.0, 9.0]]
    np.testing.assert_array_equal(hr.sum(v), [108.0, 30.0])


# --------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------


@settings(max_examples=60)
@given(
    counts=st.lists(st.sampled_from([0, 0, 0, 1, 2, 5]), max_size=12),
    inner=st.sampled_from([(), (3,)]),
)
def test_repeat_by_search_path_matches_numpy_repeat(counts, inner):
    """The segment structure's repeat on CUDA (CuPy's repeat takes no array of counts, a
    ValueError seen on an H200 in segment_ids, local_index, gathers and to_padded) is a
    search in the counts' running total: the same rows as np.repeat, many empty segments."""
    from hrarray.ragged import repeat_by

    c = np.asarray(counts, dtype=np.int64)
    a = np.arange(len(counts) * int(np.prod(inner)), dtype=np.float64).reshape(-1, *inner)
    got = repeat_by(np, a, c, general=True)
    np.testing.assert_array_equal(got, np.repeat(a, c, axis=0))
    assert got.shape == (int(c.sum()), *inner)
    np.testing.assert_array_equal(repeat_by(np, a, c), np.repeat(a, c, axis=0))


def test_segment_ids_and_local_index(backend):
    needs_cupy_on_cuda(backend)

    @settings(max_examples=examples(backend, cpu=30, cuda=5))
    @given(spec=hst.ragged(depths=(1,), small=backend == "cuda", huge=False, offset_dtypes=BOTH))
    def check(spec):
        x = make_ragged(spec.values, spec.offsets, backend)
        lens = np.diff(spec.offsets[0].astype(np.int64))
        ids = to_host(x.segment_ids())
        pos = to_host(x.local_index())
        assert ids.dtype.kind == "i"
        assert pos.dtype.kind == "i"
        np.testing.assert_array_equal(ids, np.repeat(np.arange(len(lens)), lens))
        expect = np.concatenate([np.arange(n) for n in lens]) if len(lens) else np.empty(0)
        np.testing.assert_array_equal(pos, expect)
        assert ids.shape == pos.shape == (x.nvalues,)

    check()


def test_with_values(backend):
    @settings(max_examples=examples(backend, cpu=30, cuda=5))
    @given(spec=hst.ragged(small=backend == "cuda", huge=False, offset_dtypes=BOTH))
    def check(spec):
        x = make_ragged(spec.values, spec.offsets, backend)
        # one new row per leaf value inside segments (x.nvalues counts the top level's items)
        n_leaf = R.compact(spec.values, spec.offsets)[0].shape[0]
        new = np.arange(n_leaf * 2.0).reshape(n_leaf, 2)
        y = x.with_values(to_backend(new, backend))
        assert y.depth == x.depth
        assert y.inner_shape == (2,)
        assert y.device == backend
        np.testing.assert_array_equal(to_host(y.lengths), to_host(x.lengths))
        _, compact_offsets = R.compact(spec.values, spec.offsets)
        assert y.to_list() == R.segments_list(new, compact_offsets)
        if backend == "cpu" and new.size:
            assert np.shares_memory(y.leaf_values, new)

    check()


def test_to_numpy(backend):
    values = np.arange(6.0)
    x = make_ragged(values, [np.array([0, 2, 6]), np.array([0, 2])], backend)
    h = x.to_numpy()
    assert h.device == "cpu"
    assert isinstance(h.leaf_values, np.ndarray)
    assert h.to_list() == x.to_list() == [[[0.0, 1.0], [2.0, 3.0, 4.0, 5.0]]]


def test_to_cupy_when_available():
    cupy = pytest.importorskip("cupy")
    x = hr.from_lengths(np.arange(4.0), [1, 3])
    c = x.to_cupy()
    assert c.device == "cuda"
    assert isinstance(c.leaf_values, cupy.ndarray)
    assert c.to_list() == x.to_list()


# --------------------------------------------------------------------------
# results are compact
# --------------------------------------------------------------------------


def test_reduction_results_are_compact(backend):
    values = np.arange(12.0)
    o1 = np.array([2, 4, 4, 9, 11])
    o2 = np.array([1, 2, 4])  # segment 0 of level 1 unreachable
    x = make_ragged(values, [o1, o2], backend)
    for op in ("sum", "max", "mean", "count"):
        r = getattr(hr, op)(x)
        offs = to_host(r.offsets)
        assert int(offs[0]) == 0
        assert int(offs[-1]) == len(to_host(r.values))
        assert len(r) == 2
    np.testing.assert_array_equal(to_host(hr.sum(x).values), [0.0, 4 + 5 + 6 + 7 + 8, 9 + 10])


def test_derived_offsets_are_read_only_views():
    """Results, slices and with_values share offsets with their input: as read-only views,
    so writing into a derived array cannot invalidate the input's validated offsets (whose
    kernels would then read out of bounds). The caller's own offsets stay theirs."""
    v = np.arange(10.0)
    o = np.array([0, 3, 3, 7, 10])
    x = hr.RaggedArray(v, o)
    assert x.offsets is o
    assert o.flags.writeable
    n = hr.nest(np.arange(10.0), o, np.array([0, 1, 4]))
    derived = [
        hr.cumsum(x), hr.cumsum(x, exclusive=True), hr.softmax(x), hr.log_softmax(x),
        hr.broadcast(np.arange(4.0), x), x.with_values(v * 2), x[1:3],
        hr.sum(n, levels=1), hr.softmax(n), hr.attention_pool(n, n.with_values(v), levels=1),
    ]
    for y in derived:
        assert not y.offsets.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            y.offsets[-1] = 50_000_000
    np.testing.assert_array_equal(o, [0, 3, 3, 7, 10])
    np.testing.assert_array_equal(hr.sum(x), [3.0, 0.0, 18.0, 24.0])
    # offsets hrarray converted (uint8 -> int64) are its own copy: read-only too
    xu = hr.RaggedArray(v, o.astype(np.uint8))
    assert not xu.offsets.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        xu.offsets[-1] = 200
    # an object whose __array__ hands over the caller's own ndarray (a pandas Series does):
    # hrarray's offsets are a read-only view of it, and the caller's array keeps its flags
    # (an audit: the array itself had been made read-only, at every level of hr.nest too)

    class Wrap:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    o2 = np.array([0, 1, 4])
    for y in (hr.RaggedArray(v, Wrap(o)), hr.nest(v, Wrap(o), Wrap(o2))):
        for level in y._levels():
            assert not level.offsets.flags.writeable
    assert o.flags.writeable
    assert o2.flags.writeable
    o[0] = 0
    # so are offsets given as lists or tuples (no caller holds that array), at every
    # level of hr.nest: one write had made hr.sum read past the values
    for y in (hr.RaggedArray(v, [0, 3, 3, 7, 10]), hr.RaggedArray(v, (0, 10)),
              hr.nest(v, [0, 3, 3, 7, 10], [0, 1, 4])):
        for level in y._levels():
            assert not level.offsets.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                level.offsets[-1] = 40


def test_to_cupy_without_cupy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    x = hr.from_lengths(np.arange(3.0), [1, 2])
    with pytest.raises(ModuleNotFoundError, match=r"hrarray\[cuda12\]"):
        x.to_cupy()


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_and_deepcopy_keep_offsets_read_only(proto):
    """From an audit: an unpickled or deep-copied RaggedArray had writable offsets (hrarray's
    own arrays are read-only so no write can invalidate them): ``y.offsets[2] = 5e7`` then
    made ``hr.sum`` read out of bounds (a segmentation fault). Protocols 0 and 1 raised
    TypeError (``__slots__``). Unpickled parts are validated again; ``copy.copy`` shares the
    arrays and leaves a caller's own offsets writable."""
    v = np.arange(24.0).reshape(12, 2)
    arrays = [
        hr.from_lengths(np.arange(6.0), [2, 0, 4]),
        hr.from_lengths(v, [5, 0, 7]),
        hr.nest(np.arange(10.0), [0, 3, 3, 10], [0, 1, 3]),
        hr.from_lengths(np.arange(6.0), [2, 0, 4])[1:],
        hr.from_lengths(np.arange(6.0), [2, 0, 4])[np.array([2, 0])],
        hr.from_lengths(np.zeros(0), []),
    ]
    for x in arrays:
        for y in (pickle.loads(pickle.dumps(x, protocol=proto)), copy.deepcopy(x)):
            assert y.to_list() == x.to_list()
            assert y.depth == x.depth
            assert y.dtype == x.dtype
            level = y
            while isinstance(level, hr.RaggedArray):
                assert not level.offsets.flags.writeable
                with pytest.raises(ValueError, match="read-only"):
                    level.offsets[-1] = 50_000_000
                level = level.values
            np.testing.assert_array_equal(hr.sum(y, levels=y.depth), hr.sum(x, levels=x.depth))
    # offsets pickled beside the array come back as one object: the array's own offsets
    # must still be its own (a review: a read-only view of that shared array was not)
    x = hr.from_lengths(np.arange(10.0), [3, 7])
    for y, off in (pickle.loads(pickle.dumps((x, x.offsets), protocol=proto)),
                   copy.deepcopy((x, x.offsets))):
        if off.flags.writeable:
            off[1] = 50_000_000
        np.testing.assert_array_equal(hr.sum(y), [3.0, 42.0])
    mine = np.array([0, 2, 6])
    x = hr.RaggedArray(np.arange(6.0), mine)
    copy.copy(x)
    copy.deepcopy(x)
    pickle.loads(pickle.dumps(x, protocol=proto))
    assert mine.flags.writeable
    # a damaged pickle is validated again, not trusted
    blob = pickle.dumps(x, protocol=proto)
    if proto >= 2:  # (0 and 1 write arrays as text)
        damaged = blob.replace(mine.tobytes(), np.array([0, 2, 60]).tobytes())
        with pytest.raises(ValueError, match=r"offsets\[2\]=60 is past the end"):
            pickle.loads(damaged)
