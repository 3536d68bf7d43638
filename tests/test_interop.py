"""Arrow and Awkward interop (API.md section 5): zero-copy both ways for host data."""

import importlib.util
import sys

import numpy as np
import pytest
import strategies as hst
from conftest import DLPackOnly, examples, make_ragged
from hypothesis import given, settings

import hrarray as hr

# optional: CI installs neither (the [test] extra), so these tests skip there
needs_pa = pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None,
                              reason="pyarrow not installed")
needs_ak = pytest.mark.skipif(importlib.util.find_spec("awkward") is None,
                              reason="awkward not installed")


# dtypes Arrow and Awkward both hold (Arrow has no complex)
DTYPES = (np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint16, np.bool_)


def same(x, y):
    """Same structure, dtype and values, level by level."""
    assert isinstance(y, hr.RaggedArray)
    assert (x.depth, x.dtype, x.inner_shape, len(x)) == (y.depth, y.dtype, y.inner_shape, len(y))
    assert x.to_list() == y.to_list()


def shares(a, b):
    """Whether ``a`` is a view of ``b``'s memory (vacuous for empty arrays)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.size == 0 or np.shares_memory(a, b)


# ------------------------------------------------------------------ Arrow
@pytest.fixture
def pa_():
    import pyarrow

    return pyarrow


def test_import_hrarray_imports_neither():
    import subprocess

    code = ("import sys, hrarray; assert 'pyarrow' not in sys.modules; "
            "assert 'awkward' not in sys.modules; assert 'dask' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@needs_pa
@settings(max_examples=examples("cpu"), deadline=None)
@given(spec=hst.ragged(dtypes=DTYPES, inner_shapes=((), (3,), (2, 2)),
                       offset_dtypes=(np.int64, np.int32)))
def test_arrow_round_trip(spec):
    import pyarrow as pa

    x = make_ragged(spec.values, spec.offsets)
    a = hr.to_arrow(x)
    assert isinstance(a, pa.ListArray if x.offsets.dtype == np.int32 else pa.LargeListArray)
    a.validate(full=True)
    assert a.to_pylist() == x.to_list()
    y = hr.from_arrow(a)
    same(x, y)
    # zero-copy both ways: the same offsets and (non-bool) values buffers
    assert shares(y.offsets, x.offsets)
    assert y.offsets.dtype == x.offsets.dtype
    if x.dtype != np.bool_:
        assert shares(y.leaf_values, x.leaf_values)
    assert x.to_arrow().equals(a)


@needs_pa
def test_from_arrow_views_the_buffers(pa_):
    pa = pa_
    a = pa.array([[1.0, 2.0, 3.0], [], [4.0], [5.0, 6.0]], type=pa.list_(pa.float32()))
    x = hr.from_arrow(a)
    assert x.offsets.dtype == np.int32
    assert x.dtype == np.float32
    assert shares(x.values, a.values.to_numpy())
    assert shares(x.offsets, a.offsets.to_numpy())
    np.testing.assert_array_equal(hr.sum(x), np.array([6, 0, 4, 11], np.float32))
    # a slice keeps the buffers: offsets start above 0
    s = hr.from_arrow(a.slice(2, 2))
    assert s.to_list() == [[4.0], [5.0, 6.0]]
    assert int(s.offsets[0]) == 3
    assert shares(s.values, a.values.to_numpy())
    big = hr.from_arrow(pa.array([[1, 2], [3]], type=pa.large_list(pa.int16())))
    assert big.offsets.dtype == np.int64
    assert big.dtype == np.int16


@needs_pa
def test_from_arrow_nested_and_fixed_size(pa_):
    pa = pa_
    n = pa.array([[[1.0, 2.0], [3.0]], [], [[4.0]]])
    x = hr.from_arrow(n)
    assert x.depth == 2
    assert x.to_list() == n.to_pylist()
    np.testing.assert_array_equal(hr.sum(x, levels=2), [6.0, 0.0, 4.0])
    f = pa.array([[[1, 2], [3, 4]], [], [[5, 6]]], type=pa.list_(pa.list_(pa.float64(), 2)))
    y = hr.from_arrow(f)
    assert y.depth == 1
    assert y.inner_shape == (2,)
    np.testing.assert_array_equal(hr.sum(y), [[4, 6], [0, 0], [5, 6]])
    # a sliced fixed-size-list child is read from its own offset
    fs = pa.ListArray.from_arrays(pa.array([0, 1, 2], pa.int32()), f.values.slice(1, 2))
    assert hr.from_arrow(fs).to_list() == fs.to_pylist()
    assert hr.to_arrow(y).type == pa.list_(pa.list_(pa.float64(), 2))


@needs_pa
def test_from_arrow_chunked(pa_):
    pa = pa_
    a = pa.array([[1.0], [2.0, 3.0]])
    one = pa.chunked_array([a])
    assert shares(hr.from_arrow(one).values, a.values.to_numpy())
    two = pa.chunked_array([a, pa.array([[], [4.0]])])
    assert hr.from_arrow(two).to_list() == [[1.0], [2.0, 3.0], [], [4.0]]
    empty = hr.from_arrow(pa.chunked_array([], type=pa.list_(pa.float32())))
    assert len(empty) == 0
    assert empty.dtype == np.float32
    # errors number the chunks as the caller does, empty ones too (helper I's audit: the
    # empty chunks were dropped first, so the null in chunk 2 was said to be in chunk 1)
    t = pa.list_(pa.int64())
    with pytest.raises(ValueError, match="list_array chunk 2 has a null list at position 1"):
        hr.from_arrow(pa.chunked_array([pa.array([], t), pa.array([[1]], t),
                                        pa.array([[1], None], t)]))
    s = pa.list_(pa.string())
    with pytest.raises(TypeError, match="list_array chunk 1 values"):
        hr.from_arrow(pa.chunked_array([pa.array([], s), pa.array([["a"]], s)]))


@needs_pa
def test_from_arrow_of_lists_that_are_all_empty(pa_):
    """pa.array([[], []]) has type list<null> (nothing to infer a value type from): it was
    a TypeError, while from_awkward of the same lists (an EmptyArray) gives float64 (helper
    I's audit). Empty lists of null values read as float64; a null value is still refused."""
    pa = pa_
    for a in (pa.array([[], []]), pa.array([[[]], []]), pa.array([[], [None]]).slice(0, 1)):
        x = hr.from_arrow(a)
        assert x.dtype == np.float64
        assert x.to_list() == a.to_pylist()
    with pytest.raises(ValueError, match="null at position 0"):
        hr.from_arrow(pa.array([[None]]))


@needs_pa
def test_arrow_round_trip_of_zero_size_inner_dimensions(pa_):
    """fixed_size_list<...>[0] is an Arrow type that from_arrow reads (inner shape (0,));
    to_arrow refused it (FixedSizeListArray.from_arrays takes no size 0; helper I's
    audit): the round trip must hold for a 0 at any inner position."""
    pa = pa_
    a = pa.array([[[]], []], pa.list_(pa.list_(pa.int64(), 0)))
    x = hr.from_arrow(a)
    assert x.inner_shape == (0,)
    assert hr.to_arrow(x).to_pylist() == a.to_pylist()
    for shape in ((5, 0, 3), (5, 3, 0), (5, 2, 3)):
        v = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
        x = hr.RaggedArray(v, np.array([0, 2, 2, 5]))
        y = hr.to_arrow(x)
        y.validate(full=True)
        back = hr.from_arrow(y)
        assert back.inner_shape == shape[1:]
        assert back.to_list() == x.to_list()
        np.testing.assert_array_equal(back.offsets, x.offsets)


@needs_pa
def test_to_arrow_copies_only_what_it_must(pa_):
    vals = np.arange(12.0)[::2]  # strided: Arrow needs a contiguous buffer
    x = hr.RaggedArray(vals, np.array([0, 2, 6]))
    assert hr.to_arrow(x).to_pylist() == [[0.0, 2.0], [4.0, 6.0, 8.0, 10.0]]
    sw = hr.RaggedArray(np.arange(3, dtype=">f8"), np.array([0, 3]))
    assert hr.to_arrow(sw).to_pylist() == [[0.0, 1.0, 2.0]]
    with pytest.raises(TypeError, match="complex"):
        hr.to_arrow(hr.RaggedArray(np.ones(2, np.complex64), np.array([0, 2])))
    if np.dtype(np.longdouble).itemsize > 8:  # an 80-bit float where the platform has one
        with pytest.raises(TypeError, match=r"dtype float(96|128) to Arrow"):
            hr.to_arrow(hr.RaggedArray(np.ones(2, np.longdouble), np.array([0, 2])))
    with pytest.raises(TypeError, match="RaggedArray"):
        hr.to_arrow(np.ones(3))


@needs_pa
def test_from_arrow_errors(pa_):
    pa = pa_
    with pytest.raises(ValueError, match="null list at position 1"):
        hr.from_arrow(pa.array([[1.0], None, [2.0]]))
    with pytest.raises(ValueError, match="null at position 2"):
        hr.from_arrow(pa.array([[1.0, 2.0], [None]]))
    with pytest.raises(TypeError, match="string"):
        hr.from_arrow(pa.array([["a", "b"]]))
    with pytest.raises(TypeError, match="ListArray"):
        hr.from_arrow(pa.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="pyarrow Array"):
        hr.from_arrow([[1.0]])
    # offsets pyarrow never checked (from_buffers): named as the caller's list_array's
    vals = pa.array(np.arange(4.0))
    offs = pa.py_buffer(np.array([0, 3, 1, 4], np.int32))
    bad = pa.Array.from_buffers(pa.list_(pa.float64()), 3, [None, offs], children=[vals])
    with pytest.raises(ValueError, match=r"^list_array: offsets must be non-decreasing; "
                                         r"offsets\[2\]=1 < offsets\[1\]=3"):
        hr.from_arrow(bad)
    outer = pa.Array.from_buffers(pa.list_(bad.type), 1,
                                  [None, pa.py_buffer(np.array([0, 3], np.int32))], children=[bad])
    with pytest.raises(ValueError, match=r"^list_array values: offsets must be non-decreasing"):
        hr.from_arrow(outer)


# ---------------------------------------------------------------- Awkward
@pytest.fixture
def ak_():
    import awkward

    return awkward


@needs_ak
@settings(max_examples=examples("cpu"), deadline=None)
@given(spec=hst.ragged(dtypes=DTYPES + (np.complex128,), inner_shapes=((), (3,), (2, 2)),
                       offset_dtypes=(np.int64, np.int32)))
def test_awkward_round_trip(spec):
    import awkward as ak

    x = make_ragged(spec.values, spec.offsets)
    a = hr.to_awkward(x)
    assert isinstance(a, ak.Array)
    assert a.tolist() == x.to_list()
    y = hr.from_awkward(a)
    same(x, y)
    assert shares(y.offsets, x.offsets)
    assert shares(y.leaf_values, x.leaf_values)
    assert y.offsets.dtype == x.offsets.dtype
    assert x.to_awkward().tolist() == a.tolist()


@needs_ak
def test_from_awkward_layouts(ak_):
    ak = ak_
    a = ak.Array([[1.0, 2.0], [], [3.0]])
    x = hr.from_awkward(a)
    assert shares(x.values, a.layout.content.data)
    np.testing.assert_array_equal(hr.sum(x), [3.0, 0.0, 3.0])
    nested = ak.Array([[[1, 2], [3]], [], [[4]]])
    y = hr.from_awkward(nested)
    assert y.depth == 2
    assert y.to_list() == nested.tolist()
    # regular dimensions below the ragged ones are the inner shape
    reg = ak.to_regular(ak.Array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0]]]), axis=2)
    z = hr.from_awkward(reg)
    assert z.depth == 1
    assert z.inner_shape == (2,)
    np.testing.assert_array_equal(hr.sum(z), [[4.0, 6.0], [5.0, 6.0]])
    # a regular level above a ragged one stays a level (offsets built)
    top = ak.to_regular(ak.Array([[[1.0], [2.0, 3.0]], [[4.0], []]]), axis=1)
    assert hr.from_awkward(top).to_list() == top.tolist()
    # ListArray: back to back lists share the content, others are repacked
    c = ak.contents
    content = c.NumpyArray(np.arange(6.0))
    la = c.ListArray(ak.index.Index64(np.array([0, 2, 2])), ak.index.Index64(np.array([2, 2, 5])),
                     content)
    w = hr.from_awkward(la)
    assert w.to_list() == [[0.0, 1.0], [], [2.0, 3.0, 4.0]]
    assert shares(w.values, content.data)
    scattered = c.ListArray(ak.index.Index64(np.array([4, 0])), ak.index.Index64(np.array([6, 1])),
                            content)
    assert hr.from_awkward(scattered).to_list() == [[4.0, 5.0], [0.0]]
    # option types without a missing value are accepted
    opt = ak.Array([[1.0], [2.0, None]])[:, :1]  # type var * ?float64, no None left
    assert "?" in str(opt.type)
    assert hr.from_awkward(opt).to_list() == [[1.0], [2.0]]
    # ... also between a regular level and the lists below it (helper I's audit: the
    # search for a ragged level stopped at the option, a TypeError saying there was none)
    lists = c.ListOffsetArray(ak.index.Index64(np.array([0, 1, 3])), c.NumpyArray(np.arange(3.0)))
    for index, want in (([0, 1], None), ([0, -1], "missing value at position 1")):
        lay = c.RegularArray(c.IndexedOptionArray(ak.index.Index64(np.array(index)), lists), 1)
        if want is None:
            assert hr.from_awkward(ak.Array(lay)).to_list() == [[[0.0]], [[1.0, 2.0]]]
        else:
            with pytest.raises(ValueError, match=want):
                hr.from_awkward(ak.Array(lay))
    u32 = c.ListOffsetArray(ak.index.IndexU32(np.array([0, 1, 3], np.uint32)), content)
    v = hr.from_awkward(u32)
    assert v.offsets.dtype == np.int64
    assert v.to_list() == [[0.0], [1.0, 2.0]]


