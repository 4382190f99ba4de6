"""sepal_tl: predict spatial gene expression from H&E histology with SEPAL (``import sepal_tl as sepal``)."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, pl, pp, tl
from ._settings import settings

try:
    __version__ = version("sepal-tl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["datasets", "io", "pl", "pp", "settings", "tl"]
