"""Time each step of ``sepal.pp`` on Visium-size synthetic data and check the median filter against a loop.

Usage::

    python benchmarks/pp_speed.py [--slides 2] [--spots 4000] [--genes 1000] [--zero-fraction 0.33] [--repeats 3]

Prints a markdown table (best of ``--repeats`` wall times, peak traced memory per step) and the speed-up of
``sepal.pp.denoise`` over a straightforward per-spot loop, measured side by side in this run, after checking
that both give identical output.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
from _naive import loop_median_filter

import sepal_tl as sepal
from sepal_tl._keys import HIGHLY_SPATIAL
from sepal_tl._validation import check_array_coords, resolve_libraries


def best_of(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_mib(func) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    func()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=2)
    parser.add_argument("--spots", type=int, default=4000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--zero-fraction", type=float, default=0.33)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    raw = sepal.datasets.synthetic(
        n_slides=args.slides,
        n_spots=args.spots,
        n_genes=args.genes,
        zero_fraction=args.zero_fraction,
        random_state=0,
        pitch_px=32,  # small images: they play no part in preprocessing
    )
    generate = time.perf_counter() - start
    zeros = 1 - raw.X.count_nonzero() / np.prod(raw.shape)
    print(
        f"data: {args.slides} slides x {args.spots} spots x {args.genes} genes, {zeros:.1%} zeros "
        f"(generated in {generate:.1f} s)\n"
    )
    thresholds = {
        "min_counts_spot": 0,
        "max_counts_spot": None,
        "min_counts_gene": 0,
        "max_counts_gene": None,
        "min_frac_slide": None,
        "min_frac_global": None,
    }

    def fresh():
        return raw.copy()

    # Inputs of each step, prepared outside the timed region; in-place calls (copy=False) so that no copy of
    # the AnnData (and its images) is timed. Steps that subset get a fresh copy per repeat.
    filtered = fresh()
    sepal.pp.filter(filtered, **thresholds)
    sepal.pp.tpm(filtered)
    sepal.pp.log2p(filtered)
    sepal.pp.denoise(filtered, layer="log2tpm")
    sepal.pp.select_genes(
        filtered, n_top=min(256, args.genes)
    )  # warm-up: squidpy's numba kernels compile once per install
    selected = filtered[:, filtered.var[HIGHLY_SPATIAL]].copy()
    batch_key = "patient" if selected.obs["patient"].nunique() > 1 else "library_id"
    inputs = {name: [fresh() for _ in range(args.repeats)] for name in ("filter", "run (whole pipeline)")}

    steps = {
        "filter": lambda: sepal.pp.filter(inputs["filter"].pop(), **thresholds),
        "tpm": lambda: sepal.pp.tpm(filtered),
        "log2p": lambda: sepal.pp.log2p(filtered),
        "denoise": lambda: sepal.pp.denoise(filtered, layer="log2tpm"),
        "select_genes (Moran's I)": lambda: sepal.pp.select_genes(filtered, n_top=min(256, args.genes)),
        f"combat (256 genes, by {batch_key})": lambda: sepal.pp.combat(selected, key=batch_key),
        "run (whole pipeline)": lambda: sepal.pp.run(
            inputs["run (whole pipeline)"].pop(), preset="visium", n_top=min(256, args.genes), **thresholds
        ),
    }
    print(f"| step | wall time (s, best of {args.repeats}) | peak traced memory (MiB) |")
    print("|---|---:|---:|")
    for name, func in steps.items():
        seconds = best_of(func, args.repeats)
        if name in inputs:
            inputs[name].append(fresh())
        print(f"| {name} | {seconds:.3f} | {peak_mib(func):.0f} |")

    # The median filter against the plain loop, side by side, on every slide.
    libraries = resolve_libraries(filtered, "library_id")
    coords = check_array_coords(filtered)
    values = filtered.layers["log2tpm"].toarray()
    fast = best_of(lambda: sepal.pp.denoise(filtered, layer="log2tpm"), args.repeats)
    start = time.perf_counter()
    loop_out = np.empty_like(values)
    for lib in libraries.cat.categories:
        idx = np.flatnonzero((libraries == lib).to_numpy())
        loop_out[idx] = loop_median_filter(values[idx], coords[idx])
    slow = time.perf_counter() - start
    identical = np.array_equal(filtered.layers["denoised"], loop_out)
    print(
        f"\ndenoise: {fast:.3f} s vectorised vs {slow:.2f} s per-spot loop -> {slow / fast:.0f}x faster; "
        f"identical output: {identical}"
    )
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if not identical:
        raise SystemExit("the vectorised median filter and the loop disagree")


if __name__ == "__main__":
    main()
