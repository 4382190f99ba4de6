"""One rule for "which slide is this spot on", the same in io, pp, tl and pl (and for SpatialData tables)."""

import numpy as np
import pandas as pd
import pytest
from _helpers import assert_unchanged_after_error, grid_adata, square_coords

import sepal_tl as sepal
from sepal_tl._validation import resolve_libraries
from sepal_tl.io._common import library_ids


def _two_slides():
    coords = np.vstack([square_coords(3, 3), square_coords(3, 3)])
    adata = grid_adata(np.ones((18, 2)), coords, library=["a"] * 9 + ["b"] * 9)
    adata.uns["spatial"] = {"a": {}, "b": {}}
    return adata


def _same(adata, key):
    rule = resolve_libraries(adata, key)
    assert library_ids(adata, key).tolist() == rule.astype(str).tolist()
    return rule.astype(str).tolist()


def test_column_region_uns_and_default():
    adata = _two_slides()
    assert _same(adata, "library_id") == ["a"] * 9 + ["b"] * 9
    # a SpatialData table without a library column: one slide per annotated region
    table = adata.copy()
    table.obs["region"] = table.obs.pop("library_id").map({"a": "slideA", "b": "slideB"})
    table.uns["spatialdata_attrs"] = {"region": ["slideA", "slideB"], "region_key": "region", "instance_key": "i"}
    assert _same(table, "library_id") == ["slideA"] * 9 + ["slideB"] * 9
    # one slide: named after the only uns['spatial'] entry (not a made-up name), also for library_key=None
    one = grid_adata(np.ones((9, 1)), square_coords(3, 3))
    one.uns["spatial"] = {"C2": {}}
    assert _same(one, "library_id") == ["C2"] * 9 == _same(one, None)
    del one.uns["spatial"]
    assert _same(one, None) == ["slide"] * 9


def test_slides_are_never_merged_silently():
    adata = _two_slides()
    with pytest.raises(KeyError, match=r"library_key=None treats all spots as one slide, but obs\['library_id'\]"):
        resolve_libraries(adata, None)
    # pp, tl and pl all go through the rule: the same error, before anything is written
    adata.layers["denoised"] = np.random.default_rng(0).random((18, 2)).astype(np.float32)
    for func, kwargs in ((sepal.pp.select_genes, {"n_top": 1}), (sepal.pp.denoise, {"layer": "denoised"})):
        assert_unchanged_after_error(adata, KeyError, "library_key=None", func, library_key=None, **kwargs)
    no_column = adata.copy()
    del no_column.obs["library_id"]
    with pytest.raises(KeyError, match=r"uns\['spatial'\] holds 2 libraries"):
        library_ids(no_column, "library_id")
    with pytest.raises(KeyError, match="library_key='batch' is not a column"):
        resolve_libraries(adata, "batch")
    adata.obs["library_id"] = pd.Categorical(["a"] * 8 + [None] * 10, categories=["a", "b"])
    with pytest.raises(ValueError, match="missing values"):
        resolve_libraries(adata, "library_id")
