"""Reader for 10x Genomics Visium (Space Ranger ``outs/`` folders)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from anndata import AnnData

from sepal_tl._logging import logger

from ._common import check_library_id, counts_matrix, finish, reading, require_file, spatial_entry
from ._images import check_within_image, image_size, read_image

_MATRIX = "filtered_feature_bc_matrix.h5"
_POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
_SCALEFACTORS = ("tissue_hires_scalef", "tissue_lowres_scalef", "spot_diameter_fullres")
_H5_METADATA = ("chemistry_description", "software_version")


def _outs_folder(path: Path) -> Path:
    """Accept the ``outs/`` folder itself or the Space Ranger run folder that contains it."""
    if not path.is_dir():
        msg = (
            f"Visium folder not found: {str(path)!r} is not a directory. Pass a Space Ranger 'outs/' folder "
            f"holding {_MATRIX} and spatial/."
        )
        raise FileNotFoundError(msg)
    if not (path / _MATRIX).exists() and (path / "outs" / _MATRIX).exists():
        return path / "outs"
    return path


def _read_positions(spatial_dir: Path) -> pd.DataFrame:
    """Read ``tissue_positions.csv`` (Space Ranger >= 2, with header) or ``tissue_positions_list.csv`` (1.x)."""
    with_header = spatial_dir / "tissue_positions.csv"
    parquet = spatial_dir / "tissue_positions.parquet"
    without_header = spatial_dir / "tissue_positions_list.csv"
    if with_header.is_file():
        path, read = with_header, lambda: pd.read_csv(with_header)
    elif parquet.is_file():
        path, read = parquet, lambda: pd.read_parquet(parquet)
    elif without_header.is_file():
        path, read = without_header, lambda: pd.read_csv(without_header, header=None, names=_POSITION_COLUMNS)
    else:
        msg = (
            f"Spot positions not found: neither {str(with_header)!r} nor {str(without_header)!r} exists. "
            "read_visium expects Space Ranger's spatial/ folder next to the count matrix."
        )
        raise FileNotFoundError(msg)
    with reading(path, "spot positions file"):
        positions = read()
    missing = [c for c in _POSITION_COLUMNS if c not in positions.columns]
    if missing:
        msg = f"The spot positions file {str(path)!r} lacks the columns {missing}."
        raise ValueError(msg)
    for column in ("in_tissue", "array_row", "array_col"):
        positions[column] = _integer_column(positions[column], column, path)
    if not positions["in_tissue"].isin([0, 1]).all():
        msg = f"Column 'in_tissue' of {str(path)!r} must hold 0 or 1 for every spot."
        raise ValueError(msg)
    for column in ("pxl_row_in_fullres", "pxl_col_in_fullres"):
        values = pd.to_numeric(positions[column], errors="coerce")
        if not np.isfinite(values.to_numpy(dtype=float)).all():
            msg = f"Column {column!r} of {str(path)!r} has missing or non-numeric pixel coordinates."
            raise ValueError(msg)
        positions[column] = values.astype(np.float64)
    positions = positions.set_index("barcode")
    if positions.index.duplicated().any():
        msg = f"{str(path)!r} lists the barcodes {list(positions.index[positions.index.duplicated()][:3])} twice."
        raise ValueError(msg)
    return positions


def _integer_column(values: pd.Series, column: str, path: Path) -> pd.Series:
    """Whole numbers of a positions column; fractions ("3.7"), text and empty cells are refused."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    if bad.any():
        first = values.iloc[int(np.flatnonzero(bad)[0])]
        msg = (
            f"Column {column!r} of {str(path)!r} must hold whole numbers; {int(bad.sum())} row(s) do not, e.g. "
            f"{first!r}."
        )
        raise ValueError(msg)
    return pd.Series(numbers.astype(np.int64), index=values.index)


