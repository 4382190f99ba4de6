"""Stain augmentation of training patches: random scaling and shifting of the haematoxylin, eosin and DAB channels.

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
