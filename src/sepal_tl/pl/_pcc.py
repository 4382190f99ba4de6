"""Histogram of the per-gene PCC (the paper's Figure 5)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sepal_tl._deprecation import renamed_arguments
from sepal_tl._docs import inject_docs
from sepal_tl._keys import PREDICTION, gene_score_column
from sepal_tl._sdata import spatialdata_aware
from sepal_tl.pl._utils import finish, single_axes


@renamed_arguments(key="pred")
@spatialdata_aware()
@inject_docs
def pcc_histogram(
    adata: AnnData,
    *,
    pred: str = PREDICTION,
    split: str = "test",
    bins: int | Sequence[float] = 30,
    color: str = "C0",
    ax: Axes | None = None,
    figsize: tuple[float, float] = (5.0, 3.5),
    show: bool | None = None,
    save: bool | str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Plot the histogram of the per-gene Pearson correlation between ground truth and prediction (Figure 5).

    The values are ``var[f"{pred}_pcc_{split}"]``, written by ``sepal.tl.evaluate(adata, pred=pred, split=split)``.
    Genes without a PCC (NaN: not evaluated, or constant truth / prediction on the observed entries) are left out;
    the title gives their number. Dashed and dotted vertical lines mark the mean and the median.

    Parameters
    ----------
    adata
        Spots × genes after :func:`sepal_tl.tl.evaluate`.
    pred
        The prediction layer that was evaluated (``pred=`` of :func:`sepal_tl.tl.evaluate`). Formerly ``key``,
        which still works with a :class:`FutureWarning`.
    split
        The split it was evaluated on (``"all"`` for ``split=None``).
    bins
        Number of bins, or the bin edges.
    color
        Colour of the bars.
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
        :alt: Histogram of per-gene Pearson correlations between measured and predicted expression.

        >>> import sepal_tl as sepal
        >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
        >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
        >>> model = sepal.tl.fit(
        ...     adata, backbone="test_vit", pretrained=False, patch_size=32,
        ...     encoder_epochs=1, spatial_epochs=1, device="cpu",
        ... )
        >>> metrics = sepal.tl.evaluate(adata, pred="sepal", split="test")  # writes var["sepal_pcc_test"]
        >>> ax = sepal.pl.pcc_histogram(adata)
    """
    column = gene_score_column(pred, "pcc", split)
    if column not in adata.var.columns:
        candidates = [str(c) for c in adata.var.columns if "_pcc_" in str(c)]
        msg = (
            f"adata.var[{column!r}] is missing (PCC columns present: {candidates}). "
            f"Run sepal.tl.evaluate(adata, pred={pred!r}, split={split!r}) first, or pass pred= / split= naming "
            "an evaluation that was run."
        )
        raise KeyError(msg)
    values = np.asarray(adata.var[column], dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        msg = f"adata.var[{column!r}] has no finite value (all {values.size} genes are NaN); nothing to plot."
        raise ValueError(msg)
    ax_given = ax is not None
    fig, ax = single_axes(ax, figsize)

    ax.hist(finite, bins=bins, color=color, edgecolor="white", linewidth=0.5)
    mean, median = float(finite.mean()), float(np.median(finite))
    ax.axvline(mean, color="black", linestyle="--", linewidth=1.2, label=f"mean = {mean:.3f}", gid="mean")
    ax.axvline(median, color="C3", linestyle=":", linewidth=1.5, label=f"median = {median:.3f}", gid="median")
    ax.legend(loc="upper left", fontsize="small", frameon=False)
    ax.set_xlabel("Pearson correlation (per gene)")
    ax.set_ylabel("Number of genes")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    n_nan = values.size - finite.size
    title = f"{pred} · {split}: PCC of {finite.size} genes"
    if n_nan:
        title += f"\n({n_nan} gene{'s' if n_nan != 1 else ''} without PCC left out)"
    ax.set_title(title, fontsize="medium")
    ax.spines[["top", "right"]].set_visible(False)
    return finish(fig, ax, show=show, save=save, return_fig=return_fig, name="pcc_histogram", ax_given=ax_given)
