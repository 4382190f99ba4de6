"""Virtual spots for H&E-only images: a Visium-like hex (or legacy-ST square) grid over the tissue (:func:`spot_grid`).

A path is read at reduced size only (:func:`~sepal_tl.io._images.read_image_downscaled`: pyramid levels, JPEG
draft decoding, or a strided read of a plain TIFF), so even a 30k x 30k image is never decoded whole here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import ndimage, sparse

from sepal_tl._docs import inject_docs
from sepal_tl._logging import logger
from sepal_tl._uns import record
from sepal_tl._validation import check_choice, check_positive
from sepal_tl.io._common import check_library_id, require_file, spatial_entry
from sepal_tl.io._images import (
    IMAGE_HINT,
    downscale,
    hires_lowres,
    image_size,
    read_image_downscaled,
    scaled_size,
    to_rgb_uint8,
)
from sepal_tl.io._st import HIRES_MAX_SIDE, LOWRES_MAX_SIDE, SPOT_DIAMETER_PER_PITCH

__all__ = ["VISIUM_PITCH_PER_DIAMETER", "spot_grid", "tissue_mask"]

VISIUM_PITCH_PER_DIAMETER = 100 / 55
"""Visium's centre-to-centre distance (100 µm) over its spot diameter (55 µm): the default pitch factor."""

_SQRT3_2 = np.sqrt(3.0) / 2.0
#: the tissue mask is computed on a copy where a spot is at least this many pixels across
_MIN_SPOT_MASK_PX = 8.0
_MAX_MASK_SIDE = 8000
_MAX_CANDIDATES = 5_000_000
_POINT_CHUNK = 4096


def _disc(radius: float) -> np.ndarray:
    """Boolean disc of the given radius (at least the centre pixel)."""
    r = max(int(np.ceil(radius)), 0)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = dy**2 + dx**2 <= max(radius, 0.5) ** 2
    return disc


def saturation(image: np.ndarray) -> np.ndarray:
    """HSV saturation ``(max - min) / max`` of an RGB ``uint8`` image, in ``[0, 1]`` (0 for black pixels)."""
    image = image.astype(np.float32)
    top = image.max(axis=2)
    spread = top - image.min(axis=2)
    return np.divide(spread, top, out=np.zeros_like(top), where=top > 0)


def tissue_mask(image: np.ndarray, *, threshold: float = 0.15, spot_diameter_px: float | None = None) -> np.ndarray:
    """Tissue pixels of an H&E image: saturated colour, cleaned up morphologically.

    Background glass is bright and grey (HSV saturation near 0); haematoxylin and eosin are purple and pink
    (saturation about 0.2–0.7). The steps, all on the given (usually downscaled) image:

    1. saturation ``(max - min) / max`` of R, G, B, smoothed with a Gaussian of σ = 1 pixel;
    2. ``saturation > threshold``;
    3. opening then closing with a disc of radius ``spot_diameter_px / 8`` (at least 1 pixel), removing specks
       and bridging small gaps; holes enclosed by tissue (fat vacuoles, lumens) are filled;
    4. connected pieces smaller than one spot disc are dropped.

    Parameters
    ----------
    image
        ``(height, width, 3)`` RGB image.
    threshold
        Saturation above which a pixel is tissue.
    spot_diameter_px
        Spot diameter in pixels of ``image``; sets the clean-up scale (default: 1/50 of the shorter side).

    Returns
    -------
    Boolean ``(height, width)`` mask.
    """
    image = to_rgb_uint8(image)
    if spot_diameter_px is None:
        spot_diameter_px = min(image.shape[:2]) / 50
    sat = ndimage.gaussian_filter(saturation(image), 1.0)
    mask = sat > threshold
    structure = _disc(max(spot_diameter_px / 8, 1.0))
    mask = ndimage.binary_opening(mask, structure=structure)
    mask = ndimage.binary_closing(mask, structure=structure, border_value=0)
    mask = ndimage.binary_fill_holes(mask)
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < np.pi * (spot_diameter_px / 2) ** 2
        small[0] = True
        mask = ~small[labels]
    return mask


