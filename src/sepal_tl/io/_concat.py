"""Concatenation of several slides into one AnnData."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
from anndata import AnnData

from sepal_tl._docs import inject_docs
from sepal_tl._logging import logger
from sepal_tl._validation import check_choice

from ._common import library_ids


@inject_docs
def concat(
    adatas: Iterable[AnnData],
    *,
    library_key: str = "library_id",
    join: Literal["inner", "outer"] = "inner",
) -> AnnData:
    """Concatenate slides, keeping every slide's ``uns["spatial"]`` entry.

    Parameters
    ----------
    adatas
        The slides, e.g. from :func:`read_visium` / :func:`read_st`. Each may itself hold several libraries.
    library_key
        %(library_key)s An AnnData without this column must hold exactly one library in ``uns["spatial"]``, whose
        id is then used. Library ids must be distinct across inputs.
    join
        ``"inner"`` keeps the genes measured in every slide, ``"outer"`` all genes (sparse counts of genes
        missing from a slide are filled with 0).

    Returns
    -------
    The concatenated AnnData: ``X``, the layers (with ``join="inner"`` only those present in every input),
    ``obsm``, ``obs`` (with ``obs[library_key]`` categorical, in input order), the ``var`` columns that agree
    across inputs and ``uns["spatial"]`` holding every library. Other ``uns`` entries are kept when they are the same in every
    input. ``obs_names`` are kept when they are already unique (the readers prefix them with the library id);
    otherwise ``"-{library_id}"`` (or ``"-{position}"`` for multi-library inputs) is appended.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=20, n_genes=10, pitch_px=32, random_state=0)
    >>> images = [adata.uns["spatial"][lib]["images"]["hires"] for lib in ["slide0", "slide1"]]
    >>> slides = [
    ...     sepal.io.spot_grid(image, spot_diameter_px=17.6, pitch_px=32, library_id=f"he{i}")
    ...     for i, image in enumerate(images)
    ... ]
    >>> merged = sepal.io.concat(slides)
    >>> merged.obs["library_id"].value_counts().sort_index().to_dict(), list(merged.uns["spatial"])
    ({'he0': 27, 'he1': 51}, ['he0', 'he1'])
    >>> # Visium slides read from disk:
    >>> adata = sepal.io.concat([sepal.io.read_visium("s1/outs"), sepal.io.read_visium("s2/outs")])  # doctest: +SKIP
    """
    check_choice("join", join, ("inner", "outer"))
    adatas = list(adatas)
    if not adatas:
        msg = "concat needs at least one AnnData."
        raise ValueError(msg)
    labels = [library_ids(adata, library_key) for adata in adatas]

    owner: dict[str, int] = {}
    for i, (adata, lib) in enumerate(zip(adatas, labels, strict=True)):
        for name in dict.fromkeys([*pd.unique(lib), *adata.uns.get("spatial", {})]):
            if name in owner:
                msg = (
                    f"Library id {name!r} occurs in input {owner[name]} and in input {i}. Library ids must "
                    "be unique across slides: read them with distinct library_id= values, or rename "
                    f"adata.obs[{library_key!r}] and the matching adata.uns['spatial'] key."
                )
                raise ValueError(msg)
            owner[name] = i

    keys = [str(lib.iloc[0]) if lib.nunique() == 1 else str(i) for i, lib in enumerate(labels)]
    all_names = pd.Index(np.concatenate([adata.obs_names.to_numpy() for adata in adatas]))
    index_unique = None
    if not all_names.is_unique:
        index_unique = "-"
        logger.info("obs_names overlap between slides: appending '-<library id>' to make them unique.")

    layer_sets = [set(adata.layers) for adata in adatas]
    partial_layers = set.union(*layer_sets) - set.intersection(*layer_sets)
    if partial_layers:
        fate = "dropped" if join == "inner" else "filled (0 if sparse, NaN if dense) where absent"
        logger.warning("layers %s are missing from some slides: %s.", sorted(partial_layers), fate)

    merged = ad.concat(adatas, join=join, merge="same", uns_merge="same", keys=keys, index_unique=index_unique)
    spot_libraries = np.concatenate([lib.to_numpy() for lib in labels])
    categories = list(dict.fromkeys(spot_libraries))
    merged.obs[library_key] = pd.Categorical(spot_libraries, categories=categories)
    merged.uns["spatial"] = {
        name: copy.deepcopy(entry) for adata in adatas for name, entry in adata.uns.get("spatial", {}).items()
    }
    n_genes = [adata.n_vars for adata in adatas]
    if join == "inner" and merged.n_vars < max(n_genes):
        logger.info("kept the %d genes shared by all slides (slides had %s genes).", merged.n_vars, n_genes)
    logger.info("concatenated %d libraries: %d spots x %d genes", len(categories), merged.n_obs, merged.n_vars)
    return merged
