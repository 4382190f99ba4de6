"""Run sepal's AnnData functions on a :class:`~spatialdata.SpatialData` table, in place.

:func:`spatialdata_aware` wraps a public function whose first argument is an AnnData so that it also takes a
SpatialData object (and ``table_key=``). The wrapper

1. picks the table (``table_key``; default: the only table, else ``"table"``);
2. finds each slide's spots through the elements the table annotates (``region_key`` / ``instance_key``): their
   centres and diameters (circles: ``2 * radius``; polygons such as Visium HD's square bins: the side of the
   square of equal area);
3. when the function needs an image, picks each slide's H&E among the image elements that share a coordinate
   system with its shapes, and maps the spots into the pixels of the image's highest-resolution level through
   both elements' transformations (Identity / Scale / Affine / Sequence, any coordinate system they share);
4. writes ``obsm["spatial"]`` and ``uns["spatial"][library_id]`` (scanpy's layout, in that image's pixels, or the
   shapes' own coordinates when no image is used) into the table, runs the function on the table, and puts back
   what the table held there before (also when the function fails).

Everything is resolved before the table is touched, so a failed resolution leaves the SpatialData unchanged.
Results land where a SpatialData user looks: the table's ``layers`` / ``obsm`` / ``var``. A function that
returns a new AnnData over the same spots (:func:`sepal_tl.tl.predict` on H&E-only data) gets it stored as a new
table annotating the same shapes; ``copy=True`` returns a new SpatialData whose table is the processed copy (the
other elements are shared, not copied).

Which slide a spot is on follows :func:`sepal_tl._validation.resolve_libraries`: ``obs[library_key]``, else the
table's region column (one slide per shapes element).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from sepal_tl._keys import DEFAULT_LIBRARY_KEY
from sepal_tl._logging import logger
from sepal_tl._validation import resolve_libraries
from sepal_tl.io._images import to_rgb_uint8

__all__ = ["SlideElements", "is_spatialdata", "resolve_slides", "resolve_table", "spatialdata_aware"]

DEFAULT_TABLE_KEY = "table"
#: Image element names that hold the H&E in spatialdata-io's and sepal's layouts; preferred over other images.
HE_SUFFIXES = ("_full_image", "_hires_image", "_lowres_image")
#: Longest side (pixels) of the image drawn by the plots: the smallest stored resolution at least this large.
DISPLAY_SIDE = 2000
#: Two images are one picture at two resolutions when their extents agree to this fraction of the extent.
_SAME_EXTENT = 0.02
_ATTRS = "spatialdata_attrs"
ImageNeed = Literal["full", "display"] | None


def is_spatialdata(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`~spatialdata.SpatialData` (without importing spatialdata when it is not loaded)."""
    module = sys.modules.get("spatialdata")
    return module is not None and isinstance(obj, module.SpatialData)


# ------------------------------------------------------------------------------------------------------------------
# the table and the shapes it annotates
# ------------------------------------------------------------------------------------------------------------------
def resolve_table(sdata, table_key: str | None = None) -> tuple[str, AnnData]:
    """The table to work on: ``table_key``, else the only table, else ``"table"``; errors name the choices."""
    tables = list(sdata.tables)
    if table_key is None:
        if not tables:
            msg = (
                "The SpatialData object has no table, so there is no expression to work on. Add one with "
                "sdata.tables['table'] = TableModel.parse(adata, region=..., region_key=..., instance_key=...) "
                "(sepal.io.to_spatialdata builds it from an AnnData)."
            )
            raise ValueError(msg)
        if len(tables) == 1:
            table_key = tables[0]
        elif DEFAULT_TABLE_KEY in tables:
            table_key = DEFAULT_TABLE_KEY
        else:
            msg = f"The SpatialData object has {len(tables)} tables ({tables}); pass table_key= naming one of them."
            raise ValueError(msg)
    if table_key not in tables:
        msg = f"table_key={table_key!r} is not a table of this SpatialData object (tables: {tables})."
        raise KeyError(msg)
    return table_key, sdata.tables[table_key]


