"""Spot patches for the image encoder: geometry, one shared transform, and a lazy torch ``Dataset``.

A patch is the square window of the H&E image centred on a spot (``obsm["spatial"]``), whose side is the spot
diameter (``uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"]``) times
:attr:`PatchGeometry.patch_scale`, resized to :attr:`PatchGeometry.patch_size` pixels and normalised for the
network (:func:`preprocess_patches`).

Differences from the reference implementation (docs/differences.md, "One patch transform for training and inference" to
"Augmentations are drawn per patch"):

- **One transform everywhere.** Training, embedding and prediction all use :func:`preprocess_patches`
  (antialiased bilinear resize, scaling to [0, 1], ImageNet normalisation). The reference trained on
  Normalize-only patches but embedded with Resize(256) + CenterCrop(224), a train/inference mismatch.
- **Nothing is precomputed.** :class:`SpotPatches` stores spot coordinates, library codes and targets only;
  windows are cut from the image when a batch is requested. The reference stored every flattened patch
  in ``obsm`` (about 150 KB per spot at 224 px) and converted all of them to float32 at once.
- **Border spots are kept**: windows that leave the image are padded with white (``PAD_VALUE``).
- **The window side is not rounded to an even number of full-resolution pixels** and may be cut from a
  downscaled image (its side is then ``round(side * scale)`` image pixels).
- **Augmentations are drawn per sample** (the reference drew one per batch): a random element of the
  dihedral group of the square (4 rotations × optional flip), applied only when ``train=True``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from anndata import AnnData
from scipy import sparse
from torch.utils.data import Dataset, get_worker_info

from sepal_tl._docs import inject_docs
from sepal_tl._logging import logger
from sepal_tl._settings import settings
from sepal_tl._validation import check_positive, check_spatial, get_matrix
from sepal_tl.io._common import library_ids
from sepal_tl.io._image_sources import ImageSource, resolve_images, round_half_up
from sepal_tl.tl._stain import STAIN_NORMS, hed_jitter, normalise_stains, stain_parameters, stain_target

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PatchGeometry",
    "SpotPatches",
    "eight_symmetries",
    "preprocess_patches",
    "symmetry",
    "with_stain_target",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet (RGB, on [0, 1]) used to normalise patches."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet (RGB, on [0, 1])."""
_STAIN_WINDOWS = 64  # spot windows per slide sampled to estimate its stain appearance


