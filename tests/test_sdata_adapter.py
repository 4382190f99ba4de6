"""The SpatialData adapter: tables, shapes, images and transformations as spatialdata-io lays them out.

Objects are built the way spatialdata-io's readers build them (Visium HD square bins with several tables and a
CytAssist image; Xenium cells in microns with a morphology image and an aligned H&E), then every resolution
rule is checked against coordinates computed by hand, and every ambiguity against its error.
"""

import matplotlib as mpl

mpl.use("Agg")

import numpy as np
import pandas as pd
import pytest
from _helpers import assert_same
from anndata import AnnData
from geopandas import GeoDataFrame
from matplotlib import pyplot as plt
from scipy import sparse
from shapely.geometry import box
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, Labels2DModel, ShapesModel, TableModel
from spatialdata.transformations import Affine, Identity, Scale, Sequence, Translation

import sepal_tl as sepal
from sepal_tl._sdata import resolve_slides, resolve_table
from sepal_tl.pl._utils import SPOTS_GID

RNG = np.random.default_rng(0)


def _image(height, width, transformations, channels=3, dtype=np.uint8, scale_factors=None):
    data = RNG.integers(0, 200, size=(channels, height, width)).astype(dtype)
    return Image2DModel.parse(data, dims=("c", "y", "x"), scale_factors=scale_factors, transformations=transformations)


def _counts(n, genes=6):
    return sparse.csr_matrix(RNG.poisson(3.0, size=(n, genes)).astype(np.float32))


def visium_hd(dataset="hd", bin_um=8, n_side=6):
    """spatialdata-io's ``visium_hd`` layout: square bins (polygons), one table per bin size, several images."""
    pitch = 20.0  # full-resolution pixels per bin
    rows, cols = np.divmod(np.arange(n_side * n_side), n_side)
    x, y = 100 + cols * pitch, 80 + rows * pitch
    transformations = {dataset: Identity(), f"{dataset}_downscaled_hires": Scale([0.25, 0.25], axes=("x", "y"))}
    squares = GeoDataFrame(
        geometry=[box(a - pitch / 2, b - pitch / 2, a + pitch / 2, b + pitch / 2) for a, b in zip(x, y, strict=True)]
    )
    name = f"{dataset}_square_{bin_um:03d}um"
    shapes = {name: ShapesModel.parse(squares, transformations=transformations)}
    tables = {}
    for size in (f"square_{bin_um:03d}um", "square_016um"):
        table = AnnData(
            _counts(rows.size),
            obs=pd.DataFrame(
                {"array_row": rows, "array_col": cols, "location_id": np.arange(rows.size), "region": name},
                index=[f"s_{i:03d}" for i in range(rows.size)],
            ),
        )
        table.obs["region"] = table.obs["region"].astype("category")
        tables[size] = TableModel.parse(table, region=name, region_key="region", instance_key="location_id")
    images = {
        f"{dataset}_full_image": _image(400, 320, {dataset: Identity()}, scale_factors=[2]),
        f"{dataset}_hires_image": _image(100, 80, {dataset: Scale([4.0, 4.0], axes=("x", "y"))}),
        f"{dataset}_cytassist_image": _image(
            60, 60, {dataset: Affine(np.array([[0, -3.0, 300], [3.0, 0, 0], [0, 0, 1]]), ("x", "y"), ("x", "y"))}
        ),
    }
    return SpatialData(images=images, shapes=shapes, tables=tables), x, y


def xenium():
    """spatialdata-io's ``xenium`` layout: cell circles in microns, scaled to the morphology image's pixels."""
    pixel = 0.2125
    centres_um = RNG.uniform(5, 15, size=(12, 2))
    circles = ShapesModel.parse(
        centres_um,
        geometry=0,
        radius=np.full(12, 2.0),
        index=pd.Index([f"cell{i}" for i in range(12)]),
        transformations={"global": Scale([1 / pixel, 1 / pixel], axes=("x", "y"))},
    )
    ids = [f"cell{i}" for i in range(12)]
    obs = pd.DataFrame({"cell_id": ids, "region": pd.Categorical(["cell_circles"] * 12)}, index=ids)
    table = AnnData(_counts(12), obs=obs)
    table = TableModel.parse(table, region="cell_circles", region_key="region", instance_key="cell_id")
    # H&E registered onto the morphology image: x_morph = 2 * x_he + 10, y_morph = 2 * y_he + 5
    he = Affine(np.array([[2.0, 0, 10], [0, 2.0, 5], [0, 0, 1]]), ("x", "y"), ("x", "y"))
    images = {
        "morphology_focus": _image(80, 80, {"global": Identity()}, channels=1, dtype=np.uint16, scale_factors=[2]),
        "he_image": _image(40, 40, {"global": he}),
    }
    sdata = SpatialData(images=images, shapes={"cell_circles": circles}, tables={"table": table})
    return sdata, centres_um, pixel


