"""The README's hero figure: H&E of a held-out her2st section, a gene's measured and predicted expression.

Usage (a few minutes on one CPU core)::

    python docs/_scripts/hero_figure.py [--data PATH] [--weights FILE] [--out docs/_static/hero_her2st.png]

The first fold of ``benchmarks/her2st_pretrained.py``: patient C's sections C4 and C5 train, C3 validates, C2 is
held out; ``pp.run(preset="her2st")`` ranks Moran's I on the training sections only. Each spot's patch is embedded
once with a frozen ImageNet MobileNetV2 (``--weights``: a timm state dict; without it, timm's own ImageNet weights
are downloaded), then ``tl.fit(embedding_key=...)`` fits the ridge Δ head and SEPAL's spatial stage with the
benchmark's settings. The gene shown is the one with the highest PCC on the **validation** section, so the held-out
section plays no part in choosing it. Measured (``denoised``) and predicted (``sepal``) maps share one colour scale.

``--data`` is a local copy of the her2st ``data/`` folder; without it the sections are downloaded (hash-checked)
into ``sepal.settings.datasetdir``.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from anndata import AnnData

import sepal_tl as sepal  # before timm (imported by sepal_tl.tl on first use)

TRAIN, VAL, TEST = ["C4", "C5"], "C3", "C2"
ARCH = "mobilenetv2_100"
KEY = "X_mobilenetv2"
SPATIAL = {  # SEPAL (frozen encoder) in benchmarks/her2st_pretrained.py
    "n_hops": 1,
    "operator": "GraphConv",
    "hidden": (256,),
    "pooling": "center",
    "spatial_epochs": 40,
    "spatial_batch_size": 128,
    "spatial_lr": 1e-3,
}


def gene_scores(adata: AnnData, section: str) -> pd.DataFrame:
    """Per-gene PCC, R², MSE and MAE of the ``sepal`` layer on one section's observed spots."""
    rows = adata.obs["library_id"].astype(str).to_numpy() == section
    layers = [adata.layers[key][rows] for key in ("denoised", "sepal", "observed")]
    return sepal.tl.per_gene_metrics(*layers, var_names=adata.var_names)


def fit_and_predict(data: str | None, weights: str | None) -> AnnData:
    """her2st C2–C5, embedded, preprocessed with the training sections' ranking, fitted; predictions in layers."""
    adata = sepal.datasets.her2st([TEST, VAL, *TRAIN], path=data)
    sepal.tl.embed(adata, ARCH, pretrained=weights or True, key_added=KEY, batch_size=32, device="cpu")
    sepal.pp.run(adata, preset="her2st", slides=TRAIN, n_top=128)
    lib = adata.obs["library_id"].astype(str).to_numpy()
    adata.obs["split"] = np.where(np.isin(lib, TRAIN), "train", np.where(lib == VAL, "val", "test"))
    sepal.tl.fit(adata, embedding_key=KEY, device="cpu", random_state=0, **SPATIAL)
    return adata


def draw(adata: AnnData, gene: str, out: Path) -> None:
    """H&E | measured | predicted, the two maps on one colour scale."""
    rows = adata.obs["library_id"].astype(str).to_numpy() == TEST
    values = np.concatenate([np.asarray(adata[rows, gene].layers[k]).ravel() for k in ("denoised", "sepal")])
    vmin, vmax = float(values.min()), float(values.max())
    pcc = gene_scores(adata, TEST)["pcc"]

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.9), layout="constrained")
    for ax, layer, title in ((axes[1], "denoised", "measured"), (axes[2], "sepal", "predicted by SEPAL")):
        sepal.pl.gene_map(
            adata, gene, layer=layer, library_id=TEST, vmin=vmin, vmax=vmax, ax=ax, pcc_key=False, show=False
        )
        ax.set_title(f"{gene}, {title}")
    spatial = adata.uns["spatial"][TEST]
    scale = spatial["scalefactors"]["tissue_hires_scalef"]
    image = spatial["images"]["hires"]
    axes[0].imshow(image, extent=(0, image.shape[1] / scale, image.shape[0] / scale, 0))
    axes[0].set_xlim(axes[1].get_xlim())
    axes[0].set_ylim(axes[1].get_ylim())
    axes[0].set_title(f"H&E, section {TEST} (never trained on)")
    axes[0].set_axis_off()
    fig.suptitle(
        f"her2st, held-out section {TEST}: {gene} PCC {pcc[gene]:.2f} on observed spots "
        f"(mean over {adata.n_vars} genes {pcc.mean():.2f}); one colour scale for both maps",
        fontsize=10,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    print(f"{gene}: test PCC {pcc[gene]:.3f}; mean test PCC-Gene {pcc.mean():.3f} over {adata.n_vars} genes -> {out}")


def main() -> None:
    """Fit on C4 and C5, choose the gene on C3, draw C2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="local her2st data folder (default: download)")
    parser.add_argument("--weights", default=None, help="MobileNetV2 weights file (default: timm's, downloaded)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "_static" / "hero_her2st.png"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # the docs machines' cores are shared; one thread is faster there
    sepal.settings.verbosity = 0
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")

    adata = fit_and_predict(args.data, args.weights)
    val = gene_scores(adata, VAL)["pcc"]
    gene = str(val.idxmax())
    print(f"gene chosen on the validation section {VAL}: {gene} (PCC {val.max():.3f})")
    draw(adata, gene, args.out)


if __name__ == "__main__":
    main()
