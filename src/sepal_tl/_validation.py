"""Input checks shared by every public function.

Every check raises a clear error that names the problem and the fix *before* anything is written,
so that a failed call leaves the user's AnnData exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ._logging import logger

DEFAULT_LIBRARY_KEY = "library_id"


def get_matrix(adata: AnnData, layer: str | None):
    """Return ``adata.X`` (``layer=None``) or ``adata.layers[layer]``."""
    if layer is None:
        if adata.X is None:
            msg = "adata.X is empty; pass layer= naming the layer to use."
            raise ValueError(msg)
        return adata.X
    if layer not in adata.layers:
        msg = (
            f"Layer {layer!r} is not in adata.layers (available: {sorted(adata.layers)}). "
            "Run the step that creates it first, or pass layer= naming an existing layer."
        )
        raise KeyError(msg)
    return adata.layers[layer]


def _values(matrix) -> np.ndarray:
    return matrix.data if sparse.issparse(matrix) else np.asarray(matrix)


def check_counts(matrix, *, what: str = "counts") -> None:
    """Raise ``ValueError`` unless ``matrix`` holds finite, non-negative integers."""
    values = _values(matrix)
    if values.size == 0:
        return
    if not np.issubdtype(values.dtype, np.number):
        msg = f"{what} must be numeric, got dtype {values.dtype}."
        raise ValueError(msg)
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            msg = f"{what} contain NaN or infinite values; raw counts must be finite non-negative integers."
            raise ValueError(msg)
        if (values != np.round(values)).any():
            msg = (
                f"{what} contain non-integer values, so they are not raw counts (already normalised?). "
                "Pass the raw UMI counts (e.g. layer='counts')."
            )
            raise ValueError(msg)
    if (values < 0).any():
        msg = f"{what} contain negative values; raw counts must be non-negative."
        raise ValueError(msg)


def check_finite(matrix, *, what: str) -> None:
    """Raise ``ValueError`` if ``matrix`` holds NaN or infinite values."""
    values = _values(matrix)
    if values.size and not np.isfinite(values).all():
        msg = f"{what} contains NaN or infinite values; fix or drop them before this step."
        raise ValueError(msg)


def check_spatial(adata: AnnData, spatial_key: str = "spatial") -> np.ndarray:
    """Return the ``(n_obs, 2)`` spot coordinates from ``adata.obsm[spatial_key]``."""
    if spatial_key not in adata.obsm:
        msg = (
            f"adata.obsm[{spatial_key!r}] is missing: spot coordinates (full-resolution pixels, x = column, "
            "y = row) are needed. Read the data with sepal.io.read_visium / sepal.io.read_st, or set them."
        )
        raise KeyError(msg)
    coords = np.asarray(adata.obsm[spatial_key], dtype=float)
    if coords.ndim != 2 or coords.shape[1] != 2:
        msg = f"adata.obsm[{spatial_key!r}] must have shape (n_obs, 2), got {coords.shape}."
        raise ValueError(msg)
    if not np.isfinite(coords).all():
        msg = f"adata.obsm[{spatial_key!r}] contains NaN or infinite coordinates."
        raise ValueError(msg)
    return coords


def check_array_coords(adata: AnnData) -> np.ndarray:
    """Return the integer ``(n_obs, 2)`` array coordinates ``obs[["array_row", "array_col"]]``."""
    missing = [c for c in ("array_row", "array_col") if c not in adata.obs]
    if missing:
        msg = (
            f"adata.obs is missing {missing}: the integer array coordinates of each spot are needed "
            "(Visium: from tissue_positions; legacy ST: row = y, col = x of the spot file). "
            "sepal.io.read_visium and sepal.io.read_st set them."
        )
        raise KeyError(msg)
    values = adata.obs[["array_row", "array_col"]].to_numpy(dtype=float)
    if not np.isfinite(values).all() or (values != np.round(values)).any():
        msg = "adata.obs['array_row'] / ['array_col'] must be finite integers (array indices, not pixels)."
        raise ValueError(msg)
    return values.astype(np.int64)


def resolve_libraries(adata: AnnData, library_key: str | None) -> pd.Series:
    """Return a categorical Series giving each spot's library (slide).

    ``library_key=None``, or the default ``"library_id"`` when that column is absent, means that all spots
    belong to one slide. Any other key must be a column of ``adata.obs``.
    """
    if library_key is None or (library_key == DEFAULT_LIBRARY_KEY and library_key not in adata.obs):
        if library_key is not None:
            logger.debug("obs[%r] not found: treating all spots as one slide.", library_key)
        return pd.Series(pd.Categorical(["slide"] * adata.n_obs), index=adata.obs_names)
    if library_key not in adata.obs:
        msg = (
            f"library_key={library_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}). "
            "Pass the obs column that names each spot's slide, or library_key=None for a single slide."
        )
        raise KeyError(msg)
    col = adata.obs[library_key]
    if col.isna().any():
        msg = f"adata.obs[{library_key!r}] has missing values; every spot needs a slide label."
        raise ValueError(msg)
    return col.astype(str).astype("category")


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        msg = f"{name}={value!r} is not supported; choose one of {list(choices)}."
        raise ValueError(msg)


def check_positive(name: str, value) -> float:
    """Return ``value`` as a float, raising ``ValueError`` unless it is a positive, finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number <= 0:
        msg = f"{name} must be a positive, finite number, got {value!r}."
        raise ValueError(msg)
    return number
