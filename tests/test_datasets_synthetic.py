from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.spatial import cKDTree

import sepal_tl as sepal
from sepal_tl.datasets._synthetic import PROGRAMS, REGIONS


@pytest.fixture(scope="module")
def adata():
    return sepal.datasets.synthetic()


@pytest.fixture(scope="module")
def small():
    return sepal.datasets.synthetic(n_slides=2, n_spots=150, n_genes=60, random_state=3)


def _log_normalised(adata) -> np.ndarray:
    counts = adata.X.toarray()
    depth = counts.sum(axis=1, keepdims=True)
    return np.log1p(counts / depth * np.median(depth))


def _red_optical_density_under_spots(adata) -> np.ndarray:
    """Mean optical density of the red channel over each spot disc, from the stored image alone."""
    feature = np.empty(adata.n_obs)
    for library_id, entry in adata.uns["spatial"].items():
        mask = (adata.obs["library_id"] == library_id).to_numpy()
        image = entry["images"]["hires"].astype(float)
        scale = entry["scalefactors"]["tissue_hires_scalef"]
        radius = entry["scalefactors"]["spot_diameter_fullres"] / 2 * scale
        r = int(np.ceil(radius))
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        inside = dy**2 + dx**2 <= radius**2
        centres = np.rint(adata.obsm["spatial"][mask] * scale).astype(int)
        red = image[centres[:, 1, None] + dy[inside], centres[:, 0, None] + dx[inside], 0]
        feature[mask] = (-np.log((red + 1) / 256)).mean(axis=1)
    return feature


def test_shapes(adata, small):
    assert adata.shape == (3 * 600, 300)
    assert small.shape == (2 * 150, 60)
    assert adata.obs_names.is_unique
    assert adata.var_names.is_unique


def test_reader_layout(adata):
    assert sparse.issparse(adata.X) and adata.X.format == "csr"
    assert adata.X.dtype == np.float32
    assert np.array_equal(adata.X.data, np.round(adata.X.data))
    assert (adata.X.data > 0).all()
    assert (adata.layers["counts"] != adata.X).nnz == 0
    assert adata.layers["counts"] is not adata.X

    obs = adata.obs
    assert isinstance(obs["library_id"].dtype, pd.CategoricalDtype)
    assert obs["library_id"].cat.categories.tolist() == ["slide0", "slide1", "slide2"]
    assert obs["patient"].astype(str).tolist() == ["patient0"] * 1200 + ["patient1"] * 600
    assert obs["array_row"].dtype == np.int64 and obs["array_col"].dtype == np.int64
    assert obs.groupby("library_id", observed=True)["split"].first().astype(str).tolist() == ["train", "val", "test"]
    assert set(obs["region"].astype(str)) == set(REGIONS)

    spatial = adata.obsm["spatial"]
    assert spatial.dtype == np.float64 and spatial.shape == (adata.n_obs, 2)

    assert {"gene_ids", "gene_symbols", "program"} <= set(adata.var.columns)
    assert adata.var["gene_ids"].str.match(r"^ENSG\d{11}$").all()
    assert (adata.var["gene_symbols"] == adata.var_names).all()
    assert set(adata.var["program"].astype(str)) == {*PROGRAMS, "background", "sparse"}

    assert set(adata.uns["spatial"]) == {"slide0", "slide1", "slide2"}
    for entry in adata.uns["spatial"].values():
        hires = entry["images"]["hires"]
        assert hires.dtype == np.uint8 and hires.ndim == 3 and hires.shape[2] == 3
        assert 1000 <= min(hires.shape[:2]) and max(hires.shape[:2]) <= 2000
        lowres = entry["images"]["lowres"]
        assert lowres.dtype == np.uint8 and max(lowres.shape[:2]) == 600
        factors = entry["scalefactors"]
        assert factors["tissue_hires_scalef"] == 1.0
        assert factors["tissue_lowres_scalef"] == pytest.approx(600 / max(hires.shape[:2]))
        assert factors["spot_diameter_fullres"] == pytest.approx(0.55 * 64)
        assert entry["metadata"]["microns_per_pixel"] == pytest.approx(100 / 64)

    params = adata.uns["sepal"]["datasets"]["synthetic"]
    assert params["n_spots"] == 600 and params["random_state"] == 0 and params["gene_names"] == "human"


