"""Evaluate a prediction layer against the ground truth, next to the train-mean baseline."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from sepal_tl._docs import inject_docs
from sepal_tl._keys import (
    BASELINE,
    DEFAULT_LIBRARY_KEY,
    DENOISED,
    METRICS,
    OBSERVED,
    PREDICTION,
    SPLIT,
    UNS,
    gene_score_column,
)
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._uns import record
from sepal_tl._validation import resolve_libraries
from sepal_tl.tl._metrics import COUNTS, AxisScores, prepare, skip_report, summarize

_TRUTH_HINT = "Run sepal.pp.denoise (or sepal.pp.run) first, or pass truth= naming the ground-truth layer."
_MASK_HINT = (
    "Run sepal.pp.denoise (or sepal.pp.run) first, which stores it, or pass mask= naming a boolean layer "
    "(True = observed)."
)
_PRED_HINT = "Run sepal.tl.predict first, or pass pred= naming the prediction layer."


def _layer(adata: AnnData, key: str, what: str, hint: str):
    if not isinstance(key, str):
        msg = f"{what} must be the name of a layer, got {key!r}."
        raise TypeError(msg)
    if key not in adata.layers:
        msg = f"{what} layer {key!r} is not in adata.layers (available: {sorted(adata.layers)}). {hint}"
        raise KeyError(msg)
    return adata.layers[key]


def _rows(matrix, idx: np.ndarray) -> np.ndarray:
    """Dense rows ``idx`` of a dense or sparse matrix."""
    part = matrix[idx]
    return part.toarray() if sparse.issparse(part) else np.asarray(part)


def _storable(key: str) -> str:
    """h5ad group names cannot hold ``/``."""
    return str(key).replace("/", "_")


def _checked_layers(adata: AnnData, truth: str, pred: str, mask: str) -> tuple:
    """The truth, prediction and mask layers, checked for presence, equal shapes and a boolean mask."""
    truth_m = _layer(adata, truth, "truth", _TRUTH_HINT)
    pred_m = _layer(adata, pred, "pred", _PRED_HINT)
    mask_m = _layer(adata, mask, "mask", _MASK_HINT)
    shapes = {truth: truth_m.shape, pred: pred_m.shape, mask: mask_m.shape}
    if len(set(shapes.values())) > 1:
        msg = f"The layers differ in shape: {shapes}."
        raise ValueError(msg)
    if mask_m.dtype != bool:
        msg = (
            f"mask layer {mask!r} must be boolean (True = observed), got dtype {mask_m.dtype}. "
            "sepal.pp.denoise stores one as layers['observed']."
        )
        raise ValueError(msg)
    return truth_m, pred_m, mask_m


def _split_rows(
    adata: AnnData, split: str | None, split_key: str, baseline: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices of the spots to score and, with ``baseline``, of the train spots."""
    labels = np.empty(0, dtype=str)  # read only where split or baseline set it below
    if split is not None or baseline:
        if split_key not in adata.obs:
            msg = (
                f"split_key={split_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}). "
                "Add each spot's split ('train', 'val', 'test') there"
                + (", or pass split=None and baseline=False to score all spots." if baseline else ".")
            )
            raise KeyError(msg)
        labels = adata.obs[split_key].astype(str).to_numpy()
    if split is None:
        selected = np.arange(adata.n_obs)
    else:
        selected = np.flatnonzero(labels == str(split))
        if selected.size == 0:
            msg = f"No spot has obs[{split_key!r}] == {split!r} (values: {sorted(set(labels))})."
            raise ValueError(msg)
    if not baseline:
        return selected, None
    train = np.flatnonzero(labels == "train")
    if train.size == 0:
        msg = (
            f"No spot has obs[{split_key!r}] == 'train', so the train-mean baseline cannot be computed "
            f"(values: {sorted(set(labels))}). Pass baseline=False."
        )
        raise ValueError(msg)
    return selected, train


