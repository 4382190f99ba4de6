import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _helpers import assert_unchanged_after_error
from anndata.tests.helpers import assert_equal
from scipy import sparse

from sepal_tl.tl._evaluate import evaluate
from sepal_tl.tl._metrics import compute_metrics, pearson, per_gene_metrics, per_spot_metrics

# A 3 spots × 3 genes example; the entry (spot 2, gene 1) is not observed (truth 9, prediction 99 are ignored).
Y = np.array([[1.0, 2.0, 5.0], [2.0, 4.0, 1.0], [3.0, 9.0, 4.0]])
P = np.array([[3.0, 1.0, 4.0], [2.0, 4.0, 2.0], [4.0, 99.0, 5.0]])
M = np.array([[True, True, True], [True, True, True], [True, False, True]])


# ---------------------------------------------------------------------------------------------------- metrics


def test_hand_computed_metrics():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_metrics(Y, P, M)
    # Errors Y - P at the 8 observed entries: spot 0: -2, 1, 1; spot 1: 0, 0, -1; spot 2: -1, (masked), -1.
    # MSE = (4+1+1+0+0+1+1+1)/8 = 9/8, MAE = (2+1+1+0+0+1+1+1)/8 = 7/8.
    assert result["MSE"] == pytest.approx(9 / 8)
    assert result["MAE"] == pytest.approx(7 / 8)
    # Gene 0: y = (1,2,3), p = (3,2,4). yc = (-1,0,1), pc = (0,-1,1): cov 1, Syy 2, Spp 2 -> r = 1/2.
    #   SS_res = 4+0+1 = 5, SS_tot = 2 -> R2 = 1 - 5/2 = -3/2.
    # Gene 1 (spots 0, 1 only): y = (2,4), p = (1,4): two points, same order -> r = 1; SS_res = 1, SS_tot = 2 -> 1/2.
    # Gene 2: y = (5,1,4) (mean 10/3), p = (4,2,5) (mean 11/3). yc = (5,-7,2)/3, pc = (1,-5,4)/3.
    #   cov = (5+35+8)/9 = 16/3, Syy = (25+49+4)/9 = 26/3, Spp = (1+25+16)/9 = 14/3 -> r = 16/sqrt(364).
    #   SS_res = 1+1+1 = 3 -> R2 = 1 - 3/(26/3) = 17/26.
    assert result["PCC-Gene"] == pytest.approx((1 / 2 + 1 + 16 / np.sqrt(364)) / 3)
    assert result["R2-Gene"] == pytest.approx((-3 / 2 + 1 / 2 + 17 / 26) / 3)  # = -3/26
    # Spot 0: y = (1,2,5) (mean 8/3), p = (3,1,4) (mean 8/3). yc = (-5,-2,7)/3, pc = (1,-5,4)/3.
    #   cov = (-5+10+28)/9 = 11/3, Syy = 78/9 = 26/3, Spp = 42/9 = 14/3 -> r = 11/sqrt(364).
    #   SS_res = 4+1+1 = 6 -> R2 = 1 - 6/(26/3) = 4/13.
    # Spot 1: y = (2,4,1) (mean 7/3), p = (2,4,2) (mean 8/3). yc = (-1,5,-4)/3, pc = (-2,4,-2)/3.
    #   cov = (2+20+8)/9 = 10/3, Syy = 42/9 = 14/3, Spp = 24/9 = 8/3 -> r = 10/sqrt(112).
    #   SS_res = 0+0+1 = 1 -> R2 = 1 - 1/(14/3) = 11/14.
    # Spot 2 (genes 0, 2 only): y = (3,4), p = (4,5): r = 1; SS_res = 1+1 = 2, SS_tot = 1/4+1/4 = 1/2 -> R2 = -3.
    assert result["PCC-Patch"] == pytest.approx((11 / np.sqrt(364) + 10 / np.sqrt(112) + 1) / 3)
    assert result["R2-Patch"] == pytest.approx((4 / 13 + 11 / 14 - 3) / 3)
    assert result["n_observed"] == 8
    assert [result[k] for k in ("n_genes_pcc", "n_genes_r2", "n_spots_pcc", "n_spots_r2")] == [3, 3, 3, 3]

    genes = per_gene_metrics(Y, P, M, var_names=["a", "b", "c"])
    assert list(genes.index) == ["a", "b", "c"]
    np.testing.assert_allclose(genes["pcc"], [1 / 2, 1, 16 / np.sqrt(364)])
    np.testing.assert_allclose(genes["r2"], [-3 / 2, 1 / 2, 17 / 26])
    # per-gene MSE: gene 0 (4+0+1)/3, gene 1 (1+0)/2, gene 2 (1+1+1)/3; MAE: (2+0+1)/3, (1+0)/2, 3/3
    np.testing.assert_allclose(genes["mse"], [5 / 3, 1 / 2, 1])
    np.testing.assert_allclose(genes["mae"], [1, 1 / 2, 1])
    assert genes["n_observed"].tolist() == [3, 2, 3]
    spots = per_spot_metrics(Y, P, M)
    np.testing.assert_allclose(spots["pcc"], [11 / np.sqrt(364), 10 / np.sqrt(112), 1])
    np.testing.assert_allclose(spots["r2"], [4 / 13, 11 / 14, -3])
    assert spots["n_observed"].tolist() == [3, 3, 2]


