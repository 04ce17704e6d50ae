"""The cross-domain baselines' modules on a small hand-made schema and random mixed batches."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctl.data.schema import Schema
from ctl.models.base import BaseModel
from ctl.models.baselines import DASL, DDTCDR, PLE, DualEmbedding, MiNet, MlpPlusPlus, ShareBottom
from ctl.models.baselines.dasl import left_align
from ctl.models.baselines.minet import ItemLevelAttention
from ctl.models.baselines.ple import PleLevel
from ctl.models.baselines.reuse import Reuse, reuse_parameters
from hand_made import LONG_LEN, SHORT_LEN, SIM_LEN, make_schema, small_backbone

BATCH = 10
SEQUENCE_PREFIXES = ("short", "long", "sim", "seq_A", "seq_B")
WIDTHS = {"long": LONG_LEN, "sim": SIM_LEN}


def sequence(
    generator: torch.Generator, lengths: torch.Tensor, width: int, prefix: str
) -> dict[str, torch.Tensor]:
    """A right-aligned random sequence: padding (id 0, mask False) at the front."""
    mask = torch.arange(width)[None, :] >= width - lengths[:, None]
    item = torch.randint(1, 25, (lengths.shape[0], width), generator=generator) * mask
    category = torch.randint(1, 4, (lengths.shape[0], width), generator=generator) * mask
    return {f"{prefix}_item": item, f"{prefix}_category": category, f"{prefix}_mask": mask}


def make_batch(
    schema: Schema, seed: int = 0, domains: tuple[int, ...] | None = None
) -> dict[str, torch.Tensor]:
    """Source (A) and target (B) rows; rows 0 (A) and 1 (B) have no history at all, rows 2, 3 full ones."""
    generator = torch.Generator().manual_seed(seed)
    domain = torch.tensor(domains if domains is not None else [i % 2 for i in range(BATCH)])
    rows = domain.shape[0]
    batch: dict[str, torch.Tensor] = {"domain": domain}
    for feature in schema.features:
        ids = torch.randint(1, feature.vocab, (rows,), generator=generator)
        batch[feature.name] = ids * torch.tensor(
            [schema.domains[d] in feature.domains for d in domain.tolist()]
        )
    for prefix in SEQUENCE_PREFIXES:
        width = WIDTHS.get(prefix, SHORT_LEN)
        lengths = torch.randint(0, width + 1, (rows,), generator=generator)
        lengths[:2] = 0
        lengths[2:4] = width
        batch.update(sequence(generator, lengths, width, prefix))
    batch["sim_category"] = batch["category_id"][:, None] * batch["sim_mask"]
    batch["label"] = torch.randint(0, 2, (rows,), generator=generator).float()
    return batch


def make_trained_looking(model: nn.Module, seed: int) -> nn.Module:
    """Move every weight and BatchNorm statistic away from its init, keeping id 0 embedded as zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
            if ".tables." in name:
                param[0].zero_()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model


def production_models() -> tuple[BaseModel, BaseModel]:
    """(source, target) base models with distinct trained-looking weights, in eval mode."""
    source = make_trained_looking(BaseModel(make_schema(), small_backbone()), seed=11).eval()
    target = make_trained_looking(BaseModel(make_schema(), small_backbone()), seed=12).eval()
    return source, target


JOINT: dict[str, Callable[[], nn.Module]] = {
    "mlppp": lambda: MlpPlusPlus(make_schema(), small_backbone(), "A", "B"),
    "share_bottom": lambda: ShareBottom(make_schema(), small_backbone(), "A", "B"),
    "ple": lambda: PLE(make_schema(), small_backbone(), "A", "B"),
    "minet": lambda: MiNet(make_schema(), small_backbone(), "A", "B"),
    "ddtcdr": lambda: DDTCDR(make_schema(), small_backbone(), "A", "B"),
    "dasl": lambda: DASL(make_schema(), small_backbone(), "A", "B"),
}
ALL = {**JOINT, "dual_emb": lambda: DualEmbedding(make_schema(), small_backbone(), "A", "B")}

