"""``sepal.tl.fit``: both SEPAL stages in one call."""

from __future__ import annotations

import inspect
from typing import Any

from anndata import AnnData

from sepal_tl._docs import inject_docs
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._validation import check_choice
from sepal_tl.tl._local import fit_encoder
from sepal_tl.tl._model import SepalModel
from sepal_tl.tl._presets import PRESETS
from sepal_tl.tl._spatial import check_spatial_options, fit_spatial

_SHARED = ("image", "split_key", "device", "random_state", "key_added", "library_key", "embedding_key")
_PER_STAGE = ("epochs", "batch_size", "lr", "weight_decay", "patience", "trainer_kwargs")


def _options(func) -> set[str]:
    return {name for name, p in inspect.signature(func).parameters.items() if p.kind is p.KEYWORD_ONLY}


def stage_options(preset: str | None = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """Split ``fit``'s options into those of :func:`fit_encoder` and :func:`fit_spatial` (preset first).

    Raises ``TypeError`` for an unknown option or one that exists in both stages without a stage prefix, and
    ``ValueError`` for an unknown preset — before any work is done.
    """
    encoder_names, spatial_names = _options(fit_encoder), _options(fit_spatial)
    stage: dict[str, dict[str, Any]] = {"encoder": {}, "spatial": {}}
    if preset is not None:
        check_choice("preset", preset, list(PRESETS))
        stage = {name: dict(values) for name, values in PRESETS[preset].items()}
    unknown = []
    for name, value in kwargs.items():
        prefix, _, rest = name.partition("_")
        if name in _PER_STAGE:
            msg = f"{name!r} exists in both stages; pass encoder_{name}= and/or spatial_{name}=."
            raise TypeError(msg)
        if prefix in stage and rest in _PER_STAGE:
            stage[prefix][rest] = value
        elif name in _SHARED:
            stage["encoder"][name] = stage["spatial"][name] = value
        elif name in encoder_names:
            stage["encoder"][name] = value
        elif name in spatial_names:
            stage["spatial"][name] = value
        else:
            unknown.append(name)
    if unknown:
        msg = f"Unknown option(s) {unknown} for sepal.tl.fit; see fit_encoder and fit_spatial for the valid ones."
        raise TypeError(msg)
    return stage


@spatialdata_aware(images="full")
@inject_docs
def fit(
    adata: AnnData, *, image: Any = None, spatial: bool = True, preset: str | None = None, **kwargs: Any
) -> SepalModel:
    """Fit SEPAL: the local encoder (:func:`fit_encoder`) and then the spatial stage (:func:`fit_spatial`).

    Parameters
    ----------
    adata
        Spots × genes with the target layer, splits, coordinates and images (see :func:`fit_encoder`).
    image
        Image sources per library.
    spatial
        Train the spatial stage too. ``False`` gives the local encoder alone (with ``target="delta"`` the
        paper's "ViT + Δ" baseline; with ``target="absolute"`` the plain regressor).
    preset
        ``"paper_visium"``, ``"paper_stnet"`` (the paper's hyper-parameters; they need a GPU and, for
        ``pretrained=True``, internet once) or ``"cpu"`` (small backbone, small patches). See
        :data:`sepal_tl.tl.PRESETS`. Explicit options override the preset.
    **kwargs
        Options of :func:`fit_encoder` and :func:`fit_spatial`. ``image``, ``split_key``, ``device``,
        ``random_state``, ``key_added``, ``library_key`` and ``embedding_key`` go to both; options that both stages have
        (``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``patience``, ``trainer_kwargs``) take a stage
        prefix: ``encoder_epochs=10``, ``spatial_lr=1e-3``.
    table_key
        %(table_key)s %(table_elements)s

    Returns
    -------
    The trained :class:`~sepal_tl.tl.SepalModel`. ``adata`` gains ``obsm["X_sepal"]``, ``layers["sepal_local"]``
    and, with ``spatial=True``, ``layers["sepal"]``.

    Examples
    --------
    One epoch per stage of a tiny network shows the calls and what they write; a real run is
    ``sepal.tl.fit(adata, preset="cpu")`` on a CPU (minutes) or ``preset="paper_visium"`` on a GPU.

    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=3, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.run(adata, preset="synthetic", n_top=16)
    >>> model = sepal.tl.fit(
    ...     adata, backbone="test_vit", pretrained=False, patch_size=32,
    ...     encoder_epochs=1, spatial_epochs=1, device="cpu",
    ... )
    >>> model
    SepalModel(test_vit, encoder + spatial head, 16 genes, target='delta', patches PatchGeometry(...))
    >>> adata.layers["sepal_local"].shape, adata.layers["sepal"].shape, adata.obsm["X_sepal"].shape
    ((140, 16), (140, 16), (140, 64))
    >>> list(adata.uns["sepal"]["tl"])
    ['embedding_model', 'fit_encoder', 'fit_spatial']
    """
    stage = stage_options(preset, image=image, **kwargs)
    if spatial:  # a typo in the spatial options must not cost an encoder run
        defaults = {
            name: p.default
            for name, p in inspect.signature(fit_spatial).parameters.items()
            if name in inspect.signature(check_spatial_options).parameters
        }
        check_spatial_options(**{**defaults, **{k: v for k, v in stage["spatial"].items() if k in defaults}})
    model = fit_encoder(adata, **stage["encoder"])
    if spatial:
        fit_spatial(adata, model, **stage["spatial"])
    return model
