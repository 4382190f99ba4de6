"""Spot and gene filtering with SEPAL's thresholds and order."""

from __future__ import annotations

from typing import Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from sepal_tl._docs import inject_docs
from sepal_tl._keys import DEFAULT_LIBRARY_KEY, EXP_FRAC, GLOB_EXP_FRAC
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._uns import record
from sepal_tl._validation import (
    check_choice,
    check_counts,
    check_has_spots,
    check_optional_numbers,
    get_matrix,
    resolve_libraries,
)


def _nonzero(matrix) -> sparse.csr_matrix | np.ndarray:
    if sparse.issparse(matrix):
        out = matrix.tocsr(copy=True)
        out.data = (out.data > 0).astype(np.float32)
        out.eliminate_zeros()
        return out
    return (np.asarray(matrix) > 0).astype(np.float32)


def _column_sums(matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=0)).ravel()


def _within(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """Strict ``low < values < high``; a bound of ``None`` is not applied."""
    keep = np.ones(values.shape, dtype=bool)
    if low is not None:
        keep &= values > low
    if high is not None:
        keep &= values < high
    return keep


def _spared_rule(exp_frac: np.ndarray, glob_exp_frac: np.ndarray, candidates: np.ndarray, target: float) -> np.ndarray:
    """SpaRED's rule: the longest prefix, by descending ``exp_frac``, whose mean ``glob_exp_frac`` >= ``target``."""
    idx = np.flatnonzero(candidates)
    order = idx[np.argsort(-exp_frac[idx], kind="stable")]
    running_mean = np.cumsum(glob_exp_frac[order]) / np.arange(1, order.size + 1)
    ok = np.flatnonzero(running_mean >= target)
    keep = np.zeros(exp_frac.shape, dtype=bool)
    if ok.size:
        keep[order[: ok[-1] + 1]] = True
    return keep


def _spared_target(
    rule: str, min_frac_slide: float | None, min_frac_global: float | None, real_data_percentage: float | None
) -> float | None:
    """SpaRED's target (0.7 unless given; ``None`` with SEPAL's rule); an error for a threshold ``rule`` ignores."""
    if rule == "spared":
        thresholds = {"min_frac_slide": min_frac_slide, "min_frac_global": min_frac_global}
        given = [name for name, value in thresholds.items() if value is not None]
        if given:
            msg = (
                f"rule='spared' replaces the thresholds {', '.join(given)} by real_data_percentage, so they would be "
                "ignored; leave them at None, or use rule='sepal'."
            )
            raise ValueError(msg)
        real_data_percentage = 0.7 if real_data_percentage is None else real_data_percentage
        if not 0 <= real_data_percentage <= 1:
            msg = f"real_data_percentage must lie in [0, 1], got {real_data_percentage}."
            raise ValueError(msg)
    elif real_data_percentage is not None:
        msg = "real_data_percentage applies only with rule='spared'; remove it, or pass rule='spared'."
        raise ValueError(msg)
    return real_data_percentage


def _spot_filter(counts, libraries, low: float | None, high: float | None) -> np.ndarray:
    """Spots with ``low < total counts < high``; an error when a slide keeps none."""
    spot_keep = _within(np.asarray(counts.sum(axis=1)).ravel(), low, high)
    empty = [str(lib) for lib, n in libraries[spot_keep].value_counts().items() if n == 0]
    if empty:
        msg = (
            f"Slide(s) {empty} have no spot left after the spot filter "
            f"({low} < total counts < {high}), so their expression fractions are undefined. "
            "Lower min_counts_spot / raise max_counts_spot, or drop these slides first."
        )
        raise ValueError(msg)
    return spot_keep


def _expressed_fractions(counts, libraries, spot_keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per gene, over the kept spots: the minimum over slides of the fraction expressing it, and the pooled one."""
    expressed = _nonzero(counts[spot_keep])
    kept = libraries[spot_keep]
    libs = kept.to_numpy()
    per_slide = []
    for lib in kept.value_counts().index:
        rows = libs == lib
        per_slide.append(_column_sums(expressed[rows]) / rows.sum())
    return np.min(per_slide, axis=0), _column_sums(expressed) / spot_keep.sum()


def _gene_filter(
    totals: np.ndarray, exp_frac: np.ndarray, glob_exp_frac: np.ndarray, thresholds: dict, spared_target: float | None
) -> np.ndarray:
    """Genes within the count bounds and past SEPAL's fraction thresholds (or SpaRED's rule); an error if none."""
    keep = _within(totals, thresholds["min_counts_gene"], thresholds["max_counts_gene"])
    if spared_target is None:
        if thresholds["min_frac_slide"] is not None:
            keep &= exp_frac > thresholds["min_frac_slide"]
        if thresholds["min_frac_global"] is not None:
            keep &= glob_exp_frac > thresholds["min_frac_global"]
    else:
        keep = _spared_rule(exp_frac, glob_exp_frac, keep, spared_target)
    if not keep.any():
        msg = "No gene passes the gene filter; relax min_counts_gene / min_frac_slide / min_frac_global."
        raise ValueError(msg)
    return keep


def _subset(adata: AnnData, spots: np.ndarray, genes: np.ndarray, *, layer: str | None, copy: bool) -> AnnData:
    """``adata`` (or a copy) restricted to ``spots`` and ``genes``."""
    if copy:
        return adata[spots, genes].copy()
    adata._inplace_subset_obs(spots)
    adata._inplace_subset_var(genes)
    return adata


def _add_qc(adata: AnnData, layer: str | None) -> None:
    """Refresh scanpy's QC columns in ``obs`` and ``var``."""
    import scanpy as sc

    obs_qc, var_qc = sc.pp.calculate_qc_metrics(adata, layer=layer, percent_top=None, log1p=False, inplace=False)
    for col in obs_qc:
        adata.obs[col] = obs_qc[col].to_numpy()
    for col in var_qc:
        adata.var[col] = var_qc[col].to_numpy()


@spatialdata_aware()
@inject_docs
def filter(
    adata: AnnData,
    *,
    min_counts_spot: float | None = None,
    max_counts_spot: float | None = None,
    min_counts_gene: float | None = None,
    max_counts_gene: float | None = None,
    min_frac_slide: float | None = None,
    min_frac_global: float | None = None,
    rule: Literal["sepal", "spared"] = "sepal",
    real_data_percentage: float | None = None,
    layer: str | None = None,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Filter spots and genes exactly in SEPAL's order, with strict inequalities.

    1. Keep spots with ``min_counts_spot < total counts < max_counts_spot`` (totals over all genes).
    2. Per gene, the fraction of spots expressing it (count > 0) in each slide; its **minimum over slides** is
       ``var["exp_frac"]``. The fraction over all slides pooled is ``var["glob_exp_frac"]``.
    3. Keep genes with ``min_counts_gene < total counts < max_counts_gene`` and, with ``rule="sepal"``,
       ``exp_frac > min_frac_slide`` and ``glob_exp_frac > min_frac_global``. With ``rule="spared"`` the last two
       conditions are replaced by SpaRED's rule: sort the genes by ``exp_frac`` (descending) and keep the longest
       prefix whose mean ``glob_exp_frac`` is at least ``real_data_percentage``.
    4. Drop spots left with zero counts in every kept gene, and refresh scanpy's QC columns.

    Parameters
    ----------
    adata
        Spots × genes with raw counts.
    min_counts_spot, max_counts_spot
        Strict bounds on a spot's total counts. ``None`` disables a bound.
    min_counts_gene, max_counts_gene
        Strict bounds on a gene's total counts (after the spot filter).
    min_frac_slide
        Strict lower bound on ``exp_frac``, the per-slide minimum fraction of spots expressing the gene
        (``rule="sepal"`` only; an error with ``rule="spared"``).
    min_frac_global
        Strict lower bound on ``glob_exp_frac``, the fraction of all spots expressing the gene (``rule="sepal"``
        only; an error with ``rule="spared"``).
    rule
        ``"sepal"`` (the paper) or ``"spared"`` (SpaRED's real-data-percentage rule).
    real_data_percentage
        Target mean ``glob_exp_frac`` for ``rule="spared"``; ``None`` means 0.7. An error with ``rule="sepal"``.
    layer
        Layer with raw counts; ``None`` uses ``adata.X``.
    library_key
        %(library_key)s %(one_slide_rule)s
    %(copy_table_key)s

    Returns
    -------
    The filtered copy if ``copy=True``, else ``None``. Sets ``var["exp_frac"]``, ``var["glob_exp_frac"]``, scanpy's
    QC columns, and ``uns["sepal"]["pp"]["filter"]`` (parameters and counts kept).

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> adata.shape
    (120, 60)
    >>> sepal.pp.filter(
    ...     adata, min_counts_spot=100, min_counts_gene=100, min_frac_slide=0.2, min_frac_global=0.3
    ... )
    >>> adata.shape
    (88, 31)
    >>> adata.var[["exp_frac", "glob_exp_frac"]].min().round(2).tolist()  # above 0.2 and 0.3
    [0.45, 0.55]
    """
    check_choice("rule", rule, ["sepal", "spared"])
    check_has_spots(adata, "sepal.pp.filter")
    thresholds = {
        "min_counts_spot": min_counts_spot,
        "max_counts_spot": max_counts_spot,
        "min_counts_gene": min_counts_gene,
        "max_counts_gene": max_counts_gene,
        "min_frac_slide": min_frac_slide,
        "min_frac_global": min_frac_global,
    }
    check_optional_numbers(**thresholds, real_data_percentage=real_data_percentage)
    spared_target = _spared_target(rule, min_frac_slide, min_frac_global, real_data_percentage)
    counts = get_matrix(adata, layer)
    check_counts(counts, what="counts" if layer is None else f"layers[{layer!r}]")
    libraries = resolve_libraries(adata, library_key)

    spot_keep = _spot_filter(counts, libraries, min_counts_spot, max_counts_spot)
    exp_frac, glob_exp_frac = _expressed_fractions(counts, libraries, spot_keep)
    gene_keep = _gene_filter(_column_sums(counts[spot_keep]), exp_frac, glob_exp_frac, thresholds, spared_target)

    nonempty = np.asarray((counts[spot_keep][:, gene_keep] > 0).sum(axis=1)).ravel() > 0
    spot_mask = np.zeros(adata.n_obs, dtype=bool)
    spot_mask[np.flatnonzero(spot_keep)[nonempty]] = True
    n_obs, n_vars = adata.n_obs, adata.n_vars
    adata = _subset(adata, spot_mask, gene_keep, layer=layer, copy=copy)
    adata.var[EXP_FRAC] = exp_frac[gene_keep]
    adata.var[GLOB_EXP_FRAC] = glob_exp_frac[gene_keep]
    _add_qc(adata, layer)

    summary = {
        "n_spots_in": n_obs,
        "n_spots_after_spot_filter": int(spot_keep.sum()),
        "n_spots_out": adata.n_obs,
        "n_genes_in": n_vars,
        "n_genes_out": adata.n_vars,
    }
    logger.info("filter: kept %d/%d spots and %d/%d genes", adata.n_obs, n_obs, adata.n_vars, n_vars)
    params = {**thresholds, "rule": rule, "real_data_percentage": spared_target}
    record(adata, "pp", "filter", {**params, "layer": layer, "library_key": library_key, **summary})
    return adata if copy else None
