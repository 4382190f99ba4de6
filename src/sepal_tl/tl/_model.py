"""``SepalModel``: the trained local encoder and spatial head with everything needed to reuse them."""

from __future__ import annotations

import os
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sepal_tl.tl._encoder import LocalEncoder, build_encoder
from sepal_tl.tl._model_files import WEIGHTS, load_weights, read_model_folder, write_model_folder
from sepal_tl.tl._model_schema import FORMAT_VERSION
from sepal_tl.tl._patches import PatchGeometry

if TYPE_CHECKING:
    from sepal_tl.tl._gnn import SpatialHead  # imported on use: torch_geometric is slow to import


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

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
    >>> model = sepal.tl.fit_encoder(
    ...     adata, backbone="test_vit", pretrained=False, patch_size=32, epochs=1, device="cpu"
    ... )
    >>> model.n_genes, model.genes[:3]
    (16, ['RBBP4', 'CENPF', 'ETAA1'])
    >>> model.config["target"], model.geometry.patch_size
    ('delta', 32)
    >>> model.save("my_model")
    >>> sepal.tl.SepalModel.load("my_model").genes == model.genes
    True
    """

    def __init__(
        self,
        *,
        genes: list[str],
        gene_means: np.ndarray,
        geometry: PatchGeometry,
        config: dict[str, Any],
        encoder: LocalEncoder,
        spatial: SpatialHead | None = None,
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

    @property
    def embedding_key(self) -> str | None:
        """``obsm`` key of the precomputed embeddings the model was trained on (``None``: from its backbone)."""
        return self.config["encoder"].get("embedding_key")

    @property
    def embedding_norm(self) -> str:
        """How embeddings are standardised before the heads (see :data:`~sepal_tl.tl._encoder.EMBEDDING_NORMS`)."""
        return self.config["encoder"].get("embedding_norm", "none")

    def heads_input(self, embeddings: np.ndarray, libraries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standardised embeddings and the local predictions (model scale) that the linear head makes from them.

        ``embeddings`` must have the width the model was trained with; a mismatch (another encoder) is an error.
        """
        width = self.encoder.embedding_dim
        if embeddings.ndim != 2 or embeddings.shape[1] != width:
            msg = (
                f"The embeddings have shape {embeddings.shape} but this model was trained on {width}-dimensional "
                f"embeddings of {self.config['encoder']['backbone']!r}; compute them with that encoder."
            )
            raise ValueError(msg)
        features = self.encoder.standardise(embeddings, self.embedding_norm, libraries)
        return features, self.encoder.head_outputs(features)

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
        """Save to a directory: weights as safetensors (no pickle) and a JSON file with everything else.

        The folder is written next to ``path`` under a temporary name and then renamed into place, so an
        interrupted save leaves the previous model (or nothing), never a mixture. ``config.json`` records the
        weights' SHA-256, which :meth:`load` verifies. ``overwrite=True`` replaces a folder that holds a saved
        model and nothing else.

        Examples
        --------
        >>> import sepal_tl as sepal
        >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
        >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
        >>> model = sepal.tl.fit_encoder(
        ...     adata, backbone="test_vit", pretrained=False, patch_size=32, epochs=1, device="cpu"
        ... )
        >>> model.save("my_model")
        >>> import os
        >>> sorted(os.listdir("my_model"))  # weights (safetensors) and everything else (JSON)
        ['config.json', 'model.safetensors']
        """
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
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
        write_model_folder(Path(path), state=state, meta=meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu") -> SepalModel:
        """Load a model saved with :meth:`save` (weights are read with safetensors, never unpickled).

        ``config.json`` is checked field by field (types, one finite mean per gene, known values such as
        ``target``) and the weights against the SHA-256 it records, before anything is built: a damaged or
        edited folder raises :class:`~sepal_tl.tl._model_schema.ModelFileError` (a ``ValueError``) naming the file
        and the field.

        Examples
        --------
        >>> import numpy as np
        >>> import sepal_tl as sepal
        >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
        >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
        >>> model = sepal.tl.fit_encoder(
        ...     adata, backbone="test_vit", pretrained=False, patch_size=32, epochs=1, device="cpu"
        ... )
        >>> model.save("my_model")
        >>> loaded = sepal.tl.SepalModel.load("my_model")
        >>> loaded
        SepalModel(test_vit, encoder only, 16 genes, target='delta', patches PatchGeometry(...))
        >>> sepal.tl.predict(adata, loaded, key_added="reloaded", device="cpu")
        >>> bool(np.allclose(adata.layers["reloaded"], adata.layers["sepal_local"]))
        True
        """
        path = Path(path)
        meta, state = read_model_folder(path, device=device)
        config = meta["config"]
        geometry = PatchGeometry.from_dict(meta["geometry"])
        encoder = build_encoder(config["encoder"], len(meta["genes"]))
        spatial = None
        if config.get("spatial") is not None:
            from sepal_tl.tl._gnn import SpatialHead

            spatial = SpatialHead(**config["spatial"]["architecture"])
        load_weights(encoder, state, prefix="encoder.", file=path / WEIGHTS)
        if spatial is not None:
            load_weights(spatial, state, prefix="spatial.", file=path / WEIGHTS)
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
