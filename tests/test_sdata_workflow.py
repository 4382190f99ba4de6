"""The brief's calls on SpatialData: spatialdata-io's Visium reader and :func:`sepal_tl.io.to_spatialdata`."""

import warnings

import matplotlib as mpl

mpl.use("Agg")

import numpy as np
import pytest
from _helpers import DATA, TINY, assert_same
from matplotlib import pyplot as plt
from spatialdata import SpatialData

import sepal_tl as sepal
from sepal_tl.pl._utils import SPOTS_GID

TOY = DATA / "fixtures" / "visium_toy_scanpy"


@pytest.fixture(scope="module")
def toy_sdata():
    if not TOY.exists():
        pytest.skip("shared Visium toy fixture not available")
    sio = pytest.importorskip("spatialdata_io")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sio.visium(TOY, dataset_id="toy")


@pytest.mark.realdata
def test_spatialdata_io_visium_in_place(toy_sdata):
    """pp and pl run on spatialdata-io's Visium output; the table keeps its own coordinates and uns."""
    sdata = toy_sdata
    table = sdata.tables["table"]
    own_coords, own_uns = np.asarray(table.obsm["spatial"]).copy(), dict(table.uns["spatial"])
    sepal.pp.tpm(sdata)
    sepal.pp.log2p(sdata)
    sepal.pp.denoise(sdata, layer="log2tpm")
    sepal.pp.select_genes(sdata, n_top=10, layer="denoised")
    assert {"tpm", "log2tpm", "denoised", "observed"} <= set(table.layers)
    assert table.var["highly_spatial"].sum() == 10 and "sepal_connectivities" in table.obsp
    # Visium's hex lattice in doubled-column indices: first radius sqrt(2)
    assert table.uns["sepal"]["pp"]["denoise"]["radii"]["toy"][0] == pytest.approx(2**0.5)
    np.testing.assert_array_equal(table.obsm["spatial"], own_coords)
    assert set(table.uns["spatial"]) == set(own_uns) and "images" not in table.uns["spatial"]["toy"]

    # the spots land on the hires image: full-resolution pixels x tissue_hires_scalef (spatialdata-io's Scale)
    fig, ax = plt.subplots()
    sepal.pl.gene_map(sdata, table.var_names[0], layer="denoised", ax=ax)
    spots = next(c for c in ax.collections if c.get_gid() == SPOTS_GID)
    np.testing.assert_allclose(spots.get_offsets(), own_coords * 0.150015, rtol=1e-5)
    plt.close(fig)


@pytest.mark.realdata
def test_from_spatialdata_reads_spatialdata_io_visium(toy_sdata):
    reference = sepal.io.read_visium(TOY, library_id="toy")
    adata = sepal.io.from_spatialdata(toy_sdata)
    assert list(adata.obs["library_id"].cat.categories) == ["toy"]
    np.testing.assert_allclose(adata.obsm["spatial"], reference["toy_" + adata.obs_names].obsm["spatial"])
    ours, theirs = adata.uns["spatial"]["toy"]["scalefactors"], reference.uns["spatial"]["toy"]["scalefactors"]
    for key in ("tissue_hires_scalef", "tissue_lowres_scalef", "spot_diameter_fullres"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key
    assert adata.uns["spatial"]["toy"]["images"]["lowres"].shape == (600, 600, 3)  # RGBA/RGB -> RGB


@pytest.fixture
def synthetic_sdata(synthetic_raw):
    return sepal.io.to_spatialdata(synthetic_raw.copy())


@pytest.mark.slow
def test_whole_workflow_on_to_spatialdata(synthetic_sdata, figdir):
    """pp.run -> tl.fit -> tl.evaluate -> pl on a SpatialData; then H&E-only prediction becomes a table."""
    sdata = synthetic_sdata
    assert sepal.pp.run(sdata, preset="synthetic", n_top=16) is None
    table = sdata.tables["table"]
    own = table.obsm["spatial"].copy()
    assert table.n_vars == 16 and "denoised" in table.layers
    model = sepal.tl.fit(sdata, **TINY, encoder_epochs=1, encoder_batch_size=64, spatial_epochs=1, hidden=(32,))
    assert {"sepal", "sepal_local"} <= set(table.layers) and "X_sepal" in table.obsm
    np.testing.assert_array_equal(table.obsm["spatial"], own)  # the table's own coordinates are put back
    metrics = sepal.tl.evaluate(sdata, pred="sepal", split="test")
    assert np.isfinite(metrics.loc["sepal", "MSE"])
    sepal.pl.moran(sdata, save=True, show=False)
    sepal.pl.gene_map(sdata, table.var_names[0], library_id="slide2", save="_slide2.png", show=False)
    assert (figdir / "moran.png").is_file()
    assert (figdir / "gene_map_slide2.png").is_file()

    # H&E only: the spots of slide2 without expression -> a new table "sepal" annotating the same shapes
    processed = sepal.io.from_spatialdata(sdata)
    he = sepal.io.to_spatialdata(processed[(processed.obs["library_id"] == "slide2").to_numpy(), []].copy())
    pred = sepal.tl.predict(he, model)
    assert set(he.tables) == {"table", "sepal"} and he.tables["sepal"] is pred
    assert list(pred.var_names) == list(model.genes) and np.isfinite(pred.X).all()
    assert np.atleast_1d(pred.uns["spatialdata_attrs"]["region"]).tolist() == ["slide2"]
    # the same spots in the training table got the same predictions (same images, same model)
    rows = (table.obs["library_id"] == "slide2").to_numpy()
    np.testing.assert_allclose(
        pred.X, table[rows].layers["sepal"][:, table.var_names.get_indexer(pred.var_names)], atol=1e-4
    )


def test_errors_leave_the_spatialdata_unchanged(synthetic_sdata):
    sdata = SpatialData(images=dict(synthetic_sdata.images), shapes=dict(synthetic_sdata.shapes), tables={})
    with pytest.raises(ValueError, match="has no table"):
        sepal.pp.run(sdata, preset="synthetic")
    table = synthetic_sdata.tables["table"].copy()
    sdata.tables["table"] = table
    sdata.tables["other"] = table.copy()
    del sdata.tables["other"].uns["spatialdata_attrs"]
    with pytest.raises(ValueError, match="annotates no element"):
        sepal.pp.filter(sdata, min_counts_spot=1, table_key="other")
    before = table.copy()
    with pytest.raises(KeyError, match="library_key='batch' is not a column"):
        sepal.pp.filter(sdata, min_counts_spot=1, library_key="batch")
    assert_same(table, before)
