"""Reductions (API.md section 2) against the pure-Python oracle in ``reference.py``.

Float sums are never compared bitwise: each result must be within the bound of
``research/reliability.md`` (c) of the exactly rounded value (``math.fsum``);
max/min/argmax/argmin/first/last/count/any/all and integer sums are exact.
"""

import fractions
import itertools
import math
import pickle
import sys
import warnings

import numpy as np
import pytest
import reference as R
import strategies as hst
from conftest import (
    REAL_GPU,
    examples,
    is_backend_array,
    make_ragged,
    to_backend,
    to_host,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import hrarray as hr

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def op_dtypes(op):
    """The dtypes API.md promises for ``op``."""
    if op in R.ORDERING_OPS or op.startswith("nan"):
        return hst.REAL_DTYPES
    if op == "logsumexp":
        return hst.INT_DTYPES + hst.FLOAT_DTYPES
    return hst.REAL_DTYPES + hst.COMPLEX_DTYPES


def call(op, x, style="function", **kw):
    """``hr.op(x, **kw)``, ``x.op(**kw)`` or ``hr.reduce(x, "op", **kw)``."""
    if style == "method":
        return getattr(x, op)(**kw)
    if style == "reduce":
        return hr.reduce(x, op, **kw)
    return getattr(hr, op)(x, **kw)


def ref_kwargs(op, kw):
    return {k: v for k, v in kw.items() if k in ("fill_value", "dtype", "ddof")}


def ragged_1d(values, lengths, backend="cpu", start=0):
    values = np.asarray(values)
    return make_ragged(values, [hst.offsets_from_lengths(lengths, start)], backend)


def host(a):
    return R.parts(a)[0] if R.is_ragged(a) else to_host(a)


def reduce1(op, values, lengths, backend="cpu", **kw):
    """``hr.op`` of 1-D ``values`` cut by ``lengths``, as a host array; on the CPU in this
    run's kernel layout for the op and dtype (``strategies.as_kernel_layout``)."""
    values, rows = np.asarray(values), False
    if backend == "cpu":
        values, rows = hst.as_kernel_layout(op, values)
    x = ragged_1d(values, lengths, backend)
    got = host(getattr(hr, op)(x, **kw))
    return got[:, 0] if rows else got


@st.composite
def reduction_cases(draw, op, small):
    kinds = ("prod_safe",) if R.base_op(op) == "prod" else None
    # int64 offsets only: every offsets dtype is another kernel specialisation (compile time);
    # int32 offsets have their own test below
    common = {"small": small, "nan": True, "kinds": kinds, "offset_dtypes": (np.int64,)}
    if R.base_op(op) == "prod":
        # a complex product meeting an inf gets inf or NaN parts depending on the order of
        # the multiplications (x * (y * inf) != (x * y) * inf): no order is promised
        real = [d for d in op_dtypes(op) if not d.startswith("complex")]
        spec = draw(hst.ragged_for(op, dtypes=real, inf=True, **common)
                    | hst.ragged_for(op, dtypes=hst.COMPLEX_DTYPES, inf=False, **common))
    else:
        spec = draw(hst.ragged_for(op, dtypes=op_dtypes(op), inf=True, **common))
    levels = draw(st.integers(1, spec.depth))
    res_kind = R.result_dtype(op, spec.dtype).kind
    fill = draw(st.none() | hst.fill_values(res_kind))
    kw = {}
    if levels != 1 or draw(st.booleans()):
        kw["levels"] = levels
    if fill is not None:
        kw["fill_value"] = fill
    if R.base_op(op) in ("var", "std"):
        # ddof is compiled into the kernel: one value per op and dtype this run (0, 1 or 2
        # by the seed), so each draws one kernel; the next seeds draw the others
        ddof = hst.seeded_choice(f"ddof:{op}:{np.dtype(spec.dtype).name}", 3)
        if ddof or draw(st.booleans()):
            kw["ddof"] = ddof
    style = draw(st.sampled_from(["function", "method", "reduce"]))
    return spec, kw, style


# --------------------------------------------------------------------------
# every op against the oracle
# --------------------------------------------------------------------------


@pytest.mark.parametrize("op", R.ALL_REDUCTIONS)
def test_matches_reference(op, backend):
    """Every op × dtype family × inner shape × depth × levels × fill_value, with empty
    segments, non-compact offsets, NaN and ±inf, against the oracle; result dtype, shape,
    array library and device as API.md says."""

    @settings(max_examples=examples(backend, cpu=22, cuda=8))
    @given(case=reduction_cases(op, small=backend == "cuda"))
    def check(case):
        spec, kw, style = case
        x = make_ragged(spec.values, spec.offsets, backend)
        got = call(op, x, style, **kw)
        levels = kw.get("levels", 1)
        ref = R.reduce(op, spec.values, spec.offsets, levels, **ref_kwargs(op, kw))
        R.assert_result(got, ref, err_msg=f"{op}({spec!r}, {kw}) via {style}")
        if levels == spec.depth:
            assert is_backend_array(got, backend), type(got)
        else:
            assert got.device == backend

    check()


# One op per kernel style (plain SIMD loop, float extreme fast path, argmax, tuple states
# in lanes, a generated nan variant, non-commutative first/last, a finalize that needs the
# whole segment) and one float, one narrow float and one int dtype: the schedule is the
# same code for every op, and every (op, dtype) pair is one more parallel compile.
SCHEDULE_OPS = ["sum", "max", "argmin", "var", "nanmean", "first", "last", "logsumexp", "prod"]


@pytest.fixture(params=[2, 5, 16])
def forced_reduce_chunks(request, monkeypatch):
    """Run every CPU reduction through the parallel kernel with ``k`` merge-path chunks,
    whatever its size: chunk edges then cut segments into head/tail partials."""
    from hrarray._kernels import cpu as cpu_kernels

    monkeypatch.setattr(cpu_kernels, "FORCE_CHUNKS", request.param)
    return request.param


@pytest.mark.parametrize("op", SCHEDULE_OPS)
def test_parallel_schedule_small(op, forced_reduce_chunks):
    """The merge-path schedule (chunks, head/tail partials, the in-order fix-up) against the
    oracle on small inputs with many empty segments, NaN and inf, 1-D and 2-D rows."""
    kinds = ("prod_safe",) if op == "prod" else None
    dtypes = [d for d in ("float64", "float32", "int32") if d in op_dtypes(op)]

    # each dtype in this run's kernel shape (strategies.kernel_ndim): the three dtypes still
    # cover 1-D and 2-D for most ops, and each shape is one more chunk and fix-up compile
    @settings(max_examples=12)
    @given(
        spec=hst.ragged_for(op, dtypes=dtypes, nan=True, inf=True, kinds=kinds,
                            offset_dtypes=(np.int64,)),
        data=st.data(),
    )
    def check(spec, data):
        levels = data.draw(st.integers(1, spec.depth))
        x = make_ragged(spec.values, spec.offsets, "cpu")
        got = call(op, x, levels=levels)
        R.assert_result(got, R.reduce(op, spec.values, spec.offsets, levels), err_msg=repr(spec))

    check()


# A probe, not a reduction: combine counts the depth of the tree it is applied in, so
# the result is the number of combines the deepest element went through (what a sum's
# rounding error grows with).
_DEPTH = hr.Reducer(identity=0, combine=lambda a, b: max(a, b) + 1, map=lambda v: 0)


@pytest.mark.parametrize("inner", [(), (2,)])
def test_fixup_combines_chunk_pieces_pairwise(inner, monkeypatch):
    """A segment cut into 64 pieces by the parallel schedule (64 threads' chunks) goes
    through at most log2(64) + 1 more combines than in one piece (a running state over
    the pieces took 63 more: beyond the sums' declared error bound)."""
    from hrarray._kernels import cpu as cpu_kernels

    x = ragged_1d(np.ones((64 * 512, *inner)), [5, 64 * 512 - 10, 5])
    one = host(hr.reduce(x, _DEPTH))
    monkeypatch.setattr(cpu_kernels, "FORCE_CHUNKS", 64)
    cut = host(hr.reduce(x, _DEPTH))
    assert (cut[1] <= one[1] + 7).all(), (cut, one)
    assert (cut[[0, 2]] == one[[0, 2]]).all(), (cut, one)


@pytest.mark.parametrize(("op", "dtype"), [("std", "float32"), ("nanvar", "float16")])
def test_var_family_runs_the_float64_variance_kernel(op, dtype):
    """CPU: var/std/nanvar/nanstd at a float32 or float16 result (and std at float64) run
    the float64 variance kernel, then the square root and the rounding their own
    declaration's finalize and store do: bit for bit that declaration's kernel (which the
    CUDA backend runs), NaN, inf, empty segments and fill_value included."""
    from hrarray._kernels.cpu import get_kernel
    from hrarray._ops import build

    rng = np.random.default_rng(11)
    lens = rng.integers(0, 40, 60)
    lens[::7] = 0
    lens[3] = 1
    v = rng.standard_normal(int(lens.sum())) * 150
    v[-60:] *= 8  # float16: the last segments' variances are inf, the others finite
    v = v.astype(dtype)
    v[::13] = np.nan
    v[5] = np.inf
    offsets = hst.offsets_from_lengths(lens)
    spec = build(op, v.dtype, ddof=1)
    assert "var64" in spec.decl.meta
    k_dt = np.dtype(np.float64) if spec.out_dtype == np.float16 else spec.out_dtype
    for fill in (None, -2.5):
        got = getattr(hr, op)(hr.RaggedArray(v, offsets), ddof=1, fill_value=fill)
        want = np.empty(len(lens), k_dt)
        get_kernel(spec.decl).run(v.astype(spec.value_dtype), offsets, want,
                                  k_dt.type(fill or 0), fill is not None)
        with np.errstate(over="ignore"):  # float16: variances of ~1e6 are inf
            want = want.astype(spec.out_dtype)
        np.testing.assert_array_equal(got, want, err_msg=str(fill))
        assert got.dtype == spec.out_dtype


# one op per CPU kernel style (mean is sum's); first reads the offsets without a kernel
@pytest.mark.parametrize("op", ["sum", "var", "max", "argmax", "first", "nanargmin"])
def test_int32_offsets(op, backend):
    """int32 offsets are used as they are (no copy): same results as the oracle."""

    # one of the two dtypes per op, by this run's seed (each is one more compiled kernel;
    # the next seeds take the other)
    dtype = ("float64", "int32")[hst.seeded_choice(f"int32 offsets:{op}", 2)]

    @settings(max_examples=examples(backend, cpu=15, cuda=3))
    @given(
        spec=hst.ragged_for(
            op,
            dtypes=(dtype,),
            inner_shapes=((), (3,)),
            small=backend == "cuda",
            nan=True,
            offset_dtypes=(np.int32,),
        ),
        data=st.data(),
    )
    def check(spec, data):
        levels = data.draw(st.integers(1, spec.depth))
        x = make_ragged(spec.values, spec.offsets, backend)
        got = call(op, x, levels=levels)
        R.assert_result(got, R.reduce(op, spec.values, spec.offsets, levels), err_msg=repr(spec))

    check()


# --------------------------------------------------------------------------
# dtype table, empty segments, fill_value, dtype=
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", hst.REAL_DTYPES + hst.COMPLEX_DTYPES)
@pytest.mark.parametrize("op", R.ALL_REDUCTIONS)
def test_result_dtype_and_empty_segment(op, dtype):
    """The API.md table: result dtype and the value of an empty segment, for every dtype
    API.md promises for the op (complex ordering ops: TypeError)."""
    if dtype not in op_dtypes(op) and op not in R.ORDERING_OPS:
        pytest.skip(f"API.md promises nothing for {op} on {dtype}")
    # 1-D values or rows of 3, this run's kernel shape for the pair (strategies.kernel_ndim)
    inner = hst.kernel_inner_shapes(op, dtype)[0]
    values = hst.make_values(3, dtype, (6, *inner), hst.value_kinds(dtype)[0])
    x = ragged_1d(values, [2, 0, 3, 1])
    if dtype.startswith("complex") and op in R.ORDERING_OPS:
        with pytest.raises(TypeError):
            call(op, x)
        return
    got = call(op, x)
    assert got.dtype == R.result_dtype(op, dtype)
    assert got.shape == (4, *inner)
    empty = R.cast(R.empty_value(op, dtype), got.dtype)
    np.testing.assert_array_equal(got[1], empty)
    R.assert_result(got, R.reduce(op, values, [hst.offsets_from_lengths([2, 0, 3, 1])]))


# Literal spot checks of the table (also pin the oracle's own table).
DTYPE_SPOT_CHECKS = [
    ("sum", "bool", "int64"),
    ("sum", "int8", "int64"),
    ("sum", "int32", "int64"),
    ("sum", "uint16", "uint64"),
    ("sum", "float16", "float16"),
    ("sum", "float32", "float32"),
    ("sum", "complex64", "complex64"),
    ("prod", "int8", "int64"),
    ("prod", "uint16", "uint64"),
    ("max", "int8", "int8"),
    ("min", "bool", "bool"),
    ("max", "float16", "float16"),
    ("mean", "int32", "float64"),
    ("mean", "bool", "float64"),
    ("mean", "float32", "float32"),
    ("var", "float16", "float16"),
    ("var", "complex64", "float32"),
    ("std", "complex128", "float64"),
    ("argmax", "float32", "int64"),
    ("nanargmin", "int8", "int64"),
    ("count", "float32", "int64"),
    ("count_nonzero", "bool", "int64"),
    ("any", "float64", "bool"),
    ("all", "int8", "bool"),
    ("logsumexp", "int32", "float64"),
    ("logsumexp", "float32", "float32"),
    ("first", "uint16", "uint16"),
    ("last", "float16", "float16"),
    ("nansum", "int32", "int64"),
    ("nanmean", "float32", "float32"),
]


@pytest.mark.parametrize(("op", "dtype", "expected"), DTYPE_SPOT_CHECKS)
def test_result_dtype_spot_checks(op, dtype, expected):
    assert R.result_dtype(op, dtype) == np.dtype(expected)
    inner = hst.kernel_inner_shapes(op, dtype)[0]  # this run's kernel shape for the pair
    x = ragged_1d(np.ones((3, *inner), dtype=dtype), [1, 2])
    assert call(op, x).dtype == np.dtype(expected)


def test_empty_segment_values_literal():
    """Empty segments, hand-written from the table (no warnings: filterwarnings=error)."""
    ef = np.array([], dtype=np.float32)
    ei = np.array([], dtype=np.int8)
    eb = np.array([], dtype=np.bool_)

    def r(op, values):
        return reduce1(op, values, [0, 0])

    np.testing.assert_array_equal(r("sum", ef), [0, 0])
    np.testing.assert_array_equal(r("prod", ef), [1, 1])
    np.testing.assert_array_equal(r("max", ef), [-np.inf, -np.inf])
    np.testing.assert_array_equal(r("min", ef), [np.inf, np.inf])
    np.testing.assert_array_equal(r("max", ei), [-128, -128])
    np.testing.assert_array_equal(r("min", ei), [127, 127])
    np.testing.assert_array_equal(r("max", eb), [False, False])
    np.testing.assert_array_equal(r("min", eb), [True, True])
    assert np.isnan(r("mean", ef)).all()
    assert np.isnan(r("var", ef)).all()
    assert np.isnan(r("std", ei)).all()
    np.testing.assert_array_equal(r("argmax", ef), [-1, -1])
    np.testing.assert_array_equal(r("argmin", ei), [-1, -1])
    np.testing.assert_array_equal(r("count", ef), [0, 0])
    np.testing.assert_array_equal(r("count_nonzero", ef), [0, 0])
    np.testing.assert_array_equal(r("any", ef), [False, False])
    np.testing.assert_array_equal(r("all", ef), [True, True])
    np.testing.assert_array_equal(r("logsumexp", ef), [-np.inf, -np.inf])
    assert np.isnan(r("first", ef)).all()
    np.testing.assert_array_equal(r("last", ei), [0, 0])
    assert r("last", ei).dtype == np.int8

def test_no_segments():
    """offsets ``[0]`` over empty values: zero rows, dtype per the table."""
    for dtype in ("float32", "int8", "bool"):
        x = hr.RaggedArray(np.empty((0, 3), dtype=dtype), np.array([0]))
        for op in ("sum", "max", "mean", "argmax", "count", "any", "first"):
            got = call(op, x)
            assert got.shape == (0, 3)
            assert got.dtype == R.result_dtype(op, dtype)


def test_zero_width_inner():
    """``values`` of shape ``(n, 0)``: results ``(nsegments, 0)``."""
    x = hr.RaggedArray(np.empty((5, 0)), np.array([0, 2, 2, 5]))
    for op in ("sum", "max", "mean", "argmax", "count", "logsumexp"):
        got = call(op, x)
        assert got.shape == (3, 0)
        assert got.dtype == R.result_dtype(op, np.float64)


def test_fill_value_examples(backend):
    """fill_value replaces empty results; all-NaN counts as empty for nan*; length <= ddof
    counts as empty for var/std."""
    v = np.array([1.0, 2.0, 3.0])

    def r(op, values, lengths, **kw):
        return reduce1(op, values, lengths, backend, **kw)

    np.testing.assert_array_equal(r("sum", v, [2, 0, 1], fill_value=-1.0), [3.0, -1.0, 3.0])
    np.testing.assert_array_equal(r("mean", v, [2, 0, 1], fill_value=0.0), [1.5, 0.0, 3.0])
    np.testing.assert_array_equal(r("max", v, [2, 0, 1], fill_value=0.0), [2.0, 0.0, 3.0])
    np.testing.assert_array_equal(r("argmax", v, [2, 0, 1], fill_value=-5), [1, -5, 0])
    np.testing.assert_array_equal(r("var", v, [2, 0, 1], ddof=1, fill_value=-1.0),
                                  [0.5, -1.0, -1.0])
    np.testing.assert_array_equal(r("std", v, [2, 0, 1], ddof=0, fill_value=-1.0),
                                  [0.5, -1.0, 0.0])
    y = np.array([np.nan, np.nan, 4.0])
    np.testing.assert_array_equal(r("nanmax", y, [2, 1]), [-np.inf, 4.0])
    np.testing.assert_array_equal(r("nanmax", y, [2, 1], fill_value=9.0), [9.0, 4.0])
    np.testing.assert_array_equal(r("nanargmin", y, [2, 1], fill_value=-2), [-2, 0])
    np.testing.assert_array_equal(r("nansum", y, [2, 1], fill_value=-3.0), [-3.0, 4.0])
    np.testing.assert_array_equal(r("nanmean", y, [2, 1], fill_value=0.0), [0.0, 4.0])
    np.testing.assert_array_equal(r("nanvar", y, [2, 1], fill_value=-1.0), [-1.0, 0.0])
    # a NaN segment is not empty for the plain op
    assert np.isnan(r("max", y, [2, 1], fill_value=9.0)[0])


DTYPE_ARG_CASES = [
    ("sum", np.array([100, 100, 27, 5], np.int8), "int8"),  # wraps like NumPy
    ("sum", np.array([2**31 - 1, 2**31 - 1, 7, 1], np.int32), "float64"),
    ("sum", np.array([True, True, False, True]), "int32"),
    ("sum", np.array([0.1, 0.2, 1e10, 3.0]), "float32"),
    ("prod", np.array([300, 300, 7, 2], np.uint16), "uint16"),
    ("mean", np.array([0.1, 0.2, 0.3, 0.7], np.float32), "float64"),
    ("mean", np.array([1, 2, 3, 4], np.int64), "float32"),
    ("nansum", np.array([np.nan, 0.25, 3.0, 0.5], np.float32), "float64"),
    # into bool NumPy casts each element first: or / and, not the wrapped sum's or
    # product's truth ([1, -1, 0] sums to 0, [2, -128, 5] multiplies to 0 mod 256)
    ("sum", np.array([1, -1, 0, 3], np.int8), "bool"),
    ("prod", np.array([2, -128, 5, 0], np.int8), "bool"),
    # complex into bool: non-zero in either part (review S3: the real part was kept)
    ("sum", np.array([1j, 0j, 0j, 0.5j]), "bool"),
    ("prod", np.array([1j, 2, 3 + 0j, 0.5j]), "bool"),
]


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (np.array([100, 100, 100, -7, 5, -128, -128], np.int8), "int8"),  # the sum wraps
        # cast (in range: a GPU's float-to-int16 conversion saturates where the CPU's
        # wraps, review S3), then the sum wraps: 20000 + 20000 - 7
        (np.array([20000.7, 20000.2, -7.5, -7.5, 5.5, 1.0, 2.0]), "int16"),
        (np.array([3, 0, 0, 0, 5, 2, 0], np.uint8), "bool"),
        (np.array([0.5, 0, 0, 0, 0.25, 0, 0]), "bool"),  # not truncated first
        (np.array([0.5j, 0, 0, 0, 0, 0, 0]), "bool"),  # either part counts
    ],
)
def test_mean_into_integer_dtype_against_the_oracle(values, dtype, backend):
    """``mean`` into an integer or bool ``dtype=`` as NumPy: elements cast, summed in the
    dtype (wrapping), divided and truncated; the oracle's integer path, beside NumPy."""
    lengths = [3, 0, 1, 3]
    x = ragged_1d(values, lengths, backend)
    got = host(hr.mean(x, dtype=dtype, fill_value=0))
    ref = R.reduce("mean", values, [hst.offsets_from_lengths(lengths)], dtype=dtype,
                   fill_value=0)
    R.assert_result(got, ref)
    cuts = np.cumsum([0, *lengths])
    with np.errstate(all="ignore"):
        want = [np.mean(values[a:b], dtype=dtype) if b > a else 0
                for a, b in itertools.pairwise(cuts)]
    np.testing.assert_array_equal(got, np.array(want, dtype=dtype))


