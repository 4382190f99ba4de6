"""The local stage: a linear Δ head on an image encoder, fine-tuned end to end or fitted on frozen embeddings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from sepal_tl._compat import import_lightning
from sepal_tl._docs import inject_docs
from sepal_tl._keys import (
    DEFAULT_LIBRARY_KEY,
    DENOISED,
    OBSERVED,
    PREDICTION,
    SPLIT,
    UNS,
    UNS_EMBEDDING_MODEL,
    embedding_obsm,
    local_layer,
)
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._settings import settings
from sepal_tl._uns import record
from sepal_tl._validation import check_choice, resolve_libraries
from sepal_tl.io._image_sources import resolve_images
from sepal_tl.tl._backbones import EncoderSpec, decode_arg, encode_arg, load_backbone
from sepal_tl.tl._embed import compute_embeddings, recorded_encoder
from sepal_tl.tl._encoder import EMBEDDING_NORMS, LocalEncoder, column_stats
from sepal_tl.tl._inputs import bin_size_um, dense_layer, split_indices
from sepal_tl.tl._model import SepalModel
from sepal_tl.tl._patches import PatchGeometry, SpotPatches, with_stain_target
from sepal_tl.tl._ridge import fit_ridge
from sepal_tl.tl._training import regression_task, run_training


class EncoderLoss:
    """MSE of the (Δ) targets of each patch; ``"masked_mse"`` counts observed entries only (picklable)."""

    def __init__(self, loss: str) -> None:
        self.loss = loss

    def __call__(self, encoder: LocalEncoder, batch) -> torch.Tensor:
        patches, packed = batch
        targets, observed = packed.chunk(2, dim=1)
        pred, _ = encoder(patches)
        err = (pred.float() - targets) ** 2
        if self.loss == "masked_mse":
            return (err * observed).sum() / observed.sum().clamp_min(1)
        return err.mean()


def checked_embeddings(adata: AnnData, key: str) -> np.ndarray:
    """``obsm[key]`` as a finite ``(n_obs, d)`` float32 array, or a clear error."""
    if key not in adata.obsm:
        msg = (
            f"embedding_key={key!r} is not in adata.obsm (keys: {sorted(adata.obsm)}). Compute embeddings first, "
            "e.g. sepal.tl.embed(adata, 'hf-hub:MahmoodLab/UNI', key_added='X_uni'), or pass the right key."
        )
        raise KeyError(msg)
    values = adata.obsm[key]
    values = values.to_numpy() if isinstance(values, pd.DataFrame) else np.asarray(values)
    if values.ndim != 2 or values.shape[0] != adata.n_obs or not np.issubdtype(values.dtype, np.number):
        msg = f"obsm[{key!r}] must be a numeric (n_spots, d) matrix with {adata.n_obs} rows; got shape {values.shape}."
        raise ValueError(msg)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).any(axis=1).sum())
        msg = f"obsm[{key!r}] has NaN or infinite values in {bad} spots; recompute or drop those spots first."
        raise ValueError(msg)
    return values.astype(np.float32, copy=False)


def library_codes(adata: AnnData, library_key: str | None) -> np.ndarray:
    """Each spot's slide as strings (the rule of :func:`sepal_tl._validation.resolve_libraries`)."""
    return resolve_libraries(adata, library_key).astype(str).to_numpy()


def model_embeddings(
    adata: AnnData,
    model: SepalModel,
    *,
    embedding_key: str | None = None,
    image: Any = None,
    batch_size: int = 64,
    device: str | None = "auto",
    num_workers: int = 0,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    tta: bool = False,
) -> np.ndarray:
    """The raw embeddings the model's heads read: ``obsm[embedding_key]``, or computed with its backbone.

    Patches are cut and normalised exactly as in training (same :class:`PatchGeometry`, no augmentation).
    """
    if embedding_key is not None:
        values = checked_embeddings(adata, embedding_key)
        if values.shape[1] != model.encoder.embedding_dim:
            msg = (
                f"obsm[{embedding_key!r}] has {values.shape[1]} columns but the model was trained on "
                f"{model.encoder.embedding_dim}-dimensional embeddings of {model.config['encoder']['backbone']!r}; "
                "use embeddings of that encoder."
            )
            raise ValueError(msg)
        return values
    if model.encoder.backbone is None:
        msg = (
            f"The model was trained on precomputed embeddings (obsm[{model.embedding_key!r}]) and has no image "
            "backbone; pass embedding_key= naming the same encoder's embeddings of these spots."
        )
        raise ValueError(msg)
    lib_key = library_key or DEFAULT_LIBRARY_KEY
    return compute_embeddings(
        adata,
        model.encoder.backbone,
        model.geometry,
        sources=resolve_images(adata, image, library_key=lib_key),
        library_key=lib_key,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        tta=tta,
    )


