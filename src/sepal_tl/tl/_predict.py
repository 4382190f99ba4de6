"""``sepal.tl.predict``: expression maps from H&E with a trained model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from sepal_tl._docs import inject_docs
from sepal_tl._graph import lattice_graph
from sepal_tl._keys import (
    DEFAULT_LIBRARY_KEY,
    MEASURED,
    PREDICTION,
    UNS,
    UNS_EMBEDDING_MODEL,
    embedding_obsm,
    local_layer,
)
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._uns import record
from sepal_tl._validation import check_array_coords, resolve_libraries
from sepal_tl.tl._inputs import check_bin_size
from sepal_tl.tl._local import model_embeddings
from sepal_tl.tl._model import SepalModel
from sepal_tl.tl._neighbourhoods import hop_neighbourhoods
from sepal_tl.tl._patches import PatchGeometry
from sepal_tl.tl._spatial import SpatialInputs


def _check_genes(adata: AnnData, model: SepalModel) -> list[str]:
    """The model's genes that ``adata`` measures; an error when it has genes but none of the model's."""
    shared = [g for g in model.genes if g in adata.var_names]
    if adata.n_vars and not shared:
        msg = (
            f"adata shares no gene with the model (its {model.n_genes} genes, e.g. {model.genes[:3]}): it was trained "
            "on another gene set. Use data with these genes, or pass an H&E-only AnnData (adata[:, []]) to get a new "
            "AnnData with the model's genes."
        )
        raise KeyError(msg)
    return shared


def _output(adata: AnnData, model: SepalModel, shared: list[str]) -> tuple[AnnData, bool]:
    """Where predictions go: ``adata`` itself when its genes are exactly the model's, else a new AnnData."""
    if adata.n_vars == len(shared) == model.n_genes:
        return adata, True
    target = AnnData(
        X=np.zeros((adata.n_obs, model.n_genes), dtype=np.float32),
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=pd.Index(model.genes)),
    )
    target.obsm["spatial"] = np.asarray(adata.obsm["spatial"]).copy()
    target.uns["spatial"] = {lib: dict(entry) for lib, entry in adata.uns.get("spatial", {}).items()}
    if shared:  # the measured values of the shared genes travel along, so the new AnnData can be evaluated
        columns = target.var_names.get_indexer(shared)
        for name in adata.layers:
            layer = np.zeros(target.shape, dtype=np.float32)
            layer[:, columns] = np.asarray(_dense(adata[:, shared].layers[name]), dtype=np.float32)
            target.layers[name] = layer
        target.var[MEASURED] = target.var_names.isin(shared)
    return target, False


def _dense(matrix):
    return matrix.toarray() if hasattr(matrix, "toarray") else matrix