#: parameter-name prefixes of each joint model's (source head, target head)
HEADS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mlppp": (("source_model.",), ("target_model.",)),
    "share_bottom": (("source_tower.",), ("target_tower.",)),
    "ple": (("source_tower.",), ("target_tower.",)),
    "minet": (("source_head.",), ("target_head.",)),
    "ddtcdr": (("source_model.",), ("target_model.",)),
    "dasl": (("source.tower.", "source.attention."), ("target.tower.", "target.attention.")),
}


def task_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training task's loss: (weighted) mean BCE plus the auxiliary loss."""
    losses = F.binary_cross_entropy_with_logits(out["logits"], batch["label"], reduction="none")
    weight = out.get("row_weight")
    loss = losses.mean() if weight is None else (losses * weight).sum() / weight.sum()
    return loss + out["aux_loss"] if "aux_loss" in out else loss


#: MLP++'s user table serves both towers (named after the target tower)
SHARED_USER_TABLE = "target_model.backbone.embeddings.tables.user_id.weight"


def grads_under(model: nn.Module, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor | None]:
    """Gradients of the parameters under ``prefixes``, MLP++'s shared user table left out."""
    return {
        name: p.grad
        for name, p in model.named_parameters()
        if name.startswith(prefixes) and name != SHARED_USER_TABLE
    }


# --- every model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL))
def test_forward_gives_finite_logits_and_every_parameter_a_finite_gradient(name: str) -> None:
    torch.manual_seed(0)
    schema = make_schema()
    model = make_trained_looking(ALL[name](), seed=1).train()
    batch = make_batch(schema)
    out = model(batch)
    assert out["logits"].shape == (BATCH,) and out["logits"].dtype == torch.float32
    assert torch.isfinite(out["logits"]).all()
    task_loss(out, batch).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch)["logits"]).all()


@pytest.mark.parametrize("name", sorted(JOINT))
@pytest.mark.parametrize("scored", ["target", "source"])
def test_a_rows_loss_has_zero_gradient_through_the_other_domains_head(name: str, scored: str) -> None:
    torch.manual_seed(0)
    model = make_trained_looking(JOINT[name](), seed=2).train()
    batch = make_batch(make_schema(), seed=3)
    rows = batch["domain"] == (1 if scored == "target" else 0)
    logits = model(batch)["logits"]
    F.binary_cross_entropy_with_logits(logits[rows], batch["label"][rows], reduction="sum").backward()
    source_head, target_head = HEADS[name]
    own, other = (target_head, source_head) if scored == "target" else (source_head, target_head)
    other_grads = grads_under(model, other)
    assert other_grads and all(g is None or not g.any() for g in other_grads.values())
    assert any(g is not None and g.abs().sum() > 0 for g in grads_under(model, own).values())


@pytest.mark.parametrize("name", sorted(JOINT))
def test_joint_models_refuse_rows_of_a_third_domain(name: str) -> None:
    model = JOINT[name]()
    batch = make_batch(make_schema(), domains=(0, 1, 2, 1))
    with pytest.raises(
        ValueError, match="takes rows of those two domains only; the batch holds a row of domain index 2"
    ):
        model(batch)


@pytest.mark.parametrize("name", sorted(ALL))
def test_models_refuse_a_bad_domain_pair(name: str) -> None:
    model_class = type(ALL[name]())
    with pytest.raises(ValueError, match="two different domains, got 'B' twice"):
        model_class(make_schema(), small_backbone(), "B", "B")
    with pytest.raises(ValueError, match="unknown domain 'Z'"):
        model_class(make_schema(), small_backbone(), "A", "Z")


