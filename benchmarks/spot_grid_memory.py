"""Peak memory of ``sepal.io.spot_grid`` on a plain (one-level, uncompressed) 30k x 30k RGB TIFF.

Side by side, each in a fresh subprocess so that peaks do not mix:

- ``import``: ``import sepal_tl`` alone (the baseline every process pays);
- ``spot_grid``: ``sepal.io.spot_grid(path, spot_diameter_px=90)`` as it reads the tissue mask now (every k-th
  row and column read from the file, then filtered);
- ``whole decode``: the previous approach, the whole level decoded (``tifffile``'s ``asarray``) and then
  downscaled, followed by the same tissue mask.

Peak memory is the child's peak resident set size (``VmHWM`` of ``/proc/self/status``, Linux; ``ru_maxrss`` would
include the parent's pages inherited at fork). The TIFF (2.7 GB: white glass with a pink
tissue disc and purple nuclei) is written once to ``/tmp`` and reused; pass ``--side`` for another size.

Run: ``.venv/bin/python benchmarks/spot_grid_memory.py``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_CHILD = {
    "import": "import sepal_tl",
    "spot_grid": "import sepal_tl as sepal\nadata = sepal.io.spot_grid(PATH, spot_diameter_px=90)\nN = adata.n_obs",
    "whole decode": """
import tifffile
import sepal_tl as sepal
from sepal_tl.io._images import _tiff_to_yxc, downscale, scaled_size
from sepal_tl.io._spot_grid import tissue_mask
with tifffile.TiffFile(PATH) as tif:
    series = tif.series[0]
    array = _tiff_to_yxc(series.asarray(), series.axes)
target, scale = scaled_size(array.shape[:2], 2667)
N = int(tissue_mask(downscale(array, target), spot_diameter_px=90 * scale).sum())
""",
}
_MEASURE = """
import time
PATH = {path!r}
N = 0
start = time.perf_counter()
{body}
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(__import__("json").dumps({{"seconds": time.perf_counter() - start,
    "peak_mib": int(status["VmHWM"].split()[0]) / 1024, "n": int(N)}}))
"""


def write_tiff(path: Path, side: int) -> None:
    """A plain RGB TIFF, written through a memory map in row blocks (never held in memory)."""
    import tifffile

    image = tifffile.memmap(path, shape=(side, side, 3), dtype=np.uint8, photometric="rgb")
    rng = np.random.default_rng(0)
    cols = np.arange(side)
    for start in range(0, side, 1000):
        rows = np.arange(start, min(start + 1000, side))[:, None]
        block = np.full((rows.shape[0], side, 3), 242, dtype=np.uint8)
        tissue = (rows - side / 2) ** 2 + (cols[None, :] - side / 2) ** 2 < (0.4 * side) ** 2
        block[tissue] = (214, 140, 180)
        nuclei = tissue & (rng.random(tissue.shape) < 0.05)
        block[nuclei] = (120, 70, 150)
        image[start : start + rows.shape[0]] = block
    image.flush()
    del image


def measure(name: str, path: Path) -> dict:
    code = _MEASURE.format(path=str(path), body=_CHILD[name])
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=30_000)
    parser.add_argument("--path", default=None)
    args = parser.parse_args()
    path = Path(args.path or f"/tmp/sepal_plain_{args.side}.tif")
    if not path.exists():
        start = time.perf_counter()
        write_tiff(path, args.side)
        print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - start:.0f} s")
    print(f"| step ({args.side} x {args.side} plain TIFF) | wall time (s) | peak RSS (MiB) |")
    print("|---|---:|---:|")
    for name in _CHILD:
        result = measure(name, path)
        print(f"| {name} | {result['seconds']:.1f} | {result['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
