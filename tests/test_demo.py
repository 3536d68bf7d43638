"""``python -m hrarray demo`` and its text hierarchy (hrarray._text)."""

from __future__ import annotations

import random
import re
import sys

import numpy as np
import pytest

import hrarray as hr
from hrarray import demo
from hrarray._text import LEVELS, read_documents, stdlib_docstrings, text_counts, text_hierarchy

# --------------------------------------------------------------------------- reference

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")


def python_counts(texts):
    """Recount the levels with plain string methods, one document at a time."""
    counts = dict.fromkeys(LEVELS, 0)
    for text in texts:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
        if not paragraphs:
            continue
        counts["documents"] += 1
        counts["paragraphs"] += len(paragraphs)
        for p in paragraphs:
            counts["sentences"] += len(_SENTENCE_BREAK.split(p))
            words = p.split()
            counts["words"] += len(words)
            counts["characters"] += sum(len(w) for w in words)
    return counts


FILES = {
    "a.txt": (
        "The quick brown fox jumps over the lazy dog. It was not amused!\n"
        "Was it?  Nobody knows.\n"
        "\n"
        "A second paragraph, one sentence only\n"
        "   \n"
        "\t\n"
        "Third paragraph (after a line of spaces). e.g. abbreviations split too.\n"
    ),
    "b.md": "# Title\r\n\r\nWindows line ends. Two sentences.\r\nSame paragraph?\r\n",
    "sub/c.txt": (
        "Unicode\u00a0whitespace\u2003separates words; caf\u00e9 na\u00efve \u00fcber.\n\n\n\n"
        "Many blank lines above!!! And \u201cquotes.\u201d Done"
    ),
    "empty.txt": "  \n\n \t ",
    ".hidden.txt": "This file is hidden and skipped.",
}


@pytest.fixture
def corpus(tmp_path):
    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    return tmp_path


def _visible_texts():
    return [text for name, text in sorted(FILES.items()) if not name.startswith(".")]


def _table_counts(stdout):
    rows = re.findall(
        r"^(characters|words|sentences|paragraphs|documents)\s+(\d+)\s", stdout, flags=re.MULTILINE
    )
    return {level: int(count) for level, count in rows}


# --------------------------------------------------------------------------- text


def test_counts_match_python_recount_on_files():
    texts = _visible_texts()
    expected = python_counts(texts)
    assert expected["documents"] == 3  # empty.txt has no word
    assert text_counts(texts) == expected


def test_counts_match_python_recount_random_texts():
    rng = random.Random(1234)
    alphabet = [
        "a",
        "bc",
        ".",
        "!",
        "?",
        " ",
        "\n",
        "\t",
        "\r",
        "\r\n",
        "\u2028",
        "\u00a0",
        "\u00e9",
        "\n\n",
        " \n \n",
        "x.",
        '"',
        "\x0c",
    ]
    for _ in range(500):
        texts = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            for _ in range(rng.randint(1, 5))
        ]
        expected = python_counts(texts)
        if expected["documents"] == 0:
            with pytest.raises(ValueError, match="no document"):
                text_hierarchy(texts)
            continue
        assert text_counts(texts) == expected, texts


def test_hierarchy_structure():
    texts = ["One two. Three!\n\nFour five six?  Seven", "", "Eight"]
    h = text_hierarchy(texts, names=["x", "empty", "y"])
    assert h.names == ["x", "y"]
    assert "".join(map(chr, h.chars)) == "Onetwo.Three!Fourfivesix?SevenEight"
    np.testing.assert_array_equal(h.lengths("words"), [3, 4, 6, 4, 4, 4, 5, 5])
    np.testing.assert_array_equal(h.lengths("sentences"), [2, 1, 3, 1, 1])
    np.testing.assert_array_equal(h.lengths("paragraphs"), [2, 2, 1])
    np.testing.assert_array_equal(h.lengths("documents"), [2, 1])
    assert h.counts() == dict(zip(LEVELS, [35, 8, 5, 3, 2], strict=True))
    inner_sizes = [len(h.chars)] + [len(o) - 1 for o in h.offsets[:-1]]
    for size, offsets in zip(inner_sizes, h.offsets, strict=True):
        assert offsets.dtype == np.int64
        assert offsets[0] == 0
        assert offsets[-1] == size
        assert (np.diff(offsets) > 0).all()  # no empty segment at any level


def test_read_documents(corpus):
    docs = read_documents(corpus)
    assert [name for name, _ in docs] == ["a.txt", "b.md", "empty.txt", "sub/c.txt"]
    assert read_documents(corpus, limit=2) == docs[:2]
    single = read_documents(corpus / "b.md")
    assert single == [("b.md", FILES["b.md"])]


