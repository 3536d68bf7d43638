"""NumPy arrays, Numba CPU kernels."""

from __future__ import annotations

import numpy as np

# The kernel modules are imported with hrarray, not at first use (16 ms; they
# import no Numba): a fork() while another thread is importing one left the
# child waiting forever on that module's import lock (see _kernels/_locks.py).
import hrarray._kernels.cpu
import hrarray._kernels.cpu_transforms  # noqa: F401
from hrarray._backends._detach import detach
from hrarray._kernels import _codegen as cg

_VALIDATE_SRC = '''
import numba

@numba.njit(nogil=True, cache=CACHE)
def check_offsets(offsets, limit, res):
    """res = (code, position): 0 ok, 1 negative first, 2 decreasing at i, 3 past the end."""
    n = offsets.shape[0]
    res[0] = 0
    res[1] = 0
    if offsets[0] < 0:
        res[0] = 1
        return
    for i in range(1, n):
        if offsets[i] < offsets[i - 1]:
            res[0] = 2
            res[1] = i
            return
    if offsets[n - 1] > limit:
        res[0] = 3
        res[1] = n - 1
'''

_validator = None


def _check_offsets():
    """The offsets check, a native entry where one is cached (see
    hrarray._kernels.native): building the first RaggedArray of a process
    then needs no Numba import."""
    global _validator
    if _validator is None:
        from hrarray._kernels import native

        folder, disk = cg.generated_dir()
        path = cg.module_path(_VALIDATE_SRC, "validate")
        lazy = native.Lazy(lambda: cg.import_module(path, {"CACHE": disk}))
        (_validator,) = native.functions(folder if disk else None, path.stem,
                                         ("check_offsets",), lazy)
    return _validator


def offsets_error(code: int, pos: int, offsets, limit: int, argname: str, what: str):
    """The ValueError for a failed offsets check (shared by both backends)."""
    if code == 1:
        return ValueError(f"{argname}[0]={int(offsets[0])} is negative; offsets must be >= 0")
    # the first one past the end among the non-decreasing offsets[:pos + 1] (code 3:
    # all of them; code 2: those before the first decrease, which come first when
    # one of them is past the end), by binary search (scalar reads: on CUDA a few
    # dozen, and only when raising)
    lo, hi = 0, pos
    if code == 2:
        if int(offsets[pos - 1]) <= limit:  # none of offsets[:pos] is past the end
            return ValueError(
                f"{argname} must be non-decreasing; {argname}[{pos}]={int(offsets[pos])} < "
                f"{argname}[{pos - 1}]={int(offsets[pos - 1])}"
            )
        hi = pos - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if int(offsets[mid]) > limit:
            hi = mid
        else:
            lo = mid + 1
    return ValueError(
        f"{argname}[{lo}]={int(offsets[lo])} is past the end of {what} (length {limit})"
    )


