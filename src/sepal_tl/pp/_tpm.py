"""TPM normalisation with gene lengths."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from sepal_tl._docs import inject_docs
from sepal_tl._keys import TPM
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._uns import record
from sepal_tl._validation import check_counts, get_matrix

from ._gene_lengths import resolve_gene_lengths


def _tpm_matrix(counts, lengths: np.ndarray) -> tuple[np.ndarray | sparse.csr_matrix, int]:
    """TPM of ``counts`` (spots × genes) given gene ``lengths``; returns it and the number of all-zero spots."""
    inv_len = (1.0 / lengths).astype(np.float64)
    if sparse.issparse(counts):
        rate = sparse.csr_matrix(counts, dtype=np.float64) @ sparse.diags(inv_len)
        totals = np.asarray(rate.sum(axis=1)).ravel()
        scale = np.divide(1e6, totals, out=np.zeros_like(totals), where=totals > 0)
        out = sparse.csr_matrix(sparse.diags(scale) @ rate, dtype=np.float32)
    else:
        rate = np.asarray(counts, dtype=np.float64) * inv_len
        totals = rate.sum(axis=1)
        scale = np.divide(1e6, totals, out=np.zeros_like(totals), where=totals > 0)
        out = (rate * scale[:, None]).astype(np.float32)
    return out, int((totals == 0).sum())


@spatialdata_aware()
@inject_docs
def tpm(
    adata: AnnData,
    *,
    gene_lengths: pd.Series | pd.DataFrame | str | os.PathLike | None = None,
    layer: str | None = None,
    key_added: str = TPM,
    copy: bool = False,
) -> AnnData | None:
    """Transcripts per million, normalised over the genes in ``adata``.

    ``tpm[i, g] = (c[i, g] / L[g]) / sum_h (c[i, h] / L[h]) * 1e6`` where ``L`` is the gene's merged exon length.
    As in SEPAL the denominator runs over the genes present (after filtering), not the whole transcriptome.
    Genes without a known length are dropped (their number is logged). A spot whose counts are all zero gets
    TPM 0 instead of NaN.

    Parameters
    ----------
    adata
        Spots × genes with raw counts.
    gene_lengths
        ``None`` uses the table shipped with the package (GENCODE v43 basic, human, merged exon length, derived
        by ``scripts/make_gene_lengths.py``). Otherwise a Series (index gene ids or symbols, values bp), a
        DataFrame with ``gene_id`` and/or ``gene_name`` and ``length`` columns, or a path to a GTF file. Genes
        resolve by ``var["gene_ids"]``, then by ``var_names`` as Ensembl ids (with or without version), then as
        symbols.
    layer
        Layer with raw counts; ``None`` uses ``adata.X``.
    key_added
        Name of the output layer.
    %(copy_table_key)s

    Returns
    -------
    A copy if ``copy=True``, else ``None``. Sets ``layers[key_added]`` (same sparsity as the counts, float32),
    ``var["gene_length"]``, and ``uns["sepal"]["pp"]["tpm"]``.

    Examples
    --------
    >>> import numpy as np
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=1, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.tpm(adata)  # gene lengths from the packaged GENCODE table, looked up by gene id
    >>> adata.var["gene_length"].head(3)
    KLHL17     2567.0
    SLC45A1    2498.0
    ANGPTL7    2224.0
    Name: gene_length, dtype: float64
    >>> np.allclose(adata.layers["tpm"].sum(axis=1), 1e6)  # one million per spot
    True
    """
    counts = get_matrix(adata, layer)
    check_counts(counts, what="counts" if layer is None else f"layers[{layer!r}]")
    lengths = resolve_gene_lengths(adata.var, gene_lengths=gene_lengths)
    known = lengths.notna().to_numpy()
    if not known.any():
        examples = list(adata.var_names[:5])
        msg = (
            f"None of the {adata.n_vars} genes has a known length (e.g. {examples}). The default table covers "
            "human GENCODE v43 genes by Ensembl id or symbol; for other organisms or naming schemes pass "
            "gene_lengths= (a Series of lengths in bp, a DataFrame, or a GTF path)."
        )
        raise ValueError(msg)
    n_dropped = int((~known).sum())

    if copy:
        adata = adata.copy()
    if n_dropped:
        logger.warning("tpm: dropped %d of %d genes that have no known length.", n_dropped, adata.n_vars)
        adata._inplace_subset_var(known)
    values = lengths.to_numpy(dtype=float)[known]
    out, n_empty = _tpm_matrix(get_matrix(adata, layer), values)
    if n_empty:
        logger.warning("tpm: %d spots have zero counts over the kept genes; their TPM is 0.", n_empty)
    adata.layers[key_added] = out
    adata.var["gene_length"] = values
    source = gene_lengths if isinstance(gene_lengths, str | os.PathLike) else type(gene_lengths).__name__
    record(
        adata,
        "pp",
        "tpm",
        {"layer": layer, "key_added": key_added, "gene_lengths": str(source), "n_genes_dropped": n_dropped},
    )
    logger.info("added %r to adata.layers and 'gene_length' to adata.var", key_added)
    return adata if copy else None
