"""The slide's spatial neighbour graph on the spot lattice."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from scipy.spatial import cKDTree

from sepal_tl._geometry import Geometry, lattice_positions, resolve_geometry
from sepal_tl._validation import check_array_coords


def lattice_graph(
    adata: AnnData, libraries: pd.Series, *, geometry: str = "auto"
) -> tuple[sparse.csr_matrix, Geometry]:
    """Symmetric 0/1 adjacency of lattice neighbours within each slide, and the geometry used.

    Neighbours are the spots one pitch apart on the lattice given by the array coordinates
    (:func:`~sepal_tl._geometry.lattice_positions`): the 6 surrounding spots on Visium's hex grid, the 4
    edge-sharing spots on legacy ST's square grid — the graph squidpy's grid builder
    (``spatial_neighbors_grid`` with ``n_neighs=6`` / ``4``) gives on a full lattice, but exact on every layout
    (squidpy's k-nearest search also fails on slides of fewer than ``n_neighs + 1`` spots). Using array
    coordinates rather than pixels keeps the graph exact when pixel positions are jittered. Spots of different
    slides are never connected.
    """
    coords = check_array_coords(adata)
    geom = resolve_geometry(geometry, coords)
    positions = lattice_positions(coords, geom)
    codes = pd.Categorical(libraries.to_numpy()).codes
    rows, cols = [], []
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        pairs = cKDTree(positions[idx]).query_pairs(1.0 + 1e-6, output_type="ndarray")
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
    return adjacency, geom
