from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sepal_tl.pp._gene_lengths import gene_lengths_from_gtf, load_gene_length_table, resolve_gene_lengths

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GTF_V43 = DATA / "annotations" / "gencode.v43.basic.annotation.gtf.gz"
THIRD_PARTY = DATA / "annotations" / "gene_length.txt"

needs_data = pytest.mark.skipif(not (GTF_V43.is_file() and THIRD_PARTY.is_file()), reason="../shared/data absent")


# --------------------------------------------------------------------------------------------------
# Known-answer GTF
# --------------------------------------------------------------------------------------------------


def _attrs(gid: str, name: str | None, tid: str | None = None) -> str:
    a = f'gene_id "{gid}";'
    if tid is not None:
        a += f' transcript_id "{tid}";'
    a += ' gene_type "protein_coding";'
    if name is not None:
        a += f' gene_name "{name}";'
    return a + " level 2;"


def _line(chrom: str, feature: str, start: int, end: int, attrs: str, strand: str = "+") -> str:
    return "\t".join([chrom, "TEST", feature, str(start), str(end), ".", strand, ".", attrs])


A = "ENSG00000000001.3"
B = "ENSG00000000002.1"
M = "ENSG00000000003.1"
P = "ENSG00000000004.5"
E = "ENSG00000000005.2"

# Hand-computed merged lengths (1-based inclusive coordinates).
# GENEA, transcripts TA1 [100,199] [300,399] and TA2 [150,249] [320,350] [400,409] [500,500]:
#   [100,249] = 150 (overlap), [300,409] = 110 (nested + adjacent), [500,500] = 1  -> 261
# GENEB (minus strand, exons listed in descending order), TB1 [2000,2009] [1000,1099],
#   TB2 [1050,1200] [1000,1099] (exact duplicate):  [1000,1200] = 201, [2000,2009] = 10 -> 211
# MT-TEST on chrM: [1,50] -> 50
# PARG1 on chrX [10,109] = 100; its _PAR_Y copy on chrY [10,59] = 50 is dropped (first kept) -> 100
# Second gene also named GENEA on chr3: [1,10] -> 10
EXPECTED = {
    "ENSG00000000001": ("GENEA", "chr1", 261),
    "ENSG00000000002": ("GENEB", "chr2", 211),
    "ENSG00000000005": ("GENEA", "chr3", 10),
    "ENSG00000000004": ("PARG1", "chrX", 100),
    "ENSG00000000003": ("MT-TEST", "chrM", 50),
}


def _write_gtf(path: Path) -> Path:
    lines = [
        "##description: hand-made test annotation",
        "##format: gtf",
        _line("chr1", "gene", 100, 500, _attrs(A, "GENEA")),
        _line("chr1", "transcript", 100, 399, _attrs(A, "GENEA", "TA1")),
        _line("chr1", "exon", 100, 199, _attrs(A, "GENEA", "TA1")),
        _line("chr1", "CDS", 120, 199, _attrs(A, "GENEA", "TA1")),
        _line("chr1", "exon", 300, 399, _attrs(A, "GENEA", "TA1")),
        _line("chr1", "transcript", 150, 500, _attrs(A, "GENEA", "TA2")),
        _line("chr1", "exon", 150, 249, _attrs(A, "GENEA", "TA2")),
        _line("chr1", "exon", 320, 350, _attrs(A, "GENEA", "TA2")),
        _line("chr1", "exon", 400, 409, _attrs(A, "GENEA", "TA2")),
        _line("chr1", "exon", 500, 500, _attrs(A, "GENEA", "TA2")),
        _line("chr2", "gene", 1000, 2009, _attrs(B, "GENEB"), "-"),
        _line("chr2", "exon", 2000, 2009, _attrs(B, "GENEB", "TB1"), "-"),
        _line("chr2", "exon", 1000, 1099, _attrs(B, "GENEB", "TB1"), "-"),
        _line("chr2", "exon", 1050, 1200, _attrs(B, "GENEB", "TB2"), "-"),
        _line("chr2", "exon", 1000, 1099, _attrs(B, "GENEB", "TB2"), "-"),
        _line("chr3", "exon", 1, 10, _attrs(E, "GENEA", "TE1")),
        _line("chrX", "exon", 10, 109, _attrs(P, "PARG1", "TP1")),
        _line("chrY", "exon", 10, 59, _attrs(P + "_PAR_Y", "PARG1", "TP1")),
        _line("chrM", "gene", 1, 50, _attrs(M, "MT-TEST")),
        _line("chrM", "exon", 1, 50, _attrs(M, "MT-TEST", "TM1")),
        _line("chrM", "exon", 1, 10, 'transcript_id "orphan";'),  # no gene_id: ignored
    ]
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def gtf(tmp_path) -> Path:
    return _write_gtf(tmp_path / "test.gtf.gz")


