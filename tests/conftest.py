"""Fixtures shared by the test modules.

The synthetic data and its pipeline run are built once per test session (once per worker under pytest-xdist).
Session-scoped objects are shared: a test that changes one works on ``.copy()``.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import sepal_tl as sepal


@pytest.fixture(scope="session")
def synthetic_raw() -> AnnData:
    """Three synthetic slides of 120 spots and 60 genes with 32-pixel spot patches, as the generator made them."""
    return sepal.datasets.synthetic(n_slides=3, n_spots=120, n_genes=60, random_state=2, pitch_px=32)


@pytest.fixture(scope="session")
def processed(synthetic_raw) -> AnnData:
    """``synthetic_raw`` through ``pp.run(preset="synthetic", n_top=16)`` (no network fit)."""
    adata = synthetic_raw.copy()
    sepal.pp.run(adata, preset="synthetic", n_top=16)
    return adata


@pytest.fixture(scope="session")
def evaluated(processed) -> tuple[AnnData, pd.DataFrame, pd.DataFrame]:
    """``processed`` with two fake predictions (``sepal``: noise sd 0.5, ``sepal_local``: sd 1.0) evaluated on test.

    Returns the AnnData and the two metric tables of :func:`sepal_tl.tl.evaluate`.
    """
    adata = processed.copy()
    rng = np.random.default_rng(1)
    adata.layers["sepal"] = (adata.layers["denoised"] + rng.normal(0, 0.5, adata.shape)).astype(np.float32)
    adata.layers["sepal_local"] = (adata.layers["denoised"] + rng.normal(0, 1.0, adata.shape)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        spatial = sepal.tl.evaluate(adata, pred="sepal", split="test")
        local = sepal.tl.evaluate(adata, pred="sepal_local", split="test")
    return adata, spatial, local


@pytest.fixture
def figdir(tmp_path):
    """Scanpy's figure folder pointed at ``tmp_path`` (PNG files) for one test, restored afterwards.

    ``monkeypatch`` cannot be used: scanpy's settings are properties of a class, which it would delete on undo.
    """
    import scanpy as sc

    saved = sc.settings.figdir, sc.settings.file_format_figs
    sc.settings.figdir, sc.settings.file_format_figs = tmp_path, "png"
    yield tmp_path
    sc.settings.figdir, sc.settings.file_format_figs = saved


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every matplotlib figure a test left open (only when the test imported pyplot)."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
