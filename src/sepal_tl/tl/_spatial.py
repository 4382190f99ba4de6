"""The spatial stage: a graph network over each spot's m-hop neighbourhood corrects the local prediction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from anndata import AnnData

from sepal_tl._compat import import_lightning
from sepal_tl._docs import inject_docs
from sepal_tl._graph import lattice_graph
from sepal_tl._keys import DEFAULT_LIBRARY_KEY, PREDICTION, SPLIT, UNS, UNS_EMBEDDING_MODEL, embedding_obsm
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._settings import settings
from sepal_tl._uns import record
from sepal_tl._validation import check_array_coords, check_choice, resolve_libraries
from sepal_tl.tl._gnn import SpatialHead
from sepal_tl.tl._inputs import dense_layer, split_indices
from sepal_tl.tl._local import model_embeddings, write_local_outputs
from sepal_tl.tl._model import SepalModel
from sepal_tl.tl._neighbourhoods import ALLOWED_HOPS, Neighbourhoods, collate_subgraphs, hop_neighbourhoods
from sepal_tl.tl._training import device_of, regression_task, run_training


class SpatialInputs:
    """What the graph network reads, kept once per AnnData: embeddings, local predictions, neighbourhoods.

    Subgraphs are batched by index (:func:`~sepal_tl.tl._neighbourhoods.collate_subgraphs`): node features are
    gathered per batch from the one ``(n_spots, d)`` embedding matrix, so memory stays O(spots).
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        local: np.ndarray,
        neighbourhoods: Neighbourhoods,
        coords: np.ndarray,
        lattice: str,
    ):
        self.lattice = lattice
        self.embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
        self.local = torch.as_tensor(local, dtype=torch.float32)
        self.neighbourhoods = neighbourhoods
        self.coords = coords

    def forward(self, head: SpatialHead, centres: torch.Tensor) -> torch.Tensor:
        """Local prediction + graph correction (model scale) for the spots ``centres``."""
        device = next(head.parameters()).device
        batch = collate_subgraphs(self.neighbourhoods, centres, array_coords=self.coords)
        features = head.features(self.embeddings[batch.node_index].to(device), batch.offsets.to(device))
        correction = head(features, batch.edge_index.to(device), batch.batch.to(device), batch.ptr.to(device))
        return self.local[batch.centres].to(device) + correction.float()

    def predict(self, head: SpatialHead, *, batch_size: int, device: str | None) -> np.ndarray:
        """Final (model-scale) predictions of every spot."""
        head = head.to(device_of(device)).eval()
        spots = torch.arange(self.embeddings.shape[0])
        with torch.inference_mode():
            out = [self.forward(head, chunk).cpu() for chunk in spots.split(batch_size)]
        head.to("cpu")
        return torch.cat(out).numpy() if out else np.zeros((0, self.local.shape[1]), dtype=np.float32)


def spatial_inputs(
    adata: AnnData,
    model: SepalModel,
    *,
    n_hops: int,
    image: Any,
    key_added: str,
    library_key: str | None,
    geometry: str,
    device: str | None,
    embedding_key: str | None = None,
    num_workers: int = 0,
    batch_size: int = 64,
) -> tuple[SpatialInputs, np.ndarray | None]:
    """What the spatial stage reads for ``adata``, and the embeddings computed here (``None`` if none were).

    The model's (standardised) embeddings and local predictions — from ``obsm[embedding_key]``, reused when
    ``adata`` already holds this model's, else computed — and the m-hop neighbourhoods of the slides' lattice
    graphs. Nothing is written to ``adata``.
    """
    emb_key = embedding_obsm(key_added)
    fresh = (
        embedding_key is None
        and adata.uns.get(UNS, {}).get("tl", {}).get(UNS_EMBEDDING_MODEL) == model.uid
        and emb_key in adata.obsm
    )
    libraries = resolve_libraries(adata, library_key)
    coords = check_array_coords(adata)  # cheap checks first: nothing is computed for data that cannot be used
    adjacency, lattice = lattice_graph(adata, libraries, geometry=geometry)
    raw = model_embeddings(
        adata,
        model,
        embedding_key=emb_key if fresh else embedding_key,
        image=image,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        library_key=library_key,
    )
    features, local = model.heads_input(raw, libraries.astype(str).to_numpy())
    inputs = SpatialInputs(features, local, hop_neighbourhoods(adjacency, n_hops), coords, lattice)
    return inputs, (raw if not fresh and embedding_key is None else None)


