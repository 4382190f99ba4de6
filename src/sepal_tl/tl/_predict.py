"""``sepal.tl.predict``: expression maps from H&E with a trained model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from sepal_tl._graph import lattice_graph
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._uns import record
from sepal_tl._validation import DEFAULT_LIBRARY_KEY, check_array_coords, resolve_libraries
from sepal_tl.tl._inputs import check_model_genes
from sepal_tl.tl._local import encode
from sepal_tl.tl._model import SepalModel
from sepal_tl.tl._neighbourhoods import hop_neighbourhoods
from sepal_tl.tl._patches import PatchGeometry
from sepal_tl.tl._spatial import SpatialInputs


@spatialdata_aware(images="full")
def predict(
    adata: AnnData,
    model: SepalModel,
    *,
    image: Any = None,
    key_added: str = "sepal",
    patch_scale: float | None = None,
    patch_size: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int = 0,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    tta: bool = False,
) -> AnnData | None:
    """Predict expression for every spot of ``adata`` from its H&E image.

    Parameters
    ----------
    adata
        Spots with ``obsm["spatial"]``, array coordinates (for the spatial stage), spot diameters and images.
        Either with expression whose genes include the model's (predictions fill the model's gene columns,
        NaN in the others), or H&E-only — no genes, e.g. from :func:`sepal_tl.io.spot_grid` or ``adata[:, []]``
        — in which case a new AnnData with the model's genes is returned.
    model
        A trained :class:`~sepal_tl.tl.SepalModel` (e.g. :meth:`SepalModel.load`).
    image
        Image sources per library (see :func:`sepal_tl.tl.fit_encoder`).
    key_added
        Predictions (absolute scale: Δ + train mean) go to ``layers[key_added]``, the local encoder's alone to
        ``layers[f"{key_added}_local"]``, embeddings to ``obsm[f"X_{key_added}"]``.
    patch_scale, patch_size
        Only as a check: they must equal the model's patch geometry (``None``: use the model's).
    batch_size, device, num_workers
        Inference settings.
    tta
        Average the local encoder's outputs over the 8 symmetries of each patch (ST-Net's test-time
        augmentation; 8x slower).
    library_key
        ``obs`` column naming each spot's slide.
    table_key
        With a :class:`~spatialdata.SpatialData`: the table to work on (default: the only table, else ``"table"``);
        spots, spot sizes and images are found through the elements it annotates (see :mod:`sepal_tl._sdata`).

    Returns
    -------
    ``None`` when ``adata`` has expression (written in place), else a new AnnData with the model's genes as
    ``var``, the spots of ``adata`` as ``obs`` and the predictions in ``X`` and the layers.
    """
    requested = {"patch_scale": patch_scale, "patch_size": patch_size}
    for name, value in requested.items():
        if value is not None and value != getattr(model.geometry, name):
            msg = (
                f"{name}={value} does not match the model's patch geometry ({model.geometry}); patches must be cut "
                "as in training. Leave it unset, or train a model with this geometry."
            )
            raise ValueError(msg)
    for lib in adata.uns.get("spatial", {}):
        PatchGeometry.window_side(model.geometry, adata, lib)
    h_and_e_only = adata.n_vars == 0
    if not h_and_e_only:
        check_model_genes(adata, model.genes)
    if model.spatial is not None:
        coords = check_array_coords(adata)
        training = model.config["spatial"]["training"]
        adjacency, lattice = lattice_graph(adata, resolve_libraries(adata, library_key), geometry=training["geometry"])
        if training.get("lattice", lattice) != lattice:
            msg = (
                f"The model's spatial stage was trained on a {training['lattice']} lattice but these spots lie on a "
                f"{lattice} lattice, so neighbourhoods and offsets mean different things. Use a model trained on "
                "this kind of data, or refit it with spatial=False to predict with the local encoder alone."
            )
            raise ValueError(msg)

    local, embeddings = encode(
        adata,
        model,
        image=image,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        library_key=library_key,
        tta=tta,
    )
    final = local
    if model.spatial is not None:
        inputs = SpatialInputs(embeddings, local, hop_neighbourhoods(adjacency, training["n_hops"]), coords, lattice)
        final = inputs.predict(model.spatial, batch_size=batch_size, device=device)
    local, final = local + model.offset, final + model.offset

    if h_and_e_only:
        target = AnnData(X=final.copy(), obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(model.genes)))
        target.obsm["spatial"] = np.asarray(adata.obsm["spatial"]).copy()
        target.uns["spatial"] = adata.uns.get("spatial", {})
        columns = slice(None)
    else:
        target = adata
        columns = target.var_names.get_indexer(model.genes)

    def full(values: np.ndarray) -> np.ndarray:  # the model's genes; NaN in the other columns
        out = np.full(target.shape, np.nan, dtype=np.float32)
        out[:, columns] = values
        return out

    target.obsm[f"X_{key_added}"] = embeddings
    target.layers[f"{key_added}_local"] = full(local)
    target.layers[key_added] = full(final)
    target.uns.setdefault("sepal", {}).setdefault("tl", {})["embedding_model"] = model.uid
    record(
        target,
        "tl",
        "predict",
        {"model": model.uid, "key_added": key_added, "spatial": model.spatial is not None, "tta": tta},
    )
    logger.info("added %r and '%s_local' to adata.layers", key_added, key_added)
    return target if h_and_e_only else None
