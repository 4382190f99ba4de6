import math

import numpy as np
import pytest
import torch
from scipy import sparse
from torch import nn

from sepal_tl.tl._gnn import OPERATORS, POOLINGS, SpatialHead, node_features
from sepal_tl.tl._neighbourhoods import collate_subgraphs, hop_neighbourhoods
from sepal_tl.tl._posenc import relative_position_encoding

# ---------------------------------------------------------------------------------------------------------
# Positional encoding


def _head(*args, **kwargs) -> SpatialHead:
    """A head whose last layer is randomly initialised (it starts at zero), so that outputs depend on the input."""
    model = SpatialHead(*args, **kwargs)
    model.post[-1].reset_parameters()
    return model


def test_a_fresh_head_corrects_nothing():
    coords, batch = hex_batch(centres=(20, 0, 33))
    model = SpatialHead(8, 4, hidden=(6,), pooling="center")
    out = model(torch.randn(batch.node_index.numel(), 8), batch.edge_index, batch.batch, batch.ptr)
    assert torch.equal(out, torch.zeros_like(out))  # training starts from the local prediction


def test_posenc_centre_and_known_values():
    dim = 8
    enc = relative_position_encoding(torch.tensor([[0, 0], [1, 0], [0, -3], [2, 5]]), dim)
    assert enc.shape == (4, dim) and enc.dtype == torch.get_default_dtype()
    # Centre: sines 0, cosines 1.
    assert enc[0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    # Rows in channels 0-3, columns in 4-7; frequencies 1 and 10000^(-2/4) = 0.01, sin/cos interleaved.
    expected = [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)]
    expected += [math.sin(5), math.cos(5), math.sin(0.05), math.cos(0.05)]
    torch.testing.assert_close(enc[3], torch.tensor(expected))
    torch.testing.assert_close(enc[1, :4], torch.tensor([math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)]))
    assert enc[1, 4:].tolist() == [0.0, 1.0, 0.0, 1.0]
    # The sign is kept: -3 and +3 differ in their sine channels.
    assert enc[2, 4].item() == pytest.approx(-math.sin(3), abs=1e-6)


def test_posenc_distinct_and_independent_of_data():
    grid = torch.cartesian_prod(torch.arange(-6, 7), torch.arange(-6, 7))
    enc = relative_position_encoding(grid, 16)
    distances = torch.cdist(enc, enc) + torch.eye(len(grid)) * 10
    assert distances.min() > 1e-3  # all 169 offsets are distinct
    # An offset's encoding does not depend on which other offsets (or how large ones) are encoded with it.
    alone = relative_position_encoding(torch.tensor([[1, -2]]), 16)
    with_far = relative_position_encoding(torch.tensor([[1, -2], [40, -40]]), 16)
    torch.testing.assert_close(alone[0], with_far[0])
    torch.testing.assert_close(alone[0], enc[(grid == torch.tensor([1, -2])).all(1)][0])


@pytest.mark.parametrize("dim", [0, 6, 10, -4, 8.0])
def test_posenc_rejects_bad_dim(dim):
    with pytest.raises(ValueError, match="multiple of 4"):
        relative_position_encoding(torch.zeros(2, 2, dtype=torch.long), dim)


def test_posenc_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(k, 2\)"):
        relative_position_encoding(torch.zeros(3, dtype=torch.long), 8)


# ---------------------------------------------------------------------------------------------------------
# Node features and the spatial head


def hex_batch(n_hops: int = 1, centres=(20, 0, 33)):
    rows, cols = np.meshgrid(np.arange(6), np.arange(12), indexing="ij")
    keep = (rows + cols) % 2 == 0
    coords = np.column_stack([rows[keep], cols[keep]])
    d = np.abs(coords[:, None] - coords[None])
    hop1 = (d[..., 0] == 1) & (d[..., 1] == 1) | (d[..., 0] == 0) & (d[..., 1] == 2)
    neigh = hop_neighbourhoods(sparse.csr_matrix(hop1.astype(np.float32)), n_hops)
    return coords, collate_subgraphs(neigh, np.array(centres), array_coords=coords)


