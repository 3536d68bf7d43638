"""The test oracle: naive pure-Python loops written from ``API.md``.

Nothing here calls hrarray and nothing uses ``np.add.reduceat`` (it returns
``values[start]`` for an empty segment). Every function works on plain NumPy
data: the leaf ``values`` (shape ``(n, *inner)``) and ``offsets_list``, the
offsets of each ragged level, innermost first (the order of ``hr.nest``). The
offsets may be non-compact (not starting at 0, not ending at the length of the
level below): :func:`compact` drops the unreachable parts first, because every
``RaggedArray`` an operation returns is compact.

Float results come with an error bound, from ``research/reliability.md`` (c):
``|got - exact| <= u_res * |exact| + 1.01 * k(n) * u_acc * sum(|x|)``, where
``exact`` is the exactly rounded float64 result (``math.fsum``), ``u_res`` the
unit roundoff of the result dtype and ``u_acc`` that of the accumulator
(float64 for every real float dtype: hrarray accumulates float16/float32 in
float64). ``k(n)`` is ``n`` for short segments and the blocked-pairwise depth
``128 + ceil(log2(n / 128))`` (plus slack for the parallel split) beyond.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np

REDUCTIONS = (
    "sum",
    "prod",
    "max",
    "min",
    "mean",
    "var",
    "std",
    "argmax",
    "argmin",
    "count",
    "count_nonzero",
    "any",
    "all",
    "logsumexp",
    "first",
    "last",
)
NAN_REDUCTIONS = (
    "nansum",
    "nanmean",
    "nanmax",
    "nanmin",
    "nanvar",
    "nanstd",
    "nanargmax",
    "nanargmin",
)
ALL_REDUCTIONS = REDUCTIONS + NAN_REDUCTIONS

# Ops whose result is compared bitwise (NaN == NaN) rather than within a bound.
EXACT_OPS = frozenset(
    {
        "max",
        "min",
        "argmax",
        "argmin",
        "count",
        "count_nonzero",
        "any",
        "all",
        "first",
        "last",
        "nanmax",
        "nanmin",
        "nanargmax",
        "nanargmin",
    }
)
# Ops that order values: TypeError on complex input.
ORDERING_OPS = frozenset(
    {"max", "min", "argmax", "argmin", "nanmax", "nanmin", "nanargmax", "nanargmin"}
)
# Ops that API.md lists as supported for complex input.
COMPLEX_OPS = frozenset(
    {"sum", "prod", "mean", "var", "std", "count", "count_nonzero", "any", "all", "first", "last"}
)


# --------------------------------------------------------------------------
# host access and structure
# --------------------------------------------------------------------------


def to_host(a):
    """A NumPy array from NumPy, numba device arrays (``copy_to_host``) or CuPy (``get``)."""
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    return np.asarray(a)


def is_ragged(obj) -> bool:
    return hasattr(obj, "offsets") and hasattr(obj, "leaf_values")


def parts(x):
    """``(leaf_values, offsets_list)`` of a ``RaggedArray`` on the host, innermost level first."""
    offsets_list = []
    node = x
    while is_ragged(node):
        offsets_list.append(np.asarray(to_host(node.offsets)))
        node = node.values
    offsets_list.reverse()
    return to_host(node), offsets_list


def compose(offsets_list, levels: int) -> np.ndarray:
    """Leaf offsets of the level-``levels`` segments: ``o1[o2[...[o_levels]]]``."""
    composed = np.asarray(offsets_list[0], dtype=np.int64)
    for k in range(1, levels):
        composed = composed[np.asarray(offsets_list[k], dtype=np.int64)]
    return composed


def compact(values, offsets_list):
    """Drop unreachable values and segments: every level's offsets start at 0 and end at the
    length of the level below. Returns ``(values, offsets_list)``, the offsets as int64."""
    out = []
    lo = hi = None
    for k in range(len(offsets_list) - 1, -1, -1):
        o = np.asarray(offsets_list[k], dtype=np.int64)
        if lo is not None:
            o = o[lo : hi + 1]
        lo, hi = int(o[0]), int(o[-1])
        out.append(o - o[0])
    out.reverse()
    return np.asarray(values)[lo:hi], out


def lengths_of(offsets) -> np.ndarray:
    o = np.asarray(offsets, dtype=np.int64)
    return o[1:] - o[:-1]


def segments_list(values, offsets_list):
    """Nested Python lists of the structure (``x.to_list()``), leaf items as Python scalars
    (or lists for inner shapes)."""
    values, offsets_list = compact(values, offsets_list)

    def build(level, i):
        o = offsets_list[level]
        start, end = int(o[i]), int(o[i + 1])
        if level == 0:
            return [values[j].tolist() for j in range(start, end)]
        return [build(level - 1, j) for j in range(start, end)]

    top = len(offsets_list) - 1
    return [build(top, i) for i in range(len(offsets_list[top]) - 1)]


# --------------------------------------------------------------------------
# dtype rules (API.md section 2 table)
# --------------------------------------------------------------------------


def base_op(op: str) -> str:
    return op[3:] if op.startswith("nan") else op


def real_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return np.empty(0, dtype).real.dtype if dtype.kind == "c" else dtype


def result_dtype(op: str, in_dtype, dtype=None) -> np.dtype:
    """The result dtype of a reduction or transform, from the API.md table (native byte
    order: non-native values are converted once)."""
    in_dtype = np.dtype(in_dtype).newbyteorder("=")
    kind = in_dtype.kind
    base = base_op(op)
    if base in ("sum", "prod", "cumsum"):
        if dtype is not None:
            return np.dtype(dtype)
        if kind in "bi":
            return np.dtype(np.int64)
        if kind == "u":
            return np.dtype(np.uint64)
        return in_dtype
    if base == "mean":
        if dtype is not None:
            return np.dtype(dtype)
        return np.dtype(np.float64) if kind in "biu" else in_dtype
    if base in ("var", "std"):
        if dtype is not None:
            return real_dtype(dtype)
        return np.dtype(np.float64) if kind in "biu" else real_dtype(in_dtype)
    if base in ("max", "min", "first", "last"):
        return in_dtype
    if base in ("argmax", "argmin", "count", "count_nonzero"):
        return np.dtype(np.int64)
    if base in ("any", "all"):
        return np.dtype(np.bool_)
    if base in ("logsumexp", "softmax", "log_softmax"):
        if dtype is not None:
            return np.dtype(dtype)
        return np.dtype(np.float64) if kind in "biu" else in_dtype
    raise ValueError(f"unknown op {op!r}")


def empty_value(op: str, in_dtype, res_dtype=None):
    """What an empty segment gives (API.md table), as a Python scalar."""
    in_dtype = np.dtype(in_dtype).newbyteorder("=")
    res_dtype = result_dtype(op, in_dtype) if res_dtype is None else np.dtype(res_dtype)
    base = base_op(op)
    if base in ("sum", "count", "count_nonzero"):
        return 0
    if base == "prod":
        return 1
    if base in ("max", "min"):
        sign = 1 if base == "min" else -1
        if in_dtype.kind == "b":
            return base == "min"
        if in_dtype.kind in "iu":
            info = np.iinfo(in_dtype)
            return int(info.max) if base == "min" else int(info.min)
        return sign * math.inf
    if base in ("mean", "var", "std"):
        # a complex empty mean is NumPy's nan+nanj (var/std results are real)
        return complex(math.nan, math.nan) if res_dtype.kind == "c" else math.nan
    if base in ("argmax", "argmin"):
        return -1
    if base == "any":
        return False
    if base == "all":
        return True
    if base == "logsumexp":
        return -math.inf
    if base in ("first", "last"):
        if res_dtype.kind == "c":
            return complex(math.nan, math.nan)
        return math.nan if res_dtype.kind == "f" else 0
    raise ValueError(f"unknown op {op!r}")


# Unit roundoff of float64: the precision logsumexp, softmax and attention_pool compute in
# for every input dtype (their docstrings); their oracles' tolerances use it for the
# computation and the result dtype's ``u`` only for the final rounding.
U_F64 = 2.0**-53


def unit_roundoff(dtype) -> float:
    """``u`` of a float/complex dtype (eps / 2); 0 for integer and bool dtypes."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "fc":
        return 0.0
    return float(np.finfo(real_dtype(dtype)).eps) / 2


