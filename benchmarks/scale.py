"""Visium-HD-size slides on one machine: wall time and peak memory of every step at 50k, 200k and 500k bins.

Usage::

    nice -n 10 python benchmarks/scale.py                        # 50k, 200k and 500k bins, one process each
    python benchmarks/scale.py --sizes 50000 --out /tmp/scale.json

Each size runs in its own process (``--child``), so that its peak RSS is its own. A synthetic slide with Visium
HD's geometry is written first (not timed as part of the pipeline): a square lattice of 8 µm bins (29.2
full-resolution pixels at 0.274 µm/px), 1,000 genes of negative-binomial counts with spatial patterns, about
95 % zeros, as a sparse ``.h5ad``, and a synthetic H&E of matching size (about 20,600 × 20,600 px at 500k bins) as
an uncompressed TIFF that the patches are memory-mapped from. Then, each step timed on its own — wall time,
CPU time of the process (all its threads; on a machine shared with other jobs the CPU time is the steadier
number) and peak RSS (the process's high-water mark is reset before each step through
``/proc/self/clear_refs``, so a step's peak includes what earlier steps left in memory):

read (sparse counts) → filter → TPM → log2 → denoise → Moran selection (256 genes) → lattice graph + 1-hop
neighbourhoods → ``embed`` (tiny backbone, 32 px patches) → linear Δ head on the frozen embeddings → one
spatial-stage epoch on the frozen embeddings → ``predict``.

A second measurement gives the patch loader's images/s with 0 and 2 DataLoader workers (cut + resize +
normalise from the memory-mapped TIFF, no model). Targets (issue 11): the whole pipeline (every step above)
under 10 minutes and 16 GiB at 500k bins; growth close to linear in bins.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import tifffile
from scipy import sparse

PIXEL_UM = 0.2737  # full-resolution microns per pixel of a Visium HD CytAssist-registered H&E
BIN_UM = 8.0
PITCH_PX = BIN_UM / PIXEL_UM  # 29.2 px between bin centres
MARGIN_PX = 64
LIBRARY = "hd"
FILTER = {  # Visium HD bins hold ~100 counts: thresholds of the HD bin scale, not of 55 µm Visium spots
    "min_counts_spot": 5,
    "max_counts_spot": 100_000,
    "min_counts_gene": 100,
    "max_counts_gene": 100_000_000,
    "min_frac_slide": 0.01,
    "min_frac_global": 0.01,
}
BACKBONE, PATCH_SIZE = "test_vit", 32  # timm's smallest ViT (64-d): the cost of the data path, not of a model


def _fields(rows: np.ndarray, cols: np.ndarray, side: int, n_fields: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_bins, n_fields)`` smooth spatial patterns in [-1, 1] (a few low-frequency waves each)."""
    out = np.zeros((rows.size, n_fields), dtype=np.float32)
    for k in range(n_fields):
        for _ in range(3):
            freq = rng.uniform(1.0, 4.0, size=2) * 2 * np.pi / side
            phase = rng.uniform(0, 2 * np.pi)
            out[:, k] += np.cos(freq[0] * rows + freq[1] * cols + phase).astype(np.float32) / 3
    return out


