"""Hypothesis strategies for ragged arrays.

Structure is drawn as **lengths**, not offsets (it shrinks to fewer, shorter
segments): many empty segments, a heavy tail, sometimes one huge segment at a
block boundary of the kernels (127/128/129, 255/256/257, ...), offsets that do
not start at 0 and do not end at ``len(values)`` (extra leading / trailing
values), int32 or int64 offsets, and nested levels cut from the segment count
of the level below with sorted cut points (``offsets_k[-1] == nsegments(k-1)``).

Values come from a NumPy generator seeded by hypothesis (fast for thousands
of elements), in a drawn *kind* (uniform, normal, ties, constant, full integer
range, ...). NaN and ±inf are opt-in flags so that accuracy tests keep bounded
magnitudes. ``small=True`` keeps an example tiny for the CUDA simulator, where
every GPU thread is a Python thread.
"""

from __future__ import annotations

import datetime
import os
import zlib
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

REAL_DTYPES = ("bool", "int8", "int32", "int64", "uint16", "float16", "float32", "float64")
COMPLEX_DTYPES = ("complex64", "complex128")
FLOAT_DTYPES = ("float16", "float32", "float64")
INT_DTYPES = ("int8", "int32", "int64", "uint16")
INNER_SHAPES = ((), (3,), (2, 3))
BLOCK_LENGTHS = (7, 8, 9, 15, 16, 17, 31, 32, 33, 127, 128, 129, 255, 256, 257, 1023, 1024, 1025)

# bounded magnitudes per float dtype: float16 sums of a few thousand terms stay finite
MAGNITUDE = {"float16": 8.0, "float32": 1e3, "float64": 1e3}


@dataclass
class RaggedSpec:
    """A drawn ragged array as plain NumPy: leaf ``values`` (with any unreachable extra
    values) and ``offsets``, one array per level, innermost first (the order of ``hr.nest``)."""

    values: np.ndarray
    offsets: list = field(default_factory=list)
    kind: str = ""

    @property
    def depth(self) -> int:
        return len(self.offsets)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def inner_shape(self) -> tuple:
        return self.values.shape[1:]

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        offs = ", ".join(np.array2string(o, threshold=40) for o in self.offsets)
        vals = np.array2string(self.values, threshold=40)
        return (
            f"RaggedSpec(dtype={self.values.dtype}, shape={self.values.shape}, "
            f"kind={self.kind!r}, offsets=[{offs}], values={vals})"
        )


# --------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------


@st.composite
def lengths(draw, *, small=False, max_segments=None, min_segments=0, huge=None):
    """Segment lengths: many zeros, mostly short, a heavy tail and (not small) sometimes one
    huge segment at a kernel block boundary."""
    if small:
        max_segments = 12 if max_segments is None else min(max_segments, 12)
        length = st.one_of(st.just(0), st.integers(1, 3), st.integers(4, 10))
        out = draw(st.lists(length, min_size=min_segments, max_size=max_segments))
        # cap the leaf count for the simulator
        total, capped = 0, []
        for n in out:
            n = min(n, max(0, 60 - total))
            capped.append(n)
            total += n
        return capped
    max_segments = 40 if max_segments is None else max_segments
    heavy = draw(st.booleans())
    choices = [st.just(0), st.integers(1, 4), st.integers(5, 40)]
    if heavy:
        choices.append(st.integers(41, 300))
    out = draw(st.lists(st.one_of(*choices), min_size=min_segments, max_size=max_segments))
    if huge is None:
        huge = draw(st.integers(0, 4)) == 0
    if huge:
        n_big = draw(st.one_of(st.sampled_from(BLOCK_LENGTHS), st.integers(300, 2000)))
        out.insert(draw(st.integers(0, len(out))), n_big)
    return out


def offsets_from_lengths(lens, start=0, dtype=np.int64) -> np.ndarray:
    return np.concatenate([[start], start + np.cumsum(np.asarray(lens, dtype=np.int64))]).astype(
        dtype
    )


@st.composite
def nested_offsets(draw, nsegments_below: int, *, small=False, slack=False, dtype=np.int64):
    """Offsets of a level over ``nsegments_below`` segments: ``[lo, *sorted cuts, hi]`` with
    ``lo = 0`` and ``hi = nsegments_below`` unless ``slack`` (then some leading / trailing
    segments below are unreachable, which API.md allows)."""
    lo, hi = 0, nsegments_below
    if slack and nsegments_below:
        lo = draw(st.integers(0, min(2, nsegments_below)))
        hi = nsegments_below - draw(st.integers(0, min(2, nsegments_below - lo)))
    max_cuts = 6 if small else 12
    if hi == lo:
        n_top = draw(st.integers(0, 3))
        return np.full(n_top + 1, lo, dtype=dtype)
    cuts = sorted(draw(st.lists(st.integers(lo, hi), max_size=max_cuts)))
    return np.asarray([lo, *cuts, hi], dtype=dtype)


# --------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------