def _disc_fraction(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: float) -> np.ndarray:
    """Fraction of each disc (centres ``rows, cols`` in mask pixels) covered by ``mask``; outside counts as 0."""
    disc = _disc(radius)
    dy, dx = np.nonzero(disc)
    dy, dx = dy - disc.shape[0] // 2, dx - disc.shape[1] // 2
    height, width = mask.shape
    padded = np.zeros((height + 1, width + 1), dtype=bool)  # row/col -1 and beyond-the-end read as background
    padded[:height, :width] = mask
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), _POINT_CHUNK):
        r = rows[start : start + _POINT_CHUNK, None] + dy
        c = cols[start : start + _POINT_CHUNK, None] + dx
        outside = (r < 0) | (r >= height) | (c < 0) | (c >= width)
        r[outside], c[outside] = height, width
        out[start : start + _POINT_CHUNK] = padded[r, c].mean(axis=1)
    return out


def _hex_grid(size: tuple[int, int], pitch: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Visium-style lattice centred on the image: ``(array_row, array_col, x, y)`` with row + col even."""
    height, width = size
    dx, dy = pitch / 2, pitch * _SQRT3_2
    n_cols = int(np.floor(width / dx)) + 1
    n_rows = int(np.floor(height / dy)) + 1
    if n_rows * n_cols / 2 > _MAX_CANDIDATES:
        msg = (
            f"pitch_px={pitch:g} gives about {n_rows * n_cols // 2:,} grid points on a {width} x {height} px image; "
            "that is far more than any spot array. Pass a larger pitch_px (or spot_diameter_px)."
        )
        raise ValueError(msg)
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    keep = (rows + cols) % 2 == 0
    rows, cols = rows[keep], cols[keep]
    x0 = (width - (n_cols - 1) * dx) / 2
    y0 = (height - (n_rows - 1) * dy) / 2
    return rows, cols, x0 + cols * dx, y0 + rows * dy


def _square_grid(size: tuple[int, int], pitch: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Legacy-ST-style square lattice centred on the image: ``(array_row, array_col, x, y)``."""
    height, width = size
    n_cols = int(np.floor(width / pitch)) + 1
    n_rows = int(np.floor(height / pitch)) + 1
    if n_rows * n_cols > _MAX_CANDIDATES:
        msg = (
            f"pitch_px={pitch:g} gives about {n_rows * n_cols:,} grid points on a {width} x {height} px image; "
            "that is far more than any spot array. Pass a larger pitch_px (or spot_diameter_px)."
        )
        raise ValueError(msg)
    rows, cols = (grid.ravel() for grid in np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij"))
    x0 = (width - (n_cols - 1) * pitch) / 2
    y0 = (height - (n_rows - 1) * pitch) / 2
    return rows, cols, x0 + cols * pitch, y0 + rows * pitch


def _load(image) -> tuple[np.ndarray | None, Path | None, tuple[int, int]]:
    if isinstance(image, str | os.PathLike):
        path = require_file(image, "Image file", IMAGE_HINT)
        return None, path, image_size(path)
    if isinstance(image, np.ndarray):
        array = to_rgb_uint8(image)
        return array, None, (int(array.shape[0]), int(array.shape[1]))
    msg = f"image must be a path or a (height, width, 3) uint8 array, got {type(image).__name__}."
    raise TypeError(msg)


def _check_fractions(tissue_threshold: float, min_tissue_fraction: float) -> None:
    """Raise unless both are numbers, the threshold in (0, 1) and the fraction in (0, 1]."""
    for name, value in (("tissue_threshold", tissue_threshold), ("min_tissue_fraction", min_tissue_fraction)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            msg = f"{name} must be a number, got {type(value).__name__} ({value!r})."
            raise TypeError(msg)
    if not 0 < float(tissue_threshold) < 1:
        msg = f"tissue_threshold must lie strictly between 0 and 1 (an HSV saturation), got {tissue_threshold!r}."
        raise ValueError(msg)
    if not 0 < float(min_tissue_fraction) <= 1:
        msg = f"min_tissue_fraction must lie in (0, 1], got {min_tissue_fraction!r}."
        raise ValueError(msg)


def _mask_copy(
    array: np.ndarray | None, path: Path | None, size: tuple[int, int], diameter: float
) -> tuple[np.ndarray, float]:
    """The downscaled copy the tissue is found on, and its scale.

    Its longest side is at least ``HIRES_MAX_SIDE``, larger when spots would be tiny there (at most
    ``_MAX_MASK_SIDE``).
    """
    longest = max(size)
    mask_side = min(longest, max(HIRES_MAX_SIDE, int(np.ceil(longest * _MIN_SPOT_MASK_PX / diameter))), _MAX_MASK_SIDE)
    if path is not None:
        return read_image_downscaled(path, max_side=mask_side)
    assert array is not None  # spot_grid reads a path or takes an array
    target, mask_scale = scaled_size(size, mask_side)
    return downscale(array, target), mask_scale


def _tissue_or_raise(small: np.ndarray, threshold: float, spot_diameter_px: float) -> np.ndarray:
    """:func:`tissue_mask` of ``small``, raising ``ValueError`` when it finds no tissue."""
    mask = tissue_mask(small, threshold=threshold, spot_diameter_px=spot_diameter_px)
    if not mask.any():
        top = float(np.percentile(saturation(small), 99))
        msg = (
            f"No tissue found in the image: no region has HSV saturation above tissue_threshold={threshold:g} "
            f"(99th percentile of the image's saturation: {top:.3f}). Is it an H&E image on a bright background? "
            "Lower tissue_threshold for pale stains."
        )
        raise ValueError(msg)
    return mask


def _spots_on_tissue(
    mask: np.ndarray,
    mask_scale: float,
    size: tuple[int, int],
    *,
    pitch: float,
    diameter: float,
    geometry: str,
    min_fraction: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(array_row, array_col, x, y, tissue_fraction)`` of the grid points whose disc is enough tissue."""
    rows, cols, x, y = (_hex_grid if geometry == "hex" else _square_grid)(size, pitch)
    fraction = _disc_fraction(
        mask,
        np.floor(y * mask_scale).astype(np.int64),
        np.floor(x * mask_scale).astype(np.int64),
        diameter * mask_scale / 2,
    )
    keep = fraction >= min_fraction
    if not keep.any():
        msg = (
            f"Tissue covers {100 * mask.mean():.2f} % of the image, but no spot disc is at least "
            f"{100 * min_fraction:g} % tissue. Lower min_tissue_fraction or tissue_threshold, or check "
            "spot_diameter_px / pitch_px."
        )
        raise ValueError(msg)
    return rows[keep], cols[keep], x[keep], y[keep], fraction[keep]


def _grid_adata(
    library_id: str, rows: np.ndarray, cols: np.ndarray, fraction: np.ndarray, spatial: np.ndarray
) -> AnnData:
    """The virtual spots as an AnnData without genes."""
    obs = pd.DataFrame(
        {
            "library_id": pd.Categorical([library_id] * len(rows)),
            "array_row": rows.astype(np.int64),
            "array_col": cols.astype(np.int64),
            "tissue_fraction": fraction.astype(np.float32),
        },
        index=pd.Index([f"{library_id}_{r}_{c}" for r, c in zip(rows, cols, strict=True)]),
    )
    adata = AnnData(X=sparse.csr_matrix((len(rows), 0), dtype=np.float32), obs=obs)
    adata.obsm["spatial"] = spatial.astype(np.float64)
    return adata


def _spatial_entry(small: np.ndarray, size: tuple[int, int], diameter: float, metadata: dict) -> dict:
    """``uns["spatial"][library_id]``: hires (from the mask copy ``small``) and lowres images, scale factors."""
    hires_size, hires_scale = scaled_size(size, HIRES_MAX_SIDE)
    hires = small if small.shape[:2] == hires_size else downscale(small, hires_size)
    images, scales = hires_lowres(hires, size, hires_scale, lowres_side=LOWRES_MAX_SIDE)
    return spatial_entry(images, {"spot_diameter_fullres": diameter, **scales}, metadata)


@inject_docs
def spot_grid(
    image: str | os.PathLike | np.ndarray,
    *,
    spot_diameter_px: float,
    pitch_px: float | None = None,
    tissue_threshold: float = 0.15,
    min_tissue_fraction: float = 0.5,
    library_id: str = "he",
    microns_per_pixel: float | None = None,
    geometry: Literal["hex", "square"] = "hex",
) -> AnnData:
    """Lay a Visium-like hexagonal (or legacy-ST square) grid of virtual spots over the tissue of an H&E image.

    The result looks like the output of :mod:`sepal_tl.io` readers without expression, so that a trained
    model can predict expression on a slide that was never sequenced.

    Grid points are ``pitch_px`` apart on a hexagonal lattice (rows ``pitch_px * √3/2`` apart, every other row
    shifted by half a pitch) or, with ``geometry="square"``, on a square lattice as legacy ST arrays, centred on
    the image. A point is kept when at least ``min_tissue_fraction`` of
    its spot disc (diameter ``spot_diameter_px``) is tissue. Tissue is found by :func:`tissue_mask` on a
    downscaled copy (longest side 2,000 px, more when spots would be under 8 px there): HSV saturation above
    ``tissue_threshold`` (glass is bright and grey, H&E is purple and pink), small specks removed and holes
    filled.

    Parameters
    ----------
    image
        H&E image: a JPEG / PNG / TIFF path (read at reduced size only; the full-resolution file is what patches
        are later cut from) or a ``(height, width, 3)`` array.
    spot_diameter_px
        Spot diameter in full-resolution pixels; use the diameter the model was trained with (Visium: 55 µm,
        legacy ST: 100 µm, divided by the image's µm per pixel).
    pitch_px
        Centre-to-centre distance of neighbouring spots in full-resolution pixels. Default: %(pitch_default)s.
    tissue_threshold
        HSV saturation above which a pixel counts as tissue (0–1). Lower it for pale stains; raise it when
        background tint is taken for tissue.
    min_tissue_fraction
        Minimum fraction of the spot disc that must be tissue (0–1].
    library_id
        Name of the slide (``obs["library_id"]``, key of ``uns["spatial"]``).
    microns_per_pixel
        Optional resolution of the image, stored in ``metadata["microns_per_pixel"]``.
    geometry
        ``"hex"`` (Visium) or ``"square"`` (legacy ST): use the lattice the model's spatial stage was trained on,
        so that neighbourhoods mean the same as in training.

    Returns
    -------
    AnnData with one observation per virtual spot and no genes:

    - ``X``: an empty ``(n_spots, 0)`` CSR matrix;
    - ``obs_names`` ``f"{library_id}_{array_row}_{array_col}"``; ``obs["library_id"]`` (categorical),
      ``obs["array_row"]`` / ``obs["array_col"]`` (hex: Visium's doubled-column indices, row + col is even,
      neighbours at (0, ±2) and (±1, ±1); square: plain row and column, neighbours at (0, ±1) and (±1, 0)),
      ``obs["tissue_fraction"]``;
    - ``obsm["spatial"]``: spot centres in full-resolution pixels (x = column, y = row), ``float64``;
    - ``uns["spatial"][library_id]``: ``images`` (``hires``: longest side 2,000 px, ``lowres``: 600 px),
      ``scalefactors`` (``spot_diameter_fullres``, ``tissue_hires_scalef``, ``tissue_lowres_scalef``) and
      ``metadata`` (``source_image_path`` when ``image`` is a path, ``pitch_px``, ``geometry``, ``tissue_threshold``,
      ``min_tissue_fraction``, ``microns_per_pixel`` when given);
    - ``uns["sepal"]["io"]["spot_grid"]``: the parameters.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=20, n_genes=10, pitch_px=32, random_state=0)
    >>> image = adata.uns["spatial"]["slide0"]["images"]["hires"]  # an H&E image, (height, width, 3) uint8
    >>> he = sepal.io.spot_grid(image, spot_diameter_px=17.6, pitch_px=32)  # Visium's hex grid, 100 µm pitch
    >>> he.n_obs, he.n_vars  # spots over tissue, no genes
    (27, 0)
    >>> he.obs[["array_row", "array_col"]].head(3)
             array_row  array_col
    he_1_7           1          7
    he_1_9           1          9
    he_1_11          1         11
    >>> # a whole-slide image at 0.5 µm per pixel, with Visium's 55 µm spots:
    >>> he = sepal.io.spot_grid("slide.tif", spot_diameter_px=55 / 0.5, microns_per_pixel=0.5)  # doctest: +SKIP
    """
    library_id = check_library_id(library_id)
    check_choice("geometry", geometry, ("hex", "square"))
    diameter = check_positive("spot_diameter_px", spot_diameter_px)
    default_pitch = diameter * (VISIUM_PITCH_PER_DIAMETER if geometry == "hex" else 1 / SPOT_DIAMETER_PER_PITCH)
    pitch = default_pitch if pitch_px is None else check_positive("pitch_px", pitch_px)
    _check_fractions(tissue_threshold, min_tissue_fraction)
    if microns_per_pixel is not None:
        microns_per_pixel = check_positive("microns_per_pixel", microns_per_pixel)
    array, path, size = _load(image)
    if diameter > min(size):
        msg = (
            f"spot_diameter_px={diameter:g} is larger than the image ({size[1]} x {size[0]} px); give the spot "
            "diameter in full-resolution pixels of this image."
        )
        raise ValueError(msg)
    small, mask_scale = _mask_copy(array, path, size, diameter)
    mask = _tissue_or_raise(small, float(tissue_threshold), diameter * mask_scale)
    rows, cols, x, y, fraction = _spots_on_tissue(
        mask, mask_scale, size, pitch=pitch, diameter=diameter, geometry=geometry, min_fraction=min_tissue_fraction
    )
    if path is None and max(size) > HIRES_MAX_SIDE:
        logger.warning(
            "spot_grid: the image was given as an array, so only downscaled copies (longest side %d px) are kept. "
            "Pass the image again (image={%r: array}) when cutting patches, or give a file path.",
            HIRES_MAX_SIDE,
            library_id,
        )
    adata = _grid_adata(library_id, rows, cols, fraction, np.column_stack([x, y]))
    metadata: dict[str, object] = {"source": "sepal_tl.io.spot_grid", "pitch_px": pitch, "geometry": geometry}
    metadata |= {"tissue_threshold": float(tissue_threshold), "min_tissue_fraction": float(min_tissue_fraction)}
    metadata["tissue_fraction_of_image"] = float(mask.mean())
    if path is not None:
        metadata["source_image_path"] = str(path)
    if microns_per_pixel is not None:
        metadata["microns_per_pixel"] = microns_per_pixel
    adata.uns["spatial"] = {library_id: _spatial_entry(small, size, diameter, metadata)}
    params = {"image": str(path) if path is not None else "array", "spot_diameter_px": diameter, "pitch_px": pitch}
    params |= {"geometry": geometry, "tissue_threshold": float(tissue_threshold)}
    params |= {"min_tissue_fraction": float(min_tissue_fraction), "library_id": library_id}
    record(adata, "io", "spot_grid", {**params, "microns_per_pixel": microns_per_pixel})
    logger.info(
        "spot_grid %r: %d virtual spots (pitch %.1f px, diameter %.1f px), tissue %.1f %% of the image",
        library_id,
        len(rows),
        pitch,
        diameter,
        100 * mask.mean(),
    )
    return adata
