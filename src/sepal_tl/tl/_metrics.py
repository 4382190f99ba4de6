"""SEPAL's evaluation metrics on masked spots × genes matrices (pure numpy).

The six metrics follow SEPAL's ``metrics.get_metrics`` (docs/method.md, "Metrics"): MSE and MAE over the observed
entries, Pearson's r and R² per gene (``-Gene``) and per spot (``-Patch``) over the observed entries of that gene or
spot, averaged. Unlike SEPAL, an undefined per-gene or per-spot score does not turn the average into NaN (or
``None``): it is left out of the average, counted, and reported in one warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

#: How many entries, genes and spots entered each number of :func:`compute_metrics`.
COUNTS: tuple[str, ...] = ("n_observed", "n_genes_pcc", "n_genes_r2", "n_spots_pcc", "n_spots_r2")


@dataclass(frozen=True)
class AxisScores:
    """Scores of every gene (``axis=0``) or every spot (``axis=1``) of a masked matrix."""

    pcc: np.ndarray
    r2: np.ndarray
    mse: np.ndarray
    mae: np.ndarray
    n_observed: np.ndarray
    #: fewer than 2 observed entries: PCC and R² undefined
    few: np.ndarray
    #: observed truth constant: PCC and R² undefined
    constant_truth: np.ndarray
    #: observed prediction constant (truth not): PCC undefined, R² defined
    constant_pred: np.ndarray

    def skipped(self, metric: str) -> dict[str, int]:
        """Number of genes/spots left out of the average of ``metric`` (``"pcc"`` or ``"r2"``), by reason."""
        counts = {
            "fewer than 2 observed entries": int(self.few.sum()),
            "constant observed truth": int(self.constant_truth.sum()),
        }
        if metric == "pcc":
            counts["constant prediction"] = int(self.constant_pred.sum())
        return {reason: n for reason, n in counts.items() if n}


def prepare(truth: ArrayLike, pred: ArrayLike, mask: ArrayLike | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check the inputs and return float64 truth and prediction (0 where unobserved) and the boolean mask."""
    y = np.asarray(truth)
    p = np.asarray(pred)
    if y.ndim != 2 or p.ndim != 2:
        msg = f"truth and pred must be 2-d (spots × genes), got shapes {y.shape} and {p.shape}."
        raise ValueError(msg)
    if y.shape != p.shape:
        msg = f"truth {y.shape} and pred {p.shape} differ in shape; both must be spots × genes."
        raise ValueError(msg)
    for name, values in (("truth", y), ("pred", p)):
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
            msg = f"{name} must be numeric, got dtype {values.dtype}."
            raise ValueError(msg)
    if mask is None:
        m = np.ones(y.shape, dtype=bool)
    else:
        m = np.asarray(mask)
        if m.dtype != bool:
            msg = (
                f"mask must be boolean (True = observed), got dtype {m.dtype}. "
                "Pass e.g. counts > 0 rather than 0/1 numbers."
            )
            raise ValueError(msg)
        if m.shape != y.shape:
            msg = f"mask {m.shape} and truth {y.shape} differ in shape."
            raise ValueError(msg)
    if not m.any():
        msg = "mask selects no entry: there is nothing to evaluate."
        raise ValueError(msg)
    # Unobserved entries are set to 0 so that whatever they hold (NaN included) adds nothing.
    y = np.where(m, y, 0.0).astype(np.float64, copy=False)
    p = np.where(m, p, 0.0).astype(np.float64, copy=False)
    for name, values in (("truth", y), ("pred", p)):
        if not np.isfinite(values).all():
            msg = f"{name} has NaN or infinite values at observed (mask=True) entries."
            raise ValueError(msg)
    return y, p, m


def axis_scores(y: np.ndarray, p: np.ndarray, m: np.ndarray, axis: int) -> AxisScores:
    """Per-gene (``axis=0``) or per-spot (``axis=1``) scores of inputs returned by :func:`prepare`.

    Vectorised masked sums in float64; undefined scores are NaN.
    """
    n = m.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        y_mean = np.expand_dims(y.sum(axis=axis) / n, axis)
        p_mean = np.expand_dims(p.sum(axis=axis) / n, axis)
        yc = np.where(m, y - y_mean, 0.0)
        pc = np.where(m, p - p_mean, 0.0)
        ss_tot = (yc * yc).sum(axis=axis)
        ss_pred = (pc * pc).sum(axis=axis)
        cov = (yc * pc).sum(axis=axis)
        err = y - p  # 0 at unobserved entries
        ss_res = (err * err).sum(axis=axis)
        abs_err = np.abs(err).sum(axis=axis)
        pcc = np.clip(cov / np.sqrt(ss_tot * ss_pred), -1.0, 1.0)
        r2 = 1.0 - ss_res / ss_tot
        mse = ss_res / n
        mae = abs_err / n

    # "Constant" is decided exactly (observed max == observed min), not by a variance threshold: the float mean
    # of identical values need not equal them, so the centred sum of squares of a constant can be ~1e-33.
    def constant(values: np.ndarray) -> np.ndarray:
        return np.where(m, values, -np.inf).max(axis=axis) == np.where(m, values, np.inf).min(axis=axis)

    few = n < 2
    constant_truth = ~few & constant(y)
    constant_pred = ~few & ~constant_truth & constant(p)
    pcc[few | constant_truth | constant_pred] = np.nan
    r2[few | constant_truth] = np.nan
    return AxisScores(pcc, r2, mse, mae, n, few, constant_truth, constant_pred)