def test_deterministic():
    kwargs = {"n_slides": 2, "n_spots": 80, "n_genes": 40}
    a = sepal.datasets.synthetic(**kwargs, random_state=7)
    b = sepal.datasets.synthetic(**kwargs, random_state=7)
    c = sepal.datasets.synthetic(**kwargs, random_state=8)
    with pytest.warns(FutureWarning, match=r"synthetic\(seed=...\) is deprecated.*use random_state="):
        old = sepal.datasets.synthetic(**kwargs, seed=7)  # the old name still works, with the same data
    assert (old.X != a.X).nnz == 0
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    for lib in a.uns["spatial"]:
        np.testing.assert_array_equal(
            a.uns["spatial"][lib]["images"]["hires"], b.uns["spatial"][lib]["images"]["hires"]
        )
    assert a.shape == c.shape
    assert (a.X != c.X).nnz > 0
    assert not np.array_equal(
        a.uns["spatial"]["slide0"]["images"]["hires"], c.uns["spatial"]["slide0"]["images"]["hires"]
    )


def test_default_zero_fraction(adata):
    zeros = 1 - adata.X.nnz / np.prod(adata.shape)
    assert 0.40 <= zeros <= 0.50


@pytest.mark.parametrize("target", [0.3, 0.6])
def test_zero_fraction_is_tunable(target):
    data = sepal.datasets.synthetic(n_slides=2, n_spots=200, n_genes=100, zero_fraction=target)
    zeros = 1 - data.X.nnz / np.prod(data.shape)
    assert abs(zeros - target) < 0.04


def test_sparse_genes_and_depth(adata):
    detected = (adata.X > 0).mean(axis=0).A1
    program = adata.var["program"].astype(str).to_numpy()
    assert detected[program == "sparse"].max() < 0.1
    assert np.median(detected[program == "background"]) > 0.4
    totals = adata.X.sum(axis=1).A1
    assert totals.min() > 0
    assert 1.5 < np.quantile(totals, 0.9) / np.quantile(totals, 0.1) < 10  # library sizes vary


def test_hex_lattice(adata):
    pitch = 64.0
    for library_id in adata.obs["library_id"].cat.categories:
        mask = (adata.obs["library_id"] == library_id).to_numpy()
        row = adata.obs["array_row"].to_numpy()[mask]
        col = adata.obs["array_col"].to_numpy()[mask]
        xy = adata.obsm["spatial"][mask]
        assert ((row + col) % 2 == 0).all()
        assert len(set(zip(row, col, strict=True))) == mask.sum()
        # Pixel positions are an affine image of the lattice: x along array_col, y along array_row.
        np.testing.assert_allclose(xy[:, 0] - col * pitch / 2, xy[0, 0] - col[0] * pitch / 2)
        np.testing.assert_allclose(xy[:, 1] - row * pitch * np.sqrt(3) / 2, xy[0, 1] - row[0] * pitch * np.sqrt(3) / 2)
        # Neighbours at (0, ±2) and (±1, ±1) are all one pitch apart, and every spot has one.
        distance, _ = cKDTree(xy).query(xy, k=2)
        np.testing.assert_allclose(distance[:, 1], pitch)
        index = {(r, c): i for i, (r, c) in enumerate(zip(row, col, strict=True))}
        for dr, dc in ((0, 2), (1, 1), (1, -1)):
            pairs = [(i, index[(r + dr, c + dc)]) for (r, c), i in index.items() if (r + dr, c + dc) in index]
            assert pairs
            i, j = np.array(pairs).T
            np.testing.assert_allclose(np.hypot(*(xy[i] - xy[j]).T), pitch)


def test_spots_inside_image_and_on_tissue(adata):
    for library_id, entry in adata.uns["spatial"].items():
        mask = (adata.obs["library_id"] == library_id).to_numpy()
        height, width = entry["images"]["hires"].shape[:2]
        radius = entry["scalefactors"]["spot_diameter_fullres"] / 2
        x, y = adata.obsm["spatial"][mask].T
        assert (x - radius >= 0).all() and (x + radius < width).all()
        assert (y - radius >= 0).all() and (y + radius < height).all()
        # The slide has blank glass (every channel about 247) around the tissue, but no spot sits on glass.
        glass = entry["images"]["hires"].min(axis=2) >= 246
        assert glass.mean() > 0.05
        r = int(np.ceil(radius))
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        inside = dy**2 + dx**2 <= radius**2
        centres = np.rint(adata.obsm["spatial"][mask]).astype(int)
        assert not glass[centres[:, 1, None] + dy[inside], centres[:, 0, None] + dx[inside]].any()


def test_program_genes_follow_their_tissue_type(adata):
    logs = _log_normalised(adata)
    program = adata.var["program"].astype(str).to_numpy()
    region = adata.obs["region"].astype(str).to_numpy()
    for kind in REGIONS:
        score = logs[:, program == kind].mean(axis=1)
        inside, outside = score[region == kind].mean(), score[region != kind].mean()
        assert inside > outside + 0.4, kind
    background = logs[:, program == "background"].mean(axis=1)
    means = [background[region == kind].mean() for kind in REGIONS]
    assert max(means) - min(means) < 0.1