def table_links(sdata, table_key: str, table: AnnData) -> tuple[str, str, list[str]]:
    """``(region_key, instance_key, regions)`` of a table annotating shapes; errors when it annotates none."""
    attrs = table.uns.get(_ATTRS)
    if not isinstance(attrs, Mapping) or "region_key" not in attrs or "instance_key" not in attrs:
        msg = (
            f"Table {table_key!r} annotates no element (uns[{_ATTRS!r}] is missing), so its spots have no "
            "position. Link it to the spot shapes with TableModel.parse(table, region=..., region_key=..., "
            "instance_key=...)."
        )
        raise ValueError(msg)
    region_key, instance_key = str(attrs["region_key"]), str(attrs["instance_key"])
    for key in (region_key, instance_key):
        if key not in table.obs:
            msg = f"Table {table_key!r} has no obs[{key!r}] column, which its {_ATTRS} name to link spots to shapes."
            raise KeyError(msg)
    regions = [str(r) for r in pd.unique(table.obs[region_key].astype(str))]
    not_shapes = [r for r in regions if r not in sdata.shapes]
    if not_shapes:
        kinds = {r: kind for r in not_shapes for kind in ("labels", "points", "images") if r in getattr(sdata, kind)}
        msg = (
            f"Table {table_key!r} annotates {not_shapes}, which {'are' if len(not_shapes) > 1 else 'is'} not a "
            f"shapes element of this SpatialData ({kinds or 'missing'}; shapes: {list(sdata.shapes)}). sepal "
            "needs the spots as shapes (circles or polygons); annotate them with TableModel.parse(..., region=...)."
        )
        raise ValueError(msg)
    return region_key, instance_key, regions


def _transformations(element) -> dict:
    from spatialdata.transformations import get_transformation

    return dict(get_transformation(element, get_all=True) or {})


def _affine(transformation) -> np.ndarray:
    """3 × 3 matrix of a transformation on ``(x, y, 1)``."""
    return np.asarray(transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _shape_geometry(shapes, ids: np.ndarray, region: str) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(n, 2)`` and diameters of the shapes ``ids``, in the shapes' own coordinates."""
    index = shapes.index
    positions = index.get_indexer(ids)
    if (positions < 0).any():  # ids stored as strings on one side and integers on the other
        positions = pd.Index(index.astype(str)).get_indexer(ids.astype(str))
    missing = positions < 0
    if missing.any():
        msg = (
            f"{int(missing.sum())} spots of the table (e.g. instance {ids[missing][0]!r}) are not in shapes {region!r}."
        )
        raise KeyError(msg)
    geometry = shapes.geometry.iloc[positions]
    if "radius" in shapes.columns:
        diameters = 2 * shapes["radius"].to_numpy(dtype=float)[positions]
        centres = np.column_stack([geometry.x.to_numpy(), geometry.y.to_numpy()])
    else:
        diameters = np.sqrt(geometry.area.to_numpy(dtype=float))
        centroids = geometry.centroid
        centres = np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy()])
    return centres.astype(float), diameters


# ------------------------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Picture:
    """One image element (or one level of a multiscale one) and its map into a coordinate system."""

    name: str
    data: Any  # DataArray (c, y, x)
    to_shapes: np.ndarray  # 3 x 3, image pixels -> the shapes' own coordinates

    @property
    def size(self) -> tuple[int, int]:
        return int(self.data.sizes["y"]), int(self.data.sizes["x"])

    @property
    def pixel(self) -> float:
        """Length of one pixel in the shapes' coordinates."""
        return float(np.sqrt(abs(np.linalg.det(self.to_shapes[:2, :2]))))

    def extent(self) -> np.ndarray:
        height, width = self.size
        corners = _apply(self.to_shapes, np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=float))
        return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def _levels(element) -> list:
    """The levels of an image element, highest resolution first (one for a plain ``DataArray``)."""
    if type(element).__name__ != "DataTree":
        return [element]
    return [next(iter(element[name].ds.data_vars.values())) for name in element.children]


