"""The local stage's network: a timm image backbone with a linear head over the genes."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from sepal_tl._compat import import_timm


def _check_backbone(timm, backbone: str) -> None:
    if not timm.is_model(backbone):
        close = timm.list_models(f"*{backbone.split('_')[0]}*")[:8]
        msg = (
            f"backbone={backbone!r} is not a timm model. Similar names: {close}. "
            "See timm.list_models() for all of them."
        )
        raise ValueError(msg)


def create_backbone(backbone: str, *, pretrained: bool | str | os.PathLike, image_size: int) -> nn.Module:
    """A timm backbone returning pooled features (``num_classes=0``) for ``image_size`` inputs.

    ``pretrained`` is ``True`` (timm's weights, downloaded by timm from its hub), ``False`` (random
    initialisation) or the path of a local checkpoint (``.safetensors``/``.pth``) loaded offline. Transformer
    backbones get their position embeddings sized for ``image_size``; CNNs take any size.
    """
    timm = import_timm()
    _check_backbone(timm, backbone)
    kwargs: dict = {"num_classes": 0}
    if isinstance(pretrained, str | os.PathLike):
        path = Path(pretrained)
        if not path.is_file():
            msg = f"pretrained checkpoint {str(path)!r} does not exist; pass True (timm's weights), False or a file."
            raise FileNotFoundError(msg)
        kwargs["checkpoint_path"] = str(path)
        pretrained = False
    try:
        return timm.create_model(backbone, pretrained=bool(pretrained), img_size=image_size, **kwargs)
    except TypeError:  # architectures without a fixed input size (CNNs) take no img_size
        return timm.create_model(backbone, pretrained=bool(pretrained), **kwargs)


class LocalEncoder(nn.Module):
    """Image backbone + linear head: patch → (gene predictions, embedding).

    Parameters
    ----------
    backbone
        Any timm model name (e.g. ``"vit_base_patch16_224"``, the paper's; ``"vit_tiny_patch16_224"`` for CPUs).
    n_genes
        Number of genes predicted.
    pretrained
        See :func:`create_backbone`.
    image_size
        Side of the input patches in pixels.
    """

    def __init__(self, backbone: str, n_genes: int, *, pretrained: bool | str | os.PathLike, image_size: int):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained=pretrained, image_size=image_size)
        self.head = nn.Linear(self.backbone.num_features, n_genes)

    @property
    def embedding_dim(self) -> int:
        """Width of the embedding (the backbone's pooled features)."""
        return self.head.in_features

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(predictions (B, n_genes), embeddings (B, embedding_dim))``."""
        embedding = self.backbone(patches)
        return self.head(embedding), embedding
