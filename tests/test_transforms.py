"""Segment-wise transforms (API.md section 3) against the pure-Python oracle in ``reference.py``.

``softmax``, ``log_softmax``, ``cumsum``, ``broadcast`` and ``attention_pool`` on every dtype
family, inner shape, depth and ``levels=``, with empty segments, non-compact offsets, NaN and
±inf; then identities (softmax sums to 1, equal scores give the mean, a one-row segment gives
its row, shift invariance, ``levels=k`` equals the flattened transform, heads equal separate
runs), the parallel schedule forced onto small inputs, and errors.

A CUDA backend that lacks one of the transform kernels raises ``NotImplementedError``; only
that skips a ``cuda`` case (see :func:`run`).
"""

import itertools
import math

import numpy as np
import pytest
import reference as R
import strategies as hst
from conftest import examples, is_backend_array, make_ragged, to_backend, to_host
from hypothesis import given, settings
from hypothesis import strategies as st

import hrarray as hr
from hrarray._kernels import cpu as cpu_kernels

SOFTMAX_DTYPES = hst.REAL_DTYPES  # bool, ints, floats (complex: TypeError)
SCORE_DTYPES = ("int8", "float16", "float32", "float64")
BROADCAST_DTYPES = hst.REAL_DTYPES + hst.COMPLEX_DTYPES


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def run(backend, fn, *args, **kw):
    """``fn(*args, **kw)``; on ``cuda`` a missing transform kernel (NotImplementedError) skips."""
    try:
        return fn(*args, **kw)
    except NotImplementedError as exc:
        if backend == "cuda":
            pytest.skip(f"the CUDA backend does not implement this transform yet: {exc}")
        raise


def transform(op, x, style, **kw):
    """``hr.op(x, **kw)`` or the method ``x.op(**kw)``."""
    if style == "method":
        return getattr(x, op)(**kw)
    return getattr(hr, op)(x, **kw)


def ragged_1d(values, lengths, backend="cpu", start=0):
    values = np.asarray(values)
    return make_ragged(values, [hst.offsets_from_lengths(lengths, start)], backend)


def leaf(a):
    """Host leaf values of a RaggedArray, or a host array."""
    return R.parts(a)[0] if R.is_ragged(a) else to_host(a)


class Unchanged:
    """Snapshot of the caller's arrays; ``check()`` asserts nothing was written."""

    def __init__(self, *arrays):
        self.arrays = [(a, np.array(a, copy=True)) for a in arrays]

    def check(self):
        for a, before in self.arrays:
            np.testing.assert_array_equal(a, before, err_msg="an input was modified", strict=True)


def admit_rounding(ref):
    """The softmax bound of ``reference.py``, widened where it excludes the correctly rounded
    result itself: it is relative only (a float16 result in the subnormal range is off by up to
    half a subnormal spacing), and a ``-inf`` element's exact 0 gets the bound 0 * inf = NaN."""
    with np.errstate(invalid="ignore"):
        own = np.abs(ref.value.astype(np.float64) - ref.exact)
    tol = np.where(np.isnan(ref.tol), 0.0, ref.tol)
    return np.fmax(tol, own)


def flattened(values, offsets_list, levels):
    """Leaf values and offsets of the compact level-``levels`` segments as one level."""
    values, offsets_list = R.compact(values, offsets_list)
    return values, [R.compose(offsets_list, levels)]


def n_top(offsets_list, levels):
    """Number of (reachable) level-``levels`` segments."""
    _, offs = R.compact(np.zeros(int(np.max(offsets_list[0], initial=0)) + 1), offsets_list)
    return len(R.compose(offs, levels)) - 1


# --------------------------------------------------------------------------
# every transform against the oracle
# --------------------------------------------------------------------------


@st.composite
def softmax_cases(draw, small, dtypes=SOFTMAX_DTYPES, odt=None):
    # one kernel shape per dtype and run on the CPU (strategies.kernel_ndim)
    spec = draw(hst.ragged_for("softmax", dtypes=dtypes, small=small, nan=True, inf=True,
                               neg_inf=True, offset_dtypes=odt))
    levels = draw(st.integers(1, spec.depth))
    style = draw(st.sampled_from(["function", "method"]))
    return spec, levels, style


def check_softmax(op, case, backend):
    spec, levels, style = case
    keep = Unchanged(spec.values, *spec.offsets)
    x = make_ragged(spec.values, spec.offsets, backend)
    got = run(backend, transform, op, x, style, levels=levels)
    ref = R.softmax(spec.values, spec.offsets, levels, log=op == "log_softmax")
    if ref.tol is not None:
        ref = ref._replace(tol=admit_rounding(ref))
    R.assert_transform(got, ref, err_msg=f"{op}({spec!r}, levels={levels}) via {style}")
    assert got.device == backend
    assert is_backend_array(got.leaf_values, backend)
    keep.check()
    np.testing.assert_array_equal(to_host(x.leaf_values), spec.values)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_matches_reference(op, backend):
    """Every real dtype family × inner shape × depth × levels, empty segments, NaN and ±inf,
    non-compact offsets; dtype, compact structure, device; inputs untouched."""

    @settings(max_examples=examples(backend, cpu=22, cuda=8))
    @given(case=softmax_cases(small=backend == "cuda"))
    def check(case):
        check_softmax(op, case, backend)

    check()


@st.composite
def cumsum_cases(draw, small, real=hst.REAL_DTYPES, complex_=hst.COMPLEX_DTYPES, odt=None):
    # complex: no NaN or inf here, since reference.py bounds both parts of a prefix holding
    # one by NaN; test_cumsum_complex_nan_inf covers them
    spec = draw(
        hst.ragged_for("cumsum", dtypes=real, small=small, nan=True, inf=True, offset_dtypes=odt)
        | hst.ragged_for("cumsum", dtypes=complex_, small=small, offset_dtypes=odt)
    )
    levels = draw(st.integers(1, spec.depth))
    exclusive = draw(st.booleans())
    style = draw(st.sampled_from(["function", "method"]))
    return spec, levels, exclusive, style


def check_cumsum(case, backend):
    spec, levels, exclusive, style = case
    keep = Unchanged(spec.values, *spec.offsets)
    x = make_ragged(spec.values, spec.offsets, backend)
    kw = {"levels": levels}
    if exclusive or levels == 1:
        kw["exclusive"] = exclusive
    got = run(backend, transform, "cumsum", x, style, **kw)
    ref = R.cumsum(spec.values, spec.offsets, levels, exclusive=exclusive)
    R.assert_transform(got, ref, err_msg=f"cumsum({spec!r}, {kw}) via {style}")
    assert got.device == backend
    keep.check()


