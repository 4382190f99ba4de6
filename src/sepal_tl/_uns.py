"""Provenance: the parameters of each step, recorded in ``adata.uns["sepal"]``."""

from __future__ import annotations

from typing import Any

from anndata import AnnData

from sepal_tl._keys import UNS


def _plain(value: Any) -> Any:
    """Turn ``value`` into something h5ad can store (no None, no tuples of mixed types)."""
    if value is None:
        return "None"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def record(adata: AnnData, section: str, step: str, params: dict[str, Any]) -> None:
    """Store ``params`` as ``adata.uns["sepal"][section][step]``."""
    sepal = adata.uns.setdefault(UNS, {})
    sepal.setdefault(section, {})[step] = _plain(params)
