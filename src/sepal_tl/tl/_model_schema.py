"""The schema of a saved model's ``config.json``: checked field by field before anything is built from it.

A model folder is user-editable text next to a weights file, so :meth:`SepalModel.load
<sepal_tl.tl.SepalModel.load>` trusts nothing in it: every field the loader uses is checked for its type, its
range, its length (one value per gene) and its allowed values, and the first problem is reported as a
:class:`ModelFileError` that names the file and the field (``config.target``, ``gene_means[3]``, ...). Keys this
version does not use are allowed in ``config``, ``config.encoder`` and ``config.spatial``, so that additions by
newer versions or by the user do not break loading.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn, overload

from sepal_tl.tl._stain import STAIN_NORMS

#: Version of the saved-model layout; 2 added ``weights_sha256``.
FORMAT_VERSION = 2
TARGETS = ("delta", "absolute")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelFileError(ValueError):
    """A saved model folder that cannot be loaded as it is; the message names the file and the field."""


class _Checker:
    """Field checks that raise :class:`ModelFileError` naming ``file`` and the dotted field."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, field: str, problem: str) -> NoReturn:
        msg = (
            f"{str(self.file)!r}: field {field!r} {problem}. The file was edited, truncated or written by another "
            "program; save the model again with SepalModel.save (or restore the file)."
        )
        raise ModelFileError(msg)

    def get(self, parent: dict, key: str, field: str, kind: type | tuple[type, ...], *, optional: bool = False):
        if key not in parent:
            if optional:
                return None
            self.fail(field, "is missing")
        value = parent[key]
        if value is None and optional:
            return None
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.fail(field, f"must be {_names(kind)}, got a boolean ({value!r})")
        if not isinstance(value, kind):
            self.fail(field, f"must be {_names(kind)}, got {type(value).__name__} ({_short(value)})")
        return value

    def number(self, value: Any, field: str, *, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field, f"must be a number, got {type(value).__name__} ({_short(value)})")
        if not math.isfinite(value):
            self.fail(field, f"must be finite, got {value!r}")
        if positive and value <= 0:
            self.fail(field, f"must be positive, got {value!r}")
        return float(value)

    @overload
    def integer(
        self, parent: dict, key: str, field: str, *, minimum: int = 1, optional: Literal[False] = False
    ) -> int: ...
    @overload
    def integer(self, parent: dict, key: str, field: str, *, minimum: int = 1, optional: bool) -> int | None: ...
    def integer(self, parent: dict, key: str, field: str, *, minimum: int = 1, optional: bool = False) -> int | None:
        value = self.get(parent, key, field, int, optional=optional)
        if value is not None and value < minimum:
            self.fail(field, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def each(self, values: list, field: str, check: Callable[[Any, str], Any]) -> None:
        for i, value in enumerate(values):
            check(value, f"{field}[{i}]")


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_genes(check: _Checker, meta: dict) -> list[str]:
    genes = check.get(meta, "genes", "genes", list)
    if not genes:
        check.fail("genes", "is an empty list; a model predicts at least one gene")

    def gene(value: Any, field: str) -> None:
        if not isinstance(value, str) or not value:
            check.fail(field, f"must be a non-empty gene name, got {_short(value)}")

    check.each(genes, "genes", gene)
    if len(set(genes)) != len(genes):
        duplicated = next(g for g, n in Counter(genes).items() if n > 1)
        check.fail("genes", f"names {duplicated!r} more than once; gene names must be unique")
    means = check.get(meta, "gene_means", "gene_means", list)
    if len(means) != len(genes):
        check.fail("gene_means", f"has {len(means)} values for {len(genes)} genes; it needs one per gene")
    check.each(means, "gene_means", check.number)
    return genes


def _check_geometry(check: _Checker, meta: dict) -> None:
    geometry = check.get(meta, "geometry", "geometry", dict)
    scale = check.get(geometry, "patch_scale", "geometry.patch_scale", (int, float))
    check.number(scale, "geometry.patch_scale", positive=True)
    check.integer(geometry, "patch_size", "geometry.patch_size")
    for name in ("mean", "std"):
        values = check.get(geometry, name, f"geometry.{name}", list, optional=True)
        if values is None:
            continue
        if len(values) != 3:
            check.fail(f"geometry.{name}", f"must hold 3 numbers (R, G, B), got {len(values)}")
        positive = name == "std"
        check.each(values, f"geometry.{name}", functools.partial(check.number, positive=positive))
    norm = check.get(geometry, "stain_norm", "geometry.stain_norm", str, optional=True)
    target = check.get(geometry, "stain_target", "geometry.stain_target", list, optional=True)
    if norm is not None and norm not in STAIN_NORMS:
        check.fail("geometry.stain_norm", f"must be one of {sorted(STAIN_NORMS)} or null, got {_short(norm)}")
    if (norm is None) != (target is None) or (target is not None and len(target) != STAIN_NORMS[norm]):
        check.fail("geometry.stain_target", f"does not fit stain_norm {norm!r}: {_short(target)}")
    check.each(target or [], "geometry.stain_target", check.number)
    unknown = sorted(set(geometry) - {"patch_scale", "patch_size", "mean", "std", "stain_norm", "stain_target"})
    if unknown:
        check.fail("geometry", f"has unknown key(s) {unknown}")


def _check_encoder(check: _Checker, encoder: dict) -> None:
    backbone = check.get(encoder, "backbone", "config.encoder.backbone", str)
    if not backbone:
        check.fail("config.encoder.backbone", "is empty; it names the image backbone")
    spec = check.get(encoder, "spec", "config.encoder.spec", dict, optional=True)
    if spec is None:  # a head on precomputed embeddings: its width is all that rebuilds it
        if "spec" in encoder or "embedding_dim" in encoder:
            check.integer(encoder, "embedding_dim", "config.encoder.embedding_dim")
        return
    check.get(spec, "architecture", "config.encoder.spec.architecture", str)
    check.get(spec, "model_args", "config.encoder.spec.model_args", dict, optional=True)
    for name in ("mean", "std"):
        values = check.get(spec, name, f"config.encoder.spec.{name}", list)
        if len(values) != 3:
            check.fail(f"config.encoder.spec.{name}", f"must hold 3 numbers (R, G, B), got {len(values)}")
        positive = name == "std"
        check.each(values, f"config.encoder.spec.{name}", functools.partial(check.number, positive=positive))


def _check_spatial(check: _Checker, spatial: dict, n_genes: int) -> None:
    architecture = check.get(spatial, "architecture", "config.spatial.architecture", dict)
    field = "config.spatial.architecture"
    check.integer(architecture, "in_dim", f"{field}.in_dim")
    genes = check.integer(architecture, "n_genes", f"{field}.n_genes")
    if genes != n_genes:
        check.fail(f"{field}.n_genes", f"is {genes} but the model lists {n_genes} genes")
    from sepal_tl.tl._gnn import AGGREGATIONS, OPERATORS, POOLINGS, SpatialHead

    accepted = set(inspect.signature(SpatialHead).parameters)
    unknown = sorted(set(architecture) - accepted)
    if unknown:
        check.fail(field, f"has unknown key(s) {unknown}; the spatial head accepts {sorted(accepted)}")
    for key, choices in (("operator", OPERATORS), ("aggregation", AGGREGATIONS), ("pooling", POOLINGS)):
        value = check.get(architecture, key, f"{field}.{key}", str, optional=True)
        if value is not None and value not in choices:
            check.fail(f"{field}.{key}", f"is {value!r}; it must be one of {list(choices)}")
    for key in ("hidden", "pre", "post"):
        widths = check.get(architecture, key, f"{field}.{key}", list, optional=True)
        if widths is not None:
            check.each(widths, f"{field}.{key}", lambda v, f: check.integer({"w": v}, "w", f))
    check.integer(architecture, "pos_dim", f"{field}.pos_dim", optional=True)
    training = check.get(spatial, "training", "config.spatial.training", dict)
    check.integer(training, "n_hops", "config.spatial.training.n_hops")
    check.get(training, "geometry", "config.spatial.training.geometry", str)
    check.get(training, "lattice", "config.spatial.training.lattice", str, optional=True)


def _check_history(check: _Checker, meta: dict) -> None:
    history = check.get(meta, "history", "history", dict, optional=True)
    for stage, epochs in (history or {}).items():
        check.get(history, stage, f"history.{stage}", list)
        check.each(epochs, f"history.{stage}", lambda v, f: check.get({"e": v}, "e", f, dict))


def validate_model_json(meta: Any, *, file: Path) -> None:
    """Raise :class:`ModelFileError` (naming ``file`` and the field) unless ``meta`` is a valid saved model.

    Checks ``format_version`` (1 to :data:`FORMAT_VERSION`; newer files ask for an upgrade), ``weights_sha256``
    (format ≥ 2), ``uid``, ``genes`` (unique non-empty names), ``gene_means`` (one finite number per gene),
    ``geometry``, ``config.target`` (``"delta"`` or ``"absolute"``), ``config.encoder.backbone``, the spatial
    head's architecture (its ``n_genes`` equal to the gene count) and the shape of ``history``.
    """
    check = _Checker(file)
    if not isinstance(meta, dict):
        check.fail("(top level)", f"must be a JSON object, got {type(meta).__name__}")
    version = check.integer(meta, "format_version", "format_version")
    if version > FORMAT_VERSION:
        msg = (
            f"{str(file)!r} was saved by a newer sepal_tl (format_version {version}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade sepal_tl to load it."
        )
        raise ModelFileError(msg)
    if version >= 2:
        digest = check.get(meta, "weights_sha256", "weights_sha256", str)
        if not _SHA256.match(digest):
            check.fail("weights_sha256", f"must be 64 lowercase hex digits, got {_short(digest)}")
    check.get(meta, "uid", "uid", str)
    genes = _check_genes(check, meta)
    _check_geometry(check, meta)
    config = check.get(meta, "config", "config", dict)
    target = check.get(config, "target", "config.target", str)
    if target not in TARGETS:
        check.fail("config.target", f"is {target!r}; it must be one of {list(TARGETS)} (lowercase)")
    check.get(config, "layer", "config.layer", str, optional=True)
    _check_encoder(check, check.get(config, "encoder", "config.encoder", dict))
    spatial = check.get(config, "spatial", "config.spatial", dict, optional=True)
    if spatial is not None:
        _check_spatial(check, spatial, len(genes))
    _check_history(check, meta)
    check.get(meta, "versions", "versions", dict, optional=True)