def write_local_outputs(
    adata: AnnData,
    model: SepalModel,
    local: np.ndarray,
    raw: np.ndarray | None,
    key_added: str,
    *,
    order: np.ndarray | None = None,
) -> None:
    """Absolute local predictions to ``layers[f"{key_added}_local"]``; computed embeddings to ``obsm``.

    ``local`` is in the model's gene order; ``order`` maps it to ``adata``'s columns when they differ.
    """
    if raw is not None:
        adata.obsm[embedding_obsm(key_added)] = raw
    values = local + model.offset
    adata.layers[local_layer(key_added)] = values if order is None else values[:, order]
    adata.uns.setdefault(UNS, {}).setdefault("tl", {})[UNS_EMBEDDING_MODEL] = model.uid


def _frozen_backbone(
    adata: AnnData, embedding_key: str | None, backbone: str, pretrained, model_kwargs, strict, patch_size
) -> tuple[torch.nn.Module | None, EncoderSpec | None]:
    """The backbone of a frozen model: loaded from its source, or the one :func:`embed` recorded for the key."""
    if embedding_key is None:
        return load_backbone(
            backbone, pretrained=pretrained, model_kwargs=model_kwargs, strict=strict, image_size=patch_size
        )
    recorded = recorded_encoder(adata, embedding_key)
    if recorded is None or recorded["pretrained"] is None:
        logger.info("obsm[%r] has no reloadable encoder: the model will predict from embeddings only", embedding_key)
        return None, None
    spec = EncoderSpec.from_dict(recorded["encoder"])
    try:
        module, spec_now = load_backbone(
            None if spec.source == "folder" else spec.name,
            pretrained=recorded["pretrained"],
            model_kwargs={k: decode_arg(v) for k, v in recorded["model_kwargs"].items()},
            strict=strict,
            image_size=recorded["geometry"]["patch_size"],
        )
    except OSError as err:  # moved file, no network and no cache: the head needs only the embeddings
        logger.warning(
            "the encoder that made obsm[%r] cannot be loaded again (%s); the model will predict from embeddings "
            "only (pass embedding_key= to predict)",
            embedding_key,
            err,
        )
        return None, None
    if spec.sha256 and spec_now.sha256 and spec.sha256 != spec_now.sha256:
        msg = (
            f"obsm[{embedding_key!r}] was computed with weights of SHA-256 {spec.sha256[:12]}… but "
            f"{recorded['pretrained']!r} now has {spec_now.sha256[:12]}…; recompute the embeddings with sepal.tl.embed."
        )
        raise ValueError(msg)
    return module, spec_now


def _ridge_head(
    encoder: LocalEncoder,
    raw: np.ndarray,
    targets: np.ndarray,
    observed: np.ndarray | None,
    splits: dict[str, np.ndarray],
    libraries: np.ndarray,
    norm: str,
) -> dict[str, float]:
    """Fit the linear head in closed form (ridge, penalty chosen on the validation spots, else by GCV)."""
    train, val = splits["train"], splits["val"]
    if norm == "train":
        encoder.set_standardisation(*column_stats(raw[train]))
    features = encoder.standardise(raw, norm, libraries)
    coef, intercept, alpha, score = fit_ridge(
        features[train],
        targets[train],
        x_val=features[val] if val.size else None,
        y_val=targets[val] if val.size else None,
        weight_val=observed[val] if observed is not None and val.size else None,
    )
    with torch.no_grad():
        encoder.head.weight.copy_(torch.from_numpy(coef.T.copy()))
        encoder.head.bias.copy_(torch.from_numpy(intercept))
    logger.info("ridge head: alpha=%.3g, %s MSE %.4f", alpha, "validation" if val.size else "GCV", score)
    return {"ridge_alpha": alpha, "best_mse": score}