def test_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(30, 7))
    p = y + rng.normal(size=y.shape)
    m = rng.random(y.shape) < 0.7
    result = compute_metrics(y, p, m)

    def loop(axis):
        pcc, r2 = [], []
        for k in range(y.shape[1 - axis]):
            sel = m[:, k] if axis == 0 else m[k]
            a = (y[:, k] if axis == 0 else y[k])[sel]
            b = (p[:, k] if axis == 0 else p[k])[sel]
            pcc.append(np.corrcoef(a, b)[0, 1])
            r2.append(1 - ((a - b) ** 2).sum() / ((a - a.mean()) ** 2).sum())
        return np.mean(pcc), np.mean(r2)

    assert (result["PCC-Gene"], result["R2-Gene"]) == pytest.approx(loop(0))
    assert (result["PCC-Patch"], result["R2-Patch"]) == pytest.approx(loop(1))
    assert result["MSE"] == pytest.approx(((y - p)[m] ** 2).mean())
    assert result["MAE"] == pytest.approx(np.abs(y - p)[m].mean())


def test_mask_really_excludes_entries():
    base = compute_metrics(Y, P, M)
    for value in (-1e6, np.nan, np.inf):
        p, y = P.copy(), Y.copy()
        p[2, 1] = value
        y[2, 1] = value
        assert compute_metrics(y, p, M) == base
    # ... while an observed entry does count
    p = P.copy()
    p[2, 0] = 0.0
    assert compute_metrics(Y, p, M)["MSE"] != base["MSE"]


def test_constant_prediction_gives_defined_averages_and_one_warning():
    p = P.copy()
    p[:, 0] = 7.0  # gene 0 predicted constant: its PCC is undefined, its R2 is not
    with pytest.warns(UserWarning, match=r"PCC-Gene left out 1 of 3 genes \(1 constant prediction\)") as record:
        result = compute_metrics(Y, p, M)
    assert len(record) == 1
    assert result["PCC-Gene"] == pytest.approx((1 + 16 / np.sqrt(364)) / 2)
    assert result["n_genes_pcc"] == 2
    # gene 0: residuals (1,2,3) - 7 = (-6,-5,-4): SS_res = 36+25+16 = 77, SS_tot = 2 -> R2 = 1 - 77/2 = -37.5;
    # genes 1 and 2 as before
    assert result["R2-Gene"] == pytest.approx((-37.5 + 1 / 2 + 17 / 26) / 3)
    assert result["n_genes_r2"] == 3
    assert all(np.isfinite(v) for v in result.values())


def test_gene_without_observed_entries_is_skipped():
    m = M.copy()
    m[:, 1] = False
    with pytest.warns(UserWarning, match=r"PCC-Gene left out 1 of 3 genes \(1 fewer than 2 observed entries\)"):
        result = compute_metrics(Y, P, m)
    assert result["n_genes_pcc"] == result["n_genes_r2"] == 2
    assert result["PCC-Gene"] == pytest.approx((1 / 2 + 16 / np.sqrt(364)) / 2)
    assert result["R2-Gene"] == pytest.approx((-3 / 2 + 17 / 26) / 2)
    # MSE/MAE are over the 6 remaining observed entries: squares 4,1,0,1,1,1 and absolute errors 2,1,0,1,1,1
    assert result["MSE"] == pytest.approx(8 / 6)
    assert result["MAE"] == pytest.approx(6 / 6)
    genes = per_gene_metrics(Y, P, m)
    assert genes.loc[1, "n_observed"] == 0
    assert genes.loc[1, ["pcc", "r2", "mse", "mae"]].isna().all()