@needs_ak
def test_to_awkward_types(ak_):
    x = hr.from_lengths(np.ones((5, 3), np.float32), [2, 0, 3])
    a = hr.to_awkward(x)
    assert str(a.type) == "3 * var * 3 * float32"
    n = hr.nest(np.arange(4.0), np.array([0, 1, 4], np.int32), np.array([0, 2], np.int32))
    b = n.to_awkward()
    assert str(b.type) == "1 * var * var * float64"
    assert b.tolist() == [[[0.0], [1.0, 2.0, 3.0]]]
    assert shares(b.layout.content.content.data, n.leaf_values)


@needs_ak
@pytest.mark.parametrize("dt", [">f8", ">i2", "<f4"])
def test_to_awkward_any_byte_order(ak_, dt):
    # Awkward takes native byte order only; the other order is converted once
    v = np.arange(6).astype(dt)
    x = hr.nest(v, np.array([0, 2, 6]), np.array([0, 1, 2]))
    a = x.to_awkward()
    assert a.tolist() == [[[0, 1]], [[2, 3, 4, 5]]]
    assert a.layout.content.content.data.dtype == v.dtype.newbyteorder("=")
    assert shares(a.layout.content.content.data, v) == v.dtype.isnative
    assert hr.from_awkward(a).to_list() == x.to_list()