def test_node_features_sum_and_concat():
    emb = torch.randn(5, 8)
    offsets = torch.tensor([[0, 0], [1, 1], [-1, 1], [0, 2], [0, -2]])
    pe = relative_position_encoding(offsets, 8)
    torch.testing.assert_close(node_features(emb, offsets, "sum"), emb + pe)
    torch.testing.assert_close(node_features(emb, offsets, "concat"), torch.cat([emb, pe], 1))
    assert node_features(emb, offsets, "concat", pos_dim=4).shape == (5, 12)
    with pytest.raises(ValueError, match="must equal"):
        node_features(emb, offsets, "sum", pos_dim=4)
    with pytest.raises(ValueError, match="aggregation"):
        node_features(emb, offsets, "mean")
    with pytest.raises(ValueError, match="multiple of 4"):
        node_features(torch.randn(5, 6), offsets, "sum")


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_forward_shapes(operator, pooling):
    torch.manual_seed(0)
    coords, batch = hex_batch()
    emb = torch.randn(len(coords), 8)
    model = _head(8, 5, operator=operator, hidden=(12, 6), pre=(10,), post=(7,), pooling=pooling)
    out = model(model.features(emb[batch.node_index], batch.offsets), batch.edge_index, batch.batch, batch.ptr)
    assert out.shape == (3, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("aggregation", ["sum", "concat"])
def test_forward_takes_node_features_only(aggregation):
    torch.manual_seed(0)
    coords, batch = hex_batch()
    emb = torch.randn(len(coords), 8)[batch.node_index]
    model = _head(8, 3, hidden=(6,), aggregation=aggregation, pooling="mean")
    assert model.feature_dim == (8 if aggregation == "sum" else 16)
    features = model.features(emb, batch.offsets)
    torch.testing.assert_close(features, node_features(emb, batch.offsets, aggregation))
    assert model(features, batch.edge_index, batch.batch, batch.ptr).shape == (3, 3)
    if aggregation == "concat":  # raw embeddings are not node features: refused, not silently reinterpreted
        with pytest.raises(ValueError, match="width 16"):
            model(emb, batch.edge_index, batch.batch, batch.ptr)
    with pytest.raises(TypeError):
        model(emb, batch.edge_index, batch.batch, batch.ptr, batch.offsets)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_graphs_do_not_mix(pooling):
    # Each output row depends only on its own graph, whatever the sizes (one corner graph of 3 nodes).
    torch.manual_seed(0)
    coords, batch = hex_batch(centres=(20, 0, 33))
    x = torch.randn(batch.node_index.numel(), 8)
    model = _head(8, 4, hidden=(6,), pooling=pooling).eval()
    out = model(x, batch.edge_index, batch.batch, batch.ptr)
    x2 = x.clone()
    x2[batch.ptr[1] : batch.ptr[2]] += 5.0  # perturb graph 1 only
    out2 = model(x2, batch.edge_index, batch.batch, batch.ptr)
    torch.testing.assert_close(out[[0, 2]], out2[[0, 2]])
    assert not torch.allclose(out[1], out2[1])


@pytest.mark.parametrize("operator", OPERATORS)
def test_center_pooling_reads_the_centre(operator):
    torch.manual_seed(0)
    n_graphs, size = 4, 5
    ptr = torch.arange(n_graphs + 1) * size
    batch = torch.arange(n_graphs).repeat_interleave(size)
    edgeless = torch.zeros(2, 0, dtype=torch.long)
    x = torch.randn(n_graphs * size, 8)
    model = _head(8, 3, operator=operator, hidden=(6, 6), pooling="center").eval()
    out = model(x, edgeless, batch, ptr)
    x2 = x.clone()
    not_centre = torch.ones(len(x), dtype=torch.bool)
    not_centre[ptr[:-1]] = False
    x2[not_centre] = torch.randn(int(not_centre.sum()), 8) * 10
    torch.testing.assert_close(model(x2, edgeless, batch, ptr), out)
    x3 = x.clone()
    x3[ptr[1]] += 3.0  # the centre of graph 1
    assert not torch.allclose(model(x3, edgeless, batch, ptr)[1], out[1])


def test_sag_pooling_keeps_one_node_per_graph():
    torch.manual_seed(0)
    _, batch = hex_batch()
    model = _head(8, 3, hidden=(6,), pooling="sag")
    x = model.pre(torch.randn(batch.node_index.numel(), 8))
    x = model.act(model.convs[0](x, batch.edge_index))
    kept, _, _, kept_batch, perm, _ = model.pool(x, batch.edge_index, batch=batch.batch)
    assert kept.shape == (3, 6) and kept_batch.tolist() == [0, 1, 2]
    assert (batch.batch[perm] == kept_batch).all()


def test_final_layer_is_linear_without_activation():
    model = _head(8, 3, hidden=(6,), post=(5,), pooling="mean")
    assert isinstance(model.post[-1], nn.Linear) and model.post[-1].out_features == 3
    assert [type(m) for m in model.post] == [nn.Linear, nn.ELU, nn.Linear]
    with torch.no_grad():
        model.post[-1].weight.zero_()
        model.post[-1].bias.fill_(-5.0)
    _, batch = hex_batch()
    out = model(torch.randn(batch.node_index.numel(), 8), batch.edge_index, batch.batch, batch.ptr)
    assert (out == -5.0).all()  # below the reference's ELU floor of -1


def test_layer_layout():
    model = _head(16, 4, operator="GCNConv", hidden=(8, 6), pre=(12,), aggregation="concat", pos_dim=8)
    assert model.feature_dim == 24
    assert [type(m) for m in model.pre] == [nn.Linear, nn.ELU] and model.pre[0].in_features == 24
    assert [(c.in_channels, c.out_channels) for c in model.convs] == [(12, 8), (8, 6)]
    assert model.post[0].in_features == 6
    plain = _head(8, 4, hidden=(), pooling="center")
    assert len(plain.pre) == 0 and len(plain.convs) == 0 and plain.post[0].in_features == 8


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("operator", ["GraphConv", "GATConv", "TransformerConv"])
def test_gradients_reach_every_parameter(operator, pooling):
    torch.manual_seed(0)
    coords, batch = hex_batch(n_hops=2)
    emb = torch.randn(len(coords), 8, requires_grad=True)
    model = _head(8, 4, operator=operator, hidden=(6,), pre=(8,), post=(5,), pooling=pooling)
    out = model(model.features(emb[batch.node_index], batch.offsets), batch.edge_index, batch.batch, batch.ptr)
    out.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        # SAGPooling's 1x1 selection weight only enters as score * w / |w|: its gradient is zero by design.
        assert name == "pool.select.weight" or param.grad.abs().sum() > 0, name
    assert emb.grad[batch.centres].abs().sum() > 0


def test_invalid_configuration():
    with pytest.raises(ValueError, match="GCNConv, GraphConv, SAGEConv, GATConv, GATv2Conv, TransformerConv"):
        SpatialHead(8, 3, operator="ChebConv")
    with pytest.raises(ValueError, match="pooling"):
        SpatialHead(8, 3, pooling="max")
    with pytest.raises(ValueError, match="aggregation"):
        SpatialHead(8, 3, aggregation="mul")
    with pytest.raises(ValueError, match="must equal"):
        SpatialHead(8, 3, aggregation="sum", pos_dim=4)
    with pytest.raises(ValueError, match="multiple of 4"):
        SpatialHead(6, 3, aggregation="sum")
    with pytest.raises(ValueError, match="hidden"):
        SpatialHead(8, 3, hidden=(0,))
    with pytest.raises(ValueError, match="n_genes"):
        SpatialHead(8, 0)
