"""Spot lattice geometry: Visium's hexagonal grid or legacy ST's square grid."""

from __future__ import annotations

from typing import Literal

import numpy as np

Geometry = Literal["hex", "square"]
GEOMETRIES = ("hex", "square")


def infer_geometry(array_coords: np.ndarray) -> Geometry:
    """Tell a Visium hex lattice from a legacy-ST square lattice by its array coordinates.

    Visium indexes its hexagonal grid with "doubled" columns: every spot has ``array_row + array_col``
    even (neighbours at offsets ``(0, ±2)`` and ``(±1, ±1)``). Legacy ST uses a plain square grid where
    both parities occur.
    """
    parity = np.unique((array_coords[:, 0] + array_coords[:, 1]) % 2)
    return "hex" if parity.size == 1 and array_coords.shape[0] > 1 else "square"


def resolve_geometry(geometry: str, array_coords: np.ndarray) -> Geometry:
    """Return ``geometry`` or, for ``"auto"``, the geometry inferred from the coordinates."""
    if geometry == "auto":
        return infer_geometry(array_coords)
    if geometry not in GEOMETRIES:
        msg = f"geometry={geometry!r} is not supported; choose 'auto', 'hex' (Visium) or 'square' (legacy ST)."
        raise ValueError(msg)
    return geometry  # type: ignore[return-value]


def lattice_positions(array_coords: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Spot centres in units of the spot pitch, from integer array coordinates.

    Visium's doubled-column hex indices map to ``x = col / 2``, ``y = row * sqrt(3) / 2`` so that all six
    neighbours lie at distance 1; the legacy ST square grid maps to ``x = col``, ``y = row``.
    """
    rows = array_coords[:, 0].astype(float)
    cols = array_coords[:, 1].astype(float)
    if geometry == "hex":
        return np.column_stack([cols / 2, rows * np.sqrt(3) / 2])
    return np.column_stack([cols, rows])