@pytest.mark.parametrize("name", ["test.gtf", "test.gtf.gz"])
def test_gtf_known_answer(tmp_path, name):
    table = gene_lengths_from_gtf(_write_gtf(tmp_path / name))
    assert list(table.columns) == ["gene_id", "gene_id_version", "gene_name", "chrom", "length"]
    assert table["length"].dtype == np.int64
    # GTF order, _PAR_Y copy dropped.
    assert table["gene_id"].tolist() == list(EXPECTED)
    assert table["gene_id_version"].tolist() == [A, B, E, P, M]
    for row in table.itertuples():
        assert (row.gene_name, row.chrom, row.length) == EXPECTED[row.gene_id]


def test_gtf_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        gene_lengths_from_gtf(tmp_path / "missing.gtf")
    no_exon = tmp_path / "noexon.gtf"
    no_exon.write_text(_line("chr1", "gene", 1, 10, _attrs(A, "GENEA")) + "\n")
    with pytest.raises(ValueError, match="exon"):
        gene_lengths_from_gtf(no_exon)


# --------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------


def test_resolve_ids_and_symbols(gtf):
    names = [
        A,  # versioned id, exact
        "ENSG00000000002.7",  # other version -> stripped
        "ENSG00000000003",  # unversioned
        "PARG1",  # symbol
        "geneb",  # case-insensitive symbol
        "GENEA",  # symbol of two ids -> first in table order
        "NOPE",  # unknown
        "ENSG99999999999",  # unknown id
    ]
    out = resolve_gene_lengths(pd.Index(names), gene_lengths=gtf)
    assert out.dtype == np.float64
    assert out.index.tolist() == names
    np.testing.assert_array_equal(out.to_numpy(), [261, 211, 50, 100, 211, 261, np.nan, np.nan])


def test_resolve_gene_ids_column_first(gtf):
    var = pd.DataFrame(
        {"gene_ids": ["ENSG00000000001.3", "ENSG00000000005", "ENSG99999999999", None]},
        index=["GENEB", "whatever", "MT-TEST", "PARG1"],
    )
    out = resolve_gene_lengths(var, gene_lengths=gtf)
    # id column wins over the symbol; unknown / missing ids fall back to the var names.
    np.testing.assert_array_equal(out.to_numpy(), [261, 10, 50, 100])
    assert out.index.equals(var.index)

    var2 = var.rename(columns={"gene_ids": "gene_id"})
    np.testing.assert_array_equal(resolve_gene_lengths(var2, gene_lengths=gtf).to_numpy(), [261, 10, 50, 100])


def test_resolve_duplicate_var_names(gtf):
    out = resolve_gene_lengths(pd.Index(["GENEB", "GENEB", "x"]), gene_lengths=gtf)
    np.testing.assert_array_equal(out.to_numpy(), [211, 211, np.nan])


def test_resolve_gtf_path_types(gtf):
    a = resolve_gene_lengths(pd.Index(["GENEA", "MT-TEST"]), gene_lengths=str(gtf))
    b = resolve_gene_lengths(pd.Index(["GENEA", "MT-TEST"]), gene_lengths=gtf)
    pd.testing.assert_series_equal(a, b)
    np.testing.assert_array_equal(a.to_numpy(), [261, 50])


