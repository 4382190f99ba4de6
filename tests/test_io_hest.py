"""HEST-1k layout: a folder written here (st/*.h5ad, pyramidal wsis/*.tif, metadata/*.json)."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from anndata import AnnData

import sepal_tl as sepal

PIXEL_UM = 0.5  # µm per WSI pixel
LEVEL_VALUES = (100, 150, 200)  # each pyramid level painted its own grey, to see which level was read


def _write_wsi(path, height=768, width=1024):
    with tifffile.TiffWriter(path) as tif:
        for level, value in enumerate(LEVEL_VALUES):
            shape = (height >> level, width >> level, 3)
            options = {"subifds": len(LEVEL_VALUES) - 1} if level == 0 else {"subfiletype": 1}
            tif.write(np.full(shape, value, dtype=np.uint8), tile=(128, 128), photometric="rgb", **options)


def _write_sample(folder, sample_id, coords, *, technology, spot_um, pitch_um, array=None):
    n = coords.shape[0]
    obs = pd.DataFrame(index=[f"bc{i}" for i in range(n)])
    if array is not None:
        obs["array_row"], obs["array_col"] = array[:, 0], array[:, 1]
    counts = np.random.default_rng(0).poisson(4, size=(n, 5)).astype(np.float32)
    adata = AnnData(counts, obs=obs, obsm={"spatial": coords.astype(float)})
    adata.var_names = [f"G{i}" for i in range(5)]
    for sub in ("st", "wsis", "metadata"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(folder / "st" / f"{sample_id}.h5ad")
    _write_wsi(folder / "wsis" / f"{sample_id}.tif")
    meta = {
        "id": sample_id,
        "st_technology": technology,
        "pixel_size_um_estimated": PIXEL_UM,
        "spot_diameter": spot_um,
        "inter_spot_dist": pitch_um,
        "organ": "Breast",
    }
    (folder / "metadata" / f"{sample_id}.json").write_text(json.dumps(meta))


@pytest.fixture
def hest_dir(tmp_path):
    folder = tmp_path / "hest"
    # Visium: hex doubled-column indices; 100 µm pitch = 200 px; rows sqrt(3)/2 * 200 px apart
    array = np.array([[0, 0], [0, 2], [1, 1], [1, 3], [2, 0], [2, 2]])
    visium = np.column_stack([200 + array[:, 1] * 100.0, 150 + array[:, 0] * 100 * np.sqrt(3)])
    _write_sample(folder, "VIS1", visium, technology="Visium", spot_um=55, pitch_um=100, array=array)
    # legacy ST without array coordinates: square grid, 200 µm pitch = 400 px
    st = np.array([[100.0, 100.0], [500.0, 100.0], [100.0, 500.0], [500.0, 500.0], [900.0, 500.0]])
    _write_sample(folder, "ST1", st, technology="Spatial Transcriptomics", spot_um=100, pitch_um=200)
    return folder


def test_read_hest_visium_sample(hest_dir, monkeypatch):
    monkeypatch.setattr("sepal_tl.io._hest.HIRES_SIDE", 200)
    adata = sepal.io.read_hest("VIS1", hest_dir=hest_dir)
    assert adata.n_obs == 6 and list(adata.obs_names[:2]) == ["VIS1_bc0", "VIS1_bc1"]
    assert adata.obs["library_id"].unique().tolist() == ["VIS1"]
    assert adata.obs["array_col"].tolist() == [0, 2, 1, 3, 0, 2]
    entry = adata.uns["spatial"]["VIS1"]
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(55 / PIXEL_UM)
    assert entry["scalefactors"]["tissue_hires_scalef"] == pytest.approx(200 / 1024)
    # the hires copy came from the smallest level still >= 200 px wide (level 2, 256 px), never from level 0
    assert entry["images"]["hires"].shape[:2] == (150, 200)
    assert np.all(entry["images"]["hires"] == LEVEL_VALUES[2])
    assert entry["metadata"]["source_image_path"].endswith("wsis/VIS1.tif")
    assert entry["metadata"]["hest"]["st_technology"] == "Visium"
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), adata.X.toarray())


def test_patches_are_cut_lazily_from_level_0(hest_dir):
    adata = sepal.io.read_hest(hest_dir / "st" / "VIS1.h5ad")  # a path: the HEST folder is its grandparent
    from sepal_tl.tl import resolve_images

    (source,) = resolve_images(adata).values()
    assert source.scale == 1.0 and not source.in_memory
    assert np.all(source.crop(x0=300, y0=200, side=64) == LEVEL_VALUES[0])


def test_square_lattice_derived_from_pixels(hest_dir):
    adata = sepal.io.read_hest("ST1", hest_dir=hest_dir)
    assert adata.obs["array_row"].tolist() == [0, 0, 1, 1, 1]
    assert adata.obs["array_col"].tolist() == [0, 1, 0, 1, 2]
    sepal.pp.log2p(adata, layer="counts")
    sepal.pp.denoise(adata, layer="log2tpm")
    assert adata.uns["sepal"]["pp"]["denoise"]["radii"]["ST1"][:2] == [1.0, pytest.approx(2**0.5)]


def test_read_dispatches_and_datasets_concatenate(hest_dir):
    one = sepal.io.read(hest_dir / "st" / "ST1.h5ad")
    assert one.obs["library_id"].unique().tolist() == ["ST1"]
    both = sepal.datasets.hest(["VIS1", "ST1"], path=hest_dir)
    assert both.obs["library_id"].cat.categories.tolist() == ["VIS1", "ST1"]
    assert set(both.uns["spatial"]) == {"VIS1", "ST1"}


@pytest.mark.parametrize(
    ("remove", "match"), [("wsis/ST1.tif", "whole-slide image"), ("metadata/ST1.json", "metadata")]
)
def test_missing_files(hest_dir, remove, match):
    (hest_dir / remove).unlink()
    with pytest.raises(FileNotFoundError, match=match):
        sepal.io.read_hest("ST1", hest_dir=hest_dir)


def test_missing_samples_and_metadata_keys(hest_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\['NOPE'\] are not in .*gated Hugging Face dataset"):
        sepal.datasets.hest(["ST1", "NOPE"], path=hest_dir)
    with pytest.raises(FileNotFoundError, match="HEST folder"):
        sepal.datasets.hest("ST1", path=tmp_path / "absent")
    meta = hest_dir / "metadata" / "ST1.json"
    meta.write_text(json.dumps({"pixel_size_um_estimated": PIXEL_UM, "spot_diameter": 100}))
    with pytest.raises(KeyError, match="inter_spot_dist"):
        sepal.io.read_hest("ST1", hest_dir=hest_dir)


def test_run_config_reads_hest_and_zarr(hest_dir, tmp_path):
    from sepal_tl._cli._data import load_data

    visium = sepal.io.read_hest("VIS1", hest_dir=hest_dir)
    sepal.io.to_spatialdata(visium).write(tmp_path / "vis1.zarr")
    data = {
        "reader": "files",
        "slides": [
            {"path": str(hest_dir / "st" / "ST1.h5ad"), "library_id": "ST1"},
            {"path": str(tmp_path / "vis1.zarr"), "library_id": "VIS1"},
        ],
    }
    adata = load_data(data)
    assert adata.obs["library_id"].cat.categories.tolist() == ["ST1", "VIS1"]
    np.testing.assert_allclose(
        adata[adata.obs["library_id"] == "VIS1"].obsm["spatial"], visium.obsm["spatial"], rtol=1e-6
    )
    data["slides"][1]["library_id"] = "other"
    with pytest.raises(ValueError, match=r"holds the libraries \['VIS1'\], not only library_id='other'"):
        load_data(data)
