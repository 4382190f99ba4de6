"""Closed-form ridge regression for the linear Δ head on frozen embeddings."""

from __future__ import annotations

import numpy as np

#: Ridge penalties tried, as multiples of the mean squared singular value of the centred training features.
ALPHA_GRID = tuple(10.0 ** np.arange(-4.0, 3.01, 0.5))


def _squared_error(pred: np.ndarray, target: np.ndarray, weight: np.ndarray | None) -> float:
    err = (pred - target) ** 2
    if weight is None:
        return float(err.mean())
    return float((err * weight).sum() / max(weight.sum(), 1.0))


def fit_ridge(
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    weight_val: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Ridge regression ``y ≈ x @ coef + intercept`` with one penalty for all outputs.

    The penalty is chosen on the validation rows (lowest mean squared error, weighted by ``weight_val`` such as
    the observed mask) when they are given, else by generalised cross-validation on the training rows. One SVD of
    the centred training features serves every penalty of :data:`ALPHA_GRID`.

    Returns
    -------
    ``(coef (d, g), intercept (g,), alpha, score)``; ``score`` is the validation MSE or the GCV criterion.
    """
    x64, y64 = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x_mean, y_mean = x64.mean(axis=0), y64.mean(axis=0)
    u, s, vt = np.linalg.svd(x64 - x_mean, full_matrices=False)
    uty = u.T @ (y64 - y_mean)
    scale = float(np.mean(s**2)) if s.size else 1.0
    best: tuple[float, float, np.ndarray | None] = (np.inf, 0.0, None)
    for factor in ALPHA_GRID:
        alpha = factor * scale
        shrink = s / (s**2 + alpha)
        coef = vt.T @ (shrink[:, None] * uty)
        if x_val is not None and y_val is not None and len(x_val):
            pred = (np.asarray(x_val, dtype=np.float64) - x_mean) @ coef + y_mean
            score = _squared_error(pred, np.asarray(y_val, dtype=np.float64), weight_val)
        else:
            fitted = u @ ((s**2 / (s**2 + alpha))[:, None] * uty)
            dof = float(np.sum(s**2 / (s**2 + alpha)))
            resid = (y64 - y_mean) - fitted
            score = float((resid**2).mean()) / max(1.0 - dof / len(x64), 1e-6) ** 2
        if score < best[0]:
            best = (score, alpha, coef)
    score, alpha, coef = best
    if coef is None:
        msg = "No ridge penalty gave a finite score; x and y must hold finite values only."
        raise ValueError(msg)
    intercept = y_mean - x_mean @ coef
    return coef.astype(np.float32), intercept.astype(np.float32), float(alpha), float(score)
