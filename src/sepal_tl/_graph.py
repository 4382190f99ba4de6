"""The slide's spatial neighbour graph on the spot lattice."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from scipy.spatial import cKDTree

from sepal_tl._geometry import Geometry, lattice_positions, resolve_geometry
from sepal_tl._keys import DEFAULT_LIBRARY_KEY
from sepal_tl._validation import check_array_coords, check_unique_positions

#: What :func:`lattice_graph` reports when ``geometry="auto"`` finds hex slides and square slides together.
MIXED = "mixed"


def _slide_groups(adata: AnnData, libraries: pd.Series) -> np.ndarray:
    """Group codes that never join two slides: ``libraries`` crossed with ``obs["library_id"]`` when present."""
    codes = pd.factorize(libraries.astype(str).to_numpy())[0]
    if DEFAULT_LIBRARY_KEY in adata.obs:
        slides = pd.factorize(adata.obs[DEFAULT_LIBRARY_KEY].astype(str).to_numpy())[0]
        codes = pd.factorize(codes * (slides.max(initial=0) + 1) + slides)[0]
    return codes


def lattice_graph(
    adata: AnnData, libraries: pd.Series, *, geometry: str = "auto"
) -> tuple[sparse.csr_matrix, Geometry | str]:
    """Symmetric 0/1 adjacency of lattice neighbours within each slide, and the geometry used.

    Neighbours are the spots one pitch apart on the lattice given by the array coordinates
    (:func:`~sepal_tl._geometry.lattice_positions`): the 6 surrounding spots on Visium's hex grid, the 4
    edge-sharing spots on legacy ST's square grid — the graph squidpy's grid builder
    (``spatial_neighbors_grid`` with ``n_neighs=6`` / ``4``) gives on a full lattice, but exact on every layout
    (squidpy's k-nearest search also fails on slides of fewer than ``n_neighs + 1`` spots). Using array
    coordinates rather than pixels keeps the graph exact when pixel positions are jittered.

    Spots of different slides are never connected: slides are told apart by ``libraries`` and, whatever it
    says, by ``obs["library_id"]`` when that column exists. With ``geometry="auto"`` the lattice is inferred
    per slide, so hex and square slides can be mixed; the geometry returned is then ``"hex"``, ``"square"`` or
    ``"mixed"``. Two spots of one slide at the same array position raise ``ValueError``.
    """
    coords = check_array_coords(adata)
    groups = _slide_groups(adata, libraries)
    check_unique_positions(coords, groups, names=adata.obs_names)
    rows, cols, found = [], [], set()
    for code in np.unique(groups):
        idx = np.flatnonzero(groups == code)
        geom = resolve_geometry(geometry, coords[idx] if idx.size > 1 or geometry != "auto" else coords)
        if idx.size > 1:
            found.add(geom)
        pairs = cKDTree(lattice_positions(coords[idx], geom)).query_pairs(1.0 + 1e-6, output_type="ndarray")
        rows.append(idx[pairs[:, 0]])
        cols.append(idx[pairs[:, 1]])
    src = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    dst = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    n = adata.n_obs
    adjacency = sparse.csr_matrix(
        (np.ones(2 * src.size, dtype=np.float32), (np.concatenate([src, dst]), np.concatenate([dst, src]))),
        shape=(n, n),
    )
    adjacency.sort_indices()
    if not found:  # no slide has two spots: report what the whole data suggest
        found.add(resolve_geometry(geometry, coords))
    return adjacency, found.pop() if len(found) == 1 else MIXED