def value_kinds(dtype) -> tuple:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return ("sparse", "half", "dense")
    if dtype.kind in "iu":
        return ("ties", "ties", "full")
    return ("uniform", "normal", "ties", "positive", "constant")


def make_values(seed, dtype, shape, kind, *, magnitude=None) -> np.ndarray:
    """Values of ``dtype`` and ``shape`` from a seeded generator, in a *kind* of distribution.
    ``prod_safe``: magnitudes ``2**U(-0.5, 0.5)``, random signs and a few zeros, so long
    products neither overflow nor underflow."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        p = {"sparse": 0.1, "half": 0.5, "dense": 0.9}.get(kind, 0.5)
        return rng.random(shape) < p
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if kind == "full":
            return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        if kind == "prod_safe":
            lo = -2 if dtype.kind == "i" else 0
            return rng.integers(lo, 3, size=shape).astype(dtype)
        lo = -3 if dtype.kind == "i" else 0
        return rng.integers(lo, 4, size=shape).astype(dtype)
    if dtype.kind == "c":
        part = np.empty(0, dtype).real.dtype
        re = make_values(seed, part, shape, kind, magnitude=magnitude)
        im = make_values(seed + 1, part, shape, kind, magnitude=magnitude)
        if kind == "prod_safe":
            mod = np.exp2(rng.uniform(-0.5, 0.5, size=shape))
            phase = rng.uniform(0, 2 * np.pi, size=shape)
            return (mod * np.exp(1j * phase)).astype(dtype)
        return (re + 1j * im).astype(dtype)
    mag = MAGNITUDE.get(dtype.name, 1e3) if magnitude is None else magnitude
    if kind == "uniform":
        out = rng.uniform(-mag, mag, size=shape)
    elif kind == "normal":
        out = rng.normal(0, mag / 4, size=shape)
    elif kind == "ties":
        out = rng.integers(-3, 4, size=shape).astype(np.float64)
    elif kind == "positive":
        out = rng.uniform(0, mag, size=shape)
    elif kind == "constant":
        out = np.full(shape, 0.1)
    elif kind == "prod_safe":
        out = np.exp2(rng.uniform(-0.5, 0.5, size=shape)) * rng.choice([-1.0, 1.0], size=shape)
        out[rng.random(shape) < 0.03] = 0.0
    else:
        raise ValueError(kind)
    return out.astype(dtype)


def sprinkle(values: np.ndarray, seed: int, *, nan=False, inf=False, neg_inf=False):
    """Overwrite a random share of ``values`` (float / complex) with NaN, ±inf or -inf only."""
    if values.dtype.kind not in "fc" or values.size == 0:
        return values
    specials = []
    if nan:
        specials.append(np.nan)
    if inf:
        specials += [np.inf, -np.inf]
    if neg_inf:
        specials.append(-np.inf)
    if not specials:
        return values
    rng = np.random.default_rng(seed)
    share = rng.choice([0.02, 0.2, 0.6])
    mask = rng.random(values.shape) < share
    picks = rng.choice(np.asarray(specials, dtype=np.float64), size=values.shape)
    out = values.copy()
    out[mask] = picks[mask].astype(values.dtype)
    return out


# --------------------------------------------------------------------------
# ragged arrays
# --------------------------------------------------------------------------


@st.composite
def ragged(
    draw,
    *,
    dtypes=REAL_DTYPES,
    inner_shapes=INNER_SHAPES,
    depths=(1, 2, 3),
    small=False,
    nan=False,
    inf=False,
    neg_inf=False,
    kinds=None,
    compact=False,
    nested_slack=False,
    offset_dtypes=None,
    min_segments=0,
    max_segments=None,
    huge=None,
):
    """A :class:`RaggedSpec`.

    ``nan`` / ``inf`` / ``neg_inf``: whether special values *may* appear (drawn per example);
    ``kinds``: restrict the value distribution (e.g. ``("prod_safe",)``); ``compact``: offsets
    start at 0 and end at ``len(values)``; ``nested_slack``: upper levels may leave segments
    of the level below unreachable. ``offset_dtypes`` defaults to int64 and int32 for
    ``small`` (CUDA simulator) examples, int64 only otherwise: every offsets dtype is one
    more compiled CPU kernel per op and values dtype (seconds each), so int32 offsets on
    the CPU have tests of their own, which pass them explicitly.
    """
    if offset_dtypes is None:
        offset_dtypes = (np.int64, np.int32) if small else (np.int64,)
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    inner = tuple(draw(st.sampled_from(inner_shapes)))
    depth = draw(st.sampled_from(depths))
    odt = np.dtype(draw(st.sampled_from(offset_dtypes)))
    lens = draw(
        lengths(small=small, max_segments=max_segments, min_segments=min_segments, huge=huge)
    )
    lead = trail = 0
    if not compact:
        lead = draw(st.integers(0, 3))
        trail = draw(st.integers(0, 3))
    offsets = [offsets_from_lengths(lens, lead, odt)]
    nseg = len(lens)
    for _ in range(depth - 1):
        o = draw(nested_offsets(nseg, small=small, slack=nested_slack, dtype=odt))
        offsets.append(o)
        nseg = len(o) - 1
    n = lead + sum(lens) + trail
    kind = draw(st.sampled_from(kinds if kinds is not None else value_kinds(dtype)))
    seed = draw(st.integers(0, 2**32 - 1))
    values = make_values(seed, dtype, (n, *inner), kind)
    specials = {}
    if dtype.kind in "fc":
        specials = {
            "nan": nan and draw(st.booleans()),
            "inf": inf and draw(st.booleans()),
            "neg_inf": neg_inf and draw(st.booleans()),
        }
    values = sprinkle(values, seed + 7, **specials) if specials else values
    tags = [kind] + [k for k, v in specials.items() if v]
    return RaggedSpec(values, offsets, "+".join(tags))


# --------------------------------------------------------------------------
# the run's kernel shape per (op, dtype)
# --------------------------------------------------------------------------

# Every CPU (op, values dtype, 1-D or 2-D rows) is one compiled kernel, seconds each: the
# whole matrix would take most of CI's time. Each run therefore tests every (op, dtype)
# in one of its two kernel shapes, chosen per pair by the run's seed (the UTC day unless
# HRARRAY_TEST_SEED pins it; conftest prints it in the header), so that the reduction
# tests share one kernel per pair and the next seed tests the other shapes.
TEST_SEED = int(
    os.environ.get("HRARRAY_TEST_SEED")
    or datetime.datetime.now(datetime.timezone.utc).date().toordinal()
)


def seeded_choice(key: str, n: int) -> int:
    """One of ``0 .. n - 1``, chosen by ``key`` and the run's seed: the same in every
    process (xdist workers agree, so they share the kernels a choice compiles), another
    for another seed."""
    return zlib.crc32(f"{key}:{TEST_SEED}".encode()) % n


def _kernel_identity(op: str, dtype: np.dtype) -> str:
    """The CPU kernel ``op`` on ``dtype`` runs, as text: ops that share one (a nan-variant
    on integers and its base op; var, std, nanvar and nanstd at a float result, which run
    the float64 variance kernel, ``var64``) get one layout, so that their tests share its
    compiles. Names that are no reduction (the transforms) stand for themselves, but
    log_softmax for softmax, whose property tests draw both under softmax's name."""
    from hrarray import _ops

    if op == "log_softmax":
        op = "softmax"
    try:
        decl = _ops.build(op, dtype).decl
    except (KeyError, TypeError, ValueError):  # a transform, or an op the dtype refuses
        if dtype.kind not in "fc":  # a nan-variant on integers is its base op's kernel
            op = op.removeprefix("nan")
        return f"{op}:{dtype.name}"
    decl = decl.meta.get("var64", (decl,))[0]
    return repr(decl.key)


