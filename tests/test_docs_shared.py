"""Shared parameter descriptions: one wording per parameter across the public API (sepal_tl._docs)."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import sepal_tl as sepal
from sepal_tl._cli._main import _parser
from sepal_tl._docs import FRAGMENTS, PARAM_GROUPS, PARAMS, PITCH_DEFAULT, inject_docs


def _public_objects() -> dict[str, object]:
    """Every public function, class and public method of sepal.io / pp / tl / pl / datasets."""
    found: dict[str, object] = {}
    for module_name in ("io", "pp", "tl", "pl", "datasets"):
        module = getattr(sepal, module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                found[f"{module_name}.{name}"] = obj
                for method, func in inspect.getmembers(obj, inspect.isfunction):
                    if not method.startswith("_"):
                        found[f"{module_name}.{name}.{method}"] = func
            elif callable(obj):
                found[f"{module_name}.{name}"] = obj
    return found


PUBLIC = _public_objects()


def _parameters(doc: str | None) -> dict[str, str]:
    """``{name: description}`` of a numpydoc Parameters section, descriptions joined into one line."""
    lines = inspect.cleandoc(doc or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines[:-1]) if line == "Parameters" and set(lines[i + 1]) == {"-"})
    except StopIteration:
        return {}
    params: dict[str, list[str]] = {}
    current = None
    for i, line in enumerate(lines[start + 2 :], start + 2):
        if i + 1 < len(lines) and line and set(lines[i + 1]) == {"-"}:
            break  # the next section
        if line and not line.startswith(" "):
            current = line.split(":")[0].strip()
            params[current] = []
        elif current is not None:
            params[current].append(line.strip())
    return {name: " ".join(" ".join(desc).split()) for name, desc in params.items()}


def _documented(name: str) -> list[tuple[str, str, str]]:
    """``(object, its name, description)`` for every public object documenting parameter ``name``."""
    out = []
    for qualname, obj in PUBLIC.items():
        for params, description in _parameters(obj.__doc__).items():
            if name in [p.strip() for p in params.split(",")]:
                out.append((qualname, obj.__name__, description))
    return out


def test_parser_reads_a_parameters_section():
    doc = """Summary.

    Parameters
    ----------
    a, b
        First line
        second line.
    c
        Third.

    Returns
    -------
    Nothing.
    """
    assert _parameters(doc) == {"a, b": "First line second line.", "c": "Third."}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_shared_parameter_has_one_wording(name):
    documented = _documented(name)
    assert len(documented) >= 2, f"{name!r} is documented by {len(documented)} public object(s); nothing to share"
    drifted = []
    for qualname, func_name, description in documented:
        shared = " ".join(PARAMS[name].replace("<func>", func_name).split())
        if description != shared and not description.startswith(shared + " "):
            drifted.append(f"{qualname}: {description!r}")
    assert not drifted, (
        f"these document {name!r} in their own words instead of starting with sepal_tl._docs.PARAMS[{name!r}] "
        f"(write %({name})s in the docstring and decorate the function with @inject_docs):\n" + "\n".join(drifted)
    )


def test_library_key_states_the_one_slide_rule_wherever_none_is_allowed():
    rule = " ".join(FRAGMENTS["one_slide_rule"].split())
    for qualname, obj in PUBLIC.items():
        signature = inspect.signature(obj)
        param = signature.parameters.get("library_key")
        if param is not None and "None" in str(param.annotation):
            assert rule in _parameters(obj.__doc__)["library_key"], qualname


def test_no_placeholder_is_left_unfilled():
    unfilled = [q for q, obj in PUBLIC.items() if re.search(r"%\(\w+\)s", obj.__doc__ or "")]
    assert not unfilled


def test_inject_docs_fills_wraps_and_refuses_unknown_names():
    def plot(show=None):
        """Plot.

        Parameters
        ----------
        show
            %(show)s
        save
            %(save)s Extra words that go on
            on a second line.
        """

    injected = inject_docs(plot)
    assert injected is plot
    params = _parameters(plot.__doc__)
    assert params["show"] == " ".join(PARAMS["show"].split())
    assert params["save"].startswith('Save the figure as scanpy does: ``True`` writes ``sc.settings.figdir / "plot.')
    assert params["save"].endswith("(PNG when it has no extension). Extra words that go on on a second line.")
    assert all(len(line) <= 120 for line in plot.__doc__.splitlines())
    save_lines = plot.__doc__.split("    save\n")[1].rstrip().splitlines()
    assert all(line.startswith(" " * 12) for line in save_lines)
    for line, after in zip(save_lines, save_lines[1:], strict=False):  # one paragraph, wrapped greedily
        assert len(line) + 1 + len(after.split()[0]) > 120

    def typo():
        """%(libary_key)s"""

    with pytest.raises(KeyError, match=r"%\(libary_key\)s of typo"):
        inject_docs(typo)


@pytest.mark.parametrize("group", sorted(PARAM_GROUPS))
def test_a_group_line_renders_as_its_entries_written_out(group):
    def grouped():
        """Plot.

        Parameters
        ----------
        x
            An x.
        %(GROUP)s

        Returns
        -------
        Nothing.
        """

    def written_out():
        """Plot.

        Parameters
        ----------
        x
            An x.
        ENTRIES

        Returns
        -------
        Nothing.
        """

    entries = "\n        ".join(f"{name}\n            %({name})s" for name in PARAM_GROUPS[group])
    grouped.__doc__ = grouped.__doc__.replace("GROUP", group)
    written_out.__doc__ = written_out.__doc__.replace("ENTRIES", entries)
    inject_docs(grouped)
    inject_docs(written_out)
    assert grouped.__doc__.replace("grouped", "written_out") == written_out.__doc__
    params = _parameters(grouped.__doc__)
    assert list(params) == ["x", *PARAM_GROUPS[group]]
    for name in PARAM_GROUPS[group]:
        assert params[name] == " ".join(PARAMS[name].replace("<func>", "grouped").split())


def test_pitch_default_is_the_same_in_the_cli_help_the_docstring_and_the_code():
    predict = next(a for a in _parser()._subparsers._group_actions[0].choices["predict"]._actions if a.dest == "pitch")
    assert PITCH_DEFAULT in predict.help
    assert " ".join(PITCH_DEFAULT.split()) in _parameters(sepal.io.spot_grid.__doc__)["pitch_px"]
    image = np.full((400, 400, 3), (200, 80, 160), dtype=np.uint8)  # all tissue
    pitches = {}
    for geometry in ("hex", "square"):
        he = sepal.io.spot_grid(image, spot_diameter_px=20, geometry=geometry)
        pitches[geometry] = he.uns["spatial"]["he"]["metadata"]["pitch_px"]
    assert pitches == {"hex": pytest.approx(20 * 100 / 55), "square": pytest.approx(20 * 2)}
