"""``sepal run`` configuration files (TOML): schema, validation before any work starts."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# section -> key -> (accepted types, required). Paths are resolved relative to the config file.
_SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "data": {
        "reader": ((str,), True),
        "path": ((str,), False),
        "sections": ((list,), False),
        "slides": ((list,), False),
        "n_slides": ((int,), False),
        "seed": ((int,), False),
    },
    "split": {"train": ((list,), True), "val": ((list,), False), "test": ((list,), False)},
    "preprocess": {"preset": ((str,), True), "rank_on_train": ((bool,), False), "overrides": ((dict,), False)},
    "model": {"preset": ((str,), False), "spatial": ((bool,), False), "options": ((dict,), False)},
    "output": {"dir": ((str,), True), "genes_to_plot": ((int,), False)},
}
_READERS = ("her2st", "visium", "st", "synthetic", "files")
_SLIDE_KEYS = {
    "visium": ("path", "library_id", "fullres_image"),
    "st": ("counts", "spots", "image", "library_id", "patient"),
    # sepal.io.read_anndata: .h5ad, SpatialData .zarr, HEST st/{id}.h5ad, Visium / Visium HD folders
    "files": ("path", "library_id", "table_key"),
}


class ConfigError(ValueError):
    """A configuration file that cannot be run; the message names the key and the fix."""


@dataclass
class RunConfig:
    """A validated ``sepal run`` configuration (paths absolute)."""

    data: dict[str, Any]
    split: dict[str, list[str]]
    preprocess: dict[str, Any]
    model: dict[str, Any]
    output: dict[str, Any]
    source: Path


def _check_section(name: str, values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        msg = f"[{name}] must be a table of keys, got {type(values).__name__}."
        raise ConfigError(msg)
    schema = _SCHEMA[name]
    for key, value in values.items():
        if key not in schema:
            msg = f"Unknown key '{name}.{key}'; [{name}] accepts {sorted(schema)}."
            raise ConfigError(msg)
        types, _ = schema[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            msg = f"'{name}.{key}' must be {names}, got {type(value).__name__} ({value!r})."
            raise ConfigError(msg)
    missing = [key for key, (_, required) in schema.items() if required and key not in values]
    if missing:
        msg = f"[{name}] is missing the required key(s) {missing}."
        raise ConfigError(msg)
    return dict(values)


def _resolve(base: Path, value: str, what: str) -> str:
    path = (base / value).expanduser().resolve() if not Path(value).is_absolute() else Path(value)
    if not path.exists():
        msg = f"'{what}' points to {str(path)!r}, which does not exist."
        raise ConfigError(msg)
    return str(path)


def _check_slides(reader: str, slides: list, base: Path) -> list[dict[str, Any]]:
    allowed = _SLIDE_KEYS[reader]
    out = []
    for i, slide in enumerate(slides):
        if not isinstance(slide, dict):
            msg = f"'data.slides[{i}]' must be a table with keys {list(allowed)}."
            raise ConfigError(msg)
        unknown = sorted(set(slide) - set(allowed))
        if unknown:
            msg = f"Unknown key(s) {unknown} in 'data.slides[{i}]'; a {reader} slide accepts {list(allowed)}."
            raise ConfigError(msg)
        if "library_id" not in slide:
            msg = f"'data.slides[{i}]' needs a library_id."
            raise ConfigError(msg)
        resolved = dict(slide)
        for key in ("path", "fullres_image", "counts", "spots", "image"):
            if key in resolved:
                resolved[key] = _resolve(base, resolved[key], f"data.slides[{i}].{key}")
        out.append(resolved)
    return out


def _declared_slides(data: dict[str, Any]) -> list[str] | None:
    """The slide names the ``[data]`` section will produce (``None`` when only the download knows them)."""
    for key in ("n_slides", "seed"):
        if key in data and data[key] < (1 if key == "n_slides" else 0):
            msg = f"'data.{key}' must be {'>= 1' if key == 'n_slides' else '>= 0'}, got {data[key]}."
            raise ConfigError(msg)
    if data["reader"] == "synthetic":
        return [f"slide{i}" for i in range(data.get("n_slides", 3))]
    if data["reader"] == "her2st":
        sections = data.get("sections")
        if sections is not None and not all(isinstance(s, str) for s in sections):
            msg = f"'data.sections' must be a list of section names (strings), got {sections!r}."
            raise ConfigError(msg)
        return sections
    names = [str(slide["library_id"]) for slide in data["slides"]]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        msg = f"'data.slides' names the library_id(s) {repeated} more than once; each slide needs its own."
        raise ConfigError(msg)
    return names


def check_split_slides(split: dict[str, list[str]], slides: list[str] | None) -> None:
    """Every split slide is in ``slides`` and every slide in a split (``slides=None``: only a training slide)."""
    if not split.get("train"):
        msg = "'split.train' is empty; name at least one training slide."
        raise ConfigError(msg)
    if slides is None:
        return
    named = [s for names in split.values() for s in names]
    unknown = sorted(set(named) - set(slides))
    if unknown:
        msg = f"[split] names slides {unknown} that are not in the data; the slides are {slides}."
        raise ConfigError(msg)
    left_out = sorted(set(slides) - set(named))
    if left_out:
        msg = f"Slides {left_out} are in no split; list every slide under split.train, split.val or split.test."
        raise ConfigError(msg)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a ``sepal run`` TOML file; raise :class:`ConfigError` naming the first problem."""
    path = Path(path)
    if not path.is_file():
        msg = f"Config file {str(path)!r} does not exist."
        raise ConfigError(msg)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        msg = f"{path} is not valid TOML: {err}"
        raise ConfigError(msg) from err
    unknown = sorted(set(raw) - set(_SCHEMA))
    if unknown:
        msg = f"Unknown section(s) {unknown} in {path.name}; sections are {sorted(_SCHEMA)}."
        raise ConfigError(msg)
    for name in ("data", "split", "preprocess", "output"):
        if name not in raw:
            msg = f"{path.name} has no [{name}] section."
            raise ConfigError(msg)
    sections = {name: _check_section(name, raw.get(name, {})) for name in _SCHEMA}
    base = path.parent.resolve()
    data = sections["data"]
    if data["reader"] not in _READERS:
        msg = f"'data.reader' = {data['reader']!r}; choose one of {list(_READERS)}."
        raise ConfigError(msg)
    if data["reader"] == "her2st" and "path" in data:
        data["path"] = _resolve(base, data["path"], "data.path")
    if data["reader"] in _SLIDE_KEYS:
        if "slides" not in data:
            msg = f"A {data['reader']!r} reader needs 'data.slides' (a list of tables with {list(_SLIDE_KEYS[data['reader']])})."
            raise ConfigError(msg)
        data["slides"] = _check_slides(data["reader"], data["slides"], base)
    split = {key: [str(s) for s in value] for key, value in sections["split"].items()}
    overlap = set(split.get("train", [])) & (set(split.get("val", [])) | set(split.get("test", [])))
    if overlap or set(split.get("val", [])) & set(split.get("test", [])):
        msg = f"A slide may belong to one split only; check {sorted(overlap) or 'val/test'}."
        raise ConfigError(msg)
    check_split_slides(split, _declared_slides(data))
    output = sections["output"]
    if output.get("genes_to_plot", 0) < 0:
        msg = f"'output.genes_to_plot' must be >= 0, got {output['genes_to_plot']}."
        raise ConfigError(msg)
    output["dir"] = str((base / output["dir"]).resolve()) if not Path(output["dir"]).is_absolute() else output["dir"]
    return RunConfig(
        data=data,
        split=split,
        preprocess=sections["preprocess"],
        model=sections["model"],
        output=output,
        source=path.resolve(),
    )