@spatialdata_aware(images="full")
@inject_docs
def predict(
    adata: AnnData,
    model: SepalModel,
    *,
    image: Any = None,
    embedding_key: str | None = None,
    key_added: str = PREDICTION,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int = 0,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    tta: bool | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Predict expression for every spot of ``adata`` from its H&E image (or precomputed embeddings).

    Predictions always cover exactly the model's genes. When ``adata``'s genes are the model's genes (any
    order; e.g. the output of :func:`sepal_tl.pp.run`), they are written into ``adata`` (scanpy's ``copy``
    semantics). Otherwise — an H&E-only AnnData (e.g. from :func:`sepal_tl.io.spot_grid`), or other genes — a
    new AnnData over the model's genes is returned, with the spots of ``adata``; measured layers of the genes it
    shares with ``adata`` are copied into it (zeros elsewhere, ``var["measured"]`` says which), so that it can
    be evaluated. Nothing is ever filled with NaN.

    Parameters
    ----------
    adata
        Spots with ``obsm["spatial"]``, array coordinates (for the spatial stage), spot diameters and images.
    model
        A trained :class:`~sepal_tl.tl.SepalModel` (e.g. :meth:`SepalModel.load`).
    image
        Image sources per library (see :func:`sepal_tl.tl.fit_encoder`).
    embedding_key
        ``obsm`` key of embeddings made by the model's encoder (default: the key the model was trained on if
        ``adata`` has it, else embeddings computed from the images with the model's encoder).
    key_added
        Predictions (absolute scale: Δ + train mean) go to ``layers[key_added]``, the local head's alone to
        ``layers[f"{key_added}_local"]``, embeddings computed here to ``obsm[f"X_{key_added}"]``.
    batch_size, device, num_workers
        Inference settings.
    library_key
        %(library_key)s %(one_slide_rule)s
    tta
        Average the encoder's embeddings over the 8 symmetries of each patch (ST-Net's test-time augmentation;
        8x slower). ``None``: as the embeddings the model was trained on were made (see :func:`embed`).
        Embeddings read from ``obsm`` are used as they are, so ``tta=True`` with them is an error.
    copy
        %(copy)s Only when ``adata``'s genes are the model's; otherwise the predictions always go to a new AnnData.
    table_key
        %(table_key)s %(table_elements)s

    Returns
    -------
    ``None`` when the predictions were written into ``adata``; else the AnnData holding them (a copy of
    ``adata`` with ``copy=True``, or the new AnnData over the model's genes).

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
    >>> model = sepal.tl.fit(
    ...     adata, backbone="test_vit", pretrained=False, patch_size=32,
    ...     encoder_epochs=1, spatial_epochs=1, device="cpu",
    ... )
    >>> sepal.tl.predict(adata, model, key_added="pred", device="cpu")  # the same genes: written into adata
    >>> adata.layers["pred"].shape
    (140, 16)
    >>> image = adata.uns["spatial"]["slide2"]["images"]["hires"]  # an H&E image alone
    >>> he = sepal.io.spot_grid(image, spot_diameter_px=17.6, pitch_px=32)
    >>> pred = sepal.tl.predict(he, model, device="cpu")  # a new AnnData over the model's genes
    >>> pred.n_vars, list(pred.layers)
    (16, ['sepal_local', 'sepal'])
    """
    shared = _check_genes(adata, model)
    check_bin_size(adata, model.config.get("bin_size_um"))
    key = embedding_key or (model.embedding_key if model.embedding_key in adata.obsm else None)
    if tta and key is not None:
        msg = f"tta=True augments patches, but the embeddings come from obsm[{key!r}]; embed them with tta=True."
        raise ValueError(msg)
    if key is None and model.encoder.backbone is not None:
        for lib in adata.uns.get("spatial", {}):
            PatchGeometry.window_side(model.geometry, adata, lib)
    libraries = resolve_libraries(adata, library_key)
    if model.spatial is not None:
        coords = check_array_coords(adata)
        training = model.config["spatial"]["training"]
        adjacency, lattice = lattice_graph(adata, libraries, geometry=training["geometry"])
        if training.get("lattice", lattice) != lattice:
            msg = (
                f"The model's spatial stage was trained on a {training['lattice']} lattice but these spots lie on a "
                f"{lattice} lattice, so neighbourhoods and offsets mean different things. Use a model trained on "
                "this kind of data, or refit it with spatial=False to predict with the local encoder alone."
            )
            raise ValueError(msg)
    if tta is None:
        tta = bool(model.config["encoder"].get("tta", False))
    raw = model_embeddings(
        adata,
        model,
        embedding_key=key,
        image=image,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        library_key=library_key,
        tta=tta,
    )
    features, local = model.heads_input(raw, libraries.astype(str).to_numpy())
    final = local
    if model.spatial is not None:
        inputs = SpatialInputs(features, local, hop_neighbourhoods(adjacency, training["n_hops"]), coords, lattice)
        final = inputs.predict(model.spatial, batch_size=batch_size, device=device)
    local, final = local + model.offset, final + model.offset

    target, in_place = _output(adata, model, shared)
    if in_place and copy:
        target = adata.copy()
    columns = target.var_names.get_indexer(model.genes)
    order = np.argsort(columns)  # model order → the target's column order
    if key is None:
        target.obsm[embedding_obsm(key_added)] = raw
    target.layers[local_layer(key_added)] = local[:, order]
    target.layers[key_added] = final[:, order]
    if not in_place:
        target.X = target.layers[key_added].copy()
    target.uns.setdefault(UNS, {}).setdefault("tl", {})[UNS_EMBEDDING_MODEL] = model.uid
    record(
        target,
        "tl",
        "predict",
        {
            "model": model.uid,
            "key_added": key_added,
            "spatial": model.spatial is not None,
            "tta": tta,
            "embedding_key": key,
        },
    )
    logger.info("added %r and '%s_local' to adata.layers", key_added, key_added)
    return None if in_place and not copy else target