def test_cumsum_matches_reference(backend):
    """Inclusive and exclusive, restarting per segment, every dtype family (complex too):
    ints exact with wraparound, floats within the summation bound (float32 in float64)."""

    @settings(max_examples=examples(backend, cpu=30, cuda=8))
    @given(case=cumsum_cases(small=backend == "cuda"))
    def check(case):
        check_cumsum(case, backend)

    check()


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_cumsum_running_sum_bound(dtype, backend):
    """A long segment of a constant 0.1 (a running sum drifts by ~n*u*sum|x|: the first CI
    failure of the scan bound, found by hypothesis) and a float32 canary: accumulating in
    float64 keeps the last prefix of a million float32 0.1 within 1e-6 relative."""
    n = 1558 if backend == "cpu" else 200
    values = np.full(n, 0.1 + 0.1j if dtype == "complex128" else 0.1, dtype=dtype)
    offsets = [np.array([0, n])]
    got = run(backend, transform, "cumsum", make_ragged(values, offsets, backend), "function")
    R.assert_transform(got, R.cumsum(values, offsets), err_msg="constant 0.1")
    if backend == "cpu":
        big = np.full(10**6, 0.1, dtype=np.float32)
        last = np.asarray(hr.cumsum(hr.from_lengths(big, [big.size])).values)[-1]
        assert abs(float(last) - 1e6 * float(np.float32(0.1))) <= 1e-6 * 1e5


@st.composite
def broadcast_cases(draw, small, odt=None):
    spec = draw(hst.ragged(dtypes=("int8",), small=small, offset_dtypes=odt))
    levels = draw(st.integers(1, spec.depth))
    dtype = draw(st.sampled_from(BROADCAST_DTYPES))
    row = draw(st.sampled_from(hst.INNER_SHAPES))
    nseg = n_top(spec.offsets, levels)
    kind = draw(st.sampled_from(hst.value_kinds(dtype)))
    per = hst.make_values(draw(st.integers(0, 2**32 - 1)), dtype, (nseg, *row), kind)
    per = hst.sprinkle(per, 5, nan=True, inf=True)
    return spec, levels, per


def check_broadcast(case, backend):
    spec, levels, per = case
    keep = Unchanged(spec.values, per, *spec.offsets)
    x = make_ragged(spec.values, spec.offsets, backend)
    got = run(backend, hr.broadcast, to_backend(per, backend), x, levels=levels)
    want, offsets = R.broadcast(per, spec.values, spec.offsets, levels)
    R.assert_transform(
        got, R.TransformRef(want, None, None, offsets), err_msg=f"{spec!r}, levels={levels}"
    )
    assert got.dtype == per.dtype
    assert got.device == backend
    keep.check()


def test_broadcast_matches_reference(backend):
    """Row i over segment i (of the level-``levels`` segments), every dtype (float16 and
    complex too), row shapes (), (3,), (2, 3): bitwise copies, x's compact structure."""

    @settings(max_examples=examples(backend, cpu=28, cuda=8))
    @given(case=broadcast_cases(small=backend == "cuda"))
    def check(case):
        check_broadcast(case, backend)

    check()


@st.composite
def attention_cases(draw, small, dtypes=hst.REAL_DTYPES, odt=None):
    spec = draw(hst.ragged_for("attention_pool", dtypes=dtypes, small=small, nan=True,
                               offset_dtypes=odt))
    levels = draw(st.integers(1, spec.depth))
    sdt = draw(st.sampled_from(SCORE_DTYPES))
    heads = draw(st.sampled_from([None, 1, 3]))
    n = spec.values.shape[0]
    shape = (n,) if heads is None else (n, heads)
    kind = draw(st.sampled_from(("normal", "uniform", "ties", "constant") if sdt != "int8"
                                else ("ties", "full")))
    seed = draw(st.integers(0, 2**32 - 1))
    scores = hst.make_values(seed, sdt, shape, kind, magnitude=draw(st.sampled_from([4.0, 50.0])))
    if draw(st.booleans()):
        scores = hst.sprinkle(scores, seed + 3, nan=True)
    fill = draw(st.none() | hst.fill_values("f"))
    style = draw(st.sampled_from(["function", "method"]))
    return spec, scores, levels, fill, style


def empty_attention(spec, scores, levels, fill):
    """The reference of attention_pool when no element is reachable: every segment empty."""
    values, offsets_list = R.compact(spec.values, spec.offsets)
    nseg = len(R.compose(offsets_list, levels)) - 1
    heads = () if scores.ndim == 1 else (scores.shape[1],)
    dt = np.result_type(spec.values.dtype, scores.dtype)
    dt = dt if dt.kind == "f" else np.dtype(np.float64)
    value = np.full((nseg, *heads, *values.shape[1:]), 0.0 if fill is None else fill, dt)
    return R.Ref(value, None, None, offsets_list[levels:])


def check_attention(case, backend):
    spec, scores, levels, fill, style = case
    keep = Unchanged(spec.values, scores, *spec.offsets)
    x = make_ragged(spec.values, spec.offsets, backend)
    s = make_ragged(scores, spec.offsets, backend)
    kw = {"levels": levels}
    if fill is not None:
        kw["fill_value"] = fill
    if style == "method":
        got = run(backend, x.attention_pool, s, **kw)
    else:
        got = run(backend, hr.attention_pool, x, s, **kw)
    compact_scores = R.compact(scores, spec.offsets)[0]
    if compact_scores.shape[0] == 0:
        ref = empty_attention(spec, scores, levels, fill)  # reference.py cannot reshape 0 rows
    else:
        ref = R.attention_pool(spec.values, spec.offsets, compact_scores, levels, fill_value=fill)
    R.assert_result(got, ref, err_msg=f"attention_pool({spec!r}, scores={scores!r}, {kw})")
    if levels == spec.depth:
        assert is_backend_array(got, backend), type(got)
    else:
        assert got.device == backend
    keep.check()


def test_attention_pool_matches_reference(backend):
    """One pass online softmax pooling: every value dtype × score dtype, heads, inner shapes,
    levels, fill_value, NaN in values and scores, against fsum-exact weights."""

    @settings(max_examples=examples(backend, cpu=30, cuda=8))
    @given(case=attention_cases(small=backend == "cuda"))
    def check(case):
        check_attention(case, backend)

    check()


# --------------------------------------------------------------------------
# the parallel schedule, forced onto small inputs (cpu)
# --------------------------------------------------------------------------