def accumulator_roundoff(in_dtype, res_dtype) -> float:
    """``u`` of the accumulator. Real floats accumulate in float64 (API.md: float16/float32
    "accumulated in float64"), unless an explicit narrower ``dtype=`` asks for another
    accumulator (as NumPy: then the result dtype's ``u``). Complex: no promise beyond the
    component float."""
    in_dtype, res_dtype = np.dtype(in_dtype), np.dtype(res_dtype)
    if in_dtype.kind == "c" or res_dtype.kind == "c":
        return max(unit_roundoff(in_dtype), unit_roundoff(res_dtype))
    if res_dtype == np.float64 or (in_dtype.kind == "f" and res_dtype == in_dtype):
        return 2.0**-53
    return max(2.0**-53, unit_roundoff(res_dtype))


def k_sum(n: int) -> int:
    """Error-growth factor of the float64 summation: naive up to one 128 block, then
    blocked pairwise (NumPy's scheme) with slack for the parallel split (its pieces are
    combined pairwise: log2(pieces) + 1 <= 8 up to 128 chunks)."""
    if n <= 128:
        return max(n, 1)
    return 128 + math.ceil(math.log2(n / 128)) + 8


def tiny(dtype) -> float:
    dtype = real_dtype(dtype)
    return float(np.finfo(dtype).smallest_subnormal) if dtype.kind == "f" else 0.0


# --------------------------------------------------------------------------
# exact arithmetic helpers
# --------------------------------------------------------------------------


