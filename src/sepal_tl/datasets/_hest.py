"""HEST-1k samples (Jaume et al. 2024) from a local copy (:func:`hest`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from anndata import AnnData

from sepal_tl import io
from sepal_tl._settings import settings

__all__ = ["hest"]

_DOWNLOAD = (
    "HEST-1k is a gated Hugging Face dataset: accept its terms at https://huggingface.co/datasets/MahmoodLab/hest, "
    "log in (huggingface-cli login) and download the samples you need, e.g. "
    "huggingface_hub.snapshot_download('MahmoodLab/hest', repo_type='dataset', local_dir=PATH, "
    "allow_patterns=['st/ID.h5ad', 'wsis/ID.tif', 'metadata/ID.json'])."
)


def hest(ids: str | Sequence[str], *, path: str | os.PathLike | None = None) -> AnnData:
    """Load HEST-1k samples from a local HEST folder, one library per sample.

    Parameters
    ----------
    ids
        One sample id (e.g. ``"TENX95"``) or several.
    path
        The HEST folder (``st/``, ``wsis/``, ``metadata/``); default ``sepal.settings.datasetdir / "hest"``.

    Returns
    -------
    One AnnData with every sample (see :func:`sepal_tl.io.read_hest`), ``obs["library_id"]`` = the sample id.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.hest(["TENX95", "NCBI783"], path="hest_data")
    """
    names = [ids] if isinstance(ids, str) else [str(i) for i in ids]
    if not names:
        msg = "ids is empty; pass one HEST sample id or a list of them."
        raise ValueError(msg)
    folder = Path(path) if path is not None else settings.datasetdir / "hest"
    if not folder.is_dir():
        msg = f"HEST folder {str(folder)!r} not found. {_DOWNLOAD}"
        raise FileNotFoundError(msg)
    missing = [name for name in names if not (folder / "st" / f"{name}.h5ad").is_file()]
    if missing:
        msg = f"HEST samples {missing} are not in {str(folder)!r} (st/{{id}}.h5ad missing). {_DOWNLOAD}"
        raise FileNotFoundError(msg)
    samples = [io.read_hest(name, hest_dir=folder) for name in names]
    return samples[0] if len(samples) == 1 else io.concat(samples)
