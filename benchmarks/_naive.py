"""Plain reference implementations the benchmarks compare against (same results, written the obvious way)."""

from __future__ import annotations

import warnings

import numpy as np
import torch


def loop_median_filter(x: np.ndarray, coords: np.ndarray, n_radii: int = 7) -> np.ndarray:
    """The spec's adaptive median filter written plainly: a Python loop over spots, numpy over genes."""
    d2 = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    radii = np.unique(d2[d2 > 0])[:n_radii]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-zero genes: median of an empty set
        fallback = np.nan_to_num(np.nanmedian(np.where(x != 0, x, np.nan), axis=0), nan=0.0)
    out = x.copy()
    for i in range(x.shape[0]):
        todo = x[i] == 0
        if not todo.any():
            continue
        value = fallback.copy()
        found = np.zeros(x.shape[1], dtype=bool)
        for r2 in radii:
            med = np.median(x[d2[i] <= r2], axis=0)
            new = (med != 0) & ~found
            value[new] = med[new]
            found |= new
            if found[todo].all():
                break
        out[i, todo] = value[todo]
    return out


def per_spot_graphs(embeddings: np.ndarray, neighbourhoods, coords: np.ndarray) -> list:
    """The reference's batching: one PyG ``Data`` per spot with its own copy of every node's features."""
    from torch_geometric.data import Data

    graphs = []
    adjacency = neighbourhoods.adjacency
    for spot in range(neighbourhoods.n_spots):
        nodes = neighbourhoods[spot]
        sub = adjacency[nodes][:, nodes].tocoo()
        graphs.append(
            Data(
                x=torch.as_tensor(embeddings[nodes]),
                edge_index=torch.as_tensor(np.vstack([sub.row, sub.col]), dtype=torch.long),
                offsets=torch.as_tensor(coords[nodes] - coords[spot]),
            )
        )
    return graphs
