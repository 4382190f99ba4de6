"""Round trip between spatial AnnData (scanpy layout) and :class:`spatialdata.SpatialData`.

Element names, per library ``lib``:

- ``lib``: circles (shapes) centred on ``obsm["spatial"]`` with radius ``spot_diameter_fullres / 2``;
- ``f"{lib}_full_image"``: the full-resolution image, when ``metadata["source_image_path"]`` points to a file
  (loaded lazily, identity transformation);
- ``f"{lib}_hires_image"`` / ``f"{lib}_lowres_image"``: the ``uns["spatial"]`` images, with a ``Scale``
  transformation onto full-resolution pixels;
- one table (``"table"``) annotating every spots element (``region_key="region"``,
  ``instance_key="spot_id"``, the AnnData's ``obs_names``).

Everything lives in the ``"global"`` coordinate system, whose unit is the full-resolution pixel (slides
overlap there, as they do in ``obsm["spatial"]``). These names match spatialdata-io's Visium reader
(``{dataset_id}_hires_image`` ...), so its output can be read back with :func:`from_spatialdata`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import spatialdata as sd
from anndata import AnnData
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity, Scale
from xarray import DataArray

from sepal_tl._docs import inject_docs
from sepal_tl._keys import DEFAULT_LIBRARY_KEY
from sepal_tl._logging import logger
from sepal_tl._sdata import image_to_shapes, resolve_slides, resolve_table, table_links
from sepal_tl._validation import check_spatial

from ._common import check_library_id, library_ids
from ._images import image_size, read_image, to_rgb_uint8

COORDINATE_SYSTEM = "global"
REGION_KEY = "region"
INSTANCE_KEY = "spot_id"
TABLE_KEY = "table"
IMAGE_RESOLUTIONS = ("hires", "lowres")
_FULL_IMAGE_CHUNKS = (3, 4096, 4096)


def spots_key(library_id: str) -> str:
    """Name of a library's spot circles element: the library id, as in spatialdata-io's Visium reader."""
    return library_id


def image_key(library_id: str, resolution: str) -> str:
    """Name of a library's image element; ``resolution`` is ``"full"``, ``"hires"`` or ``"lowres"``."""
    return f"{library_id}_{resolution}_image"


def lazy_image(path: str | os.PathLike) -> da.Array:
    """Wrap an image file as a ``(3, height, width)`` ``uint8`` dask array that is decoded only when computed."""
    height, width = image_size(path)
    delayed = dask.delayed(read_image, pure=True)(str(path))
    return da.from_delayed(delayed, shape=(height, width, 3), dtype=np.uint8).transpose(2, 0, 1)


def _parse_image(data, transformation) -> DataArray:
    return Image2DModel.parse(
        data, dims=("c", "y", "x"), c_coords=["r", "g", "b"], transformations={COORDINATE_SYSTEM: transformation}
    )


def _image_elements(library_id: str, entry: dict) -> dict:
    scalefactors = entry.get("scalefactors", {})
    elements = {}
    for res, array in entry.get("images", {}).items():
        scalef = scalefactors.get(f"tissue_{res}_scalef")
        if scalef is None:
            logger.warning(
                "%s: no 'tissue_%s_scalef' scale factor; the %r image is not exported.", library_id, res, res
            )
            continue
        data = np.ascontiguousarray(to_rgb_uint8(array).transpose(2, 0, 1))
        elements[image_key(library_id, res)] = _parse_image(data, Scale([1 / scalef, 1 / scalef], axes=("x", "y")))
    source = entry.get("metadata", {}).get("source_image_path")
    if source and Path(source).is_file():
        element = _parse_image(lazy_image(source), Identity())
        elements[image_key(library_id, "full")] = element.chunk(
            dict(zip(("c", "y", "x"), _FULL_IMAGE_CHUNKS, strict=True))
        )
    elif source:
        logger.warning("%s: source image %r not found; the full-resolution image is not exported.", library_id, source)
    return elements


def _free_column(obs: pd.DataFrame, name: str) -> str:
    """``name``, or ``f"{name}_sdata"`` (``_sdata_2`` ...) when ``obs`` already has a column of that name."""
    candidate, n = name, 1
    while candidate in obs:
        candidate = f"{name}_sdata" if n == 1 else f"{name}_sdata_{n}"
        n += 1
    return candidate


