"""The reference's pyComBat bug, measured on her2st (docs/differences.md, "ComBat from scanpy").

pyComBat 0.3.3 (``combat.pycombat.it_sol``) updates every gene's batch variance with the residuals around
``g_new[0][0]``, the batch mean of the *first* gene, instead of each gene's own batch mean. This script runs the
reference's call (``pycombat(genes x spots, batch)``) on the her2st sections with images after sepal's
preprocessing (her2st preset, 128 genes), and reports

- per batch and gene, the SD of pyComBat's output divided by the SD of scanpy's ComBat output;
- how much pyComBat's output changes when the genes are given in reverse order;
- the same ratios with the one-line fix (each gene's own mean), which should be ~1.

Run: ``pip install --target /tmp/combat_pkg --no-deps combat==0.3.3`` then
``PYTHONPATH=/tmp/combat_pkg python benchmarks/pycombat_gene0.py [DATA_DIR]``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import sepal_tl as sepal


def _fixed_it_sol(module):
    """pyComBat's ``it_sol`` with each gene's own batch mean in the variance update (the one-line fix)."""

    def it_sol(sdat, g_hat, d_hat, g_bar, t2, a, b, conv=0.0001, exit_iteration=10e5):
        n = [len(i) for i in sdat]
        t2_n = np.multiply(t2, n)
        t2_n_g_hat = np.multiply(t2_n, g_hat)
        g_old, d_old = np.ndarray.copy(g_hat), np.ndarray.copy(d_hat)
        change, count = 1, 0
        while change > conv and count < exit_iteration:
            g_new = module.postmean(g_bar, d_old, t2_n, t2_n_g_hat)
            own = np.asarray(g_new).reshape(-1)  # the fix: gene g's residuals around gene g's mean
            sum2 = np.sum(np.square(np.asarray(sdat) - own[:, None]), axis=1)
            d_new = module.postvar(sum2, n, a, b)
            change = max(
                np.amax(np.absolute(g_new - np.asarray(g_old)) / np.asarray(g_old)),
                np.amax(np.absolute(d_new - d_old) / d_old),
            )
            g_old, d_old = np.ndarray.copy(g_new), np.ndarray.copy(d_new)
            count += 1
        return np.asarray([g_new, d_new], dtype=object)

    return it_sol


def _sd_ratios(out: pd.DataFrame, ref: np.ndarray, batches: np.ndarray) -> np.ndarray:
    ratios = []
    for batch in np.unique(batches):
        cols = batches == batch
        ratios.append(out.loc[:, cols].to_numpy().std(axis=1) / ref[cols].std(axis=0))
    return np.concatenate(ratios)


def main(data_dir: Path) -> None:
    import combat.pycombat as module
    import scanpy as sc

    adata = sepal.datasets.her2st(None, path=data_dir)
    sepal.pp.run(adata, preset="her2st", combat_key=None)
    for key in ("library_id", "patient"):
        _measure(module, sc, adata, key)


def _measure(module, sc, adata, key: str) -> None:
    batches = adata.obs[key].astype(str).to_numpy()
    df = pd.DataFrame(adata.layers["denoised"].T, index=adata.var_names, columns=adata.obs_names)
    ref = sc.pp.combat(sc.AnnData(adata.layers["denoised"].astype(np.float64), obs=adata.obs), key, inplace=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buggy = module.pycombat(df, list(batches))
        reversed_ = module.pycombat(df.iloc[::-1], list(batches)).iloc[::-1]
        original = module.it_sol
        module.it_sol = _fixed_it_sol(module)
        try:
            fixed = module.pycombat(df, list(batches))
        finally:
            module.it_sol = original
    print(f"{adata.n_obs} spots x {adata.n_vars} genes, batches = obs[{key!r}]: {sorted(set(batches))}")
    for name, out in (("pyComBat 0.3.3", buggy), ("pyComBat, fixed", fixed)):
        r = _sd_ratios(out, ref, batches)
        print(f"{name}: per-batch SD / scanpy's: min {r.min():.3f}, median {np.median(r):.3f}, max {r.max():.3f}")
    print(f"reverse gene order changes pyComBat's output by up to {np.abs(buggy - reversed_).to_numpy().max():.3f}")
    print(f"max |pyComBat fixed - scanpy| = {np.abs(fixed.to_numpy().T - ref).max():.2e}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/her2st"))
