"""Thresholds of SEPAL's benchmark pipeline per dataset family."""

from __future__ import annotations

from types import MappingProxyType

#: ``{preset: {option: value}}``: the thresholds of :func:`~sepal_tl.pp.run` per dataset family. ``visium`` and
#: ``stnet`` are the paper's values for its 10x Visium and ST-Net datasets; ``her2st`` (fewer spots per section, one
#: shallow section) and ``synthetic`` (:func:`~sepal_tl.datasets.synthetic`) are ours. ``combat_key=None`` skips ComBat.
PRESETS = MappingProxyType(
    {
        # 10x Visium, the paper's V1_Breast_Cancer_Block_A setting; the final model uses no ComBat.
        "visium": MappingProxyType(
            {
                "min_counts_spot": 1000,
                "max_counts_spot": 100_000,
                "min_counts_gene": 1000,
                "max_counts_gene": 1_000_000,
                "min_frac_slide": 0.8,
                "min_frac_global": 0.8,
                "n_top": 256,
                "combat_key": None,
            }
        ),
        # STNet (He et al. 2020, legacy ST, 68 slides), ComBat by patient.
        "stnet": MappingProxyType(
            {
                "min_counts_spot": 700,
                "max_counts_spot": 100_000,
                "min_counts_gene": 1000,
                "max_counts_gene": 1_000_000,
                "min_frac_slide": 0.01,
                "min_frac_global": 0.6,
                "n_top": 256,
                "combat_key": "patient",
            }
        ),
        # her2st (Andersson et al. 2021, legacy ST): few spots per section (~180-600) and one shallow section
        # (B4, median ~650 UMI/spot), so spot and gene thresholds are lower than STNet's and fewer genes are kept.
        "her2st": MappingProxyType(
            {
                "min_counts_spot": 300,
                "max_counts_spot": 100_000,
                "min_counts_gene": 100,
                "max_counts_gene": 10_000_000,
                "min_frac_slide": 0.05,
                "min_frac_global": 0.3,
                "n_top": 128,
                "combat_key": None,
            }
        ),
        # sepal.datasets.synthetic (the demo and the fast tests): ~45 % zeros, 300 genes, two patients.
        "synthetic": MappingProxyType(
            {
                "min_counts_spot": 100,
                "max_counts_spot": 1_000_000,
                "min_counts_gene": 100,
                "max_counts_gene": 100_000_000,
                "min_frac_slide": 0.2,
                "min_frac_global": 0.3,
                "n_top": 128,
                "combat_key": "patient",
            }
        ),
    }
)