def test_default_corpus_loader():
    # Reads docstrings from source without importing pure-Python modules: well under
    # a second, so it runs in every CI job.
    docs = stdlib_docstrings()
    names = [name for name, _ in docs]
    assert len(docs) >= 100
    assert len(set(names)) == len(names)
    assert {"json", "re", "collections"} <= set(names)
    assert all(text.strip() for _, text in docs)
    assert "antigravity" not in names
    assert "this" not in names
    assert stdlib_docstrings(limit=7) == docs[:7]


# --------------------------------------------------------------------------- demo


def test_demo_end_to_end(corpus, tmp_path, capsys):
    out = tmp_path / "vectors.npz"
    code = demo.main(
        ["--input", str(corpus), "--dim", "16", "--seed", "3", "--no-progress", "--save", str(out)]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    assert _table_counts(stdout) == python_counts(_visible_texts())
    assert "1 without words skipped" in stdout
    assert "nearest documents" in stdout
    saved = np.load(out)
    assert saved["vectors"].shape == (3, 16)
    assert np.isfinite(saved["vectors"]).all()
    assert list(saved["names"]) == ["a.txt", "b.md", "sub/c.txt"]


def test_run_vectors(corpus):
    docs = read_documents(corpus)
    result = demo.run(docs, dim=8, seed=0)
    assert result.vectors.shape == (3, 8)
    assert result.vectors.dtype == np.float32
    assert np.isfinite(result.vectors).all()
    assert result.counts == python_counts([text for _, text in docs])
    again = demo.run(docs, dim=8, seed=0, warmup=False)
    np.testing.assert_array_equal(again.vectors, result.vectors)
    other = demo.run(docs, dim=8, seed=1, warmup=False)
    assert not np.allclose(other.vectors, result.vectors)


def test_demo_default_corpus(capsys):
    code = demo.main(["--limit", "12", "--dim", "4", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0
    counts = _table_counts(stdout)
    assert counts["documents"] == 12
    docs = stdlib_docstrings(limit=12)
    assert counts == python_counts([text for _, text in docs])
    # the well-known modules in the corpus, else the first five documents, get neighbours
    known = [name for name in demo.WELL_KNOWN if name in {n for n, _ in docs}]
    for name in known or [n for n, _ in docs[:5]]:
        assert re.search(
            rf"^  {re.escape(name)}\s+-> \S+ \([+-]\d\.\d\d\)", stdout, flags=re.MULTILINE
        )


def test_demo_single_file(corpus, capsys):
    assert demo.main(["--input", str(corpus / "a.txt"), "--dim", "4", "--no-progress"]) == 0
    counts = _table_counts(capsys.readouterr().out)
    assert counts == python_counts([FILES["a.txt"]])


def test_demo_usage_errors(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(["--help"])
    assert info.value.code == 0
    assert "--device" in capsys.readouterr().out
    assert demo.main(["--input", str(tmp_path / "missing")]) == 2
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "x.txt").write_text(" \n\n ")
    assert demo.main(["--input", str(blank)]) == 2
    assert demo.main(["--input", str(corpus), "--dim", "0"]) == 2


def test_demo_cuda_without_cupy(corpus, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    assert demo.main(["--input", str(corpus), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--device cuda needs CuPy" in err


@pytest.mark.cuda
# numba-cuda warns about small grids on tiny inputs; that is not what this test checks
@pytest.mark.filterwarnings("ignore:.*under-utilization:Warning")
def test_demo_cuda_matches_cpu(corpus, capsys):
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError:
        pytest.skip("no CUDA device")
    docs = read_documents(corpus)
    gpu = demo.run(docs, dim=16, seed=5, device="cuda")
    cpu = demo.run(docs, dim=16, seed=5)
    assert gpu.counts == cpu.counts
    np.testing.assert_allclose(gpu.vectors, cpu.vectors, rtol=1e-4, atol=1e-5)
    assert demo.main(["--input", str(corpus), "--device", "cuda", "--no-progress"]) == 0
    assert _table_counts(capsys.readouterr().out) == python_counts(_visible_texts())


def test_module_command_line_usage(capsys):
    """``python -m hrarray --help`` describes both commands and exits 0; no command or an
    unknown one prints the usage to stderr and exits 2."""
    from hrarray.__main__ import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("demo", "bench", "--quick"):
        assert word in out
    assert main([]) == 2
    assert main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "usage: python -m hrarray" in err
    assert "unknown command 'nope'" in err  # (an audit: only the usage was printed)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hrarray {hr.__version__}"


def test_demo_save_to_an_unwritable_path_is_a_message(corpus, tmp_path, capsys):
    """An audit: --save into a missing folder printed a raw FileNotFoundError traceback."""
    bad = tmp_path / "missing" / "out.npz"
    assert demo.main(["--input", str(corpus), "--dim", "4", "--no-progress",
                      "--save", str(bad)]) == 1
    assert f"cannot write --save {bad}" in capsys.readouterr().err
