import numpy as np
import pytest
from _helpers import assert_unchanged_after_error, grid_adata, square_coords

import sepal_tl as sepal


def _square_adata(values, n_rows=4, n_cols=4, library=None):
    adata = grid_adata(np.zeros_like(values), square_coords(n_rows, n_cols), library=library, layer="denoised")
    adata.layers["denoised"] = np.asarray(values, dtype=np.float32)
    return adata


def test_closed_form_cases():
    coords = square_coords(4, 4)
    checkerboard = ((coords[:, 0] + coords[:, 1]) % 2).astype(float)
    stripes = (coords[:, 1] % 2).astype(float)
    adata = _square_adata(np.column_stack([checkerboard, stripes, np.zeros(16)]))
    # add a non-constant third gene so all genes are defined: a rank-one gradient along the rows
    adata.layers["denoised"][:, 2] = coords[:, 0]
    sepal.pp.select_genes(adata, n_top=1)
    moran = adata.var["moran_i"].to_numpy()
    # Row-normalised rook weights: I = (1/n) sum_i z_i sum_j w_ij z_j / var.
    # Checkerboard: every neighbour has the opposite sign -> I = -1.
    assert moran[0] == pytest.approx(-1.0)
    # Stripes on a 4x4 grid: corners 0, interior 0, 4 top/bottom edge spots -1/3, 4 left/right edge spots +1/3 -> 0.
    assert moran[1] == pytest.approx(0.0, abs=1e-12)
    # Row gradient z = (-1.5,-0.5,0.5,1.5) per row, sum z^2 = 4*5 = 20. Per spot sum_j w_ij z_j:
    # row 0 (z=-1.5): corners (2 nbrs) -> (-1.5-0.5)/2 = -1, edges (3 nbrs) -> (-1.5-1.5-0.5)/3 = -7/6
    # row 1 (z=-0.5): corners (-0.5-1.5+0.5)/3 = -0.5, interior (-0.5-0.5-1.5+0.5)/4 = -0.5
    # numerator = 2*(-1.5)*(2*-1 + 2*-7/6) + 2*(-0.5)*(4*-0.5) = 2*1.5*(13/3) + 2 = 15 -> I = 15/20
    assert moran[2] == pytest.approx(0.75)
    assert adata.var["highly_spatial"].tolist() == [False, False, True]
    assert adata.obsp["sepal_connectivities"].sum(axis=1).A1.tolist()[:5] == [2, 3, 3, 2, 3]


def test_ranking_on_chosen_slides_only():
    coords = square_coords(4, 4)
    gradient = coords[:, 0].astype(float)
    noise = np.random.default_rng(0).random(16)
    # gene 0 is patterned on slide a and noise on slide b; gene 1 the opposite
    values = np.vstack([np.column_stack([gradient, noise]), np.column_stack([noise, gradient])])
    adata = grid_adata(
        np.zeros((32, 2)), np.vstack([coords, coords]), library=["a"] * 16 + ["b"] * 16, layer="denoised"
    )
    adata.layers["denoised"] = values.astype(np.float32)
    on_a = sepal.pp.select_genes(adata, n_top=1, slides=["a"], copy=True)
    on_b = sepal.pp.select_genes(adata, n_top=1, slides=["b"], copy=True)
    assert on_a.var_names[on_a.var["highly_spatial"]].tolist() == ["g0"]
    assert on_b.var_names[on_b.var["highly_spatial"]].tolist() == ["g1"]
    assert list(on_a.varm["moran_i_per_slide"].columns) == ["a"]
    both = sepal.pp.select_genes(adata, n_top=2, subset=True, copy=True)
    assert both.n_vars == 2
    np.testing.assert_allclose(both.var["moran_i"], both.varm["moran_i_per_slide"].mean(axis=1))


def test_constant_gene_on_one_slide_is_averaged_over_the_others():
    coords = square_coords(4, 4)
    gradient = coords[:, 0].astype(float)
    values = np.vstack([np.column_stack([gradient, gradient]), np.column_stack([np.ones(16), gradient])])
    adata = grid_adata(
        np.zeros((32, 2)), np.vstack([coords, coords]), library=["a"] * 16 + ["b"] * 16, layer="denoised"
    )
    adata.layers["denoised"] = values.astype(np.float32)
    sepal.pp.select_genes(adata, n_top=1)
    assert adata.var["moran_i"].tolist() == pytest.approx([0.75, 0.75])


