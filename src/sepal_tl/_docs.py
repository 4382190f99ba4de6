"""Shared parameter descriptions: one wording per parameter, injected into numpydoc docstrings at import time.

A docstring of a function decorated with :func:`inject_docs` writes ``%(name)s`` where a shared text belongs,
usually as the whole description of a parameter of that name, optionally followed by what is particular to the
function; ``evaluate`` documents ``library_key`` as ``%(library_key)s %(one_slide_rule)s Also used by ``per_slide``.``
A line holding only a group's placeholder (:data:`PARAM_GROUPS`), such as ``%(show_save_return_fig)s``, stands for the
entries (name and description) of parameters that always come together.

``tests/test_docs_shared.py`` fails when a public function documents one of these parameters with other words.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_LINE_WIDTH = 120
_TOKEN = re.compile(r"%\((\w+)\)s")

#: How :func:`sepal_tl.io.spot_grid` chooses the pitch when none is given (docstring and ``sepal predict --pitch``).
PITCH_DEFAULT = (
    "100/55 × the spot diameter on a hex lattice (Visium's 100 µm pitch for 55 µm spots), 2 × the spot diameter "
    "on a square one (legacy ST's 200 µm pitch for 100 µm spots)"
)

#: ``{parameter name: its description}``; a public function documenting such a parameter starts with this text.
PARAMS: dict[str, str] = {
    "library_key": "Column of ``adata.obs`` naming each spot's slide (its library id).",
    "table_key": (
        'With a :class:`~spatialdata.SpatialData`: the table to work on (default: the only table, else ``"table"``).'
    ),
    "copy": "Return a copy instead of writing to ``adata``.",
    "split_key": 'Column of ``adata.obs`` with each spot\'s split: ``"train"``, ``"val"`` or ``"test"``.',
    "spatial_key": "``obsm`` key of the full-resolution spot centres (x = column, y = row).",
    "ax": "Axes to draw into; a new figure when ``None``.",
    "figsize": "Figure size in inches.",
    "show": (
        "Show the figure. ``None``: only in interactive mode and when no ``ax`` / ``save`` / ``return_fig`` was given."
    ),
    "save": (
        'Save the figure as scanpy does: ``True`` writes ``sc.settings.figdir / "<func>.{sc.settings.file_format_figs}"``, '
        'a file name such as ``"_C2.png"`` goes to ``figdir`` as ``"<func>_C2.png"``, a path with a folder is used as '
        "given (PNG when it has no extension)."
    ),
    "return_fig": "Return the Figure instead of the Axes.",
    "img": "Draw the H&E image under the spots.",
    "img_alpha": "Opacity of the image.",
    "cmap": "Colour map of the expression.",
    "spot_scale": "Factor on the drawn spot diameter.",
    "panel_width": "Width of one panel in inches (the height follows the slide's aspect).",
    "panel_size": "Width and height of one panel in inches.",
    "patch_scale": "Window side as a multiple of the spot diameter.",
    "model_kwargs": (
        'Extra arguments of :func:`timm.create_model` (UNI: ``{"init_values": 1e-5, "dynamic_img_size": True}``).'
    ),
}

#: ``{placeholder: parameter names}``: a docstring line holding only ``%(placeholder)s`` becomes the entries of these
#: parameters, in this order, each with its text from :data:`PARAMS` (as if written out one by one).
PARAM_GROUPS: dict[str, tuple[str, ...]] = {
    "show_save_return_fig": ("show", "save", "return_fig"),
    "copy_table_key": ("copy", "table_key"),
}

#: Shared sentences that are not a parameter's whole description.
FRAGMENTS: dict[str, str] = {
    "one_slide_rule": (
        "Without that column the data are one slide, or one per shapes element of a SpatialData table; ``None`` "
        "treats all spots as one slide (an error when the data name several)."
    ),
    "pitch_default": PITCH_DEFAULT,
    "table_elements": (
        "Spots, spot sizes and images are found through the elements it annotates (see :mod:`sepal_tl._sdata`)."
    ),
}


def _text(name: str, func_name: str) -> str:
    if name in PARAMS:
        return PARAMS[name].replace("<func>", func_name)
    if name in FRAGMENTS:
        return FRAGMENTS[name]
    msg = f"Docstring placeholder %({name})s of {func_name} has no shared text; add it to sepal_tl._docs."
    raise KeyError(msg)


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _fill(lines: list[str], func_name: str) -> str:
    """A paragraph of docstring lines with its placeholders filled in, wrapped at its own indentation."""
    filled = _TOKEN.sub(lambda m: _text(m.group(1), func_name), " ".join(line.strip() for line in lines))
    indent = _indent(lines[0])
    return textwrap.fill(
        filled,
        width=_LINE_WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def inject_docs(func: F) -> F:
    """Fill the ``%(name)s`` placeholders of ``func``'s docstring with the shared texts of this module.

    Apply it directly above ``def`` (below decorators that copy the docstring). An unknown name is a
    :class:`KeyError` at import time, so a typo never reaches the rendered documentation.
    """
    doc = func.__doc__
    if not doc or "%(" not in doc:
        return func
    lines, out = doc.split("\n"), []
    i = 0
    while i < len(lines):
        whole = _TOKEN.fullmatch(lines[i].strip())
        if whole and whole.group(1) in PARAM_GROUPS:
            indent = _indent(lines[i])
            for name in PARAM_GROUPS[whole.group(1)]:
                out += [indent + name, _fill([f"{indent}    %({name})s"], func.__name__)]
            i += 1
            continue
        if not _TOKEN.search(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        end = i + 1  # the paragraph goes on while lines keep its indentation
        while end < len(lines) and lines[end].strip() and _indent(lines[end]) == _indent(lines[i]):
            end += 1
        out.append(_fill(lines[i:end], func.__name__))
        i = end
    func.__doc__ = "\n".join(out)
    return func
