"""SEPAL's spatial head: a small graph network over each spot's neighbourhood that outputs a per-gene correction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_geometric.nn as pyg_nn
from torch import nn

from sepal_tl._validation import check_choice
from sepal_tl.tl._posenc import relative_position_encoding

#: Graph operators of :mod:`torch_geometric.nn` offered (the reference's sweep), built with default kwargs.
OPERATORS = ("GCNConv", "GraphConv", "SAGEConv", "GATConv", "GATv2Conv", "TransformerConv")
#: How the positional encoding joins the image embedding.
AGGREGATIONS = ("sum", "concat")
#: How each graph is read out to one vector.
POOLINGS = ("sag", "center", "mean")


def _check_widths(name: str, widths: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(widths)
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        msg = f"{name}={widths!r} must be a sequence of positive integer layer widths."
        raise ValueError(msg)
    return widths


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        msg = f"{name}={value!r} must be a positive integer."
        raise ValueError(msg)
    return value


def _resolve_pos_dim(in_dim: int, aggregation: str, pos_dim: int | None) -> int:
    check_choice("aggregation", aggregation, AGGREGATIONS)
    if pos_dim is None:
        pos_dim = in_dim
    if aggregation == "sum" and pos_dim != in_dim:
        msg = f"aggregation='sum' adds the encoding to the embedding, so pos_dim ({pos_dim}) must equal {in_dim}."
        raise ValueError(msg)
    if isinstance(pos_dim, bool) or not isinstance(pos_dim, int) or pos_dim <= 0 or pos_dim % 4:
        msg = f"pos_dim={pos_dim!r} must be a positive multiple of 4 (the embedding width for aggregation='sum')."
        raise ValueError(msg)
    return pos_dim


def node_features(
    embeddings: torch.Tensor, offsets: torch.Tensor, aggregation: str = "sum", pos_dim: int | None = None
) -> torch.Tensor:
    """Join node embeddings with the positional encoding of their offsets from the centre.

    Parameters
    ----------
    embeddings
        ``(n_nodes, d)`` image embeddings of the nodes, e.g. ``embeddings[batch.node_index]``.
    offsets
        ``(n_nodes, 2)`` array ``(row, col)`` offsets from each node's centre.
    aggregation
        ``"sum"``: ``embeddings + PE(offsets)`` (``d`` channels; ``d`` must be a multiple of 4).
        ``"concat"``: ``[embeddings, PE(offsets)]`` (``d + pos_dim`` channels).
    pos_dim
        Width of the encoding (:func:`~sepal_tl.tl._posenc.relative_position_encoding`); defaults to ``d``,
        and must equal ``d`` for ``"sum"``.

    Returns
    -------
    ``(n_nodes, d)`` or ``(n_nodes, d + pos_dim)`` node features.
    """
    if embeddings.ndim != 2 or offsets.shape != (embeddings.shape[0], 2):
        msg = f"need (n, d) embeddings and (n, 2) offsets, got {tuple(embeddings.shape)} and {tuple(offsets.shape)}."
        raise ValueError(msg)
    pos_dim = _resolve_pos_dim(embeddings.shape[1], aggregation, pos_dim)
    # A batch holds few distinct offsets (7 for one hex hop): encode each once, then gather.
    distinct, inverse = torch.unique(offsets.to(embeddings.device), dim=0, return_inverse=True)
    encoding = relative_position_encoding(distinct, pos_dim).to(embeddings.dtype)[inverse]
    if aggregation == "sum":
        return embeddings + encoding
    return torch.cat([embeddings, encoding], dim=1)


def _mlp(widths: Sequence[int]) -> list[nn.Module]:
    """Linear + ELU for each consecutive pair of ``widths``."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ELU()]
    return layers


