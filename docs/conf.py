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

import importlib
import os
import pkgutil
import re
import shutil
import textwrap
import warnings
from collections.abc import Mapping
from datetime import datetime
from importlib.metadata import metadata
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.deprecation import RemovedInSphinx10Warning
from sphinx.pycode import ModuleAnalyzer
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

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
    "matplotlib.sphinxext.plot_directive",  # the figures of the pl functions' Examples
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
# makes docutils warn), so they are passed through as a plain section; `_returns_as_field` below then merges
# that section and the return type from sphinx_autodoc_typehints into one "Returns" field.
napoleon_custom_sections = ["Returns"]

# sphinx_autodoc_typehints: types come from the signatures, never from the docstrings
typehints_defaults = "braces"
always_use_bars_union = True
typehints_document_rtype = True
# a function that returns None and says nothing about it gets no "Returns" block
typehints_document_rtype_none = False

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

# plot directive: run each Examples block of sepal.pl and show its code and figure (PNG, 150 dpi)
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 150)]

# bibliography
bibtex_bibfiles = ["references.bib"]
# one citation style everywhere: numbered, [1], in the text as in the bibliography ({cite:p} on every page)
bibtex_reference_style = "label"
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
html_css_files = ["custom.css"]
html_theme_options = {
    "repository_url": repository_url,
    "repository_branch": "main",
    "path_to_docs": "docs",
    "use_repository_button": True,
    "navigation_with_keys": False,
}
html_show_sphinx = False


# -- Hooks ----------------------------------------------------------------------------------------


_FIELD_AFTER_RETURNS = re.compile(r"^(\.\. |:(raises?|except|exception|warns?|yields?|ytype|returns?|rtype)[ :])")


def _returns_as_field(app, what, name, obj, options, lines: list[str]) -> None:
    """Merge the return type and the "Returns" prose into one ``:returns:`` field, after napoleon and typehints.

    napoleon passes our "Returns" section through as a rubric and its text (``napoleon_custom_sections``), and
    sphinx_autodoc_typehints adds an ``:rtype:`` field from the signature: two blocks, "Return type" and "Returns".
    This writes one field, ``:returns: TYPE -- text``, where the ``:rtype:`` was. The lone ``:`` line that
    sphinx_autodoc_typehints writes under the header is dropped, and a numpy-style entry (a type line, then an
    indented description) keeps its description only, as the type comes from the signature.
    """
    try:
        rubric = lines.index(".. rubric:: Returns")
    except ValueError:
        return
    start = rubric + 1
    while start < len(lines) and lines[start].strip() in {"", ":"}:
        start += 1
    end = start
    while end < len(lines) and not _FIELD_AFTER_RETURNS.match(lines[end]):
        end += 1
    body = lines[start:end]
    while body and not body[-1].strip():
        body.pop()
    numpy_style = len(body) > 1 and body[1][:1].isspace() and not body[0].startswith(("- ", "* "))
    if numpy_style:  # a type line, then the indented description
        body = textwrap.dedent("\n".join(body[1:])).split("\n")
    del lines[rubric:end]
    if not body:
        return
    rtype = next((i for i, line in enumerate(lines) if line.startswith(":rtype: ")), None)
    head = f":returns: {lines[rtype].removeprefix(':rtype: ')} -- " if rtype is not None else ":returns: "
    field = [head + body[0]] + [f"   {line}" if line.strip() else "" for line in body[1:]]
    if rtype is None:
        lines[rubric:rubric] = [*field, ""]
    else:
        lines[rtype : rtype + 1] = field


class _PresetTable(SphinxDirective):
    """``.. sepal-presets:: sepal_tl.pp.PRESETS``: a presets mapping as a table, one column per preset.

    Nested options (``tl.PRESETS``' ``"encoder"`` and ``"spatial"`` stages) become rows named ``stage.option``.
    The table is made from the mapping itself, so it always shows the values the code uses.
    """

    required_arguments = 1

    def run(self) -> list:
        module, _, attribute = self.arguments[0].rpartition(".")
        presets = getattr(importlib.import_module(module), attribute)
        description = self.parse_text_to_nodes("\n".join(_doc_comment(module, attribute, presets)))
        columns = {name: dict(_flatten(values)) for name, values in presets.items()}
        options = list(dict.fromkeys(option for values in columns.values() for option in values))
        rows = [["option", *(f"``{name}``" for name in columns)]]
        rows += [
            [f"``{option}``", *(_cell(values.get(option, "")) for values in columns.values())] for option in options
        ]
        text = [".. list-table::", "   :header-rows: 1", "   :class: sepal-presets", ""]
        for row in rows:
            text += [f"   * - {row[0]}", *(f"     - {cell}" for cell in row[1:])]
        return [*description, *self.parse_text_to_nodes("\n".join(text))]


def _doc_comment(package: str, attribute: str, value) -> list[str]:
    """The ``#:`` comment above ``attribute`` in the submodule of ``package`` that defines it.

    autodoc looks for it in the package's ``__init__``, which only imports the object (a mapping carries no
    ``__doc__``), and so shows no description. Other submodules may import the object too; theirs have no comment.
    """
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__, f"{package}."):
        if getattr(importlib.import_module(info.name), attribute, None) is value:
            comment = ModuleAnalyzer.for_module(info.name).find_attr_docs().get(("", attribute))
            if comment:
                return list(comment)
    return []


def _flatten(values, prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _cell(value) -> str:
    if isinstance(value, str) and not value:
        return "–"
    if isinstance(value, float | int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"``{value:_}``"
    return f"``{value!r}``"


_REPOSITORY = Path(__file__).resolve().parent.parent


class _RepositoryLinks(SphinxPostTransform):
    """Point links to repository files that are not pages (``configs/her2st.toml``) to the file on GitHub.

    They are written as relative paths, so that they work where the Markdown is read on GitHub (the README, the
    pages under ``docs/``); Sphinx alone would warn about them (a Markdown file outside ``docs/``) or copy the file
    as a download. Runs before MyST resolves its references (priority 9); links to pages are left alone.
    """

    default_priority = 5

    def run(self) -> None:
        for node in list(self.document.findall(addnodes.pending_xref)):
            page = node.get("refdomain") == "doc" and node["reftarget"] in self.env.found_docs
            if node.get("reftype") == "myst" and not page:
                self._to_github(node, node["reftarget"])
        for node in list(self.document.findall(addnodes.download_reference)):
            self._to_github(node, node["reftarget"])

    def _to_github(self, node, target: str) -> None:
        path, _, fragment = target.partition("#")
        fragment = fragment or node.get("reftargetid") or ""
        folders = [Path(node.source).parent] if node.source else []
        folders.append(Path(self.env.doc2path(node["refdoc"])).parent)
        suffixes = ("", ".md", ".ipynb", ".rst")
        found = next(
            (f for d in folders for s in suffixes if (f := (d / (path + s)).resolve()).is_file()),
            None,
        )
        if found is None or not found.is_relative_to(_REPOSITORY):
            return
        url = f"{repository_url}/blob/main/{found.relative_to(_REPOSITORY).as_posix()}"
        node.replace_self(nodes.reference("", "", *node.children, refuri=url + (f"#{fragment}" if fragment else "")))


def setup(app) -> None:
    """Register the hook and the presets directive.

    ``_returns_as_field`` runs at priority 501: after napoleon and sphinx_autodoc_typehints (both 500).
    """
    app.connect("autodoc-process-docstring", _returns_as_field, priority=501)
    app.add_directive("sepal-presets", _PresetTable)
    app.add_post_transform(_RepositoryLinks)
