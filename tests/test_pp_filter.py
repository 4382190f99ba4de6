import numpy as np
import pytest
from _helpers import assert_unchanged_after_error, grid_adata, square_coords

import sepal_tl as sepal


@pytest.fixture
def counts_adata():
    # 6 spots (3 per slide) x 4 genes; totals per spot: 10, 5, 12 | 9, 20, 0
    x = np.array(
        [
            [5, 5, 0, 0],
            [1, 0, 4, 0],
            [6, 0, 6, 0],
            [3, 3, 3, 0],
            [10, 0, 0, 10],
            [0, 0, 0, 0],
        ]
    )
    return grid_adata(x, square_coords(2, 3), library=["a"] * 3 + ["b"] * 3)


def test_strict_spot_bounds(counts_adata):
    # totals 10, 5, 12, 9, 20, 0: "5 < total < 20" keeps 10, 12, 9 (5 and 20 sit on the bounds).
    out = sepal.pp.filter(counts_adata, min_counts_spot=5, max_counts_spot=20, copy=True)
    assert list(out.obs_names) == ["s0", "s2", "s3"]
    assert out.uns["sepal"]["pp"]["filter"]["n_spots_after_spot_filter"] == 3


def test_expression_fractions_by_hand(counts_adata):
    out = sepal.pp.filter(counts_adata, min_counts_spot=0, copy=True)
    # spot s5 (total 0) fails "0 < total"; slide a: 3 spots, slide b: 2 spots (s3, s4).
    # g0: a 3/3, b 2/2 -> min 1.0, global 5/5; g1: a 1/3, b 1/2 -> 1/3, 2/5
    # g2: a 2/3, b 1/2 -> 1/2, 3/5;            g3: a 0/3, b 1/2 -> 0, 1/5
    np.testing.assert_allclose(out.var["exp_frac"], [1.0, 1 / 3, 0.5, 0.0])
    np.testing.assert_allclose(out.var["glob_exp_frac"], [1.0, 0.4, 0.6, 0.2])


def test_strict_gene_bounds(counts_adata):
    # gene totals over all spots: g0 25, g1 8, g2 13, g3 10 -> "8 < total < 25" keeps g2 and g3.
    out = sepal.pp.filter(counts_adata, min_counts_gene=8, max_counts_gene=25, copy=True)
    assert list(out.var_names) == ["g2", "g3"]
    # spots left with no counts in g2/g3 (s0, s5) are removed
    assert list(out.obs_names) == ["s1", "s2", "s3", "s4"]


def test_strict_fraction_bounds(counts_adata):
    # exp_frac (with s5 dropped): [1, 1/3, 1/2, 0]; "> 1/2" keeps g0 only; glob "> 0.4" keeps g0, g2.
    out = sepal.pp.filter(counts_adata, min_counts_spot=0, min_frac_slide=0.5, copy=True)
    assert list(out.var_names) == ["g0"]
    out = sepal.pp.filter(counts_adata, min_counts_spot=0, min_frac_global=0.4, copy=True)
    assert list(out.var_names) == ["g0", "g2"]


def test_spared_rule(counts_adata):
    # order by exp_frac desc: g0 (glob 1.0), g2 (0.6), g1 (0.4), g3 (0.2)
    # running means: 1.0, 0.8, 0.667, 0.55 -> target 0.7 keeps the prefix g0, g2
    out = sepal.pp.filter(counts_adata, min_counts_spot=0, rule="spared", real_data_percentage=0.7, copy=True)
    assert list(out.var_names) == ["g0", "g2"]
    # target 0.6 also keeps g1 (running mean 0.667); None means SpaRED's 0.7
    out = sepal.pp.filter(counts_adata, min_counts_spot=0, rule="spared", real_data_percentage=0.6, copy=True)
    assert list(out.var_names) == ["g0", "g1", "g2"]
    out = sepal.pp.filter(counts_adata, min_counts_spot=0, rule="spared", copy=True)
    assert list(out.var_names) == ["g0", "g2"]
    assert out.uns["sepal"]["pp"]["filter"]["real_data_percentage"] == 0.7


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rule": "spared", "min_frac_slide": 0.5}, "rule='spared' replaces the thresholds min_frac_slide by"),
        (
            {"rule": "spared", "min_frac_slide": 0.0, "min_frac_global": 0.4},
            "min_frac_slide, min_frac_global by real_data_percentage",
        ),
        ({"real_data_percentage": 0.7}, "only with rule='spared'"),
        ({"rule": "spared", "real_data_percentage": 1.5}, r"\[0, 1\]"),
    ],
)
def test_arguments_the_rule_ignores_are_errors(counts_adata, kwargs, match):
    assert_unchanged_after_error(counts_adata, ValueError, match, sepal.pp.filter, min_counts_spot=0, **kwargs)


def test_in_place_and_qc(counts_adata):
    assert sepal.pp.filter(counts_adata, min_counts_spot=6) is None
    assert list(counts_adata.obs_names) == ["s0", "s2", "s3", "s4"]
    np.testing.assert_array_equal(counts_adata.obs["total_counts"], [10, 12, 9, 20])
    assert counts_adata.uns["sepal"]["pp"]["filter"]["min_counts_spot"] == 6


def test_bad_inputs(counts_adata):
    assert_unchanged_after_error(counts_adata, KeyError, "library_key='slide'", sepal.pp.filter, library_key="slide")
    assert_unchanged_after_error(counts_adata, ValueError, r"Slide\(s\) \['a'\]", sepal.pp.filter, min_counts_spot=12)
    assert_unchanged_after_error(counts_adata, ValueError, "No gene passes", sepal.pp.filter, min_counts_gene=1e9)
    assert_unchanged_after_error(counts_adata, ValueError, "rule=", sepal.pp.filter, rule="magic")


@pytest.mark.parametrize(("value", "match"), [(np.nan, "NaN"), (-1.0, "negative"), (0.5, "non-integer")])
def test_bad_counts(counts_adata, value, match):
    x = counts_adata.X.toarray()
    x[0, 0] = value
    counts_adata.X = x
    assert_unchanged_after_error(counts_adata, ValueError, match, sepal.pp.filter)
