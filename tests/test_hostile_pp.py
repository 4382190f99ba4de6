"""Hostile preprocessing input: edge sizes, string thresholds, duplicated names and positions, stale counts,
mixed lattices. Each refusal leaves the AnnData as it was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _helpers import assert_unchanged_after_error, grid_adata, square_coords

import sepal_tl as sepal
from sepal_tl._graph import lattice_graph
from sepal_tl._validation import resolve_libraries


@pytest.fixture(scope="module")
def raw():
    return sepal.datasets.synthetic(n_slides=2, n_spots=60, n_genes=30, random_state=0)


@pytest.fixture
def adata(raw):
    return raw.copy()


THRESHOLDS = ["min_counts_spot", "max_counts_spot", "min_counts_gene", "max_counts_gene", "min_frac_slide"]


@pytest.mark.parametrize("name", THRESHOLDS)
@pytest.mark.parametrize("value", ["100", "0.5", True, [1]])
def test_filter_thresholds_must_be_numbers(adata, name, value):
    assert_unchanged_after_error(adata, TypeError, name, sepal.pp.filter, **{name: value})


@pytest.mark.parametrize("name", THRESHOLDS)
def test_run_overrides_must_be_numbers(adata, name):
    assert_unchanged_after_error(adata, TypeError, name, sepal.pp.run, preset="synthetic", **{name: "100"})


@pytest.mark.parametrize("func", [sepal.pp.filter, lambda a: sepal.pp.run(a, preset="synthetic")])
@pytest.mark.parametrize("shape", [(0, None), (None, 0)], ids=["no-spots", "no-genes"])
def test_empty_data_is_refused(raw, func, shape):
    empty = raw[: shape[0], : shape[1]].copy()
    assert_unchanged_after_error(empty, ValueError, "at least one spot and one gene", func)


def test_one_spot_slide_gets_a_clear_error(raw):
    one = raw[:1].copy()
    assert_unchanged_after_error(one, ValueError, "slide0", sepal.pp.run, preset="synthetic")


def test_duplicated_gene_names_are_refused(adata):
    names = list(adata.var_names)
    names[3] = names[0]
    adata.var_names = names
    assert_unchanged_after_error(adata, ValueError, "var_names_make_unique", sepal.pp.run, preset="synthetic")


def test_select_genes_refuses_duplicated_names():
    values = np.random.default_rng(0).random((16, 4)).astype(np.float32)
    adata = grid_adata(values, square_coords(4, 4), genes=["a", "b", "a", "c"], layer="denoised")
    assert_unchanged_after_error(adata, ValueError, r"\['a'\]", sepal.pp.select_genes, n_top=1)


@pytest.mark.parametrize("edit", ["scaled", "subset", "zeros"])
def test_stale_counts_layer_is_refused(adata, edit):
    counts = adata.layers["counts"].copy()
    if edit == "scaled":
        counts = counts * 2
    elif edit == "zeros":
        counts = counts * 0
    else:
        adata.X = adata.X.copy()
        adata.X[0, 0] = adata.X[0, 0] + 1
    adata.layers["counts"] = counts
    assert_unchanged_after_error(
        adata, ValueError, "layers\\['counts'\\] differs from adata.X", sepal.pp.run, preset="synthetic"
    )


def test_multi_slide_data_without_a_slide_column(adata):
    del adata.obs["library_id"]
    with pytest.raises((KeyError, ValueError), match="library"):
        sepal.pp.run(adata, preset="synthetic", n_top=5)


def test_denoise_with_many_radii_works(adata):
    sepal.pp.tpm(adata)
    sepal.pp.log2p(adata)
    sepal.pp.denoise(adata, n_radii=12)
    assert np.isfinite(adata.layers["denoised"]).all()


# ----------------------------------------------------------------------------------------------------- graphs


def _hex_coords(n_rows: int, n_cols: int) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    return np.column_stack([rows.ravel(), 2 * cols.ravel() + rows.ravel() % 2])


def _two_slides(first: np.ndarray, second: np.ndarray, *, n_genes: int = 2):
    coords = np.vstack([first, second])
    labels = ["hex"] * len(first) + ["square"] * len(second)
    return grid_adata(np.ones((len(coords), n_genes)), coords, library=labels)


def test_mixed_hex_and_square_slides_get_their_own_lattice():
    adata = _two_slides(_hex_coords(4, 4), square_coords(4, 4))
    adjacency, geometry = lattice_graph(adata, resolve_libraries(adata, "library_id"))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    assert geometry == "mixed"
    assert degree[:16].max() == 6 and degree[:16].min() >= 2  # hex slide: 6 neighbours inside
    assert degree[16:].max() == 4 and degree[16:].min() == 2  # square slide: 4 inside, 2 at corners
    assert adjacency[:16, 16:].nnz == 0


@pytest.mark.parametrize("library_key", [None, "library_id", "batch"])
def test_slides_are_never_joined_whatever_library_key(library_key):
    """Two copies of one slide side by side in array coordinates: no edge may cross, even with library_key=None."""
    first = square_coords(3, 3)
    second = first + np.array([0, 3])  # columns 3-5: lattice-adjacent to the first slide's column 2
    adata = _two_slides(first, second)
    adata.obs["batch"] = "one batch"
    if library_key is None:  # refused up front: obs['library_id'] says there are two slides
        with pytest.raises(KeyError, match="library_key"):
            resolve_libraries(adata, None)
        libraries = pd.Series(pd.Categorical(["slide"] * adata.n_obs), index=adata.obs_names)
    else:
        libraries = resolve_libraries(adata, library_key)
    adjacency, _ = lattice_graph(adata, libraries)
    assert adjacency[:9, 9:].nnz == 0


def test_duplicated_positions_within_a_slide_are_refused():
    coords = square_coords(3, 3)
    coords[4] = coords[0]
    adata = grid_adata(np.ones((9, 2)), coords, library=["a"] * 9)
    with pytest.raises(ValueError, match="share an array position"):
        lattice_graph(adata, resolve_libraries(adata, "library_id"))


def test_same_positions_on_two_named_slides_are_fine():
    coords = np.vstack([square_coords(3, 3), square_coords(3, 3)])
    adata = grid_adata(np.ones((18, 2)), coords, library=["a"] * 9 + ["b"] * 9)
    adjacency, geometry = lattice_graph(adata, resolve_libraries(adata, "library_id"))
    assert geometry == "square" and adjacency.nnz == 2 * 2 * 12


@pytest.mark.parametrize("n_spots", [0, 1, 2])
def test_tiny_slides_build_a_graph(n_spots):
    adata = grid_adata(np.ones((n_spots, 2)), square_coords(1, 2)[:n_spots], library=["a"] * n_spots)
    adjacency, _ = lattice_graph(adata, resolve_libraries(adata, "library_id"))
    assert adjacency.shape == (n_spots, n_spots) and adjacency.nnz == (2 if n_spots == 2 else 0)


def test_select_genes_on_mixed_lattices():
    values = np.random.default_rng(0).random((32, 3)).astype(np.float32)
    mixed = _two_slides(_hex_coords(4, 4), square_coords(4, 4), n_genes=3)
    mixed.layers["denoised"] = values
    sepal.pp.select_genes(mixed, n_top=2)
    assert mixed.var["highly_spatial"].sum() == 2