def _refuse_unused_with_embeddings(embedding_key: str | None, **image_options: Any) -> None:
    """With ``embedding_key`` no patch is cut: image options that were given would be ignored, so they are errors."""
    given = [name for name, value in image_options.items() if value is not None]
    if embedding_key is not None and given:
        msg = (
            f"{', '.join(f'{name}=' for name in given)} would be ignored: embedding_key= fits the head on embeddings "
            "computed already, so no image is read and no patch is cut. Leave them unset, or pass them to "
            "sepal.tl.embed."
        )
        raise ValueError(msg)


def _checked_options(
    *,
    freeze: bool | None,
    embedding_key: str | None,
    embedding_norm: str | None,
    stain_jitter: float,
    stain_norm: str | None,
    model_kwargs: dict[str, Any] | None,
    epochs: int,
    target: str,
    loss: str,
) -> tuple[bool, str, dict[str, Any]]:
    """Check :func:`fit_encoder`'s options together, before any work.

    Returns ``freeze`` and ``embedding_norm`` resolved, and ``model_kwargs`` as they are stored.
    """
    check_choice("target", target, ["delta", "absolute"])
    check_choice("loss", loss, ["mse", "masked_mse"])
    if freeze is None:
        freeze = embedding_key is not None
    if embedding_key is not None and not freeze:
        msg = "embedding_key= fits the head on fixed embeddings, so it needs freeze=True (or leave freeze unset)."
        raise ValueError(msg)
    if embedding_norm is not None:
        check_choice("embedding_norm", embedding_norm, EMBEDDING_NORMS)
        if not freeze and embedding_norm != "none":
            msg = (
                f"embedding_norm={embedding_norm!r} applies to frozen embeddings only; a fine-tuned encoder learns "
                "its own scale. Pass freeze=True, or leave embedding_norm unset."
            )
            raise ValueError(msg)
    if isinstance(stain_jitter, bool) or not isinstance(stain_jitter, int | float) or not 0 <= stain_jitter < 1:
        msg = f"stain_jitter={stain_jitter!r} must be a number in [0, 1) (0: off; 0.05 is the usual choice)."
        raise ValueError(msg)
    if stain_jitter and freeze:
        msg = "stain_jitter augments training patches of a fine-tuned encoder; frozen embeddings see no augmentation."
        raise ValueError(msg)
    if stain_norm is not None and embedding_key is not None:
        msg = (
            "stain_norm= changes how patches are cut, but embedding_key= uses embeddings computed already; pass "
            "stain_norm to sepal.tl.embed instead."
        )
        raise ValueError(msg)
    saved_kwargs = {k: encode_arg(v) for k, v in (model_kwargs or {}).items()}  # must be storable: check first
    if not freeze and (not isinstance(epochs, int) or epochs < 1):
        msg = (
            f"epochs={epochs!r}: fine-tuning needs at least one epoch, else the head would stay random. Pass "
            "epochs >= 1, or freeze=True to fit the head in closed form on frozen embeddings."
        )
        raise ValueError(msg)
    return freeze, embedding_norm or ("slide" if freeze else "none"), saved_kwargs


@dataclass
class _Loaded:
    """The backbone of a new local model and what :func:`embed` recorded for the embeddings it made.

    ``module`` and ``spec`` are ``None`` without a backbone; ``origin`` is ``recorded`` when that encoder was loaded
    again, else ``None``.
    """

    module: torch.nn.Module | None
    spec: EncoderSpec | None
    recorded: dict | None
    origin: dict | None


def _load_encoder(
    adata: AnnData,
    backbone: str,
    pretrained,
    model_kwargs: dict[str, Any] | None,
    strict: bool,
    patch_size: int | None,
    freeze: bool,
    embedding_key: str | None,
) -> _Loaded:
    """Load the backbone: the one recorded for ``embedding_key`` when frozen, else from ``backbone``."""
    if freeze:
        module, spec = _frozen_backbone(adata, embedding_key, backbone, pretrained, model_kwargs, strict, patch_size)
    else:
        module, spec = load_backbone(
            backbone, pretrained=pretrained, model_kwargs=model_kwargs, strict=strict, image_size=patch_size
        )
    recorded = recorded_encoder(adata, embedding_key) if embedding_key is not None else None
    return _Loaded(module, spec, recorded, recorded if module is not None else None)


