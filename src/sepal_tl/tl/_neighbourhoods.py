"""m-hop neighbourhoods of every spot, and batches of the subgraphs they induce, built by index.

The reference implementation stores one PyG ``Data`` object per spot holding copies of the features of all
its neighbours (about 7x the data for 1 hex hop, 37x for 3 hops). Here a neighbourhood is only a list of
spot indices; a batch of subgraphs carries ``node_index`` so that the model gathers node features as
``embeddings[node_index]`` and memory stays O(spots) in features.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy import sparse

#: Neighbourhood radii (in hops) the method was designed and swept for.
ALLOWED_HOPS = (1, 2, 3)


@dataclass(frozen=True, eq=False)
class Neighbourhoods:
    """The m-hop neighbourhood of every spot, stored CSR-style.

    Spot ``i``'s node list is ``nodes[indptr[i]:indptr[i + 1]]``: ``i`` itself first, then every other spot
    within ``n_hops`` hops in increasing index order. Only int64 indices are stored, never features.

    Attributes
    ----------
    indptr
        ``(n_spots + 1,)`` start of each spot's list in ``nodes``.
    nodes
        Concatenated node lists.
    n_hops
        Radius of the neighbourhoods, in hops.
    """

    indptr: np.ndarray
    nodes: np.ndarray
    n_hops: int

    @property
    def n_spots(self) -> int:
        """Number of spots (neighbourhoods)."""
        return self.indptr.size - 1

    @property
    def sizes(self) -> np.ndarray:
        """Number of nodes, centre included, of each neighbourhood."""
        return np.diff(self.indptr)

    def __len__(self) -> int:
        return self.n_spots

    def __getitem__(self, spot: int) -> np.ndarray:
        """Node list of one spot, centre first."""
        return self.nodes[self.indptr[spot] : self.indptr[spot + 1]]

    @functools.cached_property
    def adjacency(self) -> sparse.csr_matrix:
        """The binarised m-hop adjacency these neighbourhoods came from (no diagonal), rebuilt from the lists."""
        n = self.n_spots
        keep = np.ones(self.nodes.size, dtype=bool)
        keep[self.indptr[:-1]] = False  # drop each list's centre
        matrix = sparse.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), self.nodes[keep], self.indptr - np.arange(n + 1)),
            shape=(n, n),
        )
        matrix.has_sorted_indices = True
        return matrix


class SubgraphBatch(NamedTuple):
    """A batch of neighbourhood subgraphs, in PyG's batching conventions.

    Attributes
    ----------
    node_index
        ``(n_nodes,)`` global spot index of every node; graph ``g`` owns ``node_index[ptr[g]:ptr[g + 1]]``,
        its centre first. Gather node features with ``embeddings[node_index]``.
    edge_index
        ``(2, n_edges)`` local edges (indices into ``node_index``), both directions, grouped by graph.
    batch
        ``(n_nodes,)`` graph id of every node.
    ptr
        ``(n_graphs + 1,)`` start of each graph; the centres are the nodes ``ptr[:-1]``.
    offsets
        ``(n_nodes, 2)`` array ``(row, col)`` offset of every node from its graph's centre.
    """

    node_index: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    ptr: torch.Tensor
    offsets: torch.Tensor

    @property
    def centres(self) -> torch.Tensor:
        """Global spot index of each graph's centre."""
        return self.node_index[self.ptr[:-1]]

    @property
    def num_graphs(self) -> int:
        """Number of graphs in the batch."""
        return self.ptr.numel() - 1


def _check_hops(n_hops: int) -> int:
    if isinstance(n_hops, bool) or not isinstance(n_hops, int | np.integer) or n_hops not in ALLOWED_HOPS:
        msg = f"n_hops={n_hops!r} is not supported; use an integer from {ALLOWED_HOPS[0]} to {ALLOWED_HOPS[-1]}."
        raise ValueError(msg)
    return int(n_hops)


