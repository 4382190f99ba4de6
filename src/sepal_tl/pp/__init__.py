"""SEPAL's benchmark pipeline: filtering, TPM, log2(TPM + 1), denoising, Moran's I selection, ComBat."""

from ._combat import combat
from ._denoise import denoise
from ._filter import filter
from ._gene_lengths import gene_lengths_from_gtf, load_gene_length_table, resolve_gene_lengths
from ._log import log2p
from ._moran import select_genes
from ._presets import PRESETS
from ._run import run, run_summary
from ._tpm import tpm

__all__ = [
    "PRESETS",
    "combat",
    "denoise",
    "filter",
    "gene_lengths_from_gtf",
    "load_gene_length_table",
    "log2p",
    "resolve_gene_lengths",
    "run",
    "run_summary",
    "select_genes",
    "tpm",
]