def _geometry(
    loaded: _Loaded,
    *,
    patch_scale: float,
    patch_size: int | None,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
    stain_norm: str | None,
) -> PatchGeometry:
    """The patch geometry :func:`embed` recorded with reloaded embeddings, else the one asked for.

    Unset sizes and normalisation default to the pretrained weights' own.
    """
    if loaded.origin is not None:
        return PatchGeometry.from_dict(loaded.origin["geometry"])
    spec = loaded.spec
    return PatchGeometry(
        patch_scale=patch_scale,
        patch_size=patch_size or (spec.input_size if spec else 224),
        mean=mean or (spec.mean if spec else PatchGeometry().mean),  # PatchGeometry stores a tuple of floats
        std=std or (spec.std if spec else PatchGeometry().std),
        stain_norm=stain_norm,
    )


def _head_on(loaded: _Loaded, n_genes: int, raw: np.ndarray | None, embedding_key: str | None) -> LocalEncoder:
    """A new linear head over the backbone (over ``raw``'s columns without one)."""
    encoder = LocalEncoder(
        loaded.module, n_genes, embedding_dim=raw.shape[1] if raw is not None and loaded.module is None else None
    )
    if raw is not None and raw.shape[1] != encoder.embedding_dim:
        msg = f"obsm[{embedding_key!r}] has {raw.shape[1]} columns but its recorded encoder gives {encoder.embedding_dim}."
        raise ValueError(msg)
    return encoder


