"""The models' fast paths compute what their plain definitions compute, values and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctl.models.backbone import Backbone, BackboneConfig
from ctl.models.blocks import MLP, TargetAttention, gather_events
from ctl.models.ctnet import CTNet
from test_models import make_batch, make_schema


def projected_attention(ta: TargetAttention, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor):
    """Target attention as defined: project every event to keys and values, softmax per head."""
    batch, length, _ = keys.shape
    heads, head_dim = ta.num_heads, ta.out_dim // ta.num_heads
    q = ta.query(query).view(batch, heads, 1, head_dim)
    k, v = ta.key_value(keys).view(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
    attend = mask | ~mask.any(1, keepdim=True)
    scores = (q @ k.transpose(-1, -2)) / head_dim**0.5
    weights = torch.softmax(scores.masked_fill(~attend[:, None, None, :], float("-inf")), dim=-1)
    out = ta.output((weights @ v).reshape(batch, ta.out_dim))
    return out * mask.any(1, keepdim=True)


def test_folded_target_attention_matches_the_projected_definition_with_gradients() -> None:
    torch.manual_seed(0)
    ta = TargetAttention(query_dim=6, key_dim=10, num_heads=2, hidden_dim=8)
    query, keys = torch.randn(5, 6), torch.randn(5, 7, 10)
    mask = torch.rand(5, 7) > 0.4
    mask[0] = False  # a row without events
    grads = []
    for attention in (ta.forward, lambda q, k, m: projected_attention(ta, q, k, m)):
        ta.zero_grad()
        q, k = query.clone().requires_grad_(), keys.clone().requires_grad_()
        out = attention(q, k, mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([out, q.grad, k.grad, *(p.grad.clone() for p in ta.parameters())])
    for fast, reference in zip(*grads, strict=True):
        torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)


def gathered_long_attention(backbone: Backbone, batch: dict) -> torch.Tensor:
    """SIM and ETA as defined: retrieve k events, gather them, attend over them."""
    embeddings = backbone.embeddings
    candidate = backbone.candidate(batch)
    item, category, mask = batch["long_item"], batch["long_category"], batch["long_mask"]
    index, picked = backbone.sim(batch["category_id"], category, mask)
    events = embeddings.embed_sequence(gather_events(item, index), gather_events(category, index))
    sim = backbone.sim_attention(candidate, events, picked)
    codes = backbone.eta.pack(embeddings.tables["item_id"].weight)
    index, picked = backbone.eta(codes[batch["item_id"]], codes[item], mask)
    events = embeddings.embed_sequence(gather_events(item, index), gather_events(category, index))
    return torch.cat([sim, backbone.eta_attention(candidate, events, picked)], dim=-1)


def test_retrievals_that_keep_every_event_skip_the_gathers_and_match_them() -> None:
    torch.manual_seed(1)
    schema = make_schema()
    # the window path (a scan of the long sequence), whose SIM may keep every event
    keeps_all = BackboneConfig(embed_dim=4, mlp_dims=(8,), num_heads=2, attn_dim=8, sim_k=schema.long_len,
                               eta_k=schema.long_len, eta_bits=8, eta_seed=0, long_window=schema.long_len)
    backbone = Backbone(schema, keeps_all)
    batch = make_batch(schema, 12, seed=3)
    torch.testing.assert_close(backbone.long_attention(batch), gathered_long_attention(backbone, batch),
                               atol=1e-5, rtol=1e-4)
    assert backbone.long_attention(batch).abs().sum() > 0


def test_mlp_layer_inputs_are_the_hiddens_before_the_last_layer() -> None:
    torch.manual_seed(2)
    mlp = MLP(in_dim=6, dims=(5, 4, 3))
    x = torch.randn(9, 6)
    for mode in (True, False):
        mlp.train(mode)
        inputs = mlp.layer_inputs(x)
        _, hiddens = mlp(x)
        assert len(inputs) == 3
        for got, expected in zip(inputs, hiddens[:-1], strict=True):
            torch.testing.assert_close(got, expected)


def test_ctnet_adapters_read_the_source_layer_inputs() -> None:
    torch.manual_seed(3)
    schema = make_schema()
    config = BackboneConfig(embed_dim=4, mlp_dims=(8, 6), num_heads=2, attn_dim=8, sim_k=3, eta_k=3, eta_bits=8,
                            eta_seed=0)
    net = CTNet(schema, config, adapter_init_std=0.3).train()
    batch = make_batch(schema, 10, seed=4)
    with torch.no_grad():
        _, source_hiddens = net.source.tower.mlp(net.source.features(batch))
    adds = [adapter(z) for adapter, z in zip(net.adapters, source_hiddens[:-1], strict=True)]
    expected, _ = net.target.head(net.target.features(batch), adds)
    torch.testing.assert_close(net(batch), expected)
    assert F.mse_loss(net(batch), net.target(batch)) > 0  # the adapters do add something