def exact_sum(xs) -> float:
    """The exactly rounded float64 sum of Python floats, IEEE rules for NaN / inf."""
    xs = list(xs)
    if any(math.isnan(x) for x in xs):
        return math.nan
    pinf = any(x == math.inf for x in xs)
    ninf = any(x == -math.inf for x in xs)
    if pinf and ninf:
        return math.nan
    if pinf:
        return math.inf
    if ninf:
        return -math.inf
    try:
        return math.fsum(xs)
    except OverflowError:
        total = sum((Fraction(x) for x in xs), Fraction(0))
        return math.copysign(math.inf, total)


def abs_sum(xs) -> float:
    return math.fsum(abs(x) for x in xs if math.isfinite(abs(x)))


def wrap_int(value: int, dtype) -> int:
    """Modular (two's complement) wraparound of a Python int into an integer dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return bool(value)
    bits = dtype.itemsize * 8
    value %= 1 << bits
    if dtype.kind == "i" and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def cast(value, dtype):
    """Cast a Python scalar to a NumPy scalar of ``dtype``, overflow to inf without warning."""
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):
        if dtype.kind in "iu" and isinstance(value, int):
            return np.array(wrap_int(value, dtype), dtype=dtype)[()]
        if dtype.kind in "iu" and isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"cannot cast {value} to {dtype}")
        return np.array(value).astype(dtype)[()]


def is_nan(v) -> bool:
    if isinstance(v, complex):
        return math.isnan(v.real) or math.isnan(v.imag)
    if isinstance(v, float):
        return math.isnan(v)
    return False


def py_column(col: np.ndarray) -> list:
    """Python scalars of a 1-D NumPy column: bool/ints as int, floats as float, complex."""
    kind = col.dtype.kind
    if kind in "biu":
        return [int(v) for v in col]
    if kind == "f":
        return [float(v) for v in col]
    return [complex(v) for v in col]


# --------------------------------------------------------------------------
# one column of one segment
# --------------------------------------------------------------------------


class Cell(NamedTuple):
    value: object  # the result as a Python scalar, in the result dtype's domain
    exact: object  # float/complex reference for a bounded comparison (None: exact op)
    tol: float  # absolute bound on |got - exact|
    empty: bool  # counts as empty (fill_value replaces it)


def _finite_parts(z: complex) -> complex:
    """``z`` with each non-finite part replaced by 0."""
    re = z.real if math.isfinite(z.real) else 0.0
    return complex(re, z.imag if math.isfinite(z.imag) else 0.0)


def _sum_cell(xs, in_dtype, res_dtype) -> Cell:
    n = len(xs)
    if res_dtype.kind == "b":
        # NumPy casts each element to bool first: adding bools is a logical or (the sum of
        # [1, -1] into bool is True, not bool(0))
        return Cell(any(x != 0 for x in xs), None, 0.0, n == 0)
    if res_dtype.kind in "iu":
        return Cell(wrap_int(sum(int(x) for x in xs), res_dtype), None, 0.0, n == 0)
    u_res = unit_roundoff(res_dtype)
    u_acc = accumulator_roundoff(in_dtype, res_dtype)
    if in_dtype.kind == "c" or res_dtype.kind == "c":
        xs = [complex(x) for x in xs]
        s = complex(exact_sum(x.real for x in xs), exact_sum(x.imag for x in xs))
        # The real and imaginary sums are independent: an inf or NaN in one part must not
        # make the other part's bound NaN, so magnitudes count finite parts only.
        a = math.fsum(abs(_finite_parts(x)) for x in xs)
        # complex accumulation: no float64 promise, naive bound
        tol = (2 * u_res * abs(_finite_parts(s)) + 1.01 * 2 * max(n, 1) * u_acc * a
               + 2 * tiny(res_dtype))
        return Cell(s, s, tol, n == 0)
    xs = [float(x) for x in xs]
    s = exact_sum(xs)
    tol = u_res * abs(s) + 1.01 * k_sum(n) * u_acc * abs_sum(xs) + tiny(res_dtype)
    return Cell(s, s, tol, n == 0)


def _prod_cell(xs, in_dtype, res_dtype) -> Cell:
    n = len(xs)
    if res_dtype.kind == "b":
        # elements cast to bool first: a logical and ([2, 128] as int8 is True, not the
        # wrapped product's bool(0))
        return Cell(all(x != 0 for x in xs), None, 0.0, n == 0)
    if res_dtype.kind in "iu":
        mod = 1 << (res_dtype.itemsize * 8)
        p = 1
        for x in xs:
            p = (p * int(x)) % mod
        return Cell(wrap_int(p, res_dtype), None, 0.0, n == 0)
    u_res = unit_roundoff(res_dtype)
    u_acc = accumulator_roundoff(in_dtype, res_dtype)
    if res_dtype.kind == "c":
        p = complex(1.0)
        for x in xs:
            p *= complex(x)
        tol = 2 * u_res * abs(p) + 8 * (n + 1) * u_acc * abs(p) + 2 * tiny(res_dtype)
        return Cell(p, p, tol, n == 0)
    p = 1.0
    for x in xs:
        p *= float(x)
    # the float64 loop above has its own (n-1) u64 error: count it twice
    tol = u_res * abs(p) + 2.02 * (n + 1) * max(u_acc, 2.0**-53) * abs(p) + tiny(res_dtype)
    return Cell(p, p, tol, n == 0)


def _extreme_cell(xs, in_dtype, is_max: bool, skip_nan: bool) -> Cell:
    if not skip_nan and any(is_nan(x) for x in xs):
        return Cell(math.nan, None, 0.0, False)
    ys = [x for x in xs if not is_nan(x)]
    if not ys:
        op = "max" if is_max else "min"
        return Cell(empty_value(op, in_dtype), None, 0.0, True)
    v = max(ys) if is_max else min(ys)
    return Cell(bool(v) if in_dtype.kind == "b" else v, None, 0.0, False)


def _arg_cell(xs, is_max: bool, skip_nan: bool) -> Cell:
    if not skip_nan:
        for j, x in enumerate(xs):
            if is_nan(x):
                return Cell(j, None, 0.0, False)
    best_j = -1
    best = None
    for j, x in enumerate(xs):
        if is_nan(x):
            continue
        if best is None or (x > best if is_max else x < best):
            best, best_j = x, j
    return Cell(best_j, None, 0.0, best_j == -1)


def _mean_cell(xs, in_dtype, res_dtype) -> Cell:
    n = len(xs)
    if n == 0:
        e = empty_value("mean", in_dtype, res_dtype)
        return Cell(e, e, 0.0, True)
    if res_dtype.kind in "biu":
        return _int_mean_cell(xs, res_dtype)
    u_res = unit_roundoff(res_dtype)
    u_acc = accumulator_roundoff(in_dtype, res_dtype)
    if in_dtype.kind == "c":
        xs = [complex(x) for x in xs]
        s = complex(exact_sum(x.real for x in xs), exact_sum(x.imag for x in xs))
        m = s / n
        a = math.fsum(abs(_finite_parts(x)) for x in xs)
        tol = (2 * u_res * abs(_finite_parts(m)) + 2.02 * max(n, 1) * u_acc * a / n
               + 2 * tiny(res_dtype))
        return Cell(m, m, tol, False)
    if in_dtype.kind in "biu":
        m = float(Fraction(sum(int(x) for x in xs), n))
        a = math.fsum(abs(float(x)) for x in xs)
    else:
        xs = [float(x) for x in xs]
        m = exact_sum(xs) / n
        a = abs_sum(xs)
    tol = (u_res + 2.0**-53) * abs(m) + 1.01 * (k_sum(n) + 1) * u_acc * a / n + tiny(res_dtype)
    return Cell(m, m, tol, False)


def _int_mean_cell(xs, res_dtype) -> Cell:
    """``mean`` into an integer or bool ``dtype=``, as NumPy's: each element cast into the
    dtype (the real part of a complex one, floats truncated toward zero; into bool:
    non-zero), summed there (wrapping; bools or-ed), the sum divided by ``n`` in float64
    and truncated toward zero.
    NaN or inf elements have no integer value: hrarray raises for them, not compared here."""
    n = len(xs)
    if res_dtype.kind == "b":
        # each element cast to bool first: non-zero, either part of a complex one
        # (review S3: truncating first made 0.5 False)
        return Cell(any(x != 0 for x in xs), None, 0.0, False)
    ints = []
    for x in xs:
        x = x.real if isinstance(x, complex) else x
        if isinstance(x, float):
            if not math.isfinite(x):
                raise ValueError(f"mean of {x} into {res_dtype} has no integer value")
            x = math.trunc(x)
        ints.append(int(x))
    s = wrap_int(sum(wrap_int(v, res_dtype) for v in ints), res_dtype)
    return Cell(wrap_int(math.trunc(float(s) / n), res_dtype), None, 0.0, False)


def _var_cell(xs, in_dtype, res_dtype, ddof: int, sqrt: bool) -> Cell:
    n = len(xs)
    if n == 0 or n <= ddof:
        return Cell(math.nan, math.nan, 0.0, True)
    u_res = unit_roundoff(res_dtype)
    u_acc = max(accumulator_roundoff(in_dtype, res_dtype), 2.0**-53)
    if in_dtype.kind == "c":
        zs = [complex(x) for x in xs]
        mean = complex(exact_sum(z.real for z in zs), exact_sum(z.imag for z in zs)) / n
        sq = [abs(z - mean) ** 2 for z in zs]
        scale = math.fsum(abs(z) ** 2 for z in zs if math.isfinite(abs(z)))
    else:
        fs = [float(x) for x in xs]
        mean = exact_sum(fs) / n
        sq = [(x - mean) ** 2 for x in fs]
        scale = math.fsum(x * x for x in fs if math.isfinite(x))
    var = exact_sum(sq) / (n - ddof)
    # Welford / two-pass in float64: error ~ n u (sum x^2) / (n - ddof); the oracle's own
    # two-pass error is of the same order, count it twice.
    tol_var = 8 * (n + 4) * u_acc * scale / (n - ddof) + tiny(res_dtype)
    if not sqrt:
        return Cell(var, var, u_res * abs(var) + tol_var, False)
    std = math.sqrt(var) if var >= 0 else math.nan
    return Cell(std, std, u_res * abs(std) + math.sqrt(tol_var) + tiny(res_dtype), False)


def _logsumexp_cell(xs, in_dtype, res_dtype) -> Cell:
    n = len(xs)
    fs = [float(x) for x in xs]
    if n == 0:
        return Cell(-math.inf, -math.inf, 0.0, True)
    if any(math.isnan(x) for x in fs):
        return Cell(math.nan, math.nan, 0.0, False)
    m = max(fs)
    if m == math.inf:
        return Cell(math.inf, math.inf, 0.0, False)
    if m == -math.inf:
        return Cell(-math.inf, -math.inf, 0.0, False)
    s = math.fsum(math.exp(x - m) for x in fs)
    value = m + math.log(s)
    u_c = U_F64  # (m, s) in float64 for every input dtype
    u_res = unit_roundoff(res_dtype)
    tol = (n + 8) * u_c * (1 + abs(m)) + 2 * u_res * abs(value) + tiny(res_dtype)
    return Cell(value, value, tol, False)


def _cell(op, xs, in_dtype, res_dtype, ddof) -> Cell:
    """Reduce one column of one segment (``xs``: Python scalars in segment order)."""
    base = base_op(op)
    skip_nan = op.startswith("nan")
    if skip_nan and base not in ("max", "min", "argmax", "argmin"):
        xs = [x for x in xs if not is_nan(x)]
    if base == "sum":
        return _sum_cell(xs, in_dtype, res_dtype)
    if base == "prod":
        return _prod_cell(xs, in_dtype, res_dtype)
    if base in ("max", "min"):
        return _extreme_cell(xs, in_dtype, base == "max", skip_nan)
    if base in ("argmax", "argmin"):
        return _arg_cell(xs, base == "argmax", skip_nan)
    if base == "mean":
        return _mean_cell(xs, in_dtype, res_dtype)
    if base in ("var", "std"):
        return _var_cell(xs, in_dtype, res_dtype, ddof, base == "std")
    if base == "count":
        return Cell(len(xs), None, 0.0, not xs)
    if base == "count_nonzero":
        return Cell(sum(1 for x in xs if x != 0), None, 0.0, not xs)
    if base == "any":
        return Cell(any(x != 0 for x in xs), None, 0.0, not xs)
    if base == "all":
        return Cell(all(x != 0 for x in xs), None, 0.0, not xs)
    if base == "logsumexp":
        return _logsumexp_cell(xs, in_dtype, res_dtype)
    if base in ("first", "last"):
        if not xs:
            return Cell(empty_value(op, in_dtype, res_dtype), None, 0.0, True)
        v = xs[0] if base == "first" else xs[-1]
        return Cell(bool(v) if in_dtype.kind == "b" else v, None, 0.0, False)
    raise ValueError(f"unknown op {op!r}")


# --------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------


class Ref(NamedTuple):
    """A reference result.

    ``value``: the expected result array (result dtype), compared bitwise for exact ops and
    for NaN / inf positions; ``exact`` (float64 / complex128) and ``tol`` (absolute bound per
    element) for bounded comparisons, or None; ``offsets``: the compact offsets of the levels
    kept above the reduced one (empty for a dense result).
    """

    value: np.ndarray
    exact: np.ndarray | None
    tol: np.ndarray | None
    offsets: list


def reduce(op, values, offsets_list, levels=1, *, fill_value=None, dtype=None, ddof=0) -> Ref:
    """Reference for ``hr.<op>(x, levels=levels, fill_value=..., dtype=..., ddof=...)``."""
    values = np.asarray(values)
    if op in ORDERING_OPS and values.dtype.kind == "c":
        raise TypeError(f"{op} is not defined for complex values")
    values, offsets_list = compact(values, offsets_list)
    depth = len(offsets_list)
    if not 1 <= levels <= depth:
        raise ValueError(f"levels={levels} for depth {depth}")
    in_dtype = values.dtype
    res_dtype = result_dtype(op, in_dtype, dtype)
    composed = compose(offsets_list, levels)
    inner = values.shape[1:]
    ncols = math.prod(inner)
    nseg = len(composed) - 1
    cells = []
    for i in range(nseg):
        start, end = int(composed[i]), int(composed[i + 1])
        seg = values[start:end].reshape(end - start, ncols)
        for c in range(ncols):
            cell = _cell(op, py_column(seg[:, c]), in_dtype, res_dtype, ddof)
            if fill_value is not None and cell.empty:
                cell = Cell(fill_value, fill_value, 0.0, True)
            cells.append(cell)
    shape = (nseg, *inner)
    value = np.empty(shape, dtype=res_dtype)
    flat = value.reshape(-1)
    for idx, cell in enumerate(cells):
        flat[idx] = cast(cell.value, res_dtype)
    exact = tol = None
    if op not in EXACT_OPS and res_dtype.kind in "fc":
        exact_dtype = np.complex128 if res_dtype.kind == "c" else np.float64
        exact = np.array([c.exact for c in cells], dtype=exact_dtype).reshape(shape)
        tol = np.array([c.tol for c in cells], dtype=np.float64).reshape(shape)
    return Ref(value, exact, tol, offsets_list[levels:])


def reduce_user(
    values,
    offsets_list,
    *,
    identity,
    combine,
    map=None,
    finalize=None,
    levels=1,
    fill_value=None,
):
    """Reference for ``hr.reduce(x, hr.Reducer(identity, combine, map, finalize))``: per
    segment and column, ``acc = identity; acc = combine(acc, map(v))`` for each element in
    order, then ``finalize(acc, n)`` (for empty segments too, ``n = 0``); without finalize an
    empty segment gives ``identity``; ``fill_value`` replaces empty results. Returns
    ``(results, offsets)``: an object array of Python results (tuples stay tuples) and the
    compact offsets of the levels kept."""
    values, offsets_list = compact(np.asarray(values), offsets_list)
    composed = compose(offsets_list, levels)
    inner = values.shape[1:]
    ncols = math.prod(inner)
    nseg = len(composed) - 1
    out = np.empty((nseg, ncols), dtype=object)
    for i in range(nseg):
        start, end = int(composed[i]), int(composed[i + 1])
        seg = values[start:end].reshape(end - start, ncols)
        for c in range(ncols):
            acc = identity
            for v in py_column(seg[:, c]):
                acc = combine(acc, map(v) if map is not None else v)
            n = end - start
            result = finalize(acc, n) if finalize is not None else acc
            if n == 0 and fill_value is not None:
                result = fill_value
            out[i, c] = result
    return out.reshape((nseg, *inner)), offsets_list[levels:]


# --------------------------------------------------------------------------
# transforms (API.md section 3)
# --------------------------------------------------------------------------


class TransformRef(NamedTuple):
    """``values``: expected leaf values (compact); ``exact``/``tol`` as in :class:`Ref`;
    ``offsets``: the compact offsets of every level (the result has ``x``'s structure)."""

    value: np.ndarray
    exact: np.ndarray | None
    tol: np.ndarray | None
    offsets: list


def _softmax_column(fs, log: bool, u_res: float, u_c: float, floor: float):
    """Softmax / log-softmax of one segment column of Python floats: values and bounds
    (``floor``: absolute slack for a result rounded into the subnormal range)."""
    n = len(fs)
    if n == 0:
        return [], []
    if any(math.isnan(x) for x in fs):
        return [math.nan] * n, [0.0] * n
    m = max(fs)
    if m == -math.inf or m == math.inf:
        # all -inf: 0/0; any +inf: inf - inf in the shift. Both NaN (IEEE), as torch.
        return [math.nan] * n, [0.0] * n
    ex = [math.exp(x - m) if x != -math.inf else 0.0 for x in fs]
    s = math.fsum(ex)
    if log:
        ls = math.log(s)
        out = [x - m - ls for x in fs]
        tol = [
            u_res * abs(o) + (n + 8) * u_c * (1 + abs(x) + abs(m)) + floor
            if math.isfinite(x)
            else 0.0  # x = -inf: exactly -inf, compared as such
            for o, x in zip(out, fs, strict=True)
        ]
        return out, tol
    out = [e / s for e in ex]
    tol = [
        u_res * o + (n + 8) * u_c * o * (2 + abs(x - m)) + floor
        if math.isfinite(x)
        else floor  # x = -inf: exactly 0 (not 0 * inf)
        for o, x in zip(out, fs, strict=True)
    ]
    return out, tol


def _transform_result(values, offsets_list, levels, res_dtype, column_fn):
    values, offsets_list = compact(np.asarray(values), offsets_list)
    composed = compose(offsets_list, levels)
    inner = values.shape[1:]
    ncols = math.prod(inner)
    n = values.shape[0]
    flat = values.reshape(n, ncols)
    value = np.empty((n, ncols), dtype=res_dtype)
    exact_dtype = np.complex128 if res_dtype.kind == "c" else np.float64
    exact = np.zeros((n, ncols), dtype=exact_dtype if res_dtype.kind in "fc" else object)
    tol = np.zeros((n, ncols), dtype=np.float64)
    for i in range(len(composed) - 1):
        start, end = int(composed[i]), int(composed[i + 1])
        for c in range(ncols):
            out, bounds = column_fn(py_column(flat[start:end, c]))
            for j, (o, b) in enumerate(zip(out, bounds, strict=True)):
                value[start + j, c] = cast(o, res_dtype)
                exact[start + j, c] = o
                tol[start + j, c] = b
    shape = (n, *inner)
    if res_dtype.kind not in "fc":
        return TransformRef(value.reshape(shape), None, None, offsets_list)
    return TransformRef(
        value.reshape(shape), exact.reshape(shape), tol.reshape(shape), offsets_list
    )


def softmax(values, offsets_list, levels=1, *, log=False) -> TransformRef:
    """Reference for ``hr.softmax`` / ``hr.log_softmax``: max-shifted, in float64 (fsum); NaN
    anywhere in a segment column, or a column that is all -inf (or holds +inf), gives NaN for
    the whole column; empty segments stay empty."""
    values = np.asarray(values)
    res_dtype = result_dtype("log_softmax" if log else "softmax", values.dtype)
    u_res = unit_roundoff(res_dtype)
    u_c = U_F64  # statistics and map in float64 for every input dtype

    floor = tiny(res_dtype)

    def column(xs):
        return _softmax_column([float(x) for x in xs], log, u_res, u_c, floor)

    return _transform_result(values, offsets_list, levels, res_dtype, column)


def log_softmax(values, offsets_list, levels=1) -> TransformRef:
    return softmax(values, offsets_list, levels, log=True)


def cumsum(values, offsets_list, levels=1, *, exclusive=False) -> TransformRef:
    """Reference for ``hr.cumsum``: an inclusive (or exclusive, starting at 0) prefix sum that
    restarts at each segment; dtype as ``sum``; exact for ints (wrapping), exactly rounded
    prefix sums with the running-sum bound (k = n) for floats."""
    values = np.asarray(values)
    in_dtype = values.dtype
    res_dtype = result_dtype("cumsum", in_dtype)
    u_res = unit_roundoff(res_dtype)
    u_acc = accumulator_roundoff(in_dtype, res_dtype)

    def column(xs):
        if res_dtype.kind in "iu":
            acc, out = 0, []
            for x in xs:
                if exclusive:
                    out.append(wrap_int(acc, res_dtype))
                acc += int(x)
                if not exclusive:
                    out.append(wrap_int(acc, res_dtype))
            return out, [0.0] * len(out)
        out, tol = [], []
        prefix = []
        for x in xs:
            if exclusive:
                s = _prefix_value(prefix, res_dtype)
                out.append(s)
                tol.append(_prefix_tol(prefix, s, u_res, u_acc, res_dtype))
            prefix.append(x)
            if not exclusive:
                s = _prefix_value(prefix, res_dtype)
                out.append(s)
                tol.append(_prefix_tol(prefix, s, u_res, u_acc, res_dtype))
        return out, tol

    return _transform_result(values, offsets_list, levels, res_dtype, column)


def _prefix_value(prefix, res_dtype):
    if res_dtype.kind == "c":
        zs = [complex(x) for x in prefix]
        return complex(exact_sum(z.real for z in zs), exact_sum(z.imag for z in zs))
    return exact_sum(float(x) for x in prefix)


def _prefix_tol(prefix, s, u_res, u_acc, res_dtype):
    # A scan is a running sum (as np.cumsum, and the only way to give every prefix in one
    # pass): k(n) = n, the naive bound of research/reliability.md, not the blocked pairwise
    # k_sum of the reductions. Float32 inputs accumulate in float64, so u_acc keeps it small.
    a = math.fsum(abs(x) for x in prefix if math.isfinite(abs(x)))
    return u_res * abs(s) + 1.01 * max(len(prefix), 1) * u_acc * a + tiny(res_dtype)


def broadcast(per_segment, values, offsets_list, levels=1):
    """Reference for ``hr.broadcast(per_segment, x)``: leaf values ``(nvalues, *row_shape)``
    repeating row ``i`` over segment ``i`` (of the level-``levels`` segments of the compacted
    structure), and the compact offsets of every level."""
    per_segment = np.asarray(per_segment)
    values, offsets_list = compact(np.asarray(values), offsets_list)
    composed = compose(offsets_list, levels)
    out = np.empty((values.shape[0], *per_segment.shape[1:]), dtype=per_segment.dtype)
    for i in range(len(composed) - 1):
        for j in range(int(composed[i]), int(composed[i + 1])):
            out[j] = per_segment[i]
    return out, offsets_list


def attention_pool(values, offsets_list, score_values, levels=1, *, fill_value=None) -> Ref:
    """Reference for ``hr.attention_pool(x, scores)``.

    ``score_values`` are the scores' leaf values aligned with the *compacted* leaf values of
    ``x`` (shape ``(nvalues,)`` or ``(nvalues, h)``). Per level-``levels`` segment:
    ``sum_j softmax(scores)_j * x_j`` in float64 with max subtraction; result
    ``(nseg, *inner)`` or ``(nseg, h, *inner)``; empty segments give 0 (or ``fill_value``).
    """
    values, offsets_list = compact(np.asarray(values), offsets_list)
    scores = np.asarray(score_values)
    if scores.shape[0] != values.shape[0]:
        raise ValueError("scores must have x's structure")
    heads = None if scores.ndim == 1 else scores.shape[1]
    s2 = scores.reshape(scores.shape[0], -1)
    res_dtype = np.result_type(values.dtype, scores.dtype)
    if res_dtype.kind in "biu":
        res_dtype = np.dtype(np.float64)
    u_res = unit_roundoff(res_dtype)
    u_c = U_F64  # state (m, s, mean) in float64 for every dtype pair
    composed = compose(offsets_list, levels)
    inner = values.shape[1:]
    ncols = math.prod(inner)
    nh = 1 if heads is None else heads
    nseg = len(composed) - 1
    exact = np.zeros((nseg, nh, ncols), dtype=np.float64)
    tol = np.zeros((nseg, nh, ncols), dtype=np.float64)
    for i in range(nseg):
        start, end = int(composed[i]), int(composed[i + 1])
        n = end - start
        xs = values[start:end].reshape(n, ncols)
        for h in range(nh):
            if n == 0:
                exact[i, h, :] = 0.0 if fill_value is None else fill_value
                continue
            sc = [float(v) for v in s2[start:end, h]]
            m = max(sc)
            ex = [math.exp(v - m) for v in sc]
            z = math.fsum(ex)
            w = [e / z for e in ex]
            for c in range(ncols):
                terms = [wj * float(xs[j, c]) for j, wj in enumerate(w)]
                exact[i, h, c] = math.fsum(terms)
                weighted = math.fsum(abs(t) for t in terms)
                spread = max(abs(v - m) for v in sc)
                tol[i, h, c] = (
                    u_res * abs(exact[i, h, c])
                    + (k_sum(n) + 16) * u_c * (1 + spread) * weighted
                    + tiny(res_dtype)
                )
    shape = (nseg, *inner) if heads is None else (nseg, heads, *inner)
    exact = exact.reshape(shape)
    value = np.empty(shape, dtype=res_dtype)
    with np.errstate(all="ignore"):
        value[...] = exact
    return Ref(value, exact, tol.reshape(shape), offsets_list[levels:])


# --------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------


def assert_close(got, value, exact=None, tol=None, err_msg=""):
    """Compare ``got`` (host array) with a reference: same dtype and shape; bitwise equal (NaN
    == NaN) where ``tol`` is None, else NaN and inf exactly where the reference has them and
    ``|got - exact| <= tol`` elsewhere."""
    got = np.asarray(got)
    value = np.asarray(value)
    assert got.dtype == value.dtype, f"dtype {got.dtype} != expected {value.dtype}. {err_msg}"
    assert got.shape == value.shape, f"shape {got.shape} != expected {value.shape}. {err_msg}"
    if tol is None:
        np.testing.assert_array_equal(got, value, err_msg=err_msg, strict=True)
        return
    if got.dtype.kind == "c":
        # complex: each component within the bound (a bound on |got - exact|), so that an
        # infinite component is compared exactly and a finite one within the bound
        exact = np.asarray(exact)
        for part in ("real", "imag"):
            assert_close(
                getattr(got, part),
                getattr(value, part),
                getattr(exact, part),
                tol,
                err_msg=f"{part} part. {err_msg}",
            )
        return
    ref_nan = np.isnan(value)
    np.testing.assert_array_equal(np.isnan(got), ref_nan, err_msg=f"NaN positions. {err_msg}")
    special = ~ref_nan & ~np.isfinite(value)
    np.testing.assert_array_equal(got[special], value[special], err_msg=f"inf. {err_msg}")
    finite = np.isfinite(value)
    with np.errstate(all="ignore"):
        err = np.abs(got[finite].astype(np.float64) - np.asarray(exact)[finite].astype(np.float64))
    bound = np.asarray(tol)[finite]
    bad = ~(err <= bound)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} elements outside the bound; first: got "
            f"{got[finite][k]!r}, exact {np.asarray(exact)[finite][k]!r}, "
            f"error {err[k]:.3g} > bound {bound[k]:.3g}. {err_msg}"
        )