def _shared_system(shape_systems: dict, image_systems: dict, names: tuple[str, str], centres: np.ndarray) -> str:
    """A coordinate system both elements map to; error when there is none, or several that disagree."""
    shared = [cs for cs in shape_systems if cs in image_systems]
    if not shared:
        msg = (
            f"Missing transformation: shapes {names[0]!r} (coordinate systems {list(shape_systems)}) and image "
            f"{names[1]!r} ({list(image_systems)}) share no coordinate system, so the spots cannot be placed on the "
            "image. Add one with spatialdata.transformations.set_transformation(element, transformation, "
            "to_coordinate_system=...)."
        )
        raise ValueError(msg)
    placed = {
        cs: _apply(np.linalg.inv(_affine(image_systems[cs])) @ _affine(shape_systems[cs]), centres) for cs in shared
    }
    first = shared[0]
    disagree = [cs for cs in shared[1:] if not np.allclose(placed[cs], placed[first], atol=0.5)]
    if disagree:
        msg = (
            f"Shapes {names[0]!r} and image {names[1]!r} share several coordinate systems that place the spots "
            f"differently ({[first, *disagree]}). Remove the transformations that do not apply with "
            "spatialdata.transformations.remove_transformation(element, name)."
        )
        raise ValueError(msg)
    return first


def _same_picture(a: _Picture, b: _Picture) -> bool:
    ea, eb = a.extent(), b.extent()
    span = max(np.ptp(ea.reshape(2, 2), axis=0).max(), np.ptp(eb.reshape(2, 2), axis=0).max())
    return bool(np.abs(ea - eb).max() <= _SAME_EXTENT * span)


def _claims(name: str, libraries: list[str]) -> str | None:
    """The library an element name starts with (``f"{lib}_..."``), the longest when several do."""
    owners = [lib for lib in libraries if name.startswith(f"{lib}_")]
    return max(owners, key=len) if owners else None


def _candidate_images(sdata, lib: str, libraries: list[str], shape_systems: dict) -> list[str]:
    """Image elements that may hold ``lib``'s H&E: in a coordinate system of its shapes, not named for another slide."""
    names = [name for name in sdata.images if set(_transformations(sdata.images[name])) & set(shape_systems)]
    names = [name for name in names if _claims(name, libraries) in (None, lib)]
    own = [name for name in names if _claims(name, libraries) == lib]
    names = own or names
    he = [name for name in names if name.endswith(HE_SUFFIXES)]
    return he or names


# ------------------------------------------------------------------------------------------------------------------
# slides
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class SlideElements:
    """What one slide needs: its spots in the table, their centres and diameter, and its image (if any).

    Coordinates are in the pixels of ``image`` (its highest-resolution level) when there is one, else in the
    shapes' own coordinates.
    """

    library_id: str
    rows: np.ndarray
    centres: np.ndarray
    diameter: float
    region: str  # the shapes element (the first, when the slide spans several)
    image: Any = None  # DataArray (c, y, x) of the highest resolution, or None
    image_name: str | None = None
    display: tuple[Any, float] | None = None  # (DataArray (c, y, x), image pixels per frame unit) for plots

    def spatial_entry(self, metadata: Mapping | None = None) -> dict:
        """``uns["spatial"][library_id]`` in scanpy's layout (the display image computed now)."""
        scalefactors: dict[str, float] = {"spot_diameter_fullres": float(self.diameter)}
        images = {}
        if self.display is not None:
            data, scale = self.display
            images["hires"] = to_rgb_uint8(np.asarray(data.transpose("y", "x", "c").data))
            scalefactors["tissue_hires_scalef"] = float(scale)
        return {"images": images, "scalefactors": scalefactors, "metadata": dict(metadata or {})}

    def image_element(self):
        """The full-resolution image as a ``DataArray`` mapped by identity to ``"global"`` (for sepal.tl)."""
        from spatialdata.transformations import Identity, set_transformation

        view = self.image.copy(deep=False)
        view.attrs = dict(self.image.attrs)
        set_transformation(view, {"global": Identity()}, set_all=True)
        return view


