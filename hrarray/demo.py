"""``python -m hrarray demo``: hierarchical text encoding with one reducer per level.

The demo reads a corpus (by default the docstrings of the Python standard
library's modules, which exist offline wherever Python does; or ``--input``), splits it
into documents → paragraphs → sentences → words → characters with vectorised
NumPy (:mod:`hrarray._text`), embeds every character with a fixed seeded
table, and reduces the hierarchy level by level with a different reducer per
level, a seeded projection + ``tanh`` (the per-level encoder) in between:

========================  =====================================================
characters → words        ``hr.mean``
words → sentences         ``hr.attention_pool`` (scores: a seeded projection of
                          the word vectors)
sentences → paragraphs    ``hr.max``
paragraphs → documents    ``hr.mean``
========================  =====================================================

It prints one row per level (count, segment lengths, time, throughput), and,
as a sanity check of the document vectors, the nearest documents of a few
documents by cosine similarity.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

import hrarray as hr
from hrarray._text import LEVELS, TextHierarchy, read_documents, stdlib_docstrings, text_hierarchy

__all__ = ["DemoResult", "LevelStats", "build_parser", "main", "run"]

#: Documents whose neighbours are printed when they are in the corpus.
WELL_KNOWN = ("json", "re", "asyncio", "collections", "unittest")
#: Character embedding rows: code points below 4096 get their own row, the
#: others share 4096 hashed rows.
_DIRECT_ROWS = 4096
_HASHED_ROWS = 4096


# --------------------------------------------------------------------------- results


@dataclass
class LevelStats:
    """One row of the demo's table.

    Attributes
    ----------
    level : str
        Level name (see :data:`hrarray._text.LEVELS`).
    count : int
        Number of vectors the level produced.
    lengths : numpy.ndarray or None
        Segment lengths in elements of the level below (None for characters).
    seconds : float
        Time of the level: its reduction plus its encoder (for characters, the
        embedding lookup).
    inputs : int
        Elements read by the level (vectors of the level below; characters for
        the embedding lookup).
    bytes_read : int
        Bytes of input vectors read by the reduction.
    """

    level: str
    count: int
    lengths: np.ndarray | None
    seconds: float
    inputs: int
    bytes_read: int


@dataclass
class DemoResult:
    """What :func:`run` computed.

    Attributes
    ----------
    names : list of str
        One name per document.
    vectors : numpy.ndarray
        ``(ndocuments, dim)`` ``float32`` document vectors (on the host).
    hierarchy : TextHierarchy
        The text's offsets.
    levels : list of LevelStats
        One entry per level, innermost first.
    parse_seconds, warmup_seconds, total_seconds : float
        Text → offsets time, the untimed first pass (JIT compilation included),
        and the time of the whole call.
    device : str
        ``"cpu"`` or ``"cuda"``.
    """

    names: list[str]
    vectors: np.ndarray
    hierarchy: TextHierarchy
    levels: list[LevelStats]
    parse_seconds: float
    warmup_seconds: float
    total_seconds: float
    device: str

    @property
    def counts(self) -> dict[str, int]:
        """Vectors produced per level, ``{level: count}``."""
        return {s.level: s.count for s in self.levels}


# --------------------------------------------------------------------------- helpers


def _progress_wrapper(enabled: bool) -> Callable[..., Iterable]:
    """A ``tqdm``-like wrapper: a bar on a terminal when tqdm is installed, else identity."""
    if enabled and sys.stdout.isatty() and sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return lambda it, **kw: tqdm(it, leave=False, dynamic_ncols=True, **kw)
    return lambda it, **kw: it


def _cuda_or_message() -> tuple[Any, str | None]:
    """Import CuPy and check for a GPU: ``(cupy, None)`` or ``(None, reason)``."""
    try:
        import cupy

        ndev = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # ImportError, CUDARuntimeError (no driver), ...
        return None, f"{type(exc).__name__}: {exc}".strip()
    if ndev < 1:
        return None, "no CUDA device found"
    return cupy, None


@dataclass
class _Params:
    table: Any  # (rows, dim) float32 character embeddings
    encoders: list  # three (dim, dim) float32 projections, between levels
    query: Any  # (dim,) float32: attention scores = word vectors @ query


def _make_params(dim: int, seed: int, xp) -> _Params:
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((_DIRECT_ROWS + _HASHED_ROWS, dim), dtype=np.float32)
    scale = np.float32(1.0 / math.sqrt(dim))
    encoders = [rng.standard_normal((dim, dim), dtype=np.float32) * scale for _ in range(3)]
    query = rng.standard_normal(dim, dtype=np.float32) * np.float32(2.0) * scale
    return _Params(xp.asarray(table), [xp.asarray(w) for w in encoders], xp.asarray(query))


def _char_rows(chars: np.ndarray) -> np.ndarray:
    """Row of the embedding table of each code point (int64)."""
    codes = chars.astype(np.int64)
    hashed = _DIRECT_ROWS + (codes * 2654435761) % _HASHED_ROWS
    return np.where(codes < _DIRECT_ROWS, codes, hashed)


def _encode(
    h: TextHierarchy,
    params: _Params,
    xp,
    sync: Callable[[], None],
    progress: Callable[..., Iterable] | None = None,
    desc: str = "reducing",
) -> tuple[Any, list[LevelStats]]:
    """Embed the characters and reduce the 4 levels; returns document vectors and stats."""
    dim = params.table.shape[1]
    itemsize = np.dtype(np.float32).itemsize
    stats: list[LevelStats] = []

    t0 = time.perf_counter()
    rows = xp.asarray(_char_rows(h.chars))
    emb = params.table[rows]  # (nchars, dim) float32
    offsets = [xp.asarray(o) for o in h.offsets]
    # depth 4: documents → paragraphs → sentences → words → characters
    x = hr.nest(emb, *offsets)
    sync()
    nchars = int(emb.shape[0])
    stats.append(
        LevelStats(
            "characters", nchars, None, time.perf_counter() - t0, nchars, nchars * dim * itemsize
        )
    )

    def encoder(r, k):
        # The per-level encoder: a plain dense matmul + tanh on the leaf rows,
        # then the same ragged structure around the new vectors.
        return r.with_values(xp.tanh(r.leaf_values @ params.encoders[k]))

    def words(x):  # characters → words: mean of the character embeddings
        return encoder(hr.mean(x), 0)

    def sentences(x):  # words → sentences: attention pooling with projected scores
        scores = x.with_values(x.leaf_values @ params.query)
        return encoder(hr.attention_pool(x, scores), 1)

    def paragraphs(x):  # sentences → paragraphs: element-wise max
        return encoder(hr.max(x), 2)

    def documents(x):  # paragraphs → documents: mean (dense (ndocs, dim) result)
        return hr.mean(x)

    steps = list(zip(LEVELS[1:], (words, sentences, paragraphs, documents), strict=True))
    if progress is not None:
        steps = progress(steps, desc=desc, total=len(steps))
    for level, step in steps:
        nin = stats[-1].count
        t0 = time.perf_counter()
        x = step(x)
        sync()
        seconds = time.perf_counter() - t0
        out = x if level == "documents" else x.leaf_values
        stats.append(
            LevelStats(
                level, int(out.shape[0]), h.lengths(level), seconds, nin, nin * dim * itemsize
            )
        )
    return x, stats


def run(
    documents: list[tuple[str, str]],
    *,
    dim: int = 64,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    warmup: bool = True,
) -> DemoResult:
    """Encode `documents` hierarchically; the demo without the printing.

    Parameters
    ----------
    documents : list of (str, str)
        ``(name, text)`` pairs (see :func:`hrarray._text.stdlib_docstrings` and
        :func:`hrarray._text.read_documents`).
    dim : int, default 64
        Embedding width.
    seed : int, default 0
        Seed of the character table, the encoders and the attention query.
    device : {"cpu", "cuda"}
        ``"cuda"`` runs on CuPy arrays (needs CuPy and a GPU: ``RuntimeError``).
    progress : bool, default False
        Show a progress bar (tqdm, on a terminal only).
    warmup : bool, default True
        Run the pipeline once untimed first, so that the per-level timings
        exclude JIT compilation (``warmup_seconds`` holds that first pass).

    Returns
    -------
    DemoResult
    """
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    start = time.perf_counter()
    if device == "cuda":
        cupy, why = _cuda_or_message()
        if cupy is None:
            raise RuntimeError(f"--device cuda needs CuPy and a CUDA GPU ({why})")
        xp = cupy

        def sync():
            cupy.cuda.Device().synchronize()
    elif device == "cpu":
        xp = np

        def sync():
            return None
    else:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    wrap = _progress_wrapper(progress)
    params = _make_params(dim, seed, xp)

    t0 = time.perf_counter()
    h = text_hierarchy([t for _, t in documents], [n for n, _ in documents])
    parse_seconds = time.perf_counter() - t0

    warmup_seconds = 0.0
    if warmup:
        # A first, untimed pass on the same data compiles exactly the kernels the
        # timed pass uses (the backends pick kernels by dtype, layout *and* size,
        # so a tiny warm-up input could compile other ones). It also loads the
        # on-disk kernel cache on later runs.
        t0 = time.perf_counter()
        _encode(h, params, xp, sync, progress=wrap, desc="first pass (compiling kernels)")
        warmup_seconds = time.perf_counter() - t0

    vectors, stats = _encode(h, params, xp, sync, progress=wrap, desc="timed pass")
    vectors = vectors.get() if xp is not np else np.asarray(vectors)
    return DemoResult(
        h.names,
        vectors,
        h,
        stats,
        parse_seconds,
        warmup_seconds,
        time.perf_counter() - start,
        device,
    )


# --------------------------------------------------------------------------- output


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:7.1f} {prefix}{unit}"
    return f"{value:7.1f} {unit}"


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:7.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:7.1f} ms"
    return f"{seconds:7.2f} s "


def format_table(result: DemoResult) -> str:
    """The per-level table as text (one header line, one row per level)."""
    header = (
        f"{'level':<11} {'count':>9} {'len min':>8} {'median':>8} {'max':>7} "
        f"{'time':>10} {'in elements/s':>14} {'in MB/s':>10}"
    )
    lines = [header, "-" * len(header)]
    for s in result.levels:
        if s.lengths is None:
            lmin = lmed = lmax = "-"
        else:
            lmin, lmax = str(int(s.lengths.min())), str(int(s.lengths.max()))
            lmed = f"{float(np.median(s.lengths)):g}"
        secs = max(s.seconds, 1e-9)
        lines.append(
            f"{s.level:<11} {s.count:>9} {lmin:>8} {lmed:>8} {lmax:>7} "
            f"{_duration(s.seconds):>10} {_si(s.inputs / secs, '/s'):>14} "
            f"{s.bytes_read / secs / 1e6:>10.1f}"
        )
    return "\n".join(lines)


def nearest(
    vectors: np.ndarray, names: list[str], queries: Iterable[str], k: int = 3
) -> list[tuple[str, list[tuple[str, float]]]]:
    """The `k` nearest documents of each query by cosine similarity.

    The vectors are centred (the mean document vector subtracted) first: the
    pooled vectors share a large common component that would otherwise make
    every pair look alike.

    Parameters
    ----------
    vectors : numpy.ndarray
        ``(ndocs, dim)`` document vectors.
    names : list of str
        Document names.
    queries : iterable of str
        Names of the documents whose neighbours are wanted.
    k : int, default 3

    Returns
    -------
    list of (str, list of (str, float))
        ``(query, [(neighbour, similarity), ...])``.
    """
    v = np.asarray(vectors, dtype=np.float64)
    v = v - v.mean(axis=0)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms > 0, norms, 1.0)
    index = {n: i for i, n in enumerate(names)}
    out = []
    for q in queries:
        i = index[q]
        sim = v @ v[i]
        sim[i] = -np.inf
        order = np.argsort(-sim, kind="stable")[: min(k, len(names) - 1)]
        out.append((q, [(names[j], float(sim[j])) for j in order]))
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m hrarray demo`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m hrarray demo",
        description=(
            "Encode a text corpus hierarchically with hrarray: characters → words "
            "(mean) → sentences (attention pooling) → paragraphs (max) → documents "
            "(mean), a seeded projection + tanh between levels. The default corpus is "
            "the docstrings of the Python standard library's modules."
        ),
    )
    p.add_argument(
        "--input",
        metavar="PATH",
        help="a text file (one document) or a folder of text files (one each) "
        "instead of the standard library's docstrings",
    )
    p.add_argument("--limit", type=int, metavar="N", help="use the first N documents only")
    p.add_argument("--dim", type=int, default=64, help="embedding width (default 64)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the character table and the encoders (default 0)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu: NumPy + Numba kernels; cuda: CuPy arrays (needs CuPy and a GPU)",
    )
    p.add_argument(
        "--save", metavar="FILE.npz", help="write the document vectors and names to a .npz file"
    )
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after ``demo`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for a usage error or when ``--device cuda`` cannot run.
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.dim < 1:
        print(f"hrarray demo: --dim must be positive, got {args.dim}", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print(f"hrarray demo: --limit must be positive, got {args.limit}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        cupy, why = _cuda_or_message()
        if cupy is None:
            print(f"hrarray demo: --device cuda needs CuPy and a CUDA GPU ({why})", file=sys.stderr)
            return 2
    wrap = _progress_wrapper(not args.no_progress)

    t0 = time.perf_counter()
    if args.input:
        try:
            documents = read_documents(
                args.input, limit=args.limit, progress=lambda it: wrap(it, desc="reading")
            )
        except OSError as exc:
            print(f"hrarray demo: {exc}", file=sys.stderr)
            return 2
        source = args.input
    else:
        documents = stdlib_docstrings(
            limit=args.limit, progress=lambda it: wrap(it, desc="reading")
        )
        source = f"docstrings of the Python {sys.version.split()[0]} standard library"
    read_seconds = time.perf_counter() - t0
    if not any(text.strip() for _, text in documents):
        print(f"hrarray demo: no text with any word in {source}", file=sys.stderr)
        return 2

    result = run(
        documents, dim=args.dim, seed=args.seed, device=args.device, progress=not args.no_progress
    )
    h = result.hierarchy
    dropped = len(documents) - len(h.names)
    print(
        f"corpus: {source}: {len(h.names)} documents"
        + (f" ({dropped} without words skipped)" if dropped else "")
        + f", {len(h.chars):,} characters (whitespace excluded)"
    )
    print(f"device: {result.device}, dim {args.dim}, seed {args.seed}")
    print(
        f"read {_duration(read_seconds).strip()}, text -> offsets (NumPy) "
        f"{_duration(result.parse_seconds).strip()}, first pass (JIT compile + run) "
        f"{_duration(result.warmup_seconds).strip()}"
    )
    print()
    print(
        "reducers: words = mean(chars), sentences = attention_pool(words), "
        "paragraphs = max(sentences), documents = mean(paragraphs);"
    )
    print("time = reduction + encoder (projection + tanh); in = vectors read from the level below")
    print(format_table(result))
    print()
    print(
        f"document vectors: {result.vectors.shape[0]} x {result.vectors.shape[1]} "
        f"{result.vectors.dtype}, total {_duration(result.total_seconds + read_seconds).strip()}"
    )

    names = h.names
    if len(names) >= 2:
        queries = [n for n in WELL_KNOWN if n in set(names)] or names[:5]
        print()
        print(
            "nearest documents (cosine similarity of the centred document vectors; the "
            "encoders are random, not trained,"
        )
        print("so neighbours reflect spelling, punctuation and length rather than meaning):")
        width = max(len(q) for q in queries)
        for q, neighbours in nearest(result.vectors, names, queries, k=3):
            shown = "   ".join(f"{n} ({s:+.2f})" for n, s in neighbours)
            print(f"  {q:<{width}} -> {shown}")
    if args.save:
        try:
            np.savez(args.save, names=np.array(names), vectors=result.vectors)
        except OSError as exc:
            print(f"python -m hrarray demo: cannot write --save {args.save}: {exc}",
                  file=sys.stderr)
            return 1
        print(f"\nsaved {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