class SpatialHead(nn.Module):
    """Graph network from a spot's neighbourhood to a per-gene correction of its local prediction.

    Layout (docs/method.md, "The model", Spatial stage): node features (embedding joined with the positional encoding,
    see :func:`node_features`) → optional pre-MLP (Linear + ELU per layer) → graph layers, each followed by ELU →
    pooling to one vector per graph → post-MLP (Linear + ELU per hidden layer) → a final Linear to ``n_genes`` with
    **no** activation. The reference ended in ELU, which bounds the correction at ≥ −1; here the correction is
    unbounded.

    Parameters
    ----------
    in_dim
        Width of the node embeddings (768 for ViT-B/16).
    n_genes
        Number of genes predicted.
    operator
        One of :data:`OPERATORS`, a :mod:`torch_geometric.nn` layer built as ``Op(in, out)`` with default
        arguments (GATConv / GATv2Conv / TransformerConv with one head).
    hidden
        Output widths of the graph layers (may be empty).
    pre
        Widths of the pre-MLP layers (empty: none).
    post
        Widths of the post-MLP hidden layers before the final Linear(…, n_genes) (empty: that Linear only).
    aggregation
        ``"sum"`` (encoding added to the embedding) or ``"concat"``.
    pooling
        ``"sag"``: :class:`torch_geometric.nn.SAGPooling` with ``ratio=1``, which in PyG keeps exactly one
        node per graph (an integer ratio ≥ 1 means k nodes): the top-scoring node, gated by the tanh of its
        score. This is the reference's readout; note that the kept node need not be the centre.
        ``"center"``: the centre node's vector ``x[ptr[:-1]]``, the fix for that quirk.
        ``"mean"``: :func:`torch_geometric.nn.global_mean_pool`.
    pos_dim
        Width of the positional encoding; defaults to ``in_dim`` and must equal it for ``"sum"``.
    """

    def __init__(
        self,
        in_dim: int,
        n_genes: int,
        *,
        operator: str = "GraphConv",
        hidden: Sequence[int] = (256,),
        pre: Sequence[int] = (),
        post: Sequence[int] = (),
        aggregation: str = "sum",
        pooling: str = "sag",
        pos_dim: int | None = None,
    ) -> None:
        super().__init__()
        in_dim, n_genes = _positive("in_dim", in_dim), _positive("n_genes", n_genes)
        if operator not in OPERATORS:
            msg = f"operator={operator!r} is not supported; choose one of {', '.join(OPERATORS)} (torch_geometric.nn)."
            raise ValueError(msg)
        check_choice("pooling", pooling, POOLINGS)
        self.in_dim, self.n_genes = in_dim, n_genes
        self.operator, self.aggregation, self.pooling = operator, aggregation, pooling
        self.pos_dim = _resolve_pos_dim(in_dim, aggregation, pos_dim)
        #: Width of the node features the network takes (embedding, plus the encoding for "concat").
        self.feature_dim = in_dim + (self.pos_dim if aggregation == "concat" else 0)

        widths = (self.feature_dim, *_check_widths("pre", pre))
        self.pre = nn.Sequential(*_mlp(widths))
        hidden = _check_widths("hidden", hidden)
        conv_widths = (widths[-1], *hidden)
        op = getattr(pyg_nn, operator)
        self.convs = nn.ModuleList(op(a, b) for a, b in zip(conv_widths[:-1], conv_widths[1:], strict=True))
        self.act = nn.ELU()
        width = conv_widths[-1]
        self.pool = pyg_nn.SAGPooling(width, ratio=1) if pooling == "sag" else None
        post_widths = (width, *_check_widths("post", post))
        correction = nn.Linear(post_widths[-1], n_genes)
        self.post = nn.Sequential(*_mlp(post_widths), correction)
        # The correction starts at zero, so training starts from the local prediction and can only move away from
        # it where the training loss says so (the reference initialised it randomly; see docs/differences.md).
        nn.init.zeros_(correction.weight)
        nn.init.zeros_(correction.bias)

    def features(self, embeddings: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Node features from embeddings and offsets with this model's aggregation (see :func:`node_features`)."""
        return node_features(embeddings, offsets, self.aggregation, self.pos_dim)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor,
        ptr: torch.Tensor,
    ) -> torch.Tensor:
        """Per-gene correction for each graph's centre.

        Parameters
        ----------
        x
            Node features ``(n_nodes, feature_dim)``: the embeddings joined with the positional encoding by
            :meth:`features`.
        edge_index
            ``(2, n_edges)`` local edges.
        batch
            ``(n_nodes,)`` graph id of every node.
        ptr
            ``(n_graphs + 1,)`` start of each graph; its first node is the centre.

        Returns
        -------
        ``(n_graphs, n_genes)`` corrections, to be added to the centres' local predictions.
        """
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            msg = f"expected node features of width {self.feature_dim}, got shape {tuple(x.shape)}."
            raise ValueError(msg)
        n_graphs = ptr.numel() - 1
        x = self.pre(x)
        for conv in self.convs:
            x = self.act(conv(x, edge_index))
        if self.pooling == "center":
            pooled = x[ptr[:-1]]
        elif self.pooling == "mean":
            pooled = pyg_nn.global_mean_pool(x, batch, size=n_graphs)
        else:
            assert self.pool is not None  # pooling == "sag"
            kept, _, _, kept_batch, _, _ = self.pool(x, edge_index, batch=batch)
            # One node per graph; place each by its graph id rather than trusting the order.
            pooled = kept.new_zeros((n_graphs, kept.shape[1])).index_copy(0, kept_batch, kept)
        return self.post(pooled)
