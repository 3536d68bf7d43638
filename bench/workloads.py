"""Seeded, deterministic benchmark workloads (``shared/WORKLOADS.md``).

Every workload is a flat ``values`` buffer plus int64 CSR ``offsets`` (one
offsets array per ragged level, innermost first).  All workloads of one dtype
share one values buffer of ``n`` scalars: the 1-D form is ``(n,)``, the 2-D
form the ``(n / 64, 64)`` view of the same memory, and the segment lengths
count rows (2-D keeps the length distribution, with 64x fewer segments).

=============  =============================================================
``uniform``    lengths ~ Poisson(100)
``powerlaw``   Zipf(a=1.7) lengths, capped at rows / 10 (heavy tail)
``empty_heavy`` 50% empty segments, the rest ~ Poisson(200)
``one_huge``   one segment holds 99% of the rows, plus min(1e5, rows / 20)
               tiny segments sharing the other 1% (multinomial)
``tiny``       lengths uniform in 0..4 (per-segment overhead dominates)
``hierarchy``  chars -> words -> sentences -> documents: words of
               1 + Poisson(4) chars, sentences of Poisson(15) words,
               documents of Poisson(30) sentences (3 ragged levels)
=============  =============================================================

Each length sequence is drawn until it covers the rows, then cut so that the
lengths add up to exactly the number of rows.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

SEED = 20261127
WORKLOADS = ("uniform", "powerlaw", "empty_heavy", "one_huge", "tiny", "hierarchy")
DTYPES = ("float32", "float64")
D = 64  # row width of the 2-D workloads

CPU_SCALARS = 25_000_000  # 100 MB as float32: >= 4x the last-level cache
GPU_SCALARS = 100_000_000  # 400 MB as float32
QUICK_SCALARS = 1 << 18  # smoke runs

# hierarchy: mean lengths of each level
_WORD_CHARS = 4  # 1 + Poisson(4) characters per word
_SENTENCE_WORDS = 15  # Poisson(15) words per sentence
_DOCUMENT_SENTENCES = 30  # Poisson(30) sentences per document


def _rng(*keys: object) -> np.random.Generator:
    """A generator seeded from the global seed and a stable hash of ``keys``."""
    tag = "/".join(str(k) for k in keys).encode()
    return np.random.default_rng([SEED, zlib.crc32(tag)])


def _fit_total(lengths: np.ndarray, total: int) -> np.ndarray:
    """Cut (or extend by one segment) ``lengths`` so they add up to ``total``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    csum = np.cumsum(lengths)
    if csum.size == 0 or csum[-1] < total:
        have = int(csum[-1]) if csum.size else 0
        return np.append(lengths, total - have).astype(np.int64)
    k = int(np.searchsorted(csum, total, side="left"))
    out = lengths[: k + 1].copy()
    out[k] -= int(csum[k]) - total
    return out


def _slack(total: int) -> int:
    return int(10 * math.sqrt(total)) + 100


