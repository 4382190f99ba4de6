"""Genes selected with the lattice graph vs the authors' squidpy graphs, on her2st (docs/differences.md).

Preprocessing as ``sepal.pp.run(preset="her2st")`` up to the median filter, then ``select_genes`` twice:
``graph="lattice"`` (sepal's exact lattice) and ``graph="reference"`` (squidpy's grid builder with 8 neighbours on
pixel coordinates, as the reference does for legacy ST). Prints the overlap of the top-n genes and the Spearman
correlation of the mean Moran's I.

Run: ``python benchmarks/moran_graphs.py [DATA_DIR]`` (default ``../shared/data/her2st``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from scipy.stats import spearmanr

import sepal_tl as sepal
from sepal_tl._keys import MORAN_I
from sepal_tl.pp._run import _FILTER_KEYS as _FILTERS  # the count filters of a pp preset


def main(data_dir: Path) -> None:
    params = sepal.pp.PRESETS["her2st"]
    adata = sepal.datasets.her2st(None, path=data_dir)
    sepal.pp.filter(adata, **{key: params[key] for key in _FILTERS})
    sepal.pp.tpm(adata)
    sepal.pp.log2p(adata)
    sepal.pp.denoise(adata, layer="log2tpm", counts_layer="counts")
    moran = {}
    for graph in ("lattice", "reference"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranked = sepal.pp.select_genes(adata, n_top=params["n_top"], graph=graph, copy=True)
        moran[graph] = ranked.var[MORAN_I]
    print(f"{adata.obs['library_id'].nunique()} sections, {adata.n_obs} spots x {adata.n_vars} genes")
    for n in (32, 64, params["n_top"], 256):
        top = {graph: set(values.sort_values(ascending=False).index[:n]) for graph, values in moran.items()}
        print(f"top {n}: {len(top['lattice'] & top['reference'])} genes shared")
    rho = spearmanr(moran["lattice"], moran["reference"], nan_policy="omit").statistic
    print(f"Spearman correlation of the mean Moran's I over all genes: {rho:.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/her2st"))
