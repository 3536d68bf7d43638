"""float64 references and result checks for the benchmark.

The references are plain loops written from ``shared/API.md`` (never
``np.add.reduceat``, which is wrong on empty segments), compiled with Numba
(sequential, no fastmath) and accumulated in float64; the sum uses Neumaier
compensation so it is exact enough to judge float64 results of 1e8-element
segments.  They run on 2-D ``(rows, k)`` views (``k = 1`` for 1-D values) and
on the top-level offsets in leaf rows (``levels=depth``).

Tolerances (|result - reference| over the scale of the segment):

=================  ==================================  ==========  ==========
op                 scale                               float32     float64
=================  ==================================  ==========  ==========
sum                sum |x| over the segment            1e-5        1e-10
mean               mean |x| over the segment           1e-5        1e-10
max, argmax        exact (argmax: first occurrence)    0           0
logsumexp          max(1, |reference|)                 1e-5        1e-10
softmax            1 (absolute: values are in [0, 1])  1e-6        1e-12
attention_pool     sum_j w_j |x_j|                     1e-5        1e-10
=================  ==================================  ==========  ==========

float32 at 1e-5 admits NumPy's pairwise float32 summation (about
log2(length) * 6e-8) but not a float32 prefix-sum difference.  A strict check
(hrarray) bounds the error by what the API promises instead, which is far
tighter on long segments: float64 accumulation (``ACC`` times the scale) and
one rounding to the result dtype (``ULP`` times ``|reference|``). At 1e-5 of
the scale, a float32 sum of 2.5e7 rows could lose 1000 of them unnoticed.
The strict check also requires the API's empty-segment value and result dtype; a
lenient one (anchors) does not judge the empty segments of ``mean`` and
``max`` (a user fixes those cheaply; the value is recorded as
``empty_value``), but an empty ``sum`` must be 0 and an empty ``argmax`` -1.
"""

from __future__ import annotations

import numpy as np

TOL = {
    "float32": {
        "sum": 1e-5,
        "mean": 1e-5,
        "logsumexp": 1e-5,
        "softmax": 1e-6,
        "attention_pool": 1e-5,
    },
    "float64": {
        "sum": 1e-10,
        "mean": 1e-10,
        "logsumexp": 1e-10,
        "softmax": 1e-12,
        "attention_pool": 1e-10,
    },
}

# Strict bound (hrarray): |result - reference| <= ULP * |reference| + ACC * scale.
# ULP: two roundings of the result dtype (the float64 result's own and a final
# division or exp); ACC: float64 accumulation, (128 + log2(n) + 8) u64 for the
# blocked pairwise sums up to 1e9 elements, ~2e-14, with 5x room.
ULP = {"float32": 2.0**-23, "float64": 2.0**-51}
ACC = 1e-13

_KERNELS: dict = {}


def _kernels() -> dict:
    """Compile (once, cached on disk) the reference loops."""
    if _KERNELS:
        return _KERNELS
    import numba

    jit = numba.njit(cache=True, nogil=True)

    @jit
    def basic(v, offs, out_sum, out_abs, out_max, out_arg):
        # one pass, rows outer (2-D rows stay contiguous): Neumaier-compensated
        # sum, sum |x|, max, first argmax (the first NaN wins, as in NumPy)
        k = v.shape[1]
        comp = np.zeros(k)
        for i in range(offs.shape[0] - 1):
            s, e = offs[i], offs[i + 1]
            acc = out_sum[i]
            aacc = out_abs[i]
            best = out_max[i]
            arg = out_arg[i]
            for c in range(k):
                acc[c] = 0.0
                comp[c] = 0.0
                aacc[c] = 0.0
                best[c] = -np.inf
                arg[c] = -1
            for j in range(s, e):
                for c in range(k):
                    x = np.float64(v[j, c])
                    t = acc[c] + x
                    if abs(acc[c]) >= abs(x):
                        comp[c] += (acc[c] - t) + x
                    else:
                        comp[c] += (x - t) + acc[c]
                    acc[c] = t
                    aacc[c] += abs(x)
                    b = best[c]
                    if arg[c] < 0 or x > b or (np.isnan(x) and not np.isnan(b)):
                        best[c] = x
                        arg[c] = j - s
            for c in range(k):
                acc[c] += comp[c]

    @jit
    def logsumexp(v, offs, vmax, out):
        k = v.shape[1]
        for i in range(offs.shape[0] - 1):
            s, e = offs[i], offs[i + 1]
            m = vmax[i]
            acc = out[i]
            for c in range(k):
                acc[c] = 0.0
            for j in range(s, e):
                for c in range(k):
                    if m[c] > -np.inf:
                        acc[c] += np.exp(np.float64(v[j, c]) - m[c])
            for c in range(k):
                if e <= s or m[c] == -np.inf:
                    acc[c] = -np.inf
                else:
                    acc[c] = m[c] + np.log(acc[c])

    @jit
    def softmax(v, offs, lse, out):
        k = v.shape[1]
        for i in range(offs.shape[0] - 1):
            for j in range(offs[i], offs[i + 1]):
                for c in range(k):
                    out[j, c] = np.exp(np.float64(v[j, c]) - lse[i, c])

    @jit
    def attention_pool(v, scores, offs, out, out_scale):
        k = v.shape[1]
        for i in range(offs.shape[0] - 1):
            s, e = offs[i], offs[i + 1]
            for c in range(k):
                out[i, c] = 0.0
                out_scale[i, c] = 0.0
            if e <= s:
                continue
            m = -np.inf
            for j in range(s, e):
                m = max(m, np.float64(scores[j]))
            den = 0.0
            for j in range(s, e):
                den += np.exp(np.float64(scores[j]) - m)
            for j in range(s, e):
                w = np.exp(np.float64(scores[j]) - m) / den
                for c in range(k):
                    x = np.float64(v[j, c])
                    out[i, c] += w * x
                    out_scale[i, c] += w * abs(x)

    _KERNELS.update(
        basic=basic, logsumexp=logsumexp, softmax=softmax, attention_pool=attention_pool
    )
    return _KERNELS


