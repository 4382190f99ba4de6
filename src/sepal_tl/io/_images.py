"""Reading H&E images: size from the header, full-resolution RGB arrays and antialiased downscaled copies.

Every function returns or takes images as ``uint8`` arrays of shape ``(height, width, 3)`` (RGB, no alpha).
Sizes are ``(height, width)`` tuples, i.e. numpy order, never PIL's ``(width, height)``.

TIFF files (recognised by their magic bytes, whatever the suffix) are read with :mod:`tifffile`, everything
else (JPEG, PNG, ...) with Pillow. Pillow's decompression-bomb limit is lifted only while our own reads run
(:func:`pil_pixel_limit_lifted`): whole-slide H&E images routinely exceed it.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from sepal_tl._logging import logger
from sepal_tl.io._common import reading, require_file

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: bytes at the end of a JPEG searched for its end-of-image marker
_JPEG_TAIL = 1 << 16
#: a TIFF without a small enough pyramid level is subsampled to at least this many times the target size
_STRIDE_MARGIN = 2
#: how to fix a missing image file (ends the error message)
IMAGE_HINT = "Pass the path of an existing JPEG, PNG or TIFF image."
_pixel_limit_lock = threading.Lock()
_pixel_limit_state: dict[str, Any] = {"users": 0, "saved": None}


@contextmanager
def pil_pixel_limit_lifted() -> Iterator[None]:
    """Lift Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) for the duration of the block.

    The limit is a module global in Pillow, so it is switched off while at least one of our reads is running
    (reference counted, thread safe) and restored to its previous value afterwards. Nothing outside these
    blocks sees a changed limit.
    """
    with _pixel_limit_lock:
        if _pixel_limit_state["users"] == 0:
            _pixel_limit_state["saved"] = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pixel_limit_state["users"] += 1
    try:
        yield
    finally:
        with _pixel_limit_lock:
            _pixel_limit_state["users"] -= 1
            if _pixel_limit_state["users"] == 0:
                Image.MAX_IMAGE_PIXELS = _pixel_limit_state["saved"]


def _existing_file(path: str | os.PathLike) -> Path:
    return require_file(path, "Image file", IMAGE_HINT)


def is_tiff(path: str | os.PathLike) -> bool:
    """Return whether ``path`` starts with a TIFF / BigTIFF signature."""
    with open(path, "rb") as fh:
        return fh.read(4) in _TIFF_MAGIC


def _tiff_yx(shape: tuple[int, ...], axes: str) -> tuple[int, int]:
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return the ``(height, width)`` of an image without decoding its pixels.

    Parameters
    ----------
    path
        A JPEG, PNG, TIFF, ... file.

    Returns
    -------
    ``(height, width)`` in pixels.
    """
    path = _existing_file(path)
    with _decoding(path):
        if is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return _tiff_yx(series.shape, series.axes)
        with pil_pixel_limit_lifted(), Image.open(path) as img:
            width, height = img.size
    return height, width