def test_resolve_user_series():
    lengths = pd.Series({"ENSG00000000001.2": 1000, "MYGENE": 500, "ENSG00000000002": 250.5})
    out = resolve_gene_lengths(
        pd.Index(["ENSG00000000001", "ENSG00000000001.2", "mygene", "MYGENE", "ENSG00000000002.4", "other"]),
        gene_lengths=lengths,
    )
    np.testing.assert_array_equal(out.to_numpy(), [1000, 1000, 500, 500, 250.5, np.nan])


def test_resolve_user_dataframe():
    df = pd.DataFrame(
        {"gene_id": ["ENSG00000000001", "ENSG00000000002"], "gene_name": ["Abc1", "ABC1"], "length": [10, 20]}
    )
    out = resolve_gene_lengths(pd.Index(["Abc1", "ABC1", "abc1", "ENSG00000000002.3"]), gene_lengths=df)
    # "abc1" matches two distinct symbols case-insensitively -> ambiguous -> NaN.
    np.testing.assert_array_equal(out.to_numpy(), [10, 20, np.nan, 20])

    only_names = pd.DataFrame({"gene_name": ["X1", "X2"], "length": [5, 6]})
    np.testing.assert_array_equal(resolve_gene_lengths(pd.Index(["x2", "X1"]), gene_lengths=only_names), [6, 5])
    only_ids = pd.DataFrame({"gene_id": ["ENSG00000000007.1"], "length": [7]})
    np.testing.assert_array_equal(resolve_gene_lengths(pd.Index(["ENSG00000000007"]), gene_lengths=only_ids), [7])