def _predicted_genes(adata: AnnData, p_all: np.ndarray, pred: str) -> np.ndarray:
    """Indices of the genes with a finite prediction; a gene that is NaN on only some spots is an error."""
    finite = np.isfinite(p_all)
    not_predicted = np.isnan(p_all).all(axis=0)  # the NaN columns tl.predict writes for genes outside the model
    partial = ~finite.all(axis=0) & ~not_predicted
    if partial.any():
        names = list(adata.var_names[partial][:5])
        msg = (
            f"layers[{pred!r}] has {int((~finite[:, partial]).sum())} NaN or infinite predictions in "
            f"{int(partial.sum())} gene(s) on the selected spots (e.g. {names}), so their scores would be wrong. "
            "Fix or refit the model; a gene the model does not predict must be NaN on every spot."
        )
        raise ValueError(msg)
    if not_predicted.all():
        msg = (
            f"layers[{pred!r}] has no gene whose prediction is finite on the {p_all.shape[0]} selected spots (all "
            "NaN); nothing to evaluate."
        )
        raise ValueError(msg)
    return np.flatnonzero(~not_predicted)


def _train_mean(truth_m, train: np.ndarray, gene_idx: np.ndarray, truth: str) -> np.ndarray:
    """The baseline's prediction: the mean truth of every gene over the train spots."""
    train_truth = _rows(truth_m, train)[:, gene_idx].astype(np.float64)
    if not np.isfinite(train_truth).all():
        msg = f"layers[{truth!r}] has NaN or infinite values on the train spots; the baseline needs them."
        raise ValueError(msg)
    return train_truth.mean(axis=0)


def _slide_groups(libraries: pd.Series | None, n_selected: int) -> list[tuple[str, np.ndarray]]:
    """``(row-name suffix, rows)``: all selected spots, then (with ``libraries``) each slide's."""
    groups: list[tuple[str, np.ndarray]] = [("", np.arange(n_selected))]
    for lib in [] if libraries is None else libraries.cat.categories:
        rows = np.flatnonzero((libraries == lib).to_numpy())
        if rows.size:
            groups.append((f" [{lib}]", rows))
    return groups


def _score_table(
    y_all: np.ndarray,
    m_all: np.ndarray,
    models: list[tuple[str, np.ndarray]],
    groups: list[tuple[str, np.ndarray]],
    gene_counts: dict[str, int],
) -> tuple[dict[str, dict[str, float]], list[str], AxisScores]:
    """Score every model on every group of spots: the table rows, the skip report and the first row's genes."""
    table: dict[str, dict[str, float]] = {}
    warn_lines: list[str] = []
    pooled_genes: AxisScores | None = None
    for suffix, rows in groups:
        for name, p in models:
            label = f"{name}{suffix}"
            y, p_, m = prepare(y_all[rows], p[rows], m_all[rows])
            result, gene_scores, spot_scores = summarize(y, p_, m)
            table[label] = {
                **{k: result[k] for k in METRICS},
                "n_spots": rows.size,
                **gene_counts,
                **{k: result[k] for k in COUNTS},
            }
            warn_lines += [
                f"{label!r}: {line}"
                for line in skip_report(gene_scores, spot_scores, ignore_constant_gene_pred=name == BASELINE)
            ]
            if label == models[0][0]:
                pooled_genes = gene_scores
    assert pooled_genes is not None  # the first model is always scored on all selected spots
    return table, warn_lines, pooled_genes


def _store(
    adata: AnnData, table: dict, genes: AxisScores, gene_idx: np.ndarray, *, pred: str, split_name: str, key_added: str
) -> None:
    """Write the pooled per-gene PCC and R² to ``var`` and the table to ``uns["sepal"][key_added]``."""
    for metric, values in (("pcc", genes.pcc), ("r2", genes.r2)):
        column = np.full(adata.n_vars, np.nan)
        column[gene_idx] = values
        adata.var[gene_score_column(pred, metric, split_name)] = column
    stored = {_storable(row): {col: float(value) for col, value in values.items()} for row, values in table.items()}
    store = adata.uns.setdefault(UNS, {}).setdefault(key_added, {}).setdefault(_storable(pred), {})
    store[_storable(split_name)] = stored