@pytest.fixture(params=[2, 16])
def forced_chunks(request, monkeypatch):
    """Cut every CPU map/scan into ``k`` merge-path chunks and run reductions in parallel
    whatever the size: chunk edges then cut segments (scan carries, head/tail partials)."""
    monkeypatch.setattr(cpu_kernels, "FORCE_CHUNKS", request.param)
    return request.param


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "cumsum", "broadcast", "attention_pool"])
def test_parallel_schedule_small(op, forced_chunks):
    # A few dtypes: the chunking is the same code for every dtype, and each dtype is one
    # more kernel compile (the full dtype matrix runs in the *_matches_reference tests).
    f = ("float64", "float32")
    strategy = {
        "softmax": softmax_cases(small=False, dtypes=f),
        "log_softmax": softmax_cases(small=False, dtypes=f),
        "cumsum": cumsum_cases(small=False, real=(*f, "int32"), complex_=("complex128",)),
        "broadcast": broadcast_cases(small=False),
        "attention_pool": attention_cases(small=False, dtypes=f),
    }[op]

    @settings(max_examples=12)
    @given(case=strategy)
    def check(case):
        if op in ("softmax", "log_softmax"):
            check_softmax(op, case, "cpu")
        elif op == "cumsum":
            check_cumsum(case, "cpu")
        elif op == "broadcast":
            check_broadcast(case, "cpu")
        else:
            check_attention(case, "cpu")

    check()


@pytest.mark.parametrize("op", ["softmax", "cumsum", "broadcast", "attention_pool"])
def test_int32_offsets_cpu(op):
    """int32 offsets on the CPU, read as they are. The other CPU property tests draw int64
    offsets only: every offsets dtype is one more compiled kernel per op and dtype."""
    f, i32 = ("float64",), (np.int32,)
    strategy = {
        "softmax": softmax_cases(small=False, dtypes=f, odt=i32),
        "cumsum": cumsum_cases(small=False, real=f, complex_=("complex128",), odt=i32),
        "broadcast": broadcast_cases(small=False, odt=i32),
        "attention_pool": attention_cases(small=False, dtypes=f, odt=i32),
    }[op]

    @settings(max_examples=10)
    @given(case=strategy)
    def check(case):
        assert case[0].offsets[0].dtype == np.int32
        {
            "softmax": lambda: check_softmax(op, case, "cpu"),
            "cumsum": lambda: check_cumsum(case, "cpu"),
            "broadcast": lambda: check_broadcast(case, "cpu"),
            "attention_pool": lambda: check_attention(case, "cpu"),
        }[op]()

    check()


def _segments(lengths):
    offs = hst.offsets_from_lengths(lengths)
    return offs, [slice(int(offs[i]), int(offs[i + 1])) for i in range(len(lengths))]