def image_to_shapes(sdata, image: str, level, region: str, centres: np.ndarray) -> np.ndarray:
    """3 × 3 map from the pixels of ``level`` (of image element ``image``) to the own coordinates of shapes ``region``.

    Goes through a coordinate system both elements share (errors: none shared, or several that disagree).
    """
    shape_systems = _transformations(sdata.shapes[region])
    systems = _transformations(level) or _transformations(sdata.images[image])
    cs = _shared_system(shape_systems, systems, (region, image), centres)
    return np.linalg.inv(_affine(shape_systems[cs])) @ _affine(systems[cs])


def _pictures(sdata, names: list[str], region: str, centres: np.ndarray) -> list[_Picture]:
    return [
        _Picture(name, level, image_to_shapes(sdata, name, level, region, centres))
        for name in names
        for level in _levels(sdata.images[name])
    ]


def _choose_image(sdata, lib: str, region: str, names: list[str], centres: np.ndarray) -> list[_Picture]:
    """Every level of the one picture for ``lib`` (maps: image pixels -> the shapes' own coordinates)."""
    pictures = _pictures(sdata, names, region, centres)
    groups: list[list[_Picture]] = []
    for picture in pictures:
        group = next((g for g in groups if _same_picture(g[0], picture)), None)
        if group is None:
            groups.append([picture])
        else:
            group.append(picture)
    if len(groups) > 1:
        choices = sorted({p.name for p in pictures})
        msg = (
            f"Slide {lib!r} has several candidate images that are not one picture at several resolutions "
            f"({choices}). Choose one: image='<name>' for sepal.tl functions, img_key='<name>' for sepal.pl."
        )
        raise ValueError(msg)
    return groups[0] if groups else []


def _chosen_names(choice: Any, lib: str, sdata) -> list[str] | None:
    """Image names the user chose for ``lib`` (``image=`` / ``img_key=``), or ``None`` for the automatic choice."""
    if isinstance(choice, Mapping):
        choice = choice.get(lib)
    if choice is None:
        return None
    if choice not in sdata.images:
        msg = f"{choice!r} is not an image element of this SpatialData (images: {list(sdata.images)})."
        raise KeyError(msg)
    return [choice]


def resolve_slides(
    sdata,
    table_key: str,
    table: AnnData,
    *,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    images: ImageNeed = None,
    choice: Any = None,
) -> dict[str, SlideElements]:
    """Each slide's spots, centres, diameter and (with ``images``) image; nothing is modified.

    ``images="full"`` keeps the highest-resolution level (lazy); ``"display"`` also the smallest stored resolution
    whose longest side is at least :data:`DISPLAY_SIDE` pixels (for plots). ``choice`` is the user's ``image=`` /
    ``img_key=``: an image element name, or a dict ``{library_id: name}``.
    """
    region_key, instance_key, _ = table_links(sdata, table_key, table)
    libraries = resolve_libraries(table, library_key)
    names = [str(c) for c in libraries.cat.categories]
    regions = table.obs[region_key].astype(str).to_numpy()
    instances = table.obs[instance_key].to_numpy()
    slides = {}
    for lib in names:
        rows = np.flatnonzero((libraries == lib).to_numpy())
        lib_regions = list(dict.fromkeys(regions[rows]))
        if len(lib_regions) > 1 and images is not None:
            msg = (
                f"Slide {lib!r} spans several shapes elements ({lib_regions}); their coordinates cannot be put on "
                "one image. Give each shapes element its own slide (obs[library_key])."
            )
            raise ValueError(msg)
        centres = np.empty((rows.size, 2))
        diameters = np.empty(rows.size)
        for region in lib_regions:
            part = regions[rows] == region
            centres[part], diameters[part] = _shape_geometry(sdata.shapes[region], instances[rows[part]], region)
        slide = SlideElements(lib, rows, centres, float(np.median(diameters)) if rows.size else 1.0, lib_regions[0])
        if images is not None:
            _attach_image(sdata, slide, names, choice)
        slides[lib] = slide
    return slides