@pytest.mark.parametrize(("op", "values", "dtype"), DTYPE_ARG_CASES)
def test_dtype_argument(op, values, dtype, backend):
    """``dtype=`` overrides the accumulator / result dtype as in NumPy."""
    x = ragged_1d(values, [3, 0, 1], backend)
    got = call(op, x, dtype=dtype)
    ref = R.reduce(op, values, [hst.offsets_from_lengths([3, 0, 1])], dtype=dtype)
    R.assert_result(got, ref)
    assert host(got).dtype == np.dtype(dtype)


def test_nan_for_empty_ops_into_integer_dtype(backend):
    """mean/var/std with an integer dtype=: accumulated as NumPy's mean (elements cast,
    summed in the dtype, divided, truncated); an empty segment (NaN) is a ValueError
    naming it unless fill_value= is given; nan* of float values need a float dtype."""
    values = np.array([1.7, 2.6, 5.0, -1.0, -2.0, 1.0, 3.0])
    lengths = [2, 1, 2, 0, 2]
    x = ragged_1d(values, lengths, backend)
    cuts = np.cumsum([0, *lengths])
    segs = np.split(values, cuts[1:-1])
    got = host(hr.mean(x, dtype=np.int64, fill_value=-9))
    want = [np.mean(s, dtype=np.int64) if len(s) else -9 for s in segs]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)  # [1, 5, -1, -9, 2]: truncated
    with pytest.raises(ValueError, match=r"mean\(\) gives NaN for segment 3 .*dtype=int64"):
        hr.mean(x, dtype=np.int64)
    with pytest.raises(ValueError, match=r"fill_value=0\.5 cannot be represented as int16"):
        hr.mean(x, dtype=np.int16, fill_value=0.5)
    got = host(hr.std(x, dtype=np.int32, fill_value=0))
    want = [np.std(s.astype(np.float64)).astype(np.int32) if len(s) else 0 for s in segs]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="segment 3"):
        hr.var(x, dtype=np.int64)
    with pytest.raises(TypeError, match=r"nanmean.*needs a float or complex dtype="):
        hr.nanmean(x, dtype=np.int64)
    xi = ragged_1d(np.array([1, 2, 4], np.int64), [3], backend)
    np.testing.assert_array_equal(host(hr.nanmean(xi, dtype=np.int32)), [2])
    # the sum wraps in the dtype before the division, as NumPy's (an audit: the CPU's 1-D
    # path summed [100] * 3 into int8 in int64, 100 where NumPy gives 44 // 3 = 14)
    # (1-D values and rows of one column; on the CPU one of them per dtype, by the run's
    # seed: each is one more compile of 2-3 s, and the simulator compiles nothing)
    for vals, dt in (([100, 100, 100], np.int8), ([30000, 30000], np.int16),
                     ([2**31 - 1] * 2, np.int32), ([200, 200], np.uint8)):
        v = np.array(vals, np.int64)
        layouts = (v, v[:, None])
        if backend == "cpu":
            pick = hst.seeded_choice(f"wrapping mean:{np.dtype(dt).name}", 2)
            layouts = layouts[pick:pick + 1]
        for op in ("mean", "nanmean"):
            for vv in layouts:
                got = host(getattr(hr, op)(ragged_1d(vv, [len(v)], backend), dtype=dt))
                assert got.ravel().tolist() == [np.mean(v, dtype=dt)], (op, dt, vv.ndim)
    # no segments (a Dask meta), and rows of zero size: nothing to check
    none = host(hr.mean(ragged_1d(np.zeros(0), [], backend), dtype=np.int64))
    assert none.shape == (0,)
    assert none.dtype == np.int64
    flat0 = make_ragged(np.zeros((2, 0)), [hst.offsets_from_lengths([1, 0, 1])], backend)
    assert host(hr.mean(flat0, dtype=np.int8)).shape == (3, 0)
    # a NaN or inf element: mean accumulates in the integer dtype, so the cast
    # element gave a finite garbage result; a ValueError naming its segment
    for bad, dt in ((np.nan, np.int64), (np.inf, np.int32), (-np.inf, np.bool_)):
        vb = values.copy()
        vb[4] = bad  # segment 2
        with pytest.raises(ValueError, match=rf"mean\(\) of segment 2 meets the value {bad}, "):
            hr.mean(ragged_1d(vb, lengths, backend), dtype=dt, fill_value=0)


def test_float_into_integer_dtype_names_nan_and_inf(backend):
    """From an audit: sum, prod, nansum and cumsum of float values into an integer
    dtype= cast each element first (as NumPy), so a NaN or inf became an arbitrary
    integer (-9223372036854775807 here) with no sign of it; mean raised. Now each names
    the segment (nansum: inf only, NaN is skipped); finite values still cast as NumPy."""
    values = np.array([1.5, -2.5, 3.0, 7.9, 4.0, 2.0])
    lengths = [2, 0, 1, 3]
    segs = np.split(values, np.cumsum(lengths)[:-1])
    for op in ("sum", "prod", "nansum"):
        got = host(getattr(hr, op)(ragged_1d(values, lengths, backend), dtype=np.int64))
        np.testing.assert_array_equal(got, [getattr(np, op)(s, dtype=np.int64) for s in segs])
    got = hr.cumsum(ragged_1d(values, lengths, backend), dtype=np.int32)
    assert host(got.values).tolist() == np.concatenate(
        [np.cumsum(s, dtype=np.int32) for s in segs]).tolist()
    for bad in (np.nan, np.inf, -np.inf):
        vb = values.copy()
        vb[3] = bad  # segment 3 (segment 1 is empty)
        x = ragged_1d(vb, lengths, backend)
        for op, dt in (("sum", np.int64), ("prod", np.int32), ("cumsum", np.int16)):
            with pytest.raises(ValueError, match=rf"{op}\(\) of segment 3 meets the value {bad}, "):
                getattr(hr, op)(x, dtype=dt)
        if np.isnan(bad):
            assert host(hr.nansum(x, dtype=np.int64)).tolist() == [-1, 0, 3, 6]
        else:
            with pytest.raises(ValueError,
                               match=rf"nansum\(\) of segment 3 meets the value {bad}, "):
                hr.nansum(x, dtype=np.int64)
        # two levels: the segment named is the level-2 (here top-level) one
        y = hr.nest(to_backend(vb, backend), to_backend(np.array([0, 2, 2, 3, 6]), backend),
                    to_backend(np.array([0, 2, 4]), backend))
        with pytest.raises(ValueError, match=r"sum\(\) of segment 1 meets"):
            hr.sum(y, levels=2, dtype=np.int64)
        # a float or bool dtype is not checked
        assert host(hr.sum(x, dtype=np.bool_)).dtype == np.bool_
    # finite values beyond the dtype's range are cast to garbage as well (review R2);
    # truncation decides, as the cast: 127.9 and -128.9 fit int8
    x = ragged_1d(np.array([127.9, -128.9, 128.0, 1e300]), [2, 1, 1], backend)
    assert host(hr.sum(x[:1], dtype=np.int8)).tolist() == [-1]
    with pytest.raises(ValueError, match=r"sum\(\) of segment 1 meets the value 128.0, .*int8"):
        hr.sum(x, dtype=np.int8)
    with pytest.raises(ValueError, match=r"sum\(\) of segment 2 meets the value 1e\+300, "):
        hr.sum(x, dtype=np.int64)
    with pytest.raises(ValueError, match=r"cumsum\(\) of segment 0 meets the value -128.9, "):
        hr.cumsum(x, dtype=np.uint16)
    # float16 values are compared in float64: float16's range made the int64 bounds
    # +-inf, so -inf passed, and valid values warned of an overflow (review R3)
    h = ragged_1d(np.array([3.0, 65504.0, -np.inf], np.float16), [2, 1], backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert host(hr.sum(h[:1], dtype=np.uint64)).tolist() == [65507]
        with pytest.raises(ValueError, match=r"sum\(\) of segment 1 meets the value -inf, "):
            hr.sum(h, dtype=np.int64)
    # complex nansum skips a value with NaN in either part, inf+nanj too (review R2)
    z = ragged_1d(np.array([complex(np.inf, np.nan), 2 + 0j]), [2], backend)
    with pytest.warns(np.exceptions.ComplexWarning):
        assert host(hr.nansum(z, dtype=np.int64)).tolist() == [2]


def test_float16_results_are_rounded_once(backend):
    """float16 results (of float16 values, or dtype="float16") and their fill_value are
    rounded once, from float64, as NumPy's cast and the CUDA kernels: the CPU wrote
    float32 and cast that, rounding twice (an audit: a sum of 65519.99... became inf
    where NumPy and CUDA give 65504; 1 + 2**-11 + 2**-24 became 1.0, not 1.001)."""
    v = np.array([65504.0] + [2.0**-k for k in range(-3, 11)], np.float16)
    w = np.array([1.0, 2.0**-11, 2.0**-24], np.float16)
    for vals, want in ((v, 65504.0), (w, 1.0 + 2.0**-10)):
        assert np.float16(np.sum(vals, dtype=np.float64)) == want
        x = ragged_1d(vals, [len(vals), 0], backend)
        for op in ("sum", "nansum"):
            got = host(getattr(hr, op)(x))
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got, [want, 0.0], err_msg=op)
        x64 = ragged_1d(vals.astype(np.float64), [len(vals), 0], backend)
        got = host(hr.sum(x64, dtype="float16"))
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, [want, 0.0])
    # 65519.99... is a float16 65504 (through float32: 65520, then inf)
    f = 65519.999999999
    got = host(hr.max(ragged_1d(v, [len(v), 0], backend), fill_value=f))
    np.testing.assert_array_equal(got, [65504.0, 65504.0])


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
def test_reducer_complex_into_real_dtype(dtype, backend):
    """A Reducer's complex results into a real or integer dtype= keep the real part, with
    a ComplexWarning naming the caller, as the built-in ops (an audit: the CPU raised a
    TypeError blaming the Reducer's functions, the simulator kept the real part)."""
    values = np.array([1 + 2j, 3 + 4j, 5 - 1j])
    x = ragged_1d(values, [2, 0, 1], backend)
    plain = hr.Reducer(identity=0.0, combine=lambda a, b: a + b)
    msq = hr.Reducer(identity=0.0, combine=lambda a, b: a + b, map=lambda v: v * v,
                     finalize=lambda a, n: a / n if n > 0 else a)
    for r, want in ((plain, [4, 0, 5]), (msq, [-5, 0, 24])):
        with pytest.warns(np.exceptions.ComplexWarning, match="real part") as rec:
            got = host(hr.reduce(x, r, dtype=dtype))
        assert rec[0].filename == __file__
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, want)


def test_reducer_complex_state_of_real_values_into_real_dtype(backend):
    """The same rule where the values are real and the Reducer's map makes its state
    complex: dtype= real keeps the real part (with the warning), bool is non-zero (an
    audit: the CPU raised a TypeError blaming the Reducer's functions, the simulator kept
    the real part)."""
    x = ragged_1d(np.arange(6.0), [2, 0, 4], backend)
    r = hr.Reducer(identity=0j, combine=lambda a, b: a + b, map=lambda v: v * 1j + 1.0)
    whole = host(hr.reduce(x, r))
    np.testing.assert_array_equal(whole, [2 + 1j, 0j, 4 + 14j])
    for dtype, want in (("float32", [2, 0, 4]), ("int64", [2, 0, 4])):
        with pytest.warns(np.exceptions.ComplexWarning, match="real part"):
            got = host(hr.reduce(x, r, dtype=dtype))
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        got = host(hr.reduce(x, r, dtype=bool))
    np.testing.assert_array_equal(got, [True, False, True])


def test_reducer_complex_into_bool_dtype(backend):
    """A Reducer's complex results into dtype=bool: True where either part is non-zero,
    without a warning, as the built-in ops (one rule, _ops.complex_cast; the Reducer had
    kept the real part: 1j gave False, with a ComplexWarning)."""
    x = ragged_1d(np.array([1j, 0j, 0j, 2 + 0j]), [2, 1, 1], backend)
    plain = hr.Reducer(identity=0.0, combine=lambda a, b: a + b)
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        got = host(hr.reduce(x, plain, dtype=bool))
        builtin = host(hr.sum(x, dtype=bool))
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, [True, False, True])
    np.testing.assert_array_equal(builtin, got)