@pytest.mark.parametrize("inner", [(), (3,)])
def test_parallel_large(inner):
    """The production schedule on a large input: one huge segment spanning every chunk among
    many short and empty ones; NumPy per-segment loops as the reference."""
    rng = np.random.default_rng(7)
    lens = rng.integers(0, 6, 40_000)
    lens[rng.random(lens.shape) < 0.3] = 0
    lens[20_000] = 150_001
    offs, segs = _segments(lens)
    n = int(offs[-1])
    v = rng.standard_normal((n, *inner))
    w = rng.standard_normal(n) * 3
    x = hr.from_lengths(v, lens)
    s = x.with_values(w)
    sm = hr.softmax(x).values
    lsm = hr.log_softmax(x).values
    cs = hr.cumsum(x).values
    ex = hr.cumsum(x, exclusive=True).values
    att = hr.attention_pool(x, s)
    per = rng.standard_normal((len(lens), *inner))
    bc = hr.broadcast(per, x).values
    # The references are built segment by segment (NumPy per segment) and compared once:
    # an assert per segment cost ~15 s of the 20 s this test took.
    want_sm, want_lsm, want_cs = (np.empty_like(v) for _ in range(3))
    want_att = np.zeros_like(per)
    for i, sl in enumerate(segs):
        seg = v[sl]
        if seg.shape[0] == 0:
            continue  # empty: attention_pool gives 0 (want_att's zeros)
        e = np.exp(seg - seg.max(axis=0))
        want_sm[sl] = e / e.sum(axis=0)
        want_lsm[sl] = np.log(e / e.sum(axis=0))
        want_cs[sl] = np.cumsum(seg, axis=0)
        ww = np.exp(w[sl] - w[sl].max())
        ww /= ww.sum()
        want_att[i] = np.tensordot(ww, seg, axes=(0, 0))
    np.testing.assert_allclose(sm, want_sm, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(lsm, want_lsm, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cs, want_cs, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ex, want_cs - v, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(att, want_att, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(att[lens == 0], 0.0)
    np.testing.assert_array_equal(bc, np.repeat(per, lens, axis=0))


def test_parallel_large_integer_cumsum_exact():
    rng = np.random.default_rng(3)
    lens = rng.integers(0, 50, 10_000)
    lens[123] = 200_000
    offs, segs = _segments(lens)
    v = rng.integers(-(2**62), 2**62, int(offs[-1]), dtype=np.int64)
    got = hr.cumsum(hr.from_lengths(v, lens)).values
    want = np.concatenate([np.cumsum(v[sl]) for sl in segs])
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------
# identities
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_sums_to_one(dtype, backend):
    rng = np.random.default_rng(1)
    lens = [0, 1, 5, 0, 33, 200, 2]
    v = (rng.standard_normal((sum(lens), 2)) * 30).astype(dtype)
    x = ragged_1d(v, lens, backend)
    sm = run(backend, hr.softmax, x)
    totals = to_host(hr.sum(sm.to_numpy()))
    want = np.array([[0, 0] if n == 0 else [1, 1] for n in lens], dtype=dtype)
    np.testing.assert_allclose(totals, want, rtol=0, atol=1e-6 if dtype == "float32" else 1e-13)
    got = leaf(sm)
    assert got.dtype == np.dtype(dtype)
    assert ((got >= 0) & (got <= 1)).all()


@pytest.mark.parametrize("dtype", ["float64", "int32", "int64"])
@pytest.mark.parametrize("inner", [(), (3,)])
def test_log_softmax_exact_near_large_values(dtype, inner, backend):
    """log_softmax is ``(v - m) - log(s)``: near a large max ``m`` its results keep their
    own precision, not ``|m|``'s (``v - (m + log s)`` rounds at ulp(m): 1.1e-7 absolute
    error for values near 2**31, which the CPU map once made by reassociating)."""
    rng = np.random.default_rng(6)
    lens = [5, 0, 3, 17, 1, 40]
    n = sum(lens)
    big = 2**31 - 1 if dtype == "int32" else 2**40
    v = (big - rng.integers(0, 6, size=(n, *inner))).astype(dtype)
    x = ragged_1d(v, lens, backend)
    got = leaf(run(backend, hr.log_softmax, x))
    want = np.empty(v.shape)
    starts = np.concatenate([[0], np.cumsum(lens)])
    for a, b in itertools.pairwise(starts):
        if a == b:
            continue
        seg = v[a:b].astype(np.float64).reshape(b - a, -1)
        for c in range(seg.shape[1]):
            d = seg[:, c] - seg[:, c].max()  # exact: integers far below 2**53
            lse = math.log(math.fsum(math.exp(t) for t in d))
            want[a:b].reshape(b - a, -1)[:, c] = d - lse
    # a few ulp of results in [-6, 0] (the bug gave 2e-5 at 2**40)
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-15)


@pytest.mark.parametrize("inner", [(), (3,), (2, 3)])
def test_attention_equal_scores_is_mean(inner, backend):
    rng = np.random.default_rng(2)
    lens = [3, 0, 1, 17, 130]
    v = rng.standard_normal((sum(lens), *inner))
    x = ragged_1d(v, lens, backend)
    for c in (0.0, -5.5, 700.0):
        s = ragged_1d(np.full(sum(lens), c), lens, backend)
        got = to_host(run(backend, hr.attention_pool, x, s))
        mean = to_host(hr.mean(x.to_numpy()))
        nonempty = np.asarray(lens) > 0
        np.testing.assert_allclose(got[nonempty], mean[nonempty], rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(got[~nonempty], 0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_one_row_segment_is_that_row(dtype, backend):
    """A one-element segment pools to exactly its row (whatever its score), and softmax of a
    one-element segment is exactly 1 (log_softmax 0)."""
    rng = np.random.default_rng(4)
    v = (rng.standard_normal((4, 3)) * 100).astype(dtype)
    x = ragged_1d(v, [1, 1, 1, 1], backend)
    s = ragged_1d(np.array([-300.0, 0.0, 5.0, 1e3]), [1, 1, 1, 1], backend)
    got = to_host(run(backend, hr.attention_pool, x, s))
    np.testing.assert_array_equal(got, v.astype(got.dtype))
    np.testing.assert_array_equal(leaf(run(backend, hr.softmax, x)), 1.0)
    np.testing.assert_array_equal(leaf(run(backend, hr.log_softmax, x)), 0.0)


def test_shift_invariance(backend):
    """softmax(x + c) == softmax(x) and attention_pool(x, scores + c) == attention_pool(x,
    scores), within rounding (the max shift makes both exact in exact arithmetic)."""
    rng = np.random.default_rng(5)
    lens = [4, 0, 1, 50, 9]
    n = sum(lens)
    v = rng.standard_normal((n, 2))
    w = rng.standard_normal(n) * 4
    x = ragged_1d(v, lens, backend)
    base_sm = leaf(run(backend, hr.softmax, x))
    base_att = to_host(run(backend, hr.attention_pool, x, ragged_1d(w, lens, backend)))
    for c in (-1e3, 3.25, 650.0):
        sm = leaf(run(backend, hr.softmax, ragged_1d(v + c, lens, backend)))
        np.testing.assert_allclose(sm, base_sm, rtol=1e-10, atol=1e-15)
        att = to_host(run(backend, hr.attention_pool, x, ragged_1d(w + c, lens, backend)))
        np.testing.assert_allclose(att, base_att, rtol=1e-10, atol=1e-12)


@st.composite
def nested_cases(draw, small, op):
    # on the CPU in this run's kernel shape for the op and dtype (strategies.kernel_ndim)
    spec = draw(hst.ragged_for(op, dtypes=("float32", "float64", "int32"), depths=(2, 3),
                               small=small, nan=True, inf=True))
    levels = draw(st.integers(2, spec.depth))
    return spec, levels


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "cumsum", "broadcast", "attention_pool"])
def test_levels_equal_flattened(op, backend):
    """``levels=k`` is the transform of the level-k segments flattened to one level: the same
    leaf values bitwise, x's structure kept (attention_pool: reduces k levels)."""

    @settings(max_examples=examples(backend, cpu=25, cuda=5))
    @given(case=nested_cases(small=backend == "cuda", op=op))
    def check(case):
        spec, levels = case
        x = make_ragged(spec.values, spec.offsets, backend)
        fv, fo = flattened(spec.values, spec.offsets, levels)
        flat = make_ragged(fv, fo, backend)
        if op == "broadcast":
            per = np.arange(n_top(spec.offsets, levels), dtype=np.float64) * 1.5
            got = run(backend, hr.broadcast, to_backend(per, backend), x, levels=levels)
            want = run(backend, hr.broadcast, to_backend(per, backend), flat)
        elif op == "attention_pool":
            w = hst.make_values(1, np.float64, (spec.values.shape[0],), "normal", magnitude=4.0)
            s = make_ragged(w, spec.offsets, backend)
            got = run(backend, hr.attention_pool, x, s, levels=levels)
            fw = R.compact(w, spec.offsets)[0]
            want = run(backend, hr.attention_pool, flat, make_ragged(fw, fo, backend))
            if levels == spec.depth:
                np.testing.assert_array_equal(to_host(got), to_host(want))
            else:
                assert got.depth == spec.depth - levels
                np.testing.assert_array_equal(leaf(got), to_host(want))
            return
        else:
            got = run(backend, getattr(hr, op), x, levels=levels)
            want = run(backend, getattr(hr, op), flat)
        assert got.depth == spec.depth
        _, offs = R.compact(spec.values, spec.offsets)
        for o, r in zip(R.parts(got)[1], offs, strict=True):
            np.testing.assert_array_equal(o, r)
        np.testing.assert_array_equal(leaf(got), leaf(want))

    check()


@pytest.mark.parametrize("inner", [(), (2, 3)])
def test_heads_equal_single_head_runs(inner, backend):
    """Scores ``(n, h)`` give ``(nsegments, h, *inner)``: head ``k`` equals a run with the
    1-D scores ``scores[:, k]`` (bitwise)."""
    rng = np.random.default_rng(6)
    lens = [2, 0, 7, 1, 40]
    n = sum(lens)
    v = rng.standard_normal((n, *inner)).astype(np.float32)
    w = rng.standard_normal((n, 4)).astype(np.float32) * 3
    x = ragged_1d(v, lens, backend)
    got = to_host(run(backend, hr.attention_pool, x, ragged_1d(w, lens, backend)))
    assert got.shape == (len(lens), 4, *inner)
    assert got.dtype == np.float32
    for k in range(4):
        one = to_host(run(backend, hr.attention_pool, x,
                          ragged_1d(np.ascontiguousarray(w[:, k]), lens, backend)))
        np.testing.assert_array_equal(got[:, k], one)


# --------------------------------------------------------------------------
# hand examples: values, NaN, ±inf, empty segments, dtypes
# --------------------------------------------------------------------------


def test_hand_examples(backend):
    x = ragged_1d(np.log(np.array([1.0, 3.0, 2.0, 2.0])), [2, 0, 2], backend)
    np.testing.assert_allclose(leaf(run(backend, hr.softmax, x)), [0.25, 0.75, 0.5, 0.5])
    np.testing.assert_allclose(leaf(run(backend, hr.log_softmax, x)),
                               np.log([0.25, 0.75, 0.5, 0.5]))
    xi = ragged_1d(np.array([1, 2, 3, 4]), [3, 0, 1], backend)
    assert run(backend, hr.cumsum, xi).to_list() == [[1, 3, 6], [], [4]]
    assert run(backend, hr.cumsum, xi, exclusive=True).to_list() == [[0, 1, 3], [], [0]]
    bc = run(backend, hr.broadcast, to_backend(np.array([10, 20, 30]), backend), xi)
    assert bc.to_list() == [[10, 10, 10], [], [30]]
    x2 = ragged_1d(np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]]), [2, 0, 1], backend)
    s2 = ragged_1d(np.array([0.0, 0.0, 7.0]), [2, 0, 1], backend)
    np.testing.assert_array_equal(to_host(run(backend, hr.attention_pool, x2, s2)),
                                  [[2.0, 1.0], [0.0, 0.0], [5.0, 5.0]])
    got = to_host(run(backend, hr.attention_pool, x2, s2, fill_value=-1.0))
    np.testing.assert_array_equal(got[1], [-1.0, -1.0])


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_nan_inf(op, backend):
    nan, inf = np.nan, np.inf
    v = np.array([1.0, nan, 2.0,  # NaN: the whole segment
                  -inf, -inf,  # all -inf: NaN (0/0)
                  0.0, inf,  # +inf: NaN (inf - inf)
                  -inf, 0.0, 0.0])  # -inf among finite: 0 (log: -inf)
    lens = [3, 2, 0, 2, 3]
    got = leaf(run(backend, getattr(hr, op), ragged_1d(v, lens, backend)))
    assert np.isnan(got[:7]).all()
    if op == "softmax":
        np.testing.assert_array_equal(got[7:], [0.0, 0.5, 0.5])
    else:
        np.testing.assert_array_equal(got[7:], [-inf, -np.log(2.0), -np.log(2.0)])


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_nan_inf_columns(op, backend):
    """2-D rows whose columns each have their own max: a NaN column, an all -inf one, one
    with +inf and a finite one side by side in one segment (the map selects NaN column by
    column; it once branched per element), for float64 and float32."""
    nan, inf = np.nan, np.inf
    cols = np.array([[1.0, -inf, 0.0, -inf],
                     [nan, -inf, inf, 0.0],
                     [2.0, -inf, 1.0, 0.0]])
    for dt in ("float64", "float32"):
        v = np.concatenate([cols, np.zeros((1, 4))]).astype(dt)  # a second, 1-row segment
        got = leaf(run(backend, getattr(hr, op), ragged_1d(v, [3, 1], backend)))
        assert got.dtype == np.dtype(dt)
        assert np.isnan(got[:3, :3]).all()
        last = [0.0, 0.5, 0.5] if op == "softmax" else [-inf, -np.log(2.0), -np.log(2.0)]
        rtol = 1e-7 if dt == "float32" else 1e-15
        np.testing.assert_allclose(got[:3, 3], np.array(last, dt), rtol=rtol)
        np.testing.assert_array_equal(got[3], [1.0] * 4 if op == "softmax" else [0.0] * 4)