def _attach_image(sdata, slide: SlideElements, libraries: list[str], choice: Any) -> None:
    """Map ``slide`` into the pixels of its image and keep the image (and a display level) on it."""
    region = slide.region
    shape_systems = _transformations(sdata.shapes[region])
    chosen = _chosen_names(choice, slide.library_id, sdata)
    names = chosen or _candidate_images(sdata, slide.library_id, libraries, shape_systems)
    if not names:
        logger.info("slide %r: no image element shares a coordinate system with %r", slide.library_id, region)
        return
    pictures = _choose_image(sdata, slide.library_id, region, names, slide.centres)
    best = min(pictures, key=lambda p: p.pixel)
    to_pixels = np.linalg.inv(best.to_shapes)  # shapes' coordinates -> pixels of the best level
    slide.centres = _apply(to_pixels, slide.centres)
    slide.diameter *= float(np.sqrt(abs(np.linalg.det(to_pixels[:2, :2]))))
    slide.image, slide.image_name = best.data, best.name
    # plots: the smallest level that is still DISPLAY_SIDE wide, if it is a plain scaling of the best one
    scaled = []
    for picture in pictures:
        relative = to_pixels @ picture.to_shapes  # picture pixels -> best pixels
        if np.allclose(relative[[0, 1], [1, 0]], 0) and np.allclose(relative[:2, 2], 0, atol=1.0):
            scaled.append((max(picture.size), picture, 1.0 / relative[0, 0]))
    large = [item for item in scaled if item[0] >= min(DISPLAY_SIDE, max(s[0] for s in scaled))]
    side, picture, scale = min(large, key=lambda item: item[0])
    step = max(1, side // DISPLAY_SIDE)  # no stored level small enough: take every step-th pixel, lazily
    slide.display = (picture.data[:, ::step, ::step], scale / step)


# ------------------------------------------------------------------------------------------------------------------
# running a function on the table
# ------------------------------------------------------------------------------------------------------------------
def _bind(table: AnnData, slides: dict[str, SlideElements], metadata: Mapping) -> None:
    coords = np.zeros((table.n_obs, 2))
    for slide in slides.values():
        coords[slide.rows] = slide.centres
    table.obsm["spatial"] = coords
    table.uns["spatial"] = {
        lib: slide.spatial_entry(metadata.get(lib, {}).get("metadata")) for lib, slide in slides.items()
    }


def _restore(adata: AnnData, saved: dict[str, Any]) -> None:
    """Put back the table's own ``obsm["spatial"]`` / ``uns["spatial"]`` (or remove ours)."""
    own = saved["obsm"]
    if own is None:
        adata.obsm.pop("spatial", None)
    else:
        adata.obsm["spatial"] = own.reindex(adata.obs_names).to_numpy()
    if saved["uns"] is None:
        adata.uns.pop("spatial", None)
    else:
        adata.uns["spatial"] = saved["uns"]


def _as_new_table(sdata, table_key: str, source: AnnData, result: AnnData, name: str) -> None:
    from spatialdata.models import TableModel

    attrs = source.uns[_ATTRS]
    result.obs[attrs["region_key"]] = source.obs[attrs["region_key"]].reindex(result.obs_names).astype("category")
    result.obs[attrs["instance_key"]] = source.obs[attrs["instance_key"]].reindex(result.obs_names).to_numpy()
    if name in sdata.tables:
        logger.warning("table %r is replaced by the predictions.", name)
    sdata.tables[name] = TableModel.parse(
        result, region=attrs["region"], region_key=attrs["region_key"], instance_key=attrs["instance_key"]
    )
    logger.info("added table %r (predictions for the spots of table %r)", name, table_key)


def _copy_with_table(sdata, table_key: str, table: AnnData):
    from spatialdata import SpatialData

    tables = {key: value for key, value in sdata.tables.items() if key != table_key}
    return SpatialData(
        images=dict(sdata.images),
        labels=dict(sdata.labels),
        points=dict(sdata.points),
        shapes=dict(sdata.shapes),
        tables={**tables, table_key: table},
    )


def _image_choice(sdata, kwargs: dict, images: ImageNeed) -> tuple[ImageNeed, Any]:
    """Whether images are needed for this call, and which image element the user chose (``None``: automatic).

    ``image=`` (sepal.tl): ``None`` / ``"auto"`` / the SpatialData itself choose automatically; an element name or a
    dict ``{library_id: element name}`` chooses; arrays, paths and image sources go to sepal.tl untouched.
    ``img_key=`` (sepal.pl) chooses when it names an image element; its defaults (``"hires"``) choose automatically.
    """
    if images == "full":
        value = kwargs.get("image")
        if value is None or (isinstance(value, str) and value == "auto") or is_spatialdata(value):
            return images, None
        if isinstance(value, str) or (isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values())):
            return images, value
        return None, None
    if images == "display" and kwargs.get("img", True):
        key = kwargs.get("img_key")
        return images, key if isinstance(key, str) and key in sdata.images else None
    return None, None


