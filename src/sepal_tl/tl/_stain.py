"""Stain augmentation (random HED jitter of training patches) and stain normalisation (Macenko, Reinhard).

Colour deconvolution (Ruifrok & Johnston 2001) turns RGB into optical densities of the three stains; each training
patch gets its own ``h' = a h + b`` per stain with ``a ~ U(1 - σ, 1 + σ)`` and ``b ~ U(-σ, σ)`` (Tellez et al. 2018's
"HED-light" augmentation with σ = 0.05), and is turned back into RGB. It makes a fine-tuned encoder less sensitive to
the slide-to-slide stain differences that shift predictions on new sections.
"""

from __future__ import annotations

import numpy as np
import torch

#: Rows: optical density of haematoxylin, eosin and DAB in R, G, B (Ruifrok & Johnston 2001), normalised per row.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64)
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
_MIN_INTENSITY = 1e-6


def hed_jitter(patches: np.ndarray, sigma: float, generator: torch.Generator, *, peak: float = 255.0) -> None:
    """Jitter the stains of ``(batch, 3, H, W)`` RGB patches on ``[0, peak]``, in place, one draw per patch and stain."""
    if sigma <= 0 or len(patches) == 0:
        return
    batch = len(patches)
    draws = torch.rand((2, batch, 3), generator=generator, dtype=torch.float64).numpy()
    scale = 1.0 + sigma * (2.0 * draws[0] - 1.0)
    shift = sigma * (2.0 * draws[1] - 1.0)
    density = -np.log(np.clip(patches / peak, _MIN_INTENSITY, 1.0)).transpose(0, 2, 3, 1)  # (B, H, W, RGB)
    stains = density @ HED_FROM_RGB
    stains = stains * scale[:, None, None, :] + shift[:, None, None, :]
    rgb = np.exp(-(stains @ RGB_FROM_HED))
    patches[:] = np.clip(rgb * peak, 0.0, peak).transpose(0, 3, 1, 2)


# --- stain normalisation -------------------------------------------------------------------------------------------
#
# Each slide's stain appearance is summarised by a few numbers estimated once from a sample of its tissue pixels
# (the *source* parameters); every patch of that slide is then mapped onto a *target* appearance, the mean of the
# reference slides' parameters (e.g. the training slides), which a model saves with its patch geometry so that new
# slides are mapped onto the same target. Estimating per slide rather than per patch keeps the mapping stable:
# a small patch with little eosin would otherwise be "corrected" into a different tissue.

#: Stain normalisation methods and the number of parameters that describe one slide.
STAIN_NORMS = {"macenko": 8, "reinhard": 6}

#: Macenko et al. (2009): pixels whose optical density is below β in any channel are background / glass.
_MACENKO_BETA = 0.15
#: Macenko et al. (2009): the stain vectors are the α-th and (100 − α)-th percentiles of the angles in the OD plane.
_MACENKO_ALPHA = 1.0
#: Percentile of a stain's concentration taken as its maximum (robust to a few saturated pixels).
_MAX_PERCENTILE = 99.0
#: Reinhard: pixels brighter than this on every channel (of 255) are treated as glass and ignored.
_GLASS = 220.0


def _optical_density(rgb: np.ndarray, peak: float = 255.0) -> np.ndarray:
    return -np.log(np.clip(np.asarray(rgb, dtype=np.float64) / peak, _MIN_INTENSITY, 1.0))


