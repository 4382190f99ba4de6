"""Reader for legacy Spatial Transcriptomics sections (her2st, STNet layout)."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
from anndata import AnnData

from sepal_tl._logging import logger
from sepal_tl._validation import check_positive

from ._common import check_library_id, counts_matrix, finish, reading, require_file, spatial_entry
from ._images import check_within_image, hires_lowres, image_size, read_image_downscaled

HIRES_MAX_SIDE = 2000
LOWRES_MAX_SIDE = 600
#: legacy ST arrays: 100 µm spots on a 200 µm centre-to-centre lattice
SPOT_DIAMETER_PER_PITCH = 100 / 200
_SPOT_COLUMNS = ("x", "y", "pixel_x", "pixel_y")
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d+")


def _integer_column(values: pd.Series, *, name: str, path: os.PathLike) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(numbers).all() or (np.abs(numbers - np.round(numbers)) > 1e-6).any():
        msg = f"Column {name!r} of {str(path)!r} must hold integer array coordinates."
        raise ValueError(msg)
    return np.round(numbers).astype(np.int64)


def _read_spots(path: os.PathLike) -> pd.DataFrame:
    """Read the spot file and index it by ``f"{x}x{y}"``, keeping ``selected == 1`` rows when that column exists."""
    with reading(path, "spot file"):
        spots = pd.read_csv(path, sep=None, engine="python")
    missing = [c for c in _SPOT_COLUMNS if c not in spots.columns]
    if missing:
        msg = (
            f"The spot file {str(path)!r} lacks the columns {missing}; expected a table with columns "
            f"{list(_SPOT_COLUMNS)} (and optionally 'selected'), got {list(spots.columns)}."
        )
        raise ValueError(msg)
    if "selected" in spots.columns:
        selected = spots["selected"] == 1
        if not selected.all():
            logger.info("%s: kept %d of %d spots with selected == 1.", path, int(selected.sum()), len(spots))
        spots = spots[selected]
    x = _integer_column(spots["x"], name="x", path=path)
    y = _integer_column(spots["y"], name="y", path=path)
    pixels = spots[["pixel_x", "pixel_y"]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(pixels).all():
        msg = f"Columns 'pixel_x' / 'pixel_y' of {str(path)!r} contain missing or non-numeric values."
        raise ValueError(msg)
    table = pd.DataFrame(
        {"x": x, "y": y, "pixel_x": pixels[:, 0], "pixel_y": pixels[:, 1]},
        index=pd.Index([f"{i}x{j}" for i, j in zip(x, y, strict=True)]),
    )
    duplicated = table.index[table.index.duplicated()]
    if len(duplicated):
        msg = f"The spot file {str(path)!r} lists the array positions {list(duplicated[:5])} more than once."
        raise ValueError(msg)
    return table


def _read_counts(path: os.PathLike) -> pd.DataFrame:
    """Read a spots x genes TSV whose first column holds the ``"{x}x{y}"`` spot names."""
    with reading(path, "count matrix"):
        counts = pd.read_csv(path, sep="\t", index_col=0)
    counts.index = counts.index.astype(str)
    counts.columns = counts.columns.astype(str)
    duplicated = counts.index[counts.index.duplicated()]
    if len(duplicated):
        msg = f"The count matrix {str(path)!r} has duplicated spot names, e.g. {list(duplicated[:5])}."
        raise ValueError(msg)
    return counts


def spot_pitch(array_xy: np.ndarray, pixel_xy: np.ndarray) -> tuple[float, int]:
    """Median pixel distance between lattice-adjacent spots (one array step apart in x or in y).

    Parameters
    ----------
    array_xy
        ``(n, 2)`` integer array coordinates ``(x, y)``.
    pixel_xy
        ``(n, 2)`` pixel coordinates of the same spots.

    Returns
    -------
    ``(pitch, n_pairs)``: the median distance in pixels and the number of adjacent pairs it is based on.
    """
    lookup = {(int(x), int(y)): i for i, (x, y) in enumerate(array_xy)}
    distances = [
        np.hypot(*(pixel_xy[j] - pixel_xy[i]))
        for (x, y), i in lookup.items()
        for j in (lookup.get((x + 1, y)), lookup.get((x, y + 1)))
        if j is not None
    ]
    if not distances:
        msg = (
            "Cannot derive the spot diameter: no two spots are adjacent on the array lattice. "
            "Pass spot_diameter_px= (the spot diameter in full-resolution pixels)."
        )
        raise ValueError(msg)
    return float(np.median(distances)), len(distances)


def _spot_diameter(given: float | None, array_xy: np.ndarray, pixel_xy: np.ndarray) -> tuple[float, str]:
    if given is not None:
        return check_positive("spot_diameter_px", given), "given"
    pitch, n_pairs = spot_pitch(array_xy, pixel_xy)
    source = (
        f"derived from spot pitch: median {pitch:.2f} px between {n_pairs} lattice-adjacent spot pairs, "
        f"times {SPOT_DIAMETER_PER_PITCH} (100 um spots at 200 um pitch)"
    )
    return pitch * SPOT_DIAMETER_PER_PITCH, source


def _gene_annotation(names: pd.Index) -> pd.DataFrame:
    names = names.astype(str)
    column = "gene_ids" if len(names) and all(_ENSEMBL.match(n) for n in names) else "gene_symbols"
    return pd.DataFrame({column: names}, index=names)


def read_st(
    counts: str | os.PathLike,
    spots: str | os.PathLike,
    image: str | os.PathLike | None = None,
    *,
    library_id: str,
    patient: str | None = None,
    spot_diameter_px: float | None = None,
) -> AnnData:
    """Read one legacy Spatial Transcriptomics section (her2st, STNet layout).

    Parameters
    ----------
    counts
        Spots x genes raw counts, tab separated (optionally ``.gz``); the first column holds the spot names
        ``"{x}x{y}"`` (its header cell may be empty), the other columns are genes.
    spots
        Spot file (tab or comma separated) with columns ``x``, ``y`` (array coordinates), ``pixel_x`` (image
        column) and ``pixel_y`` (image row), in full-resolution pixels, and optionally ``selected``: when
        present, only rows with ``selected == 1`` are kept. Joined to the counts on ``f"{x}x{y}"``; spots
        missing from either file are dropped (and the number logged).
    image
        Optional full-resolution H&E (JPEG, TIFF, ...). It is not kept in memory: downscaled copies are stored
        (``hires``: longest side 2000 px, ``lowres``: 600 px) and its path is recorded as
        ``metadata["source_image_path"]``. Count-only sections are read without it.
    library_id
        Name of the section, e.g. ``"C2"``.
    patient
        Optional patient id, stored in ``obs["patient"]``.
    spot_diameter_px
        Spot diameter in full-resolution pixels. When ``None`` it is derived from the spot pitch (median pixel
        distance between lattice-adjacent spots) times 100/200 (100 µm spots at 200 µm pitch).

    Returns
    -------
    AnnData with

    - ``X``: raw counts, CSR ``float32``, and a copy in ``layers["counts"]``;
    - ``obs_names``: ``f"{library_id}_{x}x{y}"``, ``obs["array_row"] = y``, ``obs["array_col"] = x`` (int),
      ``obs["library_id"]`` (categorical) and ``obs["patient"]`` when given;
    - ``var``: ``var["gene_ids"]`` when every column name is an Ensembl id, else ``var["gene_symbols"]``;
    - ``obsm["spatial"]``: ``[pixel_x, pixel_y]`` (``float64``);
    - ``uns["spatial"][library_id]``: ``images`` (``hires``/``lowres`` when an image is given), ``scalefactors``
      (``spot_diameter_fullres``, ``tissue_hires_scalef``, ``tissue_lowres_scalef``) and ``metadata``
      (``source_image_path``, ``spot_diameter_source``).

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.io.read_st(
    ...     "ST-cnts/C2.tsv.gz",
    ...     "ST-spotfiles/C2_selection.tsv",
    ...     "ST-imgs/C/C2/5714_HE_BT_C2.jpg",
    ...     library_id="C2",
    ...     patient="C",
    ... )
    """
    library_id = check_library_id(library_id)
    counts = require_file(counts, "ST count matrix (counts=, a spots x genes TSV)")
    spots = require_file(spots, "ST spot file (spots=, a table with x, y, pixel_x, pixel_y)")
    if image is not None:
        image = require_file(image, "H&E image (image=)")

    table = _read_counts(counts)
    spot_table = _read_spots(spots)
    common = table.index[table.index.isin(spot_table.index)]
    if len(common) == 0:
        msg = (
            f"No spot of {str(counts)!r} matches {str(spots)!r}: count rows are named like "
            f"{list(table.index[:3])}, spot-file positions like {list(spot_table.index[:3])}."
        )
        raise ValueError(msg)
    if len(common) < len(table):
        logger.warning(
            "%s: dropped %d of %d spots of the count matrix that have no (selected) row in the spot file.",
            library_id,
            len(table) - len(common),
            len(table),
        )
    if len(common) < len(spot_table):
        logger.info(
            "%s: dropped %d of %d spot-file positions that have no counts.",
            library_id,
            len(spot_table) - len(common),
            len(spot_table),
        )
    table, spot_table = table.loc[common], spot_table.loc[common]

    X = counts_matrix(table.to_numpy(), what=f"counts in {counts}")
    var = _gene_annotation(table.columns)
    adata = AnnData(X=X, obs=pd.DataFrame(index=[f"{library_id}_{spot}" for spot in common]), var=var)
    adata.var_names_make_unique()

    array_xy = spot_table[["x", "y"]].to_numpy()
    pixel_xy = spot_table[["pixel_x", "pixel_y"]].to_numpy()
    diameter, diameter_source = _spot_diameter(spot_diameter_px, array_xy, pixel_xy)
    scalefactors: dict[str, float] = {"spot_diameter_fullres": diameter}
    metadata = {"spot_diameter_source": diameter_source}
    images: dict[str, np.ndarray] = {}
    if image is not None:
        size = image_size(image)
        check_within_image(pixel_xy, size, what=f"the image {image}")
        hires, hires_scale = read_image_downscaled(image, max_side=HIRES_MAX_SIDE)
        images, scales = hires_lowres(hires, size, hires_scale, lowres_side=LOWRES_MAX_SIDE)
        scalefactors.update(scales)
        metadata["source_image_path"] = str(image)

    finish(
        adata,
        library_id=library_id,
        spatial=pixel_xy,
        array_row=array_xy[:, 1],
        array_col=array_xy[:, 0],
        entry=spatial_entry(images, scalefactors, metadata),
    )
    if patient is not None:
        adata.obs["patient"] = pd.Categorical([str(patient)] * adata.n_obs)
    logger.info(
        "read ST section %r: %d spots x %d genes, spot diameter %.1f px (%s)",
        library_id,
        adata.n_obs,
        adata.n_vars,
        diameter,
        diameter_source,
    )
    return adata