# ------------------------------------------------------------------------------------------------------------------
def test_visium_hd_squares_full_image_and_diameter(monkeypatch):
    monkeypatch.setattr("sepal_tl._sdata.DISPLAY_SIDE", 100)  # plots: the smallest resolution >= 100 px
    sdata, x, y = visium_hd()
    name, table = resolve_table(sdata, "square_008um")
    (slide,) = resolve_slides(sdata, name, table, images="full").values()
    assert slide.library_id == "hd_square_008um"  # one slide per shapes element (the table's region)
    # the full image (identity, highest resolution, level 0 of its pyramid) is chosen over hires and CytAssist
    assert slide.image_name == "hd_full_image" and slide.image.shape == (3, 400, 320)
    np.testing.assert_allclose(slide.centres, np.column_stack([x, y]))
    assert slide.diameter == pytest.approx(20.0)  # side of the square bin
    # plots get the hires image (100 px, below the full image's second level of 200 px), placed by its 1/4 scale
    data, scale = slide.display
    assert data.shape == (3, 100, 80) and scale == pytest.approx(0.25)


def test_visium_hd_pp_in_place_on_the_chosen_table():
    sdata, _, _ = visium_hd()
    other_before = sdata.tables["square_016um"].copy()
    sepal.pp.log2p(sdata, layer=None, key_added="log1p_counts", table_key="square_008um")
    sepal.pp.denoise(sdata, layer="log1p_counts", table_key="square_008um")
    table = sdata.tables["square_008um"]
    assert {"log1p_counts", "denoised", "observed"} <= set(table.layers)
    # square lattice: the first radius is one bin pitch, the second the diagonal
    assert table.uns["sepal"]["pp"]["denoise"]["radii"]["hd_square_008um"][:2] == [1.0, pytest.approx(2**0.5)]
    assert "spatial" not in table.obsm and "spatial" not in table.uns  # nothing of the adapter is left behind
    assert_same(sdata.tables["square_016um"], other_before)


def test_several_tables_need_table_key():
    sdata, _, _ = visium_hd()
    with pytest.raises(ValueError, match=r"2 tables \(\['square_008um', 'square_016um'\]\); pass table_key="):
        sepal.pp.log2p(sdata, layer=None)
    with pytest.raises(KeyError, match="table_key='nope' is not a table"):
        sepal.pp.log2p(sdata, layer=None, table_key="nope")


def test_table_key_is_only_for_spatialdata():
    with pytest.raises(TypeError, match="table_key= only applies to SpatialData"):
        sepal.pp.log2p(AnnData(np.ones((2, 2))), layer=None, table_key="table")


def test_xenium_microns_scaled_onto_an_affine_he():
    sdata, centres_um, pixel = xenium()
    name, table = resolve_table(sdata)
    with pytest.raises(ValueError, match=r"several candidate images .*\['he_image', 'morphology_focus'\]"):
        resolve_slides(sdata, name, table, images="full")
    (slide,) = resolve_slides(sdata, name, table, images="full", choice="he_image").values()
    morph = centres_um / pixel
    np.testing.assert_allclose(slide.centres, (morph - [10, 5]) / 2)  # inverse of the H&E's affine
    assert slide.diameter == pytest.approx(4.0 / pixel / 2)
    # without an image the cells stay in their own coordinates (microns)
    (plain,) = resolve_slides(sdata, name, table).values()
    np.testing.assert_allclose(plain.centres, centres_um)


def test_xenium_gene_map_on_the_chosen_image():
    sdata, centres_um, pixel = xenium()
    table = sdata.tables["table"]
    table.layers["raw"] = table.X.copy()
    before = table.copy()
    fig, ax = plt.subplots()
    out = sepal.pl.gene_map(sdata, table.var_names[0], layer="raw", img_key="he_image", mark_imputed=False, ax=ax)
    assert out is ax
    spots = next(c for c in ax.collections if c.get_gid() == SPOTS_GID)
    np.testing.assert_allclose(spots.get_offsets(), (centres_um / pixel - [10, 5]) / 2)
    assert len(ax.images) == 1 and ax.images[0].get_array().shape == (40, 40, 3)
    plt.close(fig)
    assert_same(table, before)
    with pytest.raises(ValueError, match="several candidate images"):
        sepal.pl.gene_map(sdata, table.var_names[0], layer="raw", mark_imputed=False)
    assert_same(table, before)


