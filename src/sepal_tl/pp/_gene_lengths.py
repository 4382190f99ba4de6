"""Gene-length table used by TPM normalisation.

SEPAL normalises counts to TPM with, per gene, the *merged* exon length: the total length of the
union of all exon intervals of all transcripts of the gene (overlaps counted once), in bp. The
reference pipeline derives it from the GENCODE v43 *basic* GTF (GRCh38).

This module

* parses a GTF into such a table (:func:`gene_lengths_from_gtf`),
* loads the packaged table derived from GENCODE release 43 basic
  (:func:`load_gene_length_table`; rebuilt with ``scripts/make_gene_lengths.py``), and
* maps the genes of an AnnData ``var`` onto lengths (:func:`resolve_gene_lengths`).

Unlike the reference tool (which only processed chr1-22, X and Y and therefore silently dropped the
mitochondrial genes), every chromosome is kept, chrM included.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from sepal_tl._logging import logger
from sepal_tl.io._common import require_file

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["gene_lengths_from_gtf", "load_gene_length_table", "resolve_gene_lengths"]

PACKAGED_TABLE = "gene_lengths_gencode_v43_basic.tsv.gz"
"""File name of the packaged table under ``sepal_tl/data``."""

_GTF_SUFFIXES = (".gtf", ".gtf.gz")
_TABLE_SUFFIXES = (".tsv", ".tsv.gz", ".txt", ".txt.gz", ".csv", ".csv.gz")
_ID_COLUMNS = ("gene_ids", "gene_id")
_OUTPUT_COLUMNS = ["gene_id", "gene_id_version", "gene_name", "chrom", "length"]


# --------------------------------------------------------------------------------------------------
# GTF parsing
# --------------------------------------------------------------------------------------------------


def _strip_version(ids: pd.Series) -> pd.Series:
    """Strip the ``.N`` version (and a trailing ``_PAR_Y`` tag) from Ensembl ids.

    Only ids starting with ``ENS`` are touched; anything else is returned unchanged.
    """
    ids = ids.astype(object)
    is_str = ids.map(lambda v: isinstance(v, str))
    out = ids.copy()
    s = ids[is_str].astype(str)
    ens = s.str.startswith("ENS")
    out.loc[s.index[ens]] = s[ens].str.replace(r"\.\d+(?:_PAR_Y)?$", "", regex=True)
    return out


def _read_exons(path: Path, chunksize: int) -> pd.DataFrame:
    """The exon records of a GTF with a ``gene_id``: ``gene_id_version``, ``gene_name``, ``chrom``, ``start``, ``end``."""
    reader = pd.read_csv(
        path,
        sep="\t",
        comment="#",
        header=None,
        usecols=[0, 2, 3, 4, 8],
        names=["chrom", "feature", "start", "end", "attributes"],
        dtype={"chrom": str, "feature": str, "start": np.int64, "end": np.int64, "attributes": str},
        compression="infer",
        chunksize=chunksize,
    )
    parts = []
    for chunk in reader:
        exons = chunk.loc[chunk["feature"] == "exon"]
        if exons.empty:
            continue
        attrs = exons["attributes"]
        parts.append(
            pd.DataFrame(
                {
                    "gene_id_version": attrs.str.extract(r'(?:^|;)\s*gene_id\s+"([^"]*)"', expand=False),
                    "gene_name": attrs.str.extract(r'(?:^|;)\s*gene_name\s+"([^"]*)"', expand=False),
                    "chrom": exons["chrom"],
                    "start": exons["start"],
                    "end": exons["end"],
                }
            )
        )
    if not parts:
        msg = f"No 'exon' records found in GTF {str(path)!r}."
        raise ValueError(msg)
    ex = pd.concat(parts, ignore_index=True)
    n_missing = int(ex["gene_id_version"].isna().sum())
    if n_missing:
        logger.debug("gene_lengths_from_gtf: ignored %d exon records without a gene_id", n_missing)
        ex = ex.loc[ex["gene_id_version"].notna()].reset_index(drop=True)
    if ex.empty:
        msg = f"No 'exon' records with a gene_id attribute found in GTF {str(path)!r}."
        raise ValueError(msg)
    return ex


def _merged_lengths(codes: np.ndarray, start: np.ndarray, end: np.ndarray, n_genes: int) -> np.ndarray:
    """Length of the union of the intervals ``[start, end]`` (1-based, inclusive) of each gene ``codes``.

    With the exons of a gene sorted by start, every position of exon i up to the running maximum end of the
    exons before it is already covered (the exon holding that maximum starts no later than exon i), so exon i
    adds ``max(0, end_i - max(start_i - 1, prev_max))``.
    """
    order = np.lexsort((start, codes))
    g = codes[order]
    start = start[order]
    end = end[order]
    run_max = pd.Series(end).groupby(g).cummax().to_numpy()
    prev_max = np.empty_like(run_max)
    prev_max[1:] = run_max[:-1]
    new_gene = np.ones(len(g), dtype=bool)
    new_gene[1:] = g[1:] != g[:-1]
    prev_max[new_gene] = np.iinfo(np.int64).min
    added = np.clip(end - np.maximum(start - 1, prev_max), 0, None)
    return np.bincount(g, weights=added, minlength=n_genes).astype(np.int64)


def gene_lengths_from_gtf(path: str | os.PathLike[str], *, chunksize: int = 500_000) -> pd.DataFrame:
    r"""Compute the merged exon length of every gene in a GTF file.

    The merged length of a gene is the number of bp covered by the union of the exon intervals of
    all its transcripts: overlapping (or nested) exons are counted once. GTF coordinates are
    1-based and inclusive, so an exon ``[start, end]`` covers ``end - start + 1`` bp.

    Parameters
    ----------
    path
        A GTF file, plain or gzip-compressed (``.gz``). Only ``exon`` records are used; the
        ``gene_id`` attribute is required, ``gene_name`` is optional.
    chunksize
        Number of GTF lines read at a time (bounds the memory used by the attribute column).

    Returns
    -------
    pandas.DataFrame
        One row per gene, in order of first appearance in the GTF, with columns

        ``gene_id``
            Ensembl id without version (for ids starting with ``ENS``; others are kept as is).
        ``gene_id_version``
            The ``gene_id`` attribute as written in the GTF.
        ``gene_name``
            The ``gene_name`` attribute (``NaN`` when absent).
        ``chrom``
            Sequence name of the gene's first exon.
        ``length``
            Merged exon length in bp (``int64``).

        Rows whose unversioned ``gene_id`` repeats an earlier one (GENCODE's ``_PAR_Y`` copies of
        the pseudoautosomal genes) are dropped, keeping the first (the chrX copy). All sequences
        are kept, including chrM and unplaced scaffolds.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file has no ``exon`` record with a ``gene_id``.

    Examples
    --------
    >>> from pathlib import Path
    >>> import sepal_tl as sepal
    >>> exon = 'chr17\tHAVANA\texon\t{}\t{}\t.\t+\t.\tgene_id "ENSG00000141736.14"; gene_name "ERBB2";\n'
    >>> _ = Path("genes.gtf").write_text(exon.format(100, 199) + exon.format(150, 299))  # overlapping
    >>> sepal.pp.gene_lengths_from_gtf("genes.gtf")  # merged exon length: 100 to 299, 200 bp
               gene_id     gene_id_version gene_name  chrom  length
    0  ENSG00000141736  ENSG00000141736.14     ERBB2  chr17     200
    """
    path = require_file(path, "GTF file")

    ex = _read_exons(path, chunksize)
    codes, uniques = pd.factorize(ex["gene_id_version"], sort=False)  # one code per gene, by first appearance
    first_row = pd.Series(np.arange(len(ex))).groupby(codes).first().to_numpy()
    length = _merged_lengths(codes, ex["start"].to_numpy(), ex["end"].to_numpy(), len(uniques))

    out = pd.DataFrame(
        {
            "gene_id_version": pd.Series(uniques, dtype=object),
            "gene_name": ex["gene_name"].to_numpy()[first_row],
            "chrom": ex["chrom"].to_numpy()[first_row],
            "length": length,
        }
    )
    out.insert(0, "gene_id", _strip_version(out["gene_id_version"]))
    n_dup = int(out["gene_id"].duplicated().sum())
    if n_dup:
        logger.debug("gene_lengths_from_gtf: dropped %d duplicated unversioned gene ids (e.g. _PAR_Y)", n_dup)
        out = out.loc[~out["gene_id"].duplicated()].reset_index(drop=True)
    return out[_OUTPUT_COLUMNS]


# --------------------------------------------------------------------------------------------------
# Packaged table
# --------------------------------------------------------------------------------------------------


def _read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a gene-length table (tab- or comma-separated, optionally gzipped)."""
    sep = "," if str(path).lower().endswith((".csv", ".csv.gz")) else "\t"
    return pd.read_csv(
        path,
        sep=sep,
        comment="#",
        compression="infer",
        keep_default_na=False,
        na_values=[""],
        dtype={"gene_id": str, "gene_id_version": str, "gene_name": str, "chrom": str},
    )