def check_image_file(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(height, width)`` after cheap checks that the whole file is there, without decoding the pixels.

    TIFF: every strip or tile of the first page lies within the file. PNG and others: Pillow's ``verify`` (chunk
    checksums). JPEG: the end-of-image marker is present. A truncated or damaged file raises ``ValueError``
    naming it, so that a command can refuse it before any work.
    """
    path = _existing_file(path)
    size = image_size(path)
    with _decoding(path):
        if is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
                if ends and max(ends) > path.stat().st_size:
                    msg = f"the pixel data end at byte {max(ends)} but the file has {path.stat().st_size} bytes"
                    raise ValueError(msg)
            return size
        with pil_pixel_limit_lifted(), Image.open(path) as img:
            if img.format == "JPEG":
                with open(path, "rb") as fh:
                    fh.seek(max(0, path.stat().st_size - _JPEG_TAIL))
                    if b"\xff\xd9" not in fh.read():
                        msg = "the JPEG has no end-of-image marker"
                        raise ValueError(msg)
            else:
                img.verify()
    return size


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert an image array to ``uint8`` ``(height, width, 3)`` RGB.

    Grey images are repeated over three channels, the alpha channel (2 or 4 channels) is dropped. Integer
    images wider than 8 bits (e.g. 16-bit) are scaled by the range of their dtype (``uint16``: 0–65535 maps
    to 0–255; negative values of signed types become 0), never by the image's own maximum: one hot pixel
    cannot darken the image, and every crop of a slide is converted the same way. Float images in ``[0, 1]``
    are multiplied by 255, other float images are clipped to ``[0, 255]``.

    Parameters
    ----------
    array
        ``(height, width)`` or ``(height, width, channels)`` image.

    Returns
    -------
    The ``uint8`` RGB image (the input itself when it is already one).
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        msg = f"Expected an image of shape (height, width) or (height, width, 1-4 channels), got {array.shape}."
        raise ValueError(msg)
    array = array[:, :, :3] if array.shape[2] >= 3 else np.repeat(array[:, :, :1], 3, axis=2)
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        top = float(np.iinfo(array.dtype).max)
        scaled = np.multiply(np.clip(array, 0, None), 255.0 / top, dtype=np.float32)
        return np.round(scaled).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        values = np.nan_to_num(array.astype(np.float32))
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return np.round(np.clip(values, 0, 255)).astype(np.uint8)
    msg = f"Cannot convert an image of dtype {array.dtype} to RGB."
    raise ValueError(msg)


def tiff_to_yxc(array: np.ndarray, axes: str) -> np.ndarray:
    """Reorder a tifffile array to ``(Y, X[, channels])``, keeping the first plane of any other axis.

    ``axes`` names the array's axes as tifffile does (``"YXS"``, ``"CYX"``, ``"TZCYX"``, ...); the channel axis
    is the first ``S`` or ``C``. The result is a view (a memory map stays one).
    """
    channel = next((ax for ax in axes if ax in "SC"), None)
    keep = ("Y", "X", channel)
    array = array[tuple(slice(None) if ax in keep else 0 for ax in axes)]
    axes = "".join(ax for ax in axes if ax in keep)
    return np.transpose(array, [axes.index(ax) for ax in keep if ax is not None])


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode == "I":  # Pillow's 32-bit mode holds 16-bit grey files (PNG, TIFF): scale by the 16-bit range
        return to_rgb_uint8(np.clip(np.asarray(img), 0, 65535).astype(np.uint16))
    if img.mode.startswith(("I", "F")):  # 16-bit / float grey: let numpy rescale instead of Pillow clipping
        return to_rgb_uint8(np.asarray(img))
    return np.asarray(img.convert("RGB"))


#: what Pillow and tifffile raise on a damaged or non-image file
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
    tifffile.TiffFileError,
)


def _decoding(path: Path) -> AbstractContextManager[None]:
    """Turn a decoder's error on a damaged or non-image file into a ``ValueError`` that names the file."""
    return reading(
        path, "image", errors=_DECODE_ERRORS, problem="not an image", hint="Pass a complete JPEG, PNG or TIFF file."
    )


