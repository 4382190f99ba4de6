import numpy as np
import pandas as pd
from _helpers import assert_unchanged_after_error, grid_adata, square_coords

import sepal_tl as sepal


def test_tpm_by_hand_3x3():
    counts = np.array([[1, 2, 0], [0, 0, 4], [3, 3, 3]])
    adata = grid_adata(counts, square_coords(1, 3), genes=["A", "B", "C"])
    lengths = pd.Series({"A": 1000, "B": 2000, "C": 500})
    sepal.pp.tpm(adata, gene_lengths=lengths)
    # rates c/L: row0 [1e-3, 1e-3, 0]; row1 [0, 0, 8e-3]; row2 [3e-3, 1.5e-3, 6e-3] (sum 1.05e-2)
    expected = np.array(
        [
            [5e5, 5e5, 0],
            [0, 0, 1e6],
            [3e-3 / 1.05e-2 * 1e6, 1.5e-3 / 1.05e-2 * 1e6, 6e-3 / 1.05e-2 * 1e6],
        ]
    )
    np.testing.assert_allclose(adata.layers["tpm"].toarray(), expected, rtol=1e-6)
    np.testing.assert_array_equal(adata.var["gene_length"], [1000, 2000, 500])
    sepal.pp.log2p(adata)
    np.testing.assert_allclose(adata.layers["log2tpm"].toarray(), np.log2(expected + 1), rtol=1e-6)


def test_dense_and_sparse_agree():
    counts = np.random.default_rng(0).poisson(2, (20, 5))
    adata = grid_adata(counts, square_coords(4, 5), genes=list("ABCDE"))
    lengths = pd.Series(dict(zip("ABCDE", [100, 200, 300, 400, 500], strict=True)))
    sparse_out = sepal.pp.tpm(adata, gene_lengths=lengths, copy=True).layers["tpm"].toarray()
    adata.X = adata.X.toarray()
    dense_out = sepal.pp.tpm(adata, gene_lengths=lengths, copy=True).layers["tpm"]
    np.testing.assert_allclose(sparse_out, dense_out, rtol=1e-6)
    np.testing.assert_allclose(dense_out.sum(axis=1)[dense_out.sum(axis=1) > 0], 1e6, rtol=1e-5)


def test_packaged_lengths_symbols_and_ids_and_drop(caplog):
    counts = np.ones((2, 4))
    adata = grid_adata(counts, square_coords(1, 2), genes=["GAPDH", "ENSG00000141736.14", "ENSG00000141736x", "ERBB2"])
    # ERBB2 by symbol and by versioned id resolve to the same gene; the malformed id has no length
    out = sepal.pp.tpm(adata, copy=True)
    assert list(out.var_names) == ["GAPDH", "ENSG00000141736.14", "ERBB2"]
    np.testing.assert_array_equal(out.var["gene_length"], [1634, 5663, 5663])
    assert "dropped 1 of 4 genes" in caplog.text


def test_zero_spot_gets_zero_not_nan():
    adata = grid_adata(np.array([[0, 0], [1, 3]]), square_coords(1, 2), genes=["A", "B"])
    out = sepal.pp.tpm(adata, gene_lengths=pd.Series({"A": 10, "B": 10}), copy=True)
    np.testing.assert_array_equal(out.layers["tpm"].toarray()[0], [0, 0])


def test_bad_inputs(tmp_path):
    adata = grid_adata(np.ones((2, 2)), square_coords(1, 2), genes=["NOTAGENE1", "NOTAGENE2"])
    assert_unchanged_after_error(adata, ValueError, "None of the 2 genes has a known length", sepal.pp.tpm)
    assert_unchanged_after_error(
        adata, FileNotFoundError, "missing.gtf", sepal.pp.tpm, gene_lengths=tmp_path / "missing.gtf"
    )
    assert_unchanged_after_error(adata, KeyError, "Layer 'raw'", sepal.pp.tpm, layer="raw")
    adata.X = np.array([[1.5, 1.0], [1.0, 1.0]])
    assert_unchanged_after_error(
        adata, ValueError, "non-integer", sepal.pp.tpm, gene_lengths=pd.Series({"NOTAGENE1": 1, "NOTAGENE2": 2})
    )


def test_log2p_rejects_negative():
    adata = grid_adata(np.ones((2, 2)), square_coords(1, 2), layer="tpm")
    adata.layers["tpm"][0, 0] = -1
    assert_unchanged_after_error(adata, ValueError, "negative", sepal.pp.log2p)
