"""SEPAL's whole benchmark pipeline in one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from anndata import AnnData

from sepal_tl._docs import inject_docs
from sepal_tl._keys import COUNTS, DEFAULT_LIBRARY_KEY, LOG2TPM, OBSERVED, UNS
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._uns import record
from sepal_tl._validation import check_choice, check_counts_layer, check_unique_var_names

from ._combat import combat as _combat
from ._denoise import denoise
from ._filter import filter as _filter
from ._log import log2p
from ._moran import select_genes
from ._presets import PRESETS
from ._tpm import tpm

_FILTER_KEYS = (
    "min_counts_spot",
    "max_counts_spot",
    "min_counts_gene",
    "max_counts_gene",
    "min_frac_slide",
    "min_frac_global",
)


@spatialdata_aware()
@inject_docs
def run(
    adata: AnnData,
    *,
    preset: str = "visium",
    slides: Sequence[str] | None = None,
    gene_lengths: Any = None,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    copy: bool = False,
    **overrides: Any,
) -> AnnData | None:
    """Run SEPAL's benchmark pipeline: filter → TPM → log2(TPM + 1) → denoise → Moran selection → ComBat.

    Parameters
    ----------
    adata
        Spots × genes with raw counts in ``X``, array coordinates and (for several slides) ``obs[library_key]``.
    preset
        ``"visium"``, ``"stnet"`` (the paper's thresholds), ``"her2st"`` or ``"synthetic"`` (for
        :func:`sepal_tl.datasets.synthetic`). See :data:`sepal_tl.pp.PRESETS`.
    slides
        Slides to rank Moran's I on (e.g. the training slides, leak-free); ``None`` uses all, as SEPAL does.
    gene_lengths
        Passed to :func:`sepal_tl.pp.tpm`.
    library_key
        %(library_key)s %(one_slide_rule)s
    copy
        %(copy)s
    **overrides
        Any preset value: ``min_counts_spot``, ``max_counts_spot``, ``min_counts_gene``, ``max_counts_gene``,
        ``min_frac_slide``, ``min_frac_global``, ``n_top``, ``combat_key`` (``None`` skips ComBat).
    table_key
        %(table_key)s

    Returns
    -------
    The processed copy if ``copy=True``, else ``None`` (as scanpy's functions). The data end up with layers
    ``counts``, ``tpm``, ``log2tpm`` (log2(TPM + 1); called ``log1p`` before 0.2), ``denoised``, ``observed`` (and
    ``combat``), subset to the selected genes. Spots and genes left after each step, and the imputed fraction, are
    in ``uns["sepal"]["pp"]["summary"]``; :func:`run_summary` gives them as a table.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.run(adata, preset="synthetic", slides=["slide0"], n_top=16)  # rank on training slides
    >>> adata.shape
    (140, 16)
    >>> list(adata.layers)
    ['counts', 'tpm', 'log2tpm', 'denoised', 'observed', 'combat']
    >>> adata.uns["sepal"]["pp"]["run"]["preset"]
    'synthetic'
    """
    check_choice("preset", preset, list(PRESETS))
    check_unique_var_names(adata)
    check_counts_layer(adata)
    unknown = sorted(set(overrides) - set(PRESETS[preset]))
    if unknown:
        msg = f"Unknown option(s) {unknown} for sepal.pp.run; valid overrides are {sorted(PRESETS[preset])}."
        raise TypeError(msg)
    params = {**PRESETS[preset], **overrides}
    work = adata.copy()  # every step runs on a copy so that a failure leaves ``adata`` untouched
    rows = [("input", work.n_obs, work.n_vars)]
    if COUNTS not in work.layers:
        work.layers[COUNTS] = work.X.copy()
    _filter(work, library_key=library_key, **{k: params[k] for k in _FILTER_KEYS})
    rows.append(("filter", work.n_obs, work.n_vars))
    tpm(work, gene_lengths=gene_lengths)
    rows.append(("tpm", work.n_obs, work.n_vars))
    log2p(work)
    denoise(work, layer=LOG2TPM, counts_layer=COUNTS, library_key=library_key)
    rows.append(("denoise", work.n_obs, work.n_vars))
    select_genes(work, n_top=params["n_top"], slides=slides, subset=True, library_key=library_key)
    rows.append(("select_genes", work.n_obs, work.n_vars))
    if params["combat_key"] is not None:
        _combat(work, key=params["combat_key"])
        rows.append(("combat", work.n_obs, work.n_vars))
    summary = pd.DataFrame(rows, columns=["step", "n_spots", "n_genes"]).set_index("step")
    imputed = float(1 - work.layers[OBSERVED].mean())  # over the selected genes, as the paper reports it
    record(work, "pp", "run", {"preset": preset, **params, "slides": slides, "library_key": library_key})
    work.uns[UNS]["pp"]["summary"] = {
        "step": list(summary.index),
        "n_spots": summary["n_spots"].tolist(),
        "n_genes": summary["n_genes"].tolist(),
        "imputed_fraction": imputed,
    }
    logger.info("pp.run(%s): %d spots x %d genes, %.1f%% imputed", preset, work.n_obs, work.n_vars, 100 * imputed)
    if copy:
        return work
    _replace_contents(adata, work)
    return None


@spatialdata_aware()
@inject_docs
def run_summary(adata: AnnData) -> pd.DataFrame:
    """Spots and genes left after each step of :func:`run`.

    Parameters
    ----------
    adata
        Data processed by :func:`run` (its ``uns["sepal"]["pp"]["summary"]``).
    table_key
        %(table_key)s

    Returns
    -------
    A table indexed by step with ``n_spots`` and ``n_genes``; ``attrs["imputed_fraction"]`` holds the fraction of
    entries the median filter imputed (over the selected genes).

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.run(adata, preset="synthetic", slides=["slide0"], n_top=16)
    >>> summary = sepal.pp.run_summary(adata)
    >>> summary
                  n_spots  n_genes
    step
    input             180       60
    filter            140       42
    tpm               140       42
    denoise           140       42
    select_genes      140       16
    combat            140       16
    >>> round(summary.attrs["imputed_fraction"], 2)
    0.25
    """
    stored = adata.uns.get(UNS, {}).get("pp", {}).get("summary")
    if stored is None:
        msg = "adata has no sepal.pp.run summary (uns['sepal']['pp']['summary']); run sepal.pp.run first."
        raise KeyError(msg)
    table = pd.DataFrame({key: stored[key] for key in ("step", "n_spots", "n_genes")}).set_index("step")
    table.attrs["imputed_fraction"] = float(stored["imputed_fraction"])
    return table


def _replace_contents(target: AnnData, source: AnnData) -> None:
    """Make ``target`` hold exactly ``source``'s data (in-place result of a pipeline run on a copy)."""
    target._init_as_actual(
        X=source.X,
        obs=source.obs,
        var=source.var,
        uns=source.uns,
        obsm=source.obsm,
        varm=source.varm,
        obsp=source.obsp,
        varp=source.varp,
        layers=source.layers,
    )