def test_transformation_sequence_and_translation():
    """Shapes scaled by 2 into 'aligned'; the image scaled by 0.5 and translated there: hand-computed pixels."""
    centres = np.array([[10.0, 20.0], [30.0, 40.0]])
    shapes = ShapesModel.parse(
        centres,
        geometry=0,
        radius=np.array([3.0, 3.0]),
        index=pd.Index([0, 1]),
        transformations={"aligned": Scale([2.0, 2.0], axes=("x", "y"))},
    )
    image_to_aligned = Sequence([Scale([0.5, 0.5], axes=("x", "y")), Translation([4.0, 6.0], axes=("x", "y"))])
    image = _image(200, 200, {"aligned": image_to_aligned})
    table = AnnData(
        _counts(2), obs=pd.DataFrame({"spot": [0, 1], "region": pd.Categorical(["spots"] * 2)}, index=["a", "b"])
    )
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot")
    sdata = SpatialData(images={"spots_full_image": image}, shapes={"spots": shapes}, tables={"table": table})
    (slide,) = resolve_slides(sdata, "table", table, images="full").values()
    np.testing.assert_allclose(slide.centres, (2 * centres - [4, 6]) / 0.5)
    assert slide.diameter == pytest.approx(6.0 * 2 / 0.5)


def test_bad_spatialdata_leaves_it_unchanged():
    sdata, _ = xenium()[:2]
    before = sdata.tables["table"].copy()
    empty = SpatialData(shapes=dict(sdata.shapes))
    with pytest.raises(ValueError, match="has no table"):
        sepal.pp.log2p(empty, layer=None)
    # a table without spatialdata_attrs annotates nothing
    loose = SpatialData(tables={"table": AnnData(_counts(3))})
    with pytest.raises(ValueError, match="annotates no element"):
        sepal.pl.gene_map(loose, "0", layer=None)
    # a table annotating labels, not shapes
    labels = Labels2DModel.parse(np.zeros((10, 10), dtype=np.int32), dims=("y", "x"))
    table = AnnData(
        _counts(2), obs=pd.DataFrame({"label": [1, 2], "region": pd.Categorical(["cells"] * 2)}, index=["a", "b"])
    )
    table = TableModel.parse(table, region="cells", region_key="region", instance_key="label")
    with pytest.raises(ValueError, match=r"not a shapes element .*'cells': 'labels'"):
        sepal.pp.log2p(SpatialData(labels={"cells": labels}, tables={"table": table}), layer=None)
    # an image named explicitly that shares no coordinate system with the spots
    sdata.images["elsewhere"] = _image(20, 20, {"other": Identity()})
    table = sdata.tables["table"]
    table.layers["raw"] = table.X.copy()
    before = table.copy()
    with pytest.raises(ValueError, match="Missing transformation: shapes 'cell_circles'.*'elsewhere'"):
        sepal.pl.gene_map(sdata, table.var_names[0], layer="raw", img_key="elsewhere", mark_imputed=False)
    # sepal.tl: an image= that names no element (checked before the model is touched)
    with pytest.raises(KeyError, match="'nope' is not an image element"):
        sepal.tl.predict(sdata, None, image="nope")
    assert_same(table, before)


def test_copy_returns_a_new_spatialdata():
    sdata, _, _ = visium_hd()
    table = sdata.tables["square_008um"]
    before = table.copy()
    out = sepal.pp.log2p(sdata, layer=None, table_key="square_008um", copy=True)
    assert isinstance(out, SpatialData) and out is not sdata
    assert "log2tpm" in out.tables["square_008um"].layers
    assert out.images["hd_full_image"] is sdata.images["hd_full_image"]  # the other elements are shared
    assert_same(table, before)


@pytest.mark.slow
def test_visium_hd_fit_and_predict_on_square_bins():
    """tl on spatialdata-io's Visium HD layout: patches from the multiscale full image, the square bin lattice."""
    sdata, _, _ = visium_hd()
    table = sdata.tables["square_008um"]
    table.obs["split"] = np.where(
        table.obs["array_row"] < 4, "train", np.where(table.obs["array_row"] < 5, "val", "test")
    )
    sepal.pp.log2p(sdata, layer=None, table_key="square_008um")
    sepal.pp.denoise(sdata, layer="log2tpm", table_key="square_008um")
    model = sepal.tl.fit(
        sdata,
        table_key="square_008um",
        backbone="vit_tiny_patch16_224",
        pretrained=False,
        patch_size=32,
        device="cpu",
        encoder_epochs=1,
        spatial_epochs=1,
        hidden=(8,),
    )
    assert model.config["spatial"]["training"]["lattice"] == "square"
    assert np.isfinite(table.layers["sepal"]).all() and table.obsm["X_sepal"].shape[0] == table.n_obs
    assert "sepal" not in sdata.tables["square_016um"].layers