def _open_pil(path: Path) -> Image.Image:
    """Open a non-TIFF image with Pillow, warning about bytes after the end of a JPEG."""
    img = Image.open(path)
    if img.format == "JPEG":
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - _JPEG_TAIL))
            tail = fh.read()
        end = tail.rfind(b"\xff\xd9")
        extra = tail[end + 2 :] if end >= 0 else b""
        if extra.strip(b"\x00\r\n\t "):
            logger.warning(
                "%s: %d bytes follow the end of the JPEG image; the file may be damaged or two files joined. "
                "Only the first image is read.",
                path,
                len(extra),
            )
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a full-resolution image as a ``uint8`` ``(height, width, 3)`` RGB array.

    Parameters
    ----------
    path
        A JPEG, PNG, TIFF, ... file. For pyramidal TIFFs the full-resolution level of the first series is read.

    Returns
    -------
    The RGB image (alpha dropped, see :func:`to_rgb_uint8` for other conversions).
    """
    path = _existing_file(path)
    with _decoding(path):
        if is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return to_rgb_uint8(tiff_to_yxc(series.asarray(), series.axes))
        with pil_pixel_limit_lifted(), _open_pil(path) as img:
            return _pil_to_rgb(img)


def scaled_size(size: tuple[int, int], max_side: int) -> tuple[tuple[int, int], float]:
    """Return the ``(height, width)`` whose longest side is ``max_side``, and the scale factor used.

    Images are never enlarged: when the longest side is already at most ``max_side`` the scale is 1.

    Parameters
    ----------
    size
        ``(height, width)`` of the original image.
    max_side
        Target length of the longest side, in pixels.

    Returns
    -------
    ``((height, width), scale)`` with ``scale = new / old`` (the factor that maps original pixel coordinates
    onto the smaller image, as ``tissue_hires_scalef`` does).
    """
    scale = min(1.0, max_side / max(size))
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), scale


def downscale(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB image to ``size`` with antialiasing (Lanczos filter).

    Parameters
    ----------
    image
        ``(height, width, 3)`` image; converted with :func:`to_rgb_uint8` first.
    size
        Target ``(height, width)``.

    Returns
    -------
    The resized ``uint8`` RGB image.
    """
    image = to_rgb_uint8(image)
    if image.shape[:2] == tuple(size):
        return image
    resized = Image.fromarray(image).resize((size[1], size[0]), resample=Image.Resampling.LANCZOS)
    return np.asarray(resized)


