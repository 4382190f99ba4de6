from anndata import read_h5ad

from sepal_tl.__main__ import main


def test_demo_writes_processed_data(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "imputed fraction" in out and "select_genes" in out
    adata = read_h5ad(tmp_path / "synthetic_processed.h5ad")
    assert {"denoised", "observed", "combat"} <= set(adata.layers)
    assert adata.n_vars == 128