def test_domain_sequences_name_what_each_joint_model_reads() -> None:
    wanted = {
        "mlppp": (),
        "share_bottom": (),
        "ple": (),
        "ddtcdr": (),
        "minet": ("A", "B"),
        "dasl": ("A", "B"),
    }
    assert {name: JOINT[name]().domain_sequences() for name in JOINT} == wanted


@pytest.mark.parametrize("name", ["minet", "dasl"])
def test_sequence_models_ignore_padding_and_read_the_other_domains_sequence(name: str) -> None:
    torch.manual_seed(0)
    model = make_trained_looking(JOINT[name](), seed=4).eval()
    batch = make_batch(make_schema(), seed=5)
    generator = torch.Generator().manual_seed(6)
    padded = dict(batch)
    for prefix in ("seq_A", "seq_B"):
        noise = torch.randint(1, 25, (BATCH, SHORT_LEN), generator=generator)
        padded[f"{prefix}_item"] = torch.where(batch[f"{prefix}_mask"], batch[f"{prefix}_item"], noise)
    assert not torch.equal(padded["seq_A_item"], batch["seq_A_item"])
    torch.testing.assert_close(model(padded)["logits"], model(batch)["logits"])
    # a target row's cross-domain history is the source sequence (the official DASL code passes
    # the own-domain one twice): changing the real source events changes the target rows' logits
    changed = dict(batch, seq_A_item=torch.where(batch["seq_A_mask"], batch["seq_A_item"] % 24 + 1, 0))
    is_target = batch["domain"] == 1
    has_source_events = batch["seq_A_mask"].any(dim=1)
    moved = ~torch.isclose(model(changed)["logits"], model(batch)["logits"])
    assert moved[is_target & has_source_events].all()
    assert not moved[~has_source_events].any()
    with pytest.raises(ValueError, match="lacks \\['seq_B_item', 'seq_B_category', 'seq_B_mask'\\]"):
        model({k: v for k, v in batch.items() if not k.startswith("seq_B")})


# --- init_from -----------------------------------------------------------------------------------


def state_names(model: nn.Module) -> list[str]:
    return [*dict(model.named_parameters()), *dict(model.named_buffers())]


