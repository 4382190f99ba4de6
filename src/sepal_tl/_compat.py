"""Narrow import guard for torchvision builds whose compiled ops cannot load.

On CPU-only machines the only torchvision wheel may be a CUDA build. Its ``_C`` extension then fails to
load and the import dies with ``RuntimeError: operator torchvision::nms does not exist``, which in turn
breaks ``import timm``. We only need torchvision's pure-Python parts (transforms, ``ops.misc``), so when
— and only when — the import fails for exactly that reason we declare the two missing operator schemas
and import again. A working torchvision (e.g. a GPU machine) is never touched.
"""

from __future__ import annotations

import sys

from ._logging import logger

_state: dict[str, object] = {}


def ensure_torchvision() -> bool:
    """Import torchvision, patching around unloadable compiled ops if needed.

    Returns
    -------
    ``True`` if the guard had to patch the import, ``False`` if torchvision imported normally (or was
    already patched).
    """
    try:
        import torchvision

        return False
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        reason = str(err)
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _state["library"] = lib  # keep the fragment alive for the life of the process
    import torchvision  # noqa: F401

    logger.info(
        "torchvision's compiled ops could not load (%s); declared the nms/qnms schemas so that its "
        "pure-Python parts (and timm) import. torchvision.ops.nms and torchvision.io are unavailable.",
        reason,
    )
    return True


def import_timm():
    """Import :mod:`timm` after :func:`ensure_torchvision`."""
    ensure_torchvision()
    import timm

    return timm


def import_squidpy():
    """Import :mod:`squidpy` without the docstring-template SyntaxWarning messages that its docrep dependency emits."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not a valid key", category=SyntaxWarning)
        import squidpy

    return squidpy


def import_lightning():
    """Import :mod:`lightning` after :func:`ensure_torchvision` (lightning → torchmetrics → torchvision)."""
    ensure_torchvision()
    import lightning

    return lightning
