"""Visium HD binned outputs: a Space Ranger ``outs/`` folder written here, read as a square lattice of bins."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse

import sepal_tl as sepal

N_SIDE = 5
PIXELS_PER_UM = 2.0


def _write_10x_h5(path, counts, barcodes, genes):
    matrix = sparse.csc_matrix(counts.T)  # genes x barcodes, as Space Ranger stores it
    with h5py.File(path, "w") as f:
        group = f.create_group("matrix")
        group["barcodes"] = np.array(barcodes, dtype="S")
        group["data"], group["indices"], group["indptr"] = matrix.data, matrix.indices, matrix.indptr
        group["shape"] = np.array(matrix.shape)
        features = group.create_group("features")
        features["id"] = np.array([f"ENSG{i:011d}" for i in range(len(genes))], dtype="S")
        features["name"] = np.array(genes, dtype="S")
        features["feature_type"] = np.array(["Gene Expression"] * len(genes), dtype="S")
        features["genome"] = np.array(["GRCh38"] * len(genes), dtype="S")


def _write_bins(outs, bin_um, *, stated_bin_um=None):
    folder = outs / "binned_outputs" / f"square_{bin_um:03d}um"
    (folder / "spatial").mkdir(parents=True)
    rows, cols = np.divmod(np.arange(N_SIDE * N_SIDE), N_SIDE)
    side = bin_um * PIXELS_PER_UM
    barcodes = [f"s_{bin_um:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)]
    pd.DataFrame(
        {
            "barcode": barcodes,
            "in_tissue": 1,
            "array_row": rows,
            "array_col": cols,
            "pxl_row_in_fullres": 40 + rows * side,
            "pxl_col_in_fullres": 30 + cols * side,
        }
    ).to_parquet(folder / "spatial" / "tissue_positions.parquet")
    scalefactors = {
        "tissue_hires_scalef": 0.5,
        "tissue_lowres_scalef": 0.25,
        "spot_diameter_fullres": side,
        "bin_size_um": float(stated_bin_um or bin_um),
        "microns_per_pixel": 1 / PIXELS_PER_UM,
    }
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    counts = np.random.default_rng(bin_um).poisson(2, size=(len(barcodes), 4)).astype(np.float32)
    _write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, barcodes, ["A", "B", "C", "D"])


@pytest.fixture
def outs(tmp_path):
    outs = tmp_path / "HDrun" / "outs"
    for bin_um in (8, 16):
        _write_bins(outs, bin_um)
    (outs / "spatial").mkdir()
    Image.fromarray(np.full((200, 200, 3), 90, dtype=np.uint8)).save(outs / "spatial" / "tissue_hires_image.png")
    return outs


def test_square_bins(outs):
    adata = sepal.io.read_visium_hd(outs, bin_size=16)
    assert adata.n_obs == N_SIDE**2 and adata.obs["library_id"].unique().tolist() == ["HDrun_16um"]
    entry = adata.uns["spatial"]["HDrun_16um"]
    assert entry["scalefactors"]["spot_diameter_fullres"] == 16 * PIXELS_PER_UM  # the bin's side
    assert entry["metadata"]["bin_size_um"] == 16 and entry["metadata"]["microns_per_pixel"] == 0.5
    assert entry["images"]["hires"].shape == (200, 200, 3)  # from outs/spatial/
    np.testing.assert_allclose(adata.obsm["spatial"][N_SIDE + 1], [30 + 32, 40 + 32])
    # the bins form a square lattice: 4 edge neighbours inside, SEPAL's first radii 1 and sqrt(2)
    sepal.pp.log2p(adata, layer="counts")
    sepal.pp.denoise(adata, layer="log2tpm")
    assert adata.uns["sepal"]["pp"]["denoise"]["radii"]["HDrun_16um"][:2] == [1.0, pytest.approx(2**0.5)]
    sepal.pp.select_genes(adata, n_top=2, layer="denoised")
    assert adata.uns["sepal"]["pp"]["select_genes"]["geometry"] == "square"
    degree = np.asarray(adata.obsp["sepal_connectivities"].sum(axis=1)).ravel()
    assert degree.max() == 4 and degree.min() == 2


def test_read_dispatches_to_visium_hd(outs):
    adata = sepal.io.read(outs.parent, bin_size=8)
    assert adata.obs["library_id"].unique().tolist() == ["HDrun_8um"]


def test_bad_bin_size(outs):
    with pytest.raises(FileNotFoundError, match=r"No 'square_002um' .*\['square_008um', 'square_016um'\]"):
        sepal.io.read_visium_hd(outs, bin_size=2)
    with pytest.raises(ValueError, match="bin_size must be a positive integer"):
        sepal.io.read_visium_hd(outs, bin_size=8.0)
    with pytest.raises(FileNotFoundError, match="binned outputs not found"):
        sepal.io.read_visium_hd(outs / "spatial")


def test_bin_size_disagreeing_with_its_folder(tmp_path):
    outs = tmp_path / "outs"
    _write_bins(outs, 8, stated_bin_um=16)
    with pytest.raises(ValueError, match="bin_size_um=16.0, not 8"):
        sepal.io.read_visium_hd(outs, bin_size=8)
