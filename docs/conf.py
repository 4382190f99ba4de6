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
import warnings
from datetime import datetime
from importlib.metadata import metadata

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