def _call_on_table(func: Callable, signature: inspect.Signature, sdata, args, kwargs, table_key, images: ImageNeed):
    name, table = resolve_table(sdata, table_key)
    parameter = signature.parameters.get("library_key")
    library_key = kwargs.get("library_key", DEFAULT_LIBRARY_KEY if parameter is None else parameter.default)
    needed, choice = _image_choice(sdata, kwargs, images)
    slides = resolve_slides(sdata, name, table, library_key=library_key, images=needed, choice=choice)
    if needed == "full":
        kwargs = {**kwargs, "image": {lib: s.image_element() for lib, s in slides.items() if s.image is not None}}
        if not kwargs["image"]:
            del kwargs["image"]
    elif needed == "display":
        kwargs = {**kwargs, "img_key": "hires"}
    own_spatial = table.uns.get("spatial")
    saved = {
        "obsm": pd.DataFrame(np.asarray(table.obsm["spatial"]), index=table.obs_names)
        if "spatial" in table.obsm
        else None,
        "uns": own_spatial,
    }
    _bind(table, slides, own_spatial if isinstance(own_spatial, Mapping) else {})
    try:
        result = func(table, *args, **kwargs)
    finally:
        _restore(table, saved)
    if isinstance(result, AnnData) and result is not table:
        _restore(result, saved)
        if kwargs.get("copy", False):
            return _copy_with_table(sdata, name, result)
        _as_new_table(sdata, name, table, result, str(kwargs.get("key_added", "sepal")))
    return result


def spatialdata_aware(*, images: ImageNeed = None) -> Callable[[Callable], Callable]:
    """Let an AnnData function take a SpatialData object (and ``table_key=``), working in place on its table.

    Parameters
    ----------
    images
        ``None``: the function needs no image (preprocessing, evaluation); ``"full"``: it cuts patches, so each
        slide's highest-resolution image is passed as ``image=`` (unless the user passed arrays, paths or image
        sources); ``"display"``: it draws, so a resolution of at most about :data:`DISPLAY_SIDE` pixels goes to
        ``uns["spatial"][lib]["images"]["hires"]``.
    """

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(data, *args, table_key: str | None = None, **kwargs):
            if not is_spatialdata(data):
                if table_key is not None:
                    msg = f"table_key= only applies to SpatialData input; {func.__name__} got a {type(data).__name__}."
                    raise TypeError(msg)
                return func(data, *args, **kwargs)
            return _call_on_table(func, signature, data, args, kwargs, table_key, images)

        parameters = list(signature.parameters.values())
        extra = inspect.Parameter("table_key", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None")
        keep = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
        tail = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
        first = keep[0].replace(annotation="AnnData | SpatialData")
        wrapper.__signature__ = signature.replace(parameters=[first, *keep[1:], extra, *tail])  # type: ignore[attr-defined]
        return wrapper

    return decorate
