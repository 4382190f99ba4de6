import numpy as np
import pandas as pd
import pytest
import torch
from _helpers import square_coords
from anndata import AnnData
from scipy import sparse

from sepal_tl._graph import lattice_graph
from sepal_tl._validation import resolve_libraries
from sepal_tl.tl._neighbourhoods import (
    Neighbourhoods,
    collate_subgraphs,
    hop_adjacency,
    hop_neighbourhoods,
)


def hex_coords(n_rows: int, n_cols: int) -> np.ndarray:
    """Visium-style array coordinates of a full hex lattice (array_row + array_col even)."""
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    keep = (rows + cols) % 2 == 0
    return np.column_stack([rows[keep], cols[keep]])


def adjacency_of(coords: np.ndarray, library: list[str] | None = None):
    obs = pd.DataFrame(
        {"array_row": coords[:, 0], "array_col": coords[:, 1]}, index=[f"s{i}" for i in range(len(coords))]
    )
    if library is not None:
        obs["library_id"] = pd.Categorical(library)
    adata = AnnData(obs=obs)
    adjacency, _ = lattice_graph(adata, resolve_libraries(adata, "library_id"))
    return adjacency


def hops(a: np.ndarray, b: np.ndarray, geometry: str) -> np.ndarray:
    """Lattice distance in hops on a full lattice (a shortest path stays in the two spots' bounding box).

    Hex (doubled columns): each step moves (0, ±2) or (±1, ±1), so d = drow + max(0, (dcol - drow) / 2).
    Square (4 neighbours): Manhattan distance.
    """
    drow, dcol = np.abs(a[..., 0] - b[..., 0]), np.abs(a[..., 1] - b[..., 1])
    if geometry == "hex":
        return drow + np.maximum(0, (dcol - drow) // 2)
    return drow + dcol


LATTICES = {"hex": hex_coords(13, 26), "square": square_coords(11, 11)}


def index_of(coords: np.ndarray, row: int, col: int) -> int:
    return int(np.flatnonzero((coords[:, 0] == row) & (coords[:, 1] == col))[0])


@pytest.mark.parametrize(("geometry", "expected"), [("hex", (6, 18, 36)), ("square", (4, 12, 24))])
def test_interior_neighbourhood_sizes(geometry, expected):
    coords = LATTICES[geometry]
    centre = index_of(coords, 6, 12) if geometry == "hex" else index_of(coords, 5, 5)
    adjacency = adjacency_of(coords)
    for n_hops, n_neighbours in zip((1, 2, 3), expected, strict=True):
        neigh = hop_neighbourhoods(adjacency, n_hops)
        assert neigh[centre].size == n_neighbours + 1
        assert neigh[centre][0] == centre


def test_one_hop_lists_by_hand():
    hexagonal = LATTICES["hex"]
    neigh = hop_neighbourhoods(adjacency_of(hexagonal), 1)
    centre = index_of(hexagonal, 4, 6)
    ring = sorted(index_of(hexagonal, r, c) for r, c in [(3, 5), (3, 7), (4, 4), (4, 8), (5, 5), (5, 7)])
    assert neigh[centre].tolist() == [centre, *ring]

    square = LATTICES["square"]
    neigh = hop_neighbourhoods(adjacency_of(square), 1)
    centre = index_of(square, 2, 2)
    ring = sorted(index_of(square, r, c) for r, c in [(1, 2), (2, 1), (2, 3), (3, 2)])
    assert neigh[centre].tolist() == [centre, *ring]
    corner = index_of(square, 0, 0)
    assert neigh[corner].tolist() == [corner, index_of(square, 0, 1), index_of(square, 1, 0)]


@pytest.mark.parametrize("geometry", ["hex", "square"])
@pytest.mark.parametrize("n_hops", [1, 2, 3])
def test_every_neighbourhood_matches_lattice_distance(geometry, n_hops):
    coords = LATTICES[geometry]
    neigh = hop_neighbourhoods(adjacency_of(coords), n_hops)
    dist = hops(coords[:, None], coords[None], geometry)
    assert isinstance(neigh, Neighbourhoods) and len(neigh) == len(coords)
    for i in range(len(coords)):
        others = np.flatnonzero((dist[i] <= n_hops) & (np.arange(len(coords)) != i))
        assert neigh[i].tolist() == [i, *others.tolist()]


def test_neighbourhoods_store_only_indices():
    coords = LATTICES["hex"]
    adjacency = adjacency_of(coords)
    neigh = hop_neighbourhoods(adjacency, 2)
    reach = hop_adjacency(adjacency, 2)
    assert neigh.indptr.dtype == neigh.nodes.dtype == np.int64
    assert neigh.nodes.size == len(coords) + reach.nnz
    assert neigh.indptr.shape == (len(coords) + 1,)
    np.testing.assert_array_equal(neigh.sizes, np.asarray(reach.sum(1)).ravel() + 1)
    # The m-hop adjacency rebuilt from the lists is the one they came from.
    assert (neigh.adjacency != reach).nnz == 0
    assert (reach != reach.T).nnz == 0 and reach.diagonal().sum() == 0


def test_no_neighbours_across_slides():
    coords = hex_coords(7, 14)
    n = len(coords)
    both = np.concatenate([coords, coords])
    adjacency = adjacency_of(both, library=["a"] * n + ["b"] * n)
    for n_hops in (1, 2, 3):
        neigh = hop_neighbourhoods(adjacency, n_hops)
        slide = np.repeat([0, 1], n)
        for i in range(2 * n):
            assert (slide[neigh[i]] == slide[i]).all()
        # The second slide is an exact copy of the first, shifted by n.
        for i in range(n):
            assert (neigh[i + n] == neigh[i] + n).all()


def test_isolated_spot_is_its_own_neighbourhood():
    coords = np.array([[0, 0], [0, 2], [10, 10]])
    adjacency = sparse.csr_matrix(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32))
    neigh = hop_neighbourhoods(adjacency, 3)
    assert neigh[0].tolist() == [0, 1] and neigh[1].tolist() == [1, 0]
    assert neigh[2].tolist() == [2]
    batch = collate_subgraphs(neigh, np.array([2]), array_coords=coords)
    assert batch.node_index.tolist() == [2] and batch.edge_index.shape == (2, 0)