@dataclass(frozen=True)
@inject_docs
class PatchGeometry:
    """How spot patches are cut and normalised; saved with a model so that inference cuts the same patches.

    Parameters
    ----------
    patch_scale
        %(patch_scale)s The window is ``spot_diameter_fullres * patch_scale`` full-resolution pixels wide
        (SEPAL: 1.0; its ``*_scale3`` configs: 3.0).
    patch_size
        Side in pixels of the patch fed to the network, after resizing (SEPAL's ViT-B/16: 224).
    mean, std
        Per-channel normalisation of the ``[0, 1]`` RGB patch (default ImageNet's, as for SEPAL's
        ImageNet-pretrained ViT; use the backbone's own values for other pretrained models).
    stain_norm
        ``None`` (off), ``"macenko"`` or ``"reinhard"``: map each slide's stain appearance onto ``stain_target``
        before the network sees it. A slide's own appearance is estimated once from a sample of its spot
        windows (:func:`~sepal_tl.tl._stain.stain_parameters`), so every slide, including new ones at
        prediction, is mapped onto the same target.
    stain_target
        The target appearance (8 numbers for Macenko, 6 for Reinhard). ``None``: the mean of the slides the
        patches are first cut from (:func:`fit_encoder`: the training slides; :func:`embed`: every slide of
        its data); the resolved target is saved with the model and with embeddings.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=1, n_spots=20, n_genes=10, pitch_px=32, random_state=0)
    >>> geometry = sepal.tl.PatchGeometry(patch_scale=3.0, patch_size=64)  # a window 3 spot diameters wide
    >>> adata.uns["spatial"]["slide0"]["scalefactors"]["spot_diameter_fullres"]
    17.6
    >>> round(geometry.window_side(adata, "slide0"), 1)  # in full-resolution pixels
    52.8
    >>> sepal.tl.PatchGeometry.from_dict(geometry.to_dict()) == geometry
    True
    """

    patch_scale: float = 1.0
    patch_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    stain_norm: str | None = None
    stain_target: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_scale", check_positive("patch_scale", self.patch_scale))
        size = self.patch_size
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            msg = f"patch_size must be a positive integer number of pixels, got {size!r}."
            raise ValueError(msg)
        object.__setattr__(self, "patch_size", int(size))
        for name in ("mean", "std"):
            values = tuple(float(v) for v in np.ravel(getattr(self, name)))
            if len(values) != 3 or not np.isfinite(values).all():
                msg = f"{name} must be three finite numbers (R, G, B), got {getattr(self, name)!r}."
                raise ValueError(msg)
            object.__setattr__(self, name, values)
        if min(self.std) <= 0:
            msg = f"std must be positive, got {self.std!r}."
            raise ValueError(msg)
        self._check_stain()

    def _check_stain(self) -> None:
        if self.stain_norm is None:
            if self.stain_target is not None:
                msg = "stain_target is given but stain_norm is None; pass stain_norm='macenko' or 'reinhard'."
                raise ValueError(msg)
            return
        if self.stain_norm not in STAIN_NORMS:
            msg = f"stain_norm={self.stain_norm!r} is not known; choose one of {sorted(STAIN_NORMS)} or None."
            raise ValueError(msg)
        if self.stain_target is not None:
            target = tuple(float(v) for v in np.ravel(self.stain_target))
            if len(target) != STAIN_NORMS[self.stain_norm] or not np.isfinite(target).all():
                msg = (
                    f"stain_target for {self.stain_norm!r} must be {STAIN_NORMS[self.stain_norm]} finite numbers "
                    f"(see sepal_tl.tl._stain.stain_parameters), got {self.stain_target!r}."
                )
                raise ValueError(msg)
            object.__setattr__(self, "stain_target", target)

    def window_side(self, adata: AnnData, library_id: str) -> float:
        """Window side in full-resolution pixels for one library: spot diameter × ``patch_scale``."""
        entry = adata.uns.get("spatial", {}).get(library_id, {})
        diameter = entry.get("scalefactors", {}).get("spot_diameter_fullres")
        if diameter is None:
            msg = (
                f"adata.uns['spatial'][{library_id!r}]['scalefactors']['spot_diameter_fullres'] is missing: the "
                "patch size is a multiple of the spot diameter. Read the data with sepal.io.read_visium / read_st "
                "/ spot_grid, or set it (in full-resolution pixels)."
            )
            raise KeyError(msg)
        return check_positive(f"spot_diameter_fullres of library {library_id!r}", diameter) * self.patch_scale

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON / h5ad friendly) that :meth:`from_dict` turns back into the same geometry."""
        return {
            "patch_scale": self.patch_scale,
            "patch_size": self.patch_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "stain_norm": self.stain_norm,
            "stain_target": None if self.stain_target is None else list(self.stain_target),
        }

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> PatchGeometry:
        """Rebuild a geometry saved with :meth:`to_dict` (missing keys take their defaults)."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            msg = f"Unknown PatchGeometry parameters {unknown}; expected some of {sorted(names)}."
            raise ValueError(msg)
        values = dict(params)
        for name in ("mean", "std", "stain_target"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


def _resize(crops: torch.Tensor, size: int) -> np.ndarray:
    """Resize ``(batch, n, n, 3)`` ``uint8`` crops to ``(batch, size, size, 3)`` ``uint8`` (a numpy view)."""
    if crops.shape[1:3] != (size, size):
        # channels-last uint8 is the fast layout of the antialiased resampler; its output is channels-last too
        resized = F.interpolate(
            crops.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        crops = resized.permute(0, 2, 3, 1)
    return crops.numpy()


def _symmetry_hwc(image: np.ndarray, k: int) -> np.ndarray:
    """:func:`symmetry` on one ``(H, W, C)`` numpy image (a view)."""
    if k % 4:
        image = np.rot90(image, k % 4, axes=(0, 1))
    return image[:, ::-1] if k >= 4 else image


def _to_chw_float(hwc: np.ndarray, out: np.ndarray, rows: np.ndarray | None, symmetries: np.ndarray | None) -> None:
    """Write ``(batch, H, W, 3)`` ``uint8`` into rows of ``out`` ``(N, 3, H, W)`` ``float32``, applying symmetries.

    numpy's strided copies are several times faster than torch's for these transposing conversions.
    """
    if rows is None and symmetries is None:
        out[...] = hwc.transpose(0, 3, 1, 2)
        return
    for j in range(len(hwc)):
        image = hwc[j] if symmetries is None else _symmetry_hwc(hwc[j], int(symmetries[j]))
        out[j if rows is None else rows[j]] = image.transpose(2, 0, 1)


def _normalise(out: np.ndarray, geometry: PatchGeometry) -> None:
    """In place: ``(pixel / 255 - mean) / std`` per channel, on ``(batch, 3, H, W)``."""
    std = np.asarray(geometry.std, dtype=np.float32)[:, None, None]
    mean = np.asarray(geometry.mean, dtype=np.float32)[:, None, None]
    out *= np.float32(1.0) / (np.float32(255.0) * std)
    out -= mean / std


def preprocess_patches(
    crops: np.ndarray | torch.Tensor,
    geometry: PatchGeometry | None = None,
    *,
    symmetries: Sequence[int] | np.ndarray | None = None,
) -> torch.Tensor:
    """The transform shared by training, embedding and prediction: resize, scale to [0, 1], normalise.

    The resize is :func:`torch.nn.functional.interpolate` (``mode="bilinear"``, ``antialias=True``,
    ``align_corners=False``) on the ``uint8`` pixels, i.e. a triangle filter whose support grows with the
    reduction factor (like Pillow's BILINEAR with its default, no ``reducing_gap``), so downscaling does not
    alias; enlarging is plain bilinear interpolation. Resized values are rounded to integers (as Pillow does),
    which keeps a constant patch exactly constant. Crops already at ``patch_size`` are not resampled.

    Parameters
    ----------
    crops
        ``(n, n, 3)`` or ``(batch, n, n, 3)`` ``uint8`` RGB windows.
    geometry
        Output size and normalisation (default :class:`PatchGeometry()`).
    symmetries
        Optional symmetry index (0–7, see :func:`symmetry`) per patch, applied after resizing, so that the
        result is exactly ``symmetry(preprocess_patches(crop), k)``.

    Returns
    -------
    ``float32`` tensor ``(3, size, size)`` or ``(batch, 3, size, size)``: ``(pixel / 255 - mean) / std``.

    Examples
    --------
    >>> import numpy as np
    >>> import sepal_tl as sepal
    >>> crops = np.full((2, 50, 50, 3), 255, dtype=np.uint8)  # two white 50-px windows
    >>> geometry = sepal.tl.PatchGeometry(patch_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> patches = sepal.tl.preprocess_patches(crops, geometry)
    >>> patches.shape, patches.unique().tolist()  # (1 - 0.5) / 0.5
    (torch.Size([2, 3, 32, 32]), [1.0])
    """
    geometry = geometry or PatchGeometry()
    crops = torch.from_numpy(np.ascontiguousarray(crops)) if isinstance(crops, np.ndarray) else torch.as_tensor(crops)
    single = crops.ndim == 3
    if single:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != torch.uint8:
        msg = f"crops must be uint8 of shape (n, n, 3) or (batch, n, n, 3), got {tuple(crops.shape)} {crops.dtype}."
        raise ValueError(msg)
    if symmetries is not None:
        symmetries = np.asarray(symmetries, dtype=np.int64).reshape(-1)
        if len(symmetries) != len(crops) or symmetries.min(initial=0) < 0 or symmetries.max(initial=0) > 7:
            msg = f"symmetries must hold one value in 0..7 per patch ({len(crops)}), got {symmetries.tolist()}."
            raise ValueError(msg)
    size = geometry.patch_size
    out = np.empty((len(crops), 3, size, size), dtype=np.float32)
    _to_chw_float(_resize(crops.cpu(), size), out, None, symmetries)
    _normalise(out, geometry)
    result = torch.from_numpy(out)
    return result[0] if single else result


def symmetry(patches: torch.Tensor, k: int) -> torch.Tensor:
    """Apply the ``k``-th of the 8 symmetries of the square to ``(..., H, W)`` patches.

    ``k = 0 … 3``: rotation by ``k × 90°`` (:func:`torch.rot90` on the last two axes); ``k = 4 … 7``: the same
    rotation followed by a horizontal flip (:func:`torch.flip` of the last axis). ``k = 0`` returns the
    input itself.
    """
    if not 0 <= int(k) < 8:
        msg = f"k must be in 0..7, got {k!r}."
        raise ValueError(msg)
    k = int(k)
    if k % 4:
        patches = torch.rot90(patches, k % 4, dims=(-2, -1))
    if k >= 4:
        patches = torch.flip(patches, dims=(-1,))
    return patches


def eight_symmetries(patches: torch.Tensor) -> torch.Tensor:
    """All 8 symmetries of a batch, for test-time augmentation (average the model's outputs over axis 0).

    Parameters
    ----------
    patches
        ``(batch, channels, H, W)`` tensor (``H == W``).

    Returns
    -------
    ``(8, batch, channels, H, W)``; element ``k`` is :func:`symmetry` ``(patches, k)`` (``k = 0``: unchanged).

    Examples
    --------
    >>> import torch
    >>> import sepal_tl as sepal
    >>> patches = torch.arange(4.0).reshape(1, 1, 2, 2)  # one 2 x 2 patch with one channel
    >>> views = sepal.tl.eight_symmetries(patches)
    >>> views.shape
    torch.Size([8, 1, 1, 2, 2])
    >>> views[:, 0, 0].flatten(1).tolist()  # the 8 arrangements of the 4 pixels
    [[0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 0.0, 2.0], [3.0, 2.0, 1.0, 0.0], [2.0, 0.0, 3.0, 1.0],
     [1.0, 0.0, 3.0, 2.0], [3.0, 1.0, 2.0, 0.0], [2.0, 3.0, 0.0, 1.0], [0.0, 2.0, 1.0, 3.0]]
    """
    return torch.stack([symmetry(patches, k) for k in range(8)])


def with_stain_target(
    adata: AnnData,
    sources: Mapping[str, ImageSource],
    geometry: PatchGeometry,
    *,
    library_key: str,
    indices: Sequence[int] | np.ndarray | None = None,
) -> PatchGeometry:
    """``geometry`` with its stain target set to the mean appearance of the slides of ``indices`` (default: all).

    Unchanged when stain normalisation is off or the target is already set; entry points call this once, so that
    every dataset cut afterwards (training, validation, new slides) maps onto the same recorded target.
    """
    if geometry.stain_norm is None or geometry.stain_target is not None:
        return geometry
    return SpotPatches(adata, sources, geometry, indices=indices, library_key=library_key).geometry


def _window_origins(coords: np.ndarray, side: float, source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
    """Top-left ``(row, col)`` in the image's own pixels of ``side``-wide windows centred on ``(x, y)`` coords."""
    top_left = coords - side / 2
    return round_half_up(top_left[:, 1] * source.scale), round_half_up(top_left[:, 0] * source.scale)


def _mix_seed(seed: int, worker_seed: int) -> int:
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, worker_seed & 0xFFFFFFFFFFFFFFFF])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _select(adata, indices) -> np.ndarray:
    if indices is None:
        return np.arange(adata.n_obs, dtype=np.int64)
    indices = np.asarray(indices)
    if indices.dtype == bool:
        if indices.shape != (adata.n_obs,):
            msg = f"A boolean indices mask must have one entry per spot ({adata.n_obs}), got shape {indices.shape}."
            raise ValueError(msg)
        return np.flatnonzero(indices).astype(np.int64)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        msg = "indices must be integer positions (0 … n_obs - 1) or a boolean mask over adata.obs."
        raise ValueError(msg)
    if indices.size and (indices.min() < -adata.n_obs or indices.max() >= adata.n_obs):
        msg = f"indices must lie in [0, {adata.n_obs}); got values from {indices.min()} to {indices.max()}."
        raise IndexError(msg)
    return np.where(indices < 0, indices + adata.n_obs, indices).astype(np.int64)


def _targets(adata, targets, indices: np.ndarray) -> torch.Tensor | None:
    if targets is None:
        return None
    if isinstance(targets, str):
        targets = get_matrix(adata, None if targets == "X" else targets)
    elif hasattr(targets, "to_numpy"):  # pandas: rows are positions, not labels
        targets = targets.to_numpy()
    if getattr(targets, "shape", (None,))[0] != adata.n_obs:
        msg = (
            f"targets must have one row per spot of adata ({adata.n_obs}), got shape "
            f"{getattr(targets, 'shape', None)}; the rows of `indices` are picked from it."
        )
        raise ValueError(msg)
    rows = targets[indices]
    rows = rows.toarray() if sparse.issparse(rows) else np.asarray(rows)
    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))