def _encoder_config(
    loaded: _Loaded,
    encoder: LocalEncoder,
    freeze: bool,
    embedding_key: str | None,
    embedding_norm: str,
    pretrained,
    model_kwargs: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """The ``config["encoder"]`` of the model (the fit's own numbers are added by the caller)."""
    spec, origin = loaded.spec, loaded.origin
    return {
        "backbone": spec.name if spec is not None else f"obsm[{embedding_key!r}]",
        "spec": spec.to_dict() if spec is not None else None,
        "embedding_dim": encoder.embedding_dim,
        "freeze": bool(freeze),
        "embedding_key": embedding_key,
        "embedding_norm": embedding_norm,
        "head": "ridge" if freeze else "fine-tuned",
        "pretrained": str(origin["pretrained"] if origin else pretrained),
        "model_kwargs": origin["model_kwargs"] if origin else model_kwargs,
        "tta": bool(loaded.recorded["tta"]) if loaded.recorded else False,
        **training,
        "epochs": 0 if freeze else training["epochs"],
    }


@spatialdata_aware(images="full")
@inject_docs
def fit_encoder(
    adata: AnnData,
    *,
    image: Any = None,
    layer: str = DENOISED,
    split_key: str = SPLIT,
    backbone: str = "vit_base_patch16_224",
    pretrained: bool | str | os.PathLike = True,
    model_kwargs: dict[str, Any] | None = None,
    strict: bool = True,
    freeze: bool | None = None,
    embedding_key: str | None = None,
    embedding_norm: Literal["none", "train", "slide"] | None = None,
    target: Literal["delta", "absolute"] = "delta",
    loss: Literal["mse", "masked_mse"] = "mse",
    mask: str = OBSERVED,
    patch_scale: float = 1.0,
    patch_size: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    stain_jitter: float = 0.0,
    stain_norm: str | None = None,
    epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    patience: int | None = None,
    num_workers: int = 0,
    device: str = "auto",
    random_state: int | None = 0,
    trainer_kwargs: dict[str, Any] | None = None,
    key_added: str = PREDICTION,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
) -> SepalModel:
    """Fit SEPAL's local stage: a linear head over the genes on an image encoder.

    Two modes. **Fine-tuning** (``freeze=False``, the paper): any timm backbone gets a linear head and is trained
    end to end with Lightning to regress ``target``; the epoch with the lowest validation MSE is kept.
    **Frozen** (``freeze=True``, the field's usual protocol with foundation models): the backbone embeds every
    spot once (or ``embedding_key`` names embeddings already in ``obsm``, e.g. from :func:`embed`), the
    embeddings are standardised (``embedding_norm``) and the head is fitted in closed form by ridge regression,
    its penalty chosen on the validation spots (by generalised cross-validation without them) — seconds.

    Parameters
    ----------
    adata
        Spots × genes with ``layers[layer]``, ``obs[split_key]``, spot coordinates and images (images are not
        needed with ``embedding_key``). Every gene of ``adata`` is predicted: subset to the selected genes first
        (:func:`sepal_tl.pp.run` does).
    image
        Image source per library, see :func:`sepal_tl.tl.resolve_images`.
    layer
        Expression to learn (SEPAL: the denoised log2(TPM + 1)).
    split_key
        %(split_key)s
    backbone
        A timm name (the paper: ``"vit_base_patch16_224"``; ST-Net: ``"densenet121"``), with a pretrained tag
        (``"vit_base_patch16_224.augreg_in21k"``), or a hub id (``"hf-hub:MahmoodLab/UNI"``); see
        :func:`embed` and the "Foundation models" page.
    pretrained
        ``True`` (through timm and huggingface_hub's cache), ``False``, a weights file (``.safetensors``,
        ``.bin``/``.pth`` read with ``weights_only=True``) or a local hub-style folder.
    model_kwargs
        %(model_kwargs)s
    strict
        Refuse pretrained weights with missing or unexpected keys.
    freeze
        Keep the backbone frozen and fit the head in closed form (default: ``True`` with ``embedding_key``, else
        ``False``).
    embedding_key
        ``obsm`` key of precomputed embeddings to fit on (implies ``freeze=True``). When they were made by
        :func:`embed`, the same encoder is attached to the model so that it can embed new slides; otherwise the
        model predicts from embeddings only (pass the key to :func:`predict`).
    embedding_norm
        Frozen mode only: ``"slide"`` (default; each slide's embeddings standardised by that slide's own mean and
        SD, which removes slide-level stain shifts of the features and uses no expression), ``"train"`` (by the
        training spots' statistics, stored with the model) or ``"none"``.
    target
        ``"delta"`` (Δ = y − mean over the training spots, the paper's relative supervision) or ``"absolute"``.
    loss
        ``"mse"`` over all entries (the paper, imputed values included) or ``"masked_mse"`` over observed
        entries only (``layers[mask]``); in frozen mode it is the criterion that chooses the ridge penalty.
    mask
        Boolean layer of observed entries (for ``loss="masked_mse"``).
    patch_scale
        %(patch_scale)s
    patch_size, mean, std
        Input side and per-channel normalisation of the patches (default: the pretrained weights' own).
    stain_jitter
        Fine-tuning only: σ of the random stain (HED) augmentation of training patches
        (:func:`~sepal_tl.tl._stain.hed_jitter`; Tellez et al. 2018 use 0.05; 0: off).
    stain_norm
        ``None``, ``"macenko"`` or ``"reinhard"``: map every slide's stains onto the mean appearance of the
        training slides before the network sees them (see :class:`PatchGeometry`); the target is saved with the
        model, so new slides are mapped onto it too. With ``embedding_key``, set it in :func:`embed` instead.
    epochs, batch_size, lr, weight_decay
        Adam optimisation (fine-tuning; ``epochs`` must be at least 1). ``batch_size`` is also the embedding batch.
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
        Embeddings computed here go to ``obsm[f"X_{key_added}"]``, absolute local predictions to
        ``layers[f"{key_added}_local"]``.
    library_key
        %(library_key)s %(one_slide_rule)s
    table_key
        %(table_key)s %(table_elements)s

    Returns
    -------
    The trained :class:`~sepal_tl.tl.SepalModel`; ``adata`` gains the local predictions, the embeddings (unless
    ``embedding_key`` was given) and ``uns["sepal"]["tl"]["fit_encoder"]``.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
    >>> model = sepal.tl.fit_encoder(
    ...     adata, backbone="test_vit", pretrained=False, patch_size=32, epochs=1, device="cpu"
    ... )
    >>> model
    SepalModel(test_vit, encoder only, 16 genes, target='delta', patches PatchGeometry(...))
    >>> adata.layers["sepal_local"].shape  # train mean + the predicted deviation from it
    (140, 16)
    >>> list(model.history["encoder"][0])  # one entry per epoch
    ['epoch', 'val_mse', 'train_mse', 'train_seconds']
    """
    _refuse_unused_with_embeddings(embedding_key, image=image, patch_size=patch_size, mean=mean, std=std)
    freeze, norm, saved_kwargs = _checked_options(
        freeze=freeze,
        embedding_key=embedding_key,
        embedding_norm=embedding_norm,
        stain_jitter=stain_jitter,
        stain_norm=stain_norm,
        model_kwargs=model_kwargs,
        epochs=epochs,
        target=target,
        loss=loss,
    )
    splits = split_indices(adata, split_key)
    bin_size = bin_size_um(adata)
    values = dense_layer(adata, layer)
    observed = dense_layer(adata, mask) if loss == "masked_mse" else None
    raw = checked_embeddings(adata, embedding_key) if embedding_key is not None else None
    libraries = library_codes(adata, library_key)
    lib_key = library_key or DEFAULT_LIBRARY_KEY
    sources = None if embedding_key is not None else resolve_images(adata, image, library_key=lib_key)
    for lib in sources or ():
        PatchGeometry(patch_scale=patch_scale).window_side(adata, lib)  # every slide needs a spot diameter
    seed = settings.seed if random_state is None else random_state
    torch.manual_seed(seed)

    means = values[splits["train"]].mean(axis=0)
    targets = values - (means if target == "delta" else np.zeros_like(means))
    loaded = _load_encoder(adata, backbone, pretrained, model_kwargs, strict, patch_size, freeze, embedding_key)
    geometry = _geometry(
        loaded, patch_scale=patch_scale, patch_size=patch_size, mean=mean, std=std, stain_norm=stain_norm
    )
    if sources is not None:
        geometry = with_stain_target(adata, sources, geometry, library_key=lib_key, indices=splits["train"])
    encoder = _head_on(loaded, adata.n_vars, raw, embedding_key)

    training: dict[str, Any]  # the options of the fine-tuning run, recorded in the model's config
    training = {"loss": loss, "stain_jitter": stain_jitter, "epochs": epochs, "batch_size": batch_size, "lr": lr}
    training |= {"weight_decay": weight_decay, "patience": patience}
    loading: dict[str, Any] = {"device": device, "num_workers": num_workers, "library_key": lib_key}
    history: list[dict[str, float]]
    if freeze:
        if raw is None:
            assert loaded.module is not None and sources is not None  # no embedding_key: a backbone and images
            raw = compute_embeddings(adata, loaded.module, geometry, sources=sources, batch_size=batch_size, **loading)
        fitted, history = _ridge_head(encoder, raw, targets, observed, splits, libraries, norm), []
    else:
        encoder, fitted, history = _fine_tune(
            adata,
            encoder,
            geometry,
            sources,
            targets,
            observed,
            splits,
            seed=seed,
            trainer_kwargs=trainer_kwargs,
            **training,
            **loading,
        )
    encoder_config = _encoder_config(loaded, encoder, freeze, embedding_key, norm, pretrained, saved_kwargs, training)
    encoder_config |= {"random_state": seed, **fitted}
    config = {"target": target, "layer": layer, "bin_size_um": bin_size, "encoder": encoder_config, "spatial": None}
    model = SepalModel(
        genes=list(adata.var_names),
        gene_means=means,
        geometry=geometry,
        config=config,
        encoder=encoder,
        history={"encoder": history},
    )
    if raw is None or not freeze:
        raw = model_embeddings(adata, model, image=sources, batch_size=batch_size, **loading)
    _, local = model.heads_input(raw, libraries)
    write_local_outputs(adata, model, local, None if embedding_key is not None else raw, key_added)
    record(
        adata, "tl", "fit_encoder", {**encoder_config, "spec": None, "target": target, "layer": layer, "uid": model.uid}
    )
    logger.info("added '%s_local' to adata.layers", key_added)
    return model


def _fine_tune(
    adata,
    encoder,
    geometry,
    sources,
    targets,
    observed,
    splits,
    *,
    loss,
    epochs,
    batch_size,
    lr,
    weight_decay,
    patience,
    num_workers,
    device,
    seed,
    trainer_kwargs,
    library_key,
    stain_jitter,
) -> tuple[LocalEncoder, dict[str, float], list[dict[str, float]]]:
    """Train backbone and head end to end with Lightning; returns the trained encoder, best MSE and history."""
    L = import_lightning()
    L.seed_everything(seed, workers=True, verbose=False)
    mask = observed if observed is not None else np.ones_like(targets)
    packed = np.concatenate([targets, mask], axis=1)

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
            library_key=library_key,
            random_state=seed,
            stain_jitter=stain_jitter if train else 0.0,
        )
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers)

    task = regression_task(encoder, EncoderLoss(loss), lr=lr, weight_decay=weight_decay)
    history, best = run_training(
        task,
        loader("train", True),
        loader("val", False),
        epochs=epochs,
        device=device,
        patience=patience,
        trainer_kwargs=trainer_kwargs,
    )
    return cast(LocalEncoder, task.net), {"best_mse": best}, history
