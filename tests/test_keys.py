"""The names the package writes and reads (sepal_tl._keys): producers and consumers agree, and the pipeline uses them."""

from __future__ import annotations

import inspect

import pytest

import sepal_tl as sepal
from sepal_tl import _keys as keys


def _default(func, name: str):
    return inspect.signature(func).parameters[name].default


#: (producer, its output argument) -> the (consumer, input argument) pairs that read that output by default.
FLOWS = [
    ((sepal.pp.tpm, "key_added"), [(sepal.pp.log2p, "layer")]),
    ((sepal.pp.log2p, "key_added"), [(sepal.pl.denoising, "before")]),
    (
        (sepal.pp.denoise, "key_added"),
        [
            (sepal.pp.select_genes, "layer"),
            (sepal.pp.combat, "layer"),
            (sepal.tl.fit_encoder, "layer"),
            (sepal.tl.evaluate, "truth"),
            (sepal.pl.denoising, "after"),
        ],
    ),
    (
        (sepal.pp.denoise, "mask"),  # the same name on both sides
        [
            (sepal.tl.fit_encoder, "mask"),
            (sepal.tl.evaluate, "mask"),
            (sepal.pl.gene_map, "mask"),
            (sepal.pl.denoising, "mask"),
        ],
    ),
    ((sepal.pp.select_genes, "key_added"), [(sepal.pl.moran, "key")]),
    ((sepal.tl.predict, "key_added"), [(sepal.tl.evaluate, "pred"), (sepal.pl.pcc_histogram, "pred")]),
]


@pytest.mark.parametrize(("producer", "consumers"), FLOWS, ids=lambda x: getattr(x[0], "__name__", ""))
def test_consumers_read_by_default_what_producers_write(producer, consumers):
    func, name = producer
    written = _default(func, name)
    for consumer, argument in consumers:
        assert _default(consumer, argument) == written, f"{consumer.__name__}({argument}=) vs {func.__name__}({name}=)"


def test_the_pipeline_writes_the_keys_the_module_names(evaluated):
    adata, table, _ = evaluated
    assert {keys.COUNTS, keys.TPM, keys.LOG2TPM, keys.DENOISED, keys.OBSERVED} <= set(adata.layers)
    assert {keys.EXP_FRAC, keys.GLOB_EXP_FRAC, keys.MORAN_I, keys.HIGHLY_SPATIAL} <= set(adata.var.columns)
    assert keys.CONNECTIVITIES in adata.obsp and {keys.SPLIT, keys.DEFAULT_LIBRARY_KEY} <= set(adata.obs.columns)
    assert list(table.index) == [keys.PREDICTION, keys.BASELINE]
    assert list(table.columns[: len(keys.METRICS)]) == list(keys.METRICS)
    for score in ("pcc", "r2"):
        assert keys.gene_score_column(keys.PREDICTION, score, "test") == f"sepal_{score}_test"
        assert f"sepal_{score}_test" in adata.var.columns
    assert set(adata.uns[keys.UNS]) >= {"pp", "tl", "metrics"}


def test_derived_names():
    assert keys.local_layer("sepal") == "sepal_local" and keys.embedding_obsm("sepal") == "X_sepal"
