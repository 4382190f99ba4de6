"""sepal.pl.pcc_histogram and sepal.pl.metrics, checked on the drawn figure."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import sepal_tl as sepal
from sepal_tl.pl._metrics import NA_GID

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRICS = ["MSE", "MAE", "PCC-Gene", "R2-Gene", "PCC-Patch", "R2-Patch"]


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


# ---------------------------------------------------------------------------------------------------------------
# pcc_histogram
# ---------------------------------------------------------------------------------------------------------------
def test_pcc_histogram_counts_and_lines(evaluated, tmp_path):
    adata = evaluated[0].copy()
    adata.var.loc[adata.var_names[:3], "sepal_pcc_test"] = np.nan
    values = adata.var["sepal_pcc_test"].dropna().to_numpy()
    path = tmp_path / "pcc.png"
    ax = sepal.pl.pcc_histogram(adata, bins=8, save=path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert isinstance(ax, Axes)
    bars = _bars(ax)
    assert len(bars) == 8
    assert sum(b.get_height() for b in bars) == values.size == adata.n_vars - 3
    lines = {line.get_gid(): line for line in ax.get_lines()}
    assert lines["mean"].get_xdata()[0] == pytest.approx(values.mean())
    assert lines["median"].get_xdata()[0] == pytest.approx(np.median(values))
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == [f"mean = {values.mean():.3f}", f"median = {np.median(values):.3f}"]
    assert ax.get_title() == f"sepal · test: PCC of {values.size} genes\n(3 genes without PCC left out)"
    assert ax.get_xlabel() == "Pearson correlation (per gene)"


def test_pcc_histogram_other_pred_and_ax(evaluated):
    adata = evaluated[0]
    fig, ax = plt.subplots()
    out = sepal.pl.pcc_histogram(adata, pred="sepal_local", ax=ax, bins=5)
    assert out is ax and len(fig.axes) == 1
    assert sum(b.get_height() for b in _bars(ax)) == adata.n_vars
    assert ax.get_title() == f"sepal_local · test: PCC of {adata.n_vars} genes"
    with pytest.warns(FutureWarning, match=r"pcc_histogram\(key=...\) is deprecated.*use pred="):
        assert sepal.pl.pcc_histogram(adata, key="sepal_local", ax=ax) is ax  # the old name still works
    assert ax.get_title() == f"sepal_local · test: PCC of {adata.n_vars} genes"
    with pytest.raises(TypeError, match="both key= and its new name pred="):
        sepal.pl.pcc_histogram(adata, key="sepal", pred="sepal_local", ax=ax)
    assert sepal.pl.pcc_histogram(adata, ax=ax, show=True) is ax  # never shows into a given ax
    assert isinstance(sepal.pl.pcc_histogram(adata, return_fig=True), Figure)
    assert sepal.pl.pcc_histogram(adata, show=True) is None


def test_pcc_histogram_errors(evaluated):
    adata = evaluated[0].copy()
    with pytest.raises(KeyError, match=r"sepal_pcc_val.*sepal.tl.evaluate\(adata, pred='sepal', split='val'\)"):
        sepal.pl.pcc_histogram(adata, split="val")
    adata.var["sepal_pcc_test"] = np.nan
    with pytest.raises(ValueError, match="no finite value"):
        sepal.pl.pcc_histogram(adata)
    assert plt.get_fignums() == []


# ---------------------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------------------
def _heights(ax):
    return np.array([b.get_height() for b in _bars(ax)])


def test_metrics_from_one_table(evaluated, tmp_path):
    _, spatial, _ = evaluated
    path = tmp_path / "metrics.png"
    axes = sepal.pl.metrics(spatial, save=path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert len(axes) == 6 and all(isinstance(a, Axes) for a in axes)
    assert [ax.get_title() for ax in axes] == ["MSE ↓", "MAE ↓", "PCC-Gene ↑", "R2-Gene ↑", "PCC-Patch ↑", "R2-Patch ↑"]
    assert sum(len(_bars(ax)) for ax in axes) == 2 * 6
    for ax, metric in zip(axes, METRICS, strict=True):
        values = spatial.loc[["sepal", "mean_baseline"], metric].to_numpy()
        finite = np.isfinite(values)
        np.testing.assert_allclose(_heights(ax)[finite], values[finite])
    # the baseline's PCC-Gene is undefined: an empty hatched bar labelled n/a
    pcc_ax = axes[METRICS.index("PCC-Gene")]
    baseline_bar = _bars(pcc_ax)[1]
    assert baseline_bar.get_gid() == NA_GID and baseline_bar.get_hatch() == "///"
    assert baseline_bar.get_facecolor()[3] == 0  # empty
    assert [t.get_text() for t in pcc_ax.texts if t.get_gid() == NA_GID] == ["n/a"]
    legend = axes[0].figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["sepal", "mean_baseline"]


def test_metrics_list_drops_the_repeated_baseline(evaluated):
    _, spatial, local = evaluated
    axes = sepal.pl.metrics([spatial, local])
    assert sum(len(_bars(ax)) for ax in axes) == 3 * 6  # sepal, sepal_local, one baseline
    legend = axes[0].figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["sepal", "sepal_local", "mean_baseline"]
    mse = _heights(axes[0])
    np.testing.assert_allclose(
        mse, [spatial.loc["sepal", "MSE"], local.loc["sepal_local", "MSE"], spatial.loc["mean_baseline", "MSE"]]
    )


def test_metrics_dict_series_and_uns(evaluated):
    adata, spatial, local = evaluated
    axes = sepal.pl.metrics({"SEPAL": spatial, "local": local.loc["sepal_local"]}, metrics=["MSE", "PCC-Gene"])
    assert len(axes) == 2
    legend = axes[0].figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["SEPAL", "local", "mean_baseline"]
    expected = [spatial.loc["sepal", "MSE"], local.loc["sepal_local", "MSE"], spatial.loc["mean_baseline", "MSE"]]
    np.testing.assert_allclose(_heights(axes[0]), expected)
    stored = adata.uns["sepal"]["metrics"]["sepal"]["test"]  # {row: {metric: value}}
    axes = sepal.pl.metrics(stored, metrics=["MAE"])
    assert _heights(axes[0]) == pytest.approx(spatial.loc[["sepal", "mean_baseline"], "MAE"].to_numpy())


def test_metrics_nan_never_crashes(evaluated):
    _, spatial, _ = evaluated
    table = spatial.copy()
    table.loc["sepal", "R2-Patch"] = np.nan
    table.loc["mean_baseline", :] = np.nan
    axes = sepal.pl.metrics(table)
    n_na = sum(b.get_gid() == NA_GID for ax in axes for b in _bars(ax))
    assert n_na == 6 + 1
    assert sum(len(_bars(ax)) for ax in axes) == 2 * 6
    all_nan = sepal.pl.metrics(table, metrics=["R2-Patch"])
    assert [t.get_text() for t in all_nan[0].texts if t.get_gid() == NA_GID] == ["n/a", "n/a"]


def test_metrics_return_types_and_errors(evaluated):
    _, spatial, local = evaluated
    assert isinstance(sepal.pl.metrics(spatial, return_fig=True), Figure)
    assert sepal.pl.metrics(spatial, show=True) is None
    with pytest.raises(KeyError, match="RMSE"):
        sepal.pl.metrics(spatial, metrics=["MSE", "RMSE"])
    clash = local.rename(index={"sepal_local": "sepal"})
    with pytest.raises(ValueError, match="'sepal' appears in several tables"):
        sepal.pl.metrics([spatial, clash])
    other_baseline = local.copy()
    other_baseline.loc["mean_baseline", "MSE"] += 1
    with pytest.warns(UserWarning, match="mean_baseline rows differ"):
        sepal.pl.metrics([spatial, other_baseline])
    with pytest.raises(TypeError, match="DataFrame"):
        sepal.pl.metrics(42)
    with pytest.raises(ValueError, match="no model"):
        sepal.pl.metrics([])
    with pytest.raises(ValueError, match="colors"):
        sepal.pl.metrics(spatial, colors=["red"])