@spatialdata_aware()
@inject_docs
def evaluate(
    adata: AnnData,
    *,
    truth: str = DENOISED,
    pred: str = PREDICTION,
    mask: str = OBSERVED,
    split: str | None = "test",
    split_key: str = SPLIT,
    baseline: bool = True,
    key_added: str = "metrics",
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    per_slide: bool = False,
) -> pd.DataFrame:
    """Score a prediction layer with SEPAL's six metrics, next to the "predict the train mean" baseline.

    The metrics (MSE, MAE, PCC-Gene, R2-Gene, PCC-Patch, R2-Patch; see :func:`sepal_tl.tl.compute_metrics`) are
    computed on the observed entries (``layers[mask]``) of the spots of one split, pooled over all their slides as
    SEPAL reports them. Genes or spots whose score is undefined (fewer than 2 observed entries, constant observed
    truth, or, for PCC, constant prediction) are left out of the averages with one warning; the ``n_*`` columns
    say how many entered each average.

    With ``baseline=True`` a second row scores the train-mean baseline: every spot predicted as the mean of
    ``layers[truth]`` over the spots with ``obs[split_key] == "train"`` (all their entries, as SEPAL's delta
    centring computes it), on the same genes and entries. This is what a delta model outputs when it predicts 0,
    so every table shows how far above "predict the mean" a model is. Its per-gene prediction is constant, so its
    PCC-Gene is undefined (NaN, ``n_genes_pcc = 0``); its R2-Gene is ≤ 0 on the train spots and close to 0 on
    others.

    Both layers must be on the same scale: SEPAL evaluates absolute log2(TPM + 1) values, and PCC-Patch and
    R2-Patch differ between deltas and absolute values (the other four metrics do not). Pooling over slides hides
    per-slide variance: ``per_slide=True`` adds one row per slide.

    Parameters
    ----------
    adata
        Spots × genes with the three layers and ``obs[split_key]``.
    truth
        Layer with the ground truth (SEPAL: the denoised log2(TPM + 1)).
    pred
        Layer with the prediction. Genes whose prediction is NaN on every selected spot (the columns
        :func:`~sepal_tl.tl.predict` leaves NaN for genes the model does not predict) are not evaluated and are
        counted in ``n_genes_not_predicted``; any other NaN or infinite prediction is an error, never silently
        dropped.
    mask
        Boolean layer, ``True`` where the truth was observed (raw count > 0); the imputed entries are not scored.
    split
        Value of ``obs[split_key]`` selecting the spots to score; ``None`` scores all spots.
    split_key
        %(split_key)s ``"train"`` marks the baseline's training spots.
    baseline
        Add the ``"mean_baseline"`` row(s).
    key_added
        Key under ``adata.uns["sepal"]`` for the stored tables.
    library_key
        %(library_key)s %(one_slide_rule)s Also used by ``per_slide``.
    per_slide
        Add one row per slide of the split, named ``f"{pred} [{slide}]"`` (and ``f"mean_baseline [{slide}]"``).
    table_key
        %(table_key)s %(table_elements)s

    Returns
    -------
    One row per model (``pred``, then ``"mean_baseline"``, then the per-slide rows) with columns ``MSE``, ``MAE``,
    ``PCC-Gene``, ``R2-Gene``, ``PCC-Patch``, ``R2-Patch``, ``n_spots``, ``n_genes`` (genes evaluated),
    ``n_genes_not_predicted`` (genes left out because their prediction is all NaN), ``n_observed`` (observed entries scored), ``n_genes_pcc``, ``n_genes_r2``, ``n_spots_pcc`` and ``n_spots_r2``.

    Also sets:

    - ``adata.uns["sepal"][key_added][pred][split]``: the table as ``{row: {column: float}}`` (``split=None`` is
      stored as ``"all"``; ``/`` in names becomes ``_``). Rebuild it with
      ``pd.DataFrame.from_dict(..., orient="index")``;
    - ``adata.var[f"{pred}_pcc_{split}"]`` and ``adata.var[f"{pred}_r2_{split}"]``: the pooled per-gene PCC and
      R², NaN for genes not evaluated or undefined;
    - ``adata.uns["sepal"]["tl"]["evaluate"]``: the parameters of the call.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
    >>> model = sepal.tl.fit(
    ...     adata, backbone="test_vit", pretrained=False, patch_size=32,
    ...     encoder_epochs=1, spatial_epochs=1, device="cpu",
    ... )
    >>> metrics = sepal.tl.evaluate(adata, pred="sepal", split="test")  # observed entries of the test slide
    >>> metrics.index.tolist()
    ['sepal', 'mean_baseline']
    >>> metrics.columns[:6].tolist()
    ['MSE', 'MAE', 'PCC-Gene', 'R2-Gene', 'PCC-Patch', 'R2-Patch']
    >>> adata.var["sepal_pcc_test"].shape
    (16,)
    """
    if pred == BASELINE:
        msg = f"pred={BASELINE!r} clashes with the baseline row's name; rename the prediction layer."
        raise ValueError(msg)
    truth_m, pred_m, mask_m = _checked_layers(adata, truth, pred, mask)
    selected, train = _split_rows(adata, split, split_key, baseline)
    libraries = resolve_libraries(adata, library_key).iloc[selected] if per_slide else None
    p_all = _rows(pred_m, selected)
    gene_idx = _predicted_genes(adata, p_all, pred)
    y_all = _rows(truth_m, selected)[:, gene_idx]
    m_all = _rows(mask_m, selected)[:, gene_idx]
    models = [(pred, p_all[:, gene_idx])]
    if train is not None:  # baseline=True
        models.append((BASELINE, np.broadcast_to(_train_mean(truth_m, train, gene_idx, truth), y_all.shape)))

    # Every row is computed before anything is written, so that a failure leaves adata as it was.
    gene_counts = {"n_genes": gene_idx.size, "n_genes_not_predicted": adata.n_vars - gene_idx.size}
    groups = _slide_groups(libraries, selected.size)
    table, warn_lines, pooled_genes = _score_table(y_all, m_all, models, groups, gene_counts)
    frame = pd.DataFrame.from_dict(table, orient="index")
    for col in ("n_spots", "n_genes", "n_genes_not_predicted", *COUNTS):
        frame[col] = frame[col].astype(np.int64)
    if warn_lines:
        warnings.warn(
            "Undefined scores were left out of the averages: " + "; ".join(warn_lines) + ".",
            UserWarning,
            stacklevel=2,
        )

    split_name = "all" if split is None else str(split)
    _store(adata, table, pooled_genes, gene_idx, pred=pred, split_name=split_name, key_added=key_added)
    params: dict[str, object] = {"truth": truth, "pred": pred, "mask": mask, "split": split, "split_key": split_key}
    params |= {"baseline": baseline, "key_added": key_added, "library_key": library_key, "per_slide": per_slide}
    record(adata, "tl", "evaluate", {**params, "n_genes": int(gene_idx.size)})
    logger.info(
        "scored %r on %d spots × %d genes: added %r and %r to adata.var and the table to "
        "adata.uns['sepal'][%r][%r][%r]",
        pred,
        selected.size,
        gene_idx.size,
        gene_score_column(pred, "pcc", split_name),
        gene_score_column(pred, "r2", split_name),
        key_added,
        pred,
        split_name,
    )
    return frame
