"""The local stage's network: an image backbone (optional) with a linear head over the genes."""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn

#: How embeddings are standardised before the linear head and the spatial stage.
#: ``"none"``: as the backbone gives them; ``"train"``: by the mean and SD of the training spots (stored with the
#: model); ``"slide"``: each slide by its own spots' mean and SD (uses only that slide's images, so it is legitimate
#: at prediction time and removes slide-level stain shifts of the features).
EMBEDDING_NORMS = ("none", "train", "slide")


def backbone_width(backbone: nn.Module) -> int:
    """Width of a timm backbone's pooled output (``head_hidden_size`` where a model has a pre-logits layer)."""
    return int(getattr(backbone, "head_hidden_size", None) or cast(int, backbone.num_features))


class LocalEncoder(nn.Module):
    """Image backbone + linear head: patch → (gene predictions, embedding).

    The backbone is ``None`` for a model trained on precomputed embeddings (``embedding_key=``); such a model
    predicts from embeddings only.

    Parameters
    ----------
    backbone
        A module returning pooled features (from :func:`~sepal_tl.tl._backbones.load_backbone`), or ``None``.
    n_genes
        Number of genes predicted.
    embedding_dim
        Width of the embeddings; required without a backbone, checked against it otherwise.
    """

    embedding_mean: torch.Tensor
    embedding_scale: torch.Tensor

    def __init__(self, backbone: nn.Module | None, n_genes: int, *, embedding_dim: int | None = None):
        super().__init__()
        width = backbone_width(backbone) if backbone is not None else embedding_dim
        if width is None or (embedding_dim is not None and embedding_dim != width):
            msg = f"embedding_dim={embedding_dim} does not match the backbone's output width {width}."
            raise ValueError(msg)
        self.backbone = backbone
        self.head = nn.Linear(width, n_genes)
        # standardisation of the embeddings for norm="train" (identity otherwise); saved with the weights
        self.register_buffer("embedding_mean", torch.zeros(width))
        self.register_buffer("embedding_scale", torch.ones(width))

    @property
    def embedding_dim(self) -> int:
        """Width of the embedding (the backbone's pooled features)."""
        return self.head.in_features

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(predictions (B, n_genes), embeddings (B, embedding_dim))``; needs a backbone."""
        if self.backbone is None:
            msg = "This model was trained on precomputed embeddings and has no image backbone; pass embedding_key=."
            raise ValueError(msg)
        embedding = self.backbone(patches)
        return self.head(embedding), embedding

    def set_standardisation(self, mean: np.ndarray, scale: np.ndarray) -> None:
        """Store the per-feature mean and SD used by ``norm="train"``."""
        self.embedding_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.embedding_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))

    def standardise(self, embeddings: np.ndarray, norm: str, libraries: np.ndarray) -> np.ndarray:
        """Standardised copy of ``embeddings`` (see :data:`EMBEDDING_NORMS`)."""
        out = np.asarray(embeddings, dtype=np.float32).copy()
        if norm == "train":
            out -= self.embedding_mean.numpy()
            out /= self.embedding_scale.numpy()
        elif norm == "slide":
            for lib in np.unique(libraries):
                rows = libraries == lib
                mean, scale = column_stats(out[rows])
                out[rows] = (out[rows] - mean) / scale
        return out

    def head_outputs(self, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """The linear head on (standardised) embeddings, in batches."""
        with torch.inference_mode():
            weight, bias = self.head.weight.detach().float(), self.head.bias.detach().float()
            chunks = [
                torch.as_tensor(c) @ weight.T + bias
                for c in np.array_split(features, max(1, -(-len(features) // batch_size)))
            ]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, self.head.out_features), np.float32)


def column_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and SD (float64 accumulation; SD 1 for constant columns, so they stay finite)."""
    mean = values.mean(axis=0, dtype=np.float64)
    scale = values.std(axis=0, dtype=np.float64)
    scale[scale < 1e-8] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def build_encoder(encoder_config: dict, n_genes: int) -> LocalEncoder:
    """A :class:`LocalEncoder` with the architecture of a saved model's ``config["encoder"]`` (random weights).

    The backbone is rebuilt offline from the recorded :class:`~sepal_tl.tl._backbones.EncoderSpec`; a model trained
    on precomputed embeddings (no spec) gets the linear head only.
    """
    from sepal_tl.tl._backbones import EncoderSpec

    spec = encoder_config.get("spec")
    if spec is None and "embedding_dim" not in encoder_config:
        msg = (
            "This model was saved by sepal_tl 0.1, before encoders recorded their source and architecture, so its "
            "encoder cannot be rebuilt; retrain it with this version (or load it with sepal_tl 0.1)."
        )
        raise ValueError(msg)
    if spec is None:
        return LocalEncoder(None, n_genes, embedding_dim=int(encoder_config["embedding_dim"]))
    return LocalEncoder(EncoderSpec.from_dict(spec).build(), n_genes)
