import numpy as np
import pytest
from _helpers import assert_unchanged_after_error, grid_adata, square_coords

import sepal_tl as sepal
from sepal_tl.pp._denoise import distinct_squared_radii, median_filter_slide


def _reference_loop(x, coords, n_radii=7):
    """Straightforward per-entry implementation of docs/method.md, "4. Adaptive median filter", for comparison."""
    d2 = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    radii = np.unique(d2[d2 > 0])[:n_radii]
    out = x.copy()
    for g in range(x.shape[1]):
        nonzero = x[:, g][x[:, g] != 0]
        value_if_all_zero = np.median(nonzero) if nonzero.size else 0.0
        for i in range(x.shape[0]):
            if x[i, g] != 0:
                continue
            out[i, g] = value_if_all_zero
            for r in radii:
                med = np.median(x[d2[i] <= r, g])
                if med != 0:
                    out[i, g] = med
                    break
    return out


def test_radii_square_and_hex():
    np.testing.assert_array_equal(distinct_squared_radii(square_coords(6, 6), 7), [1, 2, 4, 5, 8, 9, 10])
    rows, cols = np.meshgrid(np.arange(10), np.arange(20), indexing="ij")
    hexagonal = np.column_stack([rows[(rows + cols) % 2 == 0], cols[(rows + cols) % 2 == 0]])
    np.testing.assert_array_equal(distinct_squared_radii(hexagonal, 7), [2, 4, 8, 10, 16, 18, 20])


def test_square_grid_by_hand():
    # 3x3 legacy-ST grid, one gene. Radii: 1, sqrt2, 2, sqrt5, sqrt8. Non-zero values: 5 at (1,1), 3 at (2,0).
    x = np.array([[0, 0, 0], [0, 5, 0], [3, 0, 0]], dtype=np.float32).reshape(9, 1)
    out, n_fallback, _ = median_filter_slide(x, square_coords(3, 3))
    # (1,0): r=1 window {(1,0),(0,0),(2,0),(1,1)} = [0,0,3,5] -> median 1.5; (2,1) likewise [0,3,0,5] -> 1.5.
    # (0,0), (0,1), (0,2), (1,2), (2,2): every window stays more than half zero -> median of the
    # slide's non-zero values, median(5, 3) = 4.
    expected = np.array([[4, 4, 4], [1.5, 5, 4], [3, 1.5, 4]], dtype=np.float32).reshape(9, 1)
    np.testing.assert_array_equal(out, expected)
    assert n_fallback == 5


def test_hex_grid_by_hand():
    # Visium patch: centre (2,2) and its six neighbours. Index-space radii: sqrt2, 2, sqrt8, sqrt10, 4.
    coords = np.array([[2, 2], [1, 1], [1, 3], [3, 1], [3, 3], [2, 0], [2, 4]])
    x = np.array([0, 2, 4, 0, 6, 0, 0], dtype=np.float32)[:, None]
    out, n_fallback, sq = median_filter_slide(x, coords)
    np.testing.assert_array_equal(sq, [2, 4, 8, 10, 16])
    # centre: r=sqrt2 window = centre + 4 diagonals = [0,2,4,0,6] -> 2
    # (2,0): [0,2,0] -> [0,2,0,0] (r=2) -> same (r=sqrt8) -> [0,2,0,0,4,6] (r=sqrt10) -> (0+2)/2 = 1
    # (3,1): [0,0,0] -> [0,0,0,2,6] -> [0,0,0,2,6,4] (r=sqrt8) -> 1
    # (2,4): [0,4,6] -> 4
    np.testing.assert_array_equal(out[:, 0], [2, 2, 4, 1, 6, 1, 4])
    assert n_fallback == 0


def test_all_zero_gene_stays_zero():
    x = np.zeros((9, 1), dtype=np.float32)
    out, n_fallback, _ = median_filter_slide(x, square_coords(3, 3))
    np.testing.assert_array_equal(out, 0)
    assert n_fallback == 9


