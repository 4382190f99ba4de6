"""Checks and data shared by the training and prediction functions of ``sepal.tl``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData
from scipy import sparse

from sepal_tl._validation import check_finite, get_matrix

SPLITS = ("train", "val", "test")


def split_indices(adata: AnnData, split_key: str) -> dict[str, np.ndarray]:
    """Positions of the ``"train"``, ``"val"`` and ``"test"`` spots of ``obs[split_key]``."""
    if split_key not in adata.obs:
        msg = (
            f"split_key={split_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}). "
            "Add a column with 'train' / 'val' / 'test' per spot (e.g. by slide) and pass its name."
        )
        raise KeyError(msg)
    values = adata.obs[split_key].astype(str).to_numpy()
    unknown = sorted(set(values) - set(SPLITS))
    if unknown:
        msg = f"obs[{split_key!r}] has values {unknown}; only 'train', 'val' and 'test' are allowed."
        raise ValueError(msg)
    out = {name: np.flatnonzero(values == name) for name in SPLITS}
    if out["train"].size == 0:
        msg = f"No spot has obs[{split_key!r}] == 'train'; the model needs training spots (and their gene means)."
        raise ValueError(msg)
    return out


def dense_layer(adata: AnnData, layer: str | None, *, genes: Sequence[str] | None = None) -> np.ndarray:
    """``float32`` dense copy of a layer (optionally for ``genes``), checked to be finite."""
    matrix = get_matrix(adata, layer)
    if genes is not None:
        matrix = matrix[:, adata.var_names.get_indexer(genes)]
    check_finite(matrix, what=f"layers[{layer!r}]" if layer else "adata.X")
    return (matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)).astype(np.float32)


def bin_size_um(adata: AnnData) -> float | None:
    """The Visium HD bin size of the slides (``uns["spatial"][lib]["metadata"]["bin_size_um"]``), if they have one.

    Slides with different bin sizes in one AnnData are an error: a model learns one spot size.
    """
    sizes = {
        float(entry["metadata"]["bin_size_um"])
        for entry in adata.uns.get("spatial", {}).values()
        if isinstance(entry, dict) and "bin_size_um" in entry.get("metadata", {})
    }
    if len(sizes) > 1:
        msg = f"The slides have different Visium HD bin sizes {sorted(sizes)} µm; use one bin size per model."
        raise ValueError(msg)
    return sizes.pop() if sizes else None


def check_bin_size(adata: AnnData, model_bin_size: float | None) -> None:
    """Refuse Visium HD bins of another size than the model was trained on."""
    size = bin_size_um(adata)
    if model_bin_size is not None and size is not None and size != model_bin_size:
        msg = (
            f"These are {size:g} µm Visium HD bins but the model was trained on {model_bin_size:g} µm bins, so "
            f"patches and neighbourhoods mean different things. Read the data with "
            f"sepal.io.read_visium_hd(..., bin_size={model_bin_size:g}) or train a model on {size:g} µm bins."
        )
        raise ValueError(msg)
