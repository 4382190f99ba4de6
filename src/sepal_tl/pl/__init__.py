"""Plots of SEPAL's data and results: gene maps on the H&E, denoising, Moran's I, PCC, metrics, training curves."""

from ._denoising import denoising
from ._gene_map import gene_map
from ._metrics import metrics
from ._moran import moran
from ._pcc import pcc_histogram
from ._training import training_curves

__all__ = ["denoising", "gene_map", "metrics", "moran", "pcc_histogram", "training_curves"]