def _check_square(adjacency: sparse.spmatrix | sparse.sparray, what: str) -> sparse.csr_matrix:
    if not sparse.issparse(adjacency) or adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
        msg = f"{what} must be a square scipy sparse matrix (spots x spots), got {type(adjacency).__name__}."
        raise ValueError(msg)
    return sparse.csr_matrix(adjacency)


def hop_adjacency(adjacency: sparse.spmatrix | sparse.sparray, n_hops: int) -> sparse.csr_matrix:
    """Binarised m-hop adjacency ``bin(A + A^2 + ... + A^m)`` with the diagonal removed.

    Parameters
    ----------
    adjacency
        Spots x spots adjacency (any non-zero entry is an edge), e.g. from
        :func:`sepal_tl._graph.lattice_graph`. A symmetric input gives a symmetric output.
    n_hops
        Neighbourhood radius m, 1, 2 or 3.

    Returns
    -------
    ``float32`` CSR 0/1 matrix with sorted indices: entry ``(i, j)`` is 1 when ``j != i`` is reachable
    from ``i`` in at most ``n_hops`` steps.
    """
    n_hops = _check_hops(n_hops)
    base = _check_square(adjacency, "adjacency").astype(np.float32)
    base.eliminate_zeros()
    base.data[:] = 1.0
    reach = base.copy()
    # Binarise after every product so that path counts never grow.
    for _ in range(n_hops - 1):
        reach = (reach + reach @ base).tocsr()
        reach.data[:] = 1.0
    reach = reach.tocoo()
    off_diagonal = reach.row != reach.col
    reach = sparse.csr_matrix(
        (reach.data[off_diagonal], (reach.row[off_diagonal], reach.col[off_diagonal])), shape=base.shape
    )
    reach.sum_duplicates()  # canonical: sorted indices, no duplicates
    reach.data[:] = 1.0
    return reach


def hop_neighbourhoods(adjacency: sparse.spmatrix | sparse.sparray, n_hops: int) -> Neighbourhoods:
    """Every spot's m-hop neighbourhood, centre first, then the others in increasing index order.

    Matches the node sets of the reference (docs/differences.md, "The neighbourhoods come from the exact lattice
    graph"): ``[i] + sorted(nonzero(A_m[i]))`` with ``A_m = bin(A + ... + A^m)`` minus the diagonal. Spots of different
    slides are never neighbours when the adjacency has no cross-slide edges (as :func:`sepal_tl._graph.lattice_graph`
    guarantees).

    Parameters
    ----------
    adjacency
        Spots x spots adjacency; any non-zero entry is an edge.
    n_hops
        Neighbourhood radius m: 1, 2 or 3 (the reference's sweep). An interior spot has 6, 18 and 36
        neighbours on Visium's hex lattice and 4, 12 and 24 on legacy ST's 4-neighbour square lattice.

    Returns
    -------
    :class:`Neighbourhoods` holding only int64 indices, ``n_spots + nnz(A_m)`` of them.
    """
    reach = hop_adjacency(adjacency, n_hops)
    n = reach.shape[0]
    indptr = reach.indptr.astype(np.int64) + np.arange(n + 1, dtype=np.int64)
    nodes = np.empty(indptr[-1], dtype=np.int64)
    is_centre = np.zeros(indptr[-1], dtype=bool)
    is_centre[indptr[:-1]] = True
    nodes[is_centre] = np.arange(n, dtype=np.int64)
    nodes[~is_centre] = reach.indices
    return Neighbourhoods(indptr=indptr, nodes=nodes, n_hops=n_hops)