# (the cast comes before the op, one path for all: nansum is sum's and float32 float64's
# there, and each case was one more compiled kernel)
@pytest.mark.parametrize("op", ["sum", "prod", "mean", "nanmean"])
@pytest.mark.parametrize("dtype", ["float64", "int64"])
def test_complex_into_real_dtype(op, dtype, backend):
    """As NumPy: complex values into a real or integer dtype= keep the real part and
    warn ComplexWarning (nanmean into an integer dtype: TypeError, as NumPy)."""
    values = np.array([1 + 1j, 2.5 - 3j, 3 - 2j, 7j], np.complex64)
    x = ragged_1d(values, [2, 2], backend)
    if op == "nanmean" and dtype == "int64":
        with pytest.raises(TypeError, match="dtype="):
            hr.nanmean(x, dtype=dtype)
        return
    with pytest.warns(np.exceptions.ComplexWarning, match="imaginary part") as rec:
        got = host(call(op, x, dtype=dtype))
    assert rec[0].filename == __file__  # points at the caller, not into hrarray
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        want = [getattr(np, op)(values[:2], dtype=dtype), getattr(np, op)(values[2:], dtype=dtype)]
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_complex_var_into_real_dtype_is_the_variance():
    """docs/semantics.md: var/std of complex values into a real dtype= are the variance
    itself (the result without dtype=, cast), without a warning; NumPy takes the spread
    around the mean's real part there (4.56 for these values, whose variance is 3.56)."""
    x = ragged_1d(np.array([1 + 2j, 3 - 1j, 2j, 5 + 0j]), [3, 0, 1])
    for op in ("var", "std", "nanvar", "nanstd"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plain = call(op, x)
            for dt in ("float64", "float32"):
                got = call(op, x, dtype=dt)
                assert got.dtype == np.dtype(dt)
                np.testing.assert_allclose(got, plain.astype(dt), rtol=1e-6)
    np.testing.assert_allclose(hr.var(x)[0], 32 / 9)


def test_dtype_argument_matches_numpy():
    values = np.array([100, 100, 27, 5], np.int8)
    got = hr.sum(ragged_1d(values, [3, 1]), dtype="int8")
    np.testing.assert_array_equal(got, [values[:3].sum(dtype=np.int8), np.int8(5)])


# --------------------------------------------------------------------------
# integers: promotion and modular wraparound
# --------------------------------------------------------------------------


def test_integer_sums_promote_and_wrap(backend):
    def r(op, values, lengths):
        return reduce1(op, values, lengths, backend)

    assert r("sum", np.array([2**31 - 1, 1], np.int32), [2]).tolist() == [2**31]
    # modular, as NumPy
    assert r("sum", np.array([2**62, 2**62], np.int64), [2]).tolist() == [-(2**63)]
    got = r("sum", np.array([65535, 1], np.uint16), [2])
    assert got.dtype == np.uint64
    assert got.tolist() == [65536]
    assert r("sum", np.array([True, True, True]), [3]).tolist() == [3]
    assert r("mean", np.array([127, 127], np.int8), [2]).tolist() == [127.0]
    assert r("prod", np.array([127, 127], np.int8), [2]).tolist() == [127 * 127]


def test_integer_mean_does_not_wrap():
    """A NumPy user expects ``mean`` of int64 not to wrap (NumPy accumulates it in float64)."""
    values = np.array([2**62, 2**62, 2**62, -(2**62)], np.int64)
    got = hr.mean(ragged_1d(values, [3, 1]))
    np.testing.assert_allclose(got, [2.0**62, -(2.0**62)], rtol=1e-15)


# --------------------------------------------------------------------------
# NaN and ±inf
# --------------------------------------------------------------------------

NAN = math.nan
INF = math.inf
SPECIAL_VALUES = [1, NAN, 3, NAN, 5, 4, 2, 7, -INF, -INF, INF, -INF, INF, 1, NAN, NAN]
SPECIAL_LENGTHS = [3, 3, 2, 2, 2, 2, 0, 2]
# segments: [1 nan 3] [nan 5 4] [2 7] [-inf -inf] [inf -inf] [inf 1] [] [nan nan]
LSE_27 = 7 + math.log1p(math.exp(-5))
SPECIAL_EXPECTED = {
    "sum": [NAN, NAN, 9, -INF, NAN, INF, 0, NAN],
    "max": [NAN, NAN, 7, -INF, INF, INF, -INF, NAN],
    "min": [NAN, NAN, 2, -INF, -INF, 1, INF, NAN],
    "argmax": [1, 0, 1, 0, 0, 0, -1, 0],
    "argmin": [1, 0, 0, 0, 1, 1, -1, 0],
    "mean": [NAN, NAN, 4.5, -INF, NAN, INF, NAN, NAN],
    "logsumexp": [NAN, NAN, LSE_27, -INF, INF, INF, -INF, NAN],
    "count": [3, 3, 2, 2, 2, 2, 0, 2],
    "count_nonzero": [3, 3, 2, 2, 2, 2, 0, 2],
    "any": [True] * 6 + [False, True],
    "all": [True] * 8,
    "first": [1, NAN, 2, -INF, INF, INF, NAN, NAN],
    "last": [3, 4, 7, -INF, -INF, 1, NAN, NAN],
    "nansum": [4, 9, 9, -INF, NAN, INF, 0, 0],
    "nanmax": [3, 5, 7, -INF, INF, INF, -INF, -INF],
    "nanmin": [1, 4, 2, -INF, -INF, 1, INF, INF],
    "nanargmax": [2, 1, 1, 0, 0, 0, -1, -1],
    "nanargmin": [0, 2, 0, 0, 1, 1, -1, -1],
    "nanmean": [2, 4.5, 4.5, -INF, NAN, INF, NAN, NAN],
    "var": [NAN, NAN, 6.25, NAN, NAN, NAN, NAN, NAN],
    "nanvar": [1, 0.25, 6.25, NAN, NAN, NAN, NAN, NAN],
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", sorted(SPECIAL_EXPECTED))
def test_nan_inf_hand_examples(op, dtype, backend):
    """NaN propagates as in NumPy, argmax/argmin return the first NaN's index, nan* skip
    NaN and treat an all-NaN segment as empty; ±inf follow IEEE (logsumexp of a segment
    holding +inf is +inf, as scipy.special.logsumexp)."""
    values = np.array(SPECIAL_VALUES, dtype=dtype)
    if backend == "cpu":
        values, _ = hst.as_kernel_layout(op, values)
    x = ragged_1d(values, SPECIAL_LENGTHS, backend)
    got = host(call(op, x))
    expected = np.array(SPECIAL_EXPECTED[op])
    for col in got.reshape(len(got), -1).T:
        if got.dtype.kind == "f":
            np.testing.assert_allclose(col, expected, rtol=1e-6, equal_nan=True)
        else:
            np.testing.assert_array_equal(col, expected.astype(got.dtype))
    offsets = hst.offsets_from_lengths(SPECIAL_LENGTHS)
    R.assert_result(got, R.reduce(op, values, [offsets]))


def test_nan_order_independent(backend):
    """NaN anywhere (first, middle, last) propagates: no ``if v > acc`` that drops it."""
    for pos in range(4):
        values = np.arange(4, dtype=np.float64)
        values[pos] = np.nan
        x = ragged_1d(values, [4], backend)
        for op in ("max", "min", "sum", "mean", "logsumexp", "var"):
            assert np.isnan(host(call(op, x))[0]), (op, pos)
        assert host(hr.argmax(x)).tolist() == [pos]
        assert host(hr.argmin(x)).tolist() == [pos]


def _extreme_specials(dtype, inner, seed):
    """Segments around the CPU block size holding, block by block, only finite
    values, +inf, -inf, both, NaN of either sign, ties and signed zeros."""
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 127, 128, 129, 300, 0, 257, 5, 130, 128, 129, 3, 256]
    n = sum(lengths)
    v = rng.integers(-4, 5, size=(n, *inner)).astype(dtype)  # many ties
    starts = np.cumsum([0] + lengths[:-1])
    flat = v.reshape(n, -1)
    kinds = ["inf", "-inf", "both", "nan", "-nan", "zeros", "first_nan", "last_nan",
             "all_nan", "nan_head"]
    for k, (s, L) in enumerate(zip(starts, lengths, strict=True)):
        if L == 0:
            continue
        kind = kinds[k % len(kinds)]
        rows = rng.integers(s, s + L, size=3)
        col = rng.integers(0, flat.shape[1], size=3)
        if kind == "inf":
            flat[rows, col] = np.inf
        elif kind == "-inf":
            flat[s:s + L] = -np.inf
            flat[rows, col] = -1
        elif kind == "both":
            flat[rows[:2], col[:2]] = [np.inf, -np.inf]
        elif kind == "nan":
            flat[rows, col] = np.nan
        elif kind == "-nan":
            flat[rows, col] = -np.abs(np.array(np.nan, dtype))  # sign bit set
        elif kind == "zeros":
            flat[s:s + L] = 0.0
            flat[rows, col] = -0.0
        elif kind == "first_nan":
            flat[s] = np.nan
        elif kind == "all_nan":
            flat[s:s + L] = np.nan
        elif kind == "nan_head":  # the nan* ops' state holds nothing, then a value
            flat[s:s + (L + 1) // 2] = np.nan
        else:
            flat[s + L - 1] = np.nan
    assert np.signbit(-np.abs(np.array(np.nan, dtype)))
    return v, hst.offsets_from_lengths(lengths)


@pytest.mark.parametrize("inner", [(), (3,), (2, 5)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_fast_paths_specials(dtype, inner, backend):
    """The CPU max/min/argmax/argmin take vectorised paths (order keys per block in
    1-D, selects across columns in 2-D) and fall back to the declaration on NaN:
    every mix of specials gives the reference result."""
    sim = backend == "cuda" and not REAL_GPU
    for seed in range(1 if sim else 3):
        v, offsets = _extreme_specials(dtype, inner, seed)
        if sim:  # each simulated thread is a Python thread: the first segments only
            rows = 140 if len(inner) < 2 else 60  # (2, 5): 10 columns a row
            v, offsets = v[:rows], np.append(offsets[offsets < rows], rows)  # last one cut
        x = make_ragged(v, [offsets], backend)
        for op in ("max", "min", "argmax", "argmin", "nanmax", "nanmin", "nanargmax",
                   "nanargmin"):
            R.assert_result(call(op, x), R.reduce(op, v, [offsets]), err_msg=f"{op} {seed}")


# The strided kernel form (chunks_1d_s) is one more compile per op and dtype (2-3 s): the
# across-blocks tests run it on one float dtype per run, by the run's seed.
_STRIDED_FLOAT = ("float32", "float64")[hst.TEST_SEED % 2]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_argextreme_across_blocks(dtype, backend):
    """Long segments, which the CPU argmax/argmin read block by block (unit-stride
    blocks of 16 or more elements in one vector pass, others as order keys and then an
    index search where the block's extreme beats the earlier blocks' strictly): a
    segment of nothing but the dtype's lowest (highest) value, the extreme tied in two
    blocks, -0.0 before 0.0, a NaN of either sign after the extreme, a NaN before a
    larger value; contiguous and (one float dtype per run) strided values."""
    sim = backend == "cuda" and not REAL_GPU
    # the CPU reads blocks of 1 KiB (256 float32, 128 float64); a last block
    # of 16 or more elements takes the one-pass search, a shorter one not;
    # a float32 segment of 200 is one block (searched in the chunk loop)
    for L in (140,) if sim else (200, 300, 260, 1030):
        _argextreme_across_blocks(dtype, backend, L)


def _argextreme_across_blocks(dtype, backend, L):
    cases = []
    for op, worst in (("argmax", -np.inf), ("argmin", np.inf)):
        sign = 1.0 if op == "argmax" else -1.0
        segs = [np.full(L, worst)]
        s = -sign * np.arange(L, dtype=float)
        s[5] = s[L - 3] = sign * 7.0  # tie: the first wins
        segs.append(s)
        s = np.full(L, -sign)
        s[3], s[20], s[L - 2] = -0.0, 0.0, 0.0  # equal extremes: the first wins
        segs.append(s)
        for nan in (np.nan, -np.nan):
            s = -sign * np.arange(L, dtype=float)
            s[2], s[L - 4] = sign * 9.0, nan  # the first NaN wins
            segs.append(s)
        s = -sign * np.arange(L, dtype=float)
        s[1], s[L - 1] = np.nan, sign * 9.0
        segs.append(s)
        cases.append((op, segs))
    for op, segs in cases:
        v = np.concatenate(segs).astype(dtype)
        offsets = hst.offsets_from_lengths([len(s) for s in segs])
        layouts = [v]
        if backend == "cpu" and dtype == _STRIDED_FLOAT:
            layouts.append(np.repeat(v, 2)[::2])  # strided
        for vv in layouts:
            got = host(call(op, make_ragged(vv, [offsets], backend)))
            R.assert_result(got, R.reduce(op, v, [offsets]), err_msg=op)
            assert got.tolist() == [0, 5, 3, L - 4, L - 4, 1], (op, L, vv.strides)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_extremes_across_blocks(dtype, backend):
    """nanmax/nanmin/nanargmax/nanargmin hold "no value yet" as a NaN state (the CPU
    runs max/argmax's block paths with the NaN rule reversed): NaN-only blocks (1 KiB
    for argmax, 128 elements for max) before NaN-free ones, a NaN before the
    extreme, an all-NaN segment (empty: -1, -inf / +inf, or ``fill_value``), a
    segment of the dtype's worst value, -0.0 before 0.0; contiguous and (one float dtype
    per run) strided."""
    sim = backend == "cuda" and not REAL_GPU
    for L in (140,) if sim else (200, 300, 260, 1030):
        h = L // 2 if L < 260 else 256 if L < 1030 else 512  # whole blocks of NaN
        for op in ("nanargmax", "nanargmin"):
            sign = 1.0 if op == "nanargmax" else -1.0
            segs = [np.full(L, -sign * np.inf), np.full(L, np.nan)]
            s = -sign * np.arange(L, dtype=float)
            s[:h] = np.nan
            s[L - 5] = sign * 9.0
            segs.append(s)
            s = np.full(L, -sign)
            s[3], s[20], s[L - 2] = -0.0, 0.0, 0.0  # equal extremes: the first wins
            s[1] = -np.nan
            segs.append(s)
            s = -sign * np.arange(L, dtype=float)
            s[1], s[L - 1], s[L - 3] = np.nan, sign * 9.0, -np.nan
            segs.append(s)
            v = np.concatenate(segs).astype(dtype)
            offsets = hst.offsets_from_lengths([len(s) for s in segs])
            layouts = [v]
            if backend == "cpu" and dtype == _STRIDED_FLOAT:
                layouts.append(np.repeat(v, 2)[::2])  # strided
            for vv in layouts:
                x = make_ragged(vv, [offsets], backend)
                got = host(call(op, x))
                assert got.tolist() == [0, -1, L - 5, 3, L - 1], (op, L, vv.strides)
                ext = op.replace("arg", "")
                for o in (op, ext):
                    R.assert_result(call(o, x), R.reduce(o, v, [offsets]), err_msg=o)
                    R.assert_result(call(o, x, fill_value=2),
                                    R.reduce(o, v, [offsets], fill_value=2), err_msg=o)


def test_argmax_levels_nan_index(backend):
    """With levels=2 the argmax index is the position in the flattened leaf range."""
    values = np.array([9.0, 1.0, 2.0, 3.0, np.nan, 8.0, 5.0, 5.0])
    # level 1: [9] | [1 2] | [3 nan] | [8] | [5 5] ; level 2: [s0] | [s1 s2] | [s3 s4]
    x = make_ragged(values, [np.array([0, 1, 3, 5, 6, 8]), np.array([0, 1, 3, 5])], backend)
    assert host(hr.argmax(x, levels=2)).tolist() == [0, 3, 0]
    assert host(hr.nanargmax(x, levels=2)).tolist() == [0, 2, 0]
    assert host(hr.argmin(x, levels=2)).tolist() == [0, 3, 1]
    assert host(hr.nanargmin(x, levels=2)).tolist() == [0, 0, 1]


# --------------------------------------------------------------------------
# algebraic properties
# --------------------------------------------------------------------------

PROPERTY_OPS = (
    "sum",
    "max",
    "min",
    "argmax",
    "nanargmin",
    "mean",
    "var",
    "first",
    "last",
    "count",
    "any",
    "logsumexp",
)


def assert_same_reduction(op, a, b, ref, err_msg=""):
    """``a`` and ``b``: two host results of the same reduction; exact ops bitwise, float ops
    within twice the oracle's bound of each other."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype
    if ref.tol is None:
        np.testing.assert_array_equal(a, b, err_msg=err_msg)
        return
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=err_msg)
    fin = np.isfinite(a)
    np.testing.assert_array_equal(a[~fin & ~np.isnan(a)], b[~fin & ~np.isnan(a)])
    err = np.abs(a[fin].astype(np.float64) - b[fin].astype(np.float64))
    assert (err <= 2 * ref.tol[fin]).all(), err_msg


@pytest.mark.parametrize("op", PROPERTY_OPS)
def test_levels_equal_composed_offsets(op, backend):
    """``op(x, levels=k)`` equals ``op`` over the composed offsets ``o1[o2[...]]``."""

    @settings(max_examples=examples(backend, cpu=16, cuda=5))
    @given(
        spec=hst.ragged_for(
            op, dtypes=("int32", "float32", "float64"), depths=(2, 3), small=backend == "cuda",
            nan=True,
        ),
        data=st.data(),
    )
    def check(spec, data):
        levels = data.draw(st.integers(2, spec.depth))
        x = make_ragged(spec.values, spec.offsets, backend)
        values, offs = R.compact(spec.values, spec.offsets)
        composed = R.compose(offs, levels)
        flat = make_ragged(values, [composed, *offs[levels:]], backend)
        got = call(op, x, levels=levels)
        via = call(op, flat)
        ref = R.reduce(op, spec.values, spec.offsets, levels)
        assert_same_reduction(op, host(got), host(via), ref, err_msg=repr(spec))
        if levels < spec.depth:
            for o1, o2 in zip(R.parts(got)[1], R.parts(via)[1], strict=True):
                np.testing.assert_array_equal(o1, o2)

    check()


@pytest.mark.parametrize("op", PROPERTY_OPS)
def test_concatenation(op, backend):
    """A reduction of a concatenation equals the concatenated reductions."""

    @settings(max_examples=examples(backend, cpu=18, cuda=4))
    @given(data=st.data())
    def check(data):
        small = backend == "cuda"
        a = data.draw(
            hst.ragged_for(op, dtypes=("int8", "float32", "float64"), small=small, nan=True)
        )
        b = data.draw(
            hst.ragged(
                dtypes=(a.dtype.name,),
                inner_shapes=(a.inner_shape,),
                depths=(a.depth,),
                offset_dtypes=(a.offsets[0].dtype,),
                small=small,
                nan=True,
            )
        )
        xa = make_ragged(a.values, a.offsets, backend)
        xb = make_ragged(b.values, b.offsets, backend)
        xc = hr.concatenate([xa, xb])
        assert len(xc) == len(xa) + len(xb)
        levels = a.depth
        got = host(call(op, xc, levels=levels))
        parts_ = [host(call(op, xa, levels=levels)), host(call(op, xb, levels=levels))]
        ref_a = R.reduce(op, a.values, a.offsets, levels)
        ref_b = R.reduce(op, b.values, b.offsets, levels)
        tol = None if ref_a.tol is None else np.concatenate([ref_a.tol, ref_b.tol])
        ref = ref_a._replace(tol=tol)
        assert_same_reduction(op, got, np.concatenate(parts_), ref, err_msg=f"{a!r} {b!r}")

    check()


def test_mean_of_means_is_not_the_flat_mean(backend):
    """Documented property: ``mean(mean(x))`` weights inner segments equally, ``mean(x,
    levels=2)`` weights elements equally."""
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    # sentence 0 = words [1 2] [3]; sentence 1 = words [4 5 6]
    x = make_ragged(values, [np.array([0, 2, 3, 6]), np.array([0, 2, 3])], backend)
    flat = host(hr.mean(x, levels=2))
    nested = host(hr.mean(hr.mean(x)))
    np.testing.assert_array_equal(flat, [2.0, 5.0])
    np.testing.assert_array_equal(nested, [2.25, 5.0])
    assert flat[0] != nested[0]


def test_levels_result_is_ragged_and_compact(backend):
    """``levels < depth`` gives a compact ``RaggedArray`` of depth ``depth - levels``."""
    values = np.arange(12.0)
    o1 = np.array([1, 3, 3, 6, 10])  # 4 words over values 1..9
    o2 = np.array([1, 3, 4])  # 2 sentences over words 1..3 (word 0 unreachable)
    o3 = np.array([0, 1, 2])
    x = make_ragged(values, [o1, o2, o3], backend)
    got = hr.sum(x)
    assert got.depth == 2
    leaf, offs = R.parts(got)
    np.testing.assert_array_equal(leaf, [0.0, 3 + 4 + 5, 6 + 7 + 8 + 9])
    np.testing.assert_array_equal(offs[0], [0, 2, 3])
    np.testing.assert_array_equal(offs[1], [0, 1, 2])
    got2 = hr.sum(x, levels=2)
    assert got2.depth == 1
    np.testing.assert_array_equal(R.parts(got2)[0], [12.0, 30.0])
    np.testing.assert_array_equal(host(hr.sum(x, levels=3)), [12.0, 30.0])


@pytest.mark.parametrize("op", ["sum", "mean", "argmax", "max"])
def test_nested_slack_offsets(op, backend):
    """API.md: offsets not starting at 0 / not ending at ``len(values)`` are legal at every
    level (``values`` may be a ``RaggedArray``)."""

    @settings(max_examples=examples(backend, cpu=20, cuda=4))
    @given(
        spec=hst.ragged_for(
            op, dtypes=("float64", "int32"), depths=(2, 3), small=backend == "cuda",
            nested_slack=True,
        ),
        data=st.data(),
    )
    def check(spec, data):
        levels = data.draw(st.integers(1, spec.depth))
        x = make_ragged(spec.values, spec.offsets, backend)
        got = call(op, x, levels=levels)
        R.assert_result(got, R.reduce(op, spec.values, spec.offsets, levels), err_msg=repr(spec))

    check()


# --------------------------------------------------------------------------
# determinism, inputs untouched
# --------------------------------------------------------------------------


def heavy_tail_lengths(rng, total):
    lens = rng.zipf(1.6, size=total // 4).clip(0, total // 3)
    lens[rng.random(lens.size) < 0.3] = 0
    lens = lens[np.cumsum(lens) <= total]
    return np.concatenate([lens, [total - lens.sum()]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_repeated_runs_bitwise_identical_cpu(dtype):
    rng = np.random.default_rng(1)
    total = 1_500_000
    values = rng.normal(size=(total,)).astype(dtype)
    x = ragged_1d(values, heavy_tail_lengths(rng, total))
    for op in ("sum", "var", "logsumexp"):
        runs = [call(op, x).tobytes() for _ in range(3)]
        assert runs[0] == runs[1] == runs[2], op


def test_repeated_runs_bitwise_identical_cuda_small(backend):
    if backend != "cuda":
        pytest.skip("cuda only")
    rng = np.random.default_rng(2)
    values = rng.normal(size=(40, 2)).astype(np.float32)
    x = ragged_1d(values, [0, 13, 1, 0, 26], backend)
    for op in ("sum", "var"):
        runs = [host(call(op, x)).tobytes() for _ in range(2)]
        assert runs[0] == runs[1], op


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_repeated_runs_bitwise_identical_gpu(dtype):
    rng = np.random.default_rng(1)
    total = 3_000_000
    values = rng.normal(size=(total,)).astype(dtype)
    x = ragged_1d(values, heavy_tail_lengths(rng, total), "cuda")
    for op in ("sum", "mean", "var", "logsumexp"):
        runs = [host(call(op, x)).tobytes() for _ in range(3)]
        assert runs[0] == runs[1] == runs[2], op


@pytest.mark.parametrize("op", ["sum", "mean", "var", "argmax", "nanmax", "logsumexp", "first"])
def test_inputs_not_modified(op, backend):
    rng = np.random.default_rng(4)
    values = rng.normal(size=(30, 3))
    values[rng.random((30, 3)) < 0.2] = np.nan
    offsets = np.array([2, 5, 5, 17, 28], dtype=np.int32)
    values_before, offsets_before = values.copy(), offsets.copy()
    x = make_ragged(values, [offsets], backend)
    dev_values = x.values
    call(op, x)
    call(op, x, fill_value=1.0 if op != "argmax" else 5)
    if backend == "cpu":
        assert values.flags.writeable
        assert offsets.flags.writeable
        assert values.tobytes() == values_before.tobytes()
        assert offsets.tobytes() == offsets_before.tobytes()
    else:
        assert to_host(dev_values).tobytes() == values_before.tobytes()
        assert to_host(x.offsets).tobytes() == offsets_before.tobytes()


# --------------------------------------------------------------------------
# accuracy canaries (reliability.md (c))
# --------------------------------------------------------------------------


def _canary_backends():
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("where", _canary_backends())
def test_float32_constant_canary(where):
    """``full(10**6, 0.1, float32)``: a naive float32 accumulator is off by ~1e-2."""
    values = np.full(10**6, 0.1, np.float32)
    x = ragged_1d(values[3:], [5, 10**6 - 3 - 5 - 2], where, start=0)
    exact = math.fsum(values[8 : 10**6 - 2].astype(np.float64))
    got = host(hr.sum(x))
    assert got.dtype == np.float32
    assert abs(float(got[1]) - exact) <= 1e-6 * exact
    mean = host(hr.mean(x))
    assert abs(float(mean[1]) - 0.1) <= 1e-6 * 0.1 + 2**-24 * 0.1


@pytest.mark.parametrize("where", _canary_backends())
def test_float32_ones_canary(where):
    """``ones(2**24 + 10, float32)`` sums exactly (a float32 counter stops at 2**24)."""
    n = 2**24 + 10
    values = np.ones(n + 3, np.float32)
    x = ragged_1d(values, [3, n], where)
    got = host(hr.sum(x))
    assert got.tolist() == [3.0, float(n)]
    assert host(hr.mean(x)).tolist() == [1.0, 1.0]
    assert host(hr.count(x)).tolist() == [3, n]


@pytest.mark.parametrize("where", _canary_backends())
@pytest.mark.parametrize("data", ["uniform", "normal", "constant", "offset"])
def test_float64_million_no_worse_than_numpy(data, where):
    """A float64 million-element segment loses no more than NumPy's pairwise ``np.sum`` (×2
    slack, floor of 2 ulp of the sum) against ``math.fsum``."""
    rng = np.random.default_rng(7)
    n = 10**6
    seg = {
        "uniform": lambda: rng.uniform(0, 1, n),
        "normal": lambda: rng.normal(0, 1, n),
        "constant": lambda: np.full(n, 0.1),
        "offset": lambda: 1e4 + rng.uniform(0, 1e-3, n),
    }[data]()
    values = np.concatenate([rng.normal(size=17), seg, rng.normal(size=5)])
    x = ragged_1d(values, [17, n, 5], where)
    exact = math.fsum(seg)
    err_np = abs(float(np.sum(seg)) - exact)
    err_hr = abs(float(host(hr.sum(x))[1]) - exact)
    assert err_hr <= max(2 * err_np, 2 * 2**-52 * abs(exact)), (err_hr, err_np)
    err_mean = abs(float(host(hr.mean(x))[1]) - exact / n)
    assert err_mean <= max(2 * err_np / n, 2 * 2**-52 * abs(exact / n)) + 2**-53 * abs(exact / n)


def _assert_rounded_once(x, seg, seed):
    """Segment 1 of ``x`` (``seg``, float64): its sum within half an ulp of
    ``math.fsum``'s, never farther than ``np.sum``'s, and its mean that sum / n;
    nansum and nanmean (no NaN here) the same bits. Returns the sum."""
    exact = math.fsum(seg)
    got = float(hr.sum(x)[1])
    assert abs(got - exact) <= 0.5 * math.ulp(exact), (seed, got, exact)
    assert abs(got - exact) <= abs(float(np.sum(seg)) - exact), (seed, got, exact)
    # the mean divides that sum once
    assert float(hr.mean(x)[1]) == got / len(seg)
    # nansum/nanmean run the same compensated additions over the elements
    # that are not NaN (block_nansum_c), so give the same bits here
    assert float(hr.nansum(x)[1]) == got, seed
    assert float(hr.nanmean(x)[1]) == got / len(seg), seed
    return got


@pytest.mark.parametrize("step", [1, 2])
@pytest.mark.parametrize("data", ["normal", "signed_range", "offset"])
def test_float64_long_sums_are_compensated_cpu(data, step):
    """Float64 segments longer than 8 blocks keep every addition's rounding error
    (``block_sum_c``, ``two_sum``): inside one chunk the sum is within one rounding of
    ``math.fsum``'s, so never farther from it than NumPy's pairwise sum, which lands a few
    ulp off either way (the plain order was the farther on 8 of 20 seeds of normal data).
    Strided values (``step`` 2) are summed from a contiguous copy of each block: the same
    bits as contiguous ones (their partial sums of 16 were the farther on 12 of 20 seeds
    of normal x 10^U(-5, 5))."""
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n = 100_000 + 997 * seed  # odd lengths: the blocks' masked tails; one chunk
        seg = {
            "normal": lambda: rng.normal(0, 1, n),
            "signed_range": lambda: rng.normal(0, 1, n) * 10.0 ** rng.uniform(-5, 5, n),
            "offset": lambda: 1e8 + rng.normal(0, 1, n),
        }[data]()
        values = np.concatenate([rng.normal(size=3), seg, rng.normal(size=2)])
        offsets = [0, 3, 3 + n, n + 5]
        want = None
        if step > 1:
            want = float(hr.sum(hr.RaggedArray(values, offsets))[1])
            values = np.repeat(values, step)[::step]
        got = _assert_rounded_once(hr.RaggedArray(values, offsets), seg, seed)
        assert want is None or got == want, (seed, got, want)


@pytest.mark.parametrize("chunks", [1, 3, 16])
def test_float64_sums_carry_their_errors_across_chunks_cpu(chunks, monkeypatch):
    """A long float64 segment cut by the parallel chunks is summed piece by piece: each
    piece's compensated sum keeps its rounding error, and the fix-up adds the pieces with
    TwoSum and those errors once, so the segment still rounds about once. Halves of +c and
    -c (c up to 1e8) plus normal noise: the pieces' sums are ~1e9-1e13, their total ~300,
    so one rounding per piece (the code before) put it thousands of ulp off, and so did
    the plain loop over a last block of under 16 elements (lengths 2-12 past a multiple
    of 128: ``chunks=1``). Pieces of 6,000-35,000 elements, the segment's start and end
    inside chunks."""
    from hrarray._kernels import cpu as cpu_kernels

    monkeypatch.setattr(cpu_kernels, "FORCE_CHUNKS", chunks)
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        n = 128 * 781 + 2 * (seed + 1)  # even: the halves cancel
        c = 10.0 ** rng.uniform(5, 8)
        seg = rng.normal(0, 1, n) + np.where(np.arange(n) < n // 2, c, -c)
        values = np.concatenate([rng.normal(size=1500), seg, rng.normal(size=2500)])
        _assert_rounded_once(hr.RaggedArray(values, [0, 1500, 1500 + n, n + 4000]), seg, seed)


@pytest.mark.parametrize(("chunks", "step"), [(1, 1), (3, 1), (1, 2)])
def test_float64_long_nansums_are_compensated_cpu(chunks, step, monkeypatch):
    """nansum/nanmean of long float64 segments skip NaN inside the compensated blocks
    (``block_nansum_c``): within half an ulp of ``math.fsum`` of the elements that are not
    NaN, never farther than ``np.nansum``, the same bits as ``sum`` of the values with
    their NaN replaced by 0, and the mean that sum over the count of the others. Their
    plain pairwise order was farther than ``np.nansum`` on 15 of 20 seeds (10^6 normal
    values, 1 % NaN; up to 36 ulp). 3 chunks cut the segment (the pieces' errors
    carried); ``step`` 2: strided values."""
    from hrarray._kernels import cpu as cpu_kernels

    monkeypatch.setattr(cpu_kernels, "FORCE_CHUNKS", chunks)
    for seed in range(4):
        rng = np.random.default_rng(200 + seed)
        n = 128 * 781 + 2 * (seed + 1)
        c = 10.0 ** rng.uniform(5, 8)
        seg = rng.normal(0, 1, n) + np.where(np.arange(n) < n // 2, c, -c)
        seg[rng.random(n) < 0.01] = np.nan
        seg[-3:] = (np.nan, 1.0, np.nan)  # NaN in the last short block too
        values = np.concatenate([rng.normal(size=1500), seg, rng.normal(size=2500)])
        offsets = [0, 1500, 1500 + n, n + 4000]
        zeroed = hr.RaggedArray(np.where(np.isnan(values), 0.0, values), offsets)
        if step > 1:
            values = np.repeat(values, step)[::step]
        x = hr.RaggedArray(values, offsets)
        kept = seg[~np.isnan(seg)]
        exact = math.fsum(kept)
        got = float(hr.nansum(x)[1])
        assert abs(got - exact) <= 0.5 * math.ulp(exact), (seed, got, exact)
        assert abs(got - exact) <= abs(float(np.nansum(seg)) - exact), (seed, got, exact)
        assert got == float(hr.sum(zeroed)[1]), seed
        assert float(hr.nanmean(x)[1]) == got / len(kept), seed


@pytest.mark.parametrize(("chunks", "step"), [(None, 1), (16, 1), (None, 2)])
def test_float64_compensated_sums_keep_inf_and_nan_cpu(chunks, step, monkeypatch):
    """The compensation of long float64 sums is dropped where a sum met inf or NaN or
    overflowed (its errors are then NaN): the results are NumPy's, also where the chunks
    cut the segments (16 chunks: pieces of ~2,200 elements, the errors carried) and for
    strided values (``step`` 2: each block summed from a contiguous copy)."""
    from hrarray._kernels import cpu as cpu_kernels

    monkeypatch.setattr(cpu_kernels, "FORCE_CHUNKS", chunks)
    n = 5000
    cases = []
    for pos, v in ((2000, np.inf), (4999, -np.inf), (0, np.nan)):
        seg = np.ones(n)
        seg[pos] = v
        cases.append(seg)
    both = np.ones(n)
    both[[10, 3000]] = (np.inf, -np.inf)
    cases += [both, np.full(n, 1e308), np.full(n, -1e308), np.tile([1e308, -1e308], n // 2)]
    values = np.concatenate(cases)
    if step > 1:
        values = np.repeat(values, step)[::step]
    x = hr.from_lengths(values, [n] * len(cases))
    with np.errstate(all="ignore"):  # NumPy warns of the overflow and inf - inf
        want = np.array([np.sum(c) for c in cases])
    np.testing.assert_array_equal(hr.sum(x), want)
    np.testing.assert_array_equal(hr.mean(x), want / n)
    # nansum/nanmean (compensated too): NaN skipped, inf and overflow as NumPy's
    with np.errstate(all="ignore"):
        want = np.array([np.nansum(c) for c in cases])
    counts = np.array([np.count_nonzero(~np.isnan(c)) for c in cases])
    np.testing.assert_array_equal(hr.nansum(x), want)
    np.testing.assert_array_equal(hr.nanmean(x), want / counts)


@pytest.mark.parametrize("op", ["sum", "mean", "var"])
def test_2d_long_segment_accuracy_cpu(op):
    """2-D rows are reduced in blocks merged pairwise, as 1-D: a column summed row
    after row would lose n*u (2e5 rows of 0.1: ~1e3 times over the bound)."""
    v = np.full((200_000, 2), 0.1)
    v[::7, 1] = 0.3
    offsets = np.array([0, 1, 200_000 - 3, 200_000])
    x = hr.RaggedArray(v, offsets)
    R.assert_result(call(op, x), R.reduce(op, v, [offsets]), err_msg=op)


# the dtype besides float16 whose strided and reversed values run this time (by the seed)
_STRIDED_DTYPE = ("int32", "float32", "float64")[hst.TEST_SEED % 3]


def test_block_boundary_lengths(backend):
    """NumPy's ``test_sum`` pattern: ``arange(1, v + 1)`` for lengths around the unroll and
    pairwise block sizes, forward, reversed and strided (on the CPU float16 and, by the
    run's seed, one of int32, float32 and float64; the other two forward only). On the CPU
    "forward" runs in the run's kernel shape for each op and dtype (1-D, or one column of
    rows), the others 1-D (the strided kernel form)."""
    sizes = [0, 1, 2, 7, 8, 9, 15, 16, 19, 127, 128, 129, 1024, 1235]
    if backend == "cuda" and not REAL_GPU:
        sizes = [0, 1, 2, 7, 8, 9, 15, 16, 19]
    values = np.concatenate([np.arange(1, v + 1) for v in sizes])
    lengths = np.array(sizes)
    for dtype in ("int32", "float16", "float32", "float64"):
        vals = values.astype(dtype)
        cases = {
            "forward": (vals, lengths),
            "reversed": (vals[::-1], lengths[::-1]),
            "strided": (np.repeat(vals, 2)[::2], lengths),
        }
        if backend == "cuda":
            # the device copy is contiguous: "strided" would repeat "forward"
            cases = {k: (np.ascontiguousarray(v), lens) for k, (v, lens) in cases.items()
                     if k != "strided"}
        elif dtype not in ("float16", _STRIDED_DTYPE):
            # Strided values are another kernel per op and dtype (2-3 s each): float16 (read
            # through a float32 copy) every run, one of the others by the run's seed.
            del cases["reversed"], cases["strided"]
        for name, (v, lens) in cases.items():
            offsets = hst.offsets_from_lengths(lens)
            x = make_ragged(v, [offsets], backend)
            for op in ("sum", "mean", "max", "argmax", "prod" if dtype == "int32" else "min"):
                if backend == "cpu" and name == "forward":
                    got = reduce1(op, v, lens)  # the run's kernel shape, as the property tests
                else:
                    got = call(op, x)
                R.assert_result(got, R.reduce(op, v, [offsets]), err_msg=f"{dtype} {name}")
                if op == "sum" and dtype in ("int32", "float64"):
                    expect = [v_ * (v_ + 1) // 2 for v_ in lens]
                    np.testing.assert_array_equal(host(got), expect)


# --------------------------------------------------------------------------
# layouts: strided, reversed, read-only, big-endian, Fortran, unaligned
# --------------------------------------------------------------------------


def _layouts():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(40, 3))
    ints = rng.integers(-50, 50, size=(40, 3)).astype(np.int32)
    readonly = base.copy()
    readonly.flags.writeable = False
    buf = np.zeros(40 * 8 + 1, np.uint8)
    unaligned = buf[1:].view(np.float64)  # starts one byte into the buffer
    unaligned[...] = base[:, 0]
    assert not unaligned.flags.aligned
    return {
        "strided": np.repeat(base, 2, axis=0)[::2],
        "reversed": base[::-1],
        "column": base[:, 1],
        "readonly": readonly,
        "bigendian_f8": base.astype(">f8"),
        "bigendian_i4": ints.astype(">i4"),
        "fortran": np.asfortranarray(base),
        "transposed": np.ascontiguousarray(base.T).T,
        "unaligned": unaligned,
    }


LAYOUTS = _layouts()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts(layout):
    """Any strides, read-only, big-endian and unaligned values give the oracle's result (big-
    endian converted once: native result), and the input is left untouched."""
    values = LAYOUTS[layout]
    before = values.copy()
    offsets = np.array([1, 4, 4, 20, 37])
    x = hr.RaggedArray(values, offsets)
    for op in ("sum", "var", "max", "argmin"):
        got = call(op, x)
        assert got.dtype.isnative
        R.assert_result(got, R.reduce(op, values, [offsets]), err_msg=f"{op} {layout}")
    np.testing.assert_array_equal(values, before)


def test_first_last_read_only_their_rows():
    """first/last gather one row per segment from strided values (np.take had copied all
    of the values first: 16 MB for a 2-row gather)."""
    import tracemalloc

    values = np.arange(2_000_000.0)[::2]
    x = hr.RaggedArray(values, np.array([0, 1000, 1000, 300_000]))
    hr.first(x)
    tracemalloc.start()
    try:
        f, last = hr.first(x), hr.last(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(f, [0.0, np.nan, 2000.0])
    np.testing.assert_array_equal(last, [1998.0, np.nan, 599_998.0])
    assert peak < 100_000, peak


def test_strided_and_readonly_offsets():
    values = np.arange(20.0)
    long_offsets = np.array([0, 99, 3, 99, 3, 99, 10, 99, 18])
    offsets = long_offsets[::2]
    offsets.flags.writeable = False
    x = hr.RaggedArray(values, offsets)
    np.testing.assert_array_equal(hr.sum(x), [3.0, 0.0, 42.0, 108.0])


# --------------------------------------------------------------------------
# complex
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_hand_example(dtype, backend):
    values = np.array([1 + 1j, -1 - 1j, 2j], dtype=dtype)

    def r(op):  # on the CPU in this run's kernel layout for the op and dtype
        return reduce1(op, values, [2, 0, 1], backend)

    real = np.float32 if dtype == "complex64" else np.float64
    s = r("sum")
    assert s.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(s, [0, 0, 2j])
    np.testing.assert_array_equal(r("prod"), [-2j, 1, 2j])
    m = r("mean")
    assert m.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(m[[0, 2]], [0, 2j])
    v = r("var")
    assert v.dtype == real
    np.testing.assert_allclose(v[[0, 2]], [2.0, 0.0], rtol=1e-6)
    assert np.isnan(v[1])
    sd = r("std")
    assert sd.dtype == real
    np.testing.assert_allclose(sd[0], math.sqrt(2), rtol=1e-6)
    np.testing.assert_array_equal(r("count_nonzero"), [2, 0, 1])
    np.testing.assert_array_equal(r("first")[[0, 2]], [1 + 1j, 2j])
    # an empty segment's NaN is NumPy's empty complex mean, nan+nanj (both parts)
    for op in ("mean", "nanmean", "first", "last"):
        empty = r(op)[1]
        assert np.isnan(empty.real), op
        assert np.isnan(empty.imag), op


@pytest.mark.parametrize("op", sorted(R.ORDERING_OPS))
def test_complex_ordering_ops_raise(op, backend):
    x = ragged_1d(np.array([1 + 1j, 2 - 1j]), [2], backend)
    with pytest.raises(TypeError):
        call(op, x)


# --------------------------------------------------------------------------
# user reducers
# --------------------------------------------------------------------------


def test_prod_whose_lanes_overflow_is_taken_in_order():
    """1e200 and 1e-200 alternating: the kernel's lanes hold only one kind each, one
    overflows, the other underflows, and inf * 0 gave NaN where NumPy's in-order
    product is 1.0. Those segments are redone in order (CPU); finite products, NaN
    elements, empty segments and their fill_value are left as they were."""
    big = np.array([1e200, 1e-200] * 40)
    v = np.concatenate([big, [2.0, 3.0], [1e-170, 1e170] * 9 + [3.0], [np.nan, 1.0],
                        [1e300, 1e300], big[:10]]).reshape(-1, 1) * np.ones((1, 2))
    v[-10:, 1] = 0.5  # a row whose second column alone is finite
    lengths = [80, 2, 0, 19, 2, 2, 10]
    for values in (v[:, 0], v, v[::-1, 1]):
        x = hr.from_lengths(values, lengths)
        got = hr.prod(x, fill_value=np.inf)
        o = np.concatenate([[0], np.cumsum(lengths)])
        with np.errstate(all="ignore"):
            want = [np.prod(values[a:b], axis=0) if b > a else np.full(values.shape[1:], np.inf)
                    for a, b in itertools.pairwise(o)]
        np.testing.assert_array_equal(got, want)
        assert got.dtype == values.dtype
    np.testing.assert_array_equal(hr.prod(hr.from_lengths(big, [80]), levels=1), [1.0])


@pytest.mark.parametrize("offset", [1e4, 1e9, 1e12])
def test_variance_with_a_large_offset_is_exact(offset, backend):
    """offset + N(0, 1): the variance to a few ulps of the exact (rational) one, as
    NumPy's two passes or better. Holding the running mean itself rounded it at
    ulp(offset) on every update: relative errors ~1e-8 at 1e9, 1e-5 at 1e12."""
    rng = np.random.default_rng(7)
    lengths = [7, 0, 40, 1, 200, 3]
    v = offset + rng.standard_normal(sum(lengths))
    x = ragged_1d(v, lengths, backend)
    got = host(hr.var(x, ddof=1))
    got_nan = host(hr.nanvar(x, ddof=1))
    o = np.concatenate([[0], np.cumsum(lengths)])
    for i, (a, b) in enumerate(itertools.pairwise(o)):
        if b - a <= 1:
            assert np.isnan(got[i])
            continue
        seg = [fractions.Fraction(float(t)) for t in v[a:b]]
        mean = sum(seg) / len(seg)
        exact = float(sum((t - mean) ** 2 for t in seg) / (len(seg) - 1))
        np.testing.assert_allclose([got[i], got_nan[i]], exact, rtol=4e-16, err_msg=str(i))


@pytest.mark.parametrize("op", ["var", "std", "nanvar"])
def test_variance_of_means_whose_difference_overflows(op, backend):
    """1e308 and -1e308: the variance (1e616) overflows to inf, as NumPy's; Chan's mean
    update ``ma + (mb - ma) * w`` overflowed to -inf, which then read as a NaN mean. A NaN or
    inf element still gives NaN."""
    v = np.array([1e308, -1e308, 1e308, -1e308, 5.0, np.inf, 1.0, 2.0, 4.0])
    x = ragged_1d(v, [2, 3, 2, 2], backend)
    with np.errstate(over="ignore", invalid="ignore"):
        want = [getattr(np, op)(v[a:b]) for a, b in ((0, 2), (2, 5), (5, 7), (7, 9))]
    np.testing.assert_array_equal(want[:3], [np.inf, np.inf, np.nan])
    np.testing.assert_allclose(host(getattr(hr, op)(x)), want, rtol=1e-15)


def test_user_reducer_sum_of_squares(backend):
    reducer = hr.Reducer(identity=0.0, combine=lambda a, b: a + b, map=lambda v: v * v)

    @settings(max_examples=examples(backend, cpu=30, cuda=5))
    @given(
        spec=hst.ragged(
            dtypes=("float64",), inner_shapes=((), (3,)), small=backend == "cuda", depths=(1, 2)
        ),
        data=st.data(),
    )
    def check(spec, data):
        levels = data.draw(st.integers(1, spec.depth))
        x = make_ragged(spec.values, spec.offsets, backend)
        got = hr.reduce(x, reducer, levels=levels)
        ref = R.reduce("sum", spec.values.astype(np.float64) ** 2, spec.offsets, levels)
        R.assert_result(got, ref, err_msg=repr(spec))

    check()


def test_user_reducer_finalize_runs_for_empty_segments(backend):
    reducer = hr.Reducer(
        identity=0.0,
        combine=lambda a, b: a + b,
        finalize=lambda acc, n: acc + 10.0 * n + 0.5,
    )
    values = np.array([1.0, 2.0, 3.0, 4.0])
    x = ragged_1d(values, [2, 0, 2], backend)
    got = host(hr.reduce(x, reducer))
    expect, _ = R.reduce_user(
        values,
        [hst.offsets_from_lengths([2, 0, 2])],
        identity=0.0,
        combine=lambda a, b: a + b,
        finalize=lambda acc, n: acc + 10.0 * n + 0.5,
    )
    np.testing.assert_array_equal(got, expect.astype(np.float64))
    np.testing.assert_array_equal(got, [23.5, 0.5, 27.5])
    # fill_value replaces the finalized empty result
    np.testing.assert_array_equal(host(hr.reduce(x, reducer, fill_value=-1.0)), [23.5, -1.0, 27.5])


def test_user_reducer_without_finalize_gives_identity(backend):
    reducer = hr.Reducer(identity=-np.inf, combine=lambda a, b: a if a > b else b)
    x = ragged_1d(np.array([3.0, 1.0, 2.0]), [2, 0, 1], backend)
    np.testing.assert_array_equal(host(hr.reduce(x, reducer)), [3.0, -np.inf, 2.0])
    np.testing.assert_array_equal(host(hr.reduce(x, reducer, fill_value=5.0)), [3.0, 5.0, 2.0])


def test_user_reducer_without_map_promotes_the_state(backend):
    """Without map the element is the state, in the promoted type of identity and
    element: an integer identity over floats sums floats (it truncated 0.5 to 0 and
    NaN to INT64_MIN), over int8 it stays an integer."""
    add = hr.Reducer(0, lambda a, b: a + b)
    x = ragged_1d(np.array([0.5, 2.0, np.nan, -1.25]), [2, 1, 0, 1], backend)
    got = host(hr.reduce(x, add))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [2.5, np.nan, 0.0, -1.25])
    xi = ragged_1d(np.array([100, 100, 3], np.int8), [2, 1], backend)
    got = host(hr.reduce(xi, add))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [200, 3])


def test_user_reducer_int_identity_with_a_python_max(backend):
    """combine(0, 0.0) is the int 0 in Python (max keeps its first argument on a tie): the
    result dtype follows the promoted state, as the kernels compute it, not that int (the
    results were truncated to int64)."""
    x = ragged_1d(np.array([0.5, 0.25, -3.0, 2.75]), [2, 1, 1], backend)
    got = host(hr.reduce(x, hr.Reducer(identity=0, combine=lambda a, b: max(a, b))))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [0.5, 0.0, 2.75])


def test_user_reducer_state_takes_the_maps_type(backend):
    """An integer identity under a float map: the state is float, in every kernel path
    (the CPU's blocked 1-D stack and its 2-D row accumulators held the identity's int64
    and truncated every partial state: 1498 for 1498.5, 0.0 for rows of 0.5)."""
    half = hr.Reducer(identity=0, combine=lambda a, b: a + b, map=lambda v: v * 0.5)
    peak = hr.Reducer(identity=-(2**62), combine=lambda a, b: a if a >= b else b,
                      map=lambda v: v * 2)
    n = 200 if backend == "cuda" else 3000
    v = np.ones(n)
    got = host(hr.reduce(make_ragged(v, [np.array([0, 3, n])], backend), half))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [1.5, (n - 3) / 2])
    rows = make_ragged(v.reshape(-1, 2), [np.array([0, 1, n // 2])], backend)
    np.testing.assert_array_equal(host(hr.reduce(rows, half)),
                                  [[0.5, 0.5], [(n // 2 - 1) / 2] * 2])
    w = np.array([[1e-200, np.nan, 1.25], [-3.5, 0.25, 8.0]])
    got = host(hr.reduce(make_ragged(w, [np.array([0, 2])], backend), peak))
    # (nan >= 0.5 is False: the later 0.5 wins, as Python's left fold gives it)
    np.testing.assert_array_equal(got, [[2e-200, 0.5, 16.0]])


def test_user_reducer_finalize_keeps_pythons_order(backend):
    """finalize runs as written: s - m * n + c * 10 with s == m * n ~ 9e18 is 10, as
    Python computes it (the CPU compiled it with fastmath reassoc, and rows gave 0)."""
    r = hr.Reducer(identity=(0.0, 0, -math.inf),
                   combine=lambda a, b: (a[0] + b[0], a[1] + b[1], a[2] if a[2] >= b[2] else b[2]),
                   map=lambda v: (v, 1, v),
                   finalize=lambda acc, n: acc[0] - acc[2] * n + acc[1] * 10.0)
    v = np.array([[2.0, 9.223372036854776e18, 3.0]])
    np.testing.assert_array_equal(host(hr.reduce(make_ragged(v, [np.array([0, 1])], backend), r)),
                                  [[10.0, 10.0, 10.0]])
    np.testing.assert_array_equal(host(hr.reduce(ragged_1d(v[0], [1, 1, 1], backend), r)),
                                  [10.0, 10.0, 10.0])


def test_reduce_refuses_ddof_for_other_ops():
    """``ddof=`` means something to var/std only: reduce() with it for another op, or a
    Reducer, is a TypeError (as hr.sum(x, ddof=1) is), not silently ignored."""
    x = ragged_1d(np.array([1.0, 2.0, 4.0]), [1, 2])
    for op in ("sum", "max", "nanmean", hr.Reducer(0.0, lambda a, b: a + b)):
        for ddof in (0, 1):
            with pytest.raises(TypeError, match="ddof"):
                hr.reduce(x, op, ddof=ddof)
    np.testing.assert_array_equal(hr.reduce(x, "var", ddof=1), [np.nan, 2.0])
    np.testing.assert_array_equal(hr.reduce(x, "nanstd", ddof=0), [0.0, 1.0])
    np.testing.assert_array_equal(hr.reduce(x, "var"), hr.var(x))


def test_uncompilable_reducer_is_a_type_error():
    """A user function Numba cannot compile is the wrong kind of thing: TypeError naming
    the Reducer and Numba's reason (its TypingError is not a TypeError). CPU only: the
    simulator runs the functions as Python."""
    x = ragged_1d(np.array([0.5, 2.0, 3.0]), [2, 1])
    frac = hr.Reducer(0.0, lambda a, b: float(fractions.Fraction(a) + b), name="frac")
    with pytest.raises(TypeError, match=r"Reducer 'frac': Numba cannot compile .*'Fraction'"):
        hr.reduce(x, frac)
    # a result that is no number is refused before Numba sees it
    with pytest.raises(TypeError, match=r"combine must return a number .*got str 's'"):
        hr.reduce(x, hr.Reducer(0.0, lambda a, b: "s"))
    # one that works in Python but not in Numba
    with pytest.raises(TypeError, match=r"Numba cannot compile .*float64 .*object"):
        hr.reduce(x, hr.Reducer(0.0, lambda a, b: a + b if object() else a))

    def combine(a, b):
        import math  # numba's UnsupportedBytecodeError, no NumbaError

        return math.fsum((a, b))

    with pytest.raises(TypeError, match=r"Reducer 'combine': Numba cannot compile .*IMPORT"):
        hr.reduce(x, hr.Reducer(0.0, combine))
    # one Numba types but cannot lower: its bare NotImplementedError (helper R's audit)
    xc = ragged_1d(np.array([1 + 1j, 2.0]), [2])
    with pytest.raises(TypeError, match=r"Numba cannot compile .*complex128 .*lowering"):
        hr.reduce(xc, hr.Reducer(0j, lambda a, b: max(a, b)))


def test_kernel_source_builds_states_of_more_than_30_components():
    """CPython builds a tuple display of more than 30 items through a list, and Numba's
    bytecode peephole for that asserted inside hrarray's kernels: a Reducer of 31+ state
    components was a bare AssertionError on the CPU (helper R's audit; 30 worked). The
    kernels' state reads are built from tuples of at most 30, added. The whole kernel of a
    31-component Reducer compiles in about a minute (checked by hand: 1-D and 2-D gave
    the reference; tests/ptx_check.py compiles a 40-component one for CUDA), so this
    checks the state read's form and that Numba reads it right; a 31-item display alone
    compiles (the assertion needs the kernel around it), so it is the form that fails
    on the old code."""
    import numba

    from hrarray._kernels import _codegen as cg

    for k in (30, 31, 64):
        expr = cg.load("k", k, "i")
        assert expr.count("+") == (k - 1) // 30
        ns = {}
        exec(f"def read({cg.args('k', k)}, i):\n    return {expr}\n", ns)
        arrays = [np.full(3, float(j)) for j in range(k)]
        got = numba.njit(ns["read"])(*arrays, 1)
        assert got == tuple(float(j) for j in range(k))


def test_user_reducer_tuple_state(backend):
    """A tuple state ``(sum, count)`` with a finalize that divides: the mean."""
    mean = hr.Reducer(
        identity=(0.0, 0),
        combine=lambda a, b: (a[0] + b[0], a[1] + b[1]),
        map=lambda v: (v, 1),
        finalize=lambda acc, n: acc[0] / acc[1] if acc[1] > 0 else -1.0,
    )
    sumsq = hr.Reducer(
        identity=(0.0, 0.0),
        combine=lambda a, b: (a[0] + b[0], a[1] + b[1]),
        map=lambda v: (v, v * v),
        finalize=lambda acc, n: acc[1] / n - (acc[0] / n) ** 2 if n > 0 else np.nan,
    )
    values = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0], [7.0, 0.0]])
    x = ragged_1d(values, [3, 0, 1], backend)
    got = host(hr.reduce(x, mean))
    np.testing.assert_allclose(got, [[3.0, 6.0], [-1.0, -1.0], [7.0, 0.0]], rtol=1e-15)
    var = host(hr.reduce(x, sumsq))
    np.testing.assert_allclose(var[[0, 2]], [[8 / 3, 32 / 3], [0.0, 0.0]], rtol=1e-12)
    assert np.isnan(var[1]).all()


def test_user_reducer_integer(backend):
    """An integer reducer (count of odd values) is exact; same declaration on every backend."""
    odd = hr.Reducer(identity=0, combine=lambda a, b: a + b, map=lambda v: v % 2)
    values = np.array([1, 2, 3, 5, 8, 13, 21, 34], np.int64)
    x = ragged_1d(values, [3, 0, 5], backend)
    got = host(hr.reduce(x, odd))
    assert got.dtype.kind == "i"
    np.testing.assert_array_equal(got, [2, 0, 3])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("inner", [(), (3,)])
def test_result_does_not_depend_on_rows_after_the_segment(dtype, inner):
    """A segment's result depends on its own values, not on whether the buffer goes on
    after it: the CPU kernels' masked steps read up to 8 elements past a segment, and
    near the array's end read a copy of its last elements instead (an element loop
    there once rounded float64 sums of 5-7 elements and segment tails differently, so
    ``hr.sum(x[a:b].copy())`` could differ from ``hr.sum(x)[a:b]`` in the last bits).
    Each op runs in the layout this run's seed picks for it (rows of 3 for 2-D), so the
    kernels are those the other tests compile; the Reducer (compiled in each process) in
    sum's."""
    rng = np.random.default_rng(41)
    dt = np.dtype(dtype)
    sq = hr.Reducer(identity=0.0, combine=_add, map=lambda v: v * v)
    ndim = 1 + len(inner)
    ops = [op for op in ("sum", "mean", "var", "prod", "nansum", "logsumexp")
           if hst.kernel_ndim(op, dt) == ndim]
    if hst.kernel_ndim("sum", dt) == ndim:
        ops.append(sq)
    pool = hst.kernel_ndim("attention_pool", dt) == ndim
    if not ops and not pool:
        pytest.skip(f"no op of this list runs {ndim}-D {dtype} with this run's seed")
    for n in range(41):
        scale = 10.0 ** rng.uniform(-3, 3, (n + 8,) + (1,) * len(inner))
        v = (rng.standard_normal((n + 8, *inner)) * scale).astype(dt)
        alone = ragged_1d(v[:n].copy(), [n])
        for extra in (0, 1, 3, 7, 8):
            x = ragged_1d(v[: n + extra], [n])
            for op in ops:
                got, want = hr.reduce(x, op), hr.reduce(alone, op)
                assert got.tobytes() == want.tobytes(), (op, n, extra)
        # the attention weights too (scores read past the segment as the values)
        sc = rng.standard_normal(n + 8).astype(dt)
        if pool:
            got = hr.attention_pool(ragged_1d(v, [n, 8]), ragged_1d(sc, [n, 8]))[:1]
            want = hr.attention_pool(alone, ragged_1d(sc[:n].copy(), [n]))
            assert got.tobytes() == want.tobytes(), ("attention_pool", n)


def test_strided_exp_steps_do_not_depend_on_rows_after_the_segment_cpu():
    """The same for the exp steps of strided values (the kernels' strided form): logsumexp
    of a column and attention_pool with two heads (each head's scores a strided column)
    over segments of 1-8 elements, with and without 8 rows after them. The step on the
    strided values and its copy on the array's last elements (PAD) were compiled
    otherwise under fastmath: logsumexp differed in 24 of 200 such cases, and a Dask
    partition's attention_pool from the whole array's (test_dask, another day's seed)."""
    rng = np.random.default_rng(12)
    for _ in range(200):
        pre, n = int(rng.integers(0, 6)), int(rng.integers(1, 9))
        o = np.array([0, pre, pre + n])
        v = rng.standard_normal(pre + n + 8)
        s = rng.standard_normal((pre + n + 8, 2))

        def run(k, v=v, s=s, o=o):
            return (hr.logsumexp(hr.RaggedArray(s[:k, 1], o)),
                    hr.attention_pool(hr.RaggedArray(v[:k], o), hr.RaggedArray(s[:k], o)))

        for got, want in zip(run(pre + n + 8), run(pre + n), strict=True):
            assert got.tobytes() == want.tobytes(), (pre, n)


_POWER = 2.0  # a global a reducer reads (test_reducer_cache_follows_globals)


def _add(a, b):
    return a + b


def _power_reducer(p):
    return hr.Reducer(identity=0.0, combine=_add, map=lambda v: v**p)


def test_equal_reducers_share_kernels():
    """A Reducer rebuilt from the same code and values (as inside a function called in a
    loop) reuses the kernels of the first: no compile, same result; other closure values
    compile their own."""
    x = ragged_1d(np.arange(12.0), [5, 0, 7])
    want2 = [float(np.sum(np.arange(5.0) ** 2)), 0.0, float(np.sum(np.arange(5.0, 12.0) ** 2))]
    np.testing.assert_array_equal(hr.reduce(x, _power_reducer(2)), want2)
    n = hr._kernels.compiled_count()
    for _ in range(3):
        np.testing.assert_array_equal(hr.reduce(x, _power_reducer(2)), want2)
    assert hr._kernels.compiled_count() == n
    got3 = hr.reduce(x, _power_reducer(3))  # another closure value: its own kernel
    np.testing.assert_array_equal(got3, [100.0, 0.0, float(np.sum(np.arange(5.0, 12.0) ** 3))])
    assert hr._kernels.compiled_count() > n
    # an int closure value is not the float one (Numba would type it differently)
    assert _power_reducer(2)._cache_key() != _power_reducer(2.0)._cache_key()


def test_reducer_cache_follows_globals(monkeypatch):
    """Numba freezes a global's value into the kernel: a Reducer built after the global
    changed must not reuse the kernel compiled with the old value."""
    def build():
        return hr.Reducer(identity=0.0, combine=_add, map=lambda v: v * _POWER)

    x = ragged_1d(np.array([1.0, 2.0, 3.0]), [2, 1])
    np.testing.assert_array_equal(hr.reduce(x, build()), [6.0, 6.0])
    monkeypatch.setattr(sys.modules[__name__], "_POWER", 10.0)
    np.testing.assert_array_equal(hr.reduce(x, build()), [30.0, 30.0])


def test_reducer_cache_follows_module_attributes(monkeypatch):
    """An attribute read through a global module (``cfg.S``) is frozen into the kernel
    too: the module was keyed as an object, so a Reducer built after ``cfg.S`` changed
    reused the old kernel (helper R's audit: 12 where 60 was due). Equal Reducers still
    share kernels."""
    import types

    cfg = types.ModuleType("hr_test_cfg")
    cfg.S = 2.0
    monkeypatch.setitem(sys.modules, "hr_test_cfg", cfg)
    ns = {"cfg": cfg, "hr": hr, "_add": _add}
    exec("def build():\n"
         "    return hr.Reducer(identity=0.0, combine=_add, map=lambda v: v * cfg.S)\n", ns)
    x = ragged_1d(np.array([1.0, 2.0, 3.0]), [2, 1])
    np.testing.assert_array_equal(hr.reduce(x, ns["build"]()), [6.0, 6.0])
    n = hr._kernels.compiled_count()
    np.testing.assert_array_equal(hr.reduce(x, ns["build"]()), [6.0, 6.0])
    assert hr._kernels.compiled_count() == n
    cfg.S = 10.0
    np.testing.assert_array_equal(hr.reduce(x, ns["build"]()), [30.0, 30.0])
    # a module's functions (np.where is a dispatcher object, not a Python function) stay
    # part of the module's key: equal Reducers calling them still share kernels
    ns["np"] = np
    exec("def build_np():\n"
         "    return hr.Reducer(0.0, _add, map=lambda v: np.where(v > 1.5, np.pi, v))\n", ns)
    want = [1.0 + np.pi, np.pi]
    np.testing.assert_allclose(hr.reduce(x, ns["build_np"]()), want)
    n = hr._kernels.compiled_count()
    np.testing.assert_allclose(hr.reduce(x, ns["build_np"]()), want)
    assert hr._kernels.compiled_count() == n


def test_reducer_cache_tells_identities_apart():
    """-0.0 and 0.0 are equal but give different empty results; NaN identities match."""
    x = ragged_1d(np.array([1.0]), [0, 1])
    neg = hr.reduce(x, hr.Reducer(identity=-0.0, combine=_add))
    pos = hr.reduce(x, hr.Reducer(identity=0.0, combine=_add))
    assert np.signbit(neg[0])
    assert not np.signbit(pos[0])
    nan_a = hr.Reducer(identity=float("nan"), combine=_add)
    nan_b = hr.Reducer(identity=float("nan"), combine=_add)
    assert nan_a._cache_key() == nan_b._cache_key()


def test_reducer_pickles_after_use():
    """A used Reducer pickles (Dask ships it to workers) and its copy shares the kernel."""
    r = hr.Reducer(identity=0.0, combine=_add, name="plain")
    x = ragged_1d(np.array([1.0, 2.0, 4.0]), [2, 1])
    np.testing.assert_array_equal(hr.reduce(x, r), [3.0, 4.0])
    copy = pickle.loads(pickle.dumps(r))
    assert copy._cache_key() == r._cache_key()
    np.testing.assert_array_equal(hr.reduce(x, copy), [3.0, 4.0])


def test_reducer_with_unkeyable_closure_is_keyed_by_identity():
    """A value the cache cannot compare (an array in the closure) keys the Reducer itself:
    two such reducers never share a kernel, whatever their arrays hold."""
    def build(w):
        return hr.Reducer(identity=0.0, combine=_add, map=lambda v: v * w[0])

    a, b = build(np.array([2.0])), build(np.array([5.0]))
    assert a._cache_key() != b._cache_key()
    x = ragged_1d(np.array([1.0, 2.0]), [2])
    np.testing.assert_array_equal(hr.reduce(x, a), [6.0])
    np.testing.assert_array_equal(hr.reduce(x, b), [15.0])


@pytest.mark.parametrize("op", R.ALL_REDUCTIONS)
def test_reduce_by_name_equals_function(op):
    rng = np.random.default_rng(6)
    values = rng.normal(size=(50, 2))
    x = ragged_1d(values, [5, 0, 20, 25])
    kw = {"ddof": 1} if R.base_op(op) in ("var", "std") else {}
    a = call(op, x, **kw)
    b = hr.reduce(x, op, **kw)
    c = call(op, x, "method", **kw)
    assert a.tobytes() == b.tobytes() == c.tobytes()


@pytest.mark.parametrize("inner", [(), (5,)], ids=["1d", "2d"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logsumexp_long_segments(dtype, inner, backend):
    """Long segments take the CPU's all-finite block path (a polynomial exp LLVM
    vectorises, exps below -708 flushed to 0; in 2-D, blocks of rows, two passes across
    the columns): wide ranges, differences that overflow to -inf (float64 values near
    the range ends), a NaN or an inf in one block only (in 2-D, in one column of it),
    against the fsum-exact oracle."""
    rng = np.random.default_rng(11)
    lens = [300, 129, 17, 1000, 256, 5, 700, 400, 400, 300] if backend == "cpu" else [40, 17, 33]
    n = int(sum(lens))
    values = (rng.standard_normal((n, *inner)) * 200).astype(dtype)
    offs = hst.offsets_from_lengths(lens)
    col = (1,) if inner else ()  # the specials' column; the others stay finite
    if backend == "cpu":
        values[offs[1] : offs[1] + 60] = rng.uniform(-800, 0, (60, *inner))  # exps underflow
        if dtype == "float64":
            values[(offs[3] + 5, *col)] = 1.7e308  # x - max overflows to -inf in the block
            values[(offs[3] + 9, *col)] = -1.7e308
        values[(offs[6] + 300, *col)] = np.nan  # one block of a long segment
        values[(offs[7] + 200, *col)] = np.inf
        values[(offs[8] + 200, *col)] = -np.inf
    got = hr.logsumexp(make_ragged(values, [offs], backend))
    R.assert_result(got, R.reduce("logsumexp", values, [offs]))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_variance_long_segments(dtype, backend):
    """1-D var, std, nanvar, nanstd of real values: on the CPU, blocks and 9-16-element
    segments of finite values at most 2**500 in magnitude take two vectorised passes
    (shift, corrected two-pass M2); others run the declaration's element-wise update
    (nanvar: the blocks with a NaN). Segments crossing block edges, a large common
    offset, a NaN, an inf or a value beyond 2**500 in one block only, squares that
    overflow to inf, with ddof 0 and 1, against the oracle."""
    rng = np.random.default_rng(17)
    lens = ([300, 129, 17, 1000, 256, 9, 16, 700, 400, 400, 300, 2] if backend == "cpu"
            else [40, 17, 33])
    n = int(sum(lens))
    offs = hst.offsets_from_lengths(lens)
    if dtype == "int64":
        values = rng.integers(-(2**40), 2**40, n)
    else:
        values = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e3], n)).astype(dtype)
    if backend == "cpu":
        values[offs[1] : offs[2]] += 10**9 if dtype == "int64" else 1e9  # a large offset
        if dtype != "int64":
            values[offs[7] + 300] = np.nan  # one block of a long segment
            values[offs[8] + 200] = np.inf
        if dtype == "float64":
            values[offs[9] + 200] = 2.0**501  # past the fast blocks' bound
            values[offs[5] + 3] = 2.0**510  # a 9-element segment past the bound
    x = make_ragged(values, [offs], backend)
    for op in ("var", "std", "nanvar", "nanstd"):
        for ddof in (0, 1):
            R.assert_result(call(op, x, ddof=ddof),
                            R.reduce(op, values, [offs], ddof=ddof), err_msg=f"{op} {ddof}")
    if backend == "cpu" and dtype == "float64":
        # squares that overflow in a long segment's block: inf, as NumPy (the oracle's
        # Python floats raise OverflowError there)
        big = values[: offs[1]].copy()
        big[100:103] = [1e308, -1e308, 1e308]
        got = host(hr.var(make_ragged(big, [offs[:2]], backend)))
        with np.errstate(over="ignore", invalid="ignore"):
            np.testing.assert_array_equal(got, [np.var(big)])
        assert got[0] == np.inf


def test_variance_short_segments(backend):
    """1-D var, std, nanvar, nanstd over segments of 0-8 elements (the CPU's masked
    steps: var_block's state when the segment is finite and within 2**500, else the
    declaration), the last ones at the array's end (its padded copies): against the
    oracle, and for 1e9 + N(0, 1), within 1e-13 of the variance of the exact
    differences, as the shifted state promises (the oracle's bound scales with the sum of
    squares, 1e18 here, and would pass a variance wrong in its fourth digit)."""
    rng = np.random.default_rng(23)
    nseg = 400 if backend == "cpu" else 40
    lens = [int(x) for x in rng.integers(0, 9, nseg)]
    offs = hst.offsets_from_lengths(lens)
    n = int(offs[-1])
    values = 1e9 + rng.standard_normal(n)
    x = make_ragged(values, [offs], backend)
    for ddof in (0, 1):
        got = host(hr.var(x, ddof=ddof))
        for i, (a, b) in enumerate(itertools.pairwise(offs)):
            if b - a <= ddof:
                assert np.isnan(got[i])
                continue
            d = [float(v) for v in values[a:b] - values[a]]  # exact (Sterbenz)
            mean = math.fsum(d) / (b - a)
            want = math.fsum((v - mean) ** 2 for v in d) / (b - a - ddof)
            assert abs(got[i] - want) <= 1e-13 * want + 1e-300, (i, b - a, got[i], want)
    specials = rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e3], n)
    starts = offs[:-1][np.asarray(lens) > 0]
    specials[starts[::7]] = np.nan
    specials[starts[3::7]] = np.inf
    specials[starts[5::7] + 0] = 2.0**501  # past the masked steps' bound
    for vals in (values, specials):
        for dt in ("float64", "float32"):
            with np.errstate(over="ignore"):
                v = vals.astype(dt)  # 2**501 is inf in float32
            x = make_ragged(v, [offs], backend)
            for op in ("var", "std", "nanvar", "nanstd"):
                for ddof in (0, 1):
                    R.assert_result(call(op, x, ddof=ddof), R.reduce(op, v, [offs], ddof=ddof),
                                    err_msg=f"{op} {dt} {ddof}")