@functools.cache
def _packaged_table() -> pd.DataFrame:
    source = importlib.resources.files("sepal_tl") / "data" / PACKAGED_TABLE
    with importlib.resources.as_file(source) as path:
        table = _read_table(path)
    table["length"] = table["length"].astype(np.int64)
    return table


def load_gene_length_table() -> pd.DataFrame:
    """Load the packaged gene-length table (GENCODE release 43 basic, GRCh38).

    The table was derived with :func:`gene_lengths_from_gtf` from
    ``gencode.v43.basic.annotation.gtf.gz`` by ``scripts/make_gene_lengths.py``. It covers every
    chromosome, chrM included (the reference tool left out the mitochondrial genes), and holds one
    row per unversioned Ensembl gene id (the chrX copy of the pseudoautosomal genes).

    The file is read once per process (cached); each call returns a copy, so modifying the result
    is safe.

    Returns
    -------
    pandas.DataFrame
        Columns ``gene_id`` (Ensembl, no version), ``gene_id_version``, ``gene_name``, ``chrom``
        and ``length`` (merged exon length in bp, ``int64``), in GTF order.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> table = sepal.pp.load_gene_length_table()
    >>> table.columns.tolist()
    ['gene_id', 'gene_id_version', 'gene_name', 'chrom', 'length']
    >>> table[table["gene_name"] == "ERBB2"]
                   gene_id     gene_id_version gene_name  chrom  length
    49788  ENSG00000141736  ENSG00000141736.14     ERBB2  chr17    5663
    """
    return _packaged_table().copy()