@inject_docs
def to_spatialdata(adata: AnnData, *, library_key: str = "library_id") -> SpatialData:
    """Convert a spatial AnnData (scanpy layout) to :class:`~spatialdata.SpatialData`.

    Parameters
    ----------
    adata
        AnnData with ``obsm["spatial"]`` (full-resolution pixels) and, per library,
        ``uns["spatial"][library_id]`` with ``scalefactors["spot_diameter_fullres"]`` (as set by
        :func:`read_visium` / :func:`read_st`). It is not modified.
    library_key
        %(library_key)s It may be absent when ``uns["spatial"]`` holds one library.

    Returns
    -------
    SpatialData with, per library ``lib``, the circles ``lib``, the images ``f"{lib}_hires_image"``
    / ``f"{lib}_lowres_image"`` (``Scale`` onto full-resolution pixels) and, when
    ``metadata["source_image_path"]`` exists, ``f"{lib}_full_image"`` as a lazy dask array (nothing is decoded
    until it is computed or written), all in the ``"global"`` coordinate system; and the table ``"table"``
    (a copy of ``adata`` with ``obs["region"]`` and ``obs["spot_id"]`` — ``"region_sdata"`` / ``"spot_id_sdata"``
    when ``adata`` already has such columns — and ``uns["spatial"]`` without the
    image arrays) annotating every spots element. The highest-resolution image of a library is
    ``f"{lib}_full_image"`` when present, else ``f"{lib}_hires_image"``.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=20, n_genes=10, pitch_px=32, random_state=0)
    >>> sdata = sepal.io.to_spatialdata(adata)
    >>> sorted(sdata.shapes), sorted(sdata.tables)  # spots per slide, and the table
    (['slide0', 'slide1'], ['table'])
    >>> sorted(sdata.images)
    ['slide0_hires_image', 'slide0_lowres_image', 'slide1_hires_image', 'slide1_lowres_image']
    >>> sdata.write("slides.zarr")
    """
    coords = check_spatial(adata)
    if not adata.obs_names.is_unique:
        msg = "adata.obs_names must be unique (they become the spot ids); run adata.obs_names_make_unique() first."
        raise ValueError(msg)
    libs = library_ids(adata, library_key)
    spatial = adata.uns.get("spatial", {})
    images, shapes = {}, {}
    for lib in dict.fromkeys(libs):
        check_library_id(lib)
        entry = spatial.get(lib, {})
        diameter = entry.get("scalefactors", {}).get("spot_diameter_fullres")
        if diameter is None:
            msg = (
                f"adata.uns['spatial'][{lib!r}]['scalefactors']['spot_diameter_fullres'] is missing: the spot "
                "size is needed for the circles. Read the data with sepal.io.read_visium / read_st, or set it."
            )
            raise KeyError(msg)
        mask = (libs == lib).to_numpy()
        shapes[spots_key(lib)] = ShapesModel.parse(
            coords[mask],
            geometry=0,
            radius=np.full(int(mask.sum()), diameter / 2),
            index=pd.Index(adata.obs_names[mask].astype(str)),
            transformations={COORDINATE_SYSTEM: Identity()},
        )
        images.update(_image_elements(lib, entry))

    table = adata.copy()
    table.uns["spatial"] = {
        lib: {key: copy.deepcopy(value) for key, value in entry.items() if key != "images"}
        for lib, entry in spatial.items()
    }
    region_key, instance_key = (_free_column(table.obs, key) for key in (REGION_KEY, INSTANCE_KEY))
    regions = list(shapes)
    table.obs[library_key] = pd.Categorical(libs.to_numpy(), categories=list(dict.fromkeys(libs)))
    table.obs[region_key] = pd.Categorical([spots_key(lib) for lib in libs], categories=regions)
    table.obs[instance_key] = table.obs_names.astype(str)
    table = TableModel.parse(table, region=regions, region_key=region_key, instance_key=instance_key)
    sdata = SpatialData(images=images, shapes=shapes, tables={TABLE_KEY: table})
    logger.info("built SpatialData: %d images, %d spots elements, table %r", len(images), len(shapes), TABLE_KEY)
    return sdata


