"""Image backbones from every source the field uses: timm names, ``hf-hub:`` ids, weight files, hub-style folders.

:func:`load_backbone` returns the backbone (pooled features, no classifier) and an :class:`EncoderSpec` that records
where it came from and how to rebuild its architecture offline (timm architecture + ``model_args``), the input
size and the normalisation of its pretrained weights. A saved :class:`~sepal_tl.tl.SepalModel` stores the spec
with the weights, so loading it never needs the hub again.

Weight files are read by our own code (:func:`read_state_dict`): safetensors, or ``torch.load(weights_only=True)``
for ``.bin``/``.pth``/``.pt``/``.ckpt`` whatever the installed torch's default, so a checkpoint is never unpickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepal_tl._compat import import_timm
from sepal_tl._logging import logger

HUB_PREFIX = "hf-hub:"
#: Key prefixes that training frameworks put in front of a backbone's own names; stripped when loading a file.
KEY_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "trunk.")
#: File names of a hub-style folder (timm / huggingface_hub layout), in order of preference.
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_TORCH_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
_OFFLINE_HINT = (
    "No network and no local copy: fill huggingface_hub's cache (HF_HOME / HF_HUB_CACHE) on a machine with "
    "internet, then run with HF_HUB_OFFLINE=1; or download the weights and pass pretrained=<path to the file or "
    "hub-style folder>."
)


@dataclass(frozen=True)
class EncoderSpec:
    """Where a backbone came from and how to rebuild it offline; saved with every model.

    Attributes
    ----------
    name
        What the user passed as ``backbone`` (a timm name, possibly with a pretrained tag, or ``hf-hub:org/name``).
    architecture
        The timm architecture that :func:`timm.create_model` rebuilds with ``model_args``.
    model_args
        Keyword arguments of :func:`timm.create_model` (the hub config's ``model_args`` plus ``model_kwargs``).
    source
        ``"timm"`` or ``"hf-hub"`` (pretrained weights through timm and huggingface_hub's cache), ``"file"``,
        ``"folder"`` (a local hub-style folder) or ``"random"`` (no pretrained weights).
    weights
        Hub id or file name of the pretrained weights (``None`` for ``"random"``).
    sha256
        SHA-256 of the weights file when it is known (files, folders, hub cache), else ``None``.
    input_size, mean, std
        Input side and per-channel normalisation of the pretrained weights.
    """

    name: str
    architecture: str
    model_args: dict[str, Any] = field(default_factory=dict)
    source: str = "random"
    weights: str | None = None
    sha256: str | None = None
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (layer classes in ``model_args`` are stored by their import path)."""
        out = dataclasses.asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out["model_args"] = {k: encode_arg(v) for k, v in self.model_args.items()}
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EncoderSpec:
        """Inverse of :meth:`to_dict`."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        kwargs["mean"], kwargs["std"] = tuple(values["mean"]), tuple(values["std"])
        kwargs["model_args"] = {k: decode_arg(v) for k, v in values.get("model_args", {}).items()}
        return cls(**kwargs)

    def build(self) -> nn.Module:
        """The architecture with random weights (the saved model's weights are loaded over it)."""
        timm = import_timm()
        return timm.create_model(self.architecture, pretrained=False, **{**self.model_args, "num_classes": 0})


#: Modules whose layers and activations may appear in ``model_kwargs`` (e.g. Virchow2's ``mlp_layer``); they are
#: stored by import path and imported again at load — nothing else is ever imported from a saved file.
ARG_MODULES = ("timm.layers", "torch.nn")


def encode_arg(value: Any) -> Any:
    """A ``model_kwargs`` value in JSON form: plain values as they are, timm/torch layers as ``{"import": path}``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [encode_arg(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode_arg(v) for k, v in value.items()}
    import importlib

    for module_name in ARG_MODULES:
        module = importlib.import_module(module_name)
        name = next((n for n in dir(module) if getattr(module, n) is value), None)
        if name is not None:
            return {"import": f"{module_name}.{name}"}
    msg = (
        f"model_kwargs value {value!r} cannot be saved with the model: use plain values, or layers and activations "
        f"that {' / '.join(ARG_MODULES)} export (e.g. timm.layers.SwiGLUPacked, torch.nn.SiLU)."
    )
    raise ValueError(msg)


def decode_arg(value: Any) -> Any:
    """Inverse of :func:`encode_arg`; only names exported by :data:`ARG_MODULES` are imported."""
    if isinstance(value, list):
        return [decode_arg(v) for v in value]
    if isinstance(value, dict) and set(value) == {"import"}:
        import importlib

        module_name, _, name = str(value["import"]).rpartition(".")
        if module_name not in ARG_MODULES:
            msg = f"model_args names {value['import']!r}; only layers of {ARG_MODULES} can be restored."
            raise ValueError(msg)
        return getattr(importlib.import_module(module_name), name)
    if isinstance(value, dict):
        return {k: decode_arg(v) for k, v in value.items()}
    return value


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a torch file read with ``weights_only=True`` (never unpickled).

    Checkpoints that nest the weights under ``"state_dict"``, ``"model"`` or ``"module"`` are unwrapped.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as err:
            msg = f"{str(path)!r} is not a readable safetensors file ({err}); download it again."
            raise ValueError(msg) from err
    if path.suffix not in _TORCH_SUFFIXES:
        msg = f"pretrained={str(path)!r}: unknown weights format; use .safetensors, .bin, .pth, .pt or .ckpt."
        raise ValueError(msg)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError/RuntimeError for unsafe or broken files
        msg = (
            f"{str(path)!r} cannot be read as plain tensors with torch.load(weights_only=True) ({err}). "
            "Convert it to .safetensors, or re-save only its state dict."
        )
        raise ValueError(msg) from err
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)."
        raise ValueError(msg)
    return state


def _strip_prefixes(state: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    """Remove framework prefixes (``module.`` …) that most keys carry and the model's own names do not."""
    for prefix in KEY_PREFIXES:
        carried = sum(k.startswith(prefix) for k in state)
        if carried * 2 > len(state) and not any(k.startswith(prefix) for k in own):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _classifier_names(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ("head", "fc", "classifier")
    return (names,) if isinstance(names, str) else tuple(names)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, strict: bool = True, origin: str) -> None:
    """Load ``state`` into ``model`` after the usual clean-up.

    Framework prefixes are stripped, the architecture's own checkpoint filter is applied (e.g. a ViT's position
    embeddings are resampled to the model's input size) and classifier weights are dropped (the backbone has none).
    With ``strict=True`` any other missing or unexpected key raises ``ValueError`` listing the first ones.
    """
    own = set(model.state_dict())
    state = _strip_prefixes(state, own)
    checkpoint_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if checkpoint_filter is not None:
        state = checkpoint_filter(state, model)
    heads = tuple(f"{name}." for name in _classifier_names(model))
    dropped = [k for k in state if k not in own and k.startswith(heads)]
    state = {k: v for k, v in state.items() if k not in dropped}
    if dropped:
        logger.info("%s: ignored %d classifier weights (the backbone returns pooled features)", origin, len(dropped))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        msg = (
            f"The weights in {origin} do not fit the architecture {type(model).__name__}: "
            f"{len(missing)} missing keys (e.g. {list(missing)[:5]}), {len(unexpected)} unexpected keys "
            f"(e.g. {list(unexpected)[:5]}). Pass the architecture options the checkpoint was trained with as "
            "model_kwargs= (e.g. UNI: model_kwargs={'init_values': 1e-5, 'dynamic_img_size': True}), choose the "
            "matching backbone=, or load what fits with strict=False."
        )
        raise ValueError(msg)
    if missing or unexpected:
        logger.warning(
            "%s: %d missing and %d unexpected keys ignored (strict=False)", origin, len(missing), len(unexpected)
        )


def _hub_file(repo_id: str, filename: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        return hf_hub_download(repo_id, filename)
    except (OSError, HfHubHTTPError, OfflineModeIsEnabled) as err:
        msg = f"Cannot get {filename!r} of the hub model {repo_id!r} ({type(err).__name__}). {_OFFLINE_HINT}"
        raise OSError(msg) from err


def _cached_hub_weights(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for name in FOLDER_WEIGHTS:
        path = try_to_load_from_cache(repo_id, name)
        if isinstance(path, str):
            return path
    return None


def _read_config(path: str | os.PathLike) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        msg = f"{str(path)!r} is not a readable JSON model config ({err})."
        raise ValueError(msg) from err
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        msg = f"{str(path)!r} names no 'architecture' (a timm model name), so the backbone cannot be built."
        raise ValueError(msg)
    return config


def _check_timm_name(timm, name: str) -> None:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0].split('_')[0]}*")[:8]
        msg = (
            f"backbone={name!r} is not a timm model. Similar names: {close}. Use a timm name (see "
            "timm.list_models()), a pretrained tag such as 'vit_base_patch16_224.augreg_in21k', or 'hf-hub:org/name'."
        )
        raise ValueError(msg)


def _create(timm, name: str, *, pretrained: bool, image_size: int | None, default_size: int, kwargs: dict) -> nn.Module:
    """``timm.create_model`` with ``img_size`` for architectures that take one, when a non-native size is asked."""
    args = {**kwargs, "num_classes": 0}  # a backbone: pooled features, whatever a config or the user says
    if image_size is not None and image_size != default_size and "img_size" not in args:
        try:
            return timm.create_model(name, pretrained=pretrained, img_size=image_size, **args)
        except TypeError:  # CNNs take any input size and no img_size argument
            pass
    return timm.create_model(name, pretrained=pretrained, **args)


def _build_and_load(
    timm, architecture: str, weights: Path, *, values: dict, kwargs: dict, strict: bool, image_size: int | None
) -> nn.Module:
    """The architecture with random weights, then a local weights file loaded over it (offline)."""
    default = values.get("input_size", 224)
    model = _create(timm, architecture, pretrained=False, image_size=image_size, default_size=default, kwargs=kwargs)
    load_weights(model, read_state_dict(weights), strict=strict, origin=repr(str(weights)))
    return model


def _spec_values(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = cfg or {}
    out: dict[str, Any] = {}
    if cfg.get("input_size"):
        out["input_size"] = int(cfg["input_size"][-1])
    for key in ("mean", "std"):
        if cfg.get(key) is not None and len(cfg[key]) == 3:
            out[key] = tuple(float(v) for v in cfg[key])
    return out


def load_backbone(
    backbone: str | None,
    *,
    pretrained: bool | str | os.PathLike = True,
    model_kwargs: Mapping[str, Any] | None = None,
    strict: bool = True,
    image_size: int | None = None,
) -> tuple[nn.Module, EncoderSpec]:
    """A timm backbone returning pooled features, and the :class:`EncoderSpec` recording its source.

    Parameters
    ----------
    backbone
        A timm name (``"densenet121"``), with a pretrained tag (``"vit_base_patch16_224.augreg_in21k"``), or a
        hub id ``"hf-hub:org/name"`` (UNI: ``"hf-hub:MahmoodLab/UNI"``). Ignored for a hub-style folder, whose
        ``config.json`` names the architecture (a different ``backbone`` is an error; ``None`` is allowed only
        with a folder).
    pretrained
        ``True``: pretrained weights through timm and huggingface_hub's cache (``HF_HUB_OFFLINE=1`` with a filled
        cache works offline); ``False``: random initialisation; a weights file (``.safetensors``, or
        ``.bin``/``.pth`` read with ``weights_only=True``); or a hub-style folder (``config.json`` + weights).
    model_kwargs
        Extra arguments of :func:`timm.create_model` (UNI: ``{"init_values": 1e-5, "dynamic_img_size": True}``).
    strict
        Refuse weights with missing or unexpected keys (after prefixes and the classifier are removed).
    image_size
        Input side the backbone will see; ViT position embeddings are resized when it differs from the
        pretrained size (``None``: the pretrained size).
    """
    timm = import_timm()
    kwargs = dict(model_kwargs or {})
    if not isinstance(pretrained, bool) and Path(pretrained).is_dir():
        return _from_folder(timm, backbone, Path(pretrained), kwargs=kwargs, strict=strict, image_size=image_size)
    if backbone is None:
        msg = "backbone=None needs a hub-style folder as pretrained= (its config.json names the architecture)."
        raise ValueError(msg)
    if not isinstance(pretrained, bool):
        path = Path(pretrained)
        if not path.is_file():
            msg = (
                f"pretrained={str(path)!r} does not exist; pass True (hub weights), False, a weights file or a folder."
            )
            raise FileNotFoundError(msg)
        _check_timm_name(timm, backbone)
        cfg = timm.models.get_pretrained_cfg(backbone)
        values = _spec_values(vars(cfg) if cfg is not None else None)
        model = _build_and_load(
            timm, backbone, path, values=values, kwargs=kwargs, strict=strict, image_size=image_size
        )
        logger.info(
            "%s: input size and normalisation are timm's defaults for %r (mean %s); pass mean=/std= (or use a "
            "hub-style folder with its config.json) if the weights were trained otherwise",
            path.name,
            backbone,
            values.get("mean"),
        )
        spec = EncoderSpec(backbone, backbone, _model_args(model, kwargs), "file", path.name, sha256_of(path), **values)
        return model, spec
    if backbone.startswith(HUB_PREFIX):
        return _from_hub(timm, backbone, pretrained=pretrained, kwargs=kwargs, image_size=image_size)
    _check_timm_name(timm, backbone)
    cfg = timm.models.get_pretrained_cfg(backbone)
    values = _spec_values(vars(cfg) if cfg is not None else None)
    try:
        model = _create(
            timm,
            backbone,
            pretrained=pretrained,
            image_size=image_size,
            default_size=values.get("input_size", 224),
            kwargs=kwargs,
        )
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        msg = f"Cannot load timm's pretrained weights for {backbone!r} ({type(err).__name__}: {err}). {_OFFLINE_HINT}"
        raise OSError(msg) from err
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    sha = None
    if pretrained and hub_id:
        cached = _cached_hub_weights(hub_id)
        sha = sha256_of(cached) if cached else None
    source = "timm" if pretrained else "random"
    spec = EncoderSpec(
        backbone,
        backbone,
        _model_args(model, kwargs),
        source,
        hub_id or (backbone if pretrained else None),
        sha,
        **values,
    )
    return model, spec


def _model_args(model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``model_args`` that rebuild ``model``'s shapes: the user's kwargs plus a non-default ``img_size``."""
    args = {k: v for k, v in kwargs.items() if k != "num_classes"}
    patch_embed = getattr(model, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if img_size is not None and "img_size" not in args:
        args["img_size"] = int(img_size[0]) if isinstance(img_size, tuple | list) else int(img_size)
    return args


def _from_hub(timm, backbone: str, *, pretrained: bool, kwargs: dict, image_size: int | None):
    repo_id = backbone.removeprefix(HUB_PREFIX)
    config = _read_config(_hub_file(repo_id, "config.json"))
    values = _spec_values(config.get("pretrained_cfg"))
    args = {**config.get("model_args", {}), **kwargs}
    default = values.get("input_size", 224)
    try:
        model = _create(
            timm,
            backbone if pretrained else config["architecture"],
            pretrained=pretrained,
            image_size=image_size,
            default_size=default,
            kwargs=args if not pretrained else kwargs,
        )
    except (OSError, RuntimeError) as err:
        msg = f"Cannot load the hub model {backbone!r} ({type(err).__name__}: {err}). {_OFFLINE_HINT}"
        raise OSError(msg) from err
    cached = _cached_hub_weights(repo_id) if pretrained else None
    spec = EncoderSpec(
        backbone,
        config["architecture"],
        _model_args(model, args),
        "hf-hub" if pretrained else "random",
        repo_id if pretrained else None,
        sha256_of(cached) if cached else None,
        **values,
    )
    return model, spec


def _from_folder(timm, backbone: str | None, folder: Path, *, kwargs: dict, strict: bool, image_size: int | None):
    config_path = folder / "config.json"
    if not config_path.is_file():
        msg = f"pretrained={str(folder)!r} is a folder without config.json; pass the weights file itself instead."
        raise FileNotFoundError(msg)
    config = _read_config(config_path)
    architecture = config["architecture"]
    if backbone not in (architecture, None) and not backbone.startswith(HUB_PREFIX):
        msg = (
            f"backbone={backbone!r} but {str(config_path)!r} describes {architecture!r}; pass "
            f"backbone={architecture!r} (or the hub id) with this folder."
        )
        raise ValueError(msg)
    weights = next((folder / name for name in FOLDER_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        msg = f"{str(folder)!r} has no weights file ({' or '.join(FOLDER_WEIGHTS)})."
        raise FileNotFoundError(msg)
    _check_timm_name(timm, architecture)
    values = _spec_values(config.get("pretrained_cfg"))
    args = {**config.get("model_args", {}), **kwargs}
    model = _build_and_load(
        timm, architecture, weights, values=values, kwargs=args, strict=strict, image_size=image_size
    )
    spec = EncoderSpec(
        architecture, architecture, _model_args(model, args), "folder", folder.name, sha256_of(weights), **values
    )
    return model, spec
