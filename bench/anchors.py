"""Anchors: what a user would reach for today instead of hrarray.

Each anchor is optional: ``unavailable()`` returns the reason it cannot run
(missing package, no GPU) or ``None``.  ``build(op, case)`` returns a
zero-argument callable that computes the op on the case's input and returns
an array (NumPy, CuPy or torch), or ``None`` when the anchor has no such op.
Everything the anchor needs to turn CSR offsets into its answer (segment ids,
lengths, the composed offsets of a hierarchy, empty-segment fixes, index
conversion) happens INSIDE the callable, so it is timed; building a
zero-copy view (an awkward ``ListOffsetArray``, a torch tensor over the same
memory) is also inside it and costs microseconds.  ``NOTES`` says what each
timing includes.

The ``case`` object carries ``values`` and ``offsets_levels`` (a list of
offsets arrays, innermost first) on the anchor's device, ``scores`` for
``attention_pool``, ``xp`` (numpy or cupy) and ``ndim``.

PyTorch is imported only inside the torch anchors, guarded by
``except ImportError``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

NOTES = {
    "numpy reduceat": "np.<ufunc>.reduceat on the non-empty starts, scattered into a filled output "
    "(raw reduceat is wrong on empty segments); incl. np.diff; logsumexp/softmax/attention_pool "
    "are NumPy compositions (reduceat max, np.repeat, exp, reduceat sum)",
    "awkward": "ak.sum/mean/max(mask_identity=False)/argmax(axis=1) on a zero-copy ListOffsetArray "
    "(built inside the timing: microseconds); argmax incl. fill_none(-1)",
    "numpy_groupies": "npg.aggregate_nb; incl. the segment-id build np.repeat(arange, lengths) "
    "and, for argmax, the global-to-local index conversion",
    "numbagg": "numbagg.group_nan*; incl. the segment-id build np.repeat(arange, lengths) "
    "and, for argmax, the NaN/global-index conversion",
    "torch.segment_reduce": "torch.segment_reduce(offsets=..., axis=0, unsafe=True) on zero-copy "
    "tensors (DLPack); mean's empty segments as torch gives them",
    "cuda.compute": "cuda.compute.segmented_reduce (CUB), 1-D only, float accumulation in the "
    "input dtype; mean = sum / lengths",
    "cupy cumsum-diff f64": "CuPy: float64 prefix sums P, then P[ends] - P[starts] (two passes, "
    "an 8-byte/row temporary); mean = sum / lengths",
    "cupy cumsum-diff f32": "CuPy: the same in float32 (fast; its error grows with the prefix)",
    "awkward cuda": "awkward's CUDA backend on a ListOffsetArray of CuPy buffers",
}


# ---------------------------------------------------------------------------- helpers
def _compose(levels):
    off = levels[0]
    for outer in levels[1:]:
        off = off[outer]
    return off


def _have(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as e:  # ImportError, or a broken install
        return f"{module} not importable ({type(e).__name__}: {str(e)[:80]})"
    return None


def _reduceat_fixed(uf, values, offs, fill):
    """``uf.reduceat`` over segments ``offs``, correct for empty segments."""
    lens = np.diff(offs)
    nz = lens > 0
    out = np.full((len(lens), *values.shape[1:]), fill, dtype=values.dtype)
    if nz.any():
        v = values[offs[0] : offs[-1]]
        out[nz] = uf.reduceat(v, offs[:-1][nz] - offs[0], axis=0)
    return out, lens


def _bcast(lens, ndim):
    return lens.reshape((-1,) + (1,) * (ndim - 1))


class Anchor:
    name = ""
    device = "cpu"
    ops: tuple[str, ...] = ()

    def unavailable(self) -> str | None:
        return None

    def build(self, op: str, case) -> Callable | None:
        raise NotImplementedError


# ---------------------------------------------------------------------------- CPU
class NumpyReduceat(Anchor):
    name = "numpy reduceat"
    ops = ("sum", "mean", "max", "logsumexp", "softmax", "attention_pool")

    def build(self, op, case):
        values, levels, nd = case.values, case.offsets_levels, case.ndim
        if op not in self.ops:
            return None

        def run():
            offs = _compose(levels)
            if op in ("sum", "mean"):
                out, lens = _reduceat_fixed(np.add, values, offs, 0)
                if op == "mean":
                    with np.errstate(invalid="ignore", divide="ignore"):
                        out = out / _bcast(lens, nd).astype(out.dtype)
                return out
            if op == "max":
                return _reduceat_fixed(np.maximum, values, offs, -np.inf)[0]
            if op == "attention_pool":
                sc = case.scores[offs[0] : offs[-1]]
                rel = offs - offs[0]
                m, lens = _reduceat_fixed(np.maximum, sc, rel, -np.inf)
                e = np.exp(sc - np.repeat(m, lens))
                s, _ = _reduceat_fixed(np.add, e, rel, 0)
                w = e / np.repeat(s, lens)
                v = values[offs[0] : offs[-1]]
                wv = w * v if nd == 1 else w[:, None] * v
                return _reduceat_fixed(np.add, wv, rel, 0)[0]
            # logsumexp / softmax: max, shift, exp, sum
            v = values[offs[0] : offs[-1]]
            rel = offs - offs[0]
            m, lens = _reduceat_fixed(np.maximum, v, rel, -np.inf)
            e = np.exp(v - np.repeat(m, lens, axis=0))
            s, _ = _reduceat_fixed(np.add, e, rel, 0)
            if op == "softmax":
                return e / np.repeat(s, lens, axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                return m + np.log(s)  # empty: -inf + log(0) = -inf

        return run


class Awkward(Anchor):
    name = "awkward"
    ops = ("sum", "mean", "max", "argmax")

    def unavailable(self):
        return _have("awkward")

    def build(self, op, case):
        if op not in self.ops:
            return None
        import awkward as ak

        values, levels = case.values, case.offsets_levels

        def run():
            arr = ak.Array(
                ak.contents.ListOffsetArray(
                    ak.index.Index64(_compose(levels)), ak.contents.NumpyArray(values)
                )
            )
            if op == "sum":
                return ak.to_numpy(ak.sum(arr, axis=1))
            if op == "mean":
                return ak.to_numpy(ak.mean(arr, axis=1))
            if op == "max":
                return ak.to_numpy(ak.max(arr, axis=1, mask_identity=False))
            return ak.to_numpy(ak.fill_none(ak.argmax(arr, axis=1), -1))

        return run


class NumpyGroupies(Anchor):
    name = "numpy_groupies"
    ops = ("sum", "mean", "max", "argmax")

    def unavailable(self):
        return _have("numpy_groupies")

    def build(self, op, case):
        if op not in self.ops:
            return None
        import numpy_groupies as npg

        values, levels, nd = case.values, case.offsets_levels, case.ndim
        kw = {"axis": 0} if nd == 2 else {}
        fill = {"sum": 0, "mean": np.nan, "max": -np.inf, "argmax": -1}[op]

        def run():
            offs = _compose(levels)
            lens = np.diff(offs)
            nseg = len(lens)
            ids = np.repeat(np.arange(nseg), lens)
            v = values[offs[0] : offs[-1]]
            out = npg.aggregate_nb(ids, v, op, size=nseg, fill_value=fill, **kw)
            if op == "argmax":  # global row -> index inside the segment
                starts = _bcast(offs[:-1] - offs[0], nd)
                out = np.where(out >= 0, out - starts, -1)
            return out

        return run


class Numbagg(Anchor):
    name = "numbagg"
    ops = ("sum", "mean", "max", "argmax")

    def unavailable(self):
        return _have("numbagg")

    def build(self, op, case):
        if op not in self.ops:
            return None
        import numbagg

        fn = {
            "sum": numbagg.group_nansum,
            "mean": numbagg.group_nanmean,
            "max": numbagg.group_nanmax,
            "argmax": numbagg.group_nanargmax,
        }[op]
        values, levels, nd = case.values, case.offsets_levels, case.ndim

        def run():
            offs = _compose(levels)
            lens = np.diff(offs)
            nseg = len(lens)
            ids = np.repeat(np.arange(nseg), lens)
            v = values[offs[0] : offs[-1]]
            if nd == 1:
                out = fn(v, ids, num_labels=nseg)
            else:  # the label axis comes last: (d, nseg)
                out = fn(v, ids, num_labels=nseg, axis=0).T
            if op == "argmax":  # float global rows with NaN for empty -> local int64
                starts = _bcast(offs[:-1] - offs[0], nd)
                out = np.where(np.isnan(out), -1, out - starts).astype(np.int64)
            return out

        return run


class TorchSegmentReduce(Anchor):
    """``torch.segment_reduce`` on the CPU (``device='cpu'``) or CUDA (``'cuda'``)."""

    ops = ("sum", "mean", "max")

    def __init__(self, device: str):
        self.device = device
        self.name = "torch.segment_reduce" + (" (cpu)" if device == "cpu" else "")

    def unavailable(self):
        try:
            import torch
        except ImportError as e:
            return f"torch not importable ({e})"
        if self.device == "cuda" and not torch.cuda.is_available():
            return "torch.cuda.is_available() is False"
        return None

    def build(self, op, case):
        if op not in self.ops:
            return None
        try:
            import torch
        except ImportError:
            return None
        xp = case.xp

        def tensor(a):
            return torch.from_numpy(a) if xp is np else torch.from_dlpack(a)

        tv = tensor(case.values)
        levels = [tensor(o) for o in case.offsets_levels]
        kw = {"initial": float("-inf")} if op == "max" else {}

        def run():
            return torch.segment_reduce(tv, op, offsets=_compose(levels), axis=0, unsafe=True, **kw)

        return run


# ---------------------------------------------------------------------------- GPU
class CudaCompute(Anchor):
    name = "cuda.compute"
    device = "cuda"
    ops = ("sum", "mean", "max")

    def unavailable(self):
        try:
            import cuda.compute as cc
        except Exception as e:
            return f"cuda.compute not importable ({type(e).__name__}: {str(e)[:80]}; pip cuda-cccl)"
        if not getattr(cc, "_BINDINGS_AVAILABLE", True):
            return "cuda.compute bindings unavailable"
        return None

    def build(self, op, case):
        if op not in self.ops or case.ndim != 1:
            return None  # CUB segments are scalar sequences: 1-D only
        import cuda.compute as cc

        cp = case.xp
        values, levels = case.values, case.offsets_levels
        kind = cc.OpKind.MAXIMUM if op == "max" else cc.OpKind.PLUS
        h = np.full(1, -np.inf if op == "max" else 0, dtype=values.dtype)

        def run():
            offs = _compose(levels)
            nseg = len(offs) - 1
            out = cp.empty(nseg, values.dtype)
            cc.segmented_reduce(
                d_in=values,
                d_out=out,
                num_segments=nseg,
                start_offsets_in=offs[:-1],
                end_offsets_in=offs[1:],
                op=kind,
                h_init=h,
            )
            if op == "mean":
                out = out / cp.diff(offs).astype(values.dtype)
            return out

        return run


class CupyCumsumDiff(Anchor):
    device = "cuda"
    ops = ("sum", "mean")

    def __init__(self, acc: str):
        self.acc = acc
        self.name = f"cupy cumsum-diff {'f64' if acc == 'float64' else 'f32'}"

    def unavailable(self):
        return _have("cupy")

    def build(self, op, case):
        if op not in self.ops:
            return None
        if self.acc == "float32" and case.values.dtype != np.float32:
            return None  # same as the f64 variant
        cp = case.xp
        values, levels, nd = case.values, case.offsets_levels, case.ndim
        acc = np.dtype(self.acc)

        def run():
            offs = _compose(levels)
            p = cp.empty((values.shape[0] + 1, *values.shape[1:]), acc)
            p[0] = 0
            cp.cumsum(values, axis=0, dtype=acc, out=p[1:])
            out = (p[offs[1:]] - p[offs[:-1]]).astype(values.dtype)
            if op == "mean":
                lens = _bcast(cp.diff(offs), nd).astype(values.dtype)
                out = out / lens  # 0 / 0 -> NaN for empty segments
            return out

        return run


class AwkwardCuda(Anchor):
    name = "awkward cuda"
    device = "cuda"
    ops = ("sum", "mean", "max", "argmax")

    def unavailable(self):
        why = _have("awkward")
        if why:
            return why
        import awkward as ak

        try:
            import cupy as cp

            a = ak.Array(
                ak.contents.ListOffsetArray(
                    ak.index.Index64(cp.asarray([0, 1], dtype=np.int64)),
                    ak.contents.NumpyArray(cp.ones(1, np.float32)),
                )
            )
            ak.sum(a, axis=1)
        except Exception as e:
            return f"awkward CUDA backend unusable ({type(e).__name__}: {str(e)[:80]})"
        return None

    def build(self, op, case):
        if op not in self.ops:
            return None
        import awkward as ak

        values, levels = case.values, case.offsets_levels

        def run():
            arr = ak.Array(
                ak.contents.ListOffsetArray(
                    ak.index.Index64(_compose(levels)), ak.contents.NumpyArray(values)
                )
            )
            if op == "sum":
                r = ak.sum(arr, axis=1)
            elif op == "mean":
                r = ak.mean(arr, axis=1)
            elif op == "max":
                r = ak.max(arr, axis=1, mask_identity=False)
            else:
                r = ak.fill_none(ak.argmax(arr, axis=1), -1)
            return ak.to_cupy(r)

        return run


def cpu_anchors(opt_in: tuple[str, ...] = ()) -> list[Anchor]:
    """The CPU anchors; torch's CPU ``segment_reduce`` only when named in ``opt_in``: its
    OpenMP runtime in the same process as Numba's ``omp`` threading layer is a known
    source of crashes, which would be blamed on hrarray."""
    out: list[Anchor] = [NumpyReduceat(), Awkward(), NumpyGroupies(), Numbagg()]
    torch_cpu = TorchSegmentReduce("cpu")
    if torch_cpu.name in opt_in:
        out.append(torch_cpu)
    return out


def gpu_anchors() -> list[Anchor]:
    return [
        TorchSegmentReduce("cuda"),
        CudaCompute(),
        CupyCumsumDiff("float64"),
        CupyCumsumDiff("float32"),
        AwkwardCuda(),
    ]


def to_numpy(result):
    """An anchor's or hrarray's result as a NumPy array (outside any timing)."""
    mod = type(result).__module__
    if mod.startswith("torch"):
        return result.detach().cpu().numpy()
    if mod.startswith("cupy"):
        return result.get()
    return np.asarray(result)