def test_bad_inputs():
    adata = _square_adata(np.random.default_rng(0).random((16, 3)))
    assert_unchanged_after_error(adata, ValueError, "larger than the 3 genes", sepal.pp.select_genes, n_top=4)
    assert_unchanged_after_error(adata, ValueError, "slides=", sepal.pp.select_genes, n_top=1, slides=["x"])
    assert_unchanged_after_error(
        adata, KeyError, "library_key='batch'", sepal.pp.select_genes, n_top=1, library_key="batch"
    )
    assert_unchanged_after_error(adata, ValueError, "geometry=", sepal.pp.select_genes, n_top=1, geometry="tri")


@pytest.mark.parametrize("geometry", ["hex", "square"])
def test_lattice_graph_matches_squidpy_grid_builder(geometry):
    from sepal_tl._compat import import_squidpy
    from sepal_tl._geometry import lattice_positions
    from sepal_tl._graph import lattice_graph
    from sepal_tl._validation import resolve_libraries

    coords = square_coords(10, 14)
    if geometry == "hex":
        coords = coords[coords.sum(1) % 2 == 0]
    coords = coords[np.random.default_rng(0).random(len(coords)) < 0.9]  # a few holes, like real slides
    adata = grid_adata(np.zeros((len(coords), 1)), coords)
    ours, geom = lattice_graph(adata, resolve_libraries(adata, None))
    assert geom == geometry
    adata.obsm["lattice"] = lattice_positions(coords, geom)
    sq = import_squidpy()
    theirs = sq.gr.spatial_neighbors_grid(
        adata, spatial_key="lattice", n_neighs=6 if geometry == "hex" else 4, copy=True
    )
    theirs = (theirs.connectivities + theirs.connectivities.T) > 0
    assert (ours != theirs).nnz == 0


def test_lattice_graph_on_tiny_and_separate_slides():
    from sepal_tl._graph import lattice_graph
    from sepal_tl._validation import resolve_libraries

    coords = np.array([[0, 0], [0, 1], [5, 5], [0, 0], [0, 1]])
    adata = grid_adata(np.zeros((5, 1)), coords, library=["a", "a", "a", "b", "b"])
    graph, _ = lattice_graph(adata, resolve_libraries(adata, "library_id"))
    assert sorted(zip(*graph.nonzero(), strict=True)) == [(0, 1), (1, 0), (3, 4), (4, 3)]


def test_graph_key_and_reference_graph():
    coords = square_coords(5, 5)
    adata = _square_adata(np.column_stack([coords[:, 0], coords[:, 1] % 2]).astype(float), n_rows=5, n_cols=5)
    adata.obsm["spatial"] = coords[:, ::-1] * 272.0 + 100  # legacy ST: x = column, y = row, 272 px pitch
    own = np.eye(25)
    adata.obsp["spatial_connectivities"] = own
    sepal.pp.select_genes(adata, n_top=1)
    np.testing.assert_array_equal(adata.obsp["spatial_connectivities"], own)  # a squidpy graph is kept
    lattice_i = adata.var["moran_i"].to_numpy()
    # the authors' graph: squidpy's grid builder with 8 neighbours on pixels = the Moore neighbourhood
    sepal.pp.select_genes(adata, n_top=1, graph="reference", connectivities_key="spatial_connectivities")
    degree = adata.obsp["spatial_connectivities"].sum(axis=1).A1.reshape(5, 5)
    assert degree[2, 2] == 8 and degree[0, 0] == 3 and degree[0, 2] == 5
    assert adata.uns["sepal"]["pp"]["select_genes"]["graph"] == "reference"
    # row gradient: Moran's I on the Moore graph (diagonals too) differs from the 4-neighbour lattice's
    assert adata.var["moran_i"].iloc[0] != pytest.approx(lattice_i[0])
    del adata.obsp["sepal_connectivities"]
    sepal.pp.select_genes(adata, n_top=1, connectivities_key=None)
    assert "sepal_connectivities" not in adata.obsp
    assert_unchanged_after_error(adata, ValueError, "graph=", sepal.pp.select_genes, n_top=1, graph="knn")
