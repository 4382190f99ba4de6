"""Ground truth and prediction of genes on the slide's H&E (the paper's Figure 4)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from sepal_tl._docs import inject_docs
from sepal_tl._keys import DEFAULT_LIBRARY_KEY, DENOISED, OBSERVED, PREDICTION, gene_score_column
from sepal_tl._sdata import spatialdata_aware
from sepal_tl.pl._utils import (
    check_limits,
    column,
    draw_gene_blocks,
    finish,
    gene_indices,
    layer_hint,
    layer_matrix,
    slide,
)
from sepal_tl.tl._metrics import pearson


def _pcc_column(adata: AnnData, pcc_key: str | Literal[False] | None, pred: str) -> str | None:
    """The ``var`` column holding the per-gene PCC, ``None`` to compute it on the fly."""
    if pcc_key is False:
        return None
    if pcc_key is None:
        prefix = gene_score_column(pred, "pcc", "")
        found = [c for c in adata.var.columns if str(c).startswith(prefix)]
        return str(found[0]) if found else None
    if pcc_key not in adata.var.columns:
        candidates = [str(c) for c in adata.var.columns if "_pcc_" in str(c)]
        msg = (
            f"pcc_key={pcc_key!r} is not a column of adata.var (PCC columns: {candidates}). "
            "Run sepal.tl.evaluate(adata, pred=..., split=...) to add one, or pass pcc_key=None."
        )
        raise KeyError(msg)
    return str(pcc_key)


def _pcc_label(key: str, pred: str) -> str:
    prefix = gene_score_column(pred, "pcc", "")
    return key[len(prefix) :] if key.startswith(prefix) else key


@spatialdata_aware(images="display")
@inject_docs
def gene_map(
    adata: AnnData,
    genes: str | Sequence[str],
    *,
    layers: str | Sequence[str] = (DENOISED, PREDICTION),
    layer: str | None = None,
    library_id: str | None = None,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    spatial_key: str = "spatial",
    img: bool = True,
    img_key: str = "hires",
    img_alpha: float = 1.0,
    mark_imputed: bool = True,
    mask: str = OBSERVED,
    cmap: str | Colormap = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    ncols: int | None = None,
    spot_scale: float = 1.0,
    pcc_key: str | Literal[False] | None = None,
    panel_width: float = 3.5,
    figsize: tuple[float, float] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """Plot genes on the slide's H&E: ground truth and prediction side by side (the paper's Figure 4).

    Each gene gets one block of panels, one per layer, sharing one colour scale (the range of the gene's values
    over all its panels on this slide) and one colourbar. Spots are circles of the true spot diameter
    (``scalefactors["spot_diameter_fullres"]``) drawn in full-resolution pixel coordinates over the
    ``uns["spatial"]`` image, so they sit exactly on the tissue they were measured on.

    Spots whose ground truth was imputed by the median filter (``layers[mask]`` is False: the raw count was 0)
    get a small white dot with a dark outline in their centre, in every panel of the gene's block, with the count
    in a legend on the first panel. The metrics ignore these entries.

    The last panel's title shows the gene's PCC: from ``var[pcc_key]`` (by default the first ``var`` column named
    ``f"{layers[-1]}_pcc_*"``, as :func:`sepal_tl.tl.evaluate` writes it: pooled over that split's spots), else
    computed on the fly between ``layers[0]`` and ``layers[-1]`` on the observed spots of the slide shown.

    Parameters
    ----------
    adata
        Spots × genes with the layers, ``obsm[spatial_key]`` and ``uns["spatial"]``.
    genes
        One gene or a list of genes (``var_names``); one block of panels each.
    layers
        Layers to show, one panel each: the ground truth first, the prediction last.
    layer
        Show this one layer only (scanpy's habit; overrides ``layers``), e.g. ``layer="sepal"``.
    library_id
        Slide to draw (a value of ``obs[library_key]``). ``None`` is allowed when there is only one slide.
    library_key
        %(library_key)s %(one_slide_rule)s
    spatial_key
        %(spatial_key)s
    img
        %(img)s
    img_key
        Image of ``uns["spatial"][library_id]["images"]`` to draw (``"hires"`` or ``"lowres"``); it is placed with
        ``scalefactors[f"tissue_{img_key}_scalef"]``.
    img_alpha
        %(img_alpha)s
    mark_imputed
        Mark the spots whose value in ``layers[mask]`` is False (imputed by the median filter).
    mask
        Boolean layer, True where the raw count was observed (non-zero).
    cmap
        %(cmap)s
    vmin, vmax
        Fix the colour scale of every gene (default: each gene's own range over its panels).
    ncols
        Gene blocks per figure row (default 1: one gene per row).
    spot_scale
        %(spot_scale)s
    pcc_key
        ``var`` column with the per-gene PCC to show; ``None`` finds one or computes it, ``False`` shows none.
    panel_width
        %(panel_width)s
    figsize
        %(figsize)s Overrides ``panel_width``.
    ax
        %(ax)s Only for a single panel (one gene, one layer).
    %(show_save_return_fig)s
    table_key
        %(table_key)s

    Returns
    -------
    The Figure if ``return_fig``, ``None`` if the figure was shown, else the list of panel Axes (gene-major: the
    panels of the first gene, then of the second, ...); with ``ax=``, that Axes.

    Examples
    --------
    .. plot::
        :alt: Measured and predicted expression maps of two genes on the test slide, on one colour scale per gene.

        >>> import sepal_tl as sepal
        >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
        >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
        >>> model = sepal.tl.fit(
        ...     adata, backbone="test_vit", pretrained=False, patch_size=32,
        ...     encoder_epochs=1, spatial_epochs=1, device="cpu",
        ... )
        >>> metrics = sepal.tl.evaluate(adata, pred="sepal", split="test")
        >>> best = adata.var["sepal_pcc_test"].nlargest(2).index  # the two best-predicted genes
        >>> axes = sepal.pl.gene_map(adata, list(best), library_id="slide2")  # measured | predicted
    """
    names, idx = gene_indices(adata, genes)
    layer_names = [layer] if layer is not None else [layers] if isinstance(layers, str) else list(layers)
    if not layer_names:
        msg = "layers is empty; pass at least one layer (e.g. layers=('denoised', 'sepal'))."
        raise ValueError(msg)
    matrices = [layer_matrix(adata, layer, hint=layer_hint(layer)) for layer in layer_names]
    if ncols is not None and (not isinstance(ncols, int | np.integer) or ncols < 1):
        msg = f"ncols must be a positive integer, got {ncols!r}."
        raise ValueError(msg)
    if not spot_scale > 0:
        msg = f"spot_scale must be positive, got {spot_scale!r}."
        raise ValueError(msg)
    check_limits(vmin, vmax)
    if ax is not None and len(names) * len(layer_names) != 1:
        msg = (
            f"ax= draws one panel, but {len(names)} gene(s) x {len(layer_names)} layer(s) make "
            f"{len(names) * len(layer_names)}; pass one gene and layer= (or leave ax=None)."
        )
        raise ValueError(msg)
    view = slide(adata, library_id, library_key=library_key, spatial_key=spatial_key, img=img, img_key=img_key)
    mask_m = None
    if mask in adata.layers:
        mask_m = adata.layers[mask]
        if mask_m.dtype != bool:
            msg = f"mask layer {mask!r} must be boolean (True = observed), got dtype {mask_m.dtype}."
            raise ValueError(msg)
    elif mark_imputed:
        warnings.warn(
            f"layers[{mask!r}] is missing, so imputed spots are not marked ({layer_hint(mask)}). "
            "Pass mark_imputed=False to silence this.",
            UserWarning,
            stacklevel=2,
        )
    pcc_col = _pcc_column(adata, pcc_key, layer_names[-1])
    on_the_fly = pcc_key is not False and pcc_col is None and len(layer_names) >= 2

    values, titles, marks = [], [], []
    for gene, j in zip(names, idx, strict=True):
        gene_values = [column(m, view.rows, j) for m in matrices]
        observed = column(mask_m, view.rows, j, dtype=bool) if mask_m is not None else None
        gene_titles = [f"{gene} · {layer}" for layer in layer_names]
        if pcc_col is not None:
            value = float(adata.var[pcc_col].iloc[j])
            gene_titles[-1] += f"\nPCC ({_pcc_label(pcc_col, layer_names[-1])}) = {_fmt(value)}"
        elif on_the_fly:
            keep = observed if observed is not None else np.ones(view.rows.size, dtype=bool)
            value = pearson(gene_values[0][keep], gene_values[-1][keep])
            where = "observed spots" if observed is not None else "all spots"
            gene_titles[-1] += f"\nPCC ({view.library_id}, {where}) = {_fmt(value)}"
        imputed = ~observed if (observed is not None and mark_imputed) else None
        values.append(gene_values)
        titles.append(gene_titles)
        marks.append([imputed] * len(layer_names))

    fig, axes = draw_gene_blocks(
        view,
        values,
        titles,
        marks,
        ncols=ncols or 1,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        spot_scale=spot_scale,
        img_alpha=img_alpha,
        panel_width=panel_width,
        figsize=figsize,
        colorbar_label="expression",
        suptitle=f"library {view.library_id}",
        ax=ax,
    )
    result = axes[0] if ax is not None else axes
    return finish(fig, result, show=show, save=save, return_fig=return_fig, name="gene_map", ax_given=ax is not None)


def _fmt(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3f}"