@pytest.mark.parametrize("geometry", ["hex", "square", "holes"])
def test_matches_reference_loop(geometry):
    rng = np.random.default_rng(1)
    coords = square_coords(12, 24)
    if geometry == "hex":
        coords = coords[(coords.sum(1) % 2) == 0]
    elif geometry == "holes":
        coords = coords[rng.random(len(coords)) < 0.7]
    x = ((rng.random((len(coords), 30)) < rng.random(30)) * rng.gamma(2, 1, (len(coords), 30))).astype(np.float32)
    out, _, _ = median_filter_slide(x, coords)
    np.testing.assert_array_equal(out, _reference_loop(x, coords))


def test_denoise_per_slide_and_mask():
    # Two slides with identical coordinates: windows must never mix slides.
    coords = np.vstack([square_coords(3, 3), square_coords(3, 3)])
    x = np.zeros((18, 1), dtype=np.float32)
    x[4] = 5  # slide a: centre 5, all else 0 -> fallback median 5 for every zero
    x[9:] = 2  # slide b: all 2 except one zero
    x[13] = 0
    adata = grid_adata(np.where(x > 0, 1, 0), coords, library=["a"] * 9 + ["b"] * 9)
    adata.layers["log1p"] = x
    sepal.pp.denoise(adata, layer="log1p")
    den = adata.layers["denoised"][:, 0]
    np.testing.assert_array_equal(den[:9], 5)
    np.testing.assert_array_equal(den[9:], 2)
    np.testing.assert_array_equal(adata.layers["observed"][:, 0], x[:, 0] > 0)
    info = adata.uns["sepal"]["pp"]["denoise"]
    assert info["imputed_fraction"] == pytest.approx(9 / 18)
    assert info["radii"]["a"][:2] == [1.0, pytest.approx(np.sqrt(2))]
    # the mask layer is named by mask=, the name evaluate / fit_encoder read; the old mask_key= still works
    sepal.pp.denoise(adata, layer="log1p", mask="seen")
    np.testing.assert_array_equal(adata.layers["seen"], adata.layers["observed"])
    with pytest.warns(FutureWarning, match=r"denoise\(mask_key=...\) is deprecated.*use mask="):
        sepal.pp.denoise(adata, layer="log1p", mask_key="seen_before")
    np.testing.assert_array_equal(adata.layers["seen_before"], adata.layers["observed"])


def test_bad_inputs():
    adata = grid_adata(np.ones((4, 2)), square_coords(2, 2), layer="log1p")
    del adata.obs["array_row"]
    assert_unchanged_after_error(adata, KeyError, "array_row", sepal.pp.denoise, layer="log1p")
    adata = grid_adata(np.ones((4, 2)), square_coords(2, 2), layer="log1p")
    adata.layers["log1p"][0, 0] = -1
    assert_unchanged_after_error(adata, ValueError, "negative", sepal.pp.denoise, layer="log1p")
    adata.layers["log1p"][0, 0] = np.nan
    assert_unchanged_after_error(adata, ValueError, "NaN", sepal.pp.denoise, layer="log1p")
    assert_unchanged_after_error(adata, KeyError, "Layer 'tpm2'", sepal.pp.denoise, layer="tpm2")
    assert_unchanged_after_error(adata, ValueError, "n_radii", sepal.pp.denoise, n_radii=0)


def test_denoise_on_scanpy_normalised_data():
    """The brief's call: an AnnData normalised the scanpy way is filtered in X; the mask comes from the counts."""
    import scanpy as sc

    coords = square_coords(3, 3)
    counts = np.zeros((9, 1), dtype=np.float32)
    counts[[0, 1, 3, 5, 7], 0] = 4  # the centre (4) is a zero with 4 non-zero rook neighbours
    adata = grid_adata(counts, coords)
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sepal.pp.denoise(adata)
    info = adata.uns["sepal"]["pp"]["denoise"]
    assert info["layer"] == "None" and info["counts_layer"] == "counts"
    np.testing.assert_array_equal(adata.layers["observed"][:, 0], counts[:, 0] > 0)
    # spot 4's first window (itself + 4 rook neighbours) has 4 of 5 non-zero: its median is the common value
    assert adata.layers["denoised"][4, 0] == pytest.approx(adata.X[0, 0])
    sc.pp.scale(adata)
    assert_unchanged_after_error(adata, ValueError, "adata.X has negative values", sepal.pp.denoise)