def write_slide(n_bins: int, n_genes: int, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Counts (sparse ``.h5ad``) and H&E (memory-mappable TIFF) of a square-lattice slide of ``n_bins`` bins."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_bins)))
    index = np.arange(n_bins)
    rows, cols = index // side, index % side
    n_fields = 8
    fields = _fields(rows, cols, side, n_fields, rng)
    # genes: log-normal base rates tuned for ~95 % zeros, half of them following one spatial pattern
    base = np.exp(rng.normal(-3.6, 1.4, size=n_genes)).astype(np.float32)
    pattern = rng.integers(0, n_fields, size=n_genes)
    strength = np.where(rng.random(n_genes) < 0.5, rng.uniform(0.5, 1.5, size=n_genes), 0.0).astype(np.float32)
    depth = np.exp(rng.normal(0, 0.4, size=n_bins)).astype(np.float32)
    chunks = []
    for start in range(0, n_bins, 20_000):
        stop = min(start + 20_000, n_bins)
        rate = depth[start:stop, None] * base[None, :] * np.exp(strength * fields[start:stop][:, pattern])
        # negative binomial (dispersion 0.5) as a gamma-Poisson mixture
        counts = rng.poisson(rng.gamma(2.0, rate / 2.0)).astype(np.float32)
        chunks.append(sparse.csr_matrix(counts))
    x = sparse.vstack(chunks, format="csr")
    genes = [f"gene{g:04d}" for g in range(n_genes)]
    var = pd.DataFrame({"length": rng.integers(500, 5000, size=n_genes)}, index=genes)
    obs = pd.DataFrame(
        {"array_row": rows, "array_col": cols, "library_id": pd.Categorical([LIBRARY] * n_bins)},
        index=[f"bin{i}" for i in range(n_bins)],
    )
    centres = MARGIN_PX + (np.column_stack([cols, rows]) + 0.5) * PITCH_PX  # x = column, y = row
    height = width = int(np.ceil(2 * MARGIN_PX + side * PITCH_PX))
    tif = folder / "he.tif"
    adata = ad.AnnData(x, obs=obs, var=var, obsm={"spatial": centres})
    adata.uns["spatial"] = {
        LIBRARY: {
            "images": {},
            "scalefactors": {"spot_diameter_fullres": PITCH_PX, "bin_size_um": BIN_UM},
            "metadata": {"source_image_path": str(tif)},
        }
    }
    split = np.where(rows < 0.7 * side, "train", np.where(rows < 0.85 * side, "val", "test"))
    adata.obs["split"] = pd.Categorical(split)
    h5ad = folder / "counts.h5ad"
    adata.write_h5ad(h5ad)
    _write_he(tif, height, width, side, fields[:, 0], rng)
    return h5ad, tif


def _write_he(path: Path, height: int, width: int, side: int, field: np.ndarray, rng: np.random.Generator) -> None:
    """A pink/purple H&E-like image whose hue follows ``field`` bin by bin, with pixel noise, written strip-wise."""
    image = tifffile.memmap(path, shape=(height, width, 3), dtype=np.uint8, photometric="rgb")
    grid = np.full((side + 2, side + 2), 0.0, dtype=np.float32)
    grid[1:-1, 1:-1].flat[: field.size] = field
    pink, purple = np.array([230, 160, 200], np.float32), np.array([110, 60, 160], np.float32)
    y_bin = np.clip(((np.arange(height) - MARGIN_PX) // PITCH_PX).astype(int) + 1, 0, side + 1)
    x_bin = np.clip(((np.arange(width) - MARGIN_PX) // PITCH_PX).astype(int) + 1, 0, side + 1)
    for start in range(0, height, 512):
        stop = min(start + 512, height)
        mix = (grid[y_bin[start:stop]][:, x_bin] + 1)[..., None] / 2
        strip = pink + (purple - pink) * mix + rng.normal(0, 12, size=(stop - start, width, 1)).astype(np.float32)
        image[start:stop] = np.clip(strip, 0, 255).astype(np.uint8)
    image.flush()
    del image


def _peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / (1 << 20)
    return float("nan")


class Steps:
    """Times each step and records the process's peak RSS during it."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    @contextmanager
    def __call__(self, name: str, **info):
        Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark to the current RSS
        start, cpu = time.perf_counter(), time.process_time()
        yield info
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        row = {"step": name, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "peak_rss_gib": _peak_gib()}
        self.rows.append({**row, "peak_rss_gib": round(row["peak_rss_gib"], 2), **info})
        print(f"  {name:<28} {seconds:8.1f} s {cpu:8.1f} s CPU {row['peak_rss_gib']:6.2f} GiB  {info}", flush=True)


def loader_throughput(adata: ad.AnnData, n: int, patch_size: int, workers: int) -> float:
    """Images/s of the patch loader (cut from the memory-mapped TIFF, resize, normalise) with ``workers``."""
    import torch

    from sepal_tl.tl._patches import PatchGeometry, SpotPatches

    dataset = SpotPatches(adata, geometry=PatchGeometry(patch_size=patch_size), indices=np.arange(n))
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    return n / (time.perf_counter() - start)


def run_size(n_bins: int, n_genes: int, folder: Path, threads: int) -> dict:
    """The whole pipeline on one synthetic slide of ``n_bins`` bins; returns the steps and the machine state."""
    import torch

    import sepal_tl as sepal
    from sepal_tl._graph import lattice_graph
    from sepal_tl._validation import resolve_libraries
    from sepal_tl.tl._neighbourhoods import hop_neighbourhoods

    torch.set_num_threads(threads)
    sepal.settings.verbosity = 0
    step = Steps()
    with step("write synthetic slide"):
        h5ad, tif = write_slide(n_bins, n_genes, folder)
    with step("read sparse counts", file_mib=round(h5ad.stat().st_size / (1 << 20))) as info:
        adata = ad.read_h5ad(h5ad)
        info["zeros"] = round(1 - adata.X.nnz / (adata.n_obs * adata.n_vars), 3)
    lengths = adata.var["length"]
    with step("filter") as info:
        sepal.pp.filter(adata, **FILTER)
        info["kept"] = f"{adata.n_obs} x {adata.n_vars}"
    with step("tpm"):
        sepal.pp.tpm(adata, gene_lengths=lengths)
    with step("log2"):
        sepal.pp.log2p(adata)
    with step("denoise"):
        sepal.pp.denoise(adata, layer="log2tpm")
    with step("moran selection (256 genes)"):
        sepal.pp.select_genes(adata, n_top=256, subset=True)
    with step("lattice graph + 1-hop"):
        adjacency, _ = lattice_graph(adata, resolve_libraries(adata, "library_id"), geometry="square")
        hop_neighbourhoods(adjacency, 1)
    with step(f"embed ({BACKBONE}, {PATCH_SIZE} px)"):
        sepal.tl.embed(adata, BACKBONE, pretrained=False, patch_size=PATCH_SIZE, batch_size=256, key_added="X_tiny")
    step.rows[-1]["images_per_s"] = round(adata.n_obs / step.rows[-1]["seconds"])
    with step("local head (frozen)"):
        model = sepal.tl.fit_encoder(adata, embedding_key="X_tiny", device="cpu")
    with step("spatial stage, 1 epoch"):
        sepal.tl.fit_spatial(
            adata, model, embedding_key="X_tiny", epochs=1, batch_size=1024, hidden=(64,), device="cpu"
        )
    with step("predict"):
        sepal.tl.predict(adata, model, embedding_key="X_tiny", device="cpu")
    rows = step.rows
    pipeline = [r for r in rows if r["step"] != "write synthetic slide"]
    throughput = {
        f"{size} px, {workers} workers": round(loader_throughput(adata, min(n, adata.n_obs), size, workers))
        for size, n in ((PATCH_SIZE, 20_000), (224, 3_000))
        for workers in (0, 2)
    }
    return {
        "n_bins": n_bins,
        "load_average_1min": os.getloadavg()[0],
        "n_genes": n_genes,
        "threads": threads,
        "steps": rows,
        "pipeline_seconds": round(sum(r["seconds"] for r in pipeline), 1),
        "pipeline_cpu_seconds": round(sum(r["cpu_seconds"] for r in pipeline), 1),
        "pipeline_peak_rss_gib": max(r["peak_rss_gib"] for r in pipeline),
        "loader_images_per_s": throughput,
    }


def _table(results: list[dict]) -> str:
    sizes = [r["n_bins"] for r in results]
    lines = [
        "| step | " + " | ".join(f"{n // 1000}k: wall s | CPU s | peak GiB" for n in sizes) + " |",
        "|---|" + "---:|---:|---:|" * len(sizes),
    ]
    for i, row in enumerate(results[0]["steps"]):
        cells = [
            f"{s['seconds']:.1f} | {s['cpu_seconds']:.1f} | {s['peak_rss_gib']:.2f}"
            for s in (r["steps"][i] for r in results)
        ]
        lines.append(f"| {row['step']} | " + " | ".join(cells) + " |")
    total = [
        f"**{r['pipeline_seconds']:.0f}** | **{r['pipeline_cpu_seconds']:.0f}** | **{r['pipeline_peak_rss_gib']:.2f}**"
        for r in results
    ]
    lines.append("| whole pipeline (without writing the slide) | " + " | ".join(total) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 500_000])
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch / numba / OpenMP threads (1: the cores are shared with others)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sepal_scale"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (n_bins,) = args.sizes
        folder = args.workdir / str(n_bins)
        folder.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(run_size(n_bins, args.genes, folder, args.threads), indent=1))
        return
    results = []
    for n_bins in args.sizes:
        print(f"{n_bins} bins", flush=True)
        part = args.out.with_suffix(f".{n_bins}.json")
        command = [sys.executable, __file__, "--child", "--sizes", str(n_bins), "--genes", str(args.genes)]
        command += ["--threads", str(args.threads), "--workdir", str(args.workdir), "--out", str(part)]
        threads = {name: str(args.threads) for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS")}
        subprocess.run(command, check=True, env={**os.environ, **threads})
        results.append(json.loads(part.read_text()))
        part.unlink()
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    print(_table(results))
    for r in results:
        print(f"{r['n_bins']} bins: patch loader images/s by DataLoader workers: {r['loader_images_per_s']}")


if __name__ == "__main__":
    main()
