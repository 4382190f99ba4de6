"""The local stage: fine-tune an image encoder on spot patches to predict Δ = y − mean_train(y)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from anndata import AnnData

from sepal_tl._compat import import_lightning
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._settings import settings
from sepal_tl._uns import record
from sepal_tl._validation import DEFAULT_LIBRARY_KEY, check_choice, get_matrix
from sepal_tl.tl._encoder import LocalEncoder
from sepal_tl.tl._images import resolve_images
from sepal_tl.tl._inputs import dense_layer, split_indices
from sepal_tl.tl._model import SepalModel
from sepal_tl.tl._patches import IMAGENET_MEAN, IMAGENET_STD, PatchGeometry, SpotPatches, eight_symmetries
from sepal_tl.tl._training import device_of, regression_task, run_training


def _encoder_loss(loss: str):
    """MSE of the (Δ) targets of each patch; ``"masked_mse"`` counts observed entries only."""

    def compute(encoder: LocalEncoder, batch) -> torch.Tensor:
        patches, packed = batch
        targets, observed = packed.chunk(2, dim=1)
        pred, _ = encoder(patches)
        err = (pred.float() - targets) ** 2
        if loss == "masked_mse":
            return (err * observed).sum() / observed.sum().clamp_min(1)
        return err.mean()

    return compute


def encode(
    adata: AnnData,
    model: SepalModel,
    *,
    image: Any = None,
    batch_size: int = 64,
    device: str | None = "auto",
    num_workers: int = 0,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    tta: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and local predictions (model scale: Δ for ``target="delta"``) of every spot.

    Patches are cut and normalised exactly as in training (same :class:`PatchGeometry`, no augmentation). With
    ``tta=True`` the outputs are averaged over the 8 symmetries of each patch (ST-Net's test-time augmentation).
    """
    sources = resolve_images(adata, image, library_key=library_key or DEFAULT_LIBRARY_KEY)
    dataset = SpotPatches(adata, sources, model.geometry, library_key=library_key or DEFAULT_LIBRARY_KEY)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    target_device = device_of(device)
    encoder = model.encoder.to(target_device).eval()
    preds, embeddings = [], []
    with torch.inference_mode():
        for patches in loader:
            views = eight_symmetries(patches) if tta else patches[None]
            outputs = [encoder(view.to(target_device)) for view in views]
            preds.append(torch.stack([p for p, _ in outputs]).float().mean(0).cpu())
            embeddings.append(torch.stack([e for _, e in outputs]).float().mean(0).cpu())
    encoder.to("cpu")
    return torch.cat(preds).numpy(), torch.cat(embeddings).numpy()


def write_local_outputs(adata: AnnData, model: SepalModel, pred: np.ndarray, emb: np.ndarray, key_added: str) -> None:
    """Store embeddings in ``obsm[f"X_{key_added}"]`` and absolute local predictions in ``layers``."""
    adata.obsm[f"X_{key_added}"] = emb
    adata.layers[f"{key_added}_local"] = pred + model.offset
    adata.uns.setdefault("sepal", {}).setdefault("tl", {})["embedding_model"] = model.uid