def test_variance_strided_long_segments():
    """1-D var/std/nanvar/nanstd of strided values (a step of 2, or -2) in segments longer
    than a block (128 elements), 1e9 + N(0, 1): within 1e-13 of the variance of the exact
    differences, as for contiguous values. (From an audit: the blocks' two passes, compiled
    with reassoc and inlined into the chunk loop, regrouped the deviations' sums for strided
    values, 3e-10 relative error; contiguous values were exact.)"""
    rng = np.random.default_rng(5)
    lens = [129, 1000, 0, 300, 17, 2500]
    offs = hst.offsets_from_lengths(lens)
    n = int(offs[-1])
    base = 1e9 + rng.standard_normal(2 * n)
    for values in (base[::2], base[::-2]):
        x = hr.RaggedArray(values, offs)
        for op in ("var", "std", "nanvar", "nanstd"):
            got = getattr(hr, op)(x)
            for i, (a, b) in enumerate(itertools.pairwise(offs)):
                if b == a:
                    assert np.isnan(got[i])
                    continue
                d = [float(v) for v in values[a:b] - values[a]]  # exact (Sterbenz)
                mean = math.fsum(d) / (b - a)
                want = math.fsum((v - mean) ** 2 for v in d) / (b - a)
                if op.endswith("std"):
                    want = math.sqrt(want)
                assert abs(got[i] - want) <= 1e-13 * want, (op, values.strides, i, got[i], want)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_variance_rows_blocks(dtype):
    """2-D var/std/nanvar/nanstd (rows of 3): a block whose values are all finite and
    within 2**500 takes two passes vectorised across the columns (var_rows_first/_second),
    others (a NaN, an inf or a value beyond 2**500 in any one column) run the declaration
    for every column. Segments crossing block edges (128 rows), ddof 0 and 1, against the
    oracle; a segment at 1e9 + N(0, 1) within 1e-13 of the variance of the exact
    differences, column by column (float32: its rounding); squares that overflow give inf,
    as NumPy."""
    rng = np.random.default_rng(29)
    lens = [300, 129, 17, 1000, 256, 9, 700, 400, 400, 0, 131]
    offs = hst.offsets_from_lengths(lens)
    n = int(offs[-1])
    values = rng.standard_normal((n, 3)) * rng.choice([1e-3, 1.0, 1e3], (n, 3))
    values[offs[1] : offs[2]] = 1e9 + rng.standard_normal((lens[1], 3))
    values[offs[6] + 300, 1] = np.nan  # one column of one block of a long segment
    values[offs[7] + 200, 2] = np.inf
    values[offs[8] + 200, 0] = 2.0**501  # past the fast blocks' bound (float32: inf)
    with np.errstate(over="ignore"):
        values = values.astype(dtype)
    x = hr.RaggedArray(values, offs)
    for op in ("var", "std", "nanvar", "nanstd"):
        for ddof in (0, 1):
            R.assert_result(call(op, x, ddof=ddof), R.reduce(op, values, [offs], ddof=ddof),
                            err_msg=f"{op} {ddof}")
    got = hr.var(x)
    a, b = offs[1], offs[2]
    tol = 1e-13 if dtype == "float64" else 2.0**-23
    for col in range(3):
        column = values[a:b, col].astype(np.float64)
        d = [float(v) for v in column - column[0]]  # exact (Sterbenz)
        mean = math.fsum(d) / (b - a)
        want = math.fsum((v - mean) ** 2 for v in d) / (b - a)
        assert abs(float(got[1, col]) - want) <= tol * want, (col, got[1, col], want)
    if dtype == "float32":
        return
    big = values[: offs[1]].copy()
    big[100:103, 1] = [1e308, -1e308, 1e308]
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.var(big, axis=0)
    got = hr.var(hr.RaggedArray(big, offs[:2]))
    np.testing.assert_allclose(got[0], want, rtol=1e-13)
    assert got[0, 1] == np.inf