def test_constant_truth_is_detected_exactly():
    y = np.array([[0.1, 1.0], [0.1, 2.0], [0.1, 3.0]])  # the float mean of three 0.1 is not 0.1
    p = np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 2.0]])
    with pytest.warns(UserWarning, match=r"R2-Gene left out 1 of 2 genes \(1 constant observed truth\)") as record:
        result = compute_metrics(y, p)
    assert len(record) == 1
    assert result["n_genes_pcc"] == result["n_genes_r2"] == 1
    assert result["PCC-Gene"] == pytest.approx(0.5)  # yc = (-1,0,1), pc = (-1,1,0): cov 1, Syy = Spp = 2
    assert result["R2-Gene"] == pytest.approx(0.0)  # SS_res = 0+1+1 = 2 = SS_tot


def test_all_undefined_average_is_nan_without_runtime_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.warns(UserWarning, match="PCC-Gene left out 3 of 3 genes"):
            result = compute_metrics(Y, np.ones_like(P), M)
    assert np.isnan(result["PCC-Gene"])
    assert result["n_genes_pcc"] == 0
    assert np.isfinite(result["R2-Gene"])


def test_patch_metrics_depend_on_scale_gene_metrics_do_not():
    # docs/method.md, "Metrics": adding the train mean (a per-gene vector) to truth and prediction, i.e. going from
    # deltas to absolute values, changes PCC-Patch and R2-Patch but not the per-gene metrics, MSE or MAE.
    rng = np.random.default_rng(1)
    y_delta = rng.normal(size=(25, 6))
    p_delta = 0.5 * y_delta + rng.normal(scale=0.5, size=y_delta.shape)
    m = rng.random(y_delta.shape) < 0.8
    mean = np.linspace(1.0, 8.0, 6)
    delta = compute_metrics(y_delta, p_delta, m)
    absolute = compute_metrics(y_delta + mean, p_delta + mean, m)
    for key in ("MSE", "MAE", "PCC-Gene", "R2-Gene"):
        assert absolute[key] == pytest.approx(delta[key])
    for key in ("PCC-Patch", "R2-Patch"):
        assert abs(absolute[key] - delta[key]) > 0.05
    pd.testing.assert_frame_equal(
        per_gene_metrics(y_delta, p_delta, m), per_gene_metrics(y_delta + mean, p_delta + mean, m)
    )