def collate_subgraphs(
    neigh: Neighbourhoods,
    centres: np.ndarray | torch.Tensor,
    *,
    adjacency_m: sparse.spmatrix | sparse.sparray | None = None,
    array_coords: np.ndarray,
) -> SubgraphBatch:
    """Batch the neighbourhood subgraphs of ``centres`` by index, without touching any node features.

    Each graph is the subgraph of ``adjacency_m`` induced by the centre's node list (docs/method.md, "The model",
    Neighbourhoods): any two of its nodes that are adjacent in ``adjacency_m`` are connected, not only the edges of a
    breadth-first tree. All graphs are built at once with vectorised numpy (no loop over graphs).

    Parameters
    ----------
    neigh
        Neighbourhoods from :func:`hop_neighbourhoods`.
    centres
        ``(batch,)`` integer indices of the centre spots, in the order the graphs should appear.
    adjacency_m
        Adjacency whose induced subgraphs give the edges; defaults to the binarised m-hop adjacency of
        ``neigh`` (as :func:`hop_adjacency` returns it), which is what the reference uses. Pass the 1-hop
        adjacency instead to keep only lattice edges.
    array_coords
        ``(n_spots, 2)`` integer array ``(row, col)`` coordinates, used for the offsets.

    Returns
    -------
    :class:`SubgraphBatch` of int64 tensors.
    """
    centres = np.asarray(centres.detach().cpu() if isinstance(centres, torch.Tensor) else centres)
    if centres.ndim != 1 or (centres.size and not np.issubdtype(centres.dtype, np.integer)):
        msg = "centres must be a 1-D array of integer spot indices."
        raise ValueError(msg)
    centres = centres.astype(np.int64)
    n = neigh.n_spots
    if centres.size and (centres.min() < 0 or centres.max() >= n):
        msg = f"centres must index the {n} spots (0..{n - 1})."
        raise IndexError(msg)
    array_coords = np.asarray(array_coords)
    if array_coords.shape != (n, 2):
        msg = f"array_coords must have shape ({n}, 2), got {array_coords.shape}."
        raise ValueError(msg)
    if adjacency_m is None:
        adjacency_m = neigh.adjacency
    else:
        adjacency_m = _check_square(adjacency_m, "adjacency_m")
        if adjacency_m.shape[0] != n:
            msg = f"adjacency_m has {adjacency_m.shape[0]} spots but the neighbourhoods have {n}."
            raise ValueError(msg)

    # Nodes: each centre's list, concatenated.
    starts = neigh.indptr[centres]
    sizes = neigh.indptr[centres + 1] - starts
    ptr = np.zeros(centres.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=ptr[1:])
    batch = np.repeat(np.arange(centres.size, dtype=np.int64), sizes)
    local = np.arange(ptr[-1], dtype=np.int64) - ptr[batch]
    node_index = neigh.nodes[starts[batch] + local]

    # Edges: every ordered pair (a, b), a != b, of nodes of the same graph that is an edge of adjacency_m.
    pair_ptr = np.zeros(centres.size + 1, dtype=np.int64)
    np.cumsum(sizes * sizes, out=pair_ptr[1:])
    pair_graph = np.repeat(np.arange(centres.size, dtype=np.int64), sizes * sizes)
    q = np.arange(pair_ptr[-1], dtype=np.int64) - pair_ptr[pair_graph]
    size = sizes[pair_graph]
    src = ptr[pair_graph] + q // size
    dst = ptr[pair_graph] + q % size
    off_diagonal = src != dst
    src, dst = src[off_diagonal], dst[off_diagonal]
    if src.size:
        # scipy looks each (row, col) up by binary search in the row's sorted indices.
        linked = np.asarray(adjacency_m[node_index[src], node_index[dst]]).ravel() != 0
        src, dst = src[linked], dst[linked]

    offsets = array_coords[node_index] - array_coords[node_index[ptr[:-1]]][batch]
    return SubgraphBatch(
        node_index=torch.from_numpy(node_index),
        edge_index=torch.from_numpy(np.stack([src, dst]).astype(np.int64)),
        batch=torch.from_numpy(batch),
        ptr=torch.from_numpy(ptr),
        offsets=torch.from_numpy(offsets.astype(np.int64)),
    )