def _uns_images(sdata: SpatialData, slide) -> tuple[dict, dict]:
    """``images`` and ``tissue_{res}_scalef`` of a slide from ``f"{lib}_hires_image"`` / ``f"{lib}_lowres_image"``."""
    images, scalefactors = {}, {}
    for res in IMAGE_RESOLUTIONS:
        name = image_key(slide.library_id, res)
        if name not in sdata.images:
            continue
        element = sdata.images[name]
        level = sd.get_pyramid_levels(element, n=0) if type(element).__name__ == "DataTree" else element
        to_shapes = image_to_shapes(sdata, name, level, slide.region, slide.centres)
        scale = to_shapes[0, 0]
        if not (np.allclose(to_shapes[[0, 1], [1, 0]], 0) and np.isclose(to_shapes[1, 1], scale, rtol=1e-3)):
            logger.warning("%s: image %r is rotated or sheared relative to the spots; it is not exported.", name, name)
            continue
        images[res] = to_rgb_uint8(np.asarray(level.transpose("y", "x", "c").data))
        scalefactors[f"tissue_{res}_scalef"] = float(1.0 / scale)
    return images, scalefactors


@inject_docs
def from_spatialdata(
    sdata: SpatialData, *, table_key: str | None = None, library_key: str = DEFAULT_LIBRARY_KEY
) -> AnnData:
    """Convert a :class:`~spatialdata.SpatialData` back to a spatial AnnData (scanpy layout).

    The inverse of :func:`to_spatialdata`; also reads spatialdata-io's Visium output (its ``{dataset_id}`` shapes
    and ``{dataset_id}_hires_image`` / ``_lowres_image``, in the ``{dataset_id}`` coordinate system). To work on a
    SpatialData object without converting it, pass it to ``sepal.pp`` / ``sepal.tl`` / ``sepal.pl`` directly.

    Parameters
    ----------
    sdata
        SpatialData whose table annotates shapes elements (circles or polygons) of spots.
    table_key
        %(table_key)s
    library_key
        %(library_key)s When the table lacks it, a library is named after its shapes element (the table's region).

    Returns
    -------
    A copy of the table with ``obsm["spatial"]`` (the spot centres in the shapes' own coordinates: full-resolution
    pixels for Visium), ``obs[library_key]`` (categorical) and ``uns["spatial"][lib]`` with ``images``
    (``hires`` / ``lowres`` from ``f"{lib}_hires_image"`` / ``f"{lib}_lowres_image"``, as ``uint8`` RGB, placed
    through the transformations the images share with the spots), ``scalefactors`` (``spot_diameter_fullres``
    from the shapes unless the table has it) and ``metadata``. The linking columns (``region_key`` /
    ``instance_key``) and ``uns["spatialdata_attrs"]`` are dropped; ``X``, layers and ``var`` are kept. The
    full-resolution image is not loaded (its path stays in ``metadata["source_image_path"]``).

    Examples
    --------
    >>> import spatialdata as sd
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=20, n_genes=10, pitch_px=32, random_state=0)
    >>> sepal.io.to_spatialdata(adata).write("slides.zarr")
    >>> back = sepal.io.from_spatialdata(sd.read_zarr("slides.zarr"))
    >>> back.shape, list(back.uns["spatial"])
    ((40, 10), ['slide0', 'slide1'])
    """
    table_key, table = resolve_table(sdata, table_key)
    region_key, instance_key, _ = table_links(sdata, table_key, table)
    slides = resolve_slides(sdata, table_key, table, library_key=library_key)
    stored = table.uns.get("spatial", {})
    coords = np.empty((table.n_obs, 2), dtype=np.float64)
    libs = np.empty(table.n_obs, dtype=object)
    spatial = {}
    for lib, slide in slides.items():
        coords[slide.rows] = slide.centres
        libs[slide.rows] = lib
        entry = copy.deepcopy({k: v for k, v in stored.get(lib, {}).items() if k != "images"})
        scalefactors = entry.setdefault("scalefactors", {})
        entry.setdefault("metadata", {})
        scalefactors.setdefault("spot_diameter_fullres", slide.diameter)
        entry["images"], scales = _uns_images(sdata, slide)
        for key, value in scales.items():
            scalefactors.setdefault(key, value)
        spatial[lib] = entry
    adata = table.copy()
    adata.obsm["spatial"] = coords
    adata.obs[library_key] = pd.Categorical(libs, categories=list(spatial))
    adata.obs = adata.obs.drop(columns=[region_key, instance_key])
    del adata.uns[TableModel.ATTRS_KEY]
    adata.uns["spatial"] = spatial
    logger.info("read %d spots of %d libraries from SpatialData table %r", adata.n_obs, len(spatial), table_key)
    return adata
