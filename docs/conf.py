"""Sphinx configuration for the sepal_tl documentation.

Build locally (warnings are errors, as on Read the Docs)::

    pip install -c constraints.txt -e ".[doc]"
    sphinx-build -W -b html docs docs/_build/html

Intersphinx needs network access to fetch the other projects' inventories, so it is off by default
and on when building on Read the Docs. ``SEPAL_DOCS_INTERSPHINX=1`` (or ``0``) forces it on (or off).
``SEPAL_DOCS_NITPICKY=1`` turns on nitpicky mode (every unresolved cross-reference is a warning); that
is only useful together with intersphinx.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import warnings
from datetime import datetime
from importlib.metadata import metadata
from pathlib import Path

from sphinx.deprecation import RemovedInSphinx10Warning

# sphinx-autodoc-typehints calls a Sphinx API that Sphinx 9 deprecates; the notice is not ours to fix.
warnings.filterwarnings("ignore", category=RemovedInSphinx10Warning, module="sphinx_autodoc_typehints")

# -- Project information (from the installed package) ---------------------------------------------

_DIST = "sepal-tl"
_meta = metadata(_DIST)

project = "sepal_tl"
# hatchling writes `authors = [{name = ...}]` to "Author"; an entry with an e-mail goes to "Author-email".
author = _meta.get("Author") or (_meta.get("Author-email") or "").split("<")[0].strip() or "sepal_tl developers"
copyright = f"{datetime.now():%Y}, {author}"
version = _meta["Version"]
release = version

_urls = {
    label.strip().lower(): url.strip()
    for label, url in (entry.split(",", 1) for entry in (_meta.get_all("Project-URL") or []))
}
repository_url = _urls.get("source", "https://github.com/sepal-tl/sepal-tl")


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


_ON_RTD = os.environ.get("READTHEDOCS", "").lower() == "true"
_USE_INTERSPHINX = _flag("SEPAL_DOCS_INTERSPHINX", _ON_RTD)

# -- Tutorials ------------------------------------------------------------------------------------

# The notebooks live in the repository's top-level `tutorials/` folder, stored with their outputs. Sphinx only
# reads files under docs/, so they are mirrored into docs/tutorials/ (git-ignored) at the start of every build;
# a notebook is copied only when it changed, so that incremental builds stay incremental.
_TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
_TUTORIALS_MIRROR = Path(__file__).resolve().parent / "tutorials"


def _mirror_tutorials() -> None:
    _TUTORIALS_MIRROR.mkdir(exist_ok=True)
    notebooks = {path.name: path for path in _TUTORIALS.glob("*.ipynb")}
    for stale in _TUTORIALS_MIRROR.glob("*.ipynb"):
        if stale.name not in notebooks:
            stale.unlink()
    for name, source in notebooks.items():
        target = _TUTORIALS_MIRROR / name
        if not target.is_file() or target.read_bytes() != source.read_bytes():
            shutil.copy2(source, target)


_mirror_tutorials()

# -- General configuration ------------------------------------------------------------------------

extensions = [
    "myst_nb",
    "sphinx_copybutton",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # must come before sphinx_autodoc_typehints
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
    "sphinxcontrib.bibtex",
]
if _USE_INTERSPHINX:
    extensions.append("sphinx.ext.intersphinx")

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".ipynb": "myst-nb", ".md": "myst-nb"}
root_doc = "index"
default_role = "literal"
nitpicky = _flag("SEPAL_DOCS_NITPICKY", False)
needs_sphinx = "8.1"

# autodoc / autosummary
autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_default_options = {"members": True, "show-inheritance": False}
add_module_names = False

# napoleon: numpy docstrings only
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
# Our "Returns" sections are prose (often with bullet lists), as the types come from the signatures. napoleon's
# numpy parser would read every unindented line of them as a "name : type" entry, which garbles the lists (and
# makes docutils warn), so they are rendered as a plain section instead; `_returns_as_prose` below turns the
# few numpy-style ones ("type" line, indented description) into prose first.
napoleon_custom_sections = ["Returns"]

# sphinx_autodoc_typehints: types come from the signatures, never from the docstrings
typehints_defaults = "braces"
always_use_bars_union = True
typehints_document_rtype = True

# MyST and myst-nb: notebooks are committed with their outputs and never executed here
myst_enable_extensions = [
    "amsmath",
    "colon_fence",
    "deflist",
    "dollarmath",
    "html_image",
    "html_admonition",
]
myst_heading_anchors = 3
myst_url_schemes = ("http", "https", "mailto")
nb_execution_mode = "off"
nb_merge_streams = True

# bibliography
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
bibtex_default_style = "plain"

# copybutton: strip prompts
copybutton_prompt_text = r">>> |\.\.\. |\$ |In \[\d*\]: | {2,5}\.\.\.: | {5,8}: "
copybutton_prompt_is_regexp = True

# intersphinx (only when enabled, see the module docstring)
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "pandas": ("https://pandas.pydata.org/docs/", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "squidpy": ("https://squidpy.readthedocs.io/en/stable/", None),
    "spatialdata": ("https://spatialdata.scverse.org/en/stable/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
}

# -- HTML output ----------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]
html_theme_options = {
    "repository_url": repository_url,
    "repository_branch": "main",
    "path_to_docs": "docs",
    "use_repository_button": True,
    "navigation_with_keys": False,
}
html_show_sphinx = False


# -- Hooks ----------------------------------------------------------------------------------------


def _returns_as_prose(app, what, name, obj, options, lines: list[str]) -> None:
    """Prepare a "Returns" section to be rendered as written, as prose (see ``napoleon_custom_sections``).

    Two edits, before napoleon reads the docstring: remove the lone ``:`` line that sphinx_autodoc_typehints puts
    under the header (its way of stopping napoleon from reading the first line as a type; not needed for a plain
    section), and turn a numpy-style entry (a type line and an indented description) into its description alone
    (the type is in the signature).
    """
    for i in range(len(lines) - 2):
        if lines[i].strip() != "Returns" or not lines[i + 1].strip() or set(lines[i + 1].strip()) != {"-"}:
            continue
        first = i + 2
        if lines[first].strip() == ":":
            del lines[first]
        if first + 1 >= len(lines) or not lines[first].strip() or not lines[first + 1].strip():
            return
        if not lines[first + 1][:1].isspace():
            return  # prose
        end = first + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][:1].isspace()):
            end += 1
        lines[first:end] = textwrap.dedent("\n".join(lines[first + 1 : end])).split("\n")
        return


def setup(app) -> None:
    """Register the hooks.

    ``_returns_as_prose`` runs at priority 499: after sphinx_autodoc_typehints' own 499 handler (registered
    earlier, when the extension was loaded) and before napoleon (500).
    """
    app.connect("autodoc-process-docstring", _returns_as_prose, priority=499)
