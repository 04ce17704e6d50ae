"""Blocks against hand-computed cases and naive references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctl.data.schema import Feature, Schema
from ctl.models.blocks import (
    EMBEDDING_INIT_STD,
    MLP,
    DinAttention,
    EtaRetrieval,
    FeatureEmbeddings,
    GluAdapter,
    LinearAdapter,
    MlpHead,
    SequenceEncoder,
    SimHardRetrieval,
    TargetAttention,
    build_adapter,
    gather_events,
)
from ctl.models.blocks.mlp import LEAKY_SLOPE


def small_schema() -> Schema:
    features = (
        Feature("user_id", "categorical", 50, 6, ("A", "B")),
        Feature("item_id", "categorical", 40, 4, ("A", "B")),
        Feature("category_id", "categorical", 6, 2, ("A", "B")),
        Feature("seller_id", "categorical", 9, 3, ("A", "B")),
        Feature("a_only", "categorical", 5, 2, ("A",)),
    )
    return Schema(features=features, domains=("A", "B"), source="A", n_history=2, n_transfer=1)


def right_aligned_mask(lengths: list[int], width: int) -> torch.Tensor:
    """bool [B, width]: the last lengths[b] positions of row b are real events."""
    position = torch.arange(width)
    return position[None, :] >= width - torch.tensor(lengths)[:, None]


# --- embeddings ----------------------------------------------------------------------------------


def test_embeddings_concatenate_every_feature_in_schema_order() -> None:
    schema = small_schema()
    emb = FeatureEmbeddings(schema, embed_dim=None)
    batch = {f.name: torch.randint(1, f.vocab, (5,)) for f in schema.features}
    out = emb(batch)
    assert emb.out_dim == 6 + 4 + 2 + 3 + 2
    assert out.shape == (5, emb.out_dim)
    expected = torch.cat([emb.tables[f.name].weight[batch[f.name]] for f in schema.features], dim=-1)
    torch.testing.assert_close(out, expected)


def test_embeddings_use_one_dim_when_given_and_zero_for_absent_ids() -> None:
    emb = FeatureEmbeddings(small_schema(), embed_dim=8)
    assert {emb.dim(name) for name in emb.feature_names} == {8}
    assert emb.seq_dim == 16
    for name in emb.feature_names:
        assert torch.count_nonzero(emb.tables[name].weight[0]) == 0
    assert emb.lookup("a_only", torch.zeros(3, dtype=torch.long)).abs().sum() == 0


def test_embedding_init_is_small_normal() -> None:
    features = (
        Feature("user_id", "categorical", 20_000, 8, ("A",)),
        Feature("item_id", "categorical", 10, 8, ("A",)),
        Feature("category_id", "categorical", 10, 8, ("A",)),
        Feature("seller_id", "categorical", 10, 8, ("A",)),
    )
    schema = Schema(features=features, domains=("A",), source="A", n_history=1, n_transfer=1)
    weight = FeatureEmbeddings(schema, embed_dim=None).tables["user_id"].weight[1:]
    assert abs(weight.std().item() - EMBEDDING_INIT_STD) < 0.05 * EMBEDDING_INIT_STD
    assert abs(weight.mean().item()) < 0.001


def test_sequence_embedding_shares_the_item_and_category_tables() -> None:
    emb = FeatureEmbeddings(small_schema(), embed_dim=None)
    item = torch.randint(0, 40, (3, 7))
    category = torch.randint(0, 6, (3, 7))
    events = emb.embed_sequence(item, category)
    assert events.shape == (3, 7, emb.seq_dim) and emb.seq_dim == 4 + 2
    torch.testing.assert_close(events[..., :4], emb.tables["item_id"].weight[item])
    torch.testing.assert_close(events[..., 4:], emb.tables["category_id"].weight[category])
    with pytest.raises(ValueError, match="differ in shape"):
        emb.embed_sequence(item, category[:, :3])


def test_embeddings_refuse_a_schema_that_is_not_a_schema() -> None:
    with pytest.raises(TypeError, match="schema must be a ctl Schema, got dict"):
        FeatureEmbeddings(small_schema().to_dict(), embed_dim=4)


def test_embeddings_name_missing_features() -> None:
    schema = small_schema()
    batch = {f.name: torch.ones(2, dtype=torch.long) for f in schema.features if f.name != "seller_id"}
    with pytest.raises(ValueError, match="seller_id"):
        FeatureEmbeddings(schema, embed_dim=4)(batch)


# --- target attention ----------------------------------------------------------------------------


def test_target_attention_one_head_matches_a_manual_softmax() -> None:
    torch.manual_seed(0)
    ta = TargetAttention(query_dim=3, key_dim=5, num_heads=1, hidden_dim=4)
    query = torch.randn(1, 3)
    keys = torch.randn(1, 2, 5)
    out = ta(query, keys, torch.ones(1, 2, dtype=torch.bool))

    with torch.no_grad():
        q = ta.query.weight @ query[0] + ta.query.bias
        kv = keys[0] @ ta.key_value.weight.T + ta.key_value.bias
        k, v = kv[:, :4], kv[:, 4:]
        scores = [float(q @ k[0]) / 2.0, float(q @ k[1]) / 2.0]  # / sqrt(hidden_dim / heads)
        w0 = math.exp(scores[0]) / (math.exp(scores[0]) + math.exp(scores[1]))
        mixed = w0 * v[0] + (1 - w0) * v[1]
        expected = ta.output.weight @ mixed + ta.output.bias
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)


def test_target_attention_heads_match_a_per_head_reference() -> None:
    torch.manual_seed(1)
    ta = TargetAttention(query_dim=6, key_dim=6, num_heads=3, hidden_dim=12)
    query, keys = torch.randn(4, 6), torch.randn(4, 5, 6)
    mask = right_aligned_mask([5, 3, 1, 2], 5)
    out = ta(query, keys, mask)
    assert out.shape == (4, 12)
    q = ta.query(query)
    k, v = ta.key_value(keys).split(12, dim=-1)
    for row in range(4):
        heads = []
        for h in range(3):
            cols = slice(4 * h, 4 * h + 4)
            scores = (k[row, :, cols] @ q[row, cols]) / 2.0
            scores = scores.masked_fill(~mask[row], float("-inf"))
            heads.append(torch.softmax(scores, dim=0) @ v[row, :, cols])
        torch.testing.assert_close(out[row], ta.output(torch.cat(heads)), atol=1e-5, rtol=1e-5)


def test_target_attention_ignores_padding_and_zeroes_rows_without_events() -> None:
    torch.manual_seed(2)
    ta = TargetAttention(query_dim=4, key_dim=4, num_heads=2, hidden_dim=8)
    query = torch.randn(3, 4)
    keys = torch.randn(3, 6, 4, requires_grad=True)
    mask = right_aligned_mask([2, 6, 0], 6)
    out = ta(query, keys, mask)
    changed = keys.detach().clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 4) * 100
    torch.testing.assert_close(ta(query, changed, mask), out)
    assert torch.equal(out[2], torch.zeros(8))
    out.sum().backward()
    assert torch.isfinite(keys.grad).all() and torch.isfinite(ta.query.weight.grad).all()
    assert keys.grad[~mask].abs().sum() == 0


def test_target_attention_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="multiple of num_heads"):
        TargetAttention(query_dim=4, key_dim=4, num_heads=3, hidden_dim=8)
    ta = TargetAttention(query_dim=4, key_dim=4, num_heads=2, hidden_dim=8)
    with pytest.raises(ValueError, match="keys must be"):
        ta(torch.randn(2, 4), torch.randn(2, 3, 5), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool"):
        ta(torch.randn(2, 4), torch.randn(2, 3, 4), torch.ones(2, 3))


# --- sequence encoder ----------------------------------------------------------------------------


def test_sequence_encoder_matches_torch_transformer_layer_on_real_events() -> None:
    torch.manual_seed(3)
    enc = SequenceEncoder(dim=8, num_heads=2, ff_dim=16, max_len=6).eval()
    reference = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(enc.qkv.weight)
        reference.self_attn.in_proj_bias.copy_(enc.qkv.bias)
        reference.self_attn.out_proj.weight.copy_(enc.attn_out.weight)
        reference.self_attn.out_proj.bias.copy_(enc.attn_out.bias)
        reference.linear1.load_state_dict(enc.ff_in.state_dict())
        reference.linear2.load_state_dict(enc.ff_out.state_dict())
        reference.norm1.load_state_dict(enc.attn_norm.state_dict())
        reference.norm2.load_state_dict(enc.ff_norm.state_dict())
    events = torch.randn(3, 4, 8)
    mask = right_aligned_mask([4, 2, 1], 4)
    out = enc(events, mask)
    # shorter sequences take the last (most recent) position embeddings
    expected = reference(events + enc.position[2:], src_key_padding_mask=~mask)
    torch.testing.assert_close(out[mask], expected[mask], atol=1e-5, rtol=1e-5)
    assert out[~mask].abs().sum() == 0


def test_sequence_encoder_is_finite_on_padding_only_and_blind_to_padding() -> None:
    torch.manual_seed(4)
    enc = SequenceEncoder(dim=4, num_heads=2, ff_dim=8, max_len=5)
    events = torch.randn(2, 5, 4, requires_grad=True)
    mask = right_aligned_mask([0, 3], 5)
    out = enc(events, mask)
    assert torch.isfinite(out).all() and out[0].abs().sum() == 0
    changed = events.detach().clone()
    changed[~mask] = 50.0
    torch.testing.assert_close(enc(changed, mask), out)
    out.sum().backward()
    assert torch.isfinite(events.grad).all()
    with pytest.raises(ValueError, match="exceeds max_len"):
        enc(torch.randn(1, 6, 4), torch.ones(1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        SequenceEncoder(dim=6, num_heads=4, ff_dim=8, max_len=5)


# --- SIM -----------------------------------------------------------------------------------------


def test_sim_keeps_the_most_recent_k_events_of_the_candidate_category() -> None:
    #                       position: 0  1  2  3  4  5  6  7
    category = torch.tensor([[3, 3, 1, 3, 3, 2, 3, 1], [0, 0, 0, 0, 0, 0, 0, 0], [2, 2, 2, 2, 2, 2, 2, 5]])
    mask = torch.tensor(
        [
            [False, True, True, True, True, True, True, True],  # position 0 is padding
            [False] * 8,
            [True] * 8,
        ]
    )
    candidate = torch.tensor([3, 3, 5])
    index, picked = SimHardRetrieval(k=3)(candidate, category, mask)
    assert index[0].tolist() == [6, 4, 3] and picked[0].all()
    assert not picked[1].any()
    assert index[2, 0].item() == 7 and picked[2].tolist() == [True, False, False]

    index, picked = SimHardRetrieval(k=6)(candidate, category, mask)
    assert index[0, :4].tolist() == [6, 4, 3, 1]  # the padded category-3 event at 0 is not kept
    assert picked[0].tolist() == [True] * 4 + [False] * 2


def test_sim_returns_at_most_the_sequence_length() -> None:
    category = torch.tensor([[1, 1, 1]])
    index, picked = SimHardRetrieval(k=8)(torch.tensor([1]), category, torch.ones(1, 3, dtype=torch.bool))
    assert index.tolist() == [[2, 1, 0]] and picked.all()
    with pytest.raises(ValueError, match="SimHardRetrieval"):
        SimHardRetrieval(k=2)(torch.tensor([1, 2]), category, torch.ones(1, 3, dtype=torch.bool))


def test_gather_events_picks_per_row() -> None:
    values = torch.arange(12).view(2, 6)
    index = torch.tensor([[5, 0], [1, 1]])
    assert gather_events(values, index).tolist() == [[5, 0], [7, 7]]
    assert gather_events(values[..., None].expand(2, 6, 3), index)[1, 0].tolist() == [7, 7, 7]


# --- ETA -----------------------------------------------------------------------------------------


def brute_force_eta(
    eta: EtaRetrieval, candidate: torch.Tensor, events: torch.Tensor, mask: torch.Tensor
) -> list[list[int]]:
    """Per row, the kept positions: nearest Hamming distance first, more recent first on ties."""
    planes = eta.hyperplanes
    kept = []
    for row in range(candidate.shape[0]):
        query_bits = [float(candidate[row] @ planes[:, b]) > 0 for b in range(eta.n_bits)]
        ranked = []
        for pos in range(events.shape[1]):
            if not mask[row, pos]:
                continue
            bits = [float(events[row, pos] @ planes[:, b]) > 0 for b in range(eta.n_bits)]
            distance = sum(a != b for a, b in zip(query_bits, bits))
            ranked.append((distance, -pos))
        ranked.sort()
        kept.append([-neg_pos for _, neg_pos in ranked[: eta.k]])
    return kept


@pytest.mark.parametrize("n_bits", [6, 16, 40])
def test_eta_topk_equals_a_brute_force_hamming_ranking(n_bits: int) -> None:
    torch.manual_seed(5)
    eta = EtaRetrieval(k=5, n_bits=n_bits, dim=4, seed=11)
    # few distinct vectors, so many events tie in distance and recency must break the ties
    palette = torch.randn(4, 4)
    events = palette[torch.randint(0, 4, (6, 12))]
    candidate = torch.randn(6, 4)
    mask = right_aligned_mask([12, 7, 3, 0, 5, 9], 12)
    index, picked = eta(eta.pack(candidate), eta.pack(events), mask)
    assert index.shape == picked.shape == (6, 5)
    expected = brute_force_eta(eta, candidate, events, mask)
    for row in range(6):
        assert index[row][picked[row]].tolist() == expected[row]


def test_eta_packs_32_bits_a_word_and_counts_differing_bits() -> None:
    eta = EtaRetrieval(k=2, n_bits=40, dim=2, seed=0)
    # bit b is bit b % 32 of word b // 32: of half word b // 16, weight 2 ** (b % 16)
    assert eta.n_words == 2 and eta.bit_weights[35, 2].item() == 8 and eta.bit_weights[35].sum().item() == 8
    # the hyperplanes' signs: an embedding on hyperplane b's side sets bit b, bit 31 included
    plane = eta.hyperplanes[:, 31]
    assert eta.pack(plane)[0].item() < 0 and eta.pack(-plane)[0].item() >= 0
    query = torch.tensor([[0b1011, 0b1]], dtype=torch.int32)
    events = torch.tensor([[[0b1011, 0b1], [0, 0], [-1, 0b1111]]], dtype=torch.int32)
    # -1 has all 32 bits set: 32 - 3 differ in the first word, 3 in the second
    assert eta.hamming(query, events).tolist() == [[0, 4, 29 + 3]]


def test_eta_item_codes_follow_the_table_and_hashing_has_no_gradient() -> None:
    a, b, c = (EtaRetrieval(k=2, n_bits=8, dim=4, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.hyperplanes, b.hyperplanes) and not torch.equal(a.hyperplanes, c.hyperplanes)
    assert list(a.state_dict()) == ["hyperplanes"] and not list(a.parameters())
    table = nn.Parameter(torch.randn(5, 4))
    a.eval()
    codes = a.item_codes(table)
    assert torch.equal(codes, a.pack(table)) and a.item_codes(table) is codes  # cached while unchanged
    with torch.no_grad():
        table.mul_(-1.0)  # a checkpoint loaded in place: every bit flips
    assert torch.equal(a.item_codes(table), 255 - codes)  # 8 bits: every one flipped
    # a fused optimiser's step moves the weight without bumping its version: training hashes every
    # call, and a switch of mode drops the cache
    optimiser = torch.optim.Adagrad([table], lr=1.0, fused=True)
    a.train()
    for _ in range(3):
        assert torch.equal(a.item_codes(table), a.pack(table))
        table.grad = torch.randn(5, 4)
        optimiser.step()
    a.eval()
    assert torch.equal(a.item_codes(table), a.pack(table))
    events = a.pack(torch.randn(2, 3, 4, requires_grad=True))
    index, picked = a(a.pack(torch.randn(2, 4, requires_grad=True)), events, torch.ones(2, 3, dtype=torch.bool))
    assert not index.requires_grad and not picked.requires_grad
    with pytest.raises(ValueError, match="EtaRetrieval"):
        a(torch.zeros(2, 2, dtype=torch.int32), events, torch.ones(2, 3, dtype=torch.bool))


# --- MLP -----------------------------------------------------------------------------------------


def manual_layer(
    x: torch.Tensor, linear: nn.Linear, norm: nn.BatchNorm1d, add: torch.Tensor, training: bool
) -> torch.Tensor:
    h = x @ linear.weight.T
    if training:
        mean, var = h.mean(0), h.var(0, unbiased=False)
    else:
        mean, var = norm.running_mean, norm.running_var
    h = (h - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    return F.leaky_relu(h + add, LEAKY_SLOPE)


@pytest.mark.parametrize("training", [True, False])
def test_mlp_adds_before_the_activation_and_returns_every_layer_input(training: bool) -> None:
    torch.manual_seed(6)
    mlp = MLP(in_dim=5, dims=(4, 3))
    with torch.no_grad():
        for norm in mlp.norms:
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(0.5, 2)
            norm.bias.uniform_(-1, 1)
    mlp.train(training)
    x = torch.randn(6, 5)
    adds = [torch.randn(6, 4), torch.randn(6, 3)]
    out, hiddens = mlp(x, adds)
    assert [tuple(h.shape) for h in hiddens] == [(6, 5), (6, 4), (6, 3)]
    assert hiddens[0] is x and out is hiddens[-1]
    z1 = manual_layer(x, mlp.linears[0], mlp.norms[0], adds[0], training)
    z2 = manual_layer(z1, mlp.linears[1], mlp.norms[1], adds[1], training)
    torch.testing.assert_close(hiddens[1], z1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, z2, atol=1e-5, rtol=1e-5)


def test_mlp_checks_its_inputs() -> None:
    mlp = MLP(in_dim=5, dims=(4, 3))
    assert mlp.in_dims == (5, 4) and mlp.out_dim == 3
    with pytest.raises(ValueError, match="1 pre-activation adds for 2 layers"):
        mlp(torch.randn(2, 5), [torch.randn(2, 4)])
    with pytest.raises(ValueError, match="add 1 is"):
        mlp(torch.randn(2, 5), [torch.randn(2, 4), torch.randn(2, 4)])
    with pytest.raises(ValueError, match=r"input must be \[B, 5\]"):
        mlp(torch.randn(2, 4))
    with pytest.raises(ValueError, match="at least one layer"):
        MLP(in_dim=5, dims=())


def test_mlp_head_gives_float32_logits_per_row() -> None:
    head = MlpHead(in_dim=5, dims=(4,))
    logits, hiddens = head(torch.randn(3, 5))
    assert logits.shape == (3,) and logits.dtype == torch.float32 and len(hiddens) == 2
    torch.testing.assert_close(logits, head.logit(hiddens[-1]).squeeze(-1))


# --- adapters ------------------------------------------------------------------------------------


def test_glu_adapter_gates_one_projection_with_another() -> None:
    torch.manual_seed(7)
    adapter = GluAdapter(in_dim=5, out_dim=3, init_std=0.5)
    z = torch.randn(4, 5)
    u1, u2 = adapter.proj.weight[:3], adapter.proj.weight[3:]
    torch.testing.assert_close(adapter(z), (z @ u1.T) * torch.sigmoid(z @ u2.T))
    assert adapter.proj.bias is None


def test_adapter_init_std_is_honoured() -> None:
    torch.manual_seed(8)
    for kind in ("glu", "linear"):
        adapter = build_adapter(kind, 200, 100, init_std=0.02)
        assert abs(adapter.proj.weight.std().item() - 0.02) < 0.001
    linear = LinearAdapter(in_dim=5, out_dim=3, init_std=1e-6)
    z = torch.randn(4, 5)
    torch.testing.assert_close(linear(z), z @ linear.proj.weight.T)
    assert linear(z).abs().max() < 1e-4
    with pytest.raises(ValueError, match="unknown adapter 'gru'"):
        build_adapter("gru", 5, 3, 1e-6)
    with pytest.raises(ValueError, match="init_std must be >= 0"):
        GluAdapter(5, 3, -1.0)


def test_low_rank_adapters_factor_their_matrix_through_the_rank() -> None:
    torch.manual_seed(9)
    z = torch.randn(6, 40)
    glu = GluAdapter(in_dim=40, out_dim=30, init_std=0.5, rank=4)
    down, up = glu.proj[0].weight, glu.proj[1].weight
    assert down.shape == (4, 40) and up.shape == (60, 4)
    u = up @ down  # [U1; U2], rank 4
    assert torch.linalg.matrix_rank(u).item() == 4
    torch.testing.assert_close(glu(z), (z @ u[:30].T) * torch.sigmoid(z @ u[30:].T))
    linear = LinearAdapter(in_dim=40, out_dim=30, init_std=0.5, rank=4)
    torch.testing.assert_close(linear(z), z @ (linear.proj[1].weight @ linear.proj[0].weight).T)
    # 40*4 + 4*60 multiply-adds per row instead of 40*60
    assert sum(p.numel() for p in glu.parameters()) == 40 * 4 + 4 * 60
    # starts near zero like the full adapter; A keeps the scale of z, so B's gradients are not tiny
    small = build_adapter("glu", 40, 30, init_std=1e-6, rank=4)
    assert small(z).abs().max() < 1e-4
    assert abs(small.proj[0].weight.std().item() - 40**-0.5) < 0.05
    # a rank that restricts nothing is the full adapter
    assert isinstance(build_adapter("linear", 40, 30, 1e-6, rank=30).proj, torch.nn.Linear)
    with pytest.raises(ValueError, match="rank must be >= 1 or null"):
        build_adapter("glu", 40, 30, 1e-6, rank=0)


# --- DIN activation unit -------------------------------------------------------------------------


def test_din_weights_are_the_unit_output_not_softmaxed_and_zero_on_padding() -> None:
    torch.manual_seed(9)
    din = DinAttention(dim=3, hidden_dim=5)
    query, keys = torch.randn(2, 3), torch.randn(2, 4, 3)
    mask = right_aligned_mask([4, 2], 4)
    weights = din.weights(query, keys, mask)
    target = query[:, None, :].expand(-1, 4, -1)
    raw = din.unit(torch.cat([keys, target, keys - target, keys * target], dim=-1)).squeeze(-1)
    torch.testing.assert_close(weights[mask], raw[mask])
    assert weights[~mask].abs().sum() == 0
    assert not torch.allclose(weights[0].sum(), torch.tensor(1.0))
    torch.testing.assert_close(din(query, keys, mask), (weights[..., None] * keys).sum(1))
