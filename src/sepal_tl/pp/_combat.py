"""Batch correction with scanpy's ComBat."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse

from sepal_tl._docs import inject_docs
from sepal_tl._keys import DENOISED
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._uns import record
from sepal_tl._validation import check_finite, get_matrix


@spatialdata_aware()
@inject_docs
def combat(
    adata: AnnData,
    *,
    key: str = "patient",
    layer: str = DENOISED,
    key_added: str = "combat",
    copy: bool = False,
) -> AnnData | None:
    """ComBat batch correction of a layer (parametric empirical Bayes, :func:`scanpy.pp.combat`).

    SEPAL corrects by ``patient`` for legacy ST and by slide for Visium, after gene selection. It used the
    ``combat`` (pyComBat) package, whose scale adjustment differs slightly from scanpy's; we use scanpy's, which
    agrees with other maintained implementations.

    Parameters
    ----------
    adata
        Annotated data with ``layers[layer]``.
    key
        ``obs`` column with the batches (at least two).
    layer
        Layer to correct.
    key_added
        Output layer (dense float32).
    %(copy_table_key)s

    Returns
    -------
    A copy if ``copy=True``, else ``None``. Sets ``layers[key_added]`` and ``uns["sepal"]["pp"]["combat"]``.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.run(adata, preset="synthetic", n_top=16, combat_key=None)  # every step but ComBat
    >>> sepal.pp.combat(adata, key="patient")
    >>> adata.layers["combat"].shape
    (140, 16)
    >>> adata.uns["sepal"]["pp"]["combat"]
    {'key': 'patient', 'layer': 'denoised', 'key_added': 'combat', 'n_batches': 2}
    """
    if key not in adata.obs:
        msg = f"key={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}); name the batch column."
        raise KeyError(msg)
    batches = adata.obs[key]
    if batches.isna().any():
        msg = f"adata.obs[{key!r}] has missing values; every spot needs a batch label for ComBat."
        raise ValueError(msg)
    n_batches = batches.nunique()
    if n_batches < 2:
        msg = f"ComBat needs at least two batches in obs[{key!r}], found {n_batches}."
        raise ValueError(msg)
    values = get_matrix(adata, layer)
    check_finite(values, what=f"layers[{layer!r}]")
    dense = values.toarray() if sparse.issparse(values) else np.asarray(values)
    holder = AnnData(X=dense.astype(np.float64), obs=adata.obs[[key]].astype({key: "category"}).copy())
    holder.obs_names = [str(i) for i in range(holder.n_obs)]
    import scanpy as sc

    corrected = sc.pp.combat(holder, key=key, inplace=False)
    if copy:
        adata = adata.copy()
    adata.layers[key_added] = np.asarray(corrected, dtype=np.float32)
    record(adata, "pp", "combat", {"key": key, "layer": layer, "key_added": key_added, "n_batches": int(n_batches)})
    logger.info("added %r to adata.layers", key_added)
    return adata if copy else None