def _load_script():
    spec = importlib.util.spec_from_file_location("make_gene_lengths", REPO / "scripts" / "make_gene_lengths.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_roundtrip(gtf, tmp_path):
    out = tmp_path / "lengths.tsv.gz"
    assert _load_script().main([str(gtf), str(out)]) == 0
    with gzip.open(out, "rt") as f:
        assert f.readline().startswith("#")
    text = pd.read_csv(out, sep="\t", comment="#")
    assert list(text.columns) == ["gene_id", "gene_id_version", "gene_name", "chrom", "length"]
    pd.testing.assert_frame_equal(text, gene_lengths_from_gtf(gtf), check_dtype=False)
    # The written table is itself accepted as gene_lengths.
    res = resolve_gene_lengths(pd.Index(["GENEA", "ENSG00000000002", "MT-TEST"]), gene_lengths=out)
    np.testing.assert_array_equal(res.to_numpy(), [261, 211, 50])


@pytest.mark.parametrize(
    ("gene_lengths", "exc", "match"),
    [
        ("/nonexistent/annotation.gtf.gz", FileNotFoundError, "not found"),
        (Path("/nonexistent/annotation.gtf"), FileNotFoundError, "not found"),
        (pd.Series({"A": 10, "B": 0}), ValueError, "positive"),
        (pd.Series({"A": 10, "B": -5}), ValueError, "positive"),
        (pd.Series({"A": 10, "B": np.nan}), ValueError, "NaN"),
        (pd.Series({"A": 10, "B": np.inf}), ValueError, "finite"),
        (pd.Series({"A": "long"}), ValueError, "numeric"),
        (pd.DataFrame({"gene_id": ["A"]}), ValueError, "length"),
        (pd.DataFrame({"symbol": ["A"], "length": [3]}), ValueError, "gene_name"),
        (pd.DataFrame({"gene_name": ["A", "B"], "length": [3, np.nan]}), ValueError, "NaN"),
        (42, TypeError, "gene_lengths"),
    ],
)
def test_bad_gene_lengths(gene_lengths, exc, match):
    with pytest.raises(exc, match=match):
        resolve_gene_lengths(pd.Index(["A"]), gene_lengths=gene_lengths)


def test_bad_suffix_and_var(tmp_path):
    f = tmp_path / "lengths.parquet"
    f.write_bytes(b"")
    with pytest.raises(ValueError, match="must end with"):
        resolve_gene_lengths(pd.Index(["A"]), gene_lengths=f)
    with pytest.raises(TypeError, match="var"):
        resolve_gene_lengths(["A"], gene_lengths=pd.Series({"A": 1}))


# --------------------------------------------------------------------------------------------------
# Packaged table (shipped with the package, no external data needed)
# --------------------------------------------------------------------------------------------------


def test_packaged_table_is_package_data():
    res = importlib.resources.files("sepal_tl") / "data" / "gene_lengths_gencode_v43_basic.tsv.gz"
    assert res.is_file()
    # Small enough to ship in the wheel.
    with importlib.resources.as_file(res) as p:
        assert p.stat().st_size < 3_000_000


def test_packaged_table():
    t = load_gene_length_table()
    assert list(t.columns) == ["gene_id", "gene_id_version", "gene_name", "chrom", "length"]
    assert len(t) > 60_000
    assert t["gene_id"].is_unique
    assert not t["gene_id"].str.contains(r"\.").any()
    assert t["length"].dtype == np.int64
    assert (t["length"] > 0).all()
    assert t["gene_name"].notna().all()
    # Every chromosome, chrM included (unlike the reference tool); no _PAR_Y copies.
    assert set(t["chrom"]) >= {f"chr{c}" for c in [*range(1, 23), "X", "Y", "M"]}
    assert (t["chrom"] == "chrM").sum() == 37
    assert not t["gene_id_version"].str.endswith("_PAR_Y").any()
    # Returned copies are independent of the cache.
    t.loc[:, "length"] = -1
    assert (load_gene_length_table()["length"] > 0).all()


def test_packaged_default_resolution():
    names = pd.Index(["ERBB2", "GAPDH", "MT-CO1", "ENSG00000141736", "ENSG00000111640.15", "mt-co1", "NOT_A_GENE"])
    out = resolve_gene_lengths(names)
    # Values are the merged exon lengths in GENCODE v43 basic (ERBB2, GAPDH agree with gtftools).
    np.testing.assert_array_equal(out.to_numpy(), [5663, 1634, 1542, 5663, 1634, 1542, np.nan])
    assert out.name == "gene_length"


# --------------------------------------------------------------------------------------------------
# Real data: independent check against the third-party (gtftools) table
# --------------------------------------------------------------------------------------------------


@pytest.mark.realdata
@needs_data
def test_packaged_table_agrees_with_gtftools_merged():
    ours = load_gene_length_table()
    theirs = pd.read_csv(THIRD_PARTY, sep="\t")
    both = ours.merge(theirs, left_on="gene_id_version", right_on="gene", how="inner")
    agree = (both["length"] == both["merged"]).mean()
    print(f"gtftools 'merged' agreement: {agree:.6f} over {len(both)} genes")
    assert len(both) > 62_000
    assert agree >= 0.999
    # Ours only: the mitochondrial genes (gtftools skips chrM).
    only_ours = ours.loc[~ours["gene_id_version"].isin(theirs["gene"])]
    assert (only_ours["chrom"] == "chrM").all()
    # Theirs only: the _PAR_Y copies, with the same lengths as the chrX copies we keep.
    only_theirs = theirs.loc[~theirs["gene"].isin(ours["gene_id_version"])]
    assert only_theirs["gene"].str.endswith("_PAR_Y").all()
    par = only_theirs.assign(gene=only_theirs["gene"].str.removesuffix("_PAR_Y")).merge(
        ours, left_on="gene", right_on="gene_id_version"
    )
    assert len(par) == len(only_theirs)
    assert (par["merged"] == par["length"]).all()


@pytest.mark.realdata
@pytest.mark.slow
@needs_data
def test_packaged_table_matches_fresh_derivation():
    fresh = gene_lengths_from_gtf(GTF_V43)
    pd.testing.assert_frame_equal(fresh, load_gene_length_table(), check_dtype=False)
