"""The methods published after the paper: each one's defining computation on hand-computed tensors,
and each model starting as the production model it grows from."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ctl.data.batch import DomainView
from ctl.models.base import BaseModel
from ctl.models.blocks import GateNU, PartitionedNorm, StarLinear
from ctl.models.recent import STAR, KnowledgePlugin, LowRankTransfer, PEPNet, SourceDistillation
from ctl.models.recent.distill import distillation_loss
from ctl.models.recent.lowrank import LowRankDelta
from hand_made import make_schema, small_backbone
from test_baseline_models import make_batch, make_trained_looking, production_models, task_loss

EPS = 1e-5


def test_star_linear_multiplies_the_shared_and_the_domain_weight_elementwise() -> None:
    layer = StarLinear(2, 2, n_domains=2, bias=True)
    with torch.no_grad():
        layer.shared_weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        layer.domain_weights[0].copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        layer.domain_weights[1].copy_(torch.tensor([[0.5, 1.0], [-1.0, 2.0]]))
        layer.shared_bias.copy_(torch.tensor([0.1, 0.2]))
        layer.domain_biases[1].copy_(torch.tensor([1.0, -1.0]))
    x = torch.tensor([[1.0, 1.0], [2.0, -1.0]])
    # domain 1: W = [[0.5, 2], [-3, 8]], b = [1.1, -0.8]
    assert torch.allclose(layer(x, 1), torch.tensor([[3.6, 4.2], [0.1, -14.8]]))
    # domain 0: W = [[1, 0], [0, 4]], b = [0.1, 0.2]
    assert torch.allclose(layer(x, 0), torch.tensor([[1.1, 4.2], [2.1, -3.8]]))


def test_star_linear_starts_as_its_domain_weight() -> None:
    layer = StarLinear(3, 2, n_domains=2, bias=False)
    x = torch.randn(4, 3)
    assert torch.equal(layer(x, 1), x @ layer.domain_weights[1].T)


def test_partitioned_norm_normalises_with_its_domains_rows_and_the_product_of_scales() -> None:
    norm = PartitionedNorm(1, n_domains=2).train()
    with torch.no_grad():
        norm.gamma.fill_(2.0)
        norm.beta.fill_(0.5)
        norm.domains[1].weight.fill_(3.0)
        norm.domains[1].bias.fill_(-1.0)
    x = torch.tensor([[1.0], [3.0], [10.0], [20.0]])
    rows = torch.tensor([True, True, False, False])
    out = norm(x, 1, rows)
    # domain 1's rows: mean 2, biased var 1; scale 2 * 3, shift 0.5 - 1
    expected = 6.0 * (x - 2.0) / math.sqrt(1.0 + EPS) - 0.5
    assert torch.allclose(out, expected)
    # running statistics (momentum 0.1) move towards the domain's rows only, the variance unbiased (2)
    assert torch.allclose(norm.domains[1].running_mean, torch.tensor([0.2]))
    assert torch.allclose(norm.domains[1].running_var, torch.tensor([0.9 + 0.1 * 2.0]))
    assert torch.equal(norm.domains[0].running_mean, torch.tensor([0.0]))
    norm.eval()
    assert torch.allclose(norm(x, 1, rows), 6.0 * (x - 0.2) / math.sqrt(1.1 + EPS) - 0.5)


def test_partitioned_norm_uses_its_running_statistics_for_a_domain_with_one_row() -> None:
    norm = PartitionedNorm(1, n_domains=2).train()
    x = torch.tensor([[4.0], [10.0]])
    out = norm(x, 0, torch.tensor([True, False]))
    assert torch.allclose(out, x / math.sqrt(1.0 + EPS))
    assert torch.equal(norm.domains[0].running_mean, torch.tensor([0.0]))


def test_gate_unit_is_twice_a_sigmoid_of_a_relu_layer_and_starts_at_one() -> None:
    gate = GateNU(2, 2, 1)
    x = torch.tensor([[1.0, -2.0]])
    assert torch.equal(gate(x), torch.ones(1, 1))
    with torch.no_grad():
        gate.hidden.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, -1.0]]))
        gate.hidden.bias.copy_(torch.tensor([0.0, 1.0]))
        gate.out.weight.copy_(torch.tensor([[0.5, 0.25]]))
        gate.out.bias.fill_(-1.0)
    # hidden: ReLU([-1, 5]) = [0, 5]; out: 0.25 * 5 - 1 = 0.25
    assert torch.allclose(gate(x), torch.tensor([[2.0 / (1.0 + math.exp(-0.25))]]))


JOINT = {"star": STAR, "pepnet": PEPNet}


@pytest.mark.parametrize("name", sorted(JOINT))
def test_on_target_rows_the_model_starts_as_the_target_production_model(name: str) -> None:
    source, target = production_models()
    model = JOINT[name](make_schema(), small_backbone(), "A", "B")
    report = model.init_from(source.state_dict(), target.state_dict())
    assert report["copied_from_source"] and report["copied_from_target"]
    batch = make_batch(make_schema(), domains=(1,) * 6)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(batch)["logits"], target(batch), atol=1e-5)


@pytest.mark.parametrize("name", sorted(JOINT))
def test_a_source_rows_loss_leaves_the_target_domains_own_parameters_untouched(name: str) -> None:
    model = make_trained_looking(JOINT[name](make_schema(), small_backbone(), "A", "B"), seed=3).train()
    batch = make_batch(make_schema(), domains=(0,) * 6)
    task_loss(model(batch), batch).backward()
    own = {n: p.grad for n, p in model.named_parameters() if ".domains.1." in n or n.endswith("domain_weights.1")}
    assert own and all(g is None or not g.any() for g in own.values())
    assert model.domain_embedding.weight.grad[1].abs().sum() == 0


@pytest.mark.parametrize("name", sorted(JOINT))
def test_mixed_batches_give_finite_logits_and_gradients(name: str) -> None:
    model = make_trained_looking(JOINT[name](make_schema(), small_backbone(), "A", "B"), seed=4).train()
    batch = make_batch(make_schema())
    out = model(batch)
    task_loss(out, batch).backward()
    assert torch.isfinite(out["logits"]).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_pepnet_scales_e_and_every_layer_by_gates_that_pass_no_gradient_into_what_they_read() -> None:
    model = make_trained_looking(PEPNet(make_schema(), small_backbone(), "A", "B"), seed=5).eval()
    batch = make_batch(make_schema(), domains=(1,) * 6)
    features = model.backbone(batch).detach().requires_grad_(True)
    priors = torch.randn(6, 8)
    logits = model.domain_logits(features, priors, 1, None)
    logits.sum().backward()

    # by hand: the gates as constants computed from detached inputs
    indicator = model.domain_embedding.weight[1].expand(6, -1).detach()
    with torch.no_grad():
        gate_e = 2 * torch.sigmoid(model.embedding_gate.out(torch.relu(model.embedding_gate.hidden(
            torch.cat([indicator, features], -1)))))
        gate_input = torch.cat([priors, indicator, gate_e * features], -1)
        layer_gates = [2 * torch.sigmoid(g.out(torch.relu(g.hidden(gate_input)))) for g in model.layer_gates]
    assert not torch.allclose(gate_e, torch.ones_like(gate_e))
    x = features.detach().clone().requires_grad_(True)
    z = gate_e * x
    for linear, norm, gate in zip(model.linears, model.norms, layer_gates, strict=True):
        bn = norm.domains[1]
        h = (linear(z) - bn.running_mean) / torch.sqrt(bn.running_var + EPS) * norm.gamma * bn.weight
        z = gate * torch.nn.functional.leaky_relu(h + norm.beta + bn.bias, 0.01)
    expected = model.logit(z).squeeze(-1)
    expected.sum().backward()
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.allclose(features.grad, x.grad, atol=1e-5)


# --- over a frozen source model -------------------------------------------------------------------


def test_low_rank_delta_is_b_times_a_times_x() -> None:
    delta = LowRankDelta(2, 2, rank=1)
    assert torch.equal(delta(torch.randn(3, 2)), torch.zeros(3, 2))  # B starts at zero
    with torch.no_grad():
        delta.down.copy_(torch.tensor([[1.0, 1.0]]))
        delta.up.copy_(torch.tensor([[2.0], [-1.0]]))
    # A x = 1 + 2 = 3; B (A x) = [6, -3]
    assert torch.equal(delta(torch.tensor([[1.0, 2.0]])), torch.tensor([[6.0, -3.0]]))
    with pytest.raises(ValueError, match="rank must lie in 1 .. 2"):
        LowRankDelta(2, 3, rank=3)


def source_loaded(model: nn.Module, source: BaseModel) -> nn.Module:
    model.source.load_state_dict(source.state_dict())
    model.freeze_source()
    return model


def test_low_rank_transfer_is_the_source_model_with_merged_weights_w_plus_b_a() -> None:
    source, _ = production_models()
    schema = make_schema()
    model = source_loaded(LowRankTransfer(schema, small_backbone(), rank=2), source).eval()
    batch = make_batch(schema, domains=(1,) * 6)
    view = DomainView(schema, "A")
    with torch.no_grad():
        assert torch.allclose(model(batch), source(view(batch)), atol=1e-6)  # starts as the source model
        for delta in model.deltas:
            delta.up.normal_()
        merged = BaseModel(schema, small_backbone())
        merged.load_state_dict(source.state_dict())
        for linear, delta in zip(merged.tower.mlp.linears, model.deltas, strict=True):
            linear.weight.add_(delta.up @ delta.down)
        merged.eval()
        assert not torch.allclose(model(batch), source(view(batch)), atol=1e-3)
        assert torch.allclose(model(batch), merged(view(batch)), atol=1e-5)


def test_low_rank_transfer_trains_its_changes_only() -> None:
    source, _ = production_models()
    model = source_loaded(LowRankTransfer(make_schema(), small_backbone()), source).train()
    assert not model.source.training
    batch = make_batch(make_schema(), domains=(1,) * 6)
    task_loss({"logits": model(batch)}, batch).backward()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {f"deltas.{i}.{w}" for i in range(2) for w in ("down", "up")}
    assert model.deltas[0].up.grad.abs().sum() > 0


def test_knowledge_plugin_reads_the_source_models_last_hidden_layer_and_logit_and_starts_as_the_target() -> None:
    source, target = production_models()
    schema = make_schema()
    model = source_loaded(KnowledgePlugin(schema, small_backbone()), source).eval()
    report = model.init_from_target(target.state_dict())
    assert "tower.mlp.linears.0.weight" in report["copied_from_target"] and report["fresh"] == []
    batch = make_batch(schema, domains=(1,) * 6)
    with torch.no_grad():
        logit, hiddens = source.head(source.features(DomainView(schema, "A")(batch)))
        knowledge = model.knowledge(batch)
        assert torch.allclose(knowledge, torch.cat([hiddens[-1], logit[:, None]], -1))
        assert torch.allclose(model(batch), target(batch), atol=1e-5)
        # the plug-in's columns of the first layer: W [E, k] -> W E + U k
        first = model.tower.mlp.linears[0].weight
        first[:, -model.knowledge_dim:].normal_()
        features = model.backbone(batch)
        assert torch.allclose(model.tower.mlp.linears[0](torch.cat([features, knowledge], -1)),
                              features @ first[:, :-model.knowledge_dim].T + knowledge @ first[:, -model.knowledge_dim:].T,
                              atol=1e-5)
        assert not torch.allclose(model(batch), target(batch), atol=1e-3)


def test_distillation_loss_is_the_weighted_cross_entropy_towards_the_teachers_probability() -> None:
    student = torch.tensor([0.0, math.log(3.0)])
    teacher = torch.tensor([math.log(3.0), 0.0])
    # row 0: q = 1/2 against p = 3/4: ln 2; row 1: q = 3/4 against p = 1/2: -(ln 3/4 + ln 1/4) / 2
    expected = 0.5 * (math.log(2.0) - 0.5 * (math.log(0.75) + math.log(0.25))) / 2
    assert math.isclose(float(distillation_loss(student, teacher, 0.5)), expected, rel_tol=1e-6)


def test_distillation_trains_an_auxiliary_head_towards_the_source_and_serves_the_target_model_alone() -> None:
    source, target = production_models()
    schema = make_schema()
    model = source_loaded(SourceDistillation(schema, small_backbone(), weight=0.3), source)
    model.init_from_target(target.state_dict())
    batch = make_batch(schema, domains=(1,) * 6)
    model.train()
    target.train()
    out = model(batch)
    with torch.no_grad():
        teacher = source(DomainView(schema, "A")(batch))
        _, hiddens = target.head(target.features(batch))
        expected = distillation_loss(target.tower.logit(hiddens[-1]).squeeze(-1), teacher, 0.3)
    assert torch.allclose(out["logits"], target(batch), atol=1e-5)
    assert torch.allclose(out["aux_loss"], expected, atol=1e-6)
    out["aux_loss"].backward()
    assert model.tower.logit.weight.grad is None  # the serving head learns from the labels alone
    assert model.distill_head.weight.grad.abs().sum() > 0
    model.eval()
    # the target model as the student is now (training moved its BatchNorm statistics)
    target.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith(("backbone.", "tower."))})
    target.eval()
    with torch.no_grad():
        for p in model.source.parameters():
            p.fill_(float("nan"))
        assert torch.allclose(model(batch), target(batch), atol=1e-5)  # evaluation never runs the source
