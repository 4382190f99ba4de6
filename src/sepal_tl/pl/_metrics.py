"""Several models' metric tables side by side, as grouped bars."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sepal_tl._docs import inject_docs
from sepal_tl._keys import BASELINE, METRICS
from sepal_tl.pl._utils import finish, new_figure

#: Metrics where lower is better; the others are better higher.
_LOWER_IS_BETTER = {"MSE", "MAE"}
NA_GID = "n/a"


def _as_frame(value, name: str) -> pd.DataFrame:
    """One table (rows = models) from a DataFrame, a Series (one model) or a ``{metric: value}`` dict."""
    if isinstance(value, pd.DataFrame):
        return value
    if isinstance(value, pd.Series):
        return value.to_frame(name=name).T
    if isinstance(value, Mapping):
        if value and all(isinstance(v, Mapping) for v in value.values()):  # {row: {metric: value}}, as in uns
            return pd.DataFrame.from_dict(dict(value), orient="index")
        return pd.Series(dict(value), dtype=float).to_frame(name=name).T
    msg = f"Cannot read a metric table from a {type(value).__name__}; pass a DataFrame, a Series or a dict."
    raise TypeError(msg)


def _from_mapping(results: Mapping) -> pd.DataFrame:
    """``{model: table}``: each table's one non-baseline row is named after its key, baseline rows kept."""
    parts = []
    for name, value in results.items():
        name = str(name)
        frame = _as_frame(value, name).copy()
        frame.index = frame.index.astype(str)
        is_base = frame.index == BASELINE
        models = frame.index[~is_base]
        if len(models) == 1:
            mapping = {models[0]: name}
        else:
            mapping = {row: f"{name}: {row}" for row in models}
        parts.append(frame.rename(index=mapping))
    return pd.concat(parts) if parts else pd.DataFrame()