def test_cumsum_nan_inf(backend):
    nan, inf = np.nan, np.inf
    v = np.array([1.0, nan, 2.0, inf, 1.0, -inf, 5.0], dtype=np.float32)
    got = leaf(run(backend, hr.cumsum, ragged_1d(v, [3, 3, 1], backend)))
    np.testing.assert_array_equal(got, np.array([1.0, nan, nan, inf, inf, nan, 5.0], np.float32))


def test_cumsum_complex_nan_inf(backend):
    """Complex NaN and inf propagate part by part, as np.cumsum (complex128: the same
    sequential sums, so bitwise)."""
    nan, inf = np.nan, np.inf
    v = np.array([1 + 1j, complex(nan, 2), 3 + 0j, complex(0, inf), 1 + 1j, 2 - 1j, 5j])
    lens = [3, 2, 0, 2]
    got = leaf(run(backend, hr.cumsum, ragged_1d(v, lens, backend)))
    _, segs = _segments(lens)
    want = np.concatenate([np.cumsum(v[sl]) for sl in segs])
    np.testing.assert_array_equal(got, want)


def test_attention_nan_inf(backend):
    nan, inf = np.nan, np.inf
    v = np.arange(12.0)
    w = np.array([0.0, nan,  # NaN score: NaN
                  -inf, -inf,  # all -inf: NaN
                  1.0, inf,  # +inf: NaN
                  -inf, 0.0,  # -inf among finite: weight 0
                  3.0, 3.0,
                  2.0, 2.0])
    lens = [2, 2, 2, 2, 0, 2, 2]
    x = ragged_1d(v, lens, backend)
    got = to_host(run(backend, hr.attention_pool, x, ragged_1d(w, lens, backend)))
    assert np.isnan(got[:3]).all()
    np.testing.assert_array_equal(got[3:], [7.0, 0.0, 8.5, 10.5])
    v2 = v.copy()
    v2[9] = nan  # NaN value: NaN
    got = to_host(run(backend, hr.attention_pool, ragged_1d(v2, lens, backend),
                      ragged_1d(w, lens, backend)))
    assert np.isnan(got[5])
    assert not np.isnan(got[6])


