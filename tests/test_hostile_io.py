"""Hostile reader inputs: each damaged Visium or legacy-ST file is refused with the file and the column named.

The Visium folder is written by the test itself (a 6-spot Space Ranger layout), so no shared data are needed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse

import sepal_tl as sepal


def write_visium(folder: Path, n: int = 6, n_genes: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spatial = folder / "spatial"
    spatial.mkdir(exist_ok=True)
    barcodes = [f"AAAC{i:04d}-1" for i in range(n)]
    counts = sparse.csc_matrix(np.arange(1, n * n_genes + 1, dtype=np.int32).reshape(n_genes, n))
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(barcodes, dtype="S")
        m["data"], m["indices"], m["indptr"] = (
            counts.data,
            counts.indices.astype(np.int64),
            counts.indptr.astype(np.int64),
        )
        m["shape"] = np.array([n_genes, n], dtype=np.int32)
        feat = m.create_group("features")
        feat["id"] = np.array([f"ENSG{i:011d}" for i in range(n_genes)], dtype="S")
        feat["name"] = np.array([f"G{i}" for i in range(n_genes)], dtype="S")
        feat["feature_type"] = np.array(["Gene Expression"] * n_genes, dtype="S")
        feat["genome"] = np.array(["GRCh38"] * n_genes, dtype="S")
    rows = np.arange(n) // 3
    cols = 2 * (np.arange(n) % 3) + rows % 2
    pd.DataFrame(
        {
            "barcode": barcodes,
            "in_tissue": 1,
            "array_row": rows,
            "array_col": cols,
            "pxl_row_in_fullres": 100 + 50 * rows,
            "pxl_col_in_fullres": 100 + 29 * cols,
        }
    ).to_csv(spatial / "tissue_positions.csv", index=False)
    (spatial / "scalefactors_json.json").write_text(
        json.dumps(
            {
                "tissue_hires_scalef": 0.5,
                "tissue_lowres_scalef": 0.1,
                "spot_diameter_fullres": 40.0,
                "fiducial_diameter_fullres": 60.0,
            }
        )
    )
    Image.fromarray(np.full((300, 300, 3), 200, np.uint8)).save(spatial / "tissue_hires_image.png")
    Image.fromarray(np.full((60, 60, 3), 200, np.uint8)).save(spatial / "tissue_lowres_image.png")
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def visium(tmp_path) -> Path:
    return write_visium(tmp_path / "outs")


def test_the_fixture_reads(visium):
    adata = sepal.io.read_visium(visium, library_id="s1")
    assert adata.shape == (6, 4)
    assert (adata.obs["array_row"] + adata.obs["array_col"]).mod(2).eq(0).all()
    np.testing.assert_array_equal(adata.obsm["spatial"][1], [100 + 29 * 2, 100])


def _positions(change):
    def damage(folder):
        path = folder / "spatial" / "tissue_positions.csv"
        table = pd.read_csv(path, dtype=str)
        change(table)
        table.to_csv(path, index=False)

    return damage


def _cell(column, value, row=1):
    def change(table):
        table.loc[row, column] = value

    return _positions(change)


def _drop_column(column):
    return _positions(lambda table: table.drop(columns=[column], inplace=True))


def _scalefactor(key, value):
    def damage(folder):
        path = folder / "spatial" / "scalefactors_json.json"
        factors = json.loads(path.read_text())
        factors[key] = value
        path.write_text(json.dumps(factors))

    return damage


def _drop_scalefactor(key):
    def damage(folder):
        path = folder / "spatial" / "scalefactors_json.json"
        factors = json.loads(path.read_text())
        del factors[key]
        path.write_text(json.dumps(factors))

    return damage


def _write(relative, data: bytes):
    def damage(folder):
        (folder / relative).write_bytes(data)

    return damage


def _truncate(relative, keep=0.5):
    def damage(folder):
        path = folder / relative
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return damage


def _drop_h5(dataset):
    def damage(folder):
        with h5py.File(folder / "filtered_feature_bc_matrix.h5", "a") as f:
            del f[dataset]

    return damage


POSITIONS = "tissue_positions.csv"
SCALEFACTORS = "scalefactors_json.json"
MATRIX = "filtered_feature_bc_matrix.h5"

VISIUM_DAMAGE = [
    (_cell("array_row", "3.7"), POSITIONS, "'array_row'"),
    (_cell("array_row", "0.5"), POSITIONS, "'array_row'"),
    (_cell("array_row", "abc"), POSITIONS, "'array_row'"),
    (_cell("array_row", ""), POSITIONS, "'array_row'"),
    (_cell("array_col", "2.2"), POSITIONS, "'array_col'"),
    (_cell("array_col", "inf"), POSITIONS, "'array_col'"),
    (_cell("array_col", ""), POSITIONS, "'array_col'"),
    (_cell("in_tissue", "2"), POSITIONS, "'in_tissue'"),
    (_cell("in_tissue", "yes"), POSITIONS, "'in_tissue'"),
    (_cell("in_tissue", ""), POSITIONS, "'in_tissue'"),
    (_cell("pxl_row_in_fullres", ""), POSITIONS, "'pxl_row_in_fullres'"),
    (_cell("pxl_row_in_fullres", "nan"), POSITIONS, "'pxl_row_in_fullres'"),
    (_cell("pxl_col_in_fullres", "left"), POSITIONS, "'pxl_col_in_fullres'"),
    (_cell("pxl_col_in_fullres", "-inf"), POSITIONS, "'pxl_col_in_fullres'"),
    (_cell("barcode", "AAAC0000-1"), POSITIONS, "twice"),
    (_drop_column("pxl_row_in_fullres"), POSITIONS, "pxl_row_in_fullres"),
    (_drop_column("pxl_col_in_fullres"), POSITIONS, "pxl_col_in_fullres"),
    (_drop_column("array_row"), POSITIONS, "array_row"),
    (_drop_column("in_tissue"), POSITIONS, "in_tissue"),
    (_write("spatial/tissue_positions.csv", b""), POSITIONS, "truncated"),
    (_write("spatial/tissue_positions.csv", b"\xff\xfe\x00\x01garbage\x00"), POSITIONS, POSITIONS),
    (_scalefactor("spot_diameter_fullres", -40.0), SCALEFACTORS, "spot_diameter_fullres"),
    (_scalefactor("spot_diameter_fullres", 0), SCALEFACTORS, "spot_diameter_fullres"),
    (_scalefactor("spot_diameter_fullres", "40"), SCALEFACTORS, "spot_diameter_fullres"),
    (_scalefactor("spot_diameter_fullres", None), SCALEFACTORS, "spot_diameter_fullres"),
    (_scalefactor("spot_diameter_fullres", True), SCALEFACTORS, "spot_diameter_fullres"),
    (_scalefactor("tissue_hires_scalef", float("nan")), SCALEFACTORS, "tissue_hires_scalef"),
    (_scalefactor("tissue_hires_scalef", float("inf")), SCALEFACTORS, "tissue_hires_scalef"),
    (_scalefactor("tissue_lowres_scalef", -0.1), SCALEFACTORS, "tissue_lowres_scalef"),
    (_scalefactor("tissue_lowres_scalef", [0.1]), SCALEFACTORS, "tissue_lowres_scalef"),
    (_drop_scalefactor("spot_diameter_fullres"), SCALEFACTORS, "spot_diameter_fullres"),
    (_drop_scalefactor("tissue_hires_scalef"), SCALEFACTORS, "tissue_hires_scalef"),
    (_write("spatial/scalefactors_json.json", b'{"tissue_hires_scalef": 0.5,'), SCALEFACTORS, "not valid JSON"),
    (_write("spatial/scalefactors_json.json", b""), SCALEFACTORS, "not valid JSON"),
    (_write("spatial/scalefactors_json.json", b"[0.5, 0.1, 40]"), SCALEFACTORS, "JSON object"),
    (_write("spatial/scalefactors_json.json", b"\xff\xfe garbage"), SCALEFACTORS, SCALEFACTORS),
    (_truncate(MATRIX), MATRIX, "truncated"),
    (_truncate(MATRIX, 0.05), MATRIX, "truncated"),
    (_write(MATRIX, b"not an hdf5 file"), MATRIX, MATRIX),
    (_write(MATRIX, b""), MATRIX, MATRIX),
    (_drop_h5("matrix/features"), MATRIX, MATRIX),
    (_truncate("spatial/tissue_hires_image.png", 0.3), "tissue_hires_image.png", "truncated"),
    (_write("spatial/tissue_lowres_image.png", b"GIF89a not really"), "tissue_lowres_image.png", "not an image"),
]


@pytest.mark.parametrize(("damage", "file", "text"), VISIUM_DAMAGE)
def test_damaged_visium_files_are_refused_by_name(visium, damage, file, text):
    damage(visium)
    before = snapshot(visium)
    with pytest.raises(ValueError, match=file) as info:
        sepal.io.read_visium(visium, library_id="s1")
    assert text in str(info.value)
    assert snapshot(visium) == before  # readers never write


# ------------------------------------------------------------------------------------------------------ legacy ST


@pytest.fixture
def st_files(tmp_path) -> tuple[Path, Path]:
    xs, ys = np.meshgrid(np.arange(1, 4), np.arange(1, 4))
    names = [f"{x}x{y}" for x, y in zip(xs.ravel(), ys.ravel(), strict=True)]
    counts = pd.DataFrame(np.arange(1, 28).reshape(9, 3), index=names, columns=["ERBB2", "GAPDH", "ACTB"])
    counts_path = tmp_path / "counts.tsv.gz"
    counts.to_csv(counts_path, sep="\t")
    spots = pd.DataFrame(
        {"x": xs.ravel(), "y": ys.ravel(), "pixel_x": 100.0 * xs.ravel(), "pixel_y": 100.0 * ys.ravel()}
    )
    spots_path = tmp_path / "spots.tsv"
    spots.to_csv(spots_path, sep="\t", index=False)
    return counts_path, spots_path


def test_st_fixture_reads(st_files):
    adata = sepal.io.read_st(*st_files, library_id="A1")
    assert adata.shape == (9, 3)
    assert adata.uns["spatial"]["A1"]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(50.0)


def _gz_truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _gz_garbage(path: Path) -> None:
    path.write_bytes(b"\x1f\x8b\x08\x00garbage-after-the-magic")


def _counts_cell(value):
    def damage(path: Path) -> None:
        with gzip.open(path, "rt") as fh:
            lines = fh.read().splitlines()
        cells = lines[2].split("\t")
        cells[1] = value
        lines[2] = "\t".join(cells)
        with gzip.open(path, "wt") as fh:
            fh.write("\n".join(lines) + "\n")

    return damage


def _spot_cell(column, value):
    def damage(path: Path) -> None:
        table = pd.read_csv(path, sep="\t", dtype=str)
        table.loc[2, column] = value
        table.to_csv(path, sep="\t", index=False)

    return damage


ST_DAMAGE = [
    ("counts", _gz_truncated, "counts.tsv.gz"),
    ("counts", _gz_garbage, "counts.tsv.gz"),
    ("counts", lambda p: p.write_bytes(b""), "counts.tsv.gz"),
    ("counts", _counts_cell(""), "NaN"),
    ("counts", _counts_cell("many"), "numeric"),
    ("counts", _counts_cell("-3"), "negative"),
    ("counts", _counts_cell("2.5"), "non-integer"),
    ("spots", lambda p: p.write_bytes(b""), "spots.tsv"),
    ("spots", lambda p: p.write_text("a\tb\n1\t2\n"), "lacks the columns"),
    ("spots", _spot_cell("x", "1.5"), "'x'"),
    ("spots", _spot_cell("y", "up"), "'y'"),
    ("spots", _spot_cell("pixel_x", ""), "pixel_x"),
    ("spots", _spot_cell("pixel_y", "nan"), "pixel_y"),
    ("spots", _spot_cell("x", "1"), "more than once"),
]


@pytest.mark.parametrize(("which", "damage", "text"), ST_DAMAGE)
def test_damaged_st_files_are_refused(st_files, which, damage, text):
    counts, spots = st_files
    damage(counts if which == "counts" else spots)
    with pytest.raises(ValueError, match=text):
        sepal.io.read_st(counts, spots, library_id="A1")


@pytest.mark.parametrize(
    ("diameter", "error"), [(-1.0, ValueError), (0, ValueError), (float("nan"), ValueError), ("fifty", ValueError)]
)
def test_st_spot_diameter_is_checked(st_files, diameter, error):
    with pytest.raises(error, match="spot_diameter_px"):
        sepal.io.read_st(*st_files, library_id="A1", spot_diameter_px=diameter)


def test_st_image_that_is_truncated_is_named(st_files, tmp_path):
    image = tmp_path / "he.jpg"
    Image.fromarray(np.full((400, 400, 3), 180, np.uint8)).save(image, quality=90)
    image.write_bytes(image.read_bytes()[:300])
    with pytest.raises(ValueError, match="he.jpg"):
        sepal.io.read_st(*st_files, image, library_id="A1")


def test_duplicated_positions_across_readers_need_a_library_column(visium, tmp_path):
    """Two slides concatenated without a slide column share array positions: the graph refuses them."""
    import anndata as ad

    from sepal_tl._graph import lattice_graph
    from sepal_tl._validation import resolve_libraries

    one = sepal.io.read_visium(visium, library_id="s1")
    two = one.copy()
    two.obs_names = [f"copy_{n}" for n in two.obs_names]
    both = ad.concat([one, two])
    del both.obs["library_id"]
    with pytest.raises(ValueError, match="share an array position.*library_id"):
        lattice_graph(both, resolve_libraries(both, None))
