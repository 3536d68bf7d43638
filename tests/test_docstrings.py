"""The docstring examples run and print what they show (doctest)."""

import doctest
import importlib

import pytest

MODULES = [
    "hrarray.ragged",
    "hrarray.construct",
    "hrarray.reduce",
    "hrarray.reducer",
    "hrarray.transforms",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module) if t.examples]
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    for t in tests:
        runner.run(t)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} docstring examples of {name} failed (see above)"