@needs_ak
def test_from_awkward_errors(ak_):
    # what Awkward cannot read: named as the argument (was Awkward's own message)
    with pytest.raises(TypeError, match=r"^array must be an Awkward array, got RaggedArray"):
        hr.from_awkward(hr.from_list([[1.0]]))
    ak = ak_
    with pytest.raises(TypeError, match="array must be an Awkward array, got NoneType"):
        hr.from_awkward(None)
    with pytest.raises(TypeError, match="array must be an Awkward array, got dict"):
        hr.from_awkward({"a": [1.0]})
    with pytest.raises(ValueError, match="missing value at position 1"):
        hr.from_awkward(ak.Array([[1.0, None]]))
    with pytest.raises(ValueError, match="missing value at position 1"):
        hr.from_awkward(ak.Array([[1.0], None]))
    with pytest.raises(TypeError, match="variable-length list"):
        hr.from_awkward(ak.Array([1.0, 2.0]))
    with pytest.raises(TypeError, match="RecordArray"):
        hr.from_awkward(ak.Array([[{"a": 1}]]))
    # strings and bytestrings (lists of uint8 marked as text), at any level: refused,
    # as from_arrow refuses them, not read as their bytes
    for text in (ak.Array([["ab", "c"], []]), ak.Array(["ab", "c"]), ak.Array([[b"ab"]])):
        with pytest.raises(TypeError, match="string"):
            hr.from_awkward(text)
    with pytest.raises(TypeError, match="RaggedArray"):
        hr.to_awkward([1, 2])