@pytest.mark.parametrize("bad", [0, 4, -1, 1.0, True, "1"])
def test_invalid_hops(bad):
    adjacency = adjacency_of(hex_coords(3, 6))
    with pytest.raises(ValueError, match="from 1 to 3"):
        hop_neighbourhoods(adjacency, bad)


def edge_set(batch, graph: int) -> set[tuple[int, int]]:
    start, stop = batch.ptr[graph].item(), batch.ptr[graph + 1].item()
    src, dst = batch.edge_index
    inside = (src >= start) & (src < stop)
    return {(a - start, b - start) for a, b in zip(src[inside].tolist(), dst[inside].tolist(), strict=True)}


def test_induced_one_hop_hex_subgraph_by_hand():
    coords = LATTICES["hex"]
    neigh = hop_neighbourhoods(adjacency_of(coords), 1)
    centre = index_of(coords, 6, 12)
    batch = collate_subgraphs(neigh, np.array([centre]), array_coords=coords)
    assert batch.node_index.numel() == 7
    edges = edge_set(batch, 0)
    # 6 spokes + 6 ring edges = 12 undirected edges, 24 directed.
    assert len(edges) == 24 == batch.edge_index.shape[1]
    assert all((b, a) in edges for a, b in edges) and all(a != b for a, b in edges)
    degree = np.bincount([a for a, _ in edges], minlength=7)
    assert degree.tolist() == [6] + [3] * 6  # centre to all; each ring node to 2 ring neighbours + centre
    # Ring nodes in index order: (5,11), (5,13), (6,10), (6,14), (7,11), (7,13); check the ring by hand.
    ring = {(1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 6)}
    ring |= {(b, a) for a, b in ring}
    assert edges == ring | {(0, k) for k in range(1, 7)} | {(k, 0) for k in range(1, 7)}


