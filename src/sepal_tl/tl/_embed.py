"""``sepal.tl.embed``: frozen embeddings of any image encoder, streamed into ``obsm``."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np
import torch
from anndata import AnnData
from torch import nn

from sepal_tl._docs import inject_docs
from sepal_tl._keys import DEFAULT_LIBRARY_KEY, UNS, UNS_EMBEDDINGS
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._uns import record
from sepal_tl._validation import check_finite
from sepal_tl.io._image_sources import resolve_images
from sepal_tl.tl._backbones import EncoderSpec, encode_arg, load_backbone
from sepal_tl.tl._encoder import backbone_width
from sepal_tl.tl._model import SepalModel
from sepal_tl.tl._patches import PatchGeometry, SpotPatches, eight_symmetries, with_stain_target
from sepal_tl.tl._training import device_of


def compute_embeddings(
    adata: AnnData,
    backbone: nn.Module,
    geometry: PatchGeometry,
    *,
    sources: dict,
    library_key: str,
    batch_size: int = 64,
    device: str | None = "auto",
    num_workers: int = 0,
    tta: bool = False,
) -> np.ndarray:
    """Pooled features of ``backbone`` for every spot's patch, written batch by batch into one float32 array.

    Patches are cut and normalised by ``geometry`` (no augmentation); ``tta=True`` averages the 8 symmetries of
    each patch. bf16 autocast on GPUs that support it. Memory: the output array plus one batch.
    """
    dataset = SpotPatches(adata, sources, geometry, library_key=library_key)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    target = device_of(device)
    out = np.empty((adata.n_obs, backbone_width(backbone)), dtype=np.float32)
    bf16 = target.type == "cuda" and torch.cuda.is_bf16_supported()
    backbone = backbone.to(target).eval()
    start = 0
    with torch.inference_mode(), torch.autocast(target.type, dtype=torch.bfloat16, enabled=bf16):
        for patches in _progress(loader):
            views = eight_symmetries(patches) if tta else patches[None]
            features = torch.stack([backbone(view.to(target, non_blocking=True)).float() for view in views]).mean(0)
            if features.ndim != 2:
                msg = (
                    f"The encoder returns {tuple(features.shape[1:])} per patch, not one pooled vector (its global_pool "
                    "is off, e.g. Virchow2's hub config). Pass model_kwargs={'global_pool': 'token'} (class token) or "
                    "{'global_pool': 'avg'}, or pool the tokens yourself and store them in obsm."
                )
                raise ValueError(msg)
            out[start : start + len(patches)] = features.cpu().numpy()
            start += len(patches)
    backbone.to("cpu")
    check_finite(out, what="the encoder's embeddings")
    return out


def _progress(loader):
    from sepal_tl._settings import settings

    if settings.verbosity < 1 or len(loader) < 2:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc="embedding", unit="batch", leave=False)


def default_key(name: str) -> str:
    """``obsm`` key for an encoder name: ``"hf-hub:MahmoodLab/UNI"`` → ``"X_uni"``, ``"densenet121"`` → ``"X_densenet121"``."""
    last = re.split(r"[/:]", str(name).rstrip("/"))[-1].lower()
    return "X_" + re.sub(r"[^0-9a-z]+", "_", last.removesuffix(".safetensors")).strip("_")


def recorded_encoder(adata: AnnData, key: str) -> dict[str, Any] | None:
    """What :func:`embed` recorded for ``obsm[key]`` (``None`` if it did not make them).

    A dict with ``"encoder"`` (:meth:`EncoderSpec.to_dict`), ``"geometry"`` (:meth:`PatchGeometry.to_dict`),
    ``"tta"``, and the ``"pretrained"`` / ``"model_kwargs"`` needed to load the same encoder again
    (``"pretrained"`` is ``None`` when the encoder came from a :class:`SepalModel`).
    """
    entry = adata.uns.get(UNS, {}).get(UNS_EMBEDDINGS, {}).get(key)
    return None if entry is None else json.loads(entry)


@spatialdata_aware(images="full")
@inject_docs
def embed(
    adata: AnnData,
    encoder: str | os.PathLike | SepalModel,
    *,
    pretrained: bool | str | os.PathLike = True,
    model_kwargs: dict[str, Any] | None = None,
    strict: bool = True,
    image: Any = None,
    key_added: str | None = None,
    patch_scale: float = 1.0,
    patch_size: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    stain_norm: str | None = None,
    batch_size: int = 64,
    tta: bool = False,
    device: str = "auto",
    num_workers: int = 0,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
) -> None:
    """Frozen embeddings of an image encoder for every spot, into ``adata.obsm``.

    The field's usual first step with pathology foundation models (UNI, H-optimus-0, Virchow2, Phikon, CONCH …):
    embed once, then fit light heads on the embeddings (:func:`fit_encoder` with ``embedding_key=``) and SEPAL's
    spatial stage (:func:`fit_spatial` with ``embedding_key=``). Works on H&E-only AnnData too.

    Parameters
    ----------
    adata
        Spots with ``obsm["spatial"]``, spot diameters and images (see :func:`fit_encoder`); expression is not used.
    encoder
        A timm name (``"densenet121"``, ``"vit_base_patch16_224.augreg_in21k"``), a hub id
        (``"hf-hub:MahmoodLab/UNI"``), a local hub-style folder (``config.json`` + weights) or a trained
        :class:`SepalModel` (its backbone and patch geometry).
    pretrained
        ``True`` (weights through timm and huggingface_hub's cache; ``HF_HUB_OFFLINE=1`` with a filled cache works
        offline), ``False`` (random weights) or a weights file (``.safetensors``, ``.bin``/``.pth``).
    model_kwargs
        %(model_kwargs)s
    strict
        Refuse weights with missing or unexpected keys.
    image
        Image sources per library (see :func:`sepal_tl.tl.resolve_images`).
    key_added
        ``obsm`` key (default from the encoder's name, e.g. ``"X_uni"``, ``"X_densenet121"``).
    patch_scale
        %(patch_scale)s
    patch_size, mean, std
        Input side and normalisation (default: the pretrained weights' own, from timm's ``pretrained_cfg`` or the
        hub/folder ``config.json``).
    stain_norm
        ``None``, ``"macenko"`` or ``"reinhard"``: map every slide's stains onto the mean appearance of the slides
        in ``adata`` before embedding (see :class:`PatchGeometry`; the target is recorded with the embeddings, so
        new slides embedded for a model trained on them map onto the same target). Not with a
        :class:`SepalModel`: its patch geometry brings its own.
    batch_size, device, num_workers
        Inference settings; bf16 autocast on GPUs that support it.
    tta
        Average the embeddings over the 8 symmetries of each patch (8x slower).
    library_key
        %(library_key)s %(one_slide_rule)s
    table_key
        %(table_key)s %(table_elements)s

    Returns
    -------
    Nothing; ``adata.obsm[key_added]`` holds ``(n_spots, width)`` float32 embeddings and
    ``adata.uns["sepal"]["embeddings"][key_added]`` (JSON) the encoder's source and the patch geometry, so that
    :func:`fit` can attach the same encoder to a model trained on these embeddings.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=1, n_spots=50, pitch_px=32, random_state=0)
    >>> sepal.tl.embed(adata, "test_vit", pretrained=False, patch_size=32, device="cpu")  # a tiny ViT
    >>> adata.obsm["X_test_vit"].shape
    (50, 64)
    """
    lib_key = library_key or DEFAULT_LIBRARY_KEY
    sources = resolve_images(adata, image, library_key=lib_key)
    if isinstance(encoder, SepalModel):
        if encoder.encoder.backbone is None:
            msg = "This SepalModel was trained on precomputed embeddings and has no image backbone to embed with."
            raise ValueError(msg)
        options = {"patch_size": patch_size, "mean": mean, "std": std, "stain_norm": stain_norm}
        given = [name for name, value in {**options, "model_kwargs": model_kwargs}.items() if value is not None]
        if given:
            msg = (
                f"{', '.join(f'{name}=' for name in given)} cannot change a SepalModel's encoder: its weights and "
                "patch geometry bring their own; leave them unset."
            )
            raise ValueError(msg)
        backbone, geometry = encoder.encoder.backbone, encoder.geometry
        spec = EncoderSpec.from_dict(encoder.config["encoder"]["spec"])
        name = spec.name
    else:
        name = str(encoder)
        folder = os.path.isdir(name)
        backbone, spec = load_backbone(
            None if folder else name,
            pretrained=name if folder else pretrained,
            model_kwargs=model_kwargs,
            strict=strict,
            image_size=patch_size,
        )
        geometry = PatchGeometry(
            patch_scale=patch_scale,
            patch_size=patch_size or spec.input_size,
            mean=mean or spec.mean,  # PatchGeometry stores any 3 numbers as a tuple of floats
            std=std or spec.std,
            stain_norm=stain_norm,
        )
    for lib in sources:
        geometry.window_side(adata, lib)  # every slide needs a spot diameter
    geometry = with_stain_target(adata, sources, geometry, library_key=lib_key)
    key = key_added or default_key(name)
    if isinstance(encoder, SepalModel) or spec.source == "random":
        source: str | bool | None = None  # no file or hub id would give these weights again
    elif os.path.isdir(name):
        source = os.path.abspath(name)
    elif not isinstance(pretrained, bool):
        source = os.path.abspath(pretrained)
    else:
        source = pretrained
    entry = json.dumps(
        {
            "encoder": spec.to_dict(),
            "geometry": geometry.to_dict(),
            "tta": tta,
            "pretrained": source,
            "model_kwargs": {k: encode_arg(v) for k, v in (model_kwargs or {}).items()},
        }
    )
    values = compute_embeddings(
        adata,
        backbone,
        geometry,
        sources=sources,
        library_key=lib_key,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        tta=tta,
    )
    adata.obsm[key] = values
    adata.uns.setdefault(UNS, {}).setdefault(UNS_EMBEDDINGS, {})[key] = entry
    record(adata, "tl", "embed", {"key_added": key, "encoder": spec.name, "source": spec.source, "tta": tta})
    logger.info("added %r (%d x %d) to adata.obsm", key, *values.shape)
