"""Moran's I gene selection."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from sepal_tl._compat import import_squidpy
from sepal_tl._graph import lattice_graph
from sepal_tl._logging import logger
from sepal_tl._uns import record
from sepal_tl._validation import DEFAULT_LIBRARY_KEY, check_finite, get_matrix, resolve_libraries


def _slide_moran(values, adjacency: sparse.csr_matrix) -> np.ndarray:
    """Moran's I of every column of ``values`` on one slide, with squidpy (row-normalised weights)."""
    slide = AnnData(X=values, obsp={"spatial_connectivities": adjacency})
    sq = import_squidpy()
    with warnings.catch_warnings():
        # genes constant on this slide have no I (NaN); select_genes averages them over the other slides
        warnings.filterwarnings("ignore", message=".*variables were constant", category=UserWarning)
        result = sq.gr.spatial_autocorr(
            slide,
            mode="moran",
            genes=list(slide.var_names),
            n_perms=None,
            transformation=True,
            copy=True,
            show_progress_bar=False,
        )
    return result["I"].reindex(slide.var_names).to_numpy(dtype=float)


def select_genes(
    adata: AnnData,
    *,
    n_top: int = 256,
    layer: str = "denoised",
    slides: Sequence[str] | None = None,
    geometry: str = "auto",
    subset: bool = False,
    key_added: str = "moran_i",
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Rank genes by spatial autocorrelation (Moran's I) and select the top ``n_top``.

    Moran's I is computed per slide with :func:`squidpy.gr.spatial_autocorr` (row-normalised weights, no
    permutations) on the lattice graph of that slide (6 hex neighbours for Visium, the 4 edge neighbours of the
    square legacy-ST grid), then averaged over the chosen slides; a gene that is constant on a slide has no I
    there and is averaged over the other slides.

    SEPAL ranks on every slide, test slides included, which leaks test information into the gene choice. Pass
    ``slides=`` (e.g. the training slides) to rank leak-free.

    Parameters
    ----------
    adata
        Spots × genes with ``layers[layer]`` and array coordinates.
    n_top
        Number of genes to select.
    layer
        Expression layer to rank on (SEPAL: the denoised log2(TPM + 1)).
    slides
        Slides (values of ``obs[library_key]``) to rank on; ``None`` uses all slides.
    geometry
        ``"auto"`` (from the array coordinates), ``"hex"`` (Visium) or ``"square"`` (legacy ST).
    subset
        Subset ``adata`` to the selected genes (ordered as in ``adata``) instead of only flagging them.
    key_added
        ``var`` column for the mean Moran's I. The selection flag goes to ``var["highly_spatial"]``.
    library_key
        Column of ``adata.obs`` naming each spot's slide.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    A copy if ``copy=True``, else ``None``. Sets ``var[key_added]`` (mean over the chosen slides),
    ``var["highly_spatial"]``, ``varm[f"{key_added}_per_slide"]`` (one column per chosen slide), the symmetric
    lattice graph in ``obsp["spatial_connectivities"]`` and ``uns["sepal"]["pp"]["select_genes"]``.
    """
    if not isinstance(n_top, int | np.integer) or n_top < 1:
        msg = f"n_top must be a positive integer, got {n_top!r}."
        raise ValueError(msg)
    if n_top > adata.n_vars:
        msg = f"n_top={n_top} is larger than the {adata.n_vars} genes left; lower n_top or relax the filters."
        raise ValueError(msg)
    values = get_matrix(adata, layer)
    check_finite(values, what=f"layers[{layer!r}]")
    libraries = resolve_libraries(adata, library_key)
    available = [str(c) for c in libraries.cat.categories]
    chosen = available if slides is None else [str(s) for s in slides]
    unknown = sorted(set(chosen) - set(available))
    if unknown or not chosen:
        msg = f"slides={list(chosen)} must be a non-empty subset of the slides in obs[{library_key!r}]: {available}."
        raise ValueError(msg)
    adjacency, geom = lattice_graph(adata, libraries, geometry=geometry)

    per_slide = {}
    for lib in chosen:
        idx = np.flatnonzero((libraries == lib).to_numpy())
        slide_values = values[idx]
        per_slide[lib] = _slide_moran(
            slide_values.toarray() if sparse.issparse(slide_values) else np.asarray(slide_values),
            adjacency[idx][:, idx],
        )
    table = pd.DataFrame(per_slide, index=adata.var_names)
    moran = table.mean(axis=1, skipna=True)
    ranked = moran.fillna(-np.inf).sort_values(ascending=False, kind="stable")
    selected = adata.var_names.isin(ranked.index[:n_top])

    if copy:
        adata = adata.copy()
    adata.var[key_added] = moran.to_numpy()
    adata.var["highly_spatial"] = selected
    adata.varm[f"{key_added}_per_slide"] = table
    adata.obsp["spatial_connectivities"] = adjacency
    record(
        adata,
        "pp",
        "select_genes",
        {
            "n_top": n_top,
            "layer": layer,
            "slides": chosen,
            "geometry": geom,
            "subset": subset,
            "key_added": key_added,
            "library_key": library_key,
        },
    )
    if subset:
        adata._inplace_subset_var(selected)
    logger.info("added %r and 'highly_spatial' to adata.var (%d genes selected)", key_added, n_top)
    return adata if copy else None