class CpuBackend:
    name = "cpu"
    xp = np

    # ------------------------------------------------------------ inputs
    def asarray(self, obj, argname: str) -> np.ndarray:
        if isinstance(obj, np.ndarray):
            if type(obj) is not np.ndarray and np.ma.isMaskedArray(obj):
                # its mask would be ignored (the kernels read .data): refuse
                raise TypeError(
                    f"{argname} is a masked array (numpy.ma), which hrarray does not "
                    f"support: pass {argname}.filled(value) or the unmasked elements only"
                )
            return obj
        if isinstance(obj, (str, bytes)):  # NumPy would make a 0-d string array of it
            raise TypeError(f"{argname} must be an array, got {type(obj).__name__}")
        obj = detach(obj)  # a PyTorch tensor that requires grad exports nothing
        if getattr(obj, "null_count", 0) and type(obj).__module__.startswith("pyarrow"):
            # an Arrow array with nulls exports no DLPack, and np.asarray made
            # its nulls NaN (and its integers float64): refused, as from_arrow does
            from hrarray.interop import _first_null

            raise ValueError(
                f"{argname} has a null at position {_first_null(obj)}; a RaggedArray has no "
                "missing values (pyarrow.compute.fill_null or drop_null remove them)"
            )
        dl_error = None
        if hasattr(obj, "__dlpack__") and not isinstance(obj, (list, tuple)):
            try:
                return np.from_dlpack(obj)
            except (TypeError, BufferError, RuntimeError) as exc:
                dl_error = exc
        try:
            arr = np.asarray(obj)
        except Exception as exc:
            if isinstance(obj, (list, tuple)) and "inhomogeneous" in str(exc):
                raise TypeError(
                    f"{argname} must be an array, got a ragged {type(obj).__name__} "
                    f"(nested sequences of unequal lengths)"
                ) from exc
            raise TypeError(
                f"{argname} must be an array, got {type(obj).__name__} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if arr.dtype == object:
            if dl_error is not None:  # say why its DLPack export was not read
                raise TypeError(
                    f"{argname}: a {type(obj).__name__} whose DLPack export failed "
                    f"({type(dl_error).__name__}: {dl_error})"
                ) from dl_error
            raise TypeError(f"{argname} has unsupported dtype object")
        return arr

    def astype(self, a, dtype):
        return np.asarray(a).astype(np.dtype(dtype).newbyteorder("="))

    def xpa(self, a) -> np.ndarray:
        """``a`` as an array of :attr:`xp` (NumPy) for the structural operations."""
        return np.asarray(a)

    def dtype(self, a) -> np.dtype:
        return a.dtype

    def is_native(self, a) -> bool:
        return a.dtype.isnative

    # ------------------------------------------------------------ offsets
    def first_past_int64(self, offsets):
        """``(position, value)`` of the first uint64 offset past int64's range
        (converted, it would wrap negative), or None."""
        big = offsets > np.uint64(np.iinfo(np.int64).max)
        if not big.any():
            return None
        k = int(np.flatnonzero(big)[0])
        return k, int(offsets[k])

    def first_mismatch(self, a, b):
        """First position where the equal-length integer arrays ``a`` and ``b``
        differ, or None."""
        bad = np.flatnonzero(a != b)
        return int(bad[0]) if bad.size else None

    def validate(self, offsets, limit: int, argname: str, what: str = "values"):
        res = np.empty(2, np.int64)
        fn = _check_offsets().resolve((offsets.dtype, offsets.flags.num, type(limit)),
                                      (offsets, limit, res))
        fn(offsets, limit, res)
        code, pos = res
        if code:
            raise offsets_error(int(code), int(pos), offsets, limit, argname, what)
        return int(offsets[0]), int(offsets[-1])

    # Structural helpers used by RaggedArray (the CUDA backend implements
    # them with small device kernels, so they work without CuPy too).
    def diff(self, offsets):
        return np.diff(offsets).astype(np.int64, copy=False)

    def take(self, a, idx):
        return a[idx]

    def shift(self, a, lo: int):
        return a - lo

    def concatenate(self, arrays):
        return np.concatenate(list(arrays))

    def ends(self, offsets, known=None) -> tuple[int, int]:
        """``(offsets[0], offsets[-1])``, read afresh (two host reads: ``known``
        ends are not needed here)."""
        return int(offsets[0]), int(offsets[-1])

    # ------------------------------------------------------------ kernels
    def reduce(self, spec, values, offsets, fill, use_fill):
        """Run the reduction of ``spec`` over validated offsets; dense result."""
        from hrarray._kernels.cpu import get_kernel

        nseg = offsets.shape[0] - 1
        meta = spec.decl.meta
        rows = meta.get("rows")
        if rows is not None:
            return _gather_rows(rows, spec, values, offsets, fill, use_fill)
        values, inner = _kernel_view(values, spec.value_dtype)
        out_dt = spec.out_dtype
        # Numba has no float16 arrays on the CPU: write float64, cast once (as
        # the transforms and the CUDA kernels). Not float32: float64 -> float32
        # -> float16 rounded twice (a sum of 65519.99 became 65520, then inf,
        # where NumPy and CUDA give 65504; a fill_value too).
        k_dt = _F64 if out_dt == np.float16 else out_dt
        shape = (nseg, values.shape[1]) if values.ndim == 2 else nseg
        fill_v = k_dt.type(fill) if use_fill else k_dt.type(0)
        var64 = meta.get("var64")
        if var64 is not None:
            out = _from_var64(*var64, values, offsets, shape, k_dt, fill_v, use_fill)
        else:
            out = np.empty(shape, k_dt)
            get_kernel(spec.decl).run(values, offsets, out, fill_v, bool(use_fill))
            if meta.get("redo_nonfinite_in_order"):
                _redo_nonfinite_in_order(values, offsets, out)
        if k_dt is not out_dt:
            with np.errstate(over="ignore"):  # beyond float16's range is inf, as in NumPy
                out = out.astype(out_dt)
        # an inner shape of 2+ dimensions was read as rows of their product
        return out.reshape((nseg, *inner)) if len(inner) > 1 else out

    # Transform kernels (hrarray.transforms): see hrarray._kernels.cpu_transforms.
    def reduce_aux(self, spec, values, offsets, aux, fill, use_fill):
        """A reduction whose map reads ``aux[j]`` next to ``values[j]``; ``aux``
        ``(n,)`` gives ``(nseg, *inner)``, ``(n, h)`` gives ``(nseg, h, *inner)``."""
        from hrarray._kernels.cpu_transforms import reduce_aux

        return reduce_aux(spec, values, offsets, aux, fill, use_fill)

    def segment_map(self, mdecl, values, offsets, per_segment, ends=None):
        """``out[j] = fn(values[j], per_segment[i])`` over segment ``i``; compact.
        (``ends``, the offsets' known ends, spare the CUDA backend a read.)"""
        from hrarray._kernels.cpu_transforms import segment_map

        return segment_map(mdecl, values, offsets, per_segment)

    def segment_scan(self, spec, values, offsets, exclusive, ends=None):
        """Running state of ``spec.decl`` restarting at each segment; compact."""
        from hrarray._kernels.cpu_transforms import segment_scan

        return segment_scan(spec, values, offsets, exclusive)

    def to_host(self, a):
        return np.asarray(a)


def _gather_rows(kind, spec, values, offsets, fill, use_fill):
    """A declaration hinted ``rows`` (count, first, last): the length, first or
    last row of each segment, gathered by NumPy in O(nsegments x inner) with no
    kernel, hence no compile (seconds per kernel signature, for every input
    dtype) and no pass over the values. Empty segments get ``fill``
    (``use_fill``) or the declaration's identity, as its kernel gives them."""
    nseg = offsets.shape[0] - 1
    inner = values.shape[1:]
    if kind == "count":
        lens = (offsets[1:] - offsets[:-1]).astype(np.int64, copy=False)
        if use_fill:
            lens[lens == 0] = fill
        if not inner:
            return lens
        out = np.empty((nseg, *inner), np.int64)
        out[...] = lens.reshape((nseg,) + (1,) * len(inner))
        return out
    empty = offsets[1:] == offsets[:-1]
    if values.shape[0] == 0:  # then every segment is empty
        out = np.empty((nseg, *inner), spec.out_dtype)
    else:
        rows = offsets[:-1] if kind == "first" else offsets[1:] - 1
        # clipped: an empty segment's row may be -1 or len(values); it reads
        # a valid row instead, overwritten below. Indexing, not np.take:
        # np.take copied the whole of strided values first
        out = values[np.clip(rows, 0, values.shape[0] - 1)]
        if out.__class__ is not np.ndarray:  # an ndarray subclass (np.matrix) stays one
            out = out.view(np.ndarray)  # through indexing; every other op gives ndarrays
        if not out.dtype.isnative:
            out = out.astype(spec.out_dtype)
    # the declaration's identity: NaN for floats and complex, else 0
    empty_value = fill if use_fill else spec.decl.identity[0]
    if inner:
        empty = empty.reshape((nseg,) + (1,) * len(inner))
    with np.errstate(over="ignore"):  # a fill beyond float16's range is inf, as in NumPy
        empty_value = np.asarray(empty_value).astype(out.dtype)
    np.copyto(out, empty_value, where=empty)
    return out


def _redo_nonfinite_in_order(values, offsets, out):
    """Float ``prod``: recompute each non-empty segment whose result is NaN or
    +-inf in element order (NumPy's, one ``multiply.reduceat``), in float64 as
    the kernel. The kernel multiplies in lanes, whose partial products can
    overflow in one lane and underflow in another (NaN from inf * 0) where the
    in-order product stays finite; a NaN element gives NaN in either order.
    Costs one pass over ``out`` when every product is finite: a finite sum of
    ``out`` proves it (one reduction, no mask; a sum that overflows only sends
    the call on to the mask)."""
    with np.errstate(all="ignore"):
        if np.isfinite(out.sum()):
            return
    bad = ~np.isfinite(out)
    if out.ndim == 2:
        bad = bad.any(axis=1)
    if not bad.any():
        return
    lo = offsets[:-1]
    hi = offsets[1:]
    segs = np.flatnonzero(bad & (hi > lo))
    if segs.size == 0:  # only empty segments given a non-finite fill_value
        return
    idx = np.empty(2 * segs.size, np.int64)
    idx[0::2] = lo[segs]
    idx[1::2] = hi[segs]
    # reduceat reads [idx[k], idx[k+1]) and, for the last index, to the end:
    # an end at len(values) is dropped (only the last segment's can be: any
    # later segment is empty); the odd results, over the gaps, are discarded
    if idx[-1] == values.shape[0]:
        idx = idx[:-1]
    with np.errstate(all="ignore"):
        redo = np.multiply.reduceat(values, idx, axis=0, dtype=np.float64)[0::2]
        out[segs] = redo


def _from_var64(decl, take_sqrt, values, offsets, shape, k_dt, fill_v, use_fill):
    """var/std/nanvar/nanstd (a ``var64`` hint) from the float64 variance kernel.

    Their declarations' finalize computes the variance in float64 and std takes
    its square root there; the store then rounds to the result dtype. This does
    the same steps around one kernel (``decl``: the float64-result variance of
    the same input dtype and ddof), so var and std at every float result dtype
    share one compile and give the same bits. Extra memory: one float64 result.
    """
    from hrarray._kernels.cpu import get_kernel

    var = np.empty(shape, np.float64)
    # A variance is never negative: -1 marks the empty results (count <= ddof)
    # for fill_value; without a fill the kernel writes NaN there itself.
    get_kernel(decl).run(values, offsets, var, np.float64(-1.0), bool(use_fill))
    empty = var < 0 if use_fill else None
    if take_sqrt:
        # NaN stays NaN; a -1 (empty, with a fill) becomes NaN and is replaced
        # below. Not ``where=var >= 0``: NumPy's masked loop took 2.2x the time
        # (12.5M results: 31.6 against 14.1 ms)
        with np.errstate(invalid="ignore"):
            np.sqrt(var, out=var)
    if k_dt == np.float64:
        out = var
    else:
        with np.errstate(over="ignore"):  # a variance beyond float32's range is inf
            out = var.astype(k_dt)
    if empty is not None:
        out[empty] = fill_v
    return out


def _kernel_view(values: np.ndarray, value_dtype: np.dtype):
    """The array a kernel reads: 1-D, or 2-D rows ``(n, m)``.

    Strided and read-only arrays are read in place. Copies happen only for
    non-native byte order (the one documented copy), float16 (read as
    float32) and an inner shape of 2+ dimensions that cannot be viewed as
    rows without one.
    """
    inner = values.shape[1:]
    if values.dtype != value_dtype or not values.dtype.isnative:
        values = values.astype(value_dtype.newbyteorder("="))
    if len(inner) == 0:
        return values, inner
    if len(inner) == 1:
        return values, inner
    # explicit width: reshape(n, -1) fails for n == 0
    return values.reshape(values.shape[0], int(np.prod(inner))), inner


_F64 = np.dtype(np.float64)

CPU = CpuBackend()
