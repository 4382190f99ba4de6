"""Hostile predictions: a NaN or infinite prediction is an error, and genes left out are counted in the table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _helpers import assert_unchanged_after_error
from anndata import AnnData

from sepal_tl.tl import evaluate
from sepal_tl.tl._metrics import compute_metrics


def _adata(n_genes: int = 10, seed: int = 0) -> AnnData:
    """20 spots (10 train, 10 test) x ``n_genes``; predictions = truth + noise."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(5.0, 1.0, (20, n_genes)).astype(np.float32)
    obs = pd.DataFrame({"split": pd.Categorical(["train"] * 10 + ["test"] * 10)}, index=[f"s{i}" for i in range(20)])
    adata = AnnData(np.zeros_like(truth), obs=obs)
    adata.var_names = [f"g{j}" for j in range(n_genes)]
    adata.layers["denoised"] = truth
    adata.layers["observed"] = np.ones(truth.shape, dtype=bool)
    adata.layers["sepal"] = truth + rng.normal(0, 0.5, truth.shape).astype(np.float32)
    return adata


def _poison(value, spots, genes):
    def prepare(adata):
        pred = adata.layers["sepal"].copy()
        pred[np.ix_(spots, genes)] = value
        adata.layers["sepal"] = pred

    return prepare


TEST_SPOTS = list(range(10, 20))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    ("spots", "genes"),
    [([10], [0]), ([10, 11, 12], [3]), (TEST_SPOTS[:9], [0]), ([15], [0, 1, 2, 3, 4, 5, 6, 7, 8]), ([19], [9])],
)
def test_some_non_finite_predictions_are_an_error(value, spots, genes):
    adata = _adata()
    _poison(value, spots, genes)(adata)
    assert_unchanged_after_error(adata, ValueError, "NaN or infinite predictions", evaluate)


def test_the_error_names_the_genes_and_counts_the_entries():
    adata = _adata()
    _poison(np.nan, [10, 11, 12], [2, 7])(adata)
    with pytest.raises(ValueError, match=r"6 NaN or infinite predictions in 2 gene\(s\).*'g2', 'g7'"):
        evaluate(adata)


def test_nine_nans_no_longer_shrink_a_ten_gene_evaluation():
    """The issue's case: nine NaNs took a 10-gene table to 1 gene and moved MSE from 7.53 to 2.26."""
    adata = _adata()
    _poison(np.nan, [10], list(range(9)))(adata)
    with pytest.raises(ValueError, match="9 gene"):
        evaluate(adata)


@pytest.mark.parametrize("n_missing", [1, 3, 9])
def test_genes_not_predicted_are_counted_in_the_table(n_missing):
    adata = _adata()
    _poison(np.nan, list(range(20)), list(range(10 - n_missing, 10)))(adata)
    table = evaluate(adata)
    assert (table["n_genes"] == 10 - n_missing).all()
    assert (table["n_genes_not_predicted"] == n_missing).all()
    test = (adata.obs["split"] == "test").to_numpy()
    keep = slice(0, 10 - n_missing)
    expected = compute_metrics(
        adata.layers["denoised"][test][:, keep],
        adata.layers["sepal"][test][:, keep],
        adata.layers["observed"][test][:, keep],
    )
    assert table.loc["sepal", "MSE"] == pytest.approx(expected["MSE"])
    assert np.isnan(adata.var["sepal_pcc_test"].to_numpy()[10 - n_missing :]).all()


def test_nan_only_on_other_splits_is_not_counted():
    adata = _adata()
    _poison(np.nan, [0, 1], [4])(adata)  # train spots only; the test split is scored
    table = evaluate(adata)
    assert table.loc["sepal", "n_genes"] == 10 and table.loc["sepal", "n_genes_not_predicted"] == 0


def test_all_nan_predictions_are_an_error():
    adata = _adata()
    _poison(np.nan, list(range(20)), list(range(10)))(adata)
    assert_unchanged_after_error(adata, ValueError, "no gene whose prediction is finite", evaluate)


def test_a_gene_infinite_everywhere_is_an_error_not_a_missing_gene():
    adata = _adata()
    _poison(np.inf, list(range(20)), [5])(adata)
    assert_unchanged_after_error(adata, ValueError, "'g5'", evaluate)


def test_full_table_unchanged_by_a_failed_call():
    adata = _adata()
    evaluate(adata, baseline=False)
    _poison(np.nan, [12], [1])(adata)
    assert_unchanged_after_error(adata, ValueError, "NaN or infinite", evaluate, baseline=False)
