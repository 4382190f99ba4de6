"""``SepalModel``: the trained local encoder and spatial head with everything needed to reuse them."""

from __future__ import annotations

import json
import os
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sepal_tl.tl._encoder import LocalEncoder
from sepal_tl.tl._patches import PatchGeometry

_WEIGHTS = "model.safetensors"
_CONFIG = "config.json"
FORMAT_VERSION = 1


def _versions() -> dict[str, str]:
    out = {}
    for package in ("sepal-tl", "torch", "timm", "torch-geometric", "lightning", "anndata"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


class SepalModel:
    """A trained SEPAL model: local image encoder, optional spatial graph head, and their metadata.

    Created by :func:`sepal_tl.tl.fit_encoder` / :func:`sepal_tl.tl.fit`; used by :func:`sepal_tl.tl.predict`.
    It remembers the genes (in order), their train means (predictions are Δ = y − mean_train(y) plus this mean),
    the patch geometry, the hyper-parameters and the package versions, and refuses data that do not match.

    Attributes
    ----------
    genes
        The predicted genes, in output order.
    gene_means
        Mean of the training target per gene over the training spots (added back to the Δ predictions).
    geometry
        Patch geometry the encoder was trained with.
    config
        Hyper-parameters of both stages (``config["encoder"]``, ``config["spatial"]``), the target, the preset.
    history
        Per-epoch training and validation losses of each stage (``history["encoder"]``, ``history["spatial"]``).
    """

    def __init__(
        self,
        *,
        genes: list[str],
        gene_means: np.ndarray,
        geometry: PatchGeometry,
        config: dict[str, Any],
        encoder: LocalEncoder,
        spatial: nn.Module | None = None,
        history: dict[str, list[dict[str, float]]] | None = None,
        uid: str | None = None,
    ):
        self.genes = list(genes)
        self.gene_means = np.asarray(gene_means, dtype=np.float32)
        self.geometry = geometry
        self.config = config
        self.encoder = encoder
        self.spatial = spatial
        self.history = history or {}
        self.uid = uid or uuid.uuid4().hex

    @property
    def offset(self) -> np.ndarray:
        """The train means for ``target="delta"`` (outputs are Δ relative to them), else zeros."""
        return self.gene_means if self.config["target"] == "delta" else np.zeros_like(self.gene_means)

    @property
    def n_genes(self) -> int:
        """Number of predicted genes."""
        return len(self.genes)

    def __repr__(self) -> str:
        stages = "encoder + spatial head" if self.spatial is not None else "encoder only"
        return (
            f"SepalModel({self.config['encoder']['backbone']}, {stages}, {self.n_genes} genes, "
            f"target={self.config['target']!r}, patches {self.geometry})"
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All weights, prefixed ``encoder.`` and ``spatial.``."""
        state = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        if self.spatial is not None:
            state.update({f"spatial.{k}": v for k, v in self.spatial.state_dict().items()})
        return state

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save to a directory: weights as safetensors (no pickle) and a JSON file with everything else."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            msg = f"{str(path)!r} exists and is not empty; pass overwrite=True or choose another directory."
            raise FileExistsError(msg)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, path / _WEIGHTS)
        meta = {
            "format_version": FORMAT_VERSION,
            "uid": self.uid,
            "genes": self.genes,
            "gene_means": self.gene_means.tolist(),
            "geometry": self.geometry.to_dict(),
            "config": self.config,
            "history": self.history,
            "versions": _versions(),
        }
        (path / _CONFIG).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu") -> SepalModel:
        """Load a model saved with :meth:`save` (weights are read with safetensors, never unpickled)."""
        from safetensors.torch import load_file

        path = Path(path)
        for name in (_CONFIG, _WEIGHTS):
            if not (path / name).is_file():
                msg = f"{str(path)!r} is not a saved SepalModel: {name} is missing."
                raise FileNotFoundError(msg)
        meta = json.loads((path / _CONFIG).read_text())
        if meta.get("format_version", 0) > FORMAT_VERSION:
            msg = f"{str(path)!r} was saved by a newer sepal_tl (format {meta['format_version']}); upgrade sepal_tl."
            raise ValueError(msg)
        config = meta["config"]
        geometry = PatchGeometry.from_dict(meta["geometry"])
        encoder = LocalEncoder(
            config["encoder"]["backbone"], len(meta["genes"]), pretrained=False, image_size=geometry.patch_size
        )
        spatial = None
        if config.get("spatial") is not None:
            from sepal_tl.tl._gnn import SpatialHead

            spatial = SpatialHead(**config["spatial"]["architecture"])
        state = load_file(path / _WEIGHTS, device=device)
        encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        if spatial is not None:
            spatial.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("spatial.")})
        return cls(
            genes=meta["genes"],
            gene_means=np.asarray(meta["gene_means"], dtype=np.float32),
            geometry=geometry,
            config=config,
            encoder=encoder,
            spatial=spatial,
            history=meta.get("history"),
            uid=meta["uid"],
        )
