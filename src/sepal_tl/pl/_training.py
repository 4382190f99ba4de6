"""Training and validation loss per epoch of both training stages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sepal_tl._docs import inject_docs
from sepal_tl.pl._utils import finish, new_figure, root_figure

#: The training stages, in order, with their panel titles.
STAGES = {"encoder": "Stage 1 · image encoder", "spatial": "Stage 2 · spatial GNN"}
BEST_GID = "best_epoch"


def _history(model: Any) -> Mapping[str, Sequence[Mapping[str, float]]]:
    history = model if isinstance(model, Mapping) else getattr(model, "history", None)
    if not isinstance(history, Mapping):
        msg = (
            f"Expected a trained SepalModel (with .history) or its history dict, got {type(model).__name__}. "
            "Train one with sepal.tl.fit / sepal.tl.fit_encoder."
        )
        raise TypeError(msg)
    return history


def _series(epochs: Sequence[Mapping[str, float]], key: str) -> np.ndarray:
    return np.array([float(e.get(key, np.nan)) for e in epochs], dtype=float)


@inject_docs
def training_curves(
    model: Any,
    *,
    stages: Sequence[str] | None = None,
    log: bool = False,
    ax: Axes | Sequence[Axes] | None = None,
    panel_size: tuple[float, float] = (4.0, 3.0),
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """Plot the training and validation MSE per epoch of each training stage, with the best epoch marked.

    One panel per stage that has a history: the image encoder (``history["encoder"]``) and, when it was trained,
    the spatial graph network (``history["spatial"]``). Solid line: training MSE; dashed: validation MSE. The best
    epoch (lowest validation MSE, or training MSE when there were no validation spots; the weights the model
    keeps) is marked with a star and a dotted vertical line. Epochs are numbered as Lightning counts them (from 0).

    Parameters
    ----------
    model
        A trained :class:`sepal_tl.tl.SepalModel`, or its ``history`` dict
        (``{"encoder": [{"epoch", "train_mse", "val_mse", ...}, ...], "spatial": [...]}``).
    stages
        Stages to show (default: every stage with a history, encoder first).
    log
        Logarithmic y axis.
    ax
        %(ax)s One per stage shown (a single Axes for one stage).
    panel_size
        %(panel_size)s
    figsize
        %(figsize)s Overrides ``panel_size``.
    %(show_save_return_fig)s

    Returns
    -------
    The Figure if ``return_fig``, ``None`` if the figure was shown, else the Axes (one stage) or the list of Axes
    (one per stage).

    Examples
    --------
    .. plot::
        :alt: Training and validation loss per epoch for the encoder and the spatial stage.

        >>> import sepal_tl as sepal
        >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
        >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
        >>> model = sepal.tl.fit(
        ...     adata, backbone="test_vit", pretrained=False, patch_size=32,
        ...     encoder_epochs=4, spatial_epochs=4, device="cpu",
        ... )
        >>> axes = sepal.pl.training_curves(model)  # one panel per stage
    """
    history = _history(model)
    if stages is None:
        names = [s for s in STAGES if history.get(s)] + [s for s in history if s not in STAGES and history.get(s)]
        if not names:
            msg = "The model has no training history (no epoch was recorded); nothing to plot."
            raise ValueError(msg)
    else:
        names = [stages] if isinstance(stages, str) else list(stages)
        empty = [s for s in names if not history.get(s)]
        if empty or not names:
            msg = f"No training history for stage(s) {empty or names}; stages with one: {[s for s in history if history.get(s)]}."
            raise ValueError(msg)
    for stage in names:
        if any("train_mse" not in e and "val_mse" not in e for e in history[stage]):
            msg = f"history[{stage!r}] has epochs without 'train_mse' or 'val_mse'; it is not a SEPAL training history."
            raise ValueError(msg)

    ax_given = ax is not None
    if ax is None:
        if figsize is None:
            figsize = (panel_size[0] * len(names), panel_size[1])
        fig = new_figure(figsize)
        axes = list(fig.subplots(1, len(names), squeeze=False)[0])
    else:
        axes = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axes) != len(names) or not all(isinstance(a, Axes) for a in axes):
            msg = (
                f"ax must hold one Axes per stage shown ({len(names)}: {names}), got {len(axes)}. "
                "Pass stages= to pick the stages."
            )
            raise ValueError(msg)
        fig = root_figure(axes[0])

    for stage, axis in zip(names, axes, strict=True):
        epochs = history[stage]
        x = np.array([float(e.get("epoch", i)) for i, e in enumerate(epochs)])
        train, val = _series(epochs, "train_mse"), _series(epochs, "val_mse")
        axis.plot(x, train, color="C0", marker="o", markersize=3, label="train MSE", gid="train")
        monitored, which = (val, "val") if np.isfinite(val).any() else (train, "train")
        if np.isfinite(val).any():
            axis.plot(x, val, color="C1", linestyle="--", marker="o", markersize=3, label="val MSE", gid="val")
        if np.isfinite(monitored).any():
            best = int(np.nanargmin(monitored))
            axis.axvline(x[best], color="0.5", linestyle=":", linewidth=1.0, gid=BEST_GID)
            axis.plot(
                [x[best]],
                [monitored[best]],
                linestyle="none",
                marker="*",
                markersize=12,
                color="C3",
                label=f"best: epoch {x[best]:g} ({which} {monitored[best]:.3g})",
                gid=BEST_GID,
            )
        if log:
            axis.set_yscale("log")
        axis.set_xlabel("epoch")
        axis.set_ylabel("MSE")
        axis.set_title(STAGES.get(stage, stage), fontsize="medium")
        axis.legend(loc="best", fontsize="small", framealpha=0.9, edgecolor="none")
        axis.spines[["top", "right"]].set_visible(False)
        if len(x) > 1:
            axis.xaxis.get_major_locator().set_params(integer=True)
    result = axes[0] if len(axes) == 1 else axes
    return finish(fig, result, show=show, save=save, return_fig=return_fig, name="training_curves", ax_given=ax_given)
