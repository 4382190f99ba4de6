"""Example datasets.

- :func:`synthetic`: procedurally generated Visium-like slides whose H&E-like images drive the counts.
- :func:`her2st`: HER2-positive breast cancer legacy ST sections (Andersson et al. 2021), from a local copy
  or downloaded (hash-checked, cached in ``sepal.settings.datasetdir``).
- :func:`hest`: HEST-1k samples from a local copy of the (gated) Hugging Face dataset.
"""

from ._her2st import her2st
from ._hest import hest
from ._synthetic import synthetic

__all__ = ["her2st", "hest", "synthetic"]