def assert_result(got, ref, *, err_msg=""):
    """Check a reduction / ``attention_pool`` result (dense array, or a compact ``RaggedArray``
    when levels remain) against a :class:`Ref`."""
    if ref.offsets:
        assert is_ragged(got), f"expected a RaggedArray, got {type(got)}. {err_msg}"
        assert got.depth == len(ref.offsets), err_msg
        leaf, offsets_list = parts(got)
        assert len(offsets_list) == len(ref.offsets)
        below = leaf.shape[0]
        for k, (o, r) in enumerate(zip(offsets_list, ref.offsets, strict=True)):
            compact_msg = f"result level {k + 1} not compact: offsets {o[0]}..{o[-1]} over {below}"
            assert int(o[0]) == 0, f"{compact_msg}. {err_msg}"
            assert int(o[-1]) == below, f"{compact_msg}. {err_msg}"
            np.testing.assert_array_equal(o, r, err_msg=f"offsets of level {k + 1}. {err_msg}")
            below = len(o) - 1
        got = leaf
    else:
        assert not is_ragged(got), f"expected a dense array, got a RaggedArray. {err_msg}"
        got = to_host(got)
    assert_close(got, ref.value, ref.exact, ref.tol, err_msg=err_msg)


def assert_transform(got, ref: TransformRef, *, err_msg=""):
    """Check a transform result: ``x``'s structure (compact) and the values."""
    assert is_ragged(got), f"expected a RaggedArray, got {type(got)}. {err_msg}"
    leaf, offsets_list = parts(got)
    assert len(offsets_list) == len(ref.offsets), err_msg
    for k, (o, r) in enumerate(zip(offsets_list, ref.offsets, strict=True)):
        np.testing.assert_array_equal(o, r, err_msg=f"offsets of level {k + 1}. {err_msg}")
    assert_close(leaf, ref.value, ref.exact, ref.tol, err_msg=err_msg)
