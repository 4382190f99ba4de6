"""A saved model's folder on disk: written atomically with a checksum, read back only when it checks out.

The folder holds ``model.safetensors`` (the weights, never pickled) and ``config.json`` (everything else, with
the weights' SHA-256). :func:`write_model_folder` writes both into a temporary folder next to the target and
then swaps it in, so an interrupted save leaves the old model or the new one, never new weights with an old
JSON. :func:`read_model_folder` checks the JSON against :mod:`~sepal_tl.tl._model_schema` and the weights
against the recorded SHA-256 before anything is built from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sepal_tl._atomic import atomic_folder, sha256
from sepal_tl._logging import logger
from sepal_tl.tl._model_schema import ModelFileError, validate_model_json

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_FILES = {WEIGHTS, CONFIG}


def write_model_folder(path: Path, *, state: dict[str, torch.Tensor], meta: dict[str, Any], overwrite: bool) -> None:
    """Write ``state`` and ``meta`` (plus ``weights_sha256``) to the folder ``path``, atomically.

    An existing folder is replaced only with ``overwrite=True`` and only if it holds nothing but a saved
    model's two files (so that ``overwrite`` never deletes anything else); ``meta`` is validated first so that
    a model that could not be loaded back is never written.
    """
    from safetensors.torch import save_file

    if path.exists() and not path.is_dir():
        msg = f"{str(path)!r} is a file; a model is saved as a folder. Pass a folder path (new or empty)."
        raise FileExistsError(msg)
    if path.is_dir():
        entries = {entry.name for entry in path.iterdir()}
        if entries and not overwrite:
            msg = f"{str(path)!r} exists and is not empty; pass overwrite=True or choose another directory."
            raise FileExistsError(msg)
        foreign = sorted(entries - _FILES)
        if foreign:
            msg = (
                f"{str(path)!r} holds files that are not part of a saved model ({foreign[:5]}); overwrite=True only "
                "replaces a model folder, so nothing was written. Choose a new or empty folder."
            )
            raise FileExistsError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(path) as tmp:
        save_file(state, tmp / WEIGHTS)
        meta = {**meta, "weights_sha256": sha256(tmp / WEIGHTS)}
        validate_model_json(json.loads(json.dumps(meta)), file=path / CONFIG)
        (tmp / CONFIG).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def read_model_folder(path: Path, *, device: str = "cpu") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return the checked ``config.json`` contents and the weights of a folder written by :func:`write_model_folder`.

    Raises ``FileNotFoundError`` / ``NotADirectoryError`` for a missing folder or file and :class:`ModelFileError`
    (a ``ValueError``) naming the file and the field for anything unreadable, invalid or not matching its checksum.
    Folders of format 1 (no checksum) load with a warning.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        msg = f"Model folder {str(path)!r} does not exist; pass the folder written by SepalModel.save."
        raise FileNotFoundError(msg)
    if not path.is_dir():
        msg = f"{str(path)!r} is a file; pass the folder written by SepalModel.save (it holds {sorted(_FILES)})."
        raise NotADirectoryError(msg)
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            msg = f"{str(path)!r} is not a saved SepalModel: {name} is missing."
            raise FileNotFoundError(msg)
    config_file, weights_file = path / CONFIG, path / WEIGHTS
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"{str(config_file)!r} is not valid JSON ({err}); the file is truncated or damaged. Save the model again."
        raise ModelFileError(msg) from err
    validate_model_json(meta, file=config_file)
    expected = meta.get("weights_sha256")
    if expected is None:
        logger.warning("%s has no weights checksum (format_version 1); save the model again to add one.", config_file)
    elif sha256(weights_file) != expected:
        msg = (
            f"{str(weights_file)!r} does not match the SHA-256 recorded in {CONFIG}: the weights were modified, "
            "truncated, or belong to another save (e.g. an interrupted copy). Restore the folder or save the model "
            "again."
        )
        raise ModelFileError(msg)
    try:
        state = load_file(weights_file, device=device)
    except SafetensorError as err:
        msg = f"{str(weights_file)!r} is not a readable safetensors file ({err}). Save the model again."
        raise ModelFileError(msg) from err
    return meta, state


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], *, prefix: str, file: Path) -> None:
    """Load the ``prefix``-ed entries of ``state`` into ``module``; a mismatch raises :class:`ModelFileError`."""
    own = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    try:
        module.load_state_dict(own)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        msg = (
            f"The weights in {str(file)!r} do not fit the model described by {CONFIG} ({first} ...): the two files "
            "come from different models. Save the model again."
        )
        raise ModelFileError(msg) from err