@pytest.mark.parametrize(
    ("pred", "mask", "match"),
    [
        (P[:, :2], M, "differ in shape"),
        (P, M.astype(int), "mask must be boolean"),
        (P, M[:, :2], "differ in shape"),
        (P, np.zeros_like(M), "selects no entry"),
        (np.where(M, np.nan, P), M, "NaN or infinite"),
        (P[0], M, "2-d"),
    ],
)
def test_compute_metrics_bad_input(pred, mask, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(Y, pred, mask)


# ---------------------------------------------------------------------------------------------------- evaluate


def _adata(seed: int = 0) -> ad.AnnData:
    """12 spots on 2 slides × 5 genes; spots 0-3 and 6-8 train, the rest test; gene 4 is not predicted."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(3.0, 1.0, size=(12, 5)).astype(np.float32)
    pred = (truth + rng.normal(scale=0.7, size=truth.shape)).astype(np.float32)
    pred[:, 4] = np.nan
    observed = np.ones(truth.shape, dtype=bool)
    observed[[1, 4, 8, 10, 11], [1, 0, 2, 3, 0]] = False  # imputed entries, two of them among the test spots
    obs = pd.DataFrame(
        {
            "split": pd.Categorical(["train"] * 4 + ["test"] * 2 + ["train"] * 3 + ["test"] * 3),
            "library_id": pd.Categorical(["A"] * 6 + ["B"] * 6),
        },
        index=[f"s{i}" for i in range(12)],
    )
    adata = ad.AnnData(np.zeros_like(truth), obs=obs)
    adata.var_names = [f"g{j}" for j in range(5)]
    adata.layers["denoised"] = truth
    adata.layers["observed"] = observed
    adata.layers["sepal"] = pred
    return adata


def test_evaluate_table_baseline_and_outputs():
    adata = _adata()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the baseline's undefined PCC-Gene is expected, not warned about
        table = evaluate(adata)
    assert list(table.index) == ["sepal", "mean_baseline"]
    assert list(table.columns[:8]) == [
        "MSE",
        "MAE",
        "PCC-Gene",
        "R2-Gene",
        "PCC-Patch",
        "R2-Patch",
        "n_spots",
        "n_genes",
    ]
    test = adata.obs["split"] == "test"
    truth = adata.layers["denoised"][test][:, :4]
    mask = adata.layers["observed"][test][:, :4]
    expected = compute_metrics(truth, adata.layers["sepal"][test][:, :4], mask)
    for key, value in expected.items():
        assert table.loc["sepal", key] == pytest.approx(value)
    assert table.loc["sepal", "n_spots"] == 5
    assert table.loc["sepal", "n_genes"] == 4

    train_mean = adata.layers["denoised"][(adata.obs["split"] == "train").to_numpy()][:, :4].mean(axis=0)
    with pytest.warns(UserWarning, match="constant prediction"):
        expected = compute_metrics(truth, np.broadcast_to(train_mean, truth.shape), mask)
    row = table.loc["mean_baseline"]
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, nan_ok=True)
    assert np.isnan(row["PCC-Gene"]) and row["n_genes_pcc"] == 0
    assert table.loc["sepal", "MSE"] < row["MSE"]

    genes = per_gene_metrics(truth, adata.layers["sepal"][test][:, :4], mask)
    np.testing.assert_allclose(adata.var["sepal_pcc_test"].to_numpy()[:4], genes["pcc"])
    np.testing.assert_allclose(adata.var["sepal_r2_test"].to_numpy()[:4], genes["r2"])
    assert np.isnan(adata.var["sepal_pcc_test"].iloc[4]) and np.isnan(adata.var["sepal_r2_test"].iloc[4])
    stored = adata.uns["sepal"]["metrics"]["sepal"]["test"]
    assert set(stored) == {"sepal", "mean_baseline"}
    assert all(isinstance(v, float) for row in stored.values() for v in row.values())
    assert adata.uns["sepal"]["tl"]["evaluate"]["pred"] == "sepal"


def test_evaluate_per_slide_and_h5ad_round_trip(tmp_path):
    adata = _adata()
    # on slide A the test spots are s4 and s5, and s4's gene 0 is imputed: gene 0 has one observed entry there
    with pytest.warns(UserWarning, match=r"'sepal \[A\]': PCC-Gene left out 1 of 4 genes") as rec:
        table = evaluate(adata, per_slide=True)
    assert len(rec) == 1
    assert table.loc["sepal [A]", "n_genes_pcc"] == 3 and table.loc["sepal", "n_genes_pcc"] == 4
    assert list(table.index) == [
        "sepal",
        "mean_baseline",
        "sepal [A]",
        "mean_baseline [A]",
        "sepal [B]",
        "mean_baseline [B]",
    ]
    for slide, n in (("A", 2), ("B", 3)):
        sel = ((adata.obs["split"] == "test") & (adata.obs["library_id"] == slide)).to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            expected = compute_metrics(
                adata.layers["denoised"][sel][:, :4],
                adata.layers["sepal"][sel][:, :4],
                adata.layers["observed"][sel][:, :4],
            )
        assert table.loc[f"sepal [{slide}]", "n_spots"] == n
        for key, value in expected.items():
            assert table.loc[f"sepal [{slide}]", key] == pytest.approx(value)

    evaluate(adata, split="train", baseline=False)
    path = tmp_path / "evaluated.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    stored = back.uns["sepal"]["metrics"]["sepal"]
    assert set(stored) == {"test", "train"}
    restored = pd.DataFrame.from_dict(stored["test"], orient="index").loc[table.index, table.columns]
    pd.testing.assert_frame_equal(restored, table.astype(float), check_dtype=False)
    assert list(stored["train"]) == ["sepal"]
    pd.testing.assert_frame_equal(back.var, adata.var)


def test_evaluate_all_spots_and_no_slide_column():
    adata = _adata()
    del adata.obs["library_id"]
    table = evaluate(adata, split=None, per_slide=True)
    assert list(table.index) == ["sepal", "mean_baseline", "sepal [slide]", "mean_baseline [slide]"]
    assert table.loc["sepal", "n_spots"] == 12
    assert "sepal_pcc_all" in adata.var
    assert "all" in adata.uns["sepal"]["metrics"]["sepal"]
    # without a baseline, no split column is needed
    del adata.obs["split"]
    assert list(evaluate(adata, split=None, baseline=False).index) == ["sepal"]


def test_evaluate_warns_once_for_skipped_genes():
    adata = _adata()
    adata.layers["sepal"][:, 0] = 1.0  # constant prediction of gene 0
    with pytest.warns(UserWarning, match=r"'sepal': PCC-Gene left out 1 of 4 genes \(1 constant prediction\)") as rec:
        table = evaluate(adata)
    assert len(rec) == 1
    assert table.loc["sepal", "n_genes_pcc"] == 3
    assert np.isnan(adata.var["sepal_pcc_test"].iloc[0]) and np.isfinite(adata.var["sepal_r2_test"].iloc[0])


def _no_train(adata):
    adata.obs["split"] = pd.Categorical(["val"] * 6 + ["test"] * 6)


def _int_mask(adata):
    adata.layers["observed"] = adata.layers["observed"].astype(np.int8)


def _all_nan(adata):
    adata.layers["sepal"][:] = np.nan


@pytest.mark.parametrize(
    ("prepare", "kwargs", "error", "match"),
    [
        (None, {"pred": "missing"}, KeyError, "sepal.tl.predict"),
        (None, {"truth": "missing"}, KeyError, "sepal.pp.denoise"),
        (None, {"mask": "missing"}, KeyError, "'missing' is not in adata.layers"),
        (_int_mask, {}, ValueError, "must be boolean"),
        (None, {"split_key": "missing"}, KeyError, "split_key='missing'"),
        (None, {"split": "val"}, ValueError, "No spot has obs"),
        (_no_train, {}, ValueError, "baseline=False"),
        (_all_nan, {}, ValueError, "no gene whose prediction is finite"),
        (None, {"pred": "mean_baseline"}, ValueError, "clashes"),
        (None, {"per_slide": True, "library_key": "patient"}, KeyError, "library_key='patient'"),
    ],
)
def test_evaluate_bad_input_leaves_adata_unchanged(prepare, kwargs, error, match):
    adata = _adata()
    adata.layers["mean_baseline"] = adata.layers["sepal"].copy()
    # earlier results must survive a failed call too (baseline=False: the baseline's NaN PCC-Gene would fail
    # assert_equal, as NaN != NaN)
    evaluate(adata, split="train", baseline=False)
    if prepare is not None:
        prepare(adata)
    assert_unchanged_after_error(adata, error, match, evaluate, **kwargs)


def test_evaluate_no_train_works_without_baseline():
    adata = _adata()
    _no_train(adata)
    before = adata.copy()
    table = evaluate(adata, baseline=False)
    assert list(table.index) == ["sepal"]
    assert_equal(adata.layers["sepal"], before.layers["sepal"])


def test_evaluate_sparse_layers_give_the_same_table():
    adata = _adata()
    dense = evaluate(adata)
    adata.layers["denoised"] = sparse.csr_matrix(adata.layers["denoised"])
    adata.layers["observed"] = sparse.csr_matrix(adata.layers["observed"])
    pd.testing.assert_frame_equal(evaluate(adata), dense)


def test_pearson_of_the_finite_pairs_by_hand():
    # finite pairs (1, 2), (2, 4), (3, 7): centred a = (-1, 0, 1), b = (-7, -1, 8) / 3, so r = 5 / sqrt(2 * 114 / 9)
    a, b = np.array([1.0, 2.0, 3.0, np.nan]), np.array([2.0, 4.0, 7.0, 1.0])
    assert pearson(a, b) == pytest.approx(5 / np.sqrt(2 * 114 / 9))
    assert np.isnan(pearson(np.array([1.0, 2.0]), np.array([3.0, 3.0])))  # constant side
    assert np.isnan(pearson(np.array([1.0, np.inf]), np.array([1.0, 2.0])))  # one finite pair
