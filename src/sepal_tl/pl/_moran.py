"""Genes ranked by Moran's I, with the selection cut-off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sepal_tl._docs import inject_docs
from sepal_tl._keys import HIGHLY_SPATIAL, MORAN_I
from sepal_tl._sdata import spatialdata_aware
from sepal_tl.pl._utils import finish, single_axes


def _label_column(cutoff: float | None) -> float:
    """Horizontal position (axes fraction) of the gene-name column, clear of the cut-off line (also in axes fraction)."""
    for x in (0.55, 0.35, 0.75):
        if cutoff is None or not x - 0.03 <= cutoff <= x + 0.2:
            return x
    return 0.55  # pragma: no cover - the three windows cover every cut-off


def _selected_flags(adata: AnnData, key: str, selected_key: str | None) -> np.ndarray | None:
    """``var[selected_key]`` as a boolean array (``None`` without a key), after checking both columns exist."""
    if key not in adata.var.columns:
        msg = (
            f"adata.var[{key!r}] is missing. Run sepal.pp.select_genes (or sepal.pp.run) first, or pass key= naming "
            "the column with Moran's I."
        )
        raise KeyError(msg)
    if selected_key is None:
        return None
    if selected_key not in adata.var.columns:
        msg = (
            f"adata.var[{selected_key!r}] is missing. Run sepal.pp.select_genes first, or pass "
            "selected_key=None to colour the top n_top genes."
        )
        raise KeyError(msg)
    flags = adata.var[selected_key]
    if flags.isna().any() or flags.dtype != bool:
        msg = f"adata.var[{selected_key!r}] must be boolean (True = selected), got dtype {flags.dtype}."
        raise ValueError(msg)
    return flags.to_numpy()


def _ranking(
    adata: AnnData, key: str, selected: np.ndarray | None, n_top: int | None
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Genes with a finite I from the highest down, their I, and the checked cut-off (default: the selected)."""
    values = np.asarray(adata.var[key], dtype=float)
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size == 0:
        msg = f"adata.var[{key!r}] has no finite value; nothing to plot."
        raise ValueError(msg)
    order = finite[np.argsort(-values[finite], kind="stable")]
    if n_top is None and selected is not None:
        n_top = int(selected.sum())
    if n_top is not None and (not isinstance(n_top, int | np.integer) or not 0 < n_top <= order.size):
        msg = f"n_top must be an integer between 1 and the {order.size} ranked genes, got {n_top!r}."
        raise ValueError(msg)
    return order, values[order], n_top


def _label_top_genes(ax: Axes, names: list[str], ranked: np.ndarray, *, column_x: float) -> None:
    """Name the top genes in a column in the upper right (empty above a decreasing curve), with leader lines."""
    for rank, name in enumerate(names):
        ax.annotate(
            name,
            (rank + 1, ranked[rank]),
            xytext=(column_x, 0.95 - 0.075 * rank),
            textcoords="axes fraction",
            fontsize="x-small",
            ha="left",
            va="center",
            arrowprops={"arrowstyle": "-", "color": "0.55", "linewidth": 0.5, "shrinkA": 1, "shrinkB": 3},
            gid="gene_label",
        )


@spatialdata_aware()
@inject_docs
def moran(
    adata: AnnData,
    *,
    key: str = MORAN_I,
    selected_key: str | None = HIGHLY_SPATIAL,
    n_top: int | None = None,
    n_labels: int = 5,
    ax: Axes | None = None,
    figsize: tuple[float, float] = (5.5, 3.5),
    show: bool | None = None,
    save: bool | str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Plot the genes ranked by Moran's I, the selected ones coloured, with the cut-off at ``n_top``.

    Genes are sorted by ``var[key]`` (mean Moran's I over the slides, from :func:`sepal_tl.pp.select_genes`), from
    the highest (rank 1) down; genes without an I (NaN) are left out. The genes flagged in ``var[selected_key]`` are
    drawn in colour, the others in grey. A vertical dashed line between rank ``n_top`` and ``n_top + 1``
    (at x = ``n_top`` + 0.5) marks the cut-off, and the ``n_labels`` top genes are named.

    When the pipeline subset ``adata`` to the selected genes (``sepal.pp.run`` does), only these genes are left,
    so the cut-off lies at the right end.

    Parameters
    ----------
    adata
        Spots × genes after :func:`sepal_tl.pp.select_genes` (or :func:`sepal_tl.pp.run`).
    key
        ``var`` column with Moran's I.
    selected_key
        Boolean ``var`` column flagging the selected genes; ``None`` colours the top ``n_top`` instead.
    n_top
        Where to draw the cut-off; default: the number of selected genes. No line when neither is known.
    n_labels
        Number of top genes to name (0 for none).
    ax
        %(ax)s
    figsize
        %(figsize)s
    %(show_save_return_fig)s
    table_key
        %(table_key)s

    Returns
    -------
    The Figure if ``return_fig``, ``None`` if the figure was shown, else the Axes.

    Examples
    --------
    .. plot::
        :alt: Moran's I of every gene, ranked, with the cut that keeps the most spatially patterned genes.

        >>> import sepal_tl as sepal
        >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=100, n_genes=100, pitch_px=32, random_state=0)
        >>> sepal.pp.tpm(adata)
        >>> sepal.pp.log2p(adata)
        >>> sepal.pp.denoise(adata, layer="log2tpm")
        >>> sepal.pp.select_genes(adata, n_top=20, slides=["slide0"])  # ranks every gene, keeps them all
        >>> ax = sepal.pl.moran(adata)
    """
    selected = _selected_flags(adata, key, selected_key)
    if not isinstance(n_labels, int | np.integer) or n_labels < 0:
        msg = f"n_labels must be a non-negative integer, got {n_labels!r}."
        raise ValueError(msg)
    order, ranked, n_top = _ranking(adata, key, selected, n_top)
    ranks = np.arange(1, order.size + 1)
    chosen = selected[order] if selected is not None else ranks <= (n_top or 0)

    ax_given = ax is not None
    fig, ax = single_axes(ax, figsize)
    size = float(np.clip(400 / np.sqrt(order.size), 2, 30))
    ax.plot(ranks, ranked, color="0.75", linewidth=0.8, zorder=1)
    if (~chosen).any():
        ax.scatter(ranks[~chosen], ranked[~chosen], s=size, color="0.6", label=f"other ({int((~chosen).sum())})")
    ax.scatter(
        ranks[chosen], ranked[chosen], s=size, color="C0", label=f"selected ({int(chosen.sum())})", gid="selected"
    )
    if n_top is not None:
        ax.axvline(n_top + 0.5, color="C3", linestyle="--", linewidth=1.2, label=f"n_top = {n_top}", gid="cutoff")
    xmax = order.size + 1
    names = [str(adata.var_names[i]) for i in order[: min(n_labels, order.size)]]
    _label_top_genes(ax, names, ranked, column_x=_label_column(None if n_top is None else (n_top + 0.5) / xmax))
    ax.set_xlabel("Gene rank")
    ax.set_ylabel(f"Moran's I ({key})")
    ax.set_title(f"Moran's I of {order.size} genes", fontsize="medium")
    ax.set_xlim(0, xmax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig, name="moran", ax_given=ax_given)
