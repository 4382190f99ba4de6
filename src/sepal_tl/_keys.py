"""The names sepal_tl writes into and reads from an AnnData, and the names of its metrics: one place for each.

Producers and consumers take their defaults from here, so the layer that :func:`sepal_tl.pp.denoise` writes is
the one :func:`sepal_tl.tl.evaluate` reads. The full list, with what each entry holds, is in docs/method.md
("AnnData keys").
"""

from __future__ import annotations

# obs columns
#: Each spot's slide (scanpy/squidpy's ``library_id``).
DEFAULT_LIBRARY_KEY = "library_id"
#: Each spot's split: ``"train"``, ``"val"`` or ``"test"``.
SPLIT = "split"

# layers, in pipeline order
COUNTS = "counts"
TPM = "tpm"
LOG2TPM = "log2tpm"
DENOISED = "denoised"
#: Boolean: raw count > 0. Metrics use only these entries.
OBSERVED = "observed"
#: Default ``key_added`` of the models: ``layers[PREDICTION]`` holds the predictions (see :func:`local_layer` and
#: :func:`embedding_obsm` for the other keys derived from it).
PREDICTION = "sepal"

# var columns
EXP_FRAC = "exp_frac"
GLOB_EXP_FRAC = "glob_exp_frac"
MORAN_I = "moran_i"
HIGHLY_SPATIAL = "highly_spatial"
#: In a new AnnData made by ``predict``: the genes the input measured.
MEASURED = "measured"

# obsp
CONNECTIVITIES = "sepal_connectivities"

# uns
#: ``adata.uns[UNS]`` holds every step's parameters, the metric tables and the embeddings' provenance.
UNS = "sepal"
#: ``uns[UNS][UNS_EMBEDDINGS][obsm key]``: how the embeddings in ``obsm`` were made.
UNS_EMBEDDINGS = "embeddings"
#: ``uns[UNS]["tl"][UNS_EMBEDDING_MODEL]``: the uid of the model whose embeddings ``obsm`` holds.
UNS_EMBEDDING_MODEL = "embedding_model"

# metrics
#: SEPAL's six metrics, in the paper's order (the columns of :func:`sepal_tl.tl.evaluate`'s table).
METRICS: tuple[str, ...] = ("MSE", "MAE", "PCC-Gene", "R2-Gene", "PCC-Patch", "R2-Patch")
#: Row name of the train-mean baseline in :func:`sepal_tl.tl.evaluate`'s table.
BASELINE = "mean_baseline"


def local_layer(key_added: str) -> str:
    """Layer of the local (encoder-only) predictions of a model written under ``key_added``."""
    return f"{key_added}_local"


def embedding_obsm(key_added: str) -> str:
    """``obsm`` key of the embeddings computed by a model written under ``key_added``."""
    return f"X_{key_added}"


def gene_score_column(pred: str, score: str, split: str) -> str:
    """``var`` column of a per-gene score (``"pcc"`` or ``"r2"``) of layer ``pred`` on ``split`` (or ``"all"``)."""
    return f"{pred}_{score}_{split}"
