from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from PIL import Image
from spatialdata.transformations import get_transformation

import sepal_tl as sepal
from sepal_tl.io import _spatialdata
from sepal_tl.io._images import read_image

DATA = Path(__file__).parents[1].parent / "shared" / "data"
TOY = DATA / "fixtures" / "visium_toy_scanpy"
pytestmark = [
    pytest.mark.filterwarnings("ignore:zarr v3 autosharding:UserWarning"),
    pytest.mark.filterwarnings("ignore:Call to deprecated class Scaler:DeprecationWarning"),
]


def st_section(folder: Path, library_id: str, *, with_image: bool = True):
    """Read a synthetic 3 x 3 legacy-ST section (60 px pitch, 300 x 240 px JPEG) written to ``folder``."""
    folder.mkdir()
    lattice = [(x, y) for y in range(3) for x in range(3)]
    counts = np.random.default_rng(len(library_id)).poisson(4, size=(len(lattice), 3))
    pd.DataFrame(counts, index=[f"{x}x{y}" for x, y in lattice], columns=["A", "B", "C"]).to_csv(
        folder / "counts.tsv", sep="\t"
    )
    spots = pd.DataFrame(
        {
            "x": [x for x, _ in lattice],
            "y": [y for _, y in lattice],
            "pixel_x": [50.0 + 60 * x for x, _ in lattice],
            "pixel_y": [40.0 + 60 * y for _, y in lattice],
        }
    )
    spots.to_csv(folder / "spots.tsv", sep="\t", index=False)
    image = None
    if with_image:
        image = folder / "he.jpg"
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (240, 300, 3), dtype=np.uint8)).save(image)
    return sepal.io.read_st(folder / "counts.tsv", folder / "spots.tsv", image, library_id=library_id)


@pytest.fixture
def two_slides(tmp_path):
    return sepal.io.concat(
        [st_section(tmp_path / "s1", "S1"), st_section(tmp_path / "s2", "S2", with_image=False)], join="outer"
    )


def assert_same_spatial_anndata(result, expected):
    assert list(result.obs_names) == list(expected.obs_names)
    assert list(result.var_names) == list(expected.var_names)
    np.testing.assert_array_equal(result.X.toarray(), expected.X.toarray())
    assert set(result.layers) == set(expected.layers)
    np.testing.assert_array_equal(result.layers["counts"].toarray(), expected.layers["counts"].toarray())
    np.testing.assert_allclose(result.obsm["spatial"], expected.obsm["spatial"])
    pd.testing.assert_frame_equal(result.obs, expected.obs)
    pd.testing.assert_frame_equal(result.var, expected.var)
    assert list(result.uns["spatial"]) == list(expected.uns["spatial"])
    for lib, entry in expected.uns["spatial"].items():
        got = result.uns["spatial"][lib]
        assert got["scalefactors"] == pytest.approx(entry["scalefactors"])
        assert got["metadata"] == entry["metadata"]
        assert set(got["images"]) == set(entry["images"])
        for res, image in entry["images"].items():
            np.testing.assert_array_equal(got["images"][res], image)


def test_elements_and_lazy_full_image(two_slides, monkeypatch):
    reads = []

    def counting_read(path):
        reads.append(path)
        return read_image(path)

    monkeypatch.setattr(_spatialdata, "read_image", counting_read)
    sdata = sepal.io.to_spatialdata(two_slides)
    assert set(sdata.images) == {"S1_full_image", "S1_hires_image", "S1_lowres_image"}
    assert set(sdata.shapes) == {"S1", "S2"}
    assert set(sdata.tables) == {"table"}

    full = sdata.images["S1_full_image"]
    assert isinstance(full.data, da.Array)
    assert full.shape == (3, 240, 300)
    assert reads == []  # nothing decoded yet
    source = two_slides.uns["spatial"]["S1"]["metadata"]["source_image_path"]
    corner = full.data[:, :2, :2].compute()
    assert len(reads) == 1
    np.testing.assert_array_equal(corner, np.moveaxis(read_image(source)[:2, :2], 2, 0))

    spots = sdata.shapes["S1"]
    diameter = two_slides.uns["spatial"]["S1"]["scalefactors"]["spot_diameter_fullres"]
    assert diameter == pytest.approx(30.0)
    np.testing.assert_allclose(spots["radius"], diameter / 2)
    s1 = two_slides[two_slides.obs["library_id"] == "S1"]
    np.testing.assert_allclose(np.column_stack([spots.geometry.x, spots.geometry.y]), s1.obsm["spatial"])
    assert list(spots.index) == list(s1.obs_names)

    table = sdata.tables["table"]
    assert table.uns["spatialdata_attrs"] == {
        "region": ["S1", "S2"],
        "region_key": "region",
        "instance_key": "spot_id",
    }
    assert "images" not in table.uns["spatial"]["S1"]
    assert "region" not in two_slides.obs  # the input is not modified