@pytest.mark.parametrize("inner", [(), (2,)])
def test_attention_pool_values_near_float64_max(inner, backend):
    """Values near the end of float64's range, whose weighted mean is finite: the state
    carried the weighted sum, which overflowed (17 values of 1e308: inf), and a sum
    weighted by an exp that underflowed to 0 then gave inf * 0 = NaN. Each case on
    its own segment: equal scores, a single high score among low ones (the high one
    last, then first), 128 huge values whose scores 800 below the rest zero their
    weights, means of opposite sign (+-1e308 alternating), a 3-element segment (the
    masked steps), and 2-D values (the CPU's row kernel)."""
    big = 1e308
    segs = [
        (np.full(17, big), np.zeros(17)),
        (np.full(17, big), np.r_[np.full(16, -big), big]),
        (np.full(17, big), np.r_[big, np.full(16, -big)]),
        (np.full(16, big), np.r_[np.zeros(15), 800.0]),
        (np.r_[np.full(128, big), np.ones(128)], np.r_[np.zeros(128), np.full(128, 800.0)]),
        (np.tile([big, -big], 256), np.zeros(512)),
        (np.full(3, big), np.array([-big, -big, big])),
        (np.full(40, -big), np.linspace(0.0, 1.0, 40)),
    ]
    lens = [len(v) for v, _ in segs]
    v = np.concatenate([v for v, _ in segs])
    w = np.concatenate([w for _, w in segs])
    if inner:
        v = np.stack([v, -v / 2], axis=1)
    offs = hst.offsets_from_lengths(lens)
    x, sc = make_ragged(v, [offs], backend), ragged_1d(w, lens, backend)
    got = to_host(run(backend, hr.attention_pool, x, sc))
    assert np.isfinite(got).all(), got
    R.assert_result(got, R.attention_pool(v, [offs], w))


@pytest.mark.parametrize(("vdt", "wdt"), [("float32", "float32"), ("float64", "float64"),
                                         ("float32", "int16"), ("float64", "bool")])
def test_attention_pool_long_segments(vdt, wdt, backend):
    """1-D attention_pool over long segments, where the CPU reduces an all-finite block
    of scores and values with a polynomial exp (underflowing exps flushed to 0): wide
    score ranges, integer and bool scores, a NaN or an infinity in one block of a long
    segment (the declaration runs there), against the fsum-exact weights."""
    rng = np.random.default_rng(12)
    lens = [300, 129, 17, 1000, 256, 5, 700, 400, 400, 300] if backend == "cpu" else [40, 17, 33]
    n = int(sum(lens))
    offs = hst.offsets_from_lengths(lens)
    v = (rng.standard_normal(n) * 5).astype(vdt)
    if wdt == "bool":
        w = rng.random(n) < 0.3
    elif np.dtype(wdt).kind == "i":
        w = rng.integers(-300, 300, n).astype(wdt)
    else:
        w = (rng.standard_normal(n) * 100).astype(wdt)
        if backend == "cpu":
            w[offs[1] : offs[1] + 60] = rng.uniform(-800, 0, 60)  # exps underflow
            w[offs[6] + 300] = np.nan  # one block of a long segment
            w[offs[7] + 200] = np.inf
            w[offs[8] + 200] = -np.inf  # weight 0, the rest of the segment finite
            v[offs[9] + 100] = np.nan
    x, sc = ragged_1d(v, lens, backend), ragged_1d(w, lens, backend)
    got = to_host(run(backend, hr.attention_pool, x, sc))
    R.assert_result(got, R.attention_pool(v, [offs], w))


@pytest.mark.parametrize(("vdt", "wdt"), [("float32", "float32"), ("float64", "float64"),
                                         ("float64", "int8")])
def test_attention_pool_short_segments(vdt, wdt, backend):
    """1-D attention_pool over segments of 0-16 elements (on the CPU: masked steps of 4
    and 8, then one block, with the polynomial exp when all finite): a single element
    gives its value exactly, NaN and +-inf scores or NaN values at every position of a
    short segment, segments at the array's end (the padded copies)."""
    rng = np.random.default_rng(14)
    lens = [int(x) for x in rng.integers(0, 17, 300)]
    n = int(sum(lens))
    offs = hst.offsets_from_lengths(lens)
    v = (rng.standard_normal(n) * 5).astype(vdt)
    if np.dtype(wdt).kind == "i":
        w = rng.integers(-100, 100, n).astype(wdt)
    else:
        w = (rng.standard_normal(n) * rng.choice([1.0, 50.0, 500.0], n)).astype(wdt)
        for k in range(0, 300, 5):  # a special at position k % len in every 5th segment
            if lens[k]:
                j = offs[k] + k % lens[k]
                if k % 4 == 3:
                    v[j] = np.nan
                else:
                    w[j] = (np.nan, np.inf, -np.inf)[k % 4]
    x, sc = ragged_1d(v, lens, backend), ragged_1d(w, lens, backend)
    got = to_host(run(backend, hr.attention_pool, x, sc))
    R.assert_result(got, R.attention_pool(v, [offs], w))
    ones = [k for k in range(300) if lens[k] == 1 and np.isfinite(w[offs[k]])]
    np.testing.assert_array_equal(got[ones], v[offs[ones]])


def test_empty_segments_and_no_segments(backend):
    for lens in ([0, 0, 0], []):
        n_seg = len(lens)
        x = ragged_1d(np.zeros((0, 2), np.float32), lens, backend)
        for op in ("softmax", "log_softmax", "cumsum"):
            got = run(backend, getattr(hr, op), x)
            assert got.to_list() == [[]] * n_seg
            assert leaf(got).shape == (0, 2)
        got = run(backend, hr.broadcast, to_backend(np.ones((n_seg, 5)), backend), x)
        assert leaf(got).shape == (0, 5)
        s = ragged_1d(np.zeros(0, np.float32), lens, backend)
        att = to_host(run(backend, hr.attention_pool, x, s))
        assert att.shape == (n_seg, 2)
        assert att.dtype == np.float32
        np.testing.assert_array_equal(att, 0.0)


# (op, value dtype, expected result dtype); attention_pool: scores of the same dtype
DTYPE_SPOT_CHECKS = [
    ("softmax", "bool", "float64"),
    ("softmax", "int8", "float64"),
    ("softmax", "uint16", "float64"),
    ("softmax", "float16", "float16"),
    ("softmax", "float32", "float32"),
    ("log_softmax", "int64", "float64"),
    ("log_softmax", "float32", "float32"),
    ("cumsum", "bool", "int64"),
    ("cumsum", "int8", "int64"),
    ("cumsum", "uint16", "uint64"),
    ("cumsum", "float16", "float16"),
    ("cumsum", "float32", "float32"),
    ("cumsum", "complex64", "complex64"),
    ("attention_pool", "int32", "float64"),
    ("attention_pool", "bool", "float64"),
    ("attention_pool", "float16", "float16"),
    ("attention_pool", "float32", "float32"),
]


