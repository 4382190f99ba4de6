import numpy as np
from _helpers import assert_unchanged_after_error, grid_adata, square_coords

import sepal_tl as sepal


def test_combat_removes_batch_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(5, 1, (40, 20))
    base[20:] += 2.0  # patient q is shifted
    adata = grid_adata(np.zeros((40, 20)), square_coords(5, 8), layer="denoised")
    adata.layers["denoised"] = base.astype(np.float32)
    adata.obs["patient"] = ["p"] * 20 + ["q"] * 20
    sepal.pp.combat(adata)
    out = adata.layers["combat"]
    gap_before = np.abs(base[:20].mean(0) - base[20:].mean(0)).mean()
    gap_after = np.abs(out[:20].mean(0) - out[20:].mean(0)).mean()
    assert gap_before > 1.5
    assert gap_after < 0.1 * gap_before  # what is left is sampling noise of the batch means
    assert adata.uns["sepal"]["pp"]["combat"]["n_batches"] == 2


def test_bad_inputs():
    adata = grid_adata(np.zeros((4, 2)), square_coords(2, 2), layer="denoised")
    assert_unchanged_after_error(adata, KeyError, "key='patient'", sepal.pp.combat)
    adata.obs["patient"] = "p"
    assert_unchanged_after_error(adata, ValueError, "at least two batches", sepal.pp.combat)
