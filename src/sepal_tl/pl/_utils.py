"""Shared plumbing of the plotting functions: figure handling (show / save / return_fig) and spots on the H&E."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, cast

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.collections import EllipseCollection
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import sparse
from scipy.spatial import cKDTree

from sepal_tl._logging import logger
from sepal_tl._validation import get_matrix, resolve_libraries

#: What a plotting function draws into: one Axes or a list of them.
_Drawn = TypeVar("_Drawn", bound="Axes | list[Axes]")

#: ``gid`` of the collection that draws the spots, and of the one that marks imputed spots.
SPOTS_GID = "spots"
IMPUTED_GID = "imputed"
#: Diameter of the imputed-spot mark, as a fraction of the spot diameter.
IMPUTED_MARK_SCALE = 0.4
#: Without ``scalefactors["spot_diameter_fullres"]``, spots are drawn this fraction of the neighbour distance wide.
_FALLBACK_DIAMETER_FRACTION = 0.55


# --------------------------------------------------------------------------------------------------------------------
# show / save / return_fig
# --------------------------------------------------------------------------------------------------------------------
def new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot figure (so notebooks display it) with constrained layout."""
    return plt.figure(figsize=figsize, layout="constrained")


def single_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its (root) figure, or a new figure with one Axes."""
    if ax is None:
        fig = new_figure(figsize)
        return fig, fig.add_subplot()
    if not isinstance(ax, Axes):
        msg = f"ax must be a matplotlib Axes, got {type(ax).__name__}."
        raise TypeError(msg)
    return root_figure(ax), ax


def root_figure(ax: Axes) -> Figure:
    """The top-level figure of ``ax`` (also when ``ax`` lives in a subfigure)."""
    fig = ax.figure
    while not isinstance(fig, Figure) and getattr(fig, "figure", None) is not None and fig.figure is not fig:
        fig = fig.figure
    return cast(Figure, fig)


def figure_path(save: Literal[True] | str | Path, name: str) -> Path:
    """Where ``save=`` writes a figure, with scanpy's semantics.

    ``True``: ``sc.settings.figdir / f"{name}.{sc.settings.file_format_figs}"``. A file name without a folder (a
    ``str`` such as ``"_C2.png"``): ``sc.settings.figdir / f"{name}_C2.png"``, the function's name in front as
    scanpy does, its extension (``.pdf``, ``.png``, ``.svg``) kept, else ``file_format_figs``. A
    :class:`~pathlib.Path`, or a ``str`` with a folder: written there as given (PNG without an extension).
    """
    import scanpy as sc

    figdir, fmt = Path(sc.settings.figdir), str(sc.settings.file_format_figs)
    if save is True:
        return figdir / f"{name}{sc.settings.plot_suffix}.{fmt}"
    if isinstance(save, str) and Path(save).name == save:
        stem, ext = (save[: -len(s)], s) if (s := Path(save).suffix) in (".pdf", ".png", ".svg") else (save, f".{fmt}")
        return figdir / f"{name}{stem}{sc.settings.plot_suffix}{ext}"
    path = Path(save).expanduser()
    return path if path.suffix else path.with_suffix(".png")


def save_figure(fig: Figure, save: Literal[True] | str | Path, name: str) -> Path:
    """Write ``fig`` where :func:`figure_path` says."""
    path = figure_path(save, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    logger.info("saved figure to %s", path)
    return path


def finish(
    fig: Figure,
    result: _Drawn,
    *,
    show: bool | None,
    save: bool | str | Path | None,
    return_fig: bool,
    name: str,
    ax_given: bool = False,
) -> Figure | _Drawn | None:
    """Save, show and pick what to return, following scanpy's habits.

    ``show=None`` shows the figure only when matplotlib is in interactive mode (e.g. IPython with ``%matplotlib``)
    and nothing else asked for it: no ``ax`` was passed, no ``save`` path and no ``return_fig``. A shown figure
    returns ``None``; otherwise the Axes (``result``) are returned, or the Figure with ``return_fig=True``.
    ``name`` (the plotting function's) names the file of ``save=True`` / ``save="_suffix.png"``.
    """
    if save is not None and save is not False:
        save_figure(fig, save, name)
    if return_fig:
        return fig
    if show is None:
        show = not ax_given and save in (None, False) and mpl.is_interactive()
    if show and not ax_given:
        plt.show()
        return None
    return result


# --------------------------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------------------------
def gene_indices(adata: AnnData, genes: str | Sequence[str]) -> tuple[list[str], list[int]]:
    """The genes as a list and their column positions; ``KeyError`` naming every unknown gene."""
    names = [genes] if isinstance(genes, str) else list(genes)
    if not names:
        msg = "genes is empty; pass one gene name or a list of them."
        raise ValueError(msg)
    unknown = [g for g in names if g not in adata.var_names]
    if unknown:
        example = list(adata.var_names[:5])
        msg = f"Gene(s) {unknown} not in adata.var_names ({adata.n_vars} genes, e.g. {example})."
        raise KeyError(msg)
    return [str(g) for g in names], [int(adata.var_names.get_loc(g)) for g in names]


def layer_matrix(adata: AnnData, layer: str, *, hint: str = ""):
    """``adata.layers[layer]`` with a ``KeyError`` that says how to create it."""
    if not isinstance(layer, str):
        msg = f"Layer names must be strings, got {layer!r}."
        raise TypeError(msg)
    try:
        return get_matrix(adata, layer)
    except KeyError as err:
        msg = f"{err.args[0]} {hint}".strip()
        raise KeyError(msg) from None


#: How each layer of the pipeline is made, for the error messages.
LAYER_HINTS = {
    "log2tpm": "Create it with sepal.pp.log2p (or sepal.pp.run).",
    "denoised": "Create it with sepal.pp.denoise (or sepal.pp.run).",
    "observed": "sepal.pp.denoise (or sepal.pp.run) stores it (True = raw count > 0).",
    "sepal": "Create it with sepal.tl.fit / sepal.tl.predict.",
    "sepal_local": "Create it with sepal.tl.fit_encoder / sepal.tl.predict.",
}


def layer_hint(layer: str) -> str:
    """How to create ``layer``."""
    return LAYER_HINTS.get(layer, "Pass layers= naming existing layers, or create it (e.g. with sepal.tl.predict).")


def column(matrix, rows: np.ndarray, col: int, *, dtype=float) -> np.ndarray:
    """Dense values of column ``col`` at ``rows`` of a dense or sparse matrix."""
    if sparse.issparse(matrix):
        part = matrix[rows][:, [col]]
        return np.asarray(part.toarray()).ravel().astype(dtype)
    return np.asarray(matrix[rows, col]).ravel().astype(dtype)


# --------------------------------------------------------------------------------------------------------------------
# one slide on its image
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Slide:
    """One library's spots and image, in full-resolution pixel coordinates."""

    library_id: str
    rows: np.ndarray  # positions of its spots in adata
    coords: np.ndarray  # (n, 2) x = column, y = row, full-resolution pixels
    spot_diameter: float  # full-resolution pixels
    image: np.ndarray | None  # the uns image (None: drawn without)
    scale: float  # image pixels per full-resolution pixel

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``imshow`` extent that puts the image in full-resolution coordinates (y down)."""
        assert self.image is not None, "extent is only asked of a view with an image"
        h, w = self.image.shape[:2]
        return (-0.5 / self.scale, (w - 0.5) / self.scale, (h - 0.5) / self.scale, -0.5 / self.scale)

    def limits(self, margin: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """The x and y limits around the spots (y inverted, image convention), ``margin`` spot diameters wide."""
        pad = margin * self.spot_diameter
        (x0, y0), (x1, y1) = self.coords.min(axis=0) - pad, self.coords.max(axis=0) + pad
        return (x0, x1), (y1, y0)


def _slide_rows(
    adata: AnnData, library_id: str | None, library_key: str | None, spatial_uns: dict
) -> tuple[str, np.ndarray]:
    """The library to draw (the only one when ``library_id`` is ``None``) and the rows of its spots."""
    libraries = resolve_libraries(adata, library_key)
    available = [str(c) for c in libraries.cat.categories if (libraries == c).any()]
    if library_id is None:
        if len(available) > 1:
            msg = (
                f"adata holds {len(available)} slides ({available}); pass library_id= naming the one to draw "
                f"(values of obs[{library_key!r}])."
            )
            raise ValueError(msg)
        # one slide without a library column: its uns entry is the only one there
        if available[0] not in spatial_uns and len(spatial_uns) == 1:
            return next(iter(spatial_uns)), np.arange(adata.n_obs)
        return available[0], np.flatnonzero((libraries == available[0]).to_numpy())
    library_id = str(library_id)
    if library_id in available:
        return library_id, np.flatnonzero((libraries == library_id).to_numpy())
    if len(available) == 1 and library_id in spatial_uns:
        return library_id, np.arange(adata.n_obs)
    msg = f"library_id={library_id!r} is not a slide of adata; choose one of {available}."
    raise ValueError(msg)


def _slide_image(spatial_uns: dict, library_id: str, img_key: str) -> tuple[np.ndarray, float]:
    """The ``img_key`` image of ``uns["spatial"][library_id]`` and its scale factor."""
    entry = spatial_uns.get(library_id)
    if entry is None:
        msg = (
            f"adata.uns['spatial'][{library_id!r}] is missing, so there is no H&E image to draw on "
            f"(libraries with images: {sorted(spatial_uns)}). Pass img=False to draw the spots alone."
        )
        raise KeyError(msg)
    images = entry.get("images", {})
    if img_key not in images:
        msg = (
            f"No image {img_key!r} in adata.uns['spatial'][{library_id!r}]['images'] "
            f"(available: {sorted(images)}). Pass img_key= naming one, or img=False."
        )
        raise KeyError(msg)
    scalefactors = dict(entry.get("scalefactors", {})) if isinstance(entry, dict) else {}
    scale_key = f"tissue_{img_key}_scalef"
    if scale_key not in scalefactors:
        msg = (
            f"adata.uns['spatial'][{library_id!r}]['scalefactors'] has no {scale_key!r}, so the {img_key!r} image "
            "cannot be placed in full-resolution coordinates. Pass img=False to draw the spots alone."
        )
        raise KeyError(msg)
    return np.asarray(images[img_key]), float(scalefactors[scale_key])


def slide(
    adata: AnnData,
    library_id: str | None,
    *,
    library_key: str | None,
    spatial_key: str = "spatial",
    img: bool = True,
    img_key: str = "hires",
) -> Slide:
    """Resolve ``library_id`` and gather what is needed to draw its spots (clear errors before any drawing)."""
    spatial_uns = adata.uns.get("spatial", {})
    library_id, rows = _slide_rows(adata, library_id, library_key, spatial_uns)
    if spatial_key not in adata.obsm:
        msg = (
            f"adata.obsm[{spatial_key!r}] is missing: spot coordinates (full-resolution pixels, x = column, y = row) "
            "are needed. Read the data with sepal.io.read_visium / sepal.io.read_st, or set them."
        )
        raise KeyError(msg)
    coords = np.asarray(adata.obsm[spatial_key], dtype=float)[rows]
    if coords.ndim != 2 or coords.shape[1] != 2 or not np.isfinite(coords).all():
        msg = f"adata.obsm[{spatial_key!r}] must hold finite (n_obs, 2) coordinates."
        raise ValueError(msg)

    entry = spatial_uns.get(library_id)
    scalefactors = dict(entry.get("scalefactors", {})) if isinstance(entry, dict) else {}
    image, scale = _slide_image(spatial_uns, library_id, img_key) if img else (None, 1.0)
    diameter = scalefactors.get("spot_diameter_fullres")
    if diameter is None or not np.isfinite(diameter) or diameter <= 0:
        diameter = _fallback_diameter(coords)
        logger.info(
            "no scalefactors['spot_diameter_fullres'] for %r: drawing spots %.3g px wide (%.0f %% of the neighbour "
            "distance)",
            library_id,
            diameter,
            100 * _FALLBACK_DIAMETER_FRACTION,
        )
    return Slide(str(library_id), rows, coords, float(diameter), image, scale)


def _fallback_diameter(coords: np.ndarray) -> float:
    if coords.shape[0] < 2:
        return 1.0
    distances = cKDTree(coords).query(coords, k=2)[0][:, 1]
    distances = distances[distances > 0]
    return float(_FALLBACK_DIAMETER_FRACTION * np.median(distances)) if distances.size else 1.0


def draw_slide_panel(
    ax: Axes,
    view: Slide,
    values: np.ndarray,
    *,
    cmap: str | Colormap,
    norm: Normalize,
    spot_scale: float = 1.0,
    imputed: np.ndarray | None = None,
    img_alpha: float = 1.0,
    title: str | None = None,
) -> EllipseCollection:
    """Draw the H&E (if any) and the spots of one slide coloured by ``values``; mark ``imputed`` spots.

    Spots are circles of the true spot diameter (times ``spot_scale``) in data coordinates, so they keep their size
    relative to the tissue at any figure size. Imputed spots get a small white dot with a dark outline in their centre.
    """
    if view.image is not None:
        image = view.image
        ax.imshow(
            image,
            extent=view.extent,
            cmap="gray" if image.ndim == 2 else None,
            alpha=img_alpha,
            interpolation="antialiased",
            zorder=0,
        )
    cmap = plt.get_cmap(cmap) if isinstance(cmap, str) else cmap
    cmap = cmap.with_extremes(bad="lightgrey")
    diameter = view.spot_diameter * spot_scale
    n = view.coords.shape[0]
    spots = EllipseCollection(
        np.full(n, diameter),
        np.full(n, diameter),
        np.zeros(n),
        units="xy",
        offsets=view.coords,
        offset_transform=ax.transData,
        cmap=cmap,
        norm=norm,
        linewidths=0,
        zorder=2,
    )
    spots.set_array(np.ma.masked_invalid(values))
    spots.set_gid(SPOTS_GID)
    ax.add_collection(spots, autolim=False)
    if imputed is not None and imputed.any():
        m = int(imputed.sum())
        mark = diameter * IMPUTED_MARK_SCALE
        marks = EllipseCollection(
            np.full(m, mark),
            np.full(m, mark),
            np.zeros(m),
            units="xy",
            offsets=view.coords[imputed],
            offset_transform=ax.transData,
            facecolors="white",
            edgecolors="black",
            linewidths=0.4,
            zorder=3,
        )
        marks.set_gid(IMPUTED_GID)
        ax.add_collection(marks, autolim=False)
    xlim, ylim = view.limits(margin=1.0)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title is not None:
        ax.set_title(title, fontsize="medium")
    return spots


def imputed_handle(n: int):
    """Legend handle for the imputed-spot mark."""
    return Line2D(
        [],
        [],
        marker="o",
        markersize=4,
        markerfacecolor="white",
        markeredgecolor="black",
        markeredgewidth=0.6,
        linestyle="none",
        label=f"imputed ({n})",
    )


def check_limits(vmin: float | None, vmax: float | None) -> None:
    """``ValueError`` unless ``vmin < vmax`` when both are given."""
    if vmin is not None and vmax is not None and not float(vmin) < float(vmax):
        msg = f"vmin must be below vmax, got vmin={vmin!r} and vmax={vmax!r}."
        raise ValueError(msg)


def shared_norm(*arrays: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> Normalize:
    """One colour scale spanning the finite values of every array (``vmin`` / ``vmax`` override)."""
    finite = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    finite = finite[np.isfinite(finite)]
    lo = float(vmin) if vmin is not None else float(finite.min()) if finite.size else 0.0
    hi = float(vmax) if vmax is not None else float(finite.max()) if finite.size else 1.0
    if hi <= lo:  # constant values, or one bound given beyond the data
        if vmax is None:
            hi = lo + 1.0
        else:
            lo = hi - 1.0
    return Normalize(vmin=lo, vmax=hi)


def panel_size(view: Slide, width: float) -> tuple[float, float]:
    """Width and height (inches) of one panel of ``width`` inches showing ``view`` at equal aspect."""
    (x0, x1), (y1, y0) = view.limits(margin=1.0)
    aspect = (y1 - y0) / max(x1 - x0, 1e-9)
    return width, width * float(np.clip(aspect, 0.3, 3.0))


def draw_gene_blocks(
    view: Slide,
    values: list[list[np.ndarray]],
    titles: list[list[str]],
    imputed: list[list[np.ndarray | None]],
    *,
    ncols: int,
    cmap: str | Colormap,
    vmin: float | None,
    vmax: float | None,
    spot_scale: float,
    img_alpha: float,
    panel_width: float,
    figsize: tuple[float, float] | None,
    colorbar_label: str,
    suptitle: str | None = None,
    ax: Axes | None = None,
) -> tuple[Figure, list[Axes]]:
    """One block per gene (its panels side by side, one shared colour scale and one colourbar), ``ncols`` per row.

    ``values[g][p]`` are the spot values of gene ``g`` in panel ``p``; ``imputed[g][p]`` the spots to mark (or None).
    Returns the figure and the panel Axes in gene-major order. With ``ax`` (one gene, one panel) the panel is drawn
    there, in the caller's figure, without a figure title.
    """
    n_genes, n_panels = len(values), len(values[0])
    ncols = max(1, min(ncols, n_genes))
    nrows = -(-n_genes // ncols)
    width, height = panel_size(view, panel_width)
    if figsize is None:
        figsize = (ncols * (n_panels * width + 0.9), nrows * (height + 0.75) + (0.3 if suptitle else 0))
    fig = new_figure(figsize) if ax is None else root_figure(ax)
    if suptitle and ax is None:
        fig.suptitle(suptitle, fontsize="medium")
    grid = fig.add_gridspec(nrows, ncols * n_panels) if ax is None else None
    axes: list[Axes] = []
    for g in range(n_genes):
        r, c = divmod(g, ncols)
        norm = shared_norm(*values[g], vmin=vmin, vmax=vmax)
        block: list[Axes] = []
        legend_done = False
        for p in range(n_panels):
            panel = cast(Axes, ax) if grid is None else fig.add_subplot(grid[r, c * n_panels + p])
            spots = draw_slide_panel(
                panel,
                view,
                values[g][p],
                cmap=cmap,
                norm=norm,
                spot_scale=spot_scale,
                imputed=imputed[g][p],
                img_alpha=img_alpha,
                title=titles[g][p],
            )
            marks = imputed[g][p]
            if marks is not None and marks.any() and not legend_done:
                panel.legend(
                    handles=[imputed_handle(int(marks.sum()))],
                    loc="upper left",
                    bbox_to_anchor=(0.0, 0.0),  # just below the panel, off the tissue
                    fontsize="x-small",
                    frameon=False,
                    borderpad=0.2,
                    handletextpad=0.2,
                    borderaxespad=0.1,
                )
                legend_done = True
            block.append(panel)
        fig.colorbar(spots, ax=block, shrink=0.85, aspect=25, pad=0.02, label=colorbar_label)
        axes += block
    return fig, axes