def check_spatial_options(
    *,
    n_hops: int,
    operator: str,
    hidden: Sequence[int],
    pre: Sequence[int],
    post: Sequence[int],
    aggregation: str,
    pooling: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int | None,
    geometry: str,
) -> dict[str, Any]:
    """Validate every option of the spatial stage (cheaply, before any training) and return its architecture.

    :func:`sepal_tl.tl.fit` calls this before it trains the encoder, so that a typo never costs an encoder run.
    """
    if n_hops not in ALLOWED_HOPS:
        msg = f"n_hops={n_hops!r} is out of range; use one of {list(ALLOWED_HOPS)} (hops on the lattice graph)."
        raise ValueError(msg)
    check_choice("geometry", geometry, ["auto", "hex", "square"])
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            msg = f"{name}={value!r} must be an integer >= {low}."
            raise ValueError(msg)
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 0):
        msg = f"patience={patience!r} must be None (no early stopping) or an integer >= 0."
        raise ValueError(msg)
    for name, rate in (("lr", lr), ("weight_decay", weight_decay)):
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not np.isfinite(rate) or rate < 0:
            msg = f"{name}={rate!r} must be a finite number >= 0."
            raise ValueError(msg)
    if lr == 0:
        msg = "lr=0 would never change the weights; pass a positive learning rate."
        raise ValueError(msg)
    architecture: dict[str, Any] = {
        "operator": operator,
        "hidden": list(hidden),
        "pre": list(pre),
        "post": list(post),
        "aggregation": aggregation,
        "pooling": pooling,
    }
    SpatialHead(8, 1, **architecture)  # the layer options are validated by building a small head
    return architecture