# ------------------------------------------------------------------ DLPack
def test_cpu_dlpack_producers_are_read_in_place():
    vals = np.arange(12.0).reshape(6, 2)
    offs = np.array([0, 2, 2, 6], np.int32)
    x = hr.RaggedArray(DLPackOnly(vals), DLPackOnly(offs))
    assert x.device == "cpu"
    assert shares(x.values, vals)
    assert shares(x.offsets, offs)
    assert x.offsets.dtype == np.int32
    np.testing.assert_array_equal(hr.sum(x), [[2.0, 4.0], [0.0, 0.0], [28.0, 32.0]])
    y = hr.from_lengths(DLPackOnly(vals[:, 0]), DLPackOnly(np.array([1, 5])))
    assert y.to_list() == [[0.0], [2.0, 4.0, 6.0, 8.0, 10.0]]
    with pytest.raises(ValueError, match="offsets"):
        hr.RaggedArray(DLPackOnly(vals), DLPackOnly(np.array([0, 7])))


class GradTensor:
    """What hrarray meets in a PyTorch CPU tensor that requires grad: its DLPack export and
    ``__array__`` raise RuntimeError until ``detach()`` (torch/_tensor.py)."""

    def __init__(self, a, requires_grad=True):
        self._a = a
        self.requires_grad = requires_grad

    def __dlpack__(self, **kw):
        if self.requires_grad:
            raise RuntimeError("Can't export tensors that require gradient, use tensor.detach()")
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()

    def __array__(self, dtype=None, copy=None):
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad.")
        return self._a

    def detach(self):
        return GradTensor(self._a, requires_grad=False)


