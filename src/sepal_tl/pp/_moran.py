"""Moran's I gene selection."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from sepal_tl._compat import import_squidpy
from sepal_tl._docs import inject_docs
from sepal_tl._geometry import resolve_geometry
from sepal_tl._graph import lattice_graph
from sepal_tl._keys import CONNECTIVITIES, DEFAULT_LIBRARY_KEY, DENOISED, HIGHLY_SPATIAL, MORAN_I
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._uns import record
from sepal_tl._validation import (
    check_array_coords,
    check_choice,
    check_finite,
    check_spatial,
    check_unique_var_names,
    get_matrix,
    resolve_libraries,
)

#: Genes whose Moran's I is computed together (dense ``spots x block`` values at a time).
_GENE_BLOCK = 128
#: The authors' squidpy graphs per lattice, on pixel coordinates: ``spatial_neighbors(coord_type="generic",
#: n_neighs=6)`` (Visium) and ``spatial_neighbors(coord_type="grid", n_neighs=8)`` (legacy ST), i.e. squidpy's
#: k-nearest-neighbour and grid builders.
REFERENCE_GRAPHS = {"hex": ("spatial_neighbors_knn", 6), "square": ("spatial_neighbors_grid", 8)}


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


def reference_graph(adata: AnnData, libraries: pd.Series, geometry: str) -> sparse.csr_matrix:
    """The authors' graph: per slide, :func:`squidpy.gr.spatial_neighbors` on ``obsm["spatial"]`` (pixels).

    Visium (hex): the directed 6-nearest-neighbour graph (``coord_type="generic"``); legacy ST (square): squidpy's
    grid builder with 8 neighbours. Slides are never connected.
    """
    coords = check_spatial(adata)
    sq = import_squidpy()
    codes = pd.Categorical(libraries.to_numpy()).codes
    rows, cols = [], []
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        builder, n_neighs = REFERENCE_GRAPHS[geometry]
        if idx.size <= n_neighs:
            msg = (
                f"Slide {libraries.iloc[idx[0]]!r} has {idx.size} spots, too few for the reference graph's "
                f"{n_neighs} neighbours; use graph='lattice'."
            )
            raise ValueError(msg)
        slide = AnnData(obs=pd.DataFrame(index=[str(i) for i in range(idx.size)]), obsm={"spatial": coords[idx]})
        getattr(sq.gr, builder)(slide, n_neighs=n_neighs)
        graph = slide.obsp["spatial_connectivities"].tocoo()
        rows.append(idx[graph.row])
        cols.append(idx[graph.col])
    src, dst = np.concatenate(rows), np.concatenate(cols)
    adjacency = sparse.csr_matrix((np.ones(src.size, dtype=np.float32), (src, dst)), shape=(adata.n_obs,) * 2)
    adjacency.sort_indices()
    return adjacency


@spatialdata_aware()
@inject_docs
def select_genes(
    adata: AnnData,
    *,
    n_top: int = 256,
    layer: str = DENOISED,
    slides: Sequence[str] | None = None,
    geometry: str = "auto",
    graph: Literal["lattice", "reference"] = "lattice",
    subset: bool = False,
    key_added: str = MORAN_I,
    connectivities_key: str | None = CONNECTIVITIES,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Rank genes by spatial autocorrelation (Moran's I) and select the top ``n_top``.

    Moran's I is computed per slide with :func:`squidpy.gr.spatial_autocorr` (row-normalised weights, no
    permutations) on the slide's graph, then averaged over the chosen slides; a gene that is constant on a slide
    has no I there and is averaged over the other slides. ``graph="lattice"`` (default) uses the exact lattice
    (6 hex neighbours for Visium, the 4 edge neighbours of the square legacy-ST grid, from the array
    coordinates); ``graph="reference"`` reproduces the authors' squidpy graphs on pixel coordinates (Visium: the
    directed 6-nearest-neighbour graph; legacy ST: squidpy's grid builder with 8 neighbours), to reproduce the
    paper's gene selection exactly. ``docs/differences.md`` gives the measured overlap of the two selections.

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
    graph
        ``"lattice"`` (exact lattice neighbours) or ``"reference"`` (the authors' squidpy graphs; needs
        ``obsm["spatial"]``).
    subset
        Subset ``adata`` to the selected genes (ordered as in ``adata``) instead of only flagging them.
    key_added
        ``var`` column for the mean Moran's I. The selection flag goes to ``var["highly_spatial"]``.
    connectivities_key
        ``obsp`` key for the graph used; ``None`` stores none. The default never touches squidpy's
        ``obsp["spatial_connectivities"]``; pass that name to replace it.
    library_key
        %(library_key)s %(one_slide_rule)s
    %(copy_table_key)s

    Returns
    -------
    A copy if ``copy=True``, else ``None``. Sets ``var[key_added]`` (mean over the chosen slides),
    ``var["highly_spatial"]``, ``varm[f"{key_added}_per_slide"]`` (one column per chosen slide), the graph in
    ``obsp[connectivities_key]`` and ``uns["sepal"]["pp"]["select_genes"]``.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.tpm(adata)
    >>> sepal.pp.log2p(adata)
    >>> sepal.pp.denoise(adata, layer="log2tpm")
    >>> sepal.pp.select_genes(adata, n_top=10, slides=["slide0"])  # rank on the training slide only
    >>> int(adata.var["highly_spatial"].sum())
    10
    >>> adata.var.nlargest(3, "moran_i")[["moran_i", "program"]].round(2)
              moran_i program
    USP17L30     0.48  immune
    FAM9B        0.41  stroma
    ETAA1        0.39  tumour
    """
    check_unique_var_names(adata)
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
    check_choice("graph", graph, ["lattice", "reference"])
    if graph == "lattice":
        adjacency, geom = lattice_graph(adata, libraries, geometry=geometry)
    else:
        geom = resolve_geometry(geometry, check_array_coords(adata))
        adjacency = reference_graph(adata, libraries, geom)

    per_slide = {}
    for lib in chosen:
        idx = np.flatnonzero((libraries == lib).to_numpy())
        slide_graph = adjacency[idx][:, idx]
        # blocks of genes: squidpy is fastest on dense values, and a block stays small on Visium HD-size slides
        blocks = []
        for start in range(0, adata.n_vars, _GENE_BLOCK):
            block = values[idx, start : start + _GENE_BLOCK]
            blocks.append(_slide_moran(block.toarray() if sparse.issparse(block) else np.asarray(block), slide_graph))
        per_slide[lib] = np.concatenate(blocks)
    table = pd.DataFrame(per_slide, index=adata.var_names)
    moran = table.mean(axis=1, skipna=True)
    ranked = moran.fillna(-np.inf).sort_values(ascending=False, kind="stable")
    selected = adata.var_names.isin(ranked.index[:n_top])

    if copy:
        adata = adata.copy()
    adata.var[key_added] = moran.to_numpy()
    adata.var[HIGHLY_SPATIAL] = selected
    adata.varm[f"{key_added}_per_slide"] = table
    if connectivities_key is not None:
        adata.obsp[connectivities_key] = adjacency
    record(
        adata,
        "pp",
        "select_genes",
        {
            "n_top": n_top,
            "layer": layer,
            "slides": chosen,
            "geometry": geom,
            "graph": graph,
            "connectivities_key": connectivities_key,
            "subset": subset,
            "key_added": key_added,
            "library_key": library_key,
        },
    )
    if subset:
        adata._inplace_subset_var(selected)
    logger.info("added %r and 'highly_spatial' to adata.var (%d genes selected)", key_added, n_top)
    return adata if copy else None