def _mean(values: np.ndarray) -> tuple[float, int]:
    """Mean of the finite values and how many there were (NaN, without a RuntimeWarning, if none)."""
    ok = np.isfinite(values)
    count = int(ok.sum())
    return (float(values[ok].mean()) if count else float("nan")), count


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the finite pairs of two vectors; NaN when fewer than 2 or a constant side."""
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def summarize(y: np.ndarray, p: np.ndarray, m: np.ndarray) -> tuple[dict[str, float], AxisScores, AxisScores]:
    """The metrics of :func:`compute_metrics` and the per-gene and per-spot scores, on :func:`prepare` output."""
    genes = axis_scores(y, p, m, axis=0)
    spots = axis_scores(y, p, m, axis=1)
    n_observed = int(m.sum())
    err = y - p
    result: dict[str, float] = {
        "MSE": float((err * err).sum() / n_observed),
        "MAE": float(np.abs(err).sum() / n_observed),
    }
    result["PCC-Gene"], n_genes_pcc = _mean(genes.pcc)
    result["R2-Gene"], n_genes_r2 = _mean(genes.r2)
    result["PCC-Patch"], n_spots_pcc = _mean(spots.pcc)
    result["R2-Patch"], n_spots_r2 = _mean(spots.r2)
    result.update(
        n_observed=n_observed,
        n_genes_pcc=n_genes_pcc,
        n_genes_r2=n_genes_r2,
        n_spots_pcc=n_spots_pcc,
        n_spots_r2=n_spots_r2,
    )
    return result, genes, spots


def skip_report(genes: AxisScores, spots: AxisScores, *, ignore_constant_gene_pred: bool = False) -> list[str]:
    """One line per average that left genes or spots out, saying how many and why."""
    lines = []
    for name, scores, unit, metric in (
        ("PCC-Gene", genes, "genes", "pcc"),
        ("R2-Gene", genes, "genes", "r2"),
        ("PCC-Patch", spots, "spots", "pcc"),
        ("R2-Patch", spots, "spots", "r2"),
    ):
        reasons = scores.skipped(metric)
        if ignore_constant_gene_pred and name == "PCC-Gene":
            reasons.pop("constant prediction", None)
        if reasons:
            total = len(scores.n_observed)
            why = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
            lines.append(f"{name} left out {sum(reasons.values())} of {total} {unit} ({why})")
    return lines


def compute_metrics(truth: ArrayLike, pred: ArrayLike, mask: ArrayLike | None = None) -> dict[str, float]:
    """SEPAL's six evaluation metrics, pooled over all the spots given.

    With ``Y`` the truth, ``Ŷ`` the prediction and ``M`` the mask (spots × genes):

    - ``MSE`` = mean of ``(Y - Ŷ)²`` and ``MAE`` = mean of ``|Y - Ŷ|`` over the observed entries, flattened (every
      observed entry weighs the same);
    - ``PCC-Gene`` = mean over genes of Pearson's r between the observed truth and prediction of that gene;
    - ``R2-Gene`` = mean over genes of ``1 - SS_res / SS_tot`` over the observed spots of the gene, ``SS_tot``
      taken around the mean of the observed truth;
    - ``PCC-Patch`` and ``R2-Patch``: the same per spot, across its observed genes, averaged over spots.

    A gene (or spot) with fewer than 2 observed entries or a constant observed truth has no PCC and no R²; one
    with a constant observed prediction has no PCC (its R² is defined: a constant predictor scores ≤ 0). These
    are left out of the averages (SEPAL's plain mean would return NaN or ``None``), and one :class:`UserWarning`
    per call says how many genes and spots were left out of which average, and why.

    The patch metrics change when a per-gene vector is added to both truth and prediction (e.g. deltas vs
    absolute values, docs/method.md, "Metrics"); the gene metrics, MSE and MAE do not. SEPAL evaluates absolute
    log2(TPM + 1) values.

    Parameters
    ----------
    truth
        Spots × genes ground truth.
    pred
        Spots × genes prediction, same shape.
    mask
        Boolean spots × genes, ``True`` where the truth was observed (SEPAL: raw count > 0). Unobserved entries
        of ``truth`` and ``pred`` are ignored, whatever they hold (NaN included). ``None``: every entry observed.

    Returns
    -------
    ``{"MSE", "MAE", "PCC-Gene", "R2-Gene", "PCC-Patch", "R2-Patch"}`` as floats, plus the counts that entered
    them: ``n_observed`` (entries in MSE/MAE), ``n_genes_pcc``, ``n_genes_r2``, ``n_spots_pcc``, ``n_spots_r2``.
    An average over no gene (spot) is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import sepal_tl as sepal
    >>> truth = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 9.0]])
    >>> pred = np.array([[1.0, 3.0], [2.0, 4.0], [4.0, 8.0]])
    >>> scores = sepal.tl.compute_metrics(truth, pred)  # errors 0, 1, 0, 0, 1, 1: MSE = MAE = 0.5
    >>> {name: round(scores[name], 3) for name in ["MSE", "MAE", "PCC-Gene", "R2-Gene"]}
    {'MSE': 0.5, 'MAE': 0.5, 'PCC-Gene': 0.989, 'R2-Gene': 0.712}
    >>> mask = truth < 9  # the last entry was not observed: it is left out of every score
    >>> sepal.tl.compute_metrics(truth, pred, mask)["n_observed"]
    5
    """
    y, p, m = prepare(truth, pred, mask)
    result, genes, spots = summarize(y, p, m)
    lines = skip_report(genes, spots)
    if lines:
        warnings.warn(
            "Undefined scores were left out of the averages: " + "; ".join(lines) + ".", UserWarning, stacklevel=2
        )
    return result


def _table(scores: AxisScores, index) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pcc": scores.pcc,
            "r2": scores.r2,
            "mse": scores.mse,
            "mae": scores.mae,
            "n_observed": scores.n_observed.astype(np.int64),
        },
        index=index,
    )


def per_gene_metrics(
    truth: ArrayLike, pred: ArrayLike, mask: ArrayLike | None = None, *, var_names=None
) -> pd.DataFrame:
    """Per-gene PCC, R², MSE and MAE over the observed spots of each gene.

    Parameters
    ----------
    truth
        Spots × genes ground truth.
    pred
        Spots × genes prediction, same shape.
    mask
        Boolean spots × genes, ``True`` where observed; ``None``: every entry observed.
    var_names
        Index of the result (gene names); default ``0 … n_genes - 1``.

    Returns
    -------
    One row per gene with columns ``pcc``, ``r2``, ``mse``, ``mae`` and ``n_observed``. Undefined scores are NaN
    (see :func:`compute_metrics`): no observed spot (all four), fewer than 2 observed spots or a constant observed
    truth (``pcc``, ``r2``), a constant observed prediction (``pcc``). :func:`compute_metrics`'s ``PCC-Gene`` and
    ``R2-Gene`` are the means of the non-NaN ``pcc`` and ``r2``.

    Examples
    --------
    >>> import numpy as np
    >>> import sepal_tl as sepal
    >>> truth = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 9.0]])
    >>> pred = np.array([[1.0, 3.0], [2.0, 4.0], [4.0, 8.0]])
    >>> sepal.tl.per_gene_metrics(truth, pred, var_names=["ERBB2", "ESR1"]).round(3)
             pcc     r2    mse    mae  n_observed
    ERBB2  0.982  0.500  0.333  0.333           3
    ESR1   0.996  0.923  0.667  0.667           3
    """
    y, p, m = prepare(truth, pred, mask)
    return _table(axis_scores(y, p, m, axis=0), var_names)


def per_spot_metrics(
    truth: ArrayLike, pred: ArrayLike, mask: ArrayLike | None = None, *, obs_names=None
) -> pd.DataFrame:
    """Per-spot ("patch") PCC, R², MSE and MAE across the observed genes of each spot.

    Parameters
    ----------
    truth
        Spots × genes ground truth.
    pred
        Spots × genes prediction, same shape.
    mask
        Boolean spots × genes, ``True`` where observed; ``None``: every entry observed.
    obs_names
        Index of the result (spot names); default ``0 … n_spots - 1``.

    Returns
    -------
    One row per spot with columns ``pcc``, ``r2``, ``mse``, ``mae`` and ``n_observed``, NaN where undefined (as in
    :func:`per_gene_metrics`). :func:`compute_metrics`'s ``PCC-Patch`` and ``R2-Patch`` are the means of the
    non-NaN ``pcc`` and ``r2``.

    Examples
    --------
    >>> import numpy as np
    >>> import sepal_tl as sepal
    >>> truth = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 9.0]])
    >>> pred = np.array([[1.0, 3.0], [2.0, 4.0], [4.0, 8.0]])
    >>> sepal.tl.per_spot_metrics(truth, pred).round(3)
       pcc     r2  mse  mae  n_observed
    0  1.0 -1.000  0.5  0.5           2
    1  1.0  1.000  0.0  0.0           2
    2  1.0  0.889  1.0  1.0           2
    """
    y, p, m = prepare(truth, pred, mask)
    return _table(axis_scores(y, p, m, axis=1), obs_names)