# --------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _gtf_table_cached(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    return gene_lengths_from_gtf(path)


def _validated_table(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """Normalise a user table to columns ``gene_id``, ``gene_id_version``, ``gene_name``, ``length``."""
    if "length" not in table.columns or not ({"gene_id", "gene_name"} & set(table.columns)):
        msg = (
            f"{what} must have a 'length' column and at least one of 'gene_id' / 'gene_name'; "
            f"got columns {list(map(str, table.columns))}."
        )
        raise ValueError(msg)
    length = _validated_lengths(table["length"], what)
    out = pd.DataFrame(index=pd.RangeIndex(len(table)))
    if "gene_id" in table.columns:
        ids = pd.Series(table["gene_id"].to_numpy(dtype=object))
        out["gene_id_version"] = ids
        out["gene_id"] = _strip_version(ids)
    else:
        out["gene_id_version"] = np.nan
        out["gene_id"] = np.nan
    out["gene_name"] = table["gene_name"].to_numpy(dtype=object) if "gene_name" in table.columns else np.nan
    out["length"] = length.to_numpy()
    return out


def _validated_lengths(values: pd.Series, what: str) -> pd.Series:
    try:
        length = pd.to_numeric(pd.Series(values), errors="raise").astype(np.float64)
    except (TypeError, ValueError) as e:
        msg = f"{what}: gene lengths must be numeric ({e})."
        raise ValueError(msg) from e
    bad = ~np.isfinite(length.to_numpy()) | (length.to_numpy() <= 0)
    if bad.any():
        msg = f"{what}: gene lengths must be finite and positive; {int(bad.sum())} value(s) are NaN, infinite or <= 0."
        raise ValueError(msg)
    return length


def _as_table(gene_lengths) -> pd.DataFrame:
    """Turn any accepted ``gene_lengths`` argument into a normalised table."""
    if gene_lengths is None:
        return _packaged_table()
    if isinstance(gene_lengths, pd.Series):
        length = _validated_lengths(gene_lengths, "gene_lengths Series")
        keys = pd.Series(gene_lengths.index.to_numpy(dtype=object))
        # The index may hold Ensembl ids or symbols: make every key usable both ways (exact match).
        return pd.DataFrame(
            {
                "gene_id": _strip_version(keys),
                "gene_id_version": keys,
                "gene_name": keys,
                "length": length.to_numpy(),
            }
        )
    if isinstance(gene_lengths, pd.DataFrame):
        return _validated_table(gene_lengths, "gene_lengths DataFrame")
    if isinstance(gene_lengths, str | os.PathLike):
        path = require_file(gene_lengths, "gene_lengths file")
        name = path.name.lower()
        if name.endswith(_GTF_SUFFIXES):
            st = path.stat()
            return _gtf_table_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)
        if name.endswith(_TABLE_SUFFIXES):
            return _validated_table(_read_table(str(path)), f"gene_lengths table {str(path)!r}")
        msg = f"gene_lengths path must end with one of {_GTF_SUFFIXES + _TABLE_SUFFIXES}; got {str(path)!r}."
        raise ValueError(msg)
    msg = (
        "gene_lengths must be None, a pandas Series, a pandas DataFrame or a path to a GTF; "
        f"got {type(gene_lengths).__name__}."
    )
    raise TypeError(msg)


def _first_map(keys: pd.Series, values: pd.Series) -> dict:
    """Key -> value, the first occurrence winning; missing keys are skipped."""
    ok = keys.notna().to_numpy()
    k = pd.Series(values.to_numpy()[ok], index=pd.Index(keys.to_numpy()[ok], dtype=object))
    k = k[~k.index.duplicated(keep="first")]
    return k.to_dict()


