import numpy as np
import pytest
from _helpers import DATA, assert_unchanged_after_error, needs_data
from anndata import read_h5ad
from scipy import sparse

import sepal_tl as sepal


@pytest.fixture(scope="module")
def synthetic():
    return sepal.datasets.synthetic(n_slides=3, n_spots=250, n_genes=150, random_state=1)


def _check_processed(adata, summary, n_top):
    assert list(summary.index) == ["input", "filter", "tpm", "denoise", "select_genes"] + (
        ["combat"] if "combat" in adata.layers else []
    )
    assert adata.n_vars == n_top == summary.loc["select_genes", "n_genes"]
    assert adata.n_obs == summary.loc["filter", "n_spots"]
    counts = adata.layers["counts"].toarray() if sparse.issparse(adata.layers["counts"]) else adata.layers["counts"]
    # observed is exactly "the raw count was non-zero"; observed entries keep their log2(TPM + 1) value
    np.testing.assert_array_equal(adata.layers["observed"], counts > 0)
    log1p = adata.layers["log2tpm"].toarray()
    np.testing.assert_array_equal(adata.layers["denoised"][adata.layers["observed"]], log1p[adata.layers["observed"]])
    for key in ("tpm", "log2tpm", "denoised"):
        values = adata.layers[key].toarray() if sparse.issparse(adata.layers[key]) else adata.layers[key]
        assert np.isfinite(values).all(), key
    assert summary.attrs["imputed_fraction"] == pytest.approx(1 - adata.layers["observed"].mean())
    assert 0 < summary.attrs["imputed_fraction"] < 1
    assert adata.uns["sepal"]["pp"]["summary"]["n_genes"][-1] == n_top


def test_run_synthetic(synthetic, tmp_path):
    adata = synthetic.copy()
    assert sepal.pp.run(adata, preset="synthetic", n_top=40) is None  # in place, as scanpy
    summary = sepal.pp.run_summary(adata)
    _check_processed(adata, summary, 40)
    assert "combat" in adata.layers
    # the selected genes are mostly the image-driven program genes of the generator, not background noise
    assert (adata.var["program"].isin(["background", "sparse"])).mean() < 0.2
    # the whole processed object round-trips through h5ad (every recorded parameter is storable)
    adata.write_h5ad(tmp_path / "processed.h5ad")
    back = read_h5ad(tmp_path / "processed.h5ad")
    assert back.uns["sepal"]["pp"]["run"]["preset"] == "synthetic"
    np.testing.assert_array_equal(back.layers["denoised"], adata.layers["denoised"])


def test_run_copy_leaves_input(synthetic):
    before = synthetic.copy()
    out = sepal.pp.run(synthetic, preset="synthetic", n_top=20, combat_key=None, copy=True)
    assert out.n_vars == 20 and "combat" not in out.layers
    assert synthetic.n_vars == before.n_vars and "denoised" not in synthetic.layers


def test_leak_free_ranking_uses_only_training_slides(synthetic):
    train = ["slide0", "slide1"]
    out = sepal.pp.run(synthetic, preset="synthetic", n_top=30, slides=train, copy=True)
    assert list(out.varm["moran_i_per_slide"].columns) == train
    assert out.uns["sepal"]["pp"]["select_genes"]["slides"] == train


def test_bad_inputs(synthetic):
    adata = synthetic.copy()
    assert_unchanged_after_error(adata, ValueError, "preset=", sepal.pp.run, preset="xenium")
    assert_unchanged_after_error(adata, TypeError, "min_count_spot", sepal.pp.run, preset="synthetic", min_count_spot=3)
    # n_top larger than the genes left after filtering fails mid-pipeline: the input must still be untouched
    assert_unchanged_after_error(adata, ValueError, "larger than the", sepal.pp.run, preset="synthetic", n_top=10_000)


@needs_data
@pytest.mark.realdata
def test_run_her2st_real_sections():
    adata = sepal.datasets.her2st(["B4", "C2", "C3", "C4", "C5"], path=DATA / "her2st")
    n_spots = adata.n_obs
    sepal.pp.run(adata, preset="her2st", slides=["C2", "C3", "C4"])
    summary = sepal.pp.run_summary(adata)
    _check_processed(adata, summary, 128)
    assert summary.loc["input", "n_spots"] == n_spots
    assert set(adata.obs["library_id"]) == {"B4", "C2", "C3", "C4", "C5"}
    # the shallow section (B4) is far sparser than patient C's sections
    observed = adata.layers["observed"]
    frac = {lib: observed[(adata.obs["library_id"] == lib).to_numpy()].mean() for lib in ["B4", "C2"]}
    assert frac["B4"] < frac["C2"]
    # the imputed fraction is reported where users look for it
    assert adata.uns["sepal"]["pp"]["summary"]["imputed_fraction"] == pytest.approx(summary.attrs["imputed_fraction"])
    assert adata.uns["sepal"]["pp"]["denoise"]["radii"]["C2"][:3] == [1.0, pytest.approx(2**0.5), 2.0]