def _dedupe(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Drop repeated rows (the baseline of each table); clashing repeats of a model are an error."""
    dup = table.index.duplicated(keep="first")
    if not dup.any():
        return table
    for name in pd.unique(table.index[dup]):
        rows = table.loc[[name], list(metrics)].to_numpy(dtype=float)
        same = np.all(np.isclose(rows, rows[0], equal_nan=True, rtol=1e-9, atol=0))
        if same:
            continue
        if name == BASELINE:
            warnings.warn(
                f"The tables' {BASELINE} rows differ (evaluated on other splits or genes?); showing the first.",
                UserWarning,
                stacklevel=3,
            )
            continue
        msg = (
            f"Model {name!r} appears in several tables with different values; pass a dict {{name: table}} "
            "to name them apart."
        )
        raise ValueError(msg)
    return table[~dup]


def _collect(results, metrics: Sequence[str]) -> pd.DataFrame:
    if isinstance(results, pd.DataFrame | pd.Series):
        table = _as_frame(results, str(getattr(results, "name", None) or "model"))
    elif isinstance(results, Mapping):
        table = _from_mapping(results)
    elif isinstance(results, Sequence) and not isinstance(results, str):
        frames = [
            _as_frame(r, str(r.name) if isinstance(r, pd.Series) and r.name is not None else f"model {i}")
            for i, r in enumerate(results)
        ]
        table = pd.concat(frames) if frames else pd.DataFrame()
    else:
        msg = (
            f"results must be a DataFrame (rows = models, as sepal.tl.evaluate returns), a list of them or a dict "
            f"{{model: DataFrame or Series}}; got {type(results).__name__}."
        )
        raise TypeError(msg)
    if table.empty:
        msg = "results holds no model; nothing to plot."
        raise ValueError(msg)
    table.index = table.index.astype(str)
    missing = [m for m in metrics if m not in table.columns]
    if missing:
        msg = f"Metric(s) {missing} not in the results (columns: {[str(c) for c in table.columns]})."
        raise KeyError(msg)
    table = table.loc[:, list(metrics)].apply(pd.to_numeric, errors="coerce")
    table = _dedupe(table, metrics)
    # the baseline last, the models in the order given
    order = [r for r in table.index if r != BASELINE] + [r for r in table.index if r == BASELINE]
    return table.loc[order]


def _palette(models: list[str], colors: Sequence[str] | None) -> list[str]:
    """One colour per model: ``colors``, or the default cycle with the baseline in grey."""
    if colors is not None:
        palette = list(colors)
        if len(palette) < len(models):
            msg = f"colors has {len(palette)} entries for {len(models)} models ({models})."
            raise ValueError(msg)
        return palette
    palette, k = [], 0
    for model in models:
        if model == BASELINE:
            palette.append("0.6")
        else:
            palette.append(f"C{k % 10}")
            k += 1
    return palette


def _draw_metric(ax: Axes, metric: str, values: np.ndarray, palette: list[str], *, annotate: bool) -> None:
    """One panel: a bar per model, NaN drawn as an empty hatched bar labelled "n/a"."""
    n_models = values.size
    missing = ~np.isfinite(values)
    heights = np.where(missing, 0.0, values)
    bars = ax.bar(np.arange(n_models), heights, width=0.8, color=palette[:n_models], edgecolor="none")
    finite = values[~missing]
    top = float(np.max(np.abs(finite))) if finite.size else 1.0
    for k, (bar, value) in enumerate(zip(bars, values, strict=True)):
        if missing[k]:
            bar.set_facecolor("none")
            bar.set_edgecolor(palette[k])
            bar.set_hatch("///")
            bar.set_gid(NA_GID)
            bar.set_y(0.0)
            bar.set_height(0.18 * top if top > 0 else 0.1)
            ax.text(k, 0.2 * top, "n/a", ha="center", va="bottom", fontsize="x-small", color="0.3", gid=NA_GID)
        elif annotate:
            ax.text(k, value, f"{value:.3g}", ha="center", va="bottom" if value >= 0 else "top", fontsize="x-small")
    ax.axhline(0, color="0.3", linewidth=0.6)
    arrow = "↓" if metric in _LOWER_IS_BETTER else "↑"
    ax.set_title(f"{metric} {arrow}", fontsize="medium")
    ax.set_xticks([])
    ax.set_xlim(-0.7, n_models - 0.3)
    lo = min(0.0, float(finite.min()) if finite.size else 0.0)
    hi = max(0.0, float(finite.max()) if finite.size else 1.0, 0.22 * top)
    span = hi - lo or 1.0
    ax.set_ylim(lo - (0.12 * span if lo < 0 else 0), hi + 0.15 * span)
    ax.spines[["top", "right"]].set_visible(False)


@inject_docs
def metrics(
    results: pd.DataFrame | Sequence[pd.DataFrame] | Mapping[str, pd.DataFrame | pd.Series],
    *,
    metrics: Sequence[str] = METRICS,
    ncols: int | None = None,
    colors: Sequence[str] | None = None,
    annotate: bool = True,
    panel_size: tuple[float, float] = (2.6, 2.4),
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Plot several models' metrics side by side: one panel per metric, one bar per model.

    ``results`` is what :func:`sepal_tl.tl.evaluate` returns (rows = models: the prediction and
    ``"mean_baseline"``), a list of such tables (concatenated; the repeated baseline rows are dropped), or a dict
    ``{model name: table or Series}`` (a table's one non-baseline row is named after its key; with several
    non-baseline rows they become ``"name: row"``). A stored table, ``adata.uns["sepal"]["metrics"][pred][split]``,
    can be passed as it is. The baseline bar is grey and last.

    Missing values (NaN, e.g. the baseline's PCC-Gene, which is undefined for a constant prediction) are drawn as an
    empty bar labelled "n/a". Titles carry ↓ (lower is better: MSE, MAE) or ↑.

    Parameters
    ----------
    results
        The metric tables.
    metrics
        Columns to show, one panel each.
    ncols
        Panels per row (default: up to 3).
    colors
        One colour per model, in order (the baseline is grey unless given).
    annotate
        Write each value above its bar.
    panel_size
        %(panel_size)s
    figsize
        %(figsize)s Overrides ``panel_size``.
    %(show_save_return_fig)s

    Returns
    -------
    The Figure if ``return_fig``, ``None`` if the figure was shown, else the list of Axes, one per metric.

    Examples
    --------
    .. plot::
        :alt: Bar charts of the six metrics for the model and the train-mean baseline on each split.

        >>> import sepal_tl as sepal
        >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
        >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
        >>> model = sepal.tl.fit(
        ...     adata, backbone="test_vit", pretrained=False, patch_size=32,
        ...     encoder_epochs=1, spatial_epochs=1, device="cpu",
        ... )
        >>> results = {
        ...     "SEPAL": sepal.tl.evaluate(adata, pred="sepal"),
        ...     "local": sepal.tl.evaluate(adata, pred="sepal_local"),
        ... }
        >>> axes = sepal.pl.metrics(results, metrics=["MSE", "PCC-Gene"])
    """
    metric_names = [metrics] if isinstance(metrics, str) else [str(m) for m in metrics]
    if not metric_names:
        msg = "metrics is empty; pass the metric columns to show."
        raise ValueError(msg)
    if ncols is not None and (not isinstance(ncols, int | np.integer) or ncols < 1):
        msg = f"ncols must be a positive integer, got {ncols!r}."
        raise ValueError(msg)
    table = _collect(results, metric_names)
    models = list(table.index)
    n_models = len(models)
    palette = _palette(models, colors)

    n = len(metric_names)
    ncols = min(ncols or 3, n)
    nrows = -(-n // ncols)
    if figsize is None:
        figsize = (ncols * panel_size[0], nrows * panel_size[1] + 0.5)
    fig = new_figure(figsize)
    grid = fig.add_gridspec(nrows, ncols)
    axes: list[Axes] = []
    for i, metric in enumerate(metric_names):
        ax = fig.add_subplot(grid[divmod(i, ncols)])
        _draw_metric(ax, metric, table[metric].to_numpy(dtype=float), palette, annotate=annotate)
        axes.append(ax)
    handles = [Patch(facecolor=palette[k], label=model) for k, model in enumerate(models)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(n_models, 4), frameon=False, fontsize="small")
    return finish(fig, axes, show=show, save=save, return_fig=return_fig, name="metrics")