def _lookup(queries: pd.Series, mapping: Mapping) -> np.ndarray:
    return queries.map(lambda q: mapping.get(q, np.nan) if isinstance(q, str) else np.nan).to_numpy(dtype=np.float64)


def resolve_gene_lengths(
    var: pd.DataFrame | pd.Index,
    *,
    gene_lengths: pd.Series | pd.DataFrame | str | os.PathLike[str] | None = None,
) -> pd.Series:
    """Look up the merged exon length of each gene of ``var``.

    Each gene is resolved by the first rule that matches:

    1. an Ensembl id column of ``var`` (``gene_ids``, else ``gene_id``), with or without version;
    2. the var name as Ensembl gene id, versioned (exact) or with the ``.N`` suffix stripped
       (for names starting with ``ENS``);
    3. the var name as gene symbol, exact;
    4. the var name as gene symbol, case-insensitive, provided it matches exactly one symbol of the
       table.

    A symbol that belongs to several gene ids in the table (a few dozen in GENCODE) resolves to
    the first of them in table order (GTF order for the packaged table).

    Parameters
    ----------
    var
        ``adata.var`` (its index holds the var names) or just the var names.
    gene_lengths
        Where the lengths come from:

        ``None``
            The packaged GENCODE v43 basic table (:func:`load_gene_length_table`).
        :class:`pandas.Series`
            Lengths in bp indexed by gene ids (versioned or not) and/or symbols.
        :class:`pandas.DataFrame`
            Columns ``length`` and at least one of ``gene_id`` / ``gene_name``.
        path
            A GTF (``.gtf`` / ``.gtf.gz``), parsed with :func:`gene_lengths_from_gtf` (results of
            recent files are cached per process), or a table (``.tsv[.gz]``, ``.txt[.gz]``,
            ``.csv[.gz]``) with the DataFrame columns above, such as the output of
            ``scripts/make_gene_lengths.py``.

    Returns
    -------
    pandas.Series
        ``float64`` lengths in bp, indexed by the var names, ``NaN`` where the gene is unknown.

    Raises
    ------
    FileNotFoundError
        If ``gene_lengths`` is a path that does not exist.
    ValueError
        If a user Series/DataFrame holds non-numeric, NaN or non-positive lengths, a DataFrame lacks
        the required columns, or a path has an unsupported suffix.
    TypeError
        If ``var`` or ``gene_lengths`` is of an unsupported type.

    Examples
    --------
    >>> import pandas as pd
    >>> import sepal_tl as sepal
    >>> sepal.pp.resolve_gene_lengths(pd.Index(["ERBB2", "ENSG00000091831", "not_a_gene"]))
    ERBB2              5663.0
    ENSG00000091831    ...
    not_a_gene            NaN
    Name: gene_length, dtype: float64
    """
    if isinstance(var, pd.DataFrame):
        names = var.index
        id_col = next((c for c in _ID_COLUMNS if c in var.columns), None)
    elif isinstance(var, pd.Index):
        names, id_col = var, None
    else:
        msg = f"var must be a pandas DataFrame (adata.var) or Index (var_names); got {type(var).__name__}."
        raise TypeError(msg)

    table = _as_table(gene_lengths)
    lengths = table["length"].astype(np.float64)
    by_version = _first_map(table["gene_id_version"], lengths)
    by_id = _first_map(table["gene_id"], lengths)
    by_name = _first_map(table["gene_name"], lengths)
    # Case-insensitive symbols: only lower-case keys that stand for a single distinct symbol.
    sym = table["gene_name"].dropna().astype(str).drop_duplicates()
    lower = sym.str.lower()
    unique_lower = ~lower.duplicated(keep=False)
    by_lower = {lo: by_name[s] for s, lo in zip(sym[unique_lower], lower[unique_lower], strict=True)}

    query = pd.Series(names.to_numpy(dtype=object))
    result = np.full(len(query), np.nan)
    steps = []
    if id_col is not None:
        ids = pd.Series(cast(pd.DataFrame, var)[id_col].to_numpy(dtype=object))  # id_col: var is a DataFrame
        steps += [(ids, by_version), (_strip_version(ids), by_id)]
    steps += [(query, by_version), (_strip_version(query), by_id), (query, by_name)]
    lower_query = query.map(lambda q: q.lower() if isinstance(q, str) else np.nan)
    steps.append((lower_query, by_lower))
    for keys, mapping in steps:
        todo = np.isnan(result)
        if not todo.any():
            break
        result[todo] = _lookup(keys[todo], mapping)
    logger.debug("resolve_gene_lengths: %d of %d genes resolved", int(np.isfinite(result).sum()), len(result))
    return pd.Series(result, index=names.copy(), name="gene_length", dtype=np.float64)
