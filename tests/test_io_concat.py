from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

import sepal_tl as sepal

DATA = Path(__file__).parents[1].parent / "shared" / "data"
TOY = DATA / "fixtures" / "visium_toy_scanpy"


def slide(library_id: str | None, genes: list[str], *, n: int = 4, prefix: bool = True, seed: int = 0) -> AnnData:
    """A small slide in the readers' layout; ``library_id=None`` leaves out obs["library_id"]."""
    rng = np.random.default_rng(seed)
    counts = sparse.csr_matrix(rng.poisson(2, size=(n, len(genes))).astype(np.float32))
    names = [f"{library_id}_s{i}" if prefix else f"s{i}" for i in range(n)]
    adata = AnnData(X=counts, obs=pd.DataFrame(index=names), var=pd.DataFrame({"gene_ids": genes}, index=genes))
    adata.layers["counts"] = counts.copy()
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    key = library_id or "only"
    if library_id is not None:
        adata.obs["library_id"] = pd.Categorical([library_id] * n)
    adata.uns["spatial"] = {
        key: {
            "images": {"hires": np.full((8, 8, 3), seed, np.uint8)},
            "scalefactors": {"tissue_hires_scalef": 0.08, "spot_diameter_fullres": 10.0},
            "metadata": {},
        }
    }
    return adata


def test_concat_keeps_every_slide():
    a, b = slide("A", ["g1", "g2", "g3"], seed=1), slide("B", ["g2", "g3", "g4"], seed=2)
    merged = sepal.io.concat([a, b])
    assert merged.shape == (8, 2)
    assert list(merged.var_names) == ["g2", "g3"]
    assert list(merged.var["gene_ids"]) == ["g2", "g3"]
    assert list(merged.obs["library_id"].cat.categories) == ["A", "B"]
    assert list(merged.obs_names[:2]) == ["A_s0", "A_s1"]
    assert set(merged.uns["spatial"]) == {"A", "B"}
    assert (merged.uns["spatial"]["B"]["images"]["hires"] == 2).all()
    assert merged.uns["spatial"]["A"]["images"]["hires"] is not a.uns["spatial"]["A"]["images"]["hires"]
    np.testing.assert_array_equal(merged.layers["counts"].toarray()[4:], b[:, ["g2", "g3"]].X.toarray())
    np.testing.assert_array_equal(merged.obsm["spatial"], np.vstack([a.obsm["spatial"], b.obsm["spatial"]]))


def test_concat_outer_join():
    merged = sepal.io.concat([slide("A", ["g1", "g2"]), slide("B", ["g2", "g3"])], join="outer")
    assert list(merged.var_names) == ["g1", "g2", "g3"]
    assert merged[:4, "g3"].X.sum() == 0


def test_concat_refuses_duplicate_library_ids():
    with pytest.raises(ValueError, match="Library id 'A' occurs in input 0 and in input 1"):
        sepal.io.concat([slide("A", ["g1"]), slide("A", ["g1"], seed=3)])


def test_concat_overlapping_obs_names_made_unique():
    merged = sepal.io.concat([slide("A", ["g1"], prefix=False), slide("B", ["g1"], prefix=False)])
    assert merged.obs_names.is_unique
    assert list(merged.obs_names[[0, 4]]) == ["s0-A", "s0-B"]


def test_concat_library_id_from_uns_when_column_missing():
    merged = sepal.io.concat([slide(None, ["g1"]), slide("B", ["g1"])])
    assert list(merged.obs["library_id"].cat.categories) == ["only", "B"]
    assert set(merged.uns["spatial"]) == {"only", "B"}


def test_concat_unknown_library():
    ambiguous = slide(None, ["g1"])
    ambiguous.uns["spatial"]["other"] = {}
    with pytest.raises(KeyError, match="library of each spot is unknown"):
        sepal.io.concat([ambiguous, slide("B", ["g1"])])


def test_concat_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        sepal.io.concat([])
    with pytest.raises(ValueError, match="join="):
        sepal.io.concat([slide("A", ["g1"])], join="left")


@pytest.mark.realdata
@pytest.mark.skipif(not TOY.exists(), reason="shared Visium toy fixture not available")
def test_concat_two_visium_slides_keeps_both_images():
    s1 = sepal.io.read_visium(TOY, library_id="s1")
    s2 = sepal.io.read_visium(TOY, library_id="s2")
    merged = sepal.io.concat([s1, s2])
    assert merged.shape == (200, 100)
    assert merged.obs_names.is_unique
    assert set(merged.layers) == {"counts"}
    for lib, single in (("s1", s1), ("s2", s2)):
        entry = merged.uns["spatial"][lib]
        assert set(entry["images"]) == {"hires", "lowres"}
        np.testing.assert_array_equal(entry["images"]["lowres"], single.uns["spatial"][lib]["images"]["lowres"])
        assert entry["scalefactors"] == single.uns["spatial"][lib]["scalefactors"]
    assert (merged.obs["library_id"] == "s2").sum() == 100
