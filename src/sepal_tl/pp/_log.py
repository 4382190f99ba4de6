"""log2(x + 1) transform."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse

from sepal_tl._docs import inject_docs
from sepal_tl._keys import LOG2TPM, TPM
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._uns import record
from sepal_tl._validation import check_finite, get_matrix


@spatialdata_aware()
@inject_docs
def log2p(adata: AnnData, *, layer: str = TPM, key_added: str = LOG2TPM, copy: bool = False) -> AnnData | None:
    """``log2(x + 1)`` of a layer, SEPAL's expression scale.

    The output layer is named for what it holds: ``"log2tpm"`` = log2(TPM + 1). SEPAL (and sepal_tl before 0.2)
    called it ``"log1p"``, the name scanpy uses for the natural log; pass ``key_added="log1p"`` to keep the old
    name, or rename an old object's layer with ``adata.layers["log2tpm"] = adata.layers.pop("log1p")``.

    Parameters
    ----------
    adata
        Annotated data with ``layers[layer]``.
    layer
        Input layer (non-negative, typically TPM from :func:`sepal_tl.pp.tpm`).
    key_added
        Name of the output layer.
    %(copy_table_key)s

    Returns
    -------
    A copy if ``copy=True``, else ``None``. Sets ``layers[key_added]`` and ``uns["sepal"]["pp"]["log2p"]``.

    Examples
    --------
    >>> import numpy as np
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=1, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.tpm(adata)
    >>> sepal.pp.log2p(adata)
    >>> np.allclose(adata.layers["log2tpm"].toarray(), np.log2(adata.layers["tpm"].toarray() + 1))
    True
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
