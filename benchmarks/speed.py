"""Wall time and peak memory of every step of the pipeline at two sizes, with naive ratios where they make sense.

Usage::

    python benchmarks/speed.py [--sizes visium stnet] [--genes 1000] [--naive]

Sizes: ``visium`` = 2 slides x 4,000 spots; ``stnet`` = 10 slides x 3,000 spots (30,000 spots, STNet's scale).
Per step: read (h5ad round trip of the raw data), filter, TPM, log2, denoise, Moran selection, ComBat, patch
extraction (one pass at 224 px), one encoder epoch (``vit_tiny_patch16_224`` at 64 px, from scratch), graph
building, one spatial epoch, predict. Peak memory is the step's peak resident memory above what the process
held when it started (sampled every 5 ms). ``--naive`` adds, on the Visium size, the plain median-filter loop, squidpy
Moran's I with 100 permutations (the reference ran 1,000, unused) and the reference's per-spot graph objects.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import anndata as ad
import numpy as np
import psutil
import torch
from _naive import loop_median_filter, per_spot_graphs

import sepal_tl as sepal
from sepal_tl._compat import import_squidpy
from sepal_tl._graph import lattice_graph
from sepal_tl._keys import PREDICTION, embedding_obsm
from sepal_tl._validation import check_array_coords, resolve_libraries
from sepal_tl.tl._neighbourhoods import hop_neighbourhoods
from sepal_tl.tl._patches import PatchGeometry, SpotPatches

SIZES = {"visium": (2, 4000), "stnet": (10, 3000)}
TINY = {"backbone": "vit_tiny_patch16_224", "pretrained": False, "patch_size": 64, "device": "cpu"}


def measure(func):
    """(seconds, peak RSS increase in MiB, result) of one call.

    Memory is sampled from a background thread every 5 ms (no allocation tracing, so timings are not slowed):
    the step's peak resident memory above what the process held when the step started.
    """
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], process.memory_info().rss)
    return seconds, (peak[0] - base) / 2**20, result


def run_size(n_slides: int, n_spots: int, n_genes: int, naive: bool) -> list[tuple[str, float, float, str]]:
    raw = sepal.datasets.synthetic(
        n_slides=n_slides, n_spots=n_spots, n_genes=n_genes, zero_fraction=0.33, random_state=0
    )
    codes = raw.obs["library_id"].cat.codes.to_numpy()
    raw.obs["split"] = np.where(codes < max(1, n_slides - 1), "train", "val")
    rows: list[tuple[str, float, float, str]] = []

    def step(name: str, func, note: str = ""):
        seconds, peak, result = measure(func)
        rows.append((name, seconds, peak, note))
        return result

    with tempfile.TemporaryDirectory() as tmp:
        raw.write_h5ad(Path(tmp) / "raw.h5ad")
        adata = step("read (h5ad)", lambda: ad.read_h5ad(Path(tmp) / "raw.h5ad"))
    step("filter", lambda: sepal.pp.filter(adata, min_counts_spot=0, min_counts_gene=0))
    step("tpm", lambda: sepal.pp.tpm(adata))
    step("log2p", lambda: sepal.pp.log2p(adata))
    step("denoise", lambda: sepal.pp.denoise(adata, layer="log2tpm"))
    sepal.pp.select_genes(adata.copy(), n_top=8)  # warm-up: squidpy compiles its numba kernels once per install
    step("select_genes (Moran)", lambda: sepal.pp.select_genes(adata, n_top=min(256, adata.n_vars), subset=True))
    batch_key = "patient" if adata.obs["patient"].nunique() > 1 else "library_id"
    step(f"combat (by {batch_key})", lambda: sepal.pp.combat(adata, key=batch_key))

    dataset = SpotPatches(adata, None, PatchGeometry(patch_size=224))
    loader = torch.utils.data.DataLoader(dataset, batch_size=64)
    step("patch extraction (224 px, one pass)", lambda: sum(len(batch) for batch in loader))
    model = step(
        "encoder epoch (vit_tiny, 64 px) + embedding",
        lambda: sepal.tl.fit_encoder(adata, **TINY, epochs=1, batch_size=64),
        "includes one validation pass and embedding every spot",
    )
    libraries = resolve_libraries(adata, "library_id")
    coords = check_array_coords(adata)
    neighbourhoods = step("graph building (1 hop)", lambda: hop_neighbourhoods(lattice_graph(adata, libraries)[0], 1))
    step(
        "spatial epoch",
        lambda: sepal.tl.fit_spatial(adata, model, epochs=1, hidden=(256,), device="cpu"),
        "embeddings reused from the encoder step",
    )
    step("predict (both stages)", lambda: sepal.tl.predict(adata, model, device="cpu"))

    if naive:
        values = adata.layers["log2tpm"].toarray()
        lib_codes = libraries.cat.codes.to_numpy()
        loop_seconds = 0.0
        for code in np.unique(lib_codes):
            idx = np.flatnonzero(lib_codes == code)
            start = time.perf_counter()
            loop_median_filter(values[idx], coords[idx])
            loop_seconds += time.perf_counter() - start
        ours = next(r[1] for r in rows if r[0] == "denoise")
        rows.append(
            ("naive: median filter per-spot loop", loop_seconds, float("nan"), f"{loop_seconds / ours:.0f}x ours")
        )
        sq = import_squidpy()
        slide = adata[lib_codes == 0].copy()
        slide.obsp["spatial_connectivities"] = lattice_graph(slide, resolve_libraries(slide, "library_id"))[0]
        start = time.perf_counter()
        sq.gr.spatial_autocorr(slide, mode="moran", layer="denoised", n_perms=100, copy=True, show_progress_bar=False)
        perm = (time.perf_counter() - start) * len(np.unique(lib_codes))
        ours = next(r[1] for r in rows if r[0].startswith("select_genes"))
        rows.append(("naive: Moran with 100 permutations", perm, float("nan"), f"{perm / ours:.0f}x ours"))
        embeddings = np.asarray(adata.obsm[embedding_obsm(PREDICTION)], dtype=np.float32)
        seconds, peak, graphs = measure(lambda: per_spot_graphs(embeddings, neighbourhoods, coords))
        copied = sum(g.x.numel() for g in graphs) * 4 / 2**20
        ours = next(r[1] for r in rows if r[0].startswith("graph building"))
        rows.append(
            (
                "naive: one Data per spot (features copied)",
                seconds,
                peak,
                f"{seconds / ours:.0f}x ours; {copied:.0f} MiB of copied features",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--naive", action="store_true")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the spot counts (smoke tests)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; genes: {args.genes}\n")
    results = {}
    for name in args.sizes:
        n_slides, n_spots = SIZES[name]
        n_spots = max(50, int(n_spots * args.scale))
        start = time.perf_counter()
        results[name] = run_size(n_slides, n_spots, args.genes, args.naive and name == "visium")
        print(f"{name}: {n_slides} x {n_spots} spots done in {time.perf_counter() - start:.0f} s", flush=True)
    names = list(results)
    header = " | ".join(f"{n} s | {n} +peak MiB" for n in names)
    print(f"\n| step | {header} | notes |")
    print("|---|" + "---:|---:|" * len(names) + "---|")
    steps = list(dict.fromkeys(r[0] for rows in results.values() for r in rows))
    for label in steps:
        cells, notes = [], []
        for n in names:
            row = next((r for r in results[n] if r[0] == label), None)
            if row is None:
                cells += ["", ""]
                continue
            cells += [f"{row[1]:.2f}", "" if np.isnan(row[2]) else f"{row[2]:.0f}"]
            if row[3]:
                notes.append(f"{n}: {row[3]}")
        print(f"| {label} | " + " | ".join(cells) + f" | {'; '.join(notes)} |")


if __name__ == "__main__":
    main()