@spatialdata_aware(images="full")
def fit_encoder(
    adata: AnnData,
    *,
    image: Any = None,
    layer: str = "denoised",
    split_key: str = "split",
    backbone: str = "vit_base_patch16_224",
    pretrained: bool | str = True,
    target: Literal["delta", "absolute"] = "delta",
    loss: Literal["mse", "masked_mse"] = "mse",
    mask: str = "observed",
    patch_scale: float = 1.0,
    patch_size: int = 224,
    epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    patience: int | None = None,
    num_workers: int = 0,
    device: str = "auto",
    random_state: int | None = 0,
    trainer_kwargs: dict[str, Any] | None = None,
    key_added: str = "sepal",
    library_key: str | None = DEFAULT_LIBRARY_KEY,
) -> SepalModel:
    """Fine-tune an image encoder on spot patches (SEPAL's local stage).

    Any timm backbone gets a linear head over the genes and is trained end to end, with Lightning, to regress
    ``target``: ``"delta"`` (Δ = y − mean over the training spots, the paper's relative supervision) or
    ``"absolute"`` (plain regression, the baseline). Model selection keeps the epoch with the lowest validation
    MSE (training MSE when there are no ``"val"`` spots). Training patches get random flips and 90° rotations.

    Parameters
    ----------
    adata
        Spots × genes with ``layers[layer]``, ``obs[split_key]``, spot coordinates and images. Every gene of
        ``adata`` is predicted: subset to the selected genes first (:func:`sepal_tl.pp.run` does).
    image
        Image source per library, see :func:`sepal_tl.tl.resolve_images` (default: full-resolution file when
        known, else the highest-resolution image in ``uns["spatial"]``).
    layer
        Expression to learn (SEPAL: the denoised log2(TPM + 1)).
    split_key
        ``obs`` column with ``"train"`` / ``"val"`` / ``"test"``.
    backbone
        timm model name (the paper: ``"vit_base_patch16_224"``).
    pretrained
        ``True`` (timm's weights; needs internet once), ``False``, or a local checkpoint path.
    target
        ``"delta"`` or ``"absolute"``.
    loss
        ``"mse"`` over all entries (the paper, imputed values included) or ``"masked_mse"`` over observed
        entries only (``layers[mask]``).
    mask
        Boolean layer of observed entries (for ``loss="masked_mse"``).
    patch_scale, patch_size
        Patch geometry (window = spot diameter × ``patch_scale``, resized to ``patch_size`` pixels).
    epochs, batch_size, lr, weight_decay
        Adam optimisation.
    patience
        Early stopping after this many epochs without improvement (``None``: off).
    num_workers
        DataLoader worker processes.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; multi-GPU through ``trainer_kwargs``.
    random_state
        Seed (``None``: :attr:`sepal_tl.settings.seed`).
    trainer_kwargs
        Extra arguments for :class:`lightning.pytorch.Trainer` (e.g. ``{"devices": 4, "strategy": "ddp"}``).
    key_added
        Embeddings go to ``obsm[f"X_{key_added}"]``, absolute local predictions to
        ``layers[f"{key_added}_local"]``.
    library_key
        ``obs`` column naming each spot's slide.
    table_key
        With a :class:`~spatialdata.SpatialData`: the table to work on (default: the only table, else ``"table"``);
        spots, spot sizes and images are found through the elements it annotates (see :mod:`sepal_tl._sdata`).

    Returns
    -------
    The trained :class:`~sepal_tl.tl.SepalModel`; ``adata`` gains the embeddings, local predictions and
    ``uns["sepal"]["tl"]["fit_encoder"]``.
    """
    L = import_lightning()

    check_choice("target", target, ["delta", "absolute"])
    check_choice("loss", loss, ["mse", "masked_mse"])
    splits = split_indices(adata, split_key)
    values = dense_layer(adata, layer)
    if loss == "masked_mse":
        observed = np.asarray(get_matrix(adata, mask), dtype=np.float32)
    else:
        observed = np.ones_like(values)
    lib_key = library_key or DEFAULT_LIBRARY_KEY
    sources = resolve_images(adata, image, library_key=lib_key)
    for lib in sources:
        PatchGeometry(patch_scale=patch_scale, patch_size=patch_size).window_side(adata, lib)  # needs a diameter
    seed = settings.seed if random_state is None else random_state
    L.seed_everything(seed, workers=True, verbose=False)
    encoder = LocalEncoder(backbone, adata.n_vars, pretrained=pretrained, image_size=patch_size)
    # normalise patches as the backbone's pretrained weights expect (ImageNet statistics for most of timm)
    pretrained_cfg = getattr(encoder.backbone, "pretrained_cfg", None) or {}
    geometry = PatchGeometry(
        patch_scale=patch_scale,
        patch_size=patch_size,
        mean=tuple(pretrained_cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(pretrained_cfg.get("std", IMAGENET_STD)),
    )

    means = values[splits["train"]].mean(axis=0)
    offset = means if target == "delta" else np.zeros_like(means)
    packed = np.concatenate([values - offset, observed], axis=1)

    def loader(name: str, train: bool):
        if splits[name].size == 0:
            return None
        dataset = SpotPatches(
            adata,
            sources,
            geometry,
            indices=splits[name],
            targets=packed,
            train=train,
            library_key=lib_key,
            random_state=seed,
        )
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers, drop_last=False
        )

    val_loader = loader("val", False)
    task = regression_task(encoder, _encoder_loss(loss), lr=lr, weight_decay=weight_decay)
    history, best = run_training(
        task,
        loader("train", True),
        val_loader,
        epochs=epochs,
        device=device,
        patience=patience,
        trainer_kwargs=trainer_kwargs,
    )
    config = {
        "target": target,
        "layer": layer,
        "encoder": {
            "backbone": backbone,
            "pretrained": str(pretrained),
            "loss": loss,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "patience": patience,
            "random_state": seed,
            "best_mse": best,
        },
        "spatial": None,
    }
    model = SepalModel(
        genes=list(adata.var_names),
        gene_means=means,
        geometry=geometry,
        config=config,
        encoder=task.net,
        history={"encoder": history},
    )
    pred, emb = encode(adata, model, image=sources, device=device, num_workers=num_workers, library_key=lib_key)
    write_local_outputs(adata, model, pred, emb, key_added)
    record(adata, "tl", "fit_encoder", {**config["encoder"], "target": target, "layer": layer, "uid": model.uid})
    logger.info("added 'X_%s' to adata.obsm and '%s_local' to adata.layers", key_added, key_added)
    return model
