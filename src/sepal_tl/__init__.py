"""sepal_tl: predict spatial gene expression from H&E histology with SEPAL (``import sepal_tl as sepal``)."""

import warnings
from importlib.metadata import PackageNotFoundError, version

# spatialdata and pooch import ``tqdm.auto``, which warns "IProgress not found" in a Jupyter kernel without
# ipywidgets. None of our calls into them shows a progress bar, so the notice would only confuse.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    from . import datasets, io, pl, pp, tl
from ._settings import settings

try:
    __version__ = version("sepal-tl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["datasets", "io", "pl", "pp", "settings", "tl"]