@pytest.mark.parametrize("op", ["sum", "nansum", "mean", "nanmean"])
def test_float64_sum_strided_blocks(op):
    """1-D float64 sums of strided values (steps 2 and -1, a column of a 2-D array) keep
    docs/semantics.md's bound for them, (16 + 8 + log2(n / 128)) u sum|x|: each block of
    128 in partial sums of 16. Data built to show a sequential chain: 1.0 heading
    each block, u = 2**-53 elsewhere (1 + u rounds to 1). (From an audit: strided blocks
    ran one chain of 127 additions, 127u at n = 128 where np.sum of the same view is 15u,
    78.8u at n = 1e6 against the bound's 31.9u.)"""
    u = 2.0**-53
    for n in (128, 1000, 300_000):
        seg = np.full(n, u)
        seg[::128] = 1.0
        views = {"step 2": np.repeat(seg, 2)[::2], "step -1": seg[::-1].copy()[::-1],
                 "column": np.stack([seg, seg], axis=1)[:, 1]}
        exact = math.fsum(seg)  # correctly rounded: 0.5u of it at most
        bound = (16 + 8 + max(0.0, math.log2(n / 128)) + 1) * u * exact
        for name, v in views.items():
            assert v.strides[0] != v.itemsize
            got = float(getattr(hr, op)(hr.from_lengths(v, [n]))[0])
            if op.endswith("mean"):
                got *= n
            assert abs(got - exact) <= bound, (op, n, name, abs(got - exact) / (u * exact))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_strided_extremes_equal_contiguous(dtype):
    """1-D max/min/argmax/argmin and their nan forms of strided values (steps 2 and -1)
    equal those of a contiguous copy, bit for bit, and argmax/argmin NumPy's where no NaN
    is near: strided blocks of 16 or more have key passes of their own (four chains, and
    a scan for the index). Lengths around the chains and the blocks; ties, -0.0 and 0.0
    in one segment, infinities, NaN in some segments."""
    rng = np.random.default_rng(33)
    lengths = [0, 1, 15, 16, 17, 19, 31, 64, 129, 255, 256, 257, 1000, 3, 40, 40]
    n = sum(lengths)
    v = rng.integers(-20, 20, n).astype(dtype)  # ties in every long segment
    ends = np.cumsum(lengths)
    starts = ends - lengths
    v[starts[13]:ends[13]] = [-5.0, -0.0, 0.0]  # max 0: -0.0 is met first
    v[starts[8] + 100] = np.inf
    v[starts[9] + 7] = -np.inf
    v[starts[10] + 200] = np.nan
    v[starts[14]:ends[14]] = np.nan  # all NaN
    v[starts[12] + 3] = np.nan
    x = hr.from_lengths(v, lengths)
    for name, sv in (("step 2", np.repeat(v, 2)[::2]), ("step -1", v[::-1].copy()[::-1])):
        assert sv.strides[0] != sv.itemsize
        xs = hr.from_lengths(sv, lengths)
        for op in ("max", "min", "argmax", "argmin", "nanmax", "nanmin", "nanargmax",
                   "nanargmin"):
            f = getattr(hr, op)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # all-NaN segments of the nan forms
                want = f(x, fill_value=-1)
                got = f(xs, fill_value=-1)
            assert got.dtype == want.dtype
            assert np.array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}")), (
                name, op, got, want)
            if op in ("argmax", "argmin"):
                for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
                    seg = v[a:b]
                    if b > a and not np.isnan(seg).any():
                        assert got[i] == getattr(np, op)(seg), (name, op, i)


