"""What tools read about the package: the version has one source, and type checkers see the lazy ``tl`` API."""

import ast
import importlib.util
import inspect
import tomllib
from pathlib import Path

import sepal_tl
import sepal_tl.tl as tl


def _absolute(module: str) -> str:
    return importlib.util.resolve_name(module, "sepal_tl.tl")


def _type_checking_imports() -> dict[str, str]:
    """``name -> module`` of the imports under ``if TYPE_CHECKING:`` in ``sepal_tl/tl/__init__.py``."""
    tree = ast.parse(inspect.getsource(tl))
    (block,) = (node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    return {
        alias.name: _absolute("." * node.level + (node.module or ""))
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_type_checking_imports_match_the_lazy_exports():
    # the lazy loader resolves each module relative to sepal_tl.tl ("_fit" -> sepal_tl.tl._fit)
    lazy = {name: _absolute(module if module.startswith(".") else f".{module}") for name, module in tl._EXPORTS.items()}
    assert _type_checking_imports() == lazy


def test_the_version_comes_from_pyproject():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert sepal_tl.__version__ == pyproject["project"]["version"]  # reinstall (make .venv/.test) after a bump