def kernel_ndim(op: str, dtype) -> int:
    """1 or 2: the values layout this run tests ``op`` on ``dtype`` with (deterministic in
    every process: xdist workers agree and share the compiled kernels)."""
    ident = _kernel_identity(op, np.dtype(dtype))
    return 1 + seeded_choice(ident, 2)


def as_kernel_layout(op: str, values: np.ndarray) -> tuple[np.ndarray, bool]:
    """1-D ``values`` in the CPU kernel layout this run tests ``op`` on their dtype with:
    ``(values, False)``, or ``(values[:, None], True)`` (one column of rows) where that is 2-D.
    Hand-written CPU examples then share the kernels the property tests compile (each other
    layout is one more compile of 1-3 s)."""
    if kernel_ndim(op, values.dtype) == 2:
        return values[:, None], True
    return values, False


def kernel_inner_shapes(op: str, dtype) -> tuple:
    """Inner shapes drawn for ``op`` on ``dtype`` by the CPU tests this run."""
    return ((),) if kernel_ndim(op, dtype) == 1 else ((3,), (2, 3))


@st.composite
def ragged_for(draw, op: str, *, dtypes, small=False, **kw):
    """:func:`ragged` for reducing with ``op``: on the CPU (not ``small``) the inner shapes
    are this run's kernel shape for the drawn dtype; the CUDA simulator compiles nothing,
    so ``small`` examples draw from ``inner_shapes`` (default: every inner shape)."""
    dtype = draw(st.sampled_from(dtypes))
    shapes = kw.pop("inner_shapes", INNER_SHAPES)
    if not small:
        shapes = kernel_inner_shapes(op, dtype)
    return draw(ragged(dtypes=(dtype,), inner_shapes=shapes, small=small, **kw))


def fill_values(res_kind: str):
    """A fill value that differs from every op's empty default, for a result dtype kind."""
    if res_kind == "b":
        return st.booleans()
    if res_kind == "u":
        return st.just(7)
    if res_kind == "i":
        return st.sampled_from([7, -7])
    return st.sampled_from([7.0, -2.5])
