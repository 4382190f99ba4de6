from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse

import sepal_tl as sepal
from sepal_tl._logging import logger

DATA = Path(__file__).parents[1].parent / "shared" / "data"
HER2ST = DATA / "her2st"
needs_her2st = pytest.mark.skipif(not HER2ST.exists(), reason="shared her2st data not available")

# synthetic section: a 4 x 3 lattice (x = 1..4, y = 1..3) at 200 px pitch, in a 1000 x 900 (w x h) image
PITCH = 200.0
GENES = ["GENE1", "GENE2", "GENE3", "GENE4", "GENE5"]


def write_section(tmp_path: Path, *, counts: np.ndarray | None = None, image_size=(900, 1000)):
    """Write counts TSV (her2st style, empty first header cell), spot file and JPEG; return their paths."""
    lattice = [(x, y) for y in range(1, 4) for x in range(1, 5)]
    spots = pd.DataFrame(
        {
            "x": [x for x, _ in lattice],
            "y": [y for _, y in lattice],
            "pixel_x": [100 + PITCH * (x - 1) + 0.5 for x, _ in lattice],
            "pixel_y": [150 + PITCH * (y - 1) for _, y in lattice],
            "selected": 1,
        }
    )
    spots.loc[11, "selected"] = 0  # (4, 3) is not selected
    spots.loc[len(spots)] = [9, 9, 50.0, 50.0, 1]  # selected, but has no counts
    if counts is None:
        counts = np.random.default_rng(0).poisson(3, size=(12, len(GENES)))
    table = pd.DataFrame(counts, index=[f"{x}x{y}" for x, y in lattice], columns=GENES)
    paths = {"counts": tmp_path / "cnts.tsv.gz", "spots": tmp_path / "spots.tsv", "image": tmp_path / "he.jpg"}
    table.to_csv(paths["counts"], sep="\t")
    spots.to_csv(paths["spots"], sep="\t", index=False)
    Image.new("RGB", (image_size[1], image_size[0]), (200, 120, 180)).save(paths["image"])
    return paths, table


@pytest.fixture
def section(tmp_path):
    return write_section(tmp_path)


@pytest.fixture
def sepal_log(caplog):
    """Capture the package logger (which does not propagate to the root logger) at INFO level."""
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


def test_synthetic_section(section, sepal_log):
    paths, table = section
    adata = sepal.io.read_st(paths["counts"], paths["spots"], paths["image"], library_id="S1", patient="P1")
    # (4, 3) unselected and (9, 9) without counts are dropped
    assert adata.shape == (11, len(GENES))
    assert "S1_4x3" not in adata.obs_names
    assert adata.obs_names[0] == "S1_1x1"
    assert "dropped 1 of 12 spots of the count matrix" in sepal_log.text
    assert "dropped 1 of 12 spot-file positions" in sepal_log.text

    assert sparse.isspmatrix_csr(adata.X)
    assert adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), table.iloc[:11].to_numpy())
    assert (adata.layers["counts"] != adata.X).nnz == 0
    assert list(adata.var_names) == GENES
    assert list(adata.var["gene_symbols"]) == GENES

    spot = adata.obs.loc["S1_3x2"]
    assert (spot["array_col"], spot["array_row"]) == (3, 2)  # col = x, row = y
    assert adata.obs["array_row"].dtype == np.int64
    i = adata.obs_names.get_loc("S1_3x2")
    np.testing.assert_array_equal(adata.obsm["spatial"][i], [100 + 2 * PITCH + 0.5, 150 + PITCH])
    assert list(adata.obs["library_id"].cat.categories) == ["S1"]
    assert list(adata.obs["patient"].cat.categories) == ["P1"]


