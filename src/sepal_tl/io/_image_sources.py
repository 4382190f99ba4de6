"""Image sources: one H&E image per library, cropped window by window in full-resolution pixel coordinates.

Public as :func:`sepal_tl.tl.resolve_images` and :class:`sepal_tl.tl.ImageSource` (patches are cut in ``tl``);
the implementation lives here, with the rest of the image reading.

:func:`resolve_images` finds, for every library (slide) of an AnnData, the image patches are cut from, and
wraps it in an :class:`ImageSource`. A source knows its ``scale`` (image pixels per full-resolution pixel,
``tissue_hires_scalef`` for the hires image, 1 for the full-resolution file) and crops square windows given in
full-resolution pixels, so that the same spot coordinates (``obsm["spatial"]``) work whatever image is used.

How each kind of image is held (the crops are the same, only speed and memory differ):

- **numpy arrays** (``uns["spatial"][lib]["images"]``, or arrays passed by the user) are used as they are.
- **Uncompressed TIFF** is memory-mapped (:func:`tifffile.memmap`): nothing is decoded or held in process
  memory, the operating system pages in the windows that are read.
- **Tiled or compressed TIFF** (pyramidal whole-slide images) is read lazily through :mod:`zarr`
  (``TiffPageSeries.aszarr``): each crop decodes only the tiles it touches (level 0, full resolution).
- **JPEG / PNG** cannot be read lazily: the file is decoded **once per library**, when the source is first
  used (:meth:`ImageSource.load`), and the decoded ``uint8`` array is kept (about 3 bytes per pixel: a
  10,000 × 10,000 px legacy ST image takes 300 MB). TIFFs that are not 8-bit are decoded the same way, so
  that they are rescaled to ``uint8`` consistently over the whole image.
- **SpatialData images** (xarray ``DataArray`` / multiscale ``DataTree``, usually dask-backed) are computed
  into memory once when they take at most 8 GiB, else cropped lazily (slow unless the array is chunked on
  disk, e.g. read from zarr).

Passing ``cache_dir=`` to :func:`resolve_images` decodes JPEG / PNG / compressed TIFF / dask images once into
an uncompressed ``.npy`` file in that folder (reused on later runs) and memory-maps it instead: the process
then holds no decoded pixels, which helps when many slides are used at once or with DataLoader workers
started by ``spawn``.

Windows that leave the image are **padded with white** (``PAD_VALUE = 255``, like empty glass): border spots
keep a full-size patch and are never dropped.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import tifffile
from anndata import AnnData

from sepal_tl._docs import inject_docs
from sepal_tl._logging import logger
from sepal_tl._validation import check_spatial
from sepal_tl.io._common import library_ids, require_file
from sepal_tl.io._images import (
    IMAGE_HINT,
    check_within_image,
    image_size,
    is_tiff,
    read_image,
    tiff_to_yxc,
    to_rgb_uint8,
)

__all__ = ["PAD_VALUE", "ImageSource", "resolve_images"]

PAD_VALUE = 255
"""Value of the pixels of a window that fall outside the image (white, like empty glass)."""

#: dask-backed images up to this size are computed into memory once; larger ones are cropped lazily
_MAX_IN_MEMORY_BYTES = 8 << 30
_SPATIALDATA_COORDINATE_SYSTEM = "global"


def round_half_up(value: float | np.ndarray) -> np.ndarray:
    """Round half up to ``int64`` (``np.round`` rounds half to even, which would make windows jitter by a pixel).

    Every window placed on an image pixel grid is rounded by this rule: :meth:`ImageSource.window` and the
    vectorised windows of :class:`~sepal_tl.tl.SpotPatches`.
    """
    return np.floor(np.asarray(value) + 0.5).astype(np.int64)


class ImageSource:
    """One library's image, cropped in full-resolution pixel coordinates.

    Use :func:`resolve_images` to build sources; this base class holds a ``(height, width, 3)`` ``uint8``
    array (or memory map). Coordinates are continuous with pixel ``k`` covering ``[k, k + 1)``, x = column,
    y = row, as in ``obsm["spatial"]``; full-resolution coordinates map onto the image by multiplying with
    :attr:`scale`.

    Parameters
    ----------
    array
        ``(height, width, 3)`` RGB image; converted with :func:`sepal_tl.io._images.to_rgb_uint8` when it is
        not ``uint8`` already.
    scale
        Image pixels per full-resolution pixel (``tissue_hires_scalef`` for a hires image, 1 for the
        full-resolution image).
    library_id
        The library (slide) the image belongs to.
    origin
        Human-readable description of where the image comes from (for messages and ``repr``).

    Examples
    --------
    >>> import numpy as np
    >>> import sepal_tl as sepal
    >>> image = np.zeros((100, 200, 3), dtype=np.uint8)  # a half-resolution image of a 200 x 400 px slide
    >>> source = sepal.tl.ImageSource(image, scale=0.5, library_id="slide0")
    >>> source.shape
    (100, 200)
    >>> source.window(x0=100, y0=40, side=20)  # (row0, col0, n) in the image's own pixels
    (20, 50, 10)
    >>> source.crop(x0=390, y0=0, side=20).shape  # past the right edge: padded
    (10, 10, 3)
    """

    def __init__(self, array: np.ndarray | None, scale: float, library_id: str, origin: str = "array") -> None:
        scale = float(scale)
        if not np.isfinite(scale) or scale <= 0:
            msg = f"The scale of the image of library {library_id!r} must be a positive number, got {scale!r}."
            raise ValueError(msg)
        self.scale = scale
        self.library_id = str(library_id)
        self.origin = origin
        self._array = None if array is None else _rgb(array)
        self._shape: tuple[int, ...] | None = None if self._array is None else tuple(self._array.shape[:2])
        self._mapped: tuple | None = None  # where a pickled memory map's pixels are, to map them again

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the image in its own pixels."""
        assert self._shape is not None  # set from the array, or by the subclass from the file
        height, width = self._shape
        return int(height), int(width)

    @property
    def in_memory(self) -> bool:
        """Whether the pixels are held in process memory (not memory-mapped or read lazily)."""
        return isinstance(self._array, np.ndarray) and not isinstance(self._array, np.memmap)

    def load(self) -> ImageSource:
        """Open or decode the image now (sources do it on first use otherwise); returns ``self``."""
        if self._array is None and self._mapped is not None:  # unpickled in a worker: map the file again
            self._array = _map_again(*self._mapped)
        return self

    def window(self, x0: float, y0: float, side: float) -> tuple[int, int, int]:
        """Map a full-resolution window onto the image's pixel grid.

        Parameters
        ----------
        x0, y0
            Top-left corner of the window, in full-resolution pixels (x = column, y = row).
        side
            Side of the square window, in full-resolution pixels.

        Returns
        -------
        ``(row0, col0, n)``: the first row and column and the side ``n = round(side * scale)`` (at least 1) of
        the window in image pixels. ``n`` does not depend on the position, so all windows of a library
        have the same size.
        """
        n = max(1, int(round_half_up(side * self.scale)))
        return int(round_half_up(y0 * self.scale)), int(round_half_up(x0 * self.scale)), n

    def crop(self, x0: float, y0: float, side: float) -> np.ndarray:
        """Cut a square window given in full-resolution pixels.

        Parameters
        ----------
        x0, y0
            Top-left corner of the window, in full-resolution pixels (x = column, y = row).
        side
            Side of the window, in full-resolution pixels.

        Returns
        -------
        ``(n, n, 3)`` ``uint8`` RGB with ``n = round(side * scale)`` image pixels. Parts of the window outside
        the image are filled with :data:`PAD_VALUE` (white).
        """
        row0, col0, n = self.window(x0, y0, side)
        return self.crop_pixels(row0, col0, n)

    def crop_pixels(self, row0: int, col0: int, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """Cut an ``n × n`` window at ``(row0, col0)`` in the image's own pixels, padding outside the image.

        Parameters
        ----------
        row0, col0
            Top-left pixel of the window (may be negative or beyond the image).
        n
            Side of the window in image pixels.
        out
            Optional ``(n, n, 3)`` ``uint8`` array to write into (avoids an allocation).

        Returns
        -------
        The ``(n, n, 3)`` ``uint8`` window (``out`` when given).
        """
        height, width = self.shape
        r0, r1 = max(row0, 0), min(row0 + n, height)
        c0, c1 = max(col0, 0), min(col0 + n, width)
        if out is None:
            out = np.empty((n, n, 3), dtype=np.uint8)
        if r0 >= r1 or c0 >= c1:
            out.fill(PAD_VALUE)
            return out
        inside = r0 == row0 and c0 == col0 and r1 == row0 + n and c1 == col0 + n
        if not inside:
            out.fill(PAD_VALUE)
        out[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = self._read(r0, r1, c0, c1)
        return out

    def _read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Return rows ``r0:r1`` and columns ``c0:c1`` (inside the image) as ``(h, w, 3)`` ``uint8``."""
        self.load()
        assert self._array is not None  # load() maps or holds the pixels
        return self._array[r0:r1, c0:c1]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if isinstance(self._array, np.memmap):  # a pickled memmap would carry (and copy) all its pixels
            state["_array"], state["_mapped"] = None, _memmap_location(self._array)
        return state

    def __repr__(self) -> str:
        height, width = self.shape
        return (
            f"{type(self).__name__}({self.library_id!r}, {width} x {height} px, scale={self.scale:.4g}, {self.origin})"
        )


def _rgb(array) -> np.ndarray:
    """:func:`to_rgb_uint8`, except that an RGB(A) ``uint8`` memory map stays a memory map (not read, not pickled)."""
    if isinstance(array, np.memmap) and array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] in (3, 4):
        return array[:, :, :3]
    return to_rgb_uint8(array)


def _memmap_location(array: np.memmap) -> tuple[str, int, tuple[int, ...], tuple[int, ...]]:
    """``(file, byte offset, shape, strides)`` of a ``uint8`` memory map (or a view of one) in its file."""
    mapping = np.frombuffer(array._mmap, dtype=np.uint8)  # type: ignore[attr-defined]  # numpy's own mapping  # the whole mapping, which starts at a page boundary
    mapped_from = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
    start = array.__array_interface__["data"][0] - mapping.__array_interface__["data"][0] + mapped_from
    return str(array.filename), int(start), tuple(array.shape), tuple(array.strides)


def _map_again(filename: str, start: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.memmap:
    """Map the pixels located by :func:`_memmap_location` (in a DataLoader worker or ``ddp_spawn`` process)."""
    whole = np.memmap(filename, dtype=np.uint8, mode="r")
    view = np.lib.stride_tricks.as_strided(whole[start:], shape=shape, strides=strides, subok=True, writeable=False)
    return cast(np.memmap, view)  # subok=True keeps the memmap class


def _cache_file(cache_dir: Path, key: str, stem: str) -> Path:
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir / f"{stem}-{digest}.npy"


def _cached_array(cache_dir: Path, key: str, stem: str, decode) -> np.memmap:
    """Memory-map ``cache_dir/<stem>-<hash of key>.npy``, writing it with ``decode()`` first if it is missing."""
    path = _cache_file(cache_dir, key, stem)
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        array = np.ascontiguousarray(to_rgb_uint8(decode()))
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
        logger.info("cached the decoded image (%d x %d px) as %s", array.shape[1], array.shape[0], path)
    return np.load(path, mmap_mode="r")


class _FileSource(ImageSource):
    """A full-resolution image file: memory-mapped / lazily read TIFF, or a JPEG / PNG decoded once."""

    def __init__(self, path: Path, scale: float, library_id: str, cache_dir: Path | None = None) -> None:
        super().__init__(None, scale, library_id, origin=f"file {str(path)!r}")
        self.path = path
        self.cache_dir = cache_dir
        self._shape = image_size(path)
        self._mode: str | None = None  # "array" (in memory or memmap) or "lazy" (zarr over a tiled TIFF)
        self._axes = ""
        self._pid: int | None = None
        self._tiff: tifffile.TiffFile | None = None

    def load(self) -> ImageSource:
        if self._mode == "array" and self._array is not None:
            return self
        if self._mode == "lazy" and self._pid == os.getpid():
            return self
        self._open()
        return self

    def _cache_key(self) -> str:
        stat = self.path.stat()
        return f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def _open(self) -> None:
        if is_tiff(self.path):
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                dtype, axes = series.dtype, series.axes
            if dtype == np.uint8:
                try:
                    memmap = tifffile.memmap(self.path, series=0, level=0, mode="r")
                except ValueError:  # compressed or tiled: not memory-mappable
                    memmap = None
                if memmap is not None:
                    self._set_array(tiff_to_yxc(memmap, axes), "memory-mapped TIFF")
                    return
                if self.cache_dir is None:
                    self._open_lazy_tiff(axes)
                    return
        if self.cache_dir is not None:
            array = _cached_array(self.cache_dir, self._cache_key(), self.path.stem, lambda: read_image(self.path))
            self._set_array(array, "decoded once, memory-mapped from the cache")
            return
        self._set_array(read_image(self.path), "decoded once, held in memory")

    def _open_lazy_tiff(self, axes: str) -> None:
        import zarr

        if self._tiff is not None:
            self._tiff.close()
        self._tiff = tifffile.TiffFile(self.path)
        self._zarr = zarr.open_array(self._tiff.series[0].aszarr(level=0), mode="r")
        self._axes = axes
        self._pid = os.getpid()  # file handles must not be shared with forked DataLoader workers
        self._mode = "lazy"
        logger.info("%s: reading %s lazily tile by tile (compressed TIFF)", self.library_id, self.path)

    def _set_array(self, array, how: str) -> None:
        # memory maps stay as they are (converting would load them); crops are converted in ``_read``
        if tuple(array.shape[:2]) != self.shape:
            msg = f"{self.path}: decoded image has shape {array.shape[:2]}, the header said {self._shape}."
            raise ValueError(msg)
        self._array = array
        self._mode = "array"
        logger.debug("%s: %s (%s)", self.library_id, self.path, how)

    @property
    def in_memory(self) -> bool:
        return self._mode == "array" and super().in_memory

    def _read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        self.load()
        if self._mode == "array":
            assert self._array is not None
            return to_rgb_uint8(self._array[r0:r1, c0:c1])
        index = tuple(
            slice(r0, r1) if ax == "Y" else slice(c0, c1) if ax == "X" else slice(None) if ax in "SC" else 0
            for ax in self._axes
        )
        return to_rgb_uint8(tiff_to_yxc(np.asarray(self._zarr[index]), self._axes_after(index)))

    def _axes_after(self, index) -> str:
        return "".join(ax for ax, ix in zip(self._axes, index, strict=True) if not isinstance(ix, int))

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        if self._mode == "lazy":
            state.update(_mode=None, _tiff=None, _zarr=None, _pid=None)
        if state.get("_array") is None and self._mode == "array":
            state["_mode"] = None
        return state


class _DaskSource(ImageSource):
    """A SpatialData image element (``c, y, x``), usually dask-backed."""

    def __init__(self, data, scale: float, library_id: str, origin: str, cache_dir: Path | None = None) -> None:
        super().__init__(None, scale, library_id, origin=origin)
        self._data = data  # (c, y, x)
        self._shape = (int(data.shape[1]), int(data.shape[2]))
        self.cache_dir = cache_dir
        self._lazy = False

    def _compute(self) -> np.ndarray:
        return np.asarray(self._data.transpose(1, 2, 0))

    def load(self) -> ImageSource:
        if self._array is not None or self._lazy:
            return self
        if self.cache_dir is not None:
            key = f"{self.origin}|{getattr(self._data, 'name', '')}|{self._data.shape}"
            self._array = _cached_array(self.cache_dir, key, self.library_id, self._compute)
        elif self._data.dtype == np.uint8 and self._data.nbytes > _MAX_IN_MEMORY_BYTES:
            self._lazy = True
            logger.warning(
                "%s: the image (%.1f GiB) is cropped lazily through dask, which can be slow; pass cache_dir= to "
                "decode it once to disk.",
                self.library_id,
                self._data.nbytes / (1 << 30),
            )
        else:
            self._array = to_rgb_uint8(self._compute())
        return self

    def _read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        self.load()
        if self._lazy:
            return to_rgb_uint8(np.asarray(self._data[:, r0:r1, c0:c1].transpose(1, 2, 0)))
        assert self._array is not None
        return self._array[r0:r1, c0:c1]


def _spatialdata_element(element, name: str):
    """Return ``(data (c, y, x), scale)`` of a SpatialData image element (``DataArray`` or ``DataTree``)."""
    import spatialdata as sd
    from spatialdata.transformations import get_transformation

    if not hasattr(element, "dims"):  # multiscale DataTree: the full-resolution level
        element = sd.get_pyramid_levels(element, n=0)
    missing = {"c", "y", "x"} - set(element.dims)
    if missing:
        msg = f"Image element {name!r} must have dims ('c', 'y', 'x'), got {element.dims}."
        raise ValueError(msg)
    systems = list(get_transformation(element, get_all=True) or {})
    if _SPATIALDATA_COORDINATE_SYSTEM in systems:
        system = _SPATIALDATA_COORDINATE_SYSTEM
    elif len(systems) == 1:
        system = systems[0]
    else:
        msg = (
            f"Image element {name!r} has no {_SPATIALDATA_COORDINATE_SYSTEM!r} coordinate system (it has "
            f"{systems}); cannot tell how it maps onto the spot coordinates. Pass (array, scale) instead."
        )
        raise ValueError(msg)
    matrix = get_transformation(element, to_coordinate_system=system).to_affine_matrix(
        input_axes=("x", "y"), output_axes=("x", "y")
    )
    if not (np.isclose(matrix[0, 1], 0) and np.isclose(matrix[1, 0], 0) and np.allclose(matrix[:2, 2], 0)):
        msg = f"Image element {name!r} is rotated or translated in {system!r}; only a scaling is supported."
        raise ValueError(msg)
    if not np.isclose(matrix[0, 0], matrix[1, 1], rtol=1e-3):
        msg = f"Image element {name!r} is scaled differently along x and y ({matrix[0, 0]} vs {matrix[1, 1]})."
        raise ValueError(msg)
    data = element.transpose("c", "y", "x").data
    return data, 1.0 / float(matrix[0, 0])


def _is_spatialdata_image(value) -> bool:
    return hasattr(value, "dims") or type(value).__name__ == "DataTree"


def _source_from_value(value, lib: str, cache_dir: Path | None, what: str) -> ImageSource:
    """Build a source from a path, an array, ``(image, scale)``, a SpatialData element or an ImageSource."""
    if isinstance(value, ImageSource):
        return value
    scale = 1.0
    if isinstance(value, tuple):
        if len(value) != 2:
            msg = f"{what}: a tuple must be (image, scale), got {len(value)} items."
            raise ValueError(msg)
        value, scale = value
    if isinstance(value, str | os.PathLike):
        return _FileSource(require_file(value, f"{what}: image file", IMAGE_HINT), scale, lib, cache_dir)
    if _is_spatialdata_image(value):
        data, element_scale = _spatialdata_element(value, what)
        if not hasattr(data, "compute"):
            return ImageSource(np.asarray(data).transpose(1, 2, 0), element_scale, lib, origin=what)
        return _DaskSource(data, element_scale, lib, origin=what, cache_dir=cache_dir)
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        return ImageSource(np.asarray(value), scale, lib, origin=what)
    msg = (
        f"{what}: cannot use an object of type {type(value).__name__} as an image; pass a file path, a "
        "(height, width, 3) array, (array, scale), or a SpatialData image element."
    )
    raise TypeError(msg)


def _no_image(lib: str, detail: str) -> KeyError:
    msg = (
        f"Library {lib!r} has no image to cut patches from ({detail}). Pass image= with the full-resolution "
        f"H&E: a path (single library), a dict {{{lib!r}: path or array}}, or a SpatialData object; or store "
        f"the path in adata.uns['spatial'][{lib!r}]['metadata']['source_image_path']."
    )
    return KeyError(msg)


def _auto_source(entry: Mapping, lib: str, cache_dir: Path | None) -> ImageSource:
    """The full-resolution file when it exists, else the highest-resolution ``uns`` image."""
    source_path = entry.get("metadata", {}).get("source_image_path")
    if source_path:
        if Path(source_path).is_file():
            return _FileSource(Path(source_path), 1.0, lib, cache_dir)
        logger.warning(
            "%s: source_image_path %r not found; cutting patches from the stored downscaled image instead.",
            lib,
            source_path,
        )
    scalefactors = entry.get("scalefactors", {})
    candidates = []
    for res, array in entry.get("images", {}).items():
        scalef = scalefactors.get(f"tissue_{res}_scalef")
        if scalef is None:
            logger.warning("%s: image %r has no 'tissue_%s_scalef' scale factor; it is not used.", lib, res, res)
            continue
        candidates.append((float(scalef), res, array))
    if not candidates:
        raise _no_image(lib, "no existing source_image_path and no image with a scale factor in uns['spatial']")
    scalef, res, array = max(candidates, key=lambda item: item[0])
    if scalef < 1:
        logger.info("%s: no full-resolution file; cutting patches from the %r image (scale %.3g).", lib, res, scalef)
    return ImageSource(array, scalef, lib, origin=f"uns['spatial'][{lib!r}]['images'][{res!r}]")


def _uns_source(entry: Mapping, lib: str, res: str) -> ImageSource:
    images = entry.get("images", {})
    if res not in images:
        raise _no_image(lib, f"uns['spatial'][{lib!r}]['images'] has no {res!r} image (it has {sorted(images)})")
    scalef = entry.get("scalefactors", {}).get(f"tissue_{res}_scalef")
    if scalef is None:
        msg = f"uns['spatial'][{lib!r}]['scalefactors'] lacks 'tissue_{res}_scalef', needed to place the {res!r} image."
        raise KeyError(msg)
    return ImageSource(images[res], scalef, lib, origin=f"uns['spatial'][{lib!r}]['images'][{res!r}]")


def _spatialdata_source(sdata, lib: str, cache_dir: Path | None) -> ImageSource:
    for res in ("full", "hires"):
        name = f"{lib}_{res}_image"
        if name in sdata.images:
            data, scale = _spatialdata_element(sdata.images[name], name)
            return _DaskSource(data, scale, lib, origin=f"SpatialData image {name!r}", cache_dir=cache_dir)
    raise _no_image(lib, f"the SpatialData object has neither {lib}_full_image nor {lib}_hires_image")


@inject_docs
def resolve_images(
    adata: AnnData,
    image: Any = None,
    *,
    library_key: str = "library_id",
    libraries: Sequence[str] | None = None,
    spatial_key: str = "spatial",
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, ImageSource]:
    """Find the image each library's patches are cut from.

    Parameters
    ----------
    adata
        Spatial AnnData with ``obsm["spatial"]`` (full-resolution pixels, x = column, y = row) and
        ``uns["spatial"][library_id]`` in scanpy's layout (as written by :func:`sepal_tl.io.read_visium` /
        :func:`sepal_tl.io.read_st`). It is not modified.
    image
        Where the images come from:

        - ``None`` or ``"auto"``: per library, ``metadata["source_image_path"]`` (the full-resolution file)
          when it exists, else the highest-resolution array in ``uns["spatial"][lib]["images"]`` with its
          ``tissue_{res}_scalef``;
        - ``"hires"`` / ``"lowres"``: that ``uns`` array for every library;
        - a path (str or :class:`~os.PathLike`): the full-resolution image of the only library;
        - a dict ``{library_id: value}`` where value is a path (full resolution), a ``(height, width, 3)``
          array (taken as full resolution), a tuple ``(path or array, scale)`` (image pixels per
          full-resolution pixel), a SpatialData image element (``DataArray`` / ``DataTree``, placed with its
          transformation to the ``"global"`` coordinate system) or an :class:`ImageSource`;
        - a :class:`~spatialdata.SpatialData` object: ``f"{lib}_full_image"`` when present, else
          ``f"{lib}_hires_image"`` (as written by :func:`sepal_tl.io.to_spatialdata`), each with its scale.
    library_key
        %(library_key)s It may be absent when ``uns["spatial"]`` holds one library.
    libraries
        Only resolve these libraries (default: every library of ``adata``).
    spatial_key
        %(spatial_key)s Used to check that every image covers its spots.
    cache_dir
        Optional folder: images that cannot be memory-mapped (JPEG, PNG, compressed TIFF, dask arrays) are
        decoded once into an uncompressed ``.npy`` file there and memory-mapped, instead of being held in
        process memory. Files are named after the image and a hash of its path, size and modification time,
        and reused by later calls.

    Returns
    -------
    ``{library_id: ImageSource}``. Nothing is decoded yet: files are opened on first use or by
    :meth:`ImageSource.load`.

    Raises
    ------
    KeyError
        A library has no image (message says how to pass one).
    FileNotFoundError
        A given path does not exist.
    ValueError
        Spot centres fall outside a library's image (wrong image, or missing ``scale``).

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=20, n_genes=10, pitch_px=32, random_state=0)
    >>> sources = sepal.tl.resolve_images(adata)  # full-resolution files where known, else the hires images
    >>> sources["slide0"]
    ImageSource('slide0', 304 x 264 px, scale=1, uns['spatial']['slide0']['images']['hires'])
    >>> x, y = adata.obsm["spatial"][0]
    >>> sources["slide0"].crop(x0=x - 16, y0=y - 16, side=32).shape  # the window around the first spot
    (32, 32, 3)
    >>> sources = sepal.tl.resolve_images(adata, {"slide0": "s0.tif", "slide1": "s1.tif"})  # doctest: +SKIP
    """
    coords = check_spatial(adata, spatial_key)
    libs = library_ids(adata, library_key).to_numpy()
    wanted = list(dict.fromkeys(libs)) if libraries is None else [str(lib) for lib in libraries]
    unknown = [lib for lib in wanted if lib not in set(libs)]
    if unknown:
        msg = f"libraries={unknown} are not libraries of adata (obs[{library_key!r}] has {sorted(set(libs))})."
        raise KeyError(msg)
    cache = None if cache_dir is None else Path(cache_dir)
    spatial = adata.uns.get("spatial", {})

    if isinstance(image, str) and image in ("auto", "hires", "lowres"):
        mode = image
    elif image is None:
        mode = "auto"
    elif isinstance(image, Mapping):
        mode = "dict"
    elif type(image).__name__ == "SpatialData":
        mode = "spatialdata"
    elif isinstance(image, str | os.PathLike):
        mode = "path"
        if len(wanted) != 1:
            msg = (
                f"image= is a single path but adata has {len(wanted)} libraries ({wanted}); pass a dict "
                "{library_id: path} instead."
            )
            raise ValueError(msg)
    else:
        msg = (
            f"image= must be None, 'auto', 'hires', 'lowres', a path, a dict {{library_id: image}} or a SpatialData "
            f"object; got {type(image).__name__}."
        )
        raise TypeError(msg)

    sources: dict[str, ImageSource] = {}
    for lib in wanted:
        entry = spatial.get(lib, {})
        if mode == "auto":
            source = _auto_source(entry, lib, cache)
        elif mode in ("hires", "lowres"):
            source = _uns_source(entry, lib, mode)
        elif mode == "path":
            source = _source_from_value(image, lib, cache, "image=")
        elif mode == "dict":
            if lib not in image:
                raise _no_image(lib, f"image= is a dict without the key {lib!r} (keys: {sorted(map(str, image))})")
            source = _source_from_value(image[lib], lib, cache, f"image[{lib!r}]")
        else:
            source = _spatialdata_source(image, lib, cache)
        if source.library_id != lib:
            logger.debug("image source of %r is used for library %r", source.library_id, lib)
        diameter = entry.get("scalefactors", {}).get("spot_diameter_fullres", 0.0)
        tolerance = 1.0 + 0.5 * float(diameter) * source.scale
        check_within_image(
            coords[libs == lib] * source.scale,
            source.shape,
            what=f"the image of library {lib!r} ({source.origin}, scale {source.scale:.4g})",
            tolerance=tolerance,
        )
        sources[lib] = source
    return sources
