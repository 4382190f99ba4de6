"""The schematic of SEPAL's two stages on the method page (``docs/_static/method_schematic.png``).

Usage::

    python docs/_scripts/method_schematic.py [--out docs/_static/method_schematic.png]

Boxes and arrows only (matplotlib); the notation is that of ``docs/method.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

LOCAL, SPATIAL, OUTPUT = "#dbe9f6", "#fde3c8", "#dff0d8"


def box(ax: Axes, x: float, y: float, w: float, h: float, text: str, colour: str) -> None:
    """A rounded box centred on (x, y) with a centred label."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=colour, ec="0.25", lw=1
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=9.5)


def arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], text: str = "") -> None:
    """An arrow from ``start`` to ``end``, with an optional label above its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, lw=1.2, color="0.2"))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.13, text, ha="center", va="bottom", fontsize=8.5)


def patch(ax: Axes, x: float, y: float, size: float) -> None:
    """A stand-in H&E patch: pink tissue with purple nuclei, and the spot's outline."""
    rng = np.random.default_rng(3)
    ax.add_patch(Rectangle((x - size / 2, y - size / 2), size, size, fc="#f2c6d8", ec="0.25", lw=1))
    for cx, cy in rng.uniform(-0.42, 0.42, size=(40, 2)) * size:
        ax.add_patch(Circle((x + cx, y + cy), size * rng.uniform(0.025, 0.05), fc="#6a3d9a", alpha=0.75, lw=0))
    ax.add_patch(Circle((x, y), size * 0.45, fc="none", ec="0.1", lw=1, ls="--"))


def hex_graph(ax: Axes, x: float, y: float, r: float) -> None:
    """Spot i and its six lattice neighbours (one hop on Visium), with the graph's edges."""
    angles = np.deg2rad(np.arange(0, 360, 60))
    nodes = [(x, y)] + [(x + r * np.cos(a), y + r * np.sin(a)) for a in angles]
    for k, (nx, ny) in enumerate(nodes[1:], start=1):
        ax.plot([x, nx], [y, ny], color="0.4", lw=0.9, zorder=1)
        mx, my = nodes[k % 6 + 1]
        ax.plot([nx, mx], [ny, my], color="0.4", lw=0.9, zorder=1)
    for k, (nx, ny) in enumerate(nodes):
        ax.add_patch(Circle((nx, ny), r * 0.28, fc="#e6550d" if k == 0 else "#fdae6b", ec="0.2", lw=0.8, zorder=2))
    ax.text(x, y, "i", ha="center", va="center", fontsize=9, color="white", zorder=3, weight="bold")
    ax.text(x, y - 1.45 * r, "spot i and its neighbours $N_m(i)$", ha="center", va="top", fontsize=8.5)


def draw(out: Path) -> None:
    """Stage 1 on the top row, stage 2 on the bottom row, their sum on the right."""
    fig, ax = plt.subplots(figsize=(11, 4.6))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 4.6)
    ax.set_axis_off()

    ax.text(0.1, 4.4, "Stage 1: local encoder (fit_encoder)", fontsize=11, weight="bold", va="top")
    patch(ax, 0.9, 3.2, 1.0)
    ax.text(0.9, 2.55, "H&E patch $X_i$", ha="center", va="top", fontsize=8.5)
    box(ax, 3.0, 3.2, 1.7, 0.8, "image encoder $I$\n(ViT, UNI, ...)", LOCAL)
    box(ax, 5.6, 3.2, 1.8, 0.8, "linear layer $L$", LOCAL)
    arrow(ax, (1.45, 3.2), (2.12, 3.2))
    arrow(ax, (3.88, 3.2), (4.67, 3.2), "$e_i = I(X_i)$")
    box(ax, 8.0, 3.2, 2.0, 0.8, r"local prediction" + "\n" + r"$\Delta\hat y^{\mathrm{loc}}_i = L(e_i)$", LOCAL)
    arrow(ax, (6.53, 3.2), (6.97, 3.2))

    ax.text(4.0, 2.05, "Stage 2: spatial graph network (fit_spatial)", fontsize=11, weight="bold", va="top")
    hex_graph(ax, 0.95, 1.0, 0.42)
    box(ax, 3.0, 0.95, 1.7, 0.95, "node features\n$x_j = e_j + \\mathrm{PE}(p_j - p_i)$", SPATIAL)
    box(ax, 5.6, 0.95, 1.8, 0.95, "graph layers (ELU),\nreadout, linear", SPATIAL)
    box(ax, 8.0, 0.95, 2.0, 0.8, "correction $\\hat s_i$", SPATIAL)
    arrow(ax, (1.6, 0.95), (2.12, 0.95))
    arrow(ax, (3.88, 0.95), (4.67, 0.95))
    arrow(ax, (6.53, 0.95), (6.97, 0.95))
    arrow(ax, (3.0, 2.78), (3.0, 1.45), "$e_j$, frozen")

    box(
        ax,
        10.25,
        2.08,
        1.35,
        1.25,
        "$\\hat y_i =$\n$\\Delta\\hat y^{\\mathrm{loc}}_i + \\hat s_i$\n$+\\ \\bar y_\\mathrm{train}$",
        OUTPUT,
    )
    arrow(ax, (9.03, 3.0), (9.55, 2.55))
    arrow(ax, (9.03, 1.15), (9.55, 1.6))
    ax.text(
        5.5,
        0.08,
        "Both stages learn $\\Delta y_i = y_i - \\bar y_\\mathrm{train}$, the difference from the training spots' mean.",
        ha="center",
        va="bottom",
        fontsize=9,
        style="italic",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=160, bbox_inches="tight")


def main() -> None:
    """Write the schematic."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "_static" / "method_schematic.png"
    )
    draw(parser.parse_args().out)


if __name__ == "__main__":
    main()
