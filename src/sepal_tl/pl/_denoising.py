"""A gene before and after SEPAL's adaptive median filter (the paper's Figure 3)."""

from __future__ import annotations

from pathlib import Path

from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from sepal_tl._docs import inject_docs
from sepal_tl._keys import DEFAULT_LIBRARY_KEY, DENOISED, LOG2TPM, OBSERVED
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


@spatialdata_aware(images="display")
@inject_docs
def denoising(
    adata: AnnData,
    gene: str,
    *,
    library_id: str | None = None,
    before: str = LOG2TPM,
    after: str = DENOISED,
    mask: str = OBSERVED,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    spatial_key: str = "spatial",
    img: bool = True,
    img_key: str = "hires",
    img_alpha: float = 1.0,
    cmap: str | Colormap = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    spot_scale: float = 1.0,
    panel_width: float = 3.5,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Plot one gene before and after the adaptive median filter, side by side (the paper's Figure 3).

    The left panel shows ``layers[before]`` with its "pepper" zeros, the right panel ``layers[after]``, where the
    filter replaced them by the median of their nearest non-zero neighbours. Both panels share one colour scale and
    one colourbar. In the right panel the imputed spots (``layers[mask]`` is False) get a small white dot with a dark
    outline in their centre; the legend gives their number.

    Parameters
    ----------
    adata
        Spots × genes with both layers, the mask, ``obsm[spatial_key]`` and ``uns["spatial"]``.
    gene
        The gene (a ``var_name``).
    library_id
        Slide to draw (a value of ``obs[library_key]``). ``None`` is allowed when there is only one slide.
    before
        Layer before the filter (SEPAL: log2(TPM + 1)).
    after
        Layer after the filter.
    mask
        Boolean layer, True where the raw count was observed (non-zero); False marks the imputed spots.
    library_key
        %(library_key)s %(one_slide_rule)s
    spatial_key
        %(spatial_key)s
    img
        %(img)s
    img_key
        Image of ``uns["spatial"][library_id]["images"]`` to draw.
    img_alpha
        %(img_alpha)s
    cmap
        %(cmap)s
    vmin, vmax
        Fix the colour scale (default: the range over both panels).
    spot_scale
        %(spot_scale)s
    panel_width
        %(panel_width)s
    figsize
        %(figsize)s Overrides ``panel_width``.
    %(show_save_return_fig)s
    table_key
        %(table_key)s

    Returns
    -------
    The Figure if ``return_fig``, ``None`` if the figure was shown, else the two Axes ``[before, after]``.

    Examples
    --------
    .. plot::
        :alt: Spatial maps of one gene before and after the adaptive median filter, with the imputed spots marked.

        >>> import sepal_tl as sepal
        >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
        >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
        >>> observed = adata[adata.obs["library_id"] == "slide0"].layers["observed"]
        >>> gene = adata.var_names[(~observed).sum(axis=0).argmax()]  # the gene with the most imputed spots
        >>> axes = sepal.pl.denoising(adata, gene, library_id="slide0")
    """
    if not isinstance(gene, str):
        msg = f"gene must be one gene name, got {gene!r}; use sepal.pl.gene_map for several genes."
        raise TypeError(msg)
    (name,), (j,) = gene_indices(adata, gene)
    before_m = layer_matrix(adata, before, hint=layer_hint(before))
    after_m = layer_matrix(adata, after, hint=layer_hint(after))
    mask_m = layer_matrix(adata, mask, hint=layer_hint(mask))
    if mask_m.dtype != bool:
        msg = f"mask layer {mask!r} must be boolean (True = observed), got dtype {mask_m.dtype}."
        raise ValueError(msg)
    if not spot_scale > 0:
        msg = f"spot_scale must be positive, got {spot_scale!r}."
        raise ValueError(msg)
    check_limits(vmin, vmax)
    view = slide(adata, library_id, library_key=library_key, spatial_key=spatial_key, img=img, img_key=img_key)

    values = [column(before_m, view.rows, j), column(after_m, view.rows, j)]
    imputed = ~column(mask_m, view.rows, j, dtype=bool)
    n, share = int(imputed.sum()), float(imputed.mean()) if imputed.size else float("nan")
    titles = [
        f"{name} · before filter ({before})",
        f"{name} · after filter ({after})\n{n} of {imputed.size} spots imputed ({100 * share:.1f} %)",
    ]
    fig, axes = draw_gene_blocks(
        view,
        [values],
        [titles],
        [[None, imputed]],
        ncols=1,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        spot_scale=spot_scale,
        img_alpha=img_alpha,
        panel_width=panel_width,
        figsize=figsize,
        colorbar_label="expression",
        suptitle=f"library {view.library_id}",
    )
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, name="denoising")
