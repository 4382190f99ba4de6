"""log2(x + 1) transform."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse

from sepal_tl._logging import logger
from sepal_tl._uns import record
from sepal_tl._validation import check_finite, get_matrix


def log2p(adata: AnnData, *, layer: str = "tpm", key_added: str = "log1p", copy: bool = False) -> AnnData | None:
    """``log2(x + 1)`` of a layer, SEPAL's expression scale (the layer is called ``log1p`` as in SEPAL).

    Parameters
    ----------
    adata
        Annotated data with ``layers[layer]``.
    layer
        Input layer (non-negative, typically TPM from :func:`sepal_tl.pp.tpm`).
    key_added
        Name of the output layer.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    A copy if ``copy=True``, else ``None``. Sets ``layers[key_added]`` and ``uns["sepal"]["pp"]["log2p"]``.
    """
    values = get_matrix(adata, layer)
    check_finite(values, what=f"layers[{layer!r}]")
    data = values.data if sparse.issparse(values) else np.asarray(values)
    if data.size and data.min() < 0:
        msg = f"layers[{layer!r}] has negative values; log2(x + 1) expects non-negative expression such as TPM."
        raise ValueError(msg)
    if sparse.issparse(values):
        out = values.copy().astype(np.float32)
        out.data = np.log2(out.data + 1, dtype=np.float32)
    else:
        out = np.log2(np.asarray(values, dtype=np.float32) + 1)
    if copy:
        adata = adata.copy()
    adata.layers[key_added] = out
    record(adata, "pp", "log2p", {"layer": layer, "key_added": key_added})
    logger.info("added %r to adata.layers", key_added)
    return adata if copy else None
