"""Shrink the PNG figures stored in executed tutorial notebooks, in place.

The tutorials store their outputs (the docs do not execute them), and their 150-dpi figures over H&E images make
PNGs of about a megabyte each. Each ``image/png`` output is re-encoded with an adaptive 256-colour palette
(Pillow's median cut, no dithering), keeping its size in pixels and its dpi, which is visually the same for these
plots and 3-5 times smaller. Run after executing a notebook::

    python scripts/compress_notebook_figures.py tutorials/*.ipynb
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

from PIL import Image


def compress_png(data: bytes) -> bytes:
    """``data`` as a 256-colour PNG with the same pixel size and dpi, or ``data`` itself when that is not smaller."""
    image = Image.open(io.BytesIO(data))
    dpi = image.info.get("dpi")
    palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True, **({"dpi": dpi} if dpi else {}))
    return out.getvalue() if out.tell() < len(data) else data


def compress_notebook(path: Path) -> tuple[int, int]:
    """Re-encode every stored PNG of one notebook; returns its size in bytes before and after."""
    before = path.stat().st_size
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                png = base64.b64decode(data["image/png"])
                data["image/png"] = base64.b64encode(compress_png(png)).decode("ascii")
    text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    tmp = path.with_suffix(".ipynb.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return before, path.stat().st_size


if __name__ == "__main__":
    for name in sys.argv[1:]:
        old, new = compress_notebook(Path(name))
        print(f"{name}: {old / 2**20:.2f} MiB -> {new / 2**20:.2f} MiB")