@pytest.mark.parametrize(("op", "dtype", "expected"), DTYPE_SPOT_CHECKS)
def test_result_dtype_spot_checks(op, dtype, expected):
    # in this run's CPU kernel shape for the pair, as the property tests draw it
    # (strategies.kernel_ndim)
    inner = hst.kernel_inner_shapes(op, dtype)[0]
    x = ragged_1d(np.ones((3, *inner), dtype=dtype), [1, 2])
    if op == "attention_pool":
        got = hr.attention_pool(x, ragged_1d(np.ones(3, dtype=dtype), [1, 2]))
    else:
        got = getattr(hr, op)(x)
        assert R.result_dtype(op, dtype) == np.dtype(expected)
    assert got.dtype == np.dtype(expected)
    assert np.asarray(x.values).dtype == np.dtype(dtype)  # untouched


def test_cumsum_float32_accumulates_in_float64():
    """Each prefix is rounded once from a float64 running sum (a float32 running sum drifts)."""
    v = np.full(100_000, 0.1, np.float32)
    got = hr.cumsum(hr.from_lengths(v, [100_000])).values
    want = np.cumsum(v.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def test_cumsum_dtype_argument():
    x = ragged_1d(np.array([250, 10, 3], np.uint8), [2, 1])
    got = hr.cumsum(x, dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.values, [250.0, 260.0, 3.0])
    got = x.cumsum(dtype="int16", exclusive=True)
    np.testing.assert_array_equal(got.values, np.array([0, 250, 0], np.int16))


def test_broadcast_ragged_per_segment():
    """A RaggedArray per_segment (e.g. a reduction of a deeper x) uses its leaf rows."""
    x = hr.nest(np.arange(7.0), [0, 2, 3, 3, 7], [0, 3, 4])
    m = hr.max(x)  # depth 1: one row per level-1 segment
    got = hr.broadcast(m, x)
    assert got.depth == 2
    assert got.to_list() == [[[1.0, 1.0], [2.0], []], [[6.0, 6.0, 6.0, 6.0]]]
    np.testing.assert_array_equal(hr.broadcast(m.values, x).leaf_values, got.leaf_values)
    with pytest.raises(ValueError, match="depth"):
        hr.broadcast(hr.max(x, levels=1)[0:1], x, levels=2)


def test_non_compact_strided_and_byteswapped_inputs():
    base = np.arange(40.0).reshape(20, 2)
    v = base[::2]  # strided view, 10 rows
    offs = np.array([2, 4, 4, 9])  # not starting at 0, not ending at len(values)
    x = hr.RaggedArray(v, offs)
    xs = hr.RaggedArray(v.astype(">f8"), offs)
    sc = hr.RaggedArray(np.linspace(-1, 1, 10).astype(">f4"), offs)
    for op in ("softmax", "log_softmax", "cumsum"):
        a, b = getattr(hr, op)(x), getattr(hr, op)(xs)
        np.testing.assert_array_equal(a.offsets, [0, 2, 2, 7])
        np.testing.assert_array_equal(a.values, b.values)
        assert b.dtype.isnative
    a = hr.attention_pool(x, sc)
    b = hr.attention_pool(xs, sc)
    np.testing.assert_array_equal(a, b)
    # scores built compact (x.with_values) have x's structure too
    c = hr.attention_pool(x, x.with_values(np.linspace(-1, 1, 10)[2:9]))
    np.testing.assert_allclose(c, a, rtol=1e-6)


def test_float16_results_rounded_once():
    v = np.array([0.1, 0.2, 0.3, 1000.0, 7.0], np.float16)
    x = hr.from_lengths(v, [3, 2])
    want = np.concatenate([np.cumsum(v[:3].astype(np.float64)),
                           np.cumsum(v[3:].astype(np.float64))]).astype(np.float16)
    np.testing.assert_array_equal(hr.cumsum(x).values, want)
    v64 = v.astype(np.float64)
    e = np.exp(v64[:3] - v64[:3].max())
    np.testing.assert_array_equal(hr.softmax(x).values[:3], (e / e.sum()).astype(np.float16))
    bc = hr.broadcast(np.array([1.5, -2.25], np.float16), x)
    assert bc.dtype == np.float16
    np.testing.assert_array_equal(bc.values, np.array([1.5] * 3 + [-2.25] * 2, np.float16))


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def test_errors():
    x = ragged_1d(np.arange(5.0), [2, 3])
    s = ragged_1d(np.zeros(5), [2, 3])
    for op in ("softmax", "log_softmax", "cumsum"):
        with pytest.raises(TypeError, match="RaggedArray"):
            getattr(hr, op)(np.arange(3.0))
        with pytest.raises(ValueError, match="levels"):
            getattr(hr, op)(x, levels=2)
    with pytest.raises(TypeError, match="complex"):
        hr.softmax(ragged_1d(np.ones(3, np.complex64), [3]))
    with pytest.raises(TypeError, match="exclusive"):
        hr.cumsum(x, exclusive=1)
    # attention_pool
    with pytest.raises(TypeError, match="scores"):
        hr.attention_pool(x, np.zeros(5))
    with pytest.raises(ValueError, match="structure"):
        hr.attention_pool(x, ragged_1d(np.zeros(5), [3, 2]))
    with pytest.raises(ValueError, match="structure"):
        hr.attention_pool(x, ragged_1d(np.zeros(6), [3, 3]))
    with pytest.raises(ValueError, match="depth"):
        hr.attention_pool(x, hr.nest(np.zeros(5), [0, 2, 5], [0, 2]))
    with pytest.raises(ValueError, match=r"\(n, heads\)"):
        hr.attention_pool(x, ragged_1d(np.zeros((5, 2, 2)), [2, 3]))
    with pytest.raises(TypeError, match="scores"):
        hr.attention_pool(x, ragged_1d(np.zeros(5, np.complex128), [2, 3]))
    with pytest.raises(TypeError, match="complex"):
        hr.attention_pool(ragged_1d(np.zeros(5, np.complex128), [2, 3]), s)
    with pytest.raises(ValueError, match="levels"):
        hr.attention_pool(x, s, levels=0)
    with pytest.raises(ValueError, match="fill_value"):
        hr.attention_pool(x, s, fill_value=np.ones(2))
    # broadcast
    with pytest.raises(ValueError, match="rows"):
        hr.broadcast(np.zeros(3), x)
    with pytest.raises(ValueError, match="scalar"):
        hr.broadcast(np.float64(1.0), x)
    with pytest.raises(TypeError, match="RaggedArray"):
        hr.broadcast(np.zeros(2), np.zeros(5))
    with pytest.raises(TypeError):
        hr.broadcast(np.array([object(), object()]), x)


def test_device_mismatch_is_type_error():
    """per_segment / scores on another device than x: TypeError, never a silent copy."""
    pytest.importorskip("numba.cuda")
    from conftest import CUDA_MODE

    if CUDA_MODE is None:
        pytest.skip("numba-cuda is not usable here")
    x = ragged_1d(np.arange(5.0), [2, 3])
    with pytest.raises(TypeError, match="per_segment"):
        hr.broadcast(to_backend(np.zeros(2), "cuda"), x)


def test_missing_backend_kernel_is_not_implemented(monkeypatch):
    """A backend without a transform kernel raises NotImplementedError naming op and device."""
    from hrarray._backends.cpu import CpuBackend

    x = ragged_1d(np.arange(5.0), [2, 3])
    for method, call in (
        ("segment_map", lambda: hr.softmax(x)),
        ("segment_scan", lambda: hr.cumsum(x)),
        ("reduce_aux", lambda: hr.attention_pool(x, x)),
    ):
        with monkeypatch.context() as m:
            m.delattr(CpuBackend, method)
            with pytest.raises(NotImplementedError, match=rf"'cpu'.*{method}"):
                call()


def test_exports_and_methods():
    for name in ("softmax", "log_softmax", "cumsum", "broadcast", "attention_pool"):
        assert name in hr.__all__
        assert callable(getattr(hr, name))
    x = ragged_1d(np.arange(5.0), [2, 3])
    np.testing.assert_array_equal(x.softmax().values, hr.softmax(x).values)
    np.testing.assert_array_equal(x.log_softmax(levels=1).values, hr.log_softmax(x).values)
    np.testing.assert_array_equal(x.cumsum(exclusive=True).values,
                                  hr.cumsum(x, exclusive=True).values)
    np.testing.assert_array_equal(x.attention_pool(x, fill_value=3.0),
                                  hr.attention_pool(x, x, fill_value=3.0))


def test_signatures_as_in_the_api():
    """API.md's spellings: ``hr.cumsum(x, exclusive=False)`` (also positional, and the
    method), ``hr.from_list(nested_lists, dtype=None)``."""
    x = hr.from_lengths(np.arange(5.0), [2, 3])
    want = [0.0, 0.0, 0.0, 2.0, 5.0]
    assert hr.cumsum(x, True).values.tolist() == want
    assert x.cumsum(True).values.tolist() == want
    assert hr.cumsum(x, exclusive=True).values.tolist() == want
    y = hr.from_list(nested_lists=[[1.0, 2.0], [3.0]], dtype=np.float32)
    assert y.to_list() == [[1.0, 2.0], [3.0]]
    assert y.dtype == np.float32


def test_softmax_far_below_the_max_is_as_exact_as_numpy():
    """The CPU softmax map's own exp keeps math.exp's accuracy where v - m is large and
    negative (an argument-reduction folded by fast-math once gave ~1e-14 relative error at
    v - m = -700) and goes down to the subnormals (exp(-740) is ~4e-322, not 0)."""
    rng = np.random.default_rng(5)
    d = np.concatenate([-rng.uniform(0, 700, 20_000), -np.linspace(700, 750, 501)])
    x = hr.from_lengths(np.concatenate([[0.0], d]), [d.size + 1])
    got = hr.softmax(x).values[1:]
    want = np.exp(d) / (1.0 + np.exp(d).sum())
    normal = want >= np.finfo(np.float64).tiny
    np.testing.assert_allclose(got[normal], want[normal], rtol=2e-15, atol=0)
    np.testing.assert_allclose(got[~normal], want[~normal], rtol=0, atol=1e-321)
    assert (got[want > 1e-321] > 0).all()


@pytest.mark.parametrize("heads", [None, 2])
def test_attention_pool_float16_scores_in_either_byte_order(heads, backend):
    """float16 scores are read as float32 in either byte order (an audit: big-endian
    float16 scores were swapped into native float16, which reached Numba on the CPU:
    NotImplementedError), giving the results of the same scores as float32."""
    offs = hst.offsets_from_lengths([2, 0, 3])
    v = np.arange(5.0)
    s = np.linspace(-1.0, 2.0, 5) if heads is None else np.linspace(-1.0, 2.0, 10).reshape(5, 2)
    for dt in ("<f2", ">f2"):
        s16 = s.astype(np.float16).astype(np.float32)  # the float16 values, exactly
        want = to_host(hr.attention_pool(make_ragged(v, [offs], backend),
                                          make_ragged(s16, [offs], backend)))
        got = to_host(hr.attention_pool(make_ragged(v, [offs], backend),
                                         make_ragged(s.astype(dt), [offs], backend)))
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_exp_sums_of_strided_values():
    """1-D logsumexp, softmax and attention_pool of strided values or scores (steps 2 and
    -1) sum their exp terms 16 at a time, as contiguous ones are summed in vectors. Data made
    to show one chain per block: 0 heading each block of 128, -37 elsewhere, whose exp
    (8.5e-17) is below half an ulp of 1. (From an audit: each strided block was one chain,
    98-104u off, contiguous values 2-8u.)"""
    u = 2.0**-53
    for n in (128, 1000):
        w = np.full(n, -37.0)
        w[::128] = 0.0
        vals = np.ones(n)
        vals[::128] = 0.0  # the weighted mean: the tiny weights' ones alone
        e = [math.exp(a) for a in w]
        lse = math.log(math.fsum(e))
        pool = math.fsum(v * f for v, f in zip(vals, e, strict=True)) / math.fsum(e)
        for step in (2, -1):
            def view(a, step=step):
                return np.repeat(a, 2)[::2] if step == 2 else a[::-1].copy()[::-1]
            assert view(w).strides[0] != w.itemsize
            got = hr.logsumexp(hr.from_lengths(view(w), [n]))[0]
            assert abs(got - lse) <= 24 * u * max(1.0, abs(lse)), (n, step, got, lse)
            sm = hr.softmax(hr.from_lengths(view(w), [n])).values
            assert abs(math.fsum(sm) - 1.0) <= 24 * u, (n, step)
            for v, s in ((view(vals), view(w)), (view(vals), w), (vals, view(w))):
                got = hr.attention_pool(hr.from_lengths(v, [n]), hr.from_lengths(s, [n]))[0]
                assert abs(got - pool) <= 24 * u * pool, (n, step, got, pool)
