"""The slide's spatial neighbour graph, built with squidpy on the spot lattice."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from sepal_tl._compat import import_squidpy
from sepal_tl._geometry import N_NEIGHS, Geometry, lattice_positions, resolve_geometry
from sepal_tl._validation import check_array_coords


def lattice_graph(
    adata: AnnData, libraries: pd.Series, *, geometry: str = "auto"
) -> tuple[sparse.csr_matrix, Geometry]:
    """Symmetric 0/1 adjacency of lattice neighbours within each slide, and the geometry used.

    Built with :func:`squidpy.gr.spatial_neighbors_grid` on the array coordinates mapped to an isotropic lattice
    (:func:`~sepal_tl._geometry.lattice_positions`): 6 neighbours on Visium's hex grid, the 4 edge-sharing
    neighbours on legacy ST's square grid. Using array coordinates rather than pixels makes the graph exact even
    when pixel positions are jittered. Spots of different slides are never connected.
    """
    coords = check_array_coords(adata)
    geom = resolve_geometry(geometry, coords)
    holder = AnnData(
        obs=pd.DataFrame({"library": libraries.to_numpy()}, index=adata.obs_names.copy()),
        obsm={"lattice": lattice_positions(coords, geom)},
    )
    holder.obs["library"] = holder.obs["library"].astype("category")
    sq = import_squidpy()

    # squidpy announces every graph at INFO level through spatialdata's logger; keep our users' console quiet.
    chatty = logging.getLogger("spatialdata._logging")
    level = chatty.level
    chatty.setLevel(max(level, logging.WARNING))
    try:
        result = sq.gr.spatial_neighbors_grid(
            holder, spatial_key="lattice", library_key="library", n_neighs=N_NEIGHS[geom], copy=True
        )
    finally:
        chatty.setLevel(level)
    adjacency = sparse.csr_matrix(result.connectivities, dtype=np.float32)
    adjacency = adjacency.maximum(adjacency.T).tocsr()
    adjacency.data[:] = 1.0
    return adjacency, geom