@pytest.mark.parametrize(("geometry", "n_hops"), [("hex", 2), ("hex", 3), ("square", 2), ("square", 3)])
def test_induced_edges_connect_all_pairs_within_m_hops(geometry, n_hops):
    coords = LATTICES[geometry]
    neigh = hop_neighbourhoods(adjacency_of(coords), n_hops)
    centres = np.array([0, len(coords) // 2, len(coords) - 1, 17])
    batch = collate_subgraphs(neigh, centres, array_coords=coords)
    for g in range(len(centres)):
        nodes = batch.node_index[batch.ptr[g] : batch.ptr[g + 1]].numpy()
        dist = hops(coords[nodes][:, None], coords[nodes][None], geometry)
        expected = {(a, b) for a, b in zip(*np.nonzero((dist <= n_hops) & (dist > 0)), strict=True)}
        assert edge_set(batch, g) == expected


def test_batch_layout_and_offsets():
    coords = LATTICES["hex"]
    neigh = hop_neighbourhoods(adjacency_of(coords), 2)
    centres = torch.tensor([40, 0, 40, 7])  # a tensor, with a repeated centre
    batch = collate_subgraphs(neigh, centres, array_coords=coords)
    sizes = neigh.sizes[centres.numpy()]
    assert batch.num_graphs == 4
    assert batch.ptr.tolist() == [0, *np.cumsum(sizes).tolist()]
    assert batch.batch.tolist() == np.repeat(np.arange(4), sizes).tolist()
    assert batch.centres.tolist() == centres.tolist()
    assert batch.node_index.numel() == sizes.sum()  # memory: indices only, one per node of each graph
    for g, c in enumerate(centres.tolist()):
        assert batch.node_index[batch.ptr[g] : batch.ptr[g + 1]].tolist() == neigh[c].tolist()
    expected = coords[batch.node_index.numpy()] - coords[centres.numpy()][batch.batch.numpy()]
    np.testing.assert_array_equal(batch.offsets.numpy(), expected)
    assert (batch.offsets[batch.ptr[:-1]] == 0).all()
    src, dst = batch.edge_index
    assert (batch.batch[src] == batch.batch[dst]).all()
    assert all(t.dtype == torch.int64 for t in batch)
    assert edge_set(batch, 0) == edge_set(batch, 2)
    # Features are gathered by index: one row per node, nothing else is materialised.
    embeddings = torch.randn(len(coords), 16)
    assert embeddings[batch.node_index].shape == (sizes.sum(), 16)


def test_explicit_adjacency_restricts_edges():
    coords = LATTICES["square"]
    adjacency = adjacency_of(coords)
    neigh = hop_neighbourhoods(adjacency, 2)
    centre = index_of(coords, 5, 5)
    default = collate_subgraphs(neigh, [centre], array_coords=coords)
    explicit = collate_subgraphs(neigh, [centre], adjacency_m=hop_adjacency(adjacency, 2), array_coords=coords)
    assert edge_set(default, 0) == edge_set(explicit, 0)
    lattice_only = collate_subgraphs(neigh, [centre], adjacency_m=adjacency, array_coords=coords)
    nodes = lattice_only.node_index.numpy()
    dist = hops(coords[nodes][:, None], coords[nodes][None], "square")
    assert edge_set(lattice_only, 0) == {(a, b) for a, b in zip(*np.nonzero(dist == 1), strict=True)}


def test_collate_rejects_bad_input():
    coords = hex_coords(3, 6)
    neigh = hop_neighbourhoods(adjacency_of(coords), 1)
    with pytest.raises(IndexError, match="centres must index"):
        collate_subgraphs(neigh, [len(coords)], array_coords=coords)
    with pytest.raises(ValueError, match="integer"):
        collate_subgraphs(neigh, [0.5], array_coords=coords)
    with pytest.raises(ValueError, match="array_coords"):
        collate_subgraphs(neigh, [0], array_coords=coords[:-1])
    with pytest.raises(ValueError, match="square"):
        hop_neighbourhoods(np.ones((3, 3)), 1)
