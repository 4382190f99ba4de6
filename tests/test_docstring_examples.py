"""The Examples sections of the API: every public function has one, and every example in it runs and prints what it shows.

Each docstring is run as a doctest (``ELLIPSIS``, ``NORMALIZE_WHITESPACE``) in a fresh namespace and an empty
working folder. The examples of the readers of files that a user brings (and of the datasets that download or need
a local copy) are only compiled: they must call the function they document.
"""

from __future__ import annotations

import doctest
import inspect
import re

import pytest

import sepal_tl as sepal

SUBPACKAGES = ("io", "pp", "tl", "pl", "datasets")
# Methods of public classes that are API of their own.
METHODS = {"tl.SepalModel": ("save", "load")}
# Examples that read files the user brings, or download data: compiled, not run.
NEEDS_FILES = {
    "io.read_visium",
    "io.read_visium_hd",
    "io.read_st",
    "io.read_hest",
    "datasets.her2st",
    "datasets.hest",
}
# Examples that train a model (a tiny one: a few seconds each).
SLOW = {
    "tl.fit",
    "tl.fit_encoder",
    "tl.fit_spatial",
    "tl.predict",
    "tl.evaluate",
    "tl.SepalModel",
    "tl.SepalModel.save",
    "tl.SepalModel.load",
    "pl.gene_map",
    "pl.metrics",
    "pl.pcc_histogram",
    "pl.training_curves",
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
EXAMPLES = re.compile(r"^Examples\n--------\n", re.MULTILINE)


def _public() -> dict[str, object]:
    """Public functions and classes of the subpackages (not the data, such as ``PRESETS``), and ``METHODS``."""
    objects = {}
    for sub in SUBPACKAGES:
        module = getattr(sepal, sub)
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):
                objects[f"{sub}.{name}"] = obj
    for owner, methods in METHODS.items():
        for method in methods:
            objects[f"{owner}.{method}"] = getattr(objects[owner], method)
    return objects


PUBLIC = _public()


def test_every_public_function_has_examples():
    missing = [name for name, obj in PUBLIC.items() if not EXAMPLES.search(inspect.getdoc(obj) or "")]
    assert not missing, f"No 'Examples' section in the docstrings of {missing}"


def test_the_lists_name_public_functions():
    assert (NEEDS_FILES | SLOW) <= set(PUBLIC)


@pytest.fixture
def doctest_env(tmp_path, monkeypatch):
    """An empty working folder and no progress bars (they print to stdout, which doctest compares)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sepal.settings, "verbosity", 0)


def _doctest(name: str) -> doctest.DocTest:
    obj = PUBLIC[name]
    file = inspect.getsourcefile(inspect.unwrap(obj))
    return doctest.DocTestParser().get_doctest(obj.__doc__, {}, f"sepal_tl.{name}", file, 0)


@pytest.mark.parametrize("name", sorted(NEEDS_FILES))
def test_examples_of_file_readers_compile(name):
    examples = _doctest(name).examples
    for example in examples:
        compile(example.source, f"sepal_tl.{name}", "single")
    assert any(f"{name.rsplit('.', 1)[-1]}(" in example.source for example in examples)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
        for name in PUBLIC
        if name not in NEEDS_FILES
    ],
)
@pytest.mark.usefixtures("doctest_env")
def test_examples_run(name):
    report = []
    result = doctest.DocTestRunner(optionflags=FLAGS).run(_doctest(name), out=report.append, clear_globs=True)
    assert result.failed == 0, "".join(report)
    assert result.attempted > 0, f"Every example of {name} is skipped."