def test_round_trip_through_zarr(two_slides, tmp_path):
    sdata = sepal.io.to_spatialdata(two_slides)
    sdata.write(tmp_path / "slides.zarr")
    back = sd.read_zarr(tmp_path / "slides.zarr")
    assert isinstance(back.images["S1_full_image"].data, da.Array)
    adata = sepal.io.from_spatialdata(back)
    assert_same_spatial_anndata(adata, two_slides)


def test_hires_scale_maps_to_fullres(two_slides):
    adata = two_slides.copy()
    adata.uns["spatial"]["S1"]["scalefactors"]["tissue_hires_scalef"] = 0.5
    adata.uns["spatial"]["S1"]["images"]["hires"] = adata.uns["spatial"]["S1"]["images"]["hires"][::2, ::2]
    sdata = sepal.io.to_spatialdata(adata)
    matrix = get_transformation(sdata.images["S1_hires_image"], "global").to_affine_matrix(("x", "y"), ("x", "y"))
    np.testing.assert_allclose(np.diag(matrix), [2.0, 2.0, 1.0])
    back = sepal.io.from_spatialdata(sdata)
    assert back.uns["spatial"]["S1"]["scalefactors"]["tissue_hires_scalef"] == 0.5


def test_from_spatialdata_without_library_column(two_slides):
    sdata = sepal.io.to_spatialdata(two_slides)
    sdata.tables["table"].obs = sdata.tables["table"].obs.drop(columns="library_id")
    del sdata.tables["table"].uns["spatial"]
    adata = sepal.io.from_spatialdata(sdata)
    assert list(adata.obs["library_id"].cat.categories) == ["S1", "S2"]
    entry = adata.uns["spatial"]["S1"]
    # scale factors are recovered from the elements: circle radius and image transformations
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(30.0)
    assert entry["scalefactors"]["tissue_hires_scalef"] == pytest.approx(1.0)
    assert set(entry["images"]) == {"hires", "lowres"}


def test_missing_source_image_is_skipped(two_slides, tmp_path):
    adata = two_slides.copy()
    adata.uns["spatial"]["S1"]["metadata"]["source_image_path"] = str(tmp_path / "moved.jpg")
    sdata = sepal.io.to_spatialdata(adata)
    assert "S1_full_image" not in sdata.images
    assert "S1_hires_image" in sdata.images


def test_errors(two_slides):
    no_diameter = two_slides.copy()
    del no_diameter.uns["spatial"]["S2"]["scalefactors"]["spot_diameter_fullres"]
    with pytest.raises(KeyError, match="spot_diameter_fullres"):
        sepal.io.to_spatialdata(no_diameter)
    no_coords = two_slides.copy()
    del no_coords.obsm["spatial"]
    with pytest.raises(KeyError, match="obsm"):
        sepal.io.to_spatialdata(no_coords)
    with pytest.raises(KeyError, match="table_key='other' is not a table"):
        sepal.io.from_spatialdata(sepal.io.to_spatialdata(two_slides), table_key="other")


@pytest.mark.realdata
@pytest.mark.skipif(not TOY.exists(), reason="shared Visium toy fixture not available")
def test_visium_round_trip(tmp_path):
    adata = sepal.io.read_visium(TOY, library_id="toy")
    sdata = sepal.io.to_spatialdata(adata)
    assert "toy_full_image" not in sdata.images
    matrix = get_transformation(sdata.images["toy_hires_image"], "global").to_affine_matrix(("x", "y"), ("x", "y"))
    assert matrix[0, 0] == pytest.approx(1 / 0.150015)
    sdata.write(tmp_path / "toy.zarr")
    assert_same_spatial_anndata(sepal.io.from_spatialdata(sd.read_zarr(tmp_path / "toy.zarr")), adata)