def segment_lengths(name: str, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths (in rows) of the single-level workload ``name``, adding up to ``rows``."""
    if name == "uniform":
        return _fit_total(rng.poisson(100, size=rows // 100 + _slack(rows)), rows)
    if name == "powerlaw":
        cap = max(1, rows // 10)
        parts, have = [], 0
        while have < rows:
            z = np.minimum(rng.zipf(1.7, size=max(1024, rows // 8)), cap)
            parts.append(z)
            have += int(z.sum())
        return _fit_total(np.concatenate(parts), rows)
    if name == "empty_heavy":
        m = rows // 100 + _slack(rows)
        lengths = rng.poisson(200, size=m)
        lengths[rng.permutation(m)[: m // 2]] = 0
        return _fit_total(lengths, rows)
    if name == "one_huge":
        n_small = int(min(100_000, max(1, rows // 20)))
        big = round(rows * 0.99)
        small = rng.multinomial(rows - big, np.full(n_small, 1.0 / n_small))
        half = n_small // 2
        return np.concatenate([small[:half], [big], small[half:]]).astype(np.int64)
    if name == "tiny":
        return _fit_total(rng.integers(0, 5, size=rows // 2 + _slack(rows)), rows)
    raise ValueError(f"unknown single-level workload {name!r}")


def hierarchy_lengths(rows: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Lengths of the three levels (words in chars, sentences in words, documents in
    sentences), innermost first; each level adds up to the number of items below it."""
    words = _fit_total(
        1 + rng.poisson(_WORD_CHARS, size=rows // (_WORD_CHARS + 1) + _slack(rows)), rows
    )
    nw = len(words)
    sentences = _fit_total(
        rng.poisson(_SENTENCE_WORDS, size=nw // _SENTENCE_WORDS + _slack(nw)), nw
    )
    ns = len(sentences)
    docs = _fit_total(
        rng.poisson(_DOCUMENT_SENTENCES, size=ns // _DOCUMENT_SENTENCES + _slack(ns)), ns
    )
    return [words, sentences, docs]


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


_VALUES_CACHE: dict[tuple[str, int], np.ndarray] = {}


def base_values(dtype: str, n: int) -> np.ndarray:
    """The shared, seeded standard-normal values buffer of ``n`` scalars (cached)."""
    key = (np.dtype(dtype).name, int(n))
    if key not in _VALUES_CACHE:
        rng = _rng("values", *key)
        _VALUES_CACHE[key] = rng.standard_normal(int(n), dtype=np.dtype(dtype).type)
    return _VALUES_CACHE[key]


def clear_cache() -> None:
    _VALUES_CACHE.clear()


@dataclass
class Workload:
    """One benchmark input: ``values`` plus ``offsets`` (innermost level first)."""

    name: str
    dtype: str
    ndim: int
    values: np.ndarray
    offsets: list[np.ndarray]
    _scores: np.ndarray | None = field(default=None, repr=False)

    @property
    def depth(self) -> int:
        return len(self.offsets)

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def top_offsets(self) -> np.ndarray:
        """Offsets of the top-level segments in leaf rows (levels composed)."""
        off = self.offsets[0]
        for outer in self.offsets[1:]:
            off = off[outer]
        return off

    @property
    def top_lengths(self) -> np.ndarray:
        return np.diff(self.top_offsets)

    @property
    def nsegments(self) -> int:
        return len(self.offsets[-1]) - 1

    @property
    def offsets_nbytes(self) -> int:
        return int(sum(o.nbytes for o in self.offsets))

    @property
    def input_nbytes(self) -> int:
        """Bytes every reduction must read: values plus every level's offsets."""
        return int(self.values.nbytes) + self.offsets_nbytes

    @property
    def scores(self) -> np.ndarray:
        """Seeded attention scores, one per leaf row, in the values dtype."""
        if self._scores is None:
            rng = _rng("scores", self.dtype, self.rows)
            self._scores = rng.standard_normal(self.rows, dtype=np.dtype(self.dtype).type)
        return self._scores

    def describe(self) -> dict:
        lens = self.top_lengths
        info = {
            "workload": self.name,
            "dtype": self.dtype,
            "ndim": self.ndim,
            "rows": self.rows,
            "inner": list(self.values.shape[1:]),
            "n_scalars": int(self.values.size),
            "depth": self.depth,
            "nsegments": self.nsegments,
            "max_len": int(lens.max()) if lens.size else 0,
            "median_len": float(np.median(lens)) if lens.size else 0.0,
            "n_empty": int((lens == 0).sum()),
            "values_MB": round(self.values.nbytes / 1e6, 2),
            "offsets_MB": round(self.offsets_nbytes / 1e6, 2),
        }
        if self.depth > 1:
            info["level_sizes"] = [len(o) - 1 for o in self.offsets]
        return info


def make_workload(name: str, dtype: str, ndim: int, n_scalars: int, d: int = D) -> Workload:
    """Workload ``name``: ``n_scalars`` scalars of ``dtype``, as ``(n,)`` or ``(n/d, d)``."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    if ndim not in (1, 2):
        raise ValueError("ndim must be 1 or 2")
    dtype = np.dtype(dtype).name
    rows = int(n_scalars) if ndim == 1 else int(n_scalars) // d
    if rows < 1:
        raise ValueError(f"n_scalars={n_scalars} too small for ndim={ndim}")
    flat = base_values(dtype, rows * (d if ndim == 2 else 1))
    values = flat if ndim == 1 else flat.reshape(rows, d)
    rng = _rng("lengths", name, ndim, rows)
    if name == "hierarchy":
        offsets = [offsets_from_lengths(lv) for lv in hierarchy_lengths(rows, rng)]
    else:
        offsets = [offsets_from_lengths(segment_lengths(name, rows, rng))]
    return Workload(name=name, dtype=dtype, ndim=ndim, values=values, offsets=offsets)
