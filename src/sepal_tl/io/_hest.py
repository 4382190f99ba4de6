"""Reader for HEST-1k samples (Jaume et al. 2024): ``st/{id}.h5ad``, ``wsis/{id}.tif``, ``metadata/{id}.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from anndata import AnnData, read_h5ad

from sepal_tl._logging import logger
from sepal_tl._settings import settings
from sepal_tl._validation import check_positive, check_spatial

from ._common import check_library_id, counts_matrix, finish, require_file, spatial_entry
from ._images import check_within_image, read_image_downscaled

#: Longest side of the downscaled WSI stored as the ``hires`` image (read from the smallest sufficient level).
HIRES_SIDE = 2000
#: Metadata keys that place the spots: pixel size (µm / px), spot diameter and centre-to-centre distance (µm).
_GEOMETRY_KEYS = ("pixel_size_um_estimated", "spot_diameter", "inter_spot_dist")


def hest_files(sample_id: str, hest_dir: Path) -> dict[str, Path]:
    """The three files of a HEST sample; ``FileNotFoundError`` naming the first one that is missing."""
    return {
        "st": require_file(hest_dir / "st" / f"{sample_id}.h5ad", f"HEST expression of sample {sample_id!r}"),
        "wsi": require_file(hest_dir / "wsis" / f"{sample_id}.tif", f"HEST whole-slide image of sample {sample_id!r}"),
        "metadata": require_file(hest_dir / "metadata" / f"{sample_id}.json", f"HEST metadata of sample {sample_id!r}"),
    }


def _lattice_indices(coords: np.ndarray, pitch: float, hexagonal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integer ``(array_row, array_col)`` of spots on a lattice of centre-to-centre distance ``pitch`` pixels.

    Visium's hex grid gets doubled-column indices (rows ``pitch * sqrt(3) / 2`` apart, columns ``pitch / 2``),
    the square grids of legacy ST and pseudo-spots plain ones.
    """
    x, y = coords[:, 0] - coords[:, 0].min(), coords[:, 1] - coords[:, 1].min()
    if hexagonal:
        return np.round(y / (pitch * np.sqrt(3) / 2)).astype(np.int64), np.round(x / (pitch / 2)).astype(np.int64)
    return np.round(y / pitch).astype(np.int64), np.round(x / pitch).astype(np.int64)


def read_hest(
    path_or_id: str | os.PathLike,
    *,
    hest_dir: str | os.PathLike | None = None,
    library_id: str | None = None,
) -> AnnData:
    """Read one HEST-1k sample (Visium, legacy ST, or Xenium / Visium HD pseudo-spots) with its whole-slide image.

    The WSI is not loaded: a downscaled copy (longest side :data:`HIRES_SIDE` px) is read from the smallest
    sufficient level of the pyramidal TIFF and stored as the ``hires`` image, and the file's path as
    ``metadata["source_image_path"]``, from which :mod:`sepal_tl.tl` cuts patches lazily (tile by tile, through
    zarr). Spot sizes come from the sample's metadata: ``spot_diameter`` and ``inter_spot_dist`` (µm) divided
    by ``pixel_size_um_estimated`` (µm per WSI pixel).

    Parameters
    ----------
    path_or_id
        A sample id (e.g. ``"TENX95"``), read from ``hest_dir``; or the path of its ``st/{id}.h5ad`` file, whose
        grandparent folder is then the HEST folder.
    hest_dir
        Local HEST-1k folder with ``st/``, ``wsis/`` and ``metadata/`` (default: the ``.h5ad``'s grandparent for a
        path, else ``sepal.settings.datasetdir / "hest"``).
    library_id
        Name of the slide (default: the sample id).

    Returns
    -------
    AnnData with raw counts in ``X`` and ``layers["counts"]``, ``obs_names`` ``f"{library_id}_{barcode}"``,
    ``obsm["spatial"]`` (WSI level-0 pixels, x = column, y = row), ``obs["array_row"]`` / ``obs["array_col"]``
    (from the file, else from the pixel positions and ``inter_spot_dist``: Visium's hex grid for
    ``st_technology == "Visium"``, a square grid otherwise, as HEST's Xenium / Visium HD pseudo-spots of 55 µm
    100 µm apart and legacy ST), ``obs["library_id"]`` and
    ``uns["spatial"][library_id]`` with the ``hires`` image, ``scalefactors`` (``tissue_hires_scalef``,
    ``spot_diameter_fullres``) and ``metadata`` (``source_image_path`` and the sample's HEST metadata).

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.io.read_hest("TENX95", hest_dir="hest_data")
    """
    given = Path(path_or_id)
    if given.suffix == ".h5ad":
        sample_id = given.stem
        folder = Path(hest_dir) if hest_dir is not None else given.resolve().parent.parent
    else:
        sample_id = str(path_or_id)
        folder = Path(hest_dir) if hest_dir is not None else settings.datasetdir / "hest"
    library_id = check_library_id(sample_id if library_id is None else library_id)
    files = hest_files(sample_id, folder)
    with open(files["metadata"]) as fh:
        meta = json.load(fh)
    missing = [key for key in _GEOMETRY_KEYS if meta.get(key) is None]
    if missing:
        msg = f"{str(files['metadata'])!r} lacks {missing}; HEST metadata place the spots with {list(_GEOMETRY_KEYS)}."
        raise KeyError(msg)
    pixel = check_positive("pixel_size_um_estimated", meta["pixel_size_um_estimated"])
    diameter = check_positive("spot_diameter", meta["spot_diameter"]) / pixel
    pitch = check_positive("inter_spot_dist", meta["inter_spot_dist"]) / pixel

    adata = read_h5ad(files["st"])
    coords = check_spatial(adata)
    adata.X = counts_matrix(adata.X, what=f"counts in {files['st']}")
    image, scale = read_image_downscaled(files["wsi"], max_side=HIRES_SIDE)
    check_within_image(
        coords * scale, image.shape[:2], what=f"the WSI {files['wsi']}", tolerance=1.0 + diameter * scale
    )
    if {"array_row", "array_col"} <= set(adata.obs):
        rows, cols = adata.obs["array_row"].to_numpy(), adata.obs["array_col"].to_numpy()
    else:
        technology = str(meta.get("st_technology", "")).lower()
        rows, cols = _lattice_indices(coords, pitch, hexagonal=technology == "visium")
        logger.info("%s: array coordinates derived from the pixel positions (pitch %.1f px)", library_id, pitch)
    adata.obs["barcode"] = adata.obs_names.astype(str)
    adata.obs_names = [f"{library_id}_{barcode}" for barcode in adata.obs["barcode"]]
    adata.obsm.clear()
    adata.uns.clear()
    plain = {key: value for key, value in meta.items() if isinstance(value, str | int | float | bool)}
    entry = spatial_entry(
        {"hires": image},
        {"tissue_hires_scalef": scale, "spot_diameter_fullres": diameter},
        {"source_image_path": str(files["wsi"]), "hest": plain},
    )
    finish(adata, library_id=library_id, spatial=coords, array_row=rows, array_col=cols, entry=entry)
    logger.info("read HEST sample %s: %d spots x %d genes", sample_id, adata.n_obs, adata.n_vars)
    return adata