def hires_lowres(
    hires: np.ndarray, full_size: tuple[int, int], hires_scale: float, *, lowres_side: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """``images`` of a slide (``hires`` and a ``lowres`` copy downscaled from it) and their ``tissue_*_scalef``.

    Parameters
    ----------
    hires
        The hires image, ``hires_scale`` times the full-resolution image of size ``full_size`` (height, width).
    full_size, hires_scale
        Size of the full-resolution image and the factor mapping its pixels onto ``hires``.
    lowres_side
        Longest side of the lowres copy in pixels.

    Returns
    -------
    ``({"hires": ..., "lowres": ...}, {"tissue_hires_scalef": ..., "tissue_lowres_scalef": ...})``.
    """
    lowres_size, lowres_scale = scaled_size(full_size, lowres_side)
    images = {"hires": hires, "lowres": downscale(hires, lowres_size)}
    return images, {"tissue_hires_scalef": float(hires_scale), "tissue_lowres_scalef": float(lowres_scale)}


def _rows_strided(path: Path, level, step: int, byteorder: str) -> np.ndarray:
    """Every ``step``-th row and column of an uncompressed, contiguous ``YX[S]`` level, read row by row."""
    height, width = level.shape[:2]
    channels = level.shape[2] if len(level.shape) == 3 else 1
    dtype = np.dtype(level.dtype).newbyteorder(byteorder)
    row_bytes = width * channels * dtype.itemsize
    rows = range(0, height, step)
    out = np.empty((len(rows), len(range(0, width, step)), channels), dtype=level.dtype)
    with open(path, "rb") as fh:
        for i, row in enumerate(rows):
            fh.seek(level.dataoffset + row * row_bytes)
            out[i] = np.frombuffer(fh.read(row_bytes), dtype=dtype).reshape(width, channels)[::step]
    return out


def _tiff_level_strided(path: Path, tif: tifffile.TiffFile, level, step: int) -> np.ndarray:
    """``level`` subsampled by ``step`` without decoding it whole (rows of a plain file, else chunk by chunk)."""
    if level.dataoffset is not None and level.axes in ("YX", "YXS"):
        return _rows_strided(path, level, step, tif.byteorder)
    import zarr

    store = level.aszarr()
    try:
        array = zarr.open_array(store, mode="r")
        index = tuple(slice(None, None, step) if ax in "YX" else slice(None) for ax in level.axes)
        return tiff_to_yxc(np.asarray(array[index]), level.axes)
    finally:
        store.close()


def _read_tiff_downscaled(path: Path, max_side: int) -> tuple[np.ndarray, float]:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        full = _tiff_yx(series.shape, series.axes)
        target, scale = scaled_size(full, max_side)
        # read the smallest pyramid level that is still at least as large as the target
        level = series
        for candidate in series.levels:
            if min(np.subtract(_tiff_yx(candidate.shape, candidate.axes), target)) >= 0:
                level = candidate
        size = _tiff_yx(level.shape, level.axes)
        # without a small enough level, keep every step-th pixel (at least twice the target) and filter that
        step = int(min(size[0] / target[0], size[1] / target[1]) // _STRIDE_MARGIN)
        if step >= 2:
            array = _tiff_level_strided(path, tif, level, step)
        else:
            array = tiff_to_yxc(level.asarray(), level.axes)
    return downscale(array, target), scale


def read_image_downscaled(path: str | os.PathLike, *, max_side: int) -> tuple[np.ndarray, float]:
    """Read an image directly at a reduced size, without holding the full-resolution pixels.

    JPEGs are decoded at a reduced DCT scale (Pillow's ``draft``) and pyramidal TIFFs from the smallest
    sufficient level. A TIFF without such a level is subsampled while it is read (every k-th row and column,
    keeping at least twice the target size): row by row for an uncompressed file, strip by strip or tile by
    tile otherwise, so the full-resolution pixels are never held at once. The result is then resized exactly
    (with antialiasing) by :func:`downscale`.

    Parameters
    ----------
    path
        A JPEG, PNG, TIFF, ... file.
    max_side
        Length in pixels of the longest side of the result (images are never enlarged).

    Returns
    -------
    ``(image, scale)``: the ``uint8`` RGB image and the factor mapping full-resolution pixel coordinates
    onto it (``tissue_hires_scalef`` / ``tissue_lowres_scalef`` in Space Ranger terms).
    """
    path = _existing_file(path)
    with _decoding(path):
        if is_tiff(path):
            return _read_tiff_downscaled(path, max_side)
        with pil_pixel_limit_lifted(), _open_pil(path) as img:
            width, height = img.size
            target, scale = scaled_size((height, width), max_side)
            img.draft("RGB", (target[1], target[0]))
            array = _pil_to_rgb(img)
    return downscale(array, target), scale


def check_within_image(coords: np.ndarray, size: tuple[int, int], *, what: str, tolerance: float = 0.0) -> None:
    """Raise ``ValueError`` if any ``(x, y)`` spot centre lies outside an image of ``size = (height, width)``.

    Parameters
    ----------
    coords
        ``(n, 2)`` spot centres in the image's pixels, x = column, y = row.
    size
        ``(height, width)`` of the image.
    what
        Names the image in the error message.
    tolerance
        Allowed overshoot in pixels (for images whose size was rounded).
    """
    height, width = size
    x, y = coords[:, 0], coords[:, 1]
    outside = (x < -tolerance) | (x > width + tolerance) | (y < -tolerance) | (y > height + tolerance)
    if outside.any():
        first = coords[np.flatnonzero(outside)[0]]
        msg = (
            f"{int(outside.sum())} of {len(coords)} spot centres fall outside {what} "
            f"(width {width}, height {height} px), e.g. (x={first[0]:.1f}, y={first[1]:.1f}). "
            "Check that the image belongs to this section, that it is the full-resolution image the "
            "coordinates refer to, and that x (column) and y (row) are not swapped."
        )
        raise ValueError(msg)
