"""SEPAL's model: local image encoder, spatial graph network, prediction and evaluation.

Everything here needs PyTorch; it is imported on first use, so ``import sepal_tl`` stays light.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports each name on first use
    from sepal_tl.io._image_sources import ImageSource, resolve_images

    from ._embed import embed
    from ._evaluate import evaluate
    from ._fit import fit
    from ._local import fit_encoder
    from ._metrics import compute_metrics, per_gene_metrics, per_spot_metrics
    from ._model import SepalModel
    from ._patches import PatchGeometry, SpotPatches, eight_symmetries, preprocess_patches
    from ._predict import predict
    from ._presets import PRESETS
    from ._spatial import fit_spatial

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
    "ImageSource": "..io._image_sources",  # implemented with the image reading, public here
    "resolve_images": "..io._image_sources",
    "PRESETS": "_presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        msg = f"module 'sepal_tl.tl' has no attribute {name!r}"
        raise AttributeError(msg)
    module = _EXPORTS[name]
    value = getattr(importlib.import_module(module if module.startswith(".") else f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