@inject_docs
class SpotPatches(Dataset):
    """Patches centred on spots, cut from the image when requested (a :class:`torch.utils.data.Dataset`).

    Only coordinates, library codes and targets are stored; a patch costs one crop (a slice of an in-memory
    or memory-mapped image), one resize and one normalisation, so nothing scales with the number of spots
    beyond a few bytes each. Batches requested by a :class:`~torch.utils.data.DataLoader` go through
    :meth:`__getitems__`, which crops a whole batch and resizes it in one call per library.

    Parameters
    ----------
    adata
        Spatial AnnData: ``obsm[spatial_key]`` spot centres in full-resolution pixels (x = column, y = row) and
        ``uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"]``.
    images
        Where the images come from: a ``{library_id: ImageSource}`` dict from :func:`resolve_images`, or
        anything :func:`resolve_images` accepts as ``image=`` (default: the full-resolution file when known,
        else the highest-resolution ``uns`` image).
    geometry
        Window size, output size and normalisation (default :class:`PatchGeometry()`).
    indices
        Spots to serve, as integer positions or a boolean mask over ``adata.obs`` (default: all, in order).
        Item ``i`` of the dataset is spot ``indices[i]``.
    targets
        Optional values to return with each patch: an array or sparse matrix with one row per spot of
        ``adata`` (``n_obs`` rows; the rows of ``indices`` are taken and stored as ``float32``), or the name of
        a layer (``"X"`` for ``adata.X``).
    train
        Apply random augmentations: each sample independently gets one of the 8 symmetries of the square
        (random 90° rotation and horizontal flip, which together also give vertical flips and transposes).
        May be switched later (``dataset.train = False``).
    library_key
        %(library_key)s It may be absent when ``uns["spatial"]`` holds one library.
    spatial_key
        %(spatial_key)s
    random_state
        Seed of the augmentations (``None``: :attr:`sepal_tl.settings.seed`). With ``num_workers=0`` the
        draws are reproducible from this seed alone. In DataLoader worker processes each worker reseeds from
        this seed and the worker seed that PyTorch gives it, so workers draw different augmentations; pass a
        seeded ``generator=`` to the DataLoader to make them reproducible too.
    cache_dir
        Passed to :func:`resolve_images` when ``images`` is not already resolved.
    stain_jitter
        With ``train``, σ of a random per-patch scaling and shift of the haematoxylin, eosin and DAB optical
        densities (:func:`~sepal_tl.tl._stain.hed_jitter`; 0: off).

    Examples
    --------
    >>> import torch
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=1, n_spots=20, n_genes=10, pitch_px=32, random_state=0)
    >>> geometry = sepal.tl.PatchGeometry(patch_size=32)
    >>> ds = sepal.tl.SpotPatches(adata, geometry=geometry, targets="counts", train=True)  # augmented
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)
    >>> patches, targets = next(iter(loader))
    >>> patches.shape, targets.shape
    (torch.Size([8, 3, 32, 32]), torch.Size([8, 10]))
    """

    def __init__(
        self,
        adata: AnnData,
        images: Any = None,
        geometry: PatchGeometry | None = None,
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        targets: Any = None,
        train: bool = False,
        library_key: str = "library_id",
        spatial_key: str = "spatial",
        random_state: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        stain_jitter: float = 0.0,
    ) -> None:
        if isinstance(stain_jitter, bool) or not isinstance(stain_jitter, int | float) or not 0 <= stain_jitter < 1:
            msg = f"stain_jitter={stain_jitter!r} must be a number in [0, 1) (0: off; 0.05 is the usual choice)."
            raise ValueError(msg)
        self.stain_jitter = float(stain_jitter)
        self.geometry = geometry or PatchGeometry()
        if not isinstance(self.geometry, PatchGeometry):
            msg = f"geometry must be a PatchGeometry, got {type(self.geometry).__name__}."
            raise TypeError(msg)
        self.indices = _select(adata, indices)
        coords = check_spatial(adata, spatial_key)[self.indices]
        libs = library_ids(adata, library_key).to_numpy()[self.indices].astype(str)
        self.library_names: list[str] = list(dict.fromkeys(libs))
        self.obs_names = adata.obs_names[self.indices]
        self._codes = pd.Categorical(libs, categories=self.library_names).codes.astype(np.int64)

        if isinstance(images, Mapping) and images and all(isinstance(v, ImageSource) for v in images.values()):
            missing = [lib for lib in self.library_names if lib not in images]
            if missing:
                msg = f"images has no ImageSource for the libraries {missing}; resolve them with resolve_images."
                raise KeyError(msg)
            sources = {lib: images[lib] for lib in self.library_names}
        else:
            sources = resolve_images(
                adata,
                images,
                library_key=library_key,
                libraries=self.library_names,
                spatial_key=spatial_key,
                cache_dir=cache_dir,
            )
        self.sources: dict[str, ImageSource] = sources
        self._sources = [sources[lib] for lib in self.library_names]

        # window of every spot in its image's own pixels: top-left (row, col) and per-library side n
        self.window_sides = {lib: self.geometry.window_side(adata, lib) for lib in self.library_names}
        self._n = np.zeros(len(self.library_names), dtype=np.int64)
        self._row0 = np.zeros(len(self.indices), dtype=np.int64)
        self._col0 = np.zeros(len(self.indices), dtype=np.int64)
        for code, (lib, source) in enumerate(zip(self.library_names, self._sources, strict=True)):
            side = self.window_sides[lib]
            mine = self._codes == code
            self._n[code] = source.window(0.0, 0.0, side)[2]
            self._row0[mine], self._col0[mine] = _window_origins(coords[mine], side, source)
            source.load()  # decode / open now, before DataLoader workers fork (they then share the pixels)
        self.stain_sources = self._estimate_stains(adata, library_key, spatial_key)
        if self.stain_sources is not None and self.geometry.stain_norm and self.geometry.stain_target is None:
            target = stain_target(self.geometry.stain_norm, list(self.stain_sources))
            self.geometry = dataclasses.replace(self.geometry, stain_target=tuple(target))
        self.targets = _targets(adata, targets, self.indices)
        self.train = bool(train)
        self.random_state = settings.seed if random_state is None else int(random_state)
        self._generator = torch.Generator().manual_seed(self.random_state)
        self._worker_seed: int | None = None
        self._worker_generator: torch.Generator | None = None
        logger.info(
            "SpotPatches: %d spots from %d libraries, windows of %s image px -> %d px%s",
            len(self),
            len(self.library_names),
            sorted(set(self._n.tolist())),
            self.geometry.patch_size,
            " (train augmentations)" if self.train else "",
        )

    def __len__(self) -> int:
        return len(self.indices)

    def _estimate_stains(self, adata: AnnData, library_key: str, spatial_key: str) -> np.ndarray | None:
        """Each library's stain parameters (rows in ``library_names`` order) from windows spread over its spots.

        The windows are taken among all of the library's spots in ``adata`` (not only the served ones), so a
        slide is normalised the same way whichever of its spots a dataset serves.
        """
        method = self.geometry.stain_norm
        if method is None:
            return None
        coords = check_spatial(adata, spatial_key)
        libs = library_ids(adata, library_key).to_numpy().astype(str)
        params = []
        for code, lib in enumerate(self.library_names):
            spots = np.flatnonzero(libs == lib)
            chosen = spots[np.linspace(0, len(spots) - 1, min(len(spots), _STAIN_WINDOWS)).astype(np.int64)]
            source, n = self._sources[code], int(self._n[code])
            rows, cols = _window_origins(coords[chosen], self.window_sides[lib], source)
            step = max(1, n // 32)  # about a thousand pixels per window
            pixels = [
                source.crop_pixels(int(r), int(c), n)[::step, ::step].reshape(-1, 3)
                for r, c in zip(rows, cols, strict=True)
            ]
            params.append(stain_parameters(method, np.concatenate(pixels)))
        return np.stack(params)

    def _normalise_stains(self, out: np.ndarray, codes: np.ndarray, present: np.ndarray) -> None:
        """Map the rows of ``out`` (RGB on [0, 255]) of each library onto the geometry's stain target, in place."""
        target = np.asarray(self.geometry.stain_target, dtype=np.float64)
        norm, sources = self.geometry.stain_norm, self.stain_sources
        assert norm is not None and sources is not None  # called only when stain normalisation is on
        for code in present:
            if len(present) == 1:
                normalise_stains(out, norm, sources[code], target)
                continue
            rows = np.flatnonzero(codes == code)
            block = out[rows]
            normalise_stains(block, norm, sources[code], target)
            out[rows] = block

    def _positions(self, items) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        n = len(self)
        if items.size and (items.min() < -n or items.max() >= n):
            msg = f"index out of range for a dataset of {n} spots."
            raise IndexError(msg)
        return np.where(items < 0, items + n, items)

    def crop(self, i: int) -> np.ndarray:
        """The raw window of item ``i``: ``(n, n, 3)`` ``uint8`` in the image's own pixels, before resizing."""
        i = int(self._positions([i])[0])
        code = self._codes[i]
        return self._sources[code].crop_pixels(int(self._row0[i]), int(self._col0[i]), int(self._n[code]))

    def _rng(self) -> torch.Generator:
        info = get_worker_info()
        if info is None:
            return self._generator
        if self._worker_seed != info.seed:
            self._worker_seed = info.seed
            self._worker_generator = torch.Generator().manual_seed(_mix_seed(self.random_state, info.seed))
        assert self._worker_generator is not None  # made above for this worker's seed
        return self._worker_generator

    def extract_batch(
        self, items: Sequence[int] | np.ndarray | torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Patches (and targets) of several items at once, cropped and resized per library in one call.

        Parameters
        ----------
        items
            Item positions in the dataset (``0 … len - 1``).

        Returns
        -------
        ``(batch, 3, patch_size, patch_size)`` ``float32`` patches, augmented when ``train`` is set; with
        targets, the tuple ``(patches, targets)`` with ``targets`` of shape ``(batch, …)``.
        """
        if isinstance(items, torch.Tensor):
            items = items.cpu().numpy()
        items = self._positions(items)
        size = self.geometry.patch_size
        out = np.empty((len(items), 3, size, size), dtype=np.float32)
        symmetries = None
        if self.train and len(items):
            symmetries = torch.randint(8, (len(items),), generator=self._rng()).numpy()
        codes = self._codes[items]
        present = np.unique(codes)
        for code in present:
            where = np.flatnonzero(codes == code) if len(present) > 1 else None
            chosen = items if where is None else items[where]
            source, n = self._sources[code], int(self._n[code])
            crops = np.empty((len(chosen), n, n, 3), dtype=np.uint8)
            for j, item in enumerate(chosen):
                source.crop_pixels(int(self._row0[item]), int(self._col0[item]), n, out=crops[j])
            group_symmetries = symmetries if symmetries is None or where is None else symmetries[where]
            _to_chw_float(_resize(torch.from_numpy(crops), size), out, where, group_symmetries)
        if self.stain_sources is not None:
            self._normalise_stains(out, codes, present)
        if self.train:
            hed_jitter(out, self.stain_jitter, self._rng())
        _normalise(out, self.geometry)
        patches = torch.from_numpy(out)
        if self.targets is None:
            return patches
        return patches, self.targets[torch.from_numpy(items)]

    def __getitems__(self, items: Sequence[int]) -> list:
        """Batched access used by :class:`~torch.utils.data.DataLoader`: one sample per item, as ``__getitem__``."""
        batch = self.extract_batch(items)
        if isinstance(batch, torch.Tensor):  # no targets
            return list(batch.unbind(0))
        patches, targets = batch
        return list(zip(patches.unbind(0), targets.unbind(0), strict=True))

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Item ``i``: the ``(3, patch_size, patch_size)`` ``float32`` patch, or ``(patch, target)``."""
        batch = self.extract_batch([i])
        if self.targets is None:
            return batch[0]
        return batch[0][0], batch[1][0]

    def __getstate__(self) -> dict:
        # torch.Generator does not survive torch.multiprocessing pickling (spawn / forkserver workers): keep its state
        state = self.__dict__.copy()
        state["_generator"] = self._generator.get_state().numpy().tobytes()
        state["_worker_seed"] = state["_worker_generator"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(bytearray(state["_generator"]), dtype=torch.uint8))
        self.__dict__.update(state, _generator=generator)

    def __repr__(self) -> str:
        targets = "" if self.targets is None else f", targets {tuple(self.targets.shape[1:])}"
        return (
            f"SpotPatches({len(self)} spots, {len(self.library_names)} libraries, patch_scale="
            f"{self.geometry.patch_scale}, patch_size={self.geometry.patch_size}, train={self.train}{targets})"
        )
