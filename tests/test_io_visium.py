from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse

import sepal_tl as sepal

DATA = Path(__file__).parents[1].parent / "shared" / "data"
TOY = DATA / "fixtures" / "visium_toy_scanpy"
BARCODE = "AAACAAGTATCTCCCA-1"  # tissue_positions_list.csv: in_tissue 1, row 50, col 102, pxl row 8513, pxl col 9811


def needs_toy(test):
    """Mark a test that reads the shared toy Visium fixture (skipped when ../shared/data is absent)."""
    skip = pytest.mark.skipif(not TOY.exists(), reason="shared Visium toy fixture not available")
    return pytest.mark.realdata(skip(test))


@pytest.fixture
def toy_copy(tmp_path) -> Path:
    """A writable copy of the toy outs/ folder (for broken variants)."""
    return Path(shutil.copytree(TOY, tmp_path / "toy"))


@pytest.fixture(scope="module")
def toy():
    return sepal.io.read_visium(TOY)


@needs_toy
def test_shapes_and_obs(toy):
    assert toy.shape == (100, 100)
    assert list(toy.obs["library_id"].cat.categories) == ["visium_toy_scanpy"]
    assert toy.obs_names[0] == f"visium_toy_scanpy_{BARCODE}"
    assert toy.obs_names.is_unique
    row = toy.obs.loc[f"visium_toy_scanpy_{BARCODE}"]
    assert (row["barcode"], row["array_row"], row["array_col"]) == (BARCODE, 50, 102)
    assert toy.obs["array_row"].dtype == np.int64


@needs_toy
def test_coordinates_are_fullres_x_then_y(toy):
    assert toy.obsm["spatial"].dtype == np.float64
    i = toy.obs_names.get_loc(f"visium_toy_scanpy_{BARCODE}")
    np.testing.assert_array_equal(toy.obsm["spatial"][i], [9811.0, 8513.0])
    positions = pd.read_csv(TOY / "spatial" / "tissue_positions_list.csv", header=None, index_col=0)
    expected = positions.loc[toy.obs["barcode"], [5, 4]].to_numpy(dtype=float)
    np.testing.assert_array_equal(toy.obsm["spatial"], expected)


@needs_toy
def test_counts_and_var(toy):
    assert sparse.isspmatrix_csr(toy.X)
    assert toy.X.dtype == np.float32
    np.testing.assert_array_equal(toy.X.data, np.round(toy.X.data))
    assert (toy.layers["counts"] != toy.X).nnz == 0
    assert toy.layers["counts"] is not toy.X
    assert toy.var["gene_ids"].str.startswith("ENSG").all()
    assert "gene_symbols" in toy.var
    assert toy.var_names.is_unique


@needs_toy
def test_uns_spatial(toy):
    entry = toy.uns["spatial"]["visium_toy_scanpy"]
    assert entry["images"]["hires"].shape == (2000, 2000, 3)
    assert entry["images"]["lowres"].shape == (600, 600, 3)
    assert entry["images"]["lowres"].dtype == np.uint8
    with open(TOY / "spatial" / "scalefactors_json.json") as fh:
        assert entry["scalefactors"] == json.load(fh)
    assert "source_image_path" not in entry["metadata"]
    assert entry["metadata"]["software_version"].startswith("spaceranger")


@needs_toy
def test_positions_with_header_and_library_id(toy, toy_copy):
    spatial = toy_copy / "spatial"
    old = pd.read_csv(spatial / "tissue_positions_list.csv", header=None)
    old.columns = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    old.to_csv(spatial / "tissue_positions.csv", index=False)
    (spatial / "tissue_positions_list.csv").unlink()
    adata = sepal.io.read_visium(toy_copy, library_id="slideA")
    assert adata.obs_names[0].startswith("slideA_")
    np.testing.assert_array_equal(adata.obsm["spatial"], toy.obsm["spatial"])
    assert list(adata.uns["spatial"]) == ["slideA"]


@needs_toy
def test_out_of_tissue_barcodes_are_dropped(toy_copy):
    path = toy_copy / "spatial" / "tissue_positions_list.csv"
    positions = pd.read_csv(path, header=None)
    positions.loc[positions[0] == BARCODE, 1] = 0
    positions.to_csv(path, header=False, index=False)
    adata = sepal.io.read_visium(toy_copy)
    assert adata.n_obs == 99
    assert BARCODE not in set(adata.obs["barcode"])


@needs_toy
def test_fullres_image_header_only(tmp_path):
    # 14000 x 14000 px is above Pillow's decompression-bomb limit; only the header is read
    fullres = tmp_path / "fullres.png"
    Image.new("1", (14000, 14000)).save(fullres)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        adata = sepal.io.read_visium(TOY, fullres_image=fullres)
    assert adata.uns["spatial"]["visium_toy_scanpy"]["metadata"]["source_image_path"] == str(fullres)


@needs_toy
@pytest.mark.parametrize(
    ("remove", "match"),
    [
        ("filtered_feature_bc_matrix.h5", "filtered_feature_bc_matrix.h5"),
        ("spatial/scalefactors_json.json", "scalefactors_json.json"),
        ("spatial/tissue_positions_list.csv", "tissue_positions"),
    ],
)
def test_missing_files(toy_copy, remove, match):
    (toy_copy / remove).unlink()
    with pytest.raises(FileNotFoundError, match=match):
        sepal.io.read_visium(toy_copy)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        sepal.io.read_visium(tmp_path / "nope")


@needs_toy
def test_missing_fullres_image(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fullres_image.*missing\.tif"):
        sepal.io.read_visium(TOY, fullres_image=tmp_path / "missing.tif")


@needs_toy
def test_spots_outside_fullres_image(tmp_path):
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    with pytest.raises(ValueError, match="fall outside the full-resolution image"):
        sepal.io.read_visium(TOY, fullres_image=small)


@needs_toy
def test_bad_scalefactors(toy_copy):
    with open(toy_copy / "spatial" / "scalefactors_json.json", "w") as fh:
        json.dump({"tissue_hires_scalef": 0.15}, fh)
    with pytest.raises(ValueError, match="spot_diameter_fullres"):
        sepal.io.read_visium(toy_copy)
