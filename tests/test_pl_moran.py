"""sepal.pl.moran, checked on the drawn figure."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import sepal_tl as sepal

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def adata():
    """40 genes with a Moran's I, the 12 highest flagged as selected, two without an I."""
    rng = np.random.default_rng(0)
    moran = rng.uniform(-0.1, 0.8, 40)
    moran[[5, 17]] = np.nan
    ranked = np.argsort(-np.nan_to_num(moran, nan=-np.inf), kind="stable")
    selected = np.zeros(40, dtype=bool)
    selected[ranked[:12]] = True
    var = pd.DataFrame({"moran_i": moran, "highly_spatial": selected}, index=[f"G{i}" for i in range(40)])
    return AnnData(np.zeros((3, 40), dtype=np.float32), var=var)


def _by_gid(ax, gid):
    return [a for a in (*ax.get_lines(), *ax.collections, *ax.texts) if a.get_gid() == gid]


def test_moran_ranked_selection_and_cutoff(adata, tmp_path):
    path = tmp_path / "moran.png"
    ax = sepal.pl.moran(adata, save=path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert isinstance(ax, Axes)
    values = adata.var["moran_i"].dropna().sort_values(ascending=False)
    # the curve: every gene with an I, ranked from 1, decreasing
    (curve,) = [line for line in ax.get_lines() if line.get_gid() is None]
    np.testing.assert_array_equal(curve.get_xdata(), np.arange(1, 39))
    np.testing.assert_allclose(curve.get_ydata(), values.to_numpy())
    # the selected genes are the coloured points, the cut-off sits between rank 12 and 13
    (chosen,) = _by_gid(ax, "selected")
    np.testing.assert_array_equal(chosen.get_offsets()[:, 0], np.arange(1, 13))
    (cutoff,) = _by_gid(ax, "cutoff")
    assert cutoff.get_xdata()[0] == pytest.approx(12.5)
    # the top five genes are named, in order
    assert [t.get_text() for t in _by_gid(ax, "gene_label")] == list(values.index[:5])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["other (26)", "selected (12)", "n_top = 12"]
    assert ax.get_title() == "Moran's I of 38 genes"


def test_moran_options(adata):
    ax = sepal.pl.moran(adata, n_top=20, n_labels=0, selected_key=None)
    (cutoff,) = _by_gid(ax, "cutoff")
    assert cutoff.get_xdata()[0] == pytest.approx(20.5)
    (chosen,) = _by_gid(ax, "selected")
    assert len(chosen.get_offsets()) == 20  # without a selection flag, the top n_top are coloured
    assert _by_gid(ax, "gene_label") == []
    no_line = sepal.pl.moran(adata, selected_key=None)
    assert _by_gid(no_line, "cutoff") == []
    fig, given = plt.subplots()
    assert sepal.pl.moran(adata, ax=given, show=True) is given
    assert isinstance(sepal.pl.moran(adata, return_fig=True), Figure)
    assert sepal.pl.moran(adata, show=True) is None


def test_moran_after_the_pipeline(processed):
    ax = sepal.pl.moran(processed)
    (cutoff,) = _by_gid(ax, "cutoff")
    assert cutoff.get_xdata()[0] == pytest.approx(16.5)  # the pipeline kept only the 16 selected genes
    (chosen,) = _by_gid(ax, "selected")
    assert len(chosen.get_offsets()) == processed.n_vars == 16


def test_moran_errors(adata):
    with pytest.raises(KeyError, match="select_genes"):
        sepal.pl.moran(adata, key="moran_x")
    with pytest.raises(KeyError, match="selected_key=None"):
        sepal.pl.moran(adata, selected_key="flag")
    with pytest.raises(ValueError, match="n_top"):
        sepal.pl.moran(adata, n_top=39)
    bad = adata.copy()
    bad.var["highly_spatial"] = bad.var["highly_spatial"].astype(int)
    with pytest.raises(ValueError, match="boolean"):
        sepal.pl.moran(bad)
    bad.var["moran_i"] = np.nan
    with pytest.raises(ValueError, match="no finite value"):
        sepal.pl.moran(bad, selected_key=None)
    assert plt.get_fignums() == []
