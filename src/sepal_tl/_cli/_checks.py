"""Checks the command line runs before any work: option values, devices, output folders.

Each check raises :class:`~sepal_tl._cli._config.ConfigError` naming the key or argument and the fix, so that a
typo costs a second, not a training run.
"""

from __future__ import annotations

import inspect
import math
import os
import uuid
from pathlib import Path
from typing import Any

from sepal_tl._cli._config import ConfigError

_LOSSES = ("mse", "masked_mse")
_TARGETS = ("delta", "absolute")
_GEOMETRIES = ("auto", "hex", "square")
#: options of either stage that are counts (minimum allowed value)
_COUNTS = {"epochs": 1, "batch_size": 1, "patience": 0, "num_workers": 0, "patch_size": 1, "random_state": 0}
#: options of either stage that are positive (``> 0``) or non-negative (``>= 0``) real numbers
_POSITIVE = ("lr", "patch_scale")
_NON_NEGATIVE = ("weight_decay",)
_WIDTHS = ("hidden", "pre", "post")
#: pp.run overrides: thresholds (non-negative numbers), fractions in [0, 1], a count and a column name
_PP_NUMBERS = ("min_counts_spot", "max_counts_spot", "min_counts_gene", "max_counts_gene")
_PP_FRACTIONS = ("min_frac_slide", "min_frac_global")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_device(device: Any, where: str) -> str:
    """``device`` must be ``"auto"``, ``"cpu"`` or an available ``cuda[:N]`` / ``mps`` device."""
    if not isinstance(device, str):
        raise ConfigError(f"{where} must be a device name such as 'auto', 'cpu' or 'cuda', got {device!r}.")
    if device == "auto":
        return device
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"{where} = {device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from err
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{where} = {device!r}, but CUDA is not available here; use 'cpu' or 'auto'.")
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"{where} = {device!r}, but only {count} CUDA device(s) exist; use 'cuda:0'.")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where} = {device!r}, but MPS is not available here; use 'cpu' or 'auto'.")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{where} = {device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'.")
    return device


def check_writable(folder: str | os.PathLike, where: str) -> Path:
    """``folder`` (created if needed) must be a folder this process can write into."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{where} = {str(folder)!r} is a file; give a folder for the outputs.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".sepal-write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"{where} = {str(folder)!r} is not writable ({err.strerror}); choose another folder."
        ) from err
    return folder


def _check_value(name: str, value: Any, default: Any, where: str) -> None:
    key = f"{where}.{name}"
    if name in _COUNTS:
        if value is None and name == "patience":
            return
        if not _is_int(value) or value < _COUNTS[name]:
            raise ConfigError(f"'{key}' must be an integer >= {_COUNTS[name]}, got {value!r}.")
    elif name in _POSITIVE + _NON_NEGATIVE:
        low_ok = name in _NON_NEGATIVE
        if not _is_number(value) or value < 0 or (value == 0 and not low_ok):
            bound = ">= 0" if low_ok else "> 0"
            raise ConfigError(f"'{key}' must be a finite number {bound}, got {value!r}.")
    elif name in _WIDTHS:
        if not isinstance(value, list | tuple) or not all(_is_int(v) and v >= 1 for v in value):
            raise ConfigError(f"'{key}' must be a list of positive integers (layer widths), got {value!r}.")
        if name == "hidden" and not value:
            raise ConfigError(f"'{key}' needs at least one graph layer width, e.g. [256].")
    elif name == "device":
        check_device(value, f"'{key}'")
    elif isinstance(default, bool):
        if not isinstance(value, bool | str):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}.")
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"'{key}' must be a string, got {value!r}.")


def check_model_options(preset: str | None, options: dict[str, Any], where: str = "model.options") -> None:
    """Names, types, ranges and choices of ``sepal.tl.fit`` options (after the preset is applied)."""
    from sepal_tl.tl._fit import stage_options
    from sepal_tl.tl._gnn import AGGREGATIONS, OPERATORS, POOLINGS
    from sepal_tl.tl._local import fit_encoder
    from sepal_tl.tl._neighbourhoods import ALLOWED_HOPS
    from sepal_tl.tl._spatial import fit_spatial

    try:
        stages = stage_options(preset, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[model]: {err}") from err
    choices = {
        "loss": _LOSSES,
        "target": _TARGETS,
        "operator": OPERATORS,
        "aggregation": AGGREGATIONS,
        "pooling": POOLINGS,
        "n_hops": ALLOWED_HOPS,
        "geometry": _GEOMETRIES,
    }
    for stage, func in (("encoder", fit_encoder), ("spatial", fit_spatial)):
        defaults = {name: p.default for name, p in inspect.signature(func).parameters.items()}
        for name, value in stages[stage].items():
            if name in choices and (isinstance(value, bool) or value not in choices[name]):
                raise ConfigError(f"'{where}.{name}' = {value!r}; choose one of {list(choices[name])}.")
            _check_value(name, value, defaults.get(name), where)


def check_pp_overrides(overrides: dict[str, Any], preset: dict[str, Any]) -> None:
    """Types and ranges of ``preprocess.overrides`` (thresholds, fractions in [0, 1], ``n_top``, ``combat_key``)."""
    params = {**preset, **overrides}
    for name, value in overrides.items():
        key = f"preprocess.overrides.{name}"
        if name in _PP_NUMBERS and (not _is_number(value) or value < 0):
            raise ConfigError(f"'{key}' must be a non-negative number, got {value!r}.")
        if name in _PP_FRACTIONS and (not _is_number(value) or not 0 <= value <= 1):
            raise ConfigError(f"'{key}' must be a fraction between 0 and 1, got {value!r}.")
        if name == "n_top" and (not _is_int(value) or value < 1):
            raise ConfigError(f"'{key}' must be a positive integer (genes to keep), got {value!r}.")
        if name == "combat_key" and value is not None and not isinstance(value, str):
            raise ConfigError(f"'{key}' must be an obs column name or \"none\", got {value!r}.")
    for low, high in (("min_counts_spot", "max_counts_spot"), ("min_counts_gene", "max_counts_gene")):
        if params[low] > params[high]:
            raise ConfigError(f"'preprocess.overrides': {low} = {params[low]} is above {high} = {params[high]}.")


def check_model_folder(folder: Path, where: str) -> None:
    """A run saves its model to ``folder``: it must be absent or hold a saved model and nothing else."""
    from sepal_tl.tl._model_files import CONFIG, WEIGHTS

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{where}: {str(folder)!r} is a file, but the run saves its model there as a folder.")
    if folder.is_dir():
        foreign = sorted({entry.name for entry in folder.iterdir()} - {CONFIG, WEIGHTS})
        if foreign:
            raise ConfigError(
                f"{where}: {str(folder)!r} holds files that are not part of a saved model ({foreign[:5]}), which "
                "the run would have to replace; move them or choose another output folder."
            )
