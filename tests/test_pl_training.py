"""sepal.pl.training_curves, checked on the drawn figure."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import sepal_tl as sepal
from sepal_tl.pl._training import BEST_GID

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stage(n, best, *, val=True):
    """``n`` epochs whose validation MSE is lowest at epoch ``best`` (as SepalModel.history stores them)."""
    epochs = []
    for i in range(n):
        row = {"epoch": i, "train_mse": 1.0 / (i + 1), "train_seconds": 0.5}
        if val:
            row["val_mse"] = 0.3 + 0.01 * (i - best) ** 2
        epochs.append(row)
    return epochs


@pytest.fixture
def model():
    """A stand-in for a trained SepalModel: only ``.history`` is read."""
    return SimpleNamespace(history={"encoder": _stage(12, 7), "spatial": _stage(6, 2)})


def _lines(ax, gid):
    return [line for line in ax.get_lines() if line.get_gid() == gid]


def test_training_curves_two_stages(model, tmp_path):
    path = tmp_path / "training.png"
    axes = sepal.pl.training_curves(model, save=path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert isinstance(axes, list) and len(axes) == 2
    assert [ax.get_title() for ax in axes] == ["Stage 1 · image encoder", "Stage 2 · spatial GNN"]
    for ax, stage, best in zip(axes, ("encoder", "spatial"), (7, 2), strict=True):
        history = model.history[stage]
        (train,) = _lines(ax, "train")
        (val,) = _lines(ax, "val")
        np.testing.assert_array_equal(train.get_xdata(), np.arange(len(history)))
        np.testing.assert_allclose(train.get_ydata(), [e["train_mse"] for e in history])
        np.testing.assert_allclose(val.get_ydata(), [e["val_mse"] for e in history])
        vline, star = _lines(ax, BEST_GID)
        assert vline.get_xdata()[0] == best
        assert star.get_marker() == "*"
        assert star.get_xdata()[0] == best and star.get_ydata()[0] == pytest.approx(0.3)
        assert f"best: epoch {best} (val 0.3)" in [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(ax.get_lines()) == 4  # train, val, best-epoch line and marker
        assert ax.get_yscale() == "linear"


def test_training_curves_encoder_only_without_validation():
    history = {"encoder": _stage(5, 0, val=False)}
    ax = sepal.pl.training_curves(history, log=True)  # the history dict itself is accepted too
    assert isinstance(ax, Axes)
    assert ax.get_yscale() == "log"
    assert _lines(ax, "val") == []
    _, star = _lines(ax, BEST_GID)
    assert star.get_xdata()[0] == 4  # lowest training MSE when there was no validation
    assert ax.get_title() == "Stage 1 · image encoder"


def test_training_curves_ax_and_return_types(model):
    fig, axs = plt.subplots(1, 2)
    out = sepal.pl.training_curves(model, ax=axs, show=True)
    assert out == list(axs)
    fig, one = plt.subplots()
    assert sepal.pl.training_curves(model, stages="spatial", ax=one) is one
    assert one.get_title() == "Stage 2 · spatial GNN"
    assert isinstance(sepal.pl.training_curves(model, return_fig=True), Figure)
    assert sepal.pl.training_curves(model, show=True) is None


def test_training_curves_errors(model):
    with pytest.raises(ValueError, match="one Axes per stage"):
        sepal.pl.training_curves(model, ax=plt.subplots()[1])
    with pytest.raises(ValueError, match="no training history"):
        sepal.pl.training_curves(SimpleNamespace(history={}))
    with pytest.raises(ValueError, match=r"stage\(s\) \['spatial'\]"):
        sepal.pl.training_curves({"encoder": _stage(3, 1)}, stages=["encoder", "spatial"])
    with pytest.raises(TypeError, match="SepalModel"):
        sepal.pl.training_curves(object())
    with pytest.raises(ValueError, match="train_mse"):
        sepal.pl.training_curves({"encoder": [{"epoch": 0, "loss": 1.0}]})