def _as2d(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values.reshape(values.shape[0], -1))


class Reference:
    """Lazily computed float64 references of one workload (top-level segments)."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray, scores: np.ndarray | None = None):
        self.values = values
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.scores = scores
        self.inner = values.shape[1:]
        self.nseg = len(offsets) - 1
        self.lengths = np.diff(self.offsets)
        self.dtype = values.dtype.name
        self._cache: dict = {}

    def _shape(self, a: np.ndarray) -> np.ndarray:
        return a.reshape((a.shape[0], *self.inner))

    def basic(self) -> dict:
        if "basic" not in self._cache:
            v = _as2d(self.values)
            shp = (self.nseg, v.shape[1])
            out = {
                "sum": np.empty(shp),
                "abs": np.empty(shp),
                "max": np.empty(shp),
                "argmax": np.empty(shp, np.int64),
            }
            _kernels()["basic"](v, self.offsets, out["sum"], out["abs"], out["max"], out["argmax"])
            self._cache["basic"] = out
        return self._cache["basic"]

    def logsumexp(self) -> np.ndarray:
        if "lse" not in self._cache:
            v = _as2d(self.values)
            out = np.empty((self.nseg, v.shape[1]))
            _kernels()["logsumexp"](v, self.offsets, self.basic()["max"], out)
            self._cache["lse"] = out
        return self._cache["lse"]

    def softmax(self) -> np.ndarray:
        if "softmax" not in self._cache:
            v = _as2d(self.values)
            out = np.zeros(v.shape)  # rows outside every segment stay 0
            _kernels()["softmax"](v, self.offsets, self.logsumexp(), out)
            self._cache["softmax"] = out
        return self._cache["softmax"]

    def attention_pool(self) -> tuple[np.ndarray, np.ndarray]:
        if "attn" not in self._cache:
            v = _as2d(self.values)
            out = np.empty((self.nseg, v.shape[1]))
            scale = np.empty_like(out)
            _kernels()["attention_pool"](
                v, np.ascontiguousarray(self.scores), self.offsets, out, scale
            )
            self._cache["attn"] = (out, scale)
        return self._cache["attn"]

    def expected_dtype(self, op: str) -> np.dtype:
        return np.dtype(np.int64) if op == "argmax" else np.dtype(self.dtype)

    # ------------------------------------------------------------------ check
    def check(self, op: str, result, *, strict: bool, roundings: int = 1) -> dict:
        """Compare ``result`` (NumPy array; leaf values for softmax) with the reference.

        ``roundings``: times the result went through its dtype (a level-by-level
        reduction of k levels: k); each rounding after the first adds ``ULP``
        times the scale to the strict bound.

        Returns ``{"ok": bool, "err": float, "why": str}``; ``why`` is empty when ok.
        """
        res = np.asarray(result)
        tol = TOL[self.dtype].get(op, 0.0)
        want_shape = self.values.shape if op == "softmax" else (self.nseg, *self.inner)
        if res.shape != want_shape:
            return {"ok": False, "err": float("inf"), "why": f"shape {res.shape} != {want_shape}"}
        why = []
        if strict and res.dtype != self.expected_dtype(op):
            why.append(f"dtype {res.dtype} != {self.expected_dtype(op)}")
        r = res.reshape(res.shape[0], -1)
        nz = self.lengths > 0
        empty = ~nz
        err = 0.0
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if op == "softmax":
                ref = self.softmax()
                inside = np.zeros(r.shape[0], bool)
                if self.nseg:
                    inside[self.offsets[0] : self.offsets[-1]] = True
                # scale 1: softmax values are in [0, 1], the lenient error absolute
                d = _scaled_err(r[inside].astype(np.float64), ref[inside], 1.0, self.dtype,
                                strict, roundings)
                d[np.isnan(d)] = np.inf
                err = float(d.max()) if d.size else 0.0
                if err > (1.0 if strict else tol):
                    why.append(_err_text(err, tol, strict, "abs"))
            elif op == "attention_pool":
                ref, scale = self.attention_pool()
                d = _scaled_err(r.astype(np.float64), ref, scale, self.dtype, strict, roundings)
                d[nz] = np.where(np.isnan(d[nz]), np.inf, d[nz])
                err = float(d[nz].max()) if nz.any() else 0.0
                if err > (1.0 if strict else tol):
                    why.append(_err_text(err, tol, strict))
                if empty.any() and not np.all(r[empty] == 0):
                    why.append("empty segment != 0")
            elif op in ("sum", "mean"):
                b = self.basic()
                lens = np.maximum(self.lengths, 1).reshape(-1, 1).astype(np.float64)
                ref, scale = (
                    (b["sum"], b["abs"]) if op == "sum" else (b["sum"] / lens, b["abs"] / lens)
                )
                d = _scaled_err(r.astype(np.float64), ref, scale, self.dtype, strict, roundings)
                dn = d[nz]
                dn[np.isnan(dn)] = np.inf
                err = float(dn.max()) if dn.size else 0.0
                if err > (1.0 if strict else tol):
                    why.append(_err_text(err, tol, strict))
                if empty.any():
                    ev = r[empty]
                    if op == "sum" and not np.all(ev == 0):
                        why.append(f"empty segment gives {ev.ravel()[0].item()!r}, not 0")
                    if op == "mean" and strict and not np.all(np.isnan(ev)):
                        why.append(f"empty segment gives {ev.ravel()[0].item()!r}, not NaN")
            elif op == "max":
                ref = self.basic()["max"]
                bad = int((r[nz].astype(np.float64) != ref[nz]).sum())
                err = float(bad)
                if bad:
                    why.append(f"{bad} mismatches")
                if empty.any():
                    ev = r[empty].astype(np.float64)
                    if strict and not np.all(ev == -np.inf):
                        why.append(f"empty segment gives {ev.ravel()[0].item()!r}, not -inf")
            elif op == "argmax":
                ref = self.basic()["argmax"]
                bad = int((r[nz] != ref[nz]).sum())
                err = float(bad)
                if bad:
                    why.append(f"{bad} mismatches")
                if empty.any() and not np.all(r[empty] == -1):
                    why.append(f"empty segment gives {r[empty].ravel()[0].item()!r}, not -1")
            elif op == "logsumexp":
                ref = self.logsumexp()
                rr = r.astype(np.float64)
                d = _scaled_err(rr[nz], ref[nz], np.maximum(1.0, np.abs(ref[nz])), self.dtype,
                                strict, roundings)
                d[np.isnan(d)] = np.inf
                err = float(d.max()) if d.size else 0.0
                if err > (1.0 if strict else tol):
                    why.append(_err_text(err, tol, strict))
                if empty.any() and not np.all(rr[empty] == -np.inf):
                    why.append(f"empty segment gives {rr[empty].ravel()[0].item()!r}, not -inf")
            else:
                raise ValueError(f"no reference for op {op!r}")
        out = {"ok": not why, "err": err, "why": "; ".join(why)}
        if empty.any() and op != "softmax":
            out["empty_value"] = repr(r[empty].ravel()[0].item())
        return out


def _scaled_err(got, ref, scale, dtype: str, strict: bool, roundings: int = 1) -> np.ndarray:
    """|got - ref| over the scale (lenient), or over the strict bound
    ``ULP * |ref| + ((roundings - 1) * ULP + ACC) * scale`` (strict: fails above 1)."""
    d = np.abs(got - ref)
    if strict:
        bound = ULP[dtype] * np.abs(ref) + ((roundings - 1) * ULP[dtype] + ACC) * scale
        return d / np.maximum(bound, 1e-300)
    return d / np.maximum(scale, 1e-300)


def _err_text(err: float, tol: float, strict: bool, kind: str = "rel") -> str:
    if strict:
        return f"error {err:.3g}x the strict bound (checks.ULP, checks.ACC)"
    return f"max {kind} err {err:.3g} > {tol:g}"
