"""Speed of SEPAL's two training stages on CPU (or GPU when there is one).

Usage::

    python benchmarks/tl_speed.py [--backbone vit_tiny_patch16_224] [--patch-size 64] [--batch-size 32]
                                  [--spots 600] [--epochs 3] [--graph-spots 4000] [--embedding-dim 768]

1. Local encoder: images/s of a real ``sepal.tl.fit_encoder`` training pass (patches cut from the slide images,
   resized, augmented, batched by ``SpotPatches`` + Lightning) against the bare model's forward + backward +
   Adam step on random tensors of the same shape, measured side by side in this run. Target: >= 80 %.
2. Spatial stage: seconds per training epoch of the graph network over 1-hop neighbourhoods of
   ``--graph-spots`` spots (a Visium hex lattice) with ``--embedding-dim`` embeddings. Target: < 2 s.
3. Patch memory: peak RSS while cutting one ``--memory-patch-size`` patch per spot for ``--memory-spots``
   spots (10 synthetic slides). Target: peak below the decoded images + 2 GiB.
"""

from __future__ import annotations

import argparse
import resource
import time

import anndata as ad
import numpy as np
import pandas as pd
import torch

import sepal_tl as sepal
from sepal_tl._graph import lattice_graph
from sepal_tl._validation import resolve_libraries
from sepal_tl.tl._backbones import load_backbone
from sepal_tl.tl._encoder import LocalEncoder
from sepal_tl.tl._gnn import SpatialHead
from sepal_tl.tl._neighbourhoods import hop_neighbourhoods
from sepal_tl.tl._patches import PatchGeometry, SpotPatches
from sepal_tl.tl._spatial import SpatialInputs, SpatialLoss
from sepal_tl.tl._training import regression_task, run_training


def bare_throughput(backbone: str, patch_size: int, batch_size: int, n_genes: int, steps: int) -> float:
    """Images/s of forward + MSE + backward + Adam on random tensors (no data pipeline)."""
    model = LocalEncoder(load_backbone(backbone, pretrained=False, image_size=patch_size)[0], n_genes)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 3, patch_size, patch_size)
    y = torch.randn(batch_size, n_genes)
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            start = time.perf_counter()
        pred, _ = model(x)
        loss = torch.nn.functional.mse_loss(pred, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return steps * batch_size / (time.perf_counter() - start)


def encoder_pipeline(args) -> tuple[float, float]:
    adata = sepal.datasets.synthetic(n_slides=2, n_spots=args.spots, n_genes=200, random_state=0)
    sepal.pp.run(adata, preset="synthetic", n_top=64, combat_key=None)
    adata.obs["split"] = "train"  # every spot trains; throughput is what we measure
    n_train = adata.n_obs
    model = sepal.tl.fit_encoder(
        adata,
        backbone=args.backbone,
        pretrained=False,
        patch_size=args.patch_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
    )
    seconds = [epoch["train_seconds"] for epoch in model.history["encoder"][1:]]  # first epoch warms up
    pipeline = n_train / float(np.median(seconds))
    bare = bare_throughput(
        args.backbone, args.patch_size, args.batch_size, model.n_genes, steps=n_train // args.batch_size
    )
    return pipeline, bare


def spatial_epoch(args) -> float:
    side = int(np.ceil(np.sqrt(2 * args.graph_spots)))
    rows, cols = np.meshgrid(np.arange(side), np.arange(2 * side), indexing="ij")
    keep = (rows + cols) % 2 == 0
    coords = np.column_stack([rows[keep], cols[keep]])[: args.graph_spots]
    frame = pd.DataFrame(
        {"array_row": coords[:, 0], "array_col": coords[:, 1]}, index=[str(i) for i in range(len(coords))]
    )
    adjacency, _ = lattice_graph(ad.AnnData(obs=frame), resolve_libraries(ad.AnnData(obs=frame), None))
    n, genes = len(coords), 256
    rng = np.random.default_rng(0)
    inputs = SpatialInputs(
        rng.normal(size=(n, args.embedding_dim)).astype(np.float32),
        rng.normal(size=(n, genes)).astype(np.float32),
        hop_neighbourhoods(adjacency, 1),
        coords,
        "hex",
    )
    head = SpatialHead(args.embedding_dim, genes, operator="GraphConv", hidden=(256,), pooling="sag")
    targets = torch.as_tensor(rng.normal(size=(n, genes)).astype(np.float32))
    task = regression_task(head, SpatialLoss(inputs, targets), lr=1e-4, weight_decay=0.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(n)), batch_size=256, shuffle=True)
    history, _ = run_training(task, loader, None, epochs=3, device=args.device, patience=None, trainer_kwargs=None)
    return float(np.median([epoch["train_seconds"] for epoch in history[1:]]))


def patch_memory(args) -> tuple[float, float, float]:
    """Peak RSS while cutting a patch for each of ``--memory-spots`` spots (one pass, batches of 64)."""
    n_slides = 10
    adata = sepal.datasets.synthetic(
        n_slides=n_slides, n_spots=args.memory_spots // n_slides, n_genes=8, random_state=0, sparse_fraction=0.0
    )
    geometry = PatchGeometry(patch_size=args.memory_patch_size)
    dataset = SpotPatches(adata, None, geometry)  # decodes / maps every slide's image once
    images = sum(source.shape[0] * source.shape[1] * 3 for source in dataset.sources.values()) / 2**30
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    loader = torch.utils.data.DataLoader(dataset, batch_size=64)
    for _ in loader:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return images, before, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_tiny_patch16_224")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--spots", type=int, default=600, help="spots per slide (2 slides) for the encoder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--graph-spots", type=int, default=4000)
    parser.add_argument("--embedding-dim", type=int, default=768)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory-spots", type=int, default=30_000)
    parser.add_argument("--memory-patch-size", type=int, default=224)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA: {torch.cuda.is_available()}")

    pipeline, bare = encoder_pipeline(args)
    print(
        f"\nlocal encoder ({args.backbone}, {args.patch_size} px, batch {args.batch_size}): "
        f"fit_encoder {pipeline:.0f} images/s vs bare model {bare:.0f} images/s -> {pipeline / bare:.0%}"
    )
    seconds = spatial_epoch(args)
    print(
        f"spatial stage: {seconds:.2f} s per epoch ({args.graph_spots} spots, {args.embedding_dim}-d embeddings, "
        "1 hop, GraphConv 256, SAGPooling, batch 256)"
    )
    images, before, peak = patch_memory(args)
    print(
        f"patches for {args.memory_spots} spots at {args.memory_patch_size} px: decoded images {images:.2f} GiB; "
        f"peak RSS {before:.2f} GiB before the pass, {peak:.2f} GiB after "
        f"(peak - decoded images = {peak - images:.2f} GiB)"
    )


if __name__ == "__main__":
    main()