def test_images_and_scalefactors(tmp_path):
    paths, _ = write_section(tmp_path, image_size=(3000, 2400))
    adata = sepal.io.read_st(paths["counts"], paths["spots"], paths["image"], library_id="S1")
    entry = adata.uns["spatial"]["S1"]
    assert entry["images"]["hires"].shape == (2000, 1600, 3)
    assert entry["images"]["lowres"].shape == (600, 480, 3)
    assert entry["images"]["hires"].dtype == np.uint8
    assert np.abs(entry["images"]["hires"].astype(int) - [200, 120, 180]).max() <= 3
    assert entry["scalefactors"]["tissue_hires_scalef"] == pytest.approx(2000 / 3000)
    assert entry["scalefactors"]["tissue_lowres_scalef"] == pytest.approx(600 / 3000)
    assert entry["metadata"]["source_image_path"] == str(paths["image"])


def test_derived_and_given_spot_diameter(section):
    paths, _ = section
    derived = sepal.io.read_st(paths["counts"], paths["spots"], library_id="S1")
    scalefactors = derived.uns["spatial"]["S1"]["scalefactors"]
    assert scalefactors["spot_diameter_fullres"] == pytest.approx(PITCH / 2)
    assert derived.uns["spatial"]["S1"]["metadata"]["spot_diameter_source"].startswith("derived from spot pitch")

    given = sepal.io.read_st(paths["counts"], paths["spots"], library_id="S1", spot_diameter_px=55)
    assert given.uns["spatial"]["S1"]["scalefactors"]["spot_diameter_fullres"] == 55.0
    assert given.uns["spatial"]["S1"]["metadata"]["spot_diameter_source"] == "given"


def test_count_only_section(section):
    paths, _ = section
    adata = sepal.io.read_st(paths["counts"], paths["spots"], library_id="S1")
    entry = adata.uns["spatial"]["S1"]
    assert entry["images"] == {}
    assert "source_image_path" not in entry["metadata"]
    assert set(entry["scalefactors"]) == {"spot_diameter_fullres"}


def test_spot_file_without_selected_and_comma_separated(tmp_path):
    paths, _ = write_section(tmp_path)
    spots = pd.read_csv(paths["spots"], sep="\t").drop(columns="selected")
    spots.to_csv(tmp_path / "spots.csv", index=False)
    adata = sepal.io.read_st(paths["counts"], tmp_path / "spots.csv", library_id="S1")
    assert adata.n_obs == 12  # (4, 3) is kept now


def test_ensembl_columns_become_gene_ids(tmp_path):
    paths, table = write_section(tmp_path)
    table.columns = [f"ENSG0000000000{i}" for i in range(len(GENES))]
    table.to_csv(paths["counts"], sep="\t")
    adata = sepal.io.read_st(paths["counts"], paths["spots"], library_id="S1")
    assert list(adata.var["gene_ids"]) == list(table.columns)


@pytest.mark.parametrize("which", ["counts", "spots"])
def test_missing_input_file(section, tmp_path, which):
    paths, _ = section
    paths[which] = tmp_path / f"missing_{which}.tsv"
    with pytest.raises(FileNotFoundError, match=f"missing_{which}.tsv"):
        sepal.io.read_st(paths["counts"], paths["spots"], library_id="S1")


def test_missing_image_file(section, tmp_path):
    paths, _ = section
    with pytest.raises(FileNotFoundError, match=r"H&E image.*nope\.jpg"):
        sepal.io.read_st(paths["counts"], paths["spots"], tmp_path / "nope.jpg", library_id="S1")


def test_spots_outside_image(tmp_path):
    paths, _ = write_section(tmp_path, image_size=(300, 400))
    with pytest.raises(ValueError, match=r"spot centres fall outside the image .*he\.jpg"):
        sepal.io.read_st(paths["counts"], paths["spots"], paths["image"], library_id="S1")


@pytest.mark.parametrize(
    ("value", "match"),
    [(np.nan, "NaN"), (-1, "negative"), (0.5, "non-integer")],
)
def test_bad_counts(tmp_path, value, match):
    counts = np.ones((12, len(GENES)))
    counts[2, 1] = value
    paths, _ = write_section(tmp_path, counts=counts)
    with pytest.raises(ValueError, match=match):
        sepal.io.read_st(paths["counts"], paths["spots"], library_id="S1")


