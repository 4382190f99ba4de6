"""SEPAL's model: local image encoder, spatial graph network, prediction and evaluation.

Everything here needs PyTorch; it is imported on first use, so ``import sepal_tl`` stays light.
"""

import importlib

_EXPORTS = {
    "fit": "_fit",
    "fit_encoder": "_local",
    "fit_spatial": "_spatial",
    "embed": "_embed",
    "predict": "_predict",
    "evaluate": "_evaluate",
    "compute_metrics": "_metrics",
    "per_gene_metrics": "_metrics",
    "per_spot_metrics": "_metrics",
    "SepalModel": "_model",
    "PatchGeometry": "_patches",
    "SpotPatches": "_patches",
    "preprocess_patches": "_patches",
    "eight_symmetries": "_patches",
    "ImageSource": "_images",
    "resolve_images": "_images",
    "PRESETS": "_presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        msg = f"module 'sepal_tl.tl' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"sepal_tl.tl.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