def test_tensors_that_require_grad_are_read_detached():
    """hrarray's results carry no gradient: a tensor that requires grad is read through
    ``detach()``, zero-copy, not refused (helper G's review: on CUDA the interface's
    RuntimeError escaped ``hasattr`` raw; on the CPU it was a TypeError)."""
    vals = np.arange(6.0)
    x = hr.RaggedArray(GradTensor(vals), GradTensor(np.array([0, 2, 6])))
    assert shares(x.values, vals)
    np.testing.assert_array_equal(hr.sum(x), [1.0, 14.0])
    np.testing.assert_array_equal(hr.sum(hr.from_lengths(GradTensor(vals), [3, 3])),
                                  [3.0, 12.0])


def test_nulls_no_list_reaches_are_not_refused():
    """From a fuzz audit: a sliced Arrow or Awkward array was refused for a null/None that
    none of its lists reaches (``ak.Array([[1., None], [2.]])[1:]`` is ``[[2.0]]``); a
    reachable one is still a ValueError. Without missing values the offsets stay views."""
    pa = pytest.importorskip("pyarrow")
    ak = pytest.importorskip("awkward")
    a = ak.Array([[1.0, None], [2.0], [None, 3.0], [4.0, 5.0]])
    assert hr.from_awkward(a[1:2]).to_list() == [[2.0]]
    assert hr.from_awkward(a[3:]).to_list() == [[4.0, 5.0]]
    nested = ak.Array([[[1.0], [None]], [[2.0, 3.0]], [[None]]])
    assert hr.from_awkward(nested[1:2]).to_list() == [[[2.0, 3.0]]]
    for bad in (a, a[2:], nested, nested[1:], nested[:1]):
        with pytest.raises(ValueError, match="missing value"):
            hr.from_awkward(bad)
    la = pa.ListArray.from_arrays(pa.array([1, 2], pa.int32()), pa.array([None, 1.0]))
    assert hr.from_arrow(la).to_list() == [[1.0]]
    pn = pa.array([[[1.0], [None]], [[2.0, 3.0]], [[None, 4.0]]])
    assert hr.from_arrow(pn[1:2]).to_list() == [[[2.0, 3.0]]]
    for bad in (pn, pn[1:], pn[:1]):
        with pytest.raises(ValueError, match="null"):
            hr.from_arrow(bad)
    plain = pa.array([[1.0, 2.0], [3.0]])[1:]
    x = hr.from_arrow(plain)
    assert x.offsets.tolist() == [2, 3]  # zero-copy: not shifted
    assert np.shares_memory(x.offsets, np.frombuffer(plain.buffers()[1], np.int32))


@needs_pa
def test_arrow_arrays_with_nulls_are_refused_as_arrays(pa_):
    """An Arrow array with nulls where an array is expected (values, offsets, new values,
    per-segment rows): a ValueError naming the argument and the first null, as from_arrow
    says. An audit: its DLPack export fails, and the fallback, np.asarray, made the nulls
    NaN and the integers float64 without a word. Without nulls it reads as before."""
    pa = pa_
    with pytest.raises(ValueError, match=r"^values has a null at position 1"):
        hr.RaggedArray(pa.array([1, None, 3, 4, 5]), [0, 2, 5])
    with pytest.raises(ValueError, match=r"^values has a null at position 2"):
        hr.RaggedArray(pa.chunked_array([[1.0, 2.0], [None, 3.0]]), [0, 4])
    with pytest.raises(ValueError, match=r"^values has a null at position 1"):
        hr.RaggedArray(pa.array([True, None, False]), [0, 3])
    with pytest.raises(ValueError, match=r"^offsets has a null at position 1"):
        hr.RaggedArray(np.arange(5.0), pa.array([0, None, 5]))
    x = hr.from_lengths(np.zeros(3), [1, 2])
    with pytest.raises(ValueError, match=r"^new_values has a null at position 1"):
        x.with_values(pa.array([1.0, None, 3.0]))
    with pytest.raises(ValueError, match=r"^per_segment has a null at position 0"):
        hr.broadcast(pa.array([None, 1.0]), x)
    y = hr.RaggedArray(pa.array([1, 2, 3, 4, 5]), pa.array([0, 2, 5]))
    assert y.dtype == np.int64
    assert hr.sum(y).tolist() == [3, 12]
