"""Text corpora for the demo: documents → paragraphs → sentences → words → characters.

This module turns plain text into the offsets of a 4-level ragged hierarchy with
vectorised NumPy (one Python loop per *document* to read and join the text, none
per word or character), and loads the demo's default corpus: the docstrings of
the Python standard library's modules, which exist offline wherever Python does.

The splitting rules (the same ones :func:`text_counts` counts with) are:

* **characters**: every non-whitespace character (a Unicode code point) is a
  leaf value; whitespace is what separates words and is not stored.
* **words**: maximal runs of non-whitespace characters, exactly as
  :meth:`str.split` with no argument (Unicode whitespace as :meth:`str.isspace`).
* **sentences**: a sentence ends after a word whose last character is ``.``,
  ``!`` or ``?`` (sentence punctuation followed by whitespace), or at the end of
  its paragraph.
* **paragraphs**: separated by blank lines, i.e. by whitespace holding at least
  two line feeds (``\\r\\n`` and ``\\r`` count as ``\\n``).
* **documents**: one per input text; a document with no word is dropped.

No level holds an empty segment: words, sentences and paragraphs are defined by
the words they contain.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import pkgutil
import sys
import tokenize
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "LEVELS",
    "TextHierarchy",
    "read_documents",
    "stdlib_docstrings",
    "text_counts",
    "text_hierarchy",
]

#: Level names, innermost first.
LEVELS = ("characters", "words", "sentences", "paragraphs", "documents")

#: Every code point for which ``str.isspace()`` is true (all are below 0x3001).
_WHITESPACE = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)
_SENTENCE_END = np.array([ord("."), ord("!"), ord("?")], dtype=np.uint32)
_LF = ord("\n")

# Modules never read for the default corpus: they start GUIs, open a browser,
# print on import, change the terminal, or are test suites.
_SKIP_MODULES = frozenset(
    {
        "antigravity",
        "this",
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "readline",
        "test",
        "lib2to3",
        "pydoc_data",
        "ensurepip",
    }
)
# Packages whose submodules are not read (near-identical generated docstrings).
_NO_SUBMODULES = frozenset({"encodings"})
_SKIP_SUBMODULE_NAMES = frozenset({"test", "tests", "idle_test", "__main__"})


# --------------------------------------------------------------------------- hierarchy


@dataclass(frozen=True)
class TextHierarchy:
    """The offsets of a 4-level text hierarchy (characters innermost).

    Attributes
    ----------
    names : list of str
        One name per kept document (documents without a word are dropped).
    chars : numpy.ndarray
        ``uint32`` code points of the non-whitespace characters, in reading order.
    word_offsets : numpy.ndarray
        ``int64``, ``nwords + 1`` entries indexing ``chars``.
    sentence_offsets : numpy.ndarray
        ``int64``, ``nsentences + 1`` entries indexing words.
    paragraph_offsets : numpy.ndarray
        ``int64``, ``nparagraphs + 1`` entries indexing sentences.
    document_offsets : numpy.ndarray
        ``int64``, ``ndocuments + 1`` entries indexing paragraphs.
    """

    names: list[str]
    chars: np.ndarray
    word_offsets: np.ndarray
    sentence_offsets: np.ndarray
    paragraph_offsets: np.ndarray
    document_offsets: np.ndarray

    @property
    def offsets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The four offset arrays, innermost first (the order ``hr.nest`` takes)."""
        return (
            self.word_offsets,
            self.sentence_offsets,
            self.paragraph_offsets,
            self.document_offsets,
        )

    def counts(self) -> dict[str, int]:
        """Number of elements at each level.

        Returns
        -------
        dict
            ``{"characters": ..., "words": ..., "sentences": ...,
            "paragraphs": ..., "documents": ...}``.
        """
        sizes = [len(self.chars)] + [len(o) - 1 for o in self.offsets]
        return dict(zip(LEVELS, sizes, strict=True))

    def lengths(self, level: str) -> np.ndarray:
        """Segment lengths of `level`, in elements of the level below.

        Parameters
        ----------
        level : {"words", "sentences", "paragraphs", "documents"}
            E.g. ``"words"`` gives the number of characters of each word.

        Returns
        -------
        numpy.ndarray
            ``int64`` lengths, one per segment of `level`.
        """
        if level not in LEVELS[1:]:
            raise ValueError(f"level must be one of {LEVELS[1:]}, got {level!r}")
        return np.diff(self.offsets[LEVELS.index(level) - 1])

    def to_ragged(self, values=None):
        """The hierarchy as a depth-4 ``hrarray.RaggedArray``.

        Parameters
        ----------
        values : array_like, optional
            Leaf values, one row per character (e.g. character embeddings, on
            any device ``hrarray`` supports; the offsets are moved to the same
            array library). Defaults to the ``uint32`` code points.

        Returns
        -------
        hrarray.RaggedArray
            ``hr.nest(values, word_offsets, sentence_offsets, paragraph_offsets,
            document_offsets)``.
        """
        import hrarray as hr

        if values is None:
            values = self.chars
        offsets = self.offsets
        if not isinstance(values, np.ndarray) and hasattr(values, "__cuda_array_interface__"):
            import cupy

            offsets = tuple(cupy.asarray(o) for o in offsets)
        return hr.nest(values, *offsets)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_hierarchy(texts: Iterable[str], names: Sequence[str] | None = None) -> TextHierarchy:
    """Split texts into characters, words, sentences, paragraphs and documents.

    All boundaries are found with vectorised NumPy on one code-point array of
    the whole corpus (see the module docstring for the rules).

    Parameters
    ----------
    texts : iterable of str
        One text per document.
    names : sequence of str, optional
        One name per text; defaults to ``"doc0", "doc1", ...``.

    Returns
    -------
    TextHierarchy
        Documents without any word are dropped (with their names).

    Raises
    ------
    ValueError
        If no text contains a word, or `names` has the wrong length.
    """
    texts = list(texts)
    if names is None:
        names = [f"doc{i}" for i in range(len(texts))]
    names = list(names)
    if len(names) != len(texts):
        raise ValueError(f"names has {len(names)} entries for {len(texts)} texts")
    kept_texts, kept_names = [], []
    for name, text in zip(names, texts, strict=True):  # one loop per document
        text = _normalise_newlines(text)
        if text and not text.isspace():
            kept_texts.append(text)
            kept_names.append(name)
    if not kept_texts:
        raise ValueError("no document contains a word")

    # One code-point array for the corpus; "\n\n" between documents is also a
    # paragraph break, and document boundaries are forced explicitly below.
    sep = "\n\n"
    corpus = sep.join(kept_texts)
    codes = np.frombuffer(corpus.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    codes = codes.astype(np.uint32, copy=False)
    doc_lengths = np.fromiter((len(t) for t in kept_texts), dtype=np.int64, count=len(kept_texts))
    doc_starts = np.concatenate(([0], np.cumsum(doc_lengths[:-1] + len(sep))))

    # Words: runs of non-whitespace.
    inword = ~np.isin(codes, _WHITESPACE)
    edges = np.diff(np.concatenate(([0], inword.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # exclusive
    nwords = len(starts)
    word_offsets = np.zeros(nwords + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=word_offsets[1:])
    chars = codes[inword]

    # Boundaries after each word.
    doc_of_word = np.searchsorted(doc_starts, starts, side="right") - 1
    doc_end = np.ones(nwords, dtype=bool)
    doc_end[:-1] = doc_of_word[1:] != doc_of_word[:-1]
    lf_before = np.concatenate(([0], np.cumsum(codes == _LF)))
    lf_in_gap = lf_before[starts[1:]] - lf_before[ends[:-1]]
    para_end = doc_end.copy()
    para_end[:-1] |= lf_in_gap >= 2
    sent_end = para_end | np.isin(codes[ends - 1], _SENTENCE_END)

    # Level-k offsets index level-(k-1) segments: a boundary of a coarser level
    # is always a boundary of the finer one, so count finer boundaries.
    sent_last_word = np.flatnonzero(sent_end)
    sentence_offsets = np.concatenate(([0], sent_last_word + 1)).astype(np.int64)
    para_flags = para_end[sent_last_word]
    paragraph_offsets = np.concatenate(([0], np.flatnonzero(para_flags) + 1)).astype(np.int64)
    doc_flags = doc_end[np.flatnonzero(para_end)]
    document_offsets = np.concatenate(([0], np.flatnonzero(doc_flags) + 1)).astype(np.int64)
    return TextHierarchy(
        kept_names, chars, word_offsets, sentence_offsets, paragraph_offsets, document_offsets
    )


def text_counts(texts: Iterable[str]) -> dict[str, int]:
    """Number of characters, words, sentences, paragraphs and documents.

    Parameters
    ----------
    texts : iterable of str
        One text per document.

    Returns
    -------
    dict
        Keys :data:`LEVELS`; see :func:`text_hierarchy` for the rules.
    """
    return text_hierarchy(texts).counts()


# --------------------------------------------------------------------------- corpora


def read_documents(
    path: str | os.PathLike,
    limit: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> list[tuple[str, str]]:
    """Read a text file (one document) or a folder of text files (one each).

    Parameters
    ----------
    path : str or path-like
        A file, or a folder searched recursively; hidden files and folders
        (names starting with ``.``) are skipped. Files are read as UTF-8, bad
        bytes replaced.
    limit : int, optional
        Keep the first `limit` documents (in sorted path order).
    progress : callable, optional
        Wraps the iterable of files (e.g. a progress bar).

    Returns
    -------
    list of (str, str)
        ``(name, text)`` pairs; the name is the path relative to `path` (the
        file name for a single file).
    """
    root = Path(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    else:
        raise FileNotFoundError(f"--input: no such file or folder: {root}")
    if limit is not None:
        files = files[:limit]
    it = progress(files) if progress is not None else files
    docs = []
    for p in it:
        name = p.name if p == root else p.relative_to(root).as_posix()
        docs.append((name, p.read_bytes().decode("utf-8", errors="replace")))
    return docs


def _source_docstring(path: str) -> str | None:
    """The docstring of a Python source file, read without importing it."""
    try:
        with tokenize.open(path) as f:
            for tok in tokenize.generate_tokens(f.readline):
                if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENCODING):
                    continue
                if tok.type != tokenize.STRING:
                    return None
                value = ast.literal_eval(tok.string)
                return inspect.cleandoc(value) if isinstance(value, str) else None
    except (OSError, SyntaxError, ValueError, tokenize.TokenError):
        return None
    return None


def _imported_docstring(name: str) -> str | None:
    """The docstring of a (compiled or frozen) module, imported quietly."""
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except Exception:  # any failure: the module is simply not in the corpus
        return None
    doc = getattr(module, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else None


def _module_docstrings(name: str, spec, submodules: bool) -> Iterator[tuple[str, str]]:
    origin = spec.origin
    if origin and origin.endswith(".py") and os.path.isfile(origin):
        doc = _source_docstring(origin)
    else:
        doc = _imported_docstring(name)
    if doc and not doc.isspace():
        yield name, doc
    top = name.partition(".")[0]
    if not (submodules and spec.submodule_search_locations) or top in _NO_SUBMODULES:
        return
    infos = sorted(pkgutil.iter_modules(spec.submodule_search_locations), key=lambda m: m.name)
    for info in infos:
        if info.name.startswith("_") or info.name in _SKIP_SUBMODULE_NAMES:
            continue
        full = f"{name}.{info.name}"
        try:
            sub = info.module_finder.find_spec(full)
        except Exception:
            continue
        if sub is not None:
            yield from _module_docstrings(full, sub, submodules)


def stdlib_docstrings(
    limit: int | None = None,
    submodules: bool = True,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> list[tuple[str, str]]:
    """The docstrings of the Python standard library's modules.

    Modules are visited in sorted order of ``sys.stdlib_module_names`` (private
    ones, starting with ``_``, and a few with side effects — ``antigravity``,
    ``this``, ``idlelib``, ``tkinter``, ``turtle*``, ``readline``, test suites —
    are skipped). A pure-Python module's docstring is read from its source
    without importing it; compiled, built-in and frozen modules are imported
    with warnings suppressed and stdout/stderr silenced. Modules that fail to
    load or have no docstring are skipped, so the result is deterministic for a
    given Python installation.

    Parameters
    ----------
    limit : int, optional
        Stop after `limit` documents.
    submodules : bool, default True
        Also read the submodules of packages (``json.decoder``, ``email.mime.text``,
        ...), except those of ``encodings`` and test packages.
    progress : callable, optional
        Wraps the iterable of top-level module names (e.g. a progress bar).

    Returns
    -------
    list of (str, str)
        ``(module name, docstring)`` pairs.
    """
    names = sorted(
        n
        for n in sys.stdlib_module_names
        if not n.startswith("_") and n not in _SKIP_MODULES and not n.startswith("turtle")
    )
    docs: list[tuple[str, str]] = []
    for name in progress(names) if progress is not None else names:
        if limit is not None and len(docs) >= limit:
            break
        try:
            spec = importlib.util.find_spec(name)
        except Exception:
            continue
        if spec is None:
            continue
        for item in _module_docstrings(name, spec, submodules):
            docs.append(item)
            if limit is not None and len(docs) >= limit:
                break
    return docs
