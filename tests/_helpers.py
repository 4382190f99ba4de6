"""Helpers shared by the tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from anndata.tests.helpers import assert_equal
from scipy import sparse

#: ``../shared/data`` next to the project root; tests that need it skip cleanly when it is absent.
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data is not available")

#: The smallest encoder setup the model tests train: a randomly initialised ViT-Tiny on 32-pixel patches, on CPU.
TINY = {"backbone": "vit_tiny_patch16_224", "pretrained": False, "patch_size": 32, "device": "cpu"}


def _nan_as_text(value):
    """``uns`` with float NaN replaced by a marker, since NaN != NaN would fail an equality check."""
    if isinstance(value, dict):
        return {k: _nan_as_text(v) for k, v in value.items()}
    if isinstance(value, float) and np.isnan(value):
        return "<nan>"
    return value


def assert_same(adata: AnnData, other: AnnData) -> None:
    """Deep equality of two AnnData objects (NaN in ``uns`` counts as equal to NaN)."""
    left, right = adata.copy(), other.copy()
    left.uns, right.uns = _nan_as_text(dict(left.uns)), _nan_as_text(dict(right.uns))
    assert_equal(left, right)


def assert_unchanged_after_error(adata: AnnData, error: type[Exception], match: str, func, **kwargs) -> None:
    """``func(adata, **kwargs)`` raises ``error`` (message matching ``match``) and leaves ``adata`` as it was."""
    before = adata.copy()
    with pytest.raises(error, match=match):
        func(adata, **kwargs)
    assert_same(adata, before)


def grid_adata(
    values: np.ndarray,
    coords: np.ndarray,
    *,
    genes: list[str] | None = None,
    library: list[str] | None = None,
    layer: str | None = None,
) -> AnnData:
    """Spots at integer array coordinates ``coords`` (row, col) with ``values`` in X (or in ``layers[layer]``)."""
    values = np.asarray(values, dtype=np.float32)
    n, g = values.shape
    obs = pd.DataFrame(
        {"array_row": coords[:, 0].astype(int), "array_col": coords[:, 1].astype(int)},
        index=[f"s{i}" for i in range(n)],
    )
    if library is not None:
        obs["library_id"] = pd.Categorical(library)
    adata = AnnData(sparse.csr_matrix(values) if layer is None else np.zeros_like(values), obs=obs)
    adata.var_names = genes or [f"g{j}" for j in range(g)]
    adata.obsm["spatial"] = coords[:, ::-1].astype(float) * 100.0
    if layer is not None:
        adata.layers[layer] = values
    return adata


def square_coords(n_rows: int, n_cols: int) -> np.ndarray:
    """Row-major integer coordinates of a full square lattice."""
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    return np.column_stack([rows.ravel(), cols.ravel()])