def _read_scalefactors(path: Path) -> dict:
    """Space Ranger's scale factors; the ones read_visium uses must be positive, finite numbers."""
    with reading(path, "scale factors JSON"):
        try:
            scalefactors = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            msg = f"{str(path)!r} is not valid JSON ({err}); is it Space Ranger's scalefactors_json.json?"
            raise ValueError(msg) from err
    if not isinstance(scalefactors, dict):
        msg = f"{str(path)!r} must hold a JSON object of scale factors, got {type(scalefactors).__name__}."
        raise ValueError(msg)
    missing = [key for key in _SCALEFACTORS if key not in scalefactors]
    if missing:
        msg = f"{str(path)!r} lacks the scale factors {missing}; is it Space Ranger's JSON?"
        raise ValueError(msg)
    for key in _SCALEFACTORS:
        value = scalefactors[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
            msg = f"Scale factor {key!r} in {str(path)!r} must be a positive, finite number, got {value!r}."
            raise ValueError(msg)
    return scalefactors


def _h5_metadata(path: Path) -> dict[str, str]:
    """Space Ranger's chemistry and software version, stored as attributes of the matrix file."""
    metadata = {}
    with h5py.File(path, "r") as f:
        for key in _H5_METADATA:
            if key in f.attrs:
                value = np.asarray(f.attrs[key]).ravel()[0]
                metadata[key] = value.decode() if isinstance(value, bytes) else str(value)
    return metadata


def _read_count_matrix(path: Path) -> AnnData:
    import scanpy as sc  # imported here: it is slow to import and only this reader needs it

    with warnings.catch_warnings(), reading(path, "Space Ranger count matrix"):
        warnings.filterwarnings("ignore", message=".*not unique.*", category=UserWarning)
        try:
            adata = sc.read_10x_h5(path)
        except Exception as err:
            if not isinstance(err, KeyError) and type(err) is not Exception:  # scanpy raises a bare Exception
                raise
            msg = f"{str(path)!r} lacks datasets of a 10x count matrix ({err}); is it filtered_feature_bc_matrix.h5?"
            raise ValueError(msg) from err
    adata.var["gene_symbols"] = adata.var_names.astype(str)
    adata.var_names_make_unique()
    return adata


def read_visium(
    path: str | os.PathLike,
    *,
    library_id: str | None = None,
    fullres_image: str | os.PathLike | None = None,
) -> AnnData:
    """Read a 10x Genomics Visium slide from a Space Ranger ``outs/`` folder.

    Only the spots that are in tissue and present in the filtered count matrix are kept.

    Parameters
    ----------
    path
        The Space Ranger ``outs/`` folder (or the run folder that contains ``outs/``), holding
        ``filtered_feature_bc_matrix.h5`` and ``spatial/`` with ``tissue_positions.csv`` (Space Ranger >= 2) or
        ``tissue_positions_list.csv`` (1.x), ``scalefactors_json.json``, ``tissue_hires_image.png`` and
        ``tissue_lowres_image.png``.
    library_id
        Name of the slide. Defaults to the folder name (the run folder's name when ``path`` ends in ``outs``).
    fullres_image
        Optional full-resolution TIFF/JPEG the spot coordinates refer to. It is not loaded: its size is read
        from the header to check the coordinates and its path is stored as
        ``uns["spatial"][library_id]["metadata"]["source_image_path"]``.

    Returns
    -------
    AnnData with

    - ``X``: raw counts, CSR ``float32``, and a copy in ``layers["counts"]``;
    - ``obs_names``: ``f"{library_id}_{barcode}"`` (unique across slides), ``obs["barcode"]``,
      ``obs["array_row"]``, ``obs["array_col"]`` (int) and ``obs["library_id"]`` (categorical);
    - ``var_names``: gene symbols made unique, ``var["gene_symbols"]`` (as in the file), ``var["gene_ids"]``;
    - ``obsm["spatial"]``: full-resolution pixel coordinates, x = column, y = row (``float64``);
    - ``uns["spatial"][library_id]``: ``images`` (``hires``/``lowres``, ``uint8`` RGB), ``scalefactors``
      (Space Ranger's JSON) and ``metadata``.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.io.read_visium("V1_Breast_Cancer_Block_A_Section_1/outs", fullres_image="image.tif")
    """
    outs = _outs_folder(Path(path))
    if library_id is None:
        library_id = (outs.parent if outs.name == "outs" else outs).resolve().name
    library_id = check_library_id(library_id)
    matrix_path = require_file(outs / _MATRIX, "Space Ranger filtered count matrix (filtered_feature_bc_matrix.h5)")
    spatial_dir = outs / "spatial"
    scalefactors_path = require_file(spatial_dir / "scalefactors_json.json", "Space Ranger scale factors JSON")
    if fullres_image is not None:
        fullres_image = require_file(fullres_image, "Full-resolution image (fullres_image=)")

    positions = _read_positions(spatial_dir)
    scalefactors = _read_scalefactors(scalefactors_path)
    adata = _read_count_matrix(matrix_path)

    in_tissue = positions.index[positions["in_tissue"] == 1]
    keep = adata.obs_names.isin(in_tissue)
    if not keep.all():
        logger.warning(
            "%s: dropped %d of %d matrix barcodes that are not in tissue in the positions file.",
            library_id,
            int((~keep).sum()),
            adata.n_obs,
        )
        adata = adata[keep].copy()
    positions = positions.loc[adata.obs_names]
    coords = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)

    images: dict[str, np.ndarray] = {}
    for res in ("hires", "lowres"):
        png = spatial_dir / f"tissue_{res}_image.png"
        if not png.is_file():
            logger.warning("%s: %s not found; uns['spatial'] will lack the %r image.", library_id, png, res)
            continue
        images[res] = read_image(png)
        check_within_image(
            coords * scalefactors[f"tissue_{res}_scalef"], images[res].shape[:2], what=f"{png}", tolerance=1.0
        )
    metadata = _h5_metadata(matrix_path)
    if fullres_image is not None:
        check_within_image(coords, image_size(fullres_image), what=f"the full-resolution image {fullres_image}")
        metadata["source_image_path"] = str(fullres_image)

    adata.obs["barcode"] = adata.obs_names.astype(str)
    adata.obs_names = [f"{library_id}_{barcode}" for barcode in adata.obs["barcode"]]
    adata.X = counts_matrix(adata.X, what=f"counts in {matrix_path}")
    finish(
        adata,
        library_id=library_id,
        spatial=coords,
        array_row=positions["array_row"].to_numpy(),
        array_col=positions["array_col"].to_numpy(),
        entry=spatial_entry(images, scalefactors, metadata),
    )
    logger.info("read Visium slide %r: %d spots x %d genes", library_id, adata.n_obs, adata.n_vars)
    return adata