def test_bad_spot_file(section, tmp_path):
    paths, _ = section
    pd.read_csv(paths["spots"], sep="\t").drop(columns="pixel_y").to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match=r"lacks the columns \['pixel_y'\]"):
        sepal.io.read_st(paths["counts"], tmp_path / "bad.tsv", library_id="S1")


def test_no_matching_spots(section, tmp_path):
    paths, _ = section
    spots = pd.read_csv(paths["spots"], sep="\t")
    spots["x"] += 100
    spots.to_csv(tmp_path / "shifted.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match="No spot of"):
        sepal.io.read_st(paths["counts"], tmp_path / "shifted.tsv", library_id="S1")


def test_bad_options(section):
    paths, _ = section
    with pytest.raises(ValueError, match="library_id"):
        sepal.io.read_st(paths["counts"], paths["spots"], library_id="bad id/1")
    with pytest.raises(ValueError, match="spot_diameter_px"):
        sepal.io.read_st(paths["counts"], paths["spots"], library_id="S1", spot_diameter_px=-3)


def test_isolated_spots_need_a_given_diameter(tmp_path):
    paths, _ = write_section(tmp_path)
    spots = pd.read_csv(paths["spots"], sep="\t")
    spots = spots[(spots["x"] + spots["y"]) % 2 == 0]  # a checkerboard: no two spots adjacent
    spots.to_csv(paths["spots"], sep="\t", index=False)
    with pytest.raises(ValueError, match="spot_diameter_px="):
        sepal.io.read_st(paths["counts"], paths["spots"], library_id="S1")
    sepal.io.read_st(paths["counts"], paths["spots"], library_id="S1", spot_diameter_px=100)


@pytest.mark.realdata
@needs_her2st
@pytest.mark.parametrize(("section_id", "image", "n_spots"), [("C2", "C/C2", 187), ("B4", "B/B4", 283)])
def test_her2st_with_image(section_id, image, n_spots):
    [jpg] = (HER2ST / "ST-imgs" / image).glob("*.jpg")
    adata = sepal.io.read_st(
        HER2ST / "ST-cnts" / f"{section_id}.tsv.gz",
        HER2ST / "ST-spotfiles" / f"{section_id}_selection.tsv",
        jpg,
        library_id=section_id,
        patient=section_id[0],
    )
    assert adata.n_obs == n_spots
    assert adata.n_vars > 10_000
    entry = adata.uns["spatial"][section_id]
    assert max(entry["images"]["hires"].shape[:2]) == 2000
    assert max(entry["images"]["lowres"].shape[:2]) == 600
    # her2st: 100 um spots at 200 um pitch; the lattice pitch in these images is ~290 px
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(145, abs=5)
    assert entry["metadata"]["source_image_path"] == str(jpg)


@pytest.mark.realdata
@needs_her2st
def test_her2st_c2_coordinates():
    adata = sepal.io.read_st(
        HER2ST / "ST-cnts" / "C2.tsv.gz", HER2ST / "ST-spotfiles" / "C2_selection.tsv", library_id="C2"
    )
    # first row of C2_selection.tsv: x 25, y 13, pixel_x 6930.58, pixel_y 3510.24
    i = adata.obs_names.get_loc("C2_25x13")
    np.testing.assert_allclose(adata.obsm["spatial"][i], [6930.58, 3510.24])
    assert (adata.obs["array_col"].iloc[i], adata.obs["array_row"].iloc[i]) == (25, 13)
    # the her2st count matrix's first header cell is empty: the spot names must not become a gene
    assert "Unnamed: 0" not in adata.var_names


@pytest.mark.realdata
@needs_her2st
def test_her2st_count_only_section():
    adata = sepal.io.read_st(
        HER2ST / "ST-cnts" / "A1.tsv.gz", HER2ST / "ST-spotfiles" / "A1_selection.tsv", library_id="A1"
    )
    assert adata.n_obs == 346
    assert adata.uns["spatial"]["A1"]["images"] == {}
    assert adata.uns["spatial"]["A1"]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(109, abs=3)
