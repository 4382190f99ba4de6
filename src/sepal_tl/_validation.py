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

from ._keys import COUNTS, DEFAULT_LIBRARY_KEY, LOG2TPM
from ._logging import logger


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
        if layer == LOG2TPM and "log1p" in adata.layers:
            msg += (
                " sepal_tl < 0.2 stored log2(TPM + 1) as 'log1p'; rename it with "
                "adata.layers['log2tpm'] = adata.layers.pop('log1p')."
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


def _slide_evidence(adata: AnnData) -> dict[str, list[str]]:
    """The slide names each source of ``adata`` shows: ``obs["library_id"]``, a SpatialData region column, ``uns``."""
    evidence = {}
    if DEFAULT_LIBRARY_KEY in adata.obs:
        evidence[f"obs[{DEFAULT_LIBRARY_KEY!r}]"] = (
            adata.obs[DEFAULT_LIBRARY_KEY].dropna().astype(str).unique().tolist()
        )
    region_key = region_column(adata)
    if region_key is not None:
        evidence[f"obs[{region_key!r}] (SpatialData regions)"] = adata.obs[region_key].astype(str).unique().tolist()
    evidence["uns['spatial']"] = [str(key) for key in adata.uns.get("spatial", {})]
    return evidence


def region_column(adata: AnnData) -> str | None:
    """The ``obs`` column naming each spot's SpatialData region (shapes element), if ``adata`` is a table."""
    attrs = adata.uns.get("spatialdata_attrs")
    key = attrs.get("region_key") if isinstance(attrs, dict) else None
    return key if key in adata.obs else None


def _labelled(col: pd.Series, what: str) -> pd.Series:
    if col.isna().any():
        msg = f"{what} has missing values; every spot needs a slide label."
        raise ValueError(msg)
    return col.astype(str).astype("category")


def resolve_libraries(adata: AnnData, library_key: str | None = DEFAULT_LIBRARY_KEY) -> pd.Series:
    """Return a categorical Series giving each spot's library (slide): the one rule used by io, pp, tl and pl.

    1. ``library_key`` is a column of ``adata.obs``: that column.
    2. ``library_key`` is the default ``"library_id"`` and absent: the region column of a SpatialData table
       (``uns["spatialdata_attrs"]["region_key"]``, one slide per annotated shapes element) when there is one;
       else one slide, named after the only entry of ``uns["spatial"]`` (``"slide"`` without any). Several
       ``uns["spatial"]`` entries and no column to tell their spots apart is an error.
    3. ``library_key=None``: one slide, named as in 2. It is an error when ``obs["library_id"]``, the region column
       or ``uns["spatial"]`` name several slides: spots of different slides are never merged silently.
    4. Any other ``library_key`` that is not a column: ``KeyError``.
    """
    if library_key is not None and library_key in adata.obs:
        return _labelled(adata.obs[library_key], f"adata.obs[{library_key!r}]")
    if library_key is not None and library_key != DEFAULT_LIBRARY_KEY:
        msg = (
            f"library_key={library_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}). "
            "Pass the obs column that names each spot's slide, or library_key=None for a single slide."
        )
        raise KeyError(msg)
    evidence = _slide_evidence(adata)
    region_key = region_column(adata)
    if library_key is not None and region_key is not None:
        return _labelled(adata.obs[region_key], f"adata.obs[{region_key!r}]")
    several = {source: names for source, names in evidence.items() if len(names) > 1}
    if several:
        source, names = next(iter(several.items()))
        if library_key is None:
            msg = (
                f"library_key=None treats all spots as one slide, but {source} names {len(names)} slides "
                f"({sorted(names)}); spots of different slides must not be neighbours. Pass "
                f"library_key={DEFAULT_LIBRARY_KEY!r} (or the obs column naming each spot's slide)."
            )
        else:
            msg = (
                f"adata.obs has no {library_key!r} column and {source} holds {len(names)} libraries "
                f"({sorted(names)}), so the library of each spot is unknown. Add adata.obs[{library_key!r}] or pass "
                "library_key= naming the obs column with the library ids."
            )
        raise KeyError(msg)
    name = next((names[0] for names in evidence.values() if names), "slide")
    if library_key is not None:
        logger.debug("obs[%r] not found: treating all spots as one slide %r.", library_key, name)
    return pd.Series(pd.Categorical([name] * adata.n_obs), index=adata.obs_names)


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


def check_unique_var_names(adata: AnnData) -> None:
    """Raise ``ValueError`` if a gene name occurs twice (selections by name would pick both copies)."""
    duplicated = adata.var_names[adata.var_names.duplicated()]
    if len(duplicated):
        msg = (
            f"adata.var_names has {len(duplicated)} duplicated gene name(s), e.g. {list(duplicated.unique()[:5])}; "
            "steps that select genes by name would pick every copy. Call adata.var_names_make_unique() first."
        )
        raise ValueError(msg)


def check_unique_positions(coords: np.ndarray, groups: np.ndarray, *, names: Sequence[str]) -> None:
    """Raise ``ValueError`` if two spots of one slide (same ``groups`` code) share an array position."""
    frame = pd.DataFrame({"group": groups, "row": coords[:, 0], "col": coords[:, 1]})
    duplicated = frame.duplicated(keep=False).to_numpy()
    if duplicated.any():
        first = np.flatnonzero(duplicated)[:4]
        msg = (
            f"{int(duplicated.sum())} spots share an array position with another spot of the same slide, e.g. "
            f"{[str(names[i]) for i in first]} at (array_row, array_col) = {tuple(int(v) for v in coords[first[0]])}. "
            "If the data hold several slides, name each spot's slide in obs['library_id'] (or pass library_key=); "
            "otherwise drop the duplicated spots."
        )
        raise ValueError(msg)


def check_counts_layer(adata: AnnData) -> None:
    """Raise ``ValueError`` if ``layers["counts"]`` exists but differs from ``X`` (a stale copy of the raw counts)."""
    if COUNTS not in adata.layers or adata.X is None:
        return
    counts, x = adata.layers[COUNTS], adata.X
    if counts.shape != x.shape:
        differ = True
    elif sparse.issparse(counts) or sparse.issparse(x):
        differ = (sparse.csr_matrix(counts) != sparse.csr_matrix(x)).nnz > 0
    else:
        differ = not np.array_equal(np.asarray(counts), np.asarray(x))
    if differ:
        msg = (
            "adata.layers['counts'] differs from adata.X, so one of them is stale; this step reads the raw counts "
            "from X and keeps layers['counts'] as their copy. Set adata.layers['counts'] = adata.X.copy(), or "
            "delete the layer, or put the raw counts back in X."
        )
        raise ValueError(msg)


def check_has_spots(adata: AnnData, step: str) -> None:
    """Raise ``ValueError`` if ``adata`` has no spot or no gene (nothing for ``step`` to work on)."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = f"{step} needs at least one spot and one gene, got {adata.n_obs} spots x {adata.n_vars} genes."
        raise ValueError(msg)


def check_optional_numbers(**values) -> None:
    """Raise ``TypeError`` unless each value is ``None`` or a real number (not a string, not a boolean)."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float | np.number)):
            msg = f"{name} must be a number or None, got {type(value).__name__} ({value!r})."
            raise TypeError(msg)