class SpatialLoss:
    """MSE of (local prediction + correction) against the centre's target, as in the paper (picklable)."""

    def __init__(self, inputs: SpatialInputs, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __call__(self, head: SpatialHead, batch) -> torch.Tensor:
        (centres,) = batch
        pred = self.inputs.forward(head, centres)
        return torch.nn.functional.mse_loss(pred, self.targets[centres].to(pred.device))


@spatialdata_aware(images="full")
@inject_docs
def fit_spatial(
    adata: AnnData,
    model: SepalModel,
    *,
    image: Any = None,
    split_key: str = SPLIT,
    n_hops: int = 1,
    operator: str = "GraphConv",
    hidden: Sequence[int] = (256,),
    pre: Sequence[int] = (),
    post: Sequence[int] = (),
    aggregation: str = "sum",
    pooling: str = "sag",
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    patience: int | None = None,
    geometry: str = "auto",
    device: str = "auto",
    random_state: int | None = 0,
    trainer_kwargs: dict[str, Any] | None = None,
    key_added: str = PREDICTION,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    embedding_key: str | None = None,
) -> SepalModel:
    """Train SEPAL's spatial stage on top of a trained local encoder.

    With the encoder frozen, every spot's embedding and local prediction are computed once (same patches and
    transform as in training, or read from ``obsm[embedding_key]``) and the embeddings are standardised as the
    model's head saw them (``embedding_norm`` of :func:`fit_encoder`). For each spot, the subgraph induced by its ``n_hops``-hop neighbourhood on the
    slide's lattice (centre first) carries node features = embedding ⊕ a fixed 2D sinusoidal encoding of the
    node's array offset from the centre; graph layers, pooling and an MLP give a per-gene correction that is
    added to the centre's local prediction. Loss: MSE against the centre's target (Δ for ``target="delta"``).

    Parameters
    ----------
    adata
        The AnnData the encoder was trained on (or any with the model's genes, the target layer, splits,
        coordinates and images).
    model
        From :func:`sepal_tl.tl.fit_encoder`; it gains the spatial head (returned for chaining).
    image
        Image sources, as for :func:`sepal_tl.tl.fit_encoder` (only used if embeddings must be computed).
    split_key
        %(split_key)s
    n_hops
        Neighbourhood radius in hops on the lattice graph: 1, 2 or 3 (paper: 1).
    operator
        torch-geometric layer: ``"GCNConv"``, ``"GraphConv"``, ``"SAGEConv"``, ``"GATConv"``, ``"GATv2Conv"``,
        ``"TransformerConv"``.
    hidden, pre, post
        Widths of the graph layers, of the MLP before them and of the MLP after pooling (a final linear layer
        to the genes is always added, without activation).
    aggregation
        ``"sum"`` (embedding + encoding) or ``"concat"``.
    pooling
        ``"sag"`` (SAGPooling keeping one node per graph, the paper), ``"center"`` (read the centre node) or
        ``"mean"``.
    epochs, batch_size, lr, weight_decay, patience
        Optimisation (Adam), early stopping (``None``: off).
    geometry
        Lattice: ``"auto"``, ``"hex"`` (Visium) or ``"square"`` (legacy ST).
    device, random_state, trainer_kwargs
        As for :func:`sepal_tl.tl.fit_encoder`.
    key_added
        Final predictions go to ``layers[key_added]`` (absolute scale).
    library_key
        %(library_key)s %(one_slide_rule)s
    embedding_key
        ``obsm`` key of precomputed embeddings of the model's encoder to use as node features (default: the
        key the model's head was fitted on, else the model's own embeddings, computed when missing). With it,
        the spatial stage never touches images.
    table_key
        %(table_key)s %(table_elements)s

    Returns
    -------
    ``model`` with its spatial head; ``adata`` gains ``layers[key_added]`` and ``uns["sepal"]["tl"]["fit_spatial"]``.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
    >>> model = sepal.tl.fit_encoder(
    ...     adata, backbone="test_vit", pretrained=False, patch_size=32, epochs=1, device="cpu"
    ... )
    >>> sepal.tl.fit_spatial(adata, model, hidden=(32,), epochs=1, device="cpu")
    SepalModel(test_vit, encoder + spatial head, 16 genes, target='delta', patches PatchGeometry(...))
    >>> adata.layers["sepal"].shape
    (140, 16)
    >>> adata.uns["sepal"]["tl"]["fit_spatial"]["hidden"]
    [32]
    """
    L = import_lightning()
    architecture = check_spatial_options(
        n_hops=n_hops,
        operator=operator,
        hidden=hidden,
        pre=pre,
        post=post,
        aggregation=aggregation,
        pooling=pooling,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        geometry=geometry,
    )
    if adata.n_vars != model.n_genes or set(adata.var_names) != set(model.genes):
        msg = (
            f"fit_spatial writes predictions for the model's {model.n_genes} genes into adata, which has "
            f"{adata.n_vars} genes{'' if set(model.genes) <= set(adata.var_names) else ', not all of them the model’s'}. "
            "Pass adata[:, model.genes].copy()."
        )
        raise ValueError(msg)
    splits = split_indices(adata, split_key)
    targets = torch.as_tensor(dense_layer(adata, model.config["layer"], genes=model.genes) - model.offset)
    seed = settings.seed if random_state is None else random_state
    L.seed_everything(seed, workers=True, verbose=False)
    head = SpatialHead(model.encoder.embedding_dim, model.n_genes, **architecture)  # validates the options
    inputs, computed = spatial_inputs(
        adata,
        model,
        n_hops=n_hops,
        image=image,
        key_added=key_added,
        library_key=library_key,
        geometry=geometry,
        device=device,
        embedding_key=embedding_key or model.embedding_key,
        batch_size=batch_size,
    )

    def loader(name: str, shuffle: bool):
        if splits[name].size == 0:
            return None
        dataset = torch.utils.data.TensorDataset(torch.as_tensor(splits[name]))
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)

    val_loader = loader("val", False)
    task = regression_task(head, SpatialLoss(inputs, targets), lr=lr, weight_decay=weight_decay)
    history, best = run_training(
        task,
        loader("train", True),
        val_loader,
        epochs=epochs,
        device=device,
        patience=patience,
        trainer_kwargs=trainer_kwargs,
    )
    model.spatial = cast(SpatialHead, task.net)  # the head trained above, with its best weights
    training = {
        "n_hops": n_hops,
        "embedding_key": embedding_key or model.embedding_key,
        "geometry": geometry,
        "lattice": inputs.lattice,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "patience": patience,
        "random_state": seed,
        "best_mse": best,
    }
    model.config["spatial"] = {
        "architecture": {"in_dim": model.encoder.embedding_dim, "n_genes": model.n_genes, **architecture},
        "training": training,
    }
    model.history["spatial"] = history
    final = inputs.predict(model.spatial, batch_size=batch_size, device=device)
    order = np.argsort(adata.var_names.get_indexer(model.genes))  # model gene order → adata's column order
    if computed is not None:
        write_local_outputs(adata, model, inputs.local.numpy(), computed, key_added, order=order)
    adata.layers[key_added] = (final + model.offset)[:, order]
    record(adata, "tl", "fit_spatial", {**architecture, **training, "uid": model.uid})
    logger.info("added %r to adata.layers", key_added)
    return model