def test_expression_is_predictable_from_the_image(adata):
    # The mean red-channel optical density under a spot measures its haematoxylin (nuclei) content.
    feature = _red_optical_density_under_spots(adata)
    logs = _log_normalised(adata)
    program = adata.var["program"].astype(str).to_numpy()
    nuclear = logs[:, program == "nuclear"].mean(axis=1)
    background = logs[:, program == "background"].mean(axis=1)
    assert np.corrcoef(feature, nuclear)[0, 1] > 0.6
    assert abs(np.corrcoef(feature, background)[0, 1]) < 0.2
    # Holds within every slide, despite each slide's own stain strength.
    for library_id in adata.obs["library_id"].cat.categories:
        mask = (adata.obs["library_id"] == library_id).to_numpy()
        assert np.corrcoef(feature[mask], nuclear[mask])[0, 1] > 0.6


def test_regions_look_different(adata):
    # Mean colour under the spot separates the tissue types (immune: dark purple, adipose: pale).
    feature = _red_optical_density_under_spots(adata)
    region = adata.obs["region"].astype(str).to_numpy()
    by_region = {kind: feature[region == kind].mean() for kind in REGIONS}
    assert by_region["immune"] > by_region["stroma"] > by_region["adipose"]
    assert by_region["tumour"] > by_region["stroma"]


def test_splits_and_patients():
    one = sepal.datasets.synthetic(n_slides=1, n_spots=30, n_genes=20)
    assert one.obs["split"].astype(str).unique().tolist() == ["train"]
    two = sepal.datasets.synthetic(n_slides=2, n_spots=30, n_genes=20)
    assert two.obs.groupby("library_id", observed=True)["split"].first().astype(str).tolist() == ["train", "val"]
    five = sepal.datasets.synthetic(n_slides=5, n_spots=30, n_genes=20, slides_per_patient=2)
    per_slide = five.obs.groupby("library_id", observed=True)[["split", "patient"]].first().astype(str)
    assert per_slide["split"].tolist() == ["train", "train", "train", "val", "test"]
    assert per_slide["patient"].tolist() == ["patient0", "patient0", "patient1", "patient1", "patient2"]
    assert five.uns["spatial"]["slide4"]["metadata"]["patient"] == "patient2"


def test_human_genes_have_lengths(small):
    lengths = sepal.pp.resolve_gene_lengths(small.var)
    assert lengths.notna().all()
    table = sepal.pp.load_gene_length_table().set_index("gene_id")
    assert (table.loc[small.var["gene_ids"], "gene_name"].to_numpy() == small.var["gene_symbols"].to_numpy()).all()


def test_generic_gene_names():
    data = sepal.datasets.synthetic(n_slides=1, n_spots=40, n_genes=25, gene_names="generic")
    assert data.var_names[:3].tolist() == ["GENE0001", "GENE0002", "GENE0003"]
    assert (data.var["gene_ids"] == data.var_names).all()
    assert (data.var["gene_length"] > 0).all() and data.var["gene_length"].dtype == np.int64


def test_benchmark_scale_parameters():
    data = sepal.datasets.synthetic(n_slides=1, n_spots=50, n_genes=2000, pitch_px=32, effect_size=0.0)
    assert data.shape == (50, 2000)
    assert data.uns["spatial"]["slide0"]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(0.55 * 32)


def test_writes_h5ad(small, tmp_path):
    path = tmp_path / "synthetic.h5ad"
    small.write_h5ad(path)
    back = anndata.read_h5ad(path)
    assert (back.X != small.X).nnz == 0
    np.testing.assert_array_equal(
        back.uns["spatial"]["slide1"]["images"]["hires"], small.uns["spatial"]["slide1"]["images"]["hires"]
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_slides": 0}, "n_slides"),
        ({"n_spots": 2.5}, "n_spots"),
        ({"zero_fraction": 1.0}, "zero_fraction"),
        ({"patterned_fraction": 0.8, "sparse_fraction": 0.3}, "sum to at most 1"),
        ({"dispersion": 0.0}, "dispersion"),
        ({"dispersion": 50.0}, "dispersion"),
        ({"dispersion": 10.0, "zero_fraction": 0.001}, "cannot be reached"),
        ({"pitch_px": 8}, "pitch_px"),
        ({"gene_names": "mouse"}, "gene_names"),
        ({"n_genes": 10**6}, "generic"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sepal.datasets.synthetic(**{"n_slides": 1, "n_spots": 10, "n_genes": 10, **kwargs})