def _macenko_params(pixels: np.ndarray) -> np.ndarray:
    """Haematoxylin and eosin OD vectors (unit norm, 3 values each) and their 99th-percentile concentrations."""
    density = _optical_density(pixels)
    tissue = density[(density > _MACENKO_BETA).all(axis=1)]
    if len(tissue) < 100:
        msg = (
            f"stain normalisation found only {len(tissue)} stained pixels in the slide's spot windows (need 100); "
            "is this an H&E image? Use stain_norm=None for it."
        )
        raise ValueError(msg)
    _, vectors = np.linalg.eigh(np.cov(tissue, rowvar=False))
    plane = vectors[:, [2, 1]]  # the two directions of largest variance
    plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive optical density
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [_MACENKO_ALPHA, 100.0 - _MACENKO_ALPHA])
    first = plane @ np.array([np.cos(low), np.sin(low)])
    second = plane @ np.array([np.cos(high), np.sin(high)])
    # haematoxylin absorbs red more strongly than eosin does
    stains = np.stack([first, second] if first[0] >= second[0] else [second, first], axis=1)
    stains /= np.linalg.norm(stains, axis=0, keepdims=True)
    concentrations = np.linalg.lstsq(stains, tissue.T, rcond=None)[0]
    maxima = np.percentile(concentrations, _MAX_PERCENTILE, axis=1)
    return np.concatenate([stains.T.ravel(), maxima])


def _reinhard_params(pixels: np.ndarray) -> np.ndarray:
    """Mean and standard deviation of the tissue pixels in CIELAB (L, a, b)."""
    from skimage.color import rgb2lab

    pixels = np.asarray(pixels, dtype=np.float64)
    tissue = pixels[(pixels < _GLASS).any(axis=1)]
    if len(tissue) < 100:
        msg = f"stain normalisation found only {len(tissue)} tissue pixels (need 100); use stain_norm=None here."
        raise ValueError(msg)
    lab = rgb2lab(tissue[None] / 255.0)[0]
    return np.concatenate([lab.mean(axis=0), np.maximum(lab.std(axis=0), 1e-6)])


def stain_parameters(method: str, pixels: np.ndarray) -> np.ndarray:
    """The parameters of one slide's stain appearance, from its ``(n, 3)`` RGB pixels on ``[0, 255]``.

    ``"macenko"`` (Macenko et al. 2009): the haematoxylin and eosin optical-density vectors (3 + 3 values) and the
    99th percentiles of their concentrations (2). ``"reinhard"`` (Reinhard et al. 2001, in CIELAB as is usual for
    H&E): mean and standard deviation of L, a and b over tissue pixels (6).
    """
    if method == "macenko":
        return _macenko_params(pixels)
    if method == "reinhard":
        return _reinhard_params(pixels)
    msg = f"stain_norm={method!r} is not a stain normalisation; choose one of {sorted(STAIN_NORMS)} or None."
    raise ValueError(msg)


def stain_target(method: str, parameters: list[np.ndarray]) -> np.ndarray:
    """The mean appearance of several slides (Macenko: stain vectors averaged and renormalised)."""
    target = np.mean(np.stack(parameters), axis=0)
    if method == "macenko":
        stains = target[:6].reshape(2, 3)
        target[:6] = (stains / np.linalg.norm(stains, axis=1, keepdims=True)).ravel()
    return target


def normalise_stains(
    patches: np.ndarray, method: str, source: np.ndarray, target: np.ndarray, *, peak: float = 255.0
) -> None:
    """Map ``(batch, 3, H, W)`` RGB patches on ``[0, peak]`` from the ``source`` slide appearance onto ``target``.

    In place. Macenko: per-pixel stain concentrations from the source stain vectors (least squares), each stain
    scaled by target / source maximum concentration, recombined with the target vectors. Reinhard: CIELAB channels
    standardised with the source statistics and given the target's.
    """
    if len(patches) == 0:
        return
    rgb = patches.transpose(0, 2, 3, 1)  # (B, H, W, 3) view
    if method == "macenko":
        source_stains = source[:6].reshape(2, 3).T
        target_stains = target[:6].reshape(2, 3).T
        concentrations = _optical_density(rgb, peak) @ np.linalg.pinv(source_stains).T
        concentrations *= target[6:] / source[6:]
        result = np.exp(-(concentrations @ target_stains.T)) * peak
    else:
        from skimage.color import lab2rgb, rgb2lab

        lab = rgb2lab(np.clip(rgb / peak, 0.0, 1.0))
        lab = (lab - source[:3]) / source[3:] * target[3:] + target[:3]
        result = lab2rgb(lab) * peak
    patches[:] = np.clip(result, 0.0, peak).transpose(0, 3, 1, 2)