#: whether each model's (source rows, target rows) start as the (source, target) production model
STARTS_AS_PRODUCTION = {
    "mlppp": (False, True),  # the source tower reads the target's user table
    "share_bottom": (False, True),
    "minet": (False, True),
    "ddtcdr": (True, True),
    "dasl": (True, True),
    "dual_emb": (False, True),
    "ple": (False, False),
}
FRESH = {
    "mlppp": set(),
    "share_bottom": set(),
    "dual_emb": set(),
    "ddtcdr": {"mapping"},
    "minet": {"transfer.", "source_attention.", "target_attention.", "interest_attention."},
    "dasl": {"mapping", "source.encoder.", "source.attention.", "target.encoder.", "target.attention."},
    # the top level has no shared gate
    "ple": {
        "levels.0.source_gate.",
        "levels.0.target_gate.",
        "levels.0.shared_gate.",
        "levels.1.source_gate.",
        "levels.1.target_gate.",
    },
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_init_from_reports_every_tensor_once_and_starts_from_the_production_models(name: str) -> None:
    torch.manual_seed(0)
    source, target = production_models()
    model = ALL[name]()
    report = model.init_from(source.state_dict(), target.state_dict())
    listed = report["copied_from_source"] + report["copied_from_target"] + report["fresh"]
    assert sorted(listed) == sorted(state_names(model))
    assert {n for n in report["fresh"] if n.startswith(tuple(FRESH[name])) or n in FRESH[name]} == set(
        report["fresh"]
    )
    assert all(any(n == f or n.startswith(f) for n in report["fresh"]) for f in FRESH[name])
    model.eval()
    batch = make_batch(make_schema(), seed=7)
    is_target = batch["domain"] == 1
    with torch.no_grad():
        logits = model(batch)["logits"]
        starts_source, starts_target = STARTS_AS_PRODUCTION[name]
        for starts, production, rows in (
            (starts_source, source, ~is_target),
            (starts_target, target, is_target),
        ):
            close = torch.isclose(logits[rows], production(batch)[rows], atol=1e-5, rtol=1e-5)
            assert close.all() if starts else not close.all()


def test_init_from_copies_tensors_where_the_plan_says() -> None:
    source, target = production_models()
    src, tgt = source.state_dict(), target.state_dict()

    mlppp = MlpPlusPlus(make_schema(), small_backbone(), "A", "B")
    mlppp.init_from(src, tgt)
    user = "backbone.embeddings.tables.user_id.weight"
    assert (
        mlppp.source_model.backbone.embeddings.tables["user_id"]
        is mlppp.target_model.backbone.embeddings.tables["user_id"]
    )
    assert torch.equal(mlppp.state_dict()[f"source_model.{user}"], tgt[user])
    assert torch.equal(
        mlppp.state_dict()["source_model.backbone.embeddings.tables.item_id.weight"],
        src["backbone.embeddings.tables.item_id.weight"],
    )

    ple = PLE(make_schema(), small_backbone(), "A", "B")
    report = ple.init_from(src, tgt)
    state = ple.state_dict()
    assert torch.equal(state["levels.0.source_experts.1.linears.0.weight"], src["tower.mlp.linears.0.weight"])
    assert torch.equal(
        state["levels.1.target_experts.0.norms.0.running_mean"], tgt["tower.mlp.norms.1.running_mean"]
    )
    assert torch.equal(state["levels.1.shared_experts.1.linears.0.weight"], tgt["tower.mlp.linears.1.weight"])
    assert torch.equal(state["source_tower.logit.weight"], src["tower.logit.weight"])
    assert "levels.0.source_experts.1.linears.0.weight" in report["copied_from_source"]

    bottom = ShareBottom(make_schema(), small_backbone(), "A", "B", shared_layers=1)
    bottom.init_from(src, tgt)
    state = bottom.state_dict()
    assert torch.equal(state["bottom.linears.0.weight"], tgt["tower.mlp.linears.0.weight"])
    assert torch.equal(state["source_tower.mlp.linears.0.weight"], src["tower.mlp.linears.1.weight"])

    dual = DualEmbedding(make_schema(), small_backbone(), "A", "B")
    dual.init_from(src, tgt)
    first = dual.tower.mlp.linears[0].weight
    width = tgt["tower.mlp.linears.0.weight"].shape[1]
    assert first.shape[1] == width + 4 * 4
    assert torch.equal(first[:, :width], tgt["tower.mlp.linears.0.weight"]) and not first[:, width:].any()
    assert torch.equal(
        dual.source_tables["seller_id"].weight, src["backbone.embeddings.tables.seller_id.weight"]
    )


def test_reuse_leaves_missing_and_misfit_tensors_fresh() -> None:
    source, target = production_models()
    model = BaseModel(make_schema(), small_backbone())
    before = model.tower.logit.weight.detach().clone()
    target_state = {k: v for k, v in target.state_dict().items() if k != "tower.logit.bias"}
    target_state["tower.logit.weight"] = torch.zeros(1, 3)
    plan = {k: Reuse("target", k) for k in model.state_dict()}
    report = reuse_parameters(model, plan, source.state_dict(), target_state)
    assert set(report["fresh"]) == {"tower.logit.weight", "tower.logit.bias"}
    assert torch.equal(model.tower.logit.weight, before)
    with pytest.raises(ValueError, match="the plan names 'no.such.weight'"):
        reuse_parameters(model, {"no.such.weight": Reuse("source", "x")}, {}, {})


# --- dual embedding ------------------------------------------------------------------------------


def test_dual_embedding_reloads_only_its_extra_tables() -> None:
    source, target = production_models()
    model = DualEmbedding(make_schema(), small_backbone(), "A", "B")
    model.init_from(source.state_dict(), target.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    newer = make_trained_looking(BaseModel(make_schema(), small_backbone()), seed=13).state_dict()
    extra_params = [p for n, p in model.named_parameters() if n.startswith("source_tables.")]
    model.load_source_embeddings(newer)
    for name in ("user_id", "item_id", "category_id", "seller_id"):
        assert torch.equal(
            model.source_tables[name].weight, newer[f"backbone.embeddings.tables.{name}.weight"]
        )
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    ids = ("user_id", "item_id", "category_id", "seller_id")
    # the seed of a table's never-trained rows travels with the copied weights (another model here)
    assert changed == {f"source_tables.{n}.weight" for n in ids} | {f"source_tables.{n}.init_seed" for n in ids}
    for name in ids:
        assert torch.equal(model.source_tables[name].init_seed, newer[f"backbone.embeddings.tables.{name}.init_seed"])
    # copied in place: the optimiser's parameters stay the model's parameters
    assert all(
        p is q
        for p, q in zip(
            extra_params, (p for n, p in model.named_parameters() if n.startswith("source_tables."))
        )
    )
    with pytest.raises(
        ValueError, match="the source state has no 'backbone.embeddings.tables.item_id.weight'"
    ):
        model.load_source_embeddings({k: v for k, v in newer.items() if "item_id" not in k})
    bad = dict(newer, **{"backbone.embeddings.tables.user_id.weight": torch.zeros(30, 5)})
    with pytest.raises(
        ValueError,
        match=r"'backbone.embeddings.tables.user_id.weight' is \(30, 5\), the extra table is \(30, 4\)",
    ):
        model.load_source_embeddings(bad)
    assert torch.equal(
        model.source_tables["user_id"].weight, newer["backbone.embeddings.tables.user_id.weight"]
    )


# --- share bottom and PLE ------------------------------------------------------------------------


def test_share_bottom_and_ple_check_their_layer_counts() -> None:
    with pytest.raises(
        ValueError, match=r"shared_layers must lie in 0 .. 2 \(the MLP's layers \(16, 8\)\), got 3"
    ):
        ShareBottom(make_schema(), small_backbone(), "A", "B", shared_layers=3)
    with pytest.raises(ValueError, match=r"n_levels must lie in 1 .. 2"):
        PLE(make_schema(), small_backbone(), "A", "B", n_levels=3)
    no_bottom = ShareBottom(make_schema(), small_backbone(), "A", "B", shared_layers=0)
    assert no_bottom.bottom is None and no_bottom.target_tower.mlp.dims == (16, 8)
    one_level = PLE(make_schema(), small_backbone(), "A", "B", n_levels=1, n_experts=3)
    assert one_level.target_tower.mlp.dims == (8,)
    assert len(one_level.levels[0].shared_experts) == 3


def test_ple_gates_are_softmaxes_over_exactly_their_experts() -> None:
    torch.manual_seed(0)
    model = make_trained_looking(PLE(make_schema(), small_backbone(), "A", "B", n_experts=2), seed=8).train()
    gates = model.gate_weights(make_batch(make_schema()))
    assert [sorted(level) for level in gates] == [["shared", "source", "target"], ["source", "target"]]
    for level in gates:
        for group, weights in level.items():
            assert weights.shape == (BATCH, 6 if group == "shared" else 4)
            assert (weights > 0).all()
            torch.testing.assert_close(weights.sum(dim=-1), torch.ones(BATCH))


def test_ple_domain_gate_mixes_its_own_and_the_shared_experts_only() -> None:
    torch.manual_seed(0)
    level = make_trained_looking(PleLevel(in_dim=6, out_dim=5, n_experts=2, final=False), seed=9).eval()
    x_source, x_target, x_shared = torch.randn(3, 7, 6).unbind(0)
    with torch.no_grad():
        (source, target, shared), gates = level(x_source, x_target, x_shared)
        outputs = torch.stack(
            [
                e(x)[0]
                for e, x in (
                    (level.target_experts[0], x_target),
                    (level.target_experts[1], x_target),
                    (level.shared_experts[0], x_shared),
                    (level.shared_experts[1], x_shared),
                )
            ],
            dim=1,
        )
        weights = torch.softmax(level.target_gate(x_target), dim=-1)
        torch.testing.assert_close(gates["target"], weights)
        torch.testing.assert_close(target, (weights[..., None] * outputs).sum(dim=1))
        for expert in level.source_experts:
            expert.linears[0].weight.mul_(3.0)
        (source_after, target_after, shared_after), _ = level(x_source, x_target, x_shared)
    assert torch.equal(target_after, target)
    assert not torch.allclose(source_after, source) and not torch.allclose(shared_after, shared)
    assert PleLevel(6, 5, 2, final=True).shared_gate is None


# --- MiNet ---------------------------------------------------------------------------------------


def test_item_level_attention_matches_a_per_row_reference() -> None:
    torch.manual_seed(0)
    attention = ItemLevelAttention(event_dim=3, user_dim=2, hidden_dim=4)
    events, candidate, user = torch.randn(3, 4, 3), torch.randn(3, 3), torch.randn(3, 2)
    mask = torch.tensor([[False, False, True, True], [True, True, True, True], [False] * 4])
    weights = attention.weights(events, candidate, user, mask)
    for row in range(2):
        real = mask[row].nonzero().squeeze(1)
        scores = torch.stack(
            [
                attention.score(
                    torch.cat([events[row, i], candidate[row], user[row], events[row, i] * candidate[row]])
                )[0]
                for i in real.tolist()
            ]
        )
        expected = torch.zeros(4)
        expected[real] = torch.softmax(scores, dim=0)
        torch.testing.assert_close(weights[row], expected)
    assert not weights[2].any()
    interest = attention(events, candidate, user, mask)
    torch.testing.assert_close(interest[0], weights[0] @ events[0])
    assert not interest[2].any()


def test_minet_interest_weights_are_positive_and_unnormalised() -> None:
    torch.manual_seed(0)
    model = make_trained_looking(MiNet(make_schema(), small_backbone(), "A", "B", source_weight=0.5), seed=10)
    batch = make_batch(make_schema())
    weights, weighted = model.interests(batch)
    assert weights.shape == (BATCH, 3) and (weights > 0).all()
    assert not torch.allclose(weights.sum(dim=-1), torch.ones(BATCH))
    user = model.backbone.embeddings.lookup("user_id", batch["user_id"])
    torch.testing.assert_close(weighted[:, :4], weights[:, :1] * user)
    # rows 0 and 1 have no behaviours in either domain: only the user interest is non-zero
    assert not weighted[:2, 4:].any()
    out = model(batch)
    torch.testing.assert_close(out["row_weight"], torch.where(batch["domain"] == 1, 1.0, 0.5))
    assert torch.equal(MiNet(make_schema(), small_backbone(), "A", "B").transfer.weight, torch.eye(8))
    with pytest.raises(ValueError, match="source_weight must be >= 0"):
        MiNet(make_schema(), small_backbone(), "A", "B", source_weight=-1.0)


# --- DDTCDR --------------------------------------------------------------------------------------


def test_ddtcdr_cross_term_keeps_its_gradient() -> None:
    torch.manual_seed(0)
    model = make_trained_looking(DDTCDR(make_schema(), small_backbone(), "A", "B"), seed=14).train()
    batch = make_batch(make_schema())
    is_target = batch["domain"] == 1
    _, cross = model.own_and_cross_logits(batch)
    F.binary_cross_entropy_with_logits(
        cross[is_target], batch["label"][is_target], reduction="sum"
    ).backward()
    source_users = model.source_model.backbone.embeddings.tables["user_id"].weight.grad
    assert source_users[batch["user_id"][is_target]].abs().sum(dim=-1).gt(0).all()
    assert model.mapping.grad is not None and model.mapping.grad.abs().sum() > 0
    # a target row's cross logit goes through the target head, never the source one
    assert all(g is None or not g.any() for g in grads_under(model, ("source_model.tower.",)).values())


def test_ddtcdr_cross_logit_swaps_in_the_mapped_user_and_aux_follows_the_objective() -> None:
    torch.manual_seed(0)
    model = make_trained_looking(DDTCDR(make_schema(), small_backbone(), "A", "B", cross_weight=0.2), seed=15)
    model.train()
    batch = make_batch(make_schema())
    own, cross = model.own_and_cross_logits(batch)
    assert not torch.allclose(own, cross)
    out = model(batch)
    gap = torch.linalg.matrix_norm(model.mapping @ model.mapping.T - torch.eye(4))
    expected = 0.2 / 0.8 * F.binary_cross_entropy_with_logits(cross, batch["label"]) + 1e-6 * gap
    torch.testing.assert_close(out["aux_loss"], expected)
    torch.testing.assert_close(out["logits"], own)
    # with X = I and one user table for both domains, the cross input is the own input
    with torch.no_grad():
        model.mapping.copy_(torch.eye(4))
        model.source_model.backbone.embeddings.tables["user_id"].weight.copy_(
            model.target_model.backbone.embeddings.tables["user_id"].weight
        )
    own, cross = model.own_and_cross_logits(batch)
    torch.testing.assert_close(cross, own)
    assert "aux_loss" not in model.eval()(batch)


def test_ddtcdr_starts_orthogonal_and_checks_its_weights() -> None:
    model = DDTCDR(make_schema(), small_backbone(), "A", "B")
    torch.testing.assert_close(model.mapping @ model.mapping.T, torch.eye(4), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"cross_weight \(alpha\) must lie in \[0, 1\), got 1.0"):
        DDTCDR(make_schema(), small_backbone(), "A", "B", cross_weight=1.0)


# --- DASL ----------------------------------------------------------------------------------------


def test_left_align_moves_real_events_to_the_front_in_order() -> None:
    events = torch.arange(8.0).view(2, 4, 1)
    mask = torch.tensor([[False, False, True, True], [False, False, False, False]])
    aligned, aligned_mask = left_align(events, mask)
    assert aligned[0, :2, 0].tolist() == [2.0, 3.0]
    assert aligned_mask.tolist() == [[True, True, False, False], [False] * 4]


def test_dasl_alignment_loss_is_the_cosine_distance_of_the_mapped_user() -> None:
    torch.manual_seed(0)
    model = make_trained_looking(
        DASL(make_schema(), small_backbone(), "A", "B", alignment_weight=0.5), seed=16
    )
    model.train()
    batch = make_batch(make_schema())
    mapped = model.source.user(batch) @ model.mapping.T
    distance = 1 - F.cosine_similarity(mapped, model.target.user(batch), dim=-1)
    gap = torch.linalg.matrix_norm(model.mapping @ model.mapping.T - torch.eye(4))
    torch.testing.assert_close(model(batch)["aux_loss"], 0.5 * distance.mean() + 1e-6 * gap)
    with torch.no_grad():
        model.mapping.copy_(torch.eye(4))
        model.source.backbone.embeddings.tables["user_id"].weight.copy_(
            model.target.backbone.embeddings.tables["user_id"].weight
        )
    torch.testing.assert_close(model.alignment_distance(batch), torch.zeros(BATCH), atol=1e-6, rtol=0)


def test_dasl_trains_on_a_single_domain_batch_without_the_other_head() -> None:
    torch.manual_seed(0)
    model = make_trained_looking(DASL(make_schema(), small_backbone(), "A", "B"), seed=17).train()
    batch = make_batch(make_schema(), domains=(1,) * 6)
    task_loss(model(batch), batch).backward()
    assert all(g is None for g in grads_under(model, ("source.tower.", "source.attention.")).values())
    assert model.target.tower.logit.weight.grad.abs().sum() > 0