@pytest.mark.parametrize(("dtype", "ops"), [
    ("float32", ("max", "argmin", "nanmax", "nanargmin")),
    ("float64", ("min", "argmax", "nanmin", "nanargmax")),
])
def test_extremes_short_segments_ties_and_nan(dtype, ops):
    """1-D max/min/argmax/argmin and their nan forms over segments of 0-10 elements (on
    the CPU: one vector-IR step for 0-8, _cpu_bits.masked_max8 and the like, adjacent
    lanes merged as a tree of selects; then one plain loop) drawn from a few values:
    ties everywhere (the first of equal extremes wins), -0.0 beside 0.0, infinities, NaN
    at random positions (the first NaN wins; the nan forms skip it) and whole-NaN
    segments (empty for the nan forms), segments at the array's end. Each op kind in one
    dtype (each is a compile)."""
    rng = np.random.default_rng(29)
    lengths = rng.integers(0, 11, 700)
    lengths[[10, 20, 30, -6]] = [3, 6, 7, 8]
    n = int(lengths.sum())
    alphabet = np.array([np.nan, -np.inf, -1.5, -0.0, 0.0, 1.5, np.inf, 1.5], dtype)
    v = alphabet[rng.choice(len(alphabet), n, p=[0.1, 0.1, 0.15, 0.15, 0.15, 0.15, 0.1, 0.1])]
    offsets = hst.offsets_from_lengths(lengths)
    for k in (10, 20, -6):  # all NaN: empty for the nan forms
        v[offsets[k]:offsets[k + 1]] = np.nan
    v[offsets[30]:offsets[31]] = [np.nan, np.nan, -np.inf, -np.inf, np.nan, -np.inf, np.nan]
    x = make_ragged(v, [offsets], "cpu")
    for op in ops:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # all-NaN segments of the nan forms
            R.assert_result(call(op, x), R.reduce(op, v, [offsets]), err_msg=op)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_short_sums_one_masked_step(dtype):
    """1-D float sum/mean/nansum/nanmean over segments of 0-8 elements of mixed lengths
    (on the CPU: one 8-lane vector step, _cpu_bits.masked_sum8 and masked_nansum8, NaN
    lanes zeroed and not counted). Each result is the float64 sum as
    the documented fixed tree ((x0 + x4) + (x2 + x6)) + ((x1 + x5) + (x3 + x7)) of
    the segment's elements and zeros, bit for bit: whether the segment lies at the
    array's end (the step reads a copy of the last elements), the values' stride (an
    element-by-element form), or NaN/inf in the lanes past it (read and discarded)
    changes nothing; NaN and inf inside propagate."""
    rng = np.random.default_rng(31)
    lengths = rng.integers(0, 9, 600)
    lengths[-3:] = [8, 5, 3]  # the last segments read the array's end copy
    n = int(lengths.sum())
    v = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 9, n)).astype(dtype)
    v[rng.choice(n, 30, replace=False)] = rng.choice([np.nan, np.inf, -np.inf], 30)
    offsets = hst.offsets_from_lengths(lengths)

    def tree(x8):
        q = x8[:4] + x8[4:]
        return (q[0] + q[2]) + (q[1] + q[3])

    want, want_nan, counts = (np.empty(len(lengths)) for _ in range(3))
    with np.errstate(invalid="ignore"):
        for k in range(len(lengths)):
            x8 = np.zeros(8)
            x8[:lengths[k]] = v[offsets[k]:offsets[k + 1]]
            want[k] = tree(x8)
            counts[k] = np.count_nonzero(~np.isnan(x8[:lengths[k]]))
            want_nan[k] = tree(np.where(np.isnan(x8), 0.0, x8))  # nansum: NaN lanes zeroed
        mean = want / np.where(lengths > 0, lengths, np.nan)
        nanmean = want_nan / np.where(counts > 0, counts, np.nan)
    wide = np.full(2 * n, np.nan, dtype)
    wide[::2] = v
    for vals in (v, wide[::2]):
        x = make_ragged(vals, [offsets], "cpu")
        np.testing.assert_array_equal(hr.sum(x), want.astype(dtype))
        np.testing.assert_array_equal(hr.mean(x), mean.astype(dtype))
        np.testing.assert_array_equal(hr.nansum(x), want_nan.astype(dtype))
        np.testing.assert_array_equal(hr.nanmean(x), nanmean.astype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_groups_of_tiny_segments_match_one_by_one(dtype):
    """Runs of short 1-D segments (on an AVX2 CPU: 8 at a time in one group step, one
    gather per element position across the 8 segments: float64 sums of 0-4 elements,
    _cpu_bits.group_sum8; float extremes of 0-4, then 0-8 elements, group_max8 and
    group_max8w and the like) give each segment the bits it gets alone (one masked
    step): a segment's result must not depend on whether its neighbours let its group
    take that path. Half the values from a few (ties, -0.0 beside 0.0, infinities,
    NaN; the nan forms' all-NaN segments), half of any magnitude (sums that round:
    another order of the additions gives other bits); lengths 0-4 with some of 5-9
    (groups of the wider step, groups that fit neither); a run across a parallel
    chunk's edge (300,000 segments), int32 and strided offsets, strided values."""
    ops = ("sum", "mean", "nansum", "max", "min", "argmax", "argmin", "nanmax", "nanmin",
           "nanargmax", "nanargmin")
    rng = np.random.default_rng(47)
    alphabet = np.array([np.nan, -np.inf, -1.5, -0.0, 0.0, 1.5, np.inf, 0.25, 3.0], dtype)
    p = [0.08, 0.06, 0.14, 0.14, 0.14, 0.14, 0.06, 0.14, 0.10]

    def case(nseg):
        lengths = rng.integers(0, 5, nseg)
        odd = rng.random(nseg) < 0.03
        lengths[odd] = rng.choice([5, 6, 8, 9], int(odd.sum()))
        n = int(lengths.sum())
        v = alphabet[rng.choice(len(alphabet), n, p=p)]
        # half of them any value, of any magnitude: sums that round
        some = rng.random(n) < 0.5
        v[some] = (rng.standard_normal(int(some.sum()))
                   * 10.0 ** rng.integers(-8, 9, int(some.sum())))
        return v, hst.offsets_from_lengths(lengths)

    def bits(a):
        a = np.asarray(a)
        if a.dtype.kind == "f":  # NaN payloads aside
            a = np.where(np.isnan(a), np.nan, a)
        return a.view(f"u{a.itemsize}")

    # small: each segment against itself alone (fewer than 8 segments: no group)
    v, offsets = case(400)
    x = make_ragged(v, [offsets], "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN segments of the nan forms
        for op in ops:
            got = call(op, x)
            alone = np.array([call(op, make_ragged(v[offsets[k]:offsets[k + 1]],
                                                   [np.array([0, offsets[k + 1] - offsets[k]])],
                                                   "cpu"))[0]
                              for k in range(len(offsets) - 1)], got.dtype)
            assert np.array_equal(bits(got), bits(alone)), op
            R.assert_result(got, R.reduce(op, v, [offsets]), err_msg=op)
        # large (cut into parallel chunks): the bits of pieces of 20,000 segments
        # (one chunk each; the Python oracle over 300,000 segments took ~80 s a
        # dtype); other offsets and strides, each for one op (each form is a
        # compile): the same bits
        v, offsets = case(300_000)
        wide = np.repeat(v, 2)
        other = {"argmax": (v, offsets.astype(np.int32)),
                 "nanmin": (v, np.repeat(offsets, 3)[::3]),
                 "max": (wide[::2], offsets),
                 "sum": (v, offsets.astype(np.int32))}
        cuts = list(range(0, len(offsets) - 1, 20_000)) + [len(offsets) - 1]
        for op in ops:
            got = call(op, make_ragged(v, [offsets], "cpu"))
            pieces = [call(op, make_ragged(v[offsets[a]:offsets[b]],
                                           [offsets[a:b + 1] - offsets[a]], "cpu"))
                      for a, b in itertools.pairwise(cuts)]
            assert np.array_equal(bits(got), bits(np.concatenate(pieces))), op
            if op in other:
                vals, offs = other[op]
                again = call(op, make_ragged(vals, [offs], "cpu"))
                assert np.array_equal(bits(again), bits(got)), (op, offs.dtype, vals.strides)


def test_strided_kernel_forms_read_element_by_element():
    """The 1-D vector-IR steps for segments of 0-8 elements (masked_sum8, masked_max8,
    masked_var8...) load 8 elements as one vector, which only unit stride allows: the
    kernel form for other strides (chunks_1d_s) must call their element-by-element
    ``_s`` forms on ``values`` everywhere (a form reading a strided array as contiguous
    returns garbage, silently). Generated source only: nothing compiles."""
    import re

    from hrarray import _ops
    from hrarray._kernels import cpu as kcpu

    cases = [("sum", "float64"), ("mean", "float32"), ("nanmean", "float64"), ("sum", "int8"),
             ("sum", "uint32"), ("sum", "bool"), ("max", "float32"),
             ("argmin", "float64"), ("nanargmax", "float32"), ("var", "float32"),
             ("nanstd", "int32"), ("std", "bool")]
    for op, dt in cases:
        src = kcpu._source(_ops.build(op, dt).decl, True)
        unit, strided = src.split("def chunks_1d_s", 1)
        strided = strided.split("def fixup_1d", 1)[0]
        assert re.search(r"masked_\w+8\(values", unit), (op, dt)  # the vector step is used
        assert not re.search(r"masked_\w+8\(values", strided), (op, dt)
        assert re.search(r"masked_\w+8_s\(values", strided), (op, dt)


def test_empty_values_take_the_unit_stride_form(monkeypatch):
    """NumPy gives an empty array stride 0, which is not its item size: empty values took
    the strided form (chunks_1d_s), one more compile of 2-3 s per op and dtype for a call
    that reads nothing. They take the unit-stride form; the results are the table's."""
    from hrarray import _ops
    from hrarray._kernels import cpu as kcpu

    class Refuse:  # the strided form, as run() calls it (directly or resolved for its args)
        def __call__(self, *args):
            raise AssertionError("the strided form ran on empty values")

        def resolve(self, *args):
            return self

    for op, dt in [("sum", "float64"), ("max", "float32"), ("argmin", "int8")]:
        v = np.empty(0, dt)
        assert v.strides[0] != v.itemsize  # the case: NumPy's stride for an empty array
        kernel = kcpu.get_kernel(_ops.build(op, dt).decl)
        if not kernel.two_forms:  # (one form: nothing to tell apart)
            continue
        monkeypatch.setattr(kernel, "chunks_1d_s", Refuse())
        got = getattr(hr, op)(hr.RaggedArray(v, np.array([0, 0, 0])))
        assert got.dtype == R.result_dtype(op, dt)
        np.testing.assert_array_equal(got, [R.cast(R.empty_value(op, dt), got.dtype)] * 2)


@pytest.mark.parametrize("dtype", ["int64", "uint8", "bool"])
def test_integer_short_sums_wrap(dtype):
    """1-D integer and boolean sums over segments of 0-10 elements (on the CPU: one
    vector-IR step for 0-8, masked_isum8 / masked_usum8), unit-stride and strided,
    equal the exact sums modulo 2**64 (int64 wraps as NumPy's add does; uint8 sums
    into uint64 without sign extension; booleans count)."""
    rng = np.random.default_rng(41)
    lengths = rng.integers(0, 11, 400)
    n = int(lengths.sum())
    if dtype == "bool":
        v = rng.random(n) < 0.5
    else:
        info = np.iinfo(dtype)
        v = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    offsets = hst.offsets_from_lengths(lengths)
    out = np.uint64 if dtype == "uint8" else np.int64
    want = np.array([sum(int(t) for t in v[offsets[k]:offsets[k + 1]]) % 2**64
                     for k in range(len(lengths))], np.uint64).view(out)
    wide = np.zeros(2 * n, dtype)
    wide[::2] = v
    for vals in (v, wide[::2]):
        got = hr.sum(make_ragged(vals, [offsets], "cpu"))
        assert got.dtype == out
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float64", "int16"])
def test_variance_short_segments_any_stride(dtype):
    """var/std/nanvar over segments of 0-10 elements (on the CPU: one vector-IR step for
    0-8, masked_var8) of unit-stride and strided values against the oracle, with
    1e6-offset data (the shift keeps them exact), NaN and inf (the declaration's path)."""
    rng = np.random.default_rng(37)
    lengths = rng.integers(0, 11, 500)
    n = int(lengths.sum())
    if dtype == "float64":
        v = rng.standard_normal(n) + 1e6
        v[rng.choice(n, 12, replace=False)] = rng.choice([np.nan, np.inf, -np.inf], 12)
    else:
        v = rng.integers(-30000, 30000, n).astype(dtype)
    offsets = hst.offsets_from_lengths(lengths)
    wide = np.zeros(3 * n, dtype)
    wide[::3] = v
    for vals in (v, wide[::3]):
        x = make_ragged(vals, [offsets], "cpu")
        for op in ("var", "std", "nanvar"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                R.assert_result(call(op, x), R.reduce(op, v, [offsets]), err_msg=op)


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8"])
def test_2d_int_argextreme_long_pieces(dtype):
    """CPU 2-D integer argmax/argmin (the "simd" style's select per row) over pieces of
    hundreds of rows: ties everywhere, a dtype extreme first met late in a segment, an
    all-minimum column."""
    rng = np.random.default_rng(8)
    lengths = [1, 64, 65, 300, 0, 129, 700, 3]
    n, m = sum(lengths), 64
    info = np.iinfo(dtype)
    v = rng.integers(max(info.min, -3), min(info.max, 4), size=(n, m)).astype(dtype)
    v[250, 3] = info.max  # late in the 300-row segment
    v[500, 4] = info.min
    v[:, 6] = info.min
    v[900:, 7] = info.max  # first met in a later block of the 700-row segment
    offsets = hst.offsets_from_lengths(lengths)
    x = make_ragged(v, [offsets], "cpu")
    for op in ("argmax", "argmin", "max", "min"):
        R.assert_result(call(op, x), R.reduce(op, v, [offsets]), err_msg=op)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logsumexp_short_segments(dtype, backend):
    """Segments of 0-16 elements (on the CPU: a masked step of 8, then one block,
    with the polynomial exp when all finite): single elements exact, wide ranges,
    underflowing exps, NaN and +-inf at every position of a short segment, and segments
    at the array's end (the padded copies)."""
    rng = np.random.default_rng(13)
    lens = [int(x) for x in rng.integers(0, 17, 300)]
    n = int(sum(lens))
    values = (rng.standard_normal(n) * rng.choice([1.0, 50.0, 500.0], n)).astype(dtype)
    offs = hst.offsets_from_lengths(lens)
    for k in range(0, 300, 7):  # a special at position k % len in every 7th segment
        if lens[k]:
            values[offs[k] + k % lens[k]] = (np.nan, np.inf, -np.inf)[k % 3]
    got = hr.logsumexp(make_ragged(values, [offs], backend))
    R.assert_result(got, R.reduce("logsumexp", values, [offs]))
    ones = np.flatnonzero(np.asarray(lens) == 1)
    np.testing.assert_array_equal(to_host(got)[ones], values[offs[ones]])


def _guarded(nbytes: int) -> np.ndarray:
    """``nbytes`` of memory (uint8) ending where a page that faults on any access begins:
    a kernel that reads past the array's last byte crashes the test, where it could
    otherwise read what happens to lie there."""
    import ctypes
    import mmap

    if not sys.platform.startswith("linux"):
        pytest.skip("mprotect guard pages: Linux only")
    page = mmap.PAGESIZE
    total = -(-nbytes // page) * page + page
    buf = mmap.mmap(-1, total)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.mprotect(addr + total - page, page, 0) != 0:  # PROT_NONE
        pytest.skip("mprotect failed")
    return np.frombuffer(buf, np.uint8)[total - page - nbytes:total - page]


@pytest.mark.parametrize(("dtype", "pitch"), [("float32", 64), ("float64", 33), ("int32", 40)])
def test_row_strided_2d_equals_contiguous(dtype, pitch, monkeypatch):
    """2-D values whose rows are unit-stride but spaced wider than a row (``a[:, :m]`` of a
    wider ``a``) are read through a C-contiguous view of the wider rows (kernels.cpu
    _rows_view): every reduction's result, softmax's, cumsum's and attention_pool's equal a
    contiguous copy's, bit for bit, one chunk or several, and nothing past the last row's
    ``m`` columns is read (the view's last row reaches beyond them; here into a page
    that faults)."""
    from hrarray._kernels import cpu as cpu_kernels

    rng = np.random.default_rng(5)
    lengths = [0, 1, 2, 7, 0, 130, 3, 260, 1]
    n, m = sum(lengths), 20
    dt = np.dtype(dtype)
    size = (n - 1) * pitch + m
    base = _guarded(size * dt.itemsize).view(dt)
    if dt.kind == "f":
        base[:] = rng.normal(size=size).round(2)
        base[rng.integers(0, size, 3)] = (np.nan, np.inf, -np.inf)
    else:
        base[:] = rng.integers(-50, 50, size)
    v = np.lib.stride_tricks.as_strided(base, (n, m), (pitch * dt.itemsize, dt.itemsize))
    assert v[-1:, -1:].ctypes.data == base[-1:].ctypes.data  # the last row ends the memory
    assert not v.flags.c_contiguous
    x, xc = hr.from_lengths(v, lengths), hr.from_lengths(v.copy(), lengths)
    # (a few ops of each kernel style: every 2-D signature here is one more compile in a
    # run whose day's kernel shape is 1-D)
    ops = ["sum", "max", "argmax"] + (["var", "logsumexp"] if dt.kind == "f" else [])
    for chunks in (None, 3):
        monkeypatch.setattr(cpu_kernels, "FORCE_CHUNKS", chunks)
        for op in ops:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # all-NaN columns of nanargmin
                got, want = call(op, x), call(op, xc)
            assert got.dtype == want.dtype, op
            assert np.array_equal(got.view(f"u{got.itemsize}"),
                                  want.view(f"u{want.itemsize}")), (op, chunks, got, want)
        if dt.kind == "f":
            # the transforms' row kernels read the same view: softmax's map, attention_pool
            scores = x.with_values(rng.normal(size=n))
            for got, want in ((hr.softmax(x).values, hr.softmax(xc).values),
                              (hr.cumsum(x).values, hr.cumsum(xc).values),
                              (hr.attention_pool(x, scores), hr.attention_pool(xc, scores))):
                assert np.array_equal(got.view(f"u{got.itemsize}"),
                                      want.view(f"u{want.itemsize}")), (chunks, got, want)
    R.assert_result(call("sum", x), R.reduce("sum", v, [hst.offsets_from_lengths(lengths)]))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_fortran_order_by_columns(dtype, monkeypatch):
    """2-D values whose columns are contiguous (Fortran order, a transpose) from
    COLUMNS_MIN_ROWS rows on are reduced column by column through the 1-D kernel: each
    result column equals the 1-D reduction of that column, bit for bit, and the oracle's
    result; one chunk or several, fill_value and a user Reducer too; the columns shared
    out to two threads, each column's chunks run by one. (prod, not here, redoes a 2-D
    segment's whole row in order where a column's product is not finite.)"""
    from hrarray._kernels import cpu as cpu_kernels

    monkeypatch.setattr(cpu_kernels, "COLUMNS_MIN_ROWS", 8)
    monkeypatch.setattr(cpu_kernels, "PARALLEL_MIN_WORK", 64)  # columns across threads
    monkeypatch.setenv("HRARRAY_NUM_THREADS", "2")
    rng = np.random.default_rng(11)
    lengths = [0, 1, 2, 7, 0, 130, 3, 260, 1, 17]
    n, m = sum(lengths), 5
    dt = np.dtype(dtype)
    if dt.kind == "f":
        v = rng.normal(size=(n, m)).round(2).astype(dt)
        v[rng.integers(0, n, 3), rng.integers(0, m, 3)] = (np.nan, np.inf, -np.inf)
    else:
        v = rng.integers(-50, 50, (n, m)).astype(dt)
    for values in (np.asfortranarray(v), np.ascontiguousarray(v.T).T):
        assert values.strides[0] == dt.itemsize
        x = hr.from_lengths(values, lengths)
        offsets = hst.offsets_from_lengths(lengths)
        square = hr.Reducer(identity=0.0, combine=lambda a, b: a + b, map=lambda e: e * e)
        cases = [("sum", {}), ("argmax", {}), ("max", {"fill_value": 7})]
        if dt.kind == "f":
            cases += [("var", {}), ("logsumexp", {})]
        for chunks in (None, 3):
            monkeypatch.setattr(cpu_kernels, "FORCE_CHUNKS", chunks)
            # (a Reducer's kernels are compiled per process, not cached: one dtype)
            for op, kw in cases + ([(square, {})] if dtype == "float64" else []):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # all-NaN columns of the nan ops
                    got = hr.reduce(x, op, **kw)
                    cols = [hr.reduce(hr.from_lengths(values[:, c].copy(), lengths), op, **kw)
                            for c in range(m)]
                want = np.stack(cols, axis=1)
                assert got.dtype == want.dtype
                assert np.array_equal(got.view(f"u{got.itemsize}"),
                                      want.view(f"u{want.itemsize}")), (op, kw, chunks)
                if isinstance(op, str) and not kw:
                    R.assert_result(got, R.reduce(op, values, [offsets]), err_msg=op)


@pytest.mark.parametrize(("dtype", "inner", "narrow_rows", "strided"),
                         [("float32", (64,), None, False), ("float32", (64,), 100, False),
                          ("float32", (20,), None, False), ("float32", (8,), None, False),
                          ("float32", (64,), None, True),
                          ("float64", (64,), None, False),
                          ("float64", (1024,), None, False)])
def test_2d_argextreme_row_blocks(dtype, inner, narrow_rows, strided, monkeypatch):
    """CPU 2-D argmax/argmin (and the nan* ops) over long pieces: later rows that
    improve, ties (0.0 and -0.0 among them), a NaN or an infinity first seen late in a
    200-row segment, all-(-inf) columns, NaN rows before values, all-NaN columns.
    float64 runs every piece in one (value, row) pass. float32 with unit column stride
    and at least 16 columns runs strips of 16 columns over blocks of rows (20 columns:
    the last strip overlaps the first); narrower or ``strided`` values one row-by-row
    pass with an int32 row index; either way pieces beyond
    NARROW_ROWS (2**31 - 1 rows) in blocks of rows (the best value per block, then its
    first row): ``narrow_rows`` lowers that limit (a kernel generated for the test) so
    the float32 pieces longer than it take the row blocks."""
    if narrow_rows is not None:
        from hrarray._kernels import cpu as kc

        monkeypatch.setattr(kc, "NARROW_ROWS", narrow_rows)
        monkeypatch.setattr(kc, "_compiled", {})  # regenerate with that literal
    rng = np.random.default_rng(7)
    lengths = [1, 7, 8, 9, 0, 64, 65, 200, 130, 3]
    n = sum(lengths)
    m = int(np.prod(inner))
    rows = np.arange(n, dtype=np.float64)[:, None]
    # a rising and a falling trend: most blocks improve on the last, for max and min
    v = np.where(np.arange(m) % 2 == 0, rows, -rows) + rng.integers(-3, 4, size=(n, m))
    v[rng.random(v.shape) < 0.3] = 0.0  # ties within and across blocks
    v[rng.random(v.shape) < 0.1] = -0.0
    v = v.astype(dtype)
    pick = rng.integers(0, n, size=(6, 2))
    v[pick[0, 0], pick[0, 1] % m] = np.nan
    v[pick[1, 0], pick[1, 1] % m] = -np.nan
    v[pick[2, 0], pick[2, 1] % m] = np.inf
    v[pick[3, 0], pick[3, 1] % m] = -np.inf
    v[:, 5 % m] = -np.inf
    v[150:, 7 % m] = np.nan  # a NaN first met in a later block of the 200-row segment
    # for the nan* ops: NaN rows first in the 200-row segment, an all-NaN 65-row one
    v[154:300, 11 % m] = np.nan
    v[89:154, 13 % m] = np.nan
    v = v.reshape(n, *inner)
    if strided:
        v = np.repeat(v, 2, axis=1)[:, ::2]
        assert v.strides[1] == 2 * v.itemsize
    offsets = hst.offsets_from_lengths(lengths)
    x = make_ragged(v, [offsets], "cpu")
    for op in ("argmax", "argmin", "max", "min", "nanargmax", "nanargmin", "nanmax", "nanmin"):
        R.assert_result(call(op, x), R.reduce(op, v, [offsets]), err_msg=op)


def test_long_segment_rows_wider_than_the_fixup_tile(backend):
    """Rows of 20 columns (the CUDA fix-up's column tiles are FIX_CW = 8 wide: 8, 8 and a
    last tile of 4) with segments spanning many reduce blocks, so the fix-up's whole-block
    path combines their carries in every column tile; short and empty segments between."""
    sim = backend == "cuda" and not REAL_GPU
    rng = np.random.default_rng(7)
    lengths = [0, 3, 150, 0, 1, 97, 2] if sim else [0, 3, 5000, 0, 1, 20011, 2, 700]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    v = rng.standard_normal((int(offsets[-1]), 20))
    v[160, 19] = v[10, 17] = np.nan  # a NaN in the last column tile of each long segment
    x = make_ragged(v, [offsets], backend)
    # (mean is sum's kernel: left out under the simulator, whose cost is per block)
    for op in ("sum", "max", "argmax", "nanargmin") if sim else ("sum", "mean", "max", "argmax",
                                                                  "nanargmin"):
        R.assert_result(call(op, x), R.reduce(op, v, [offsets]), err_msg=op)


_STEP_VALUES = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.0, 7.0]


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "uint16", "bool"])
@pytest.mark.parametrize("op", ["argmax", "argmin", "nanargmax"])
@settings(deadline=None, max_examples=examples("cpu", cpu=300))
@given(data=st.data())
def test_declared_step_is_combine_of_map(op, dtype, data):
    """A declaration's in-order ``step(acc, v, j)`` (the CUDA element loop's fold) equals
    ``combine(acc, map(v, j))`` for every state ``acc`` an in-order fold can hold (the
    identity, or a value with an index below ``j``) and every value ``v``: NaN of either
    sign first, ties, -0.0 against 0.0, infinities."""
    from hrarray import _ops

    decl = _ops.build(op, dtype).decl
    if decl.step is None:
        assert op.startswith("nan")  # the nan variants fold through combine
        return
    dt = np.dtype(dtype)
    vt = _ops.build(op, dtype).value_dtype.type
    if dt.kind == "f":
        pool = [dt.type(x) for x in _STEP_VALUES]
    elif dt.kind == "b":
        pool = [np.bool_(False), np.bool_(True)]
    else:
        info = np.iinfo(dt)
        pool = [dt.type(x) for x in (info.min, info.max, 0, 1, 3)]
    states = [decl.identity]
    for _ in range(data.draw(st.integers(0, 3))):  # a state reached in order
        j = len(states) - 1
        states.append(decl.combine(states[-1], decl.map(vt(data.draw(st.sampled_from(pool))), j)))
    acc = states[-1]
    j = data.draw(st.integers(len(states) - 1, len(states) + 5))
    v = vt(data.draw(st.sampled_from(pool)))
    got, want = decl.step(acc, v, j), decl.combine(acc, decl.map(v, j))
    assert got[1] == want[1], (acc, v, j, got, want)
    assert np.array_equal(np.array(got[0]), np.array(want[0]), equal_nan=True)
    if dt.kind == "f":
        assert np.signbit(got[0]) == np.signbit(want[0]), (acc, v, j, got, want)
