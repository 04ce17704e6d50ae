"""base, din and CTNet on small hand-made schemas and random batches."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctl.data.schema import Schema
from ctl.models.backbone import BackboneConfig
from ctl.models.base import BaseModel
from ctl.models.ctnet import CTNet
from ctl.models.din import DIN
from hand_made import LONG_LEN, SHORT_LEN, SIM_LEN, make_schema, small_backbone


def sequence(
    generator: torch.Generator, lengths: torch.Tensor, width: int, schema: Schema, prefix: str
) -> dict[str, torch.Tensor]:
    """A right-aligned random sequence: padding (id 0, mask False) at the front."""
    rows = lengths.shape[0]
    mask = torch.arange(width)[None, :] >= width - lengths[:, None]
    item = torch.randint(1, schema.feature("item_id").vocab, (rows, width), generator=generator) * mask
    category = (
        torch.randint(1, schema.feature("category_id").vocab, (rows, width), generator=generator) * mask
    )
    return {f"{prefix}_item": item, f"{prefix}_category": category, f"{prefix}_mask": mask}


def make_batch(schema: Schema, batch_size: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random rows of every domain; row 0 is a new user with no history at all, row 1 has full ones."""
    generator = torch.Generator().manual_seed(seed)
    domain = torch.randint(0, len(schema.domains), (batch_size,), generator=generator)
    batch: dict[str, torch.Tensor] = {"domain": domain}
    for feature in schema.features:
        ids = torch.randint(1, feature.vocab, (batch_size,), generator=generator)
        has_feature = torch.tensor([schema.domains[d] in feature.domains for d in domain.tolist()])
        batch[feature.name] = ids * has_feature
    short_len = torch.randint(0, SHORT_LEN + 1, (batch_size,), generator=generator)
    long_len = torch.randint(0, LONG_LEN + 1, (batch_size,), generator=generator)
    short_len[0], long_len[0] = 0, 0
    short_len[1], long_len[1] = SHORT_LEN, LONG_LEN
    batch.update(sequence(generator, short_len, SHORT_LEN, schema, "short"))
    batch.update(sequence(generator, long_len, LONG_LEN, schema, "long"))
    # SIM's search: events of the candidate's category only
    sim_len = torch.randint(0, SIM_LEN + 1, (batch_size,), generator=generator)
    sim_len[0], sim_len[1] = 0, SIM_LEN
    batch.update(sequence(generator, sim_len, SIM_LEN, schema, "sim"))
    batch["sim_category"] = batch["category_id"][:, None] * batch["sim_mask"]
    batch["label"] = torch.randint(0, 2, (batch_size,), generator=generator).float()
    return batch


def make_trained_looking(model: nn.Module, seed: int) -> nn.Module:
    """Move every weight and BatchNorm statistic away from its init, keeping id 0 embedded as zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("tables." + name.split(".")[-2] + ".weight"):
                param.normal_(0.0, 0.5, generator=generator)
                param[0].zero_()
            else:
                param.add_(torch.randn(param.shape, generator=generator) * 0.3)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model


def ctnet_from(source: BaseModel, target: BaseModel, **options: object) -> CTNet:
    net = CTNet(make_schema(), small_backbone(), **options)
    net.source.load_state_dict(source.state_dict())
    net.target.load_state_dict(target.state_dict())
    return net


def pad_with_other_ids(batch: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The same batch with random non-zero ids at every padded sequence position."""
    generator = torch.Generator().manual_seed(seed)
    changed = dict(batch)
    for prefix in ("short", "long", "sim"):
        padding = ~batch[f"{prefix}_mask"]
        for field, high in (("item", 25), ("category", 4)):
            noise = torch.randint(1, high, padding.shape, generator=generator)
            changed[f"{prefix}_{field}"] = torch.where(padding, noise, batch[f"{prefix}_{field}"])
    return changed


# --- config --------------------------------------------------------------------------------------


def test_backbone_config_coerces_lists_and_rejects_bad_sizes() -> None:
    config = small_backbone(mlp_dims=[16, 8])
    assert config.mlp_dims == (16, 8)
    with pytest.raises(ValueError, match=r"attn_dim \(7\) must be a positive multiple of num_heads \(2\)"):
        small_backbone(attn_dim=7)
    with pytest.raises(ValueError, match="sim_k must be >= 1"):
        small_backbone(sim_k=0)
    with pytest.raises(ValueError, match="mlp_dims"):
        small_backbone(mlp_dims=())


def test_backbone_rejects_an_event_width_the_heads_do_not_divide() -> None:
    with pytest.raises(ValueError, match=r"event width \(item dim \+ category dim = 6\)"):
        BaseModel(make_schema(), small_backbone(embed_dim=3, num_heads=4))


# --- base and din --------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [BaseModel, DIN])
@pytest.mark.parametrize("training", [True, False])
def test_models_give_finite_logits_and_gradients_with_empty_histories(
    model_class: type, training: bool
) -> None:
    torch.manual_seed(0)
    schema = make_schema()
    model = make_trained_looking(model_class(schema, small_backbone()), seed=1).train(training)
    batch = make_batch(schema)
    logits = model(batch)
    assert logits.shape == (8,) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    F.binary_cross_entropy_with_logits(logits, batch["label"]).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    item_grad = grads[
        "backbone.embeddings.tables.item_id.weight"
        if model_class is BaseModel
        else "embeddings.tables.item_id.weight"
    ]
    assert item_grad.abs().sum() > 0 and item_grad[0].abs().sum() == 0


@pytest.mark.parametrize("model_class", [BaseModel, DIN])
def test_padded_events_have_no_effect(model_class: type) -> None:
    torch.manual_seed(0)
    schema = make_schema()
    model = make_trained_looking(model_class(schema, small_backbone()), seed=2).eval()
    batch = make_batch(schema)
    changed = pad_with_other_ids(batch, seed=3)
    assert not torch.equal(changed["long_item"], batch["long_item"])
    torch.testing.assert_close(model(changed), model(batch))
    # the same edit on real events does change the logits
    real = dict(batch, short_item=torch.where(batch["short_mask"], changed["short_item"] % 24 + 1, 0))
    assert not torch.allclose(model(real), model(batch))


def test_base_model_halves_compose_to_forward() -> None:
    schema = make_schema()
    model = make_trained_looking(BaseModel(schema, small_backbone()), seed=4).eval()
    batch = make_batch(schema)
    features = model.features(batch)
    # 6 features x 4 + A_TA, A_SIM, A_ETA of 8 each
    assert features.shape == (8, 6 * 4 + 3 * 8) == (8, model.backbone.out_dim)
    logits, hiddens = model.head(features)
    assert [h.shape[1] for h in hiddens] == [48, 16, 8]
    torch.testing.assert_close(logits, model(batch))


def test_base_model_uses_given_long_attention() -> None:
    schema = make_schema()
    model = BaseModel(schema, small_backbone())
    batch = make_batch(schema)
    given = torch.randn(8, 16)
    features = model.features(batch, long_attention=given)
    assert torch.equal(features[:, -16:], given)
    torch.testing.assert_close(model.features(batch)[:, -16:], model.long_attention(batch))
    with pytest.raises(ValueError, match=r"long_attention must be \[8, 16\]"):
        model.features(batch, long_attention=torch.randn(8, 8))


@pytest.mark.parametrize("model_class", [BaseModel, DIN])
def test_models_name_missing_batch_keys(model_class: type) -> None:
    schema = make_schema()
    batch = make_batch(schema)
    del batch["short_mask"]
    with pytest.raises(ValueError, match="short_mask"):
        model_class(schema, small_backbone())(batch)


def test_base_model_builds_with_the_paper_sizes() -> None:
    paper = BackboneConfig(
        embed_dim=16,
        mlp_dims=(1024, 512, 256),
        num_heads=8,
        attn_dim=256,
        sim_k=64,
        eta_k=64,
        eta_bits=32,
        eta_seed=0,
    )
    model = BaseModel(dataclasses.replace(make_schema(), sim_len=64), paper).eval()
    logits = model(make_batch(make_schema(), batch_size=4))
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    assert model.backbone.out_dim == 6 * 16 + 3 * 256


# --- CTNet ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("adapter", "rank"), [("glu", None), ("linear", None), ("glu", 8), ("linear", 8)])
def test_ctnet_starts_as_the_target_model(adapter: str, rank: int | None) -> None:
    torch.manual_seed(0)
    schema = make_schema()
    source = make_trained_looking(BaseModel(schema, small_backbone()), seed=10)
    target = make_trained_looking(BaseModel(schema, small_backbone()), seed=11)
    net = ctnet_from(source, target, adapter=adapter, adapter_init_std=1e-6, adapter_rank=rank)
    batch = make_batch(schema, batch_size=16)

    net.eval()
    target.eval()
    expected = target(batch)
    assert expected.std() > 0.1  # the towers differ, so a leak of the source would show
    assert (net(batch) - expected).abs().max() < 1e-3
    assert (source.eval()(batch) - expected).abs().max() > 0.1

    net.train()
    target.train()
    assert (net(batch) - target(batch)).abs().max() < 1e-3


def test_adapter_lr_gives_the_adapters_their_own_optimiser_group() -> None:
    from ctl.training.task import CTRTask

    net = CTNet(make_schema(), small_backbone(), adapter_lr=1e-4)
    adapters = {id(p) for p in net.adapters.parameters()}
    target = {id(p) for p in net.target.parameters()}
    task = CTRTask(net, functools.partial(torch.optim.Adagrad, lr=0.01), lambda epoch: epoch, 9)
    optimizer = task.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 1e-4]
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == target
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == adapters
    # without it, one group, in the order the paper's CTNet always had: target tower, then adapters
    plain = CTRTask(CTNet(make_schema(), small_backbone()), functools.partial(torch.optim.Adagrad, lr=0.01), lambda epoch: epoch, 9)
    (group,) = plain.configure_optimizers().param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in plain.model.parameters() if p.requires_grad]
    with pytest.raises(ValueError, match="adapter_lr must be > 0"):
        CTNet(make_schema(), small_backbone(), adapter_lr=0.0)


def test_ctnet_with_large_adapters_departs_from_the_target_model() -> None:
    torch.manual_seed(0)
    schema = make_schema()
    source = make_trained_looking(BaseModel(schema, small_backbone()), seed=10)
    target = make_trained_looking(BaseModel(schema, small_backbone()), seed=11).eval()
    net = ctnet_from(source, target, adapter_init_std=0.3).eval()
    batch = make_batch(schema, batch_size=16)
    assert (net(batch) - target(batch)).abs().max() > 1e-2


def test_ctnet_source_tower_is_frozen_and_stays_in_eval_mode() -> None:
    torch.manual_seed(0)
    schema = make_schema()
    source = make_trained_looking(BaseModel(schema, small_backbone()), seed=12)
    target = make_trained_looking(BaseModel(schema, small_backbone()), seed=13)
    net = ctnet_from(source, target)
    assert not any(p.requires_grad for p in net.source.parameters())
    trainable = {id(p) for p in net.trainable_parameters()}
    expected = {id(p) for p in [*net.target.parameters(), *net.adapters.parameters()]}
    assert trainable == expected

    net.eval()
    net.train()
    assert net.training and net.target.training and net.adapters.training
    assert not any(m.training for m in net.source.modules())
    source_stats = {k: v.clone() for k, v in net.source.state_dict().items()}

    batch = make_batch(schema)
    F.binary_cross_entropy_with_logits(net(batch), batch["label"]).backward()
    assert all(p.grad is None for p in net.source.parameters())
    for name, param in net.named_parameters():
        if not name.startswith("source."):
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert all(p.grad.abs().sum() > 0 for p in net.adapters.parameters())
    for key, value in net.source.state_dict().items():
        assert torch.equal(value, source_stats[key]), key  # BatchNorm statistics unchanged by training


def test_freeze_source_refreezes_after_a_reload() -> None:
    net = CTNet(make_schema(), small_backbone())
    net.source.requires_grad_(True)
    net.source.train()
    net.freeze_source()
    assert not any(p.requires_grad for p in net.source.parameters())
    assert not net.source.training


def test_ctnet_shared_attention_reads_the_source_towers_sim_and_eta() -> None:
    torch.manual_seed(0)
    schema = make_schema()
    source = make_trained_looking(BaseModel(schema, small_backbone()), seed=14)
    target = make_trained_looking(BaseModel(schema, small_backbone()), seed=15)
    batch = make_batch(schema)
    shared = ctnet_from(source, target, share_attention=True).eval()
    own = ctnet_from(source, target).eval()
    frozen = [
        *shared.target.backbone.sim_attention.parameters(),
        *shared.target.backbone.eta_attention.parameters(),
    ]
    assert not any(p.requires_grad for p in frozen)
    assert not {id(p) for p in frozen} & {id(p) for p in shared.trainable_parameters()}

    before_shared, before_own = shared(batch), own(batch)
    for net in (shared, own):
        with torch.no_grad():
            for param in net.target.backbone.sim_attention.parameters():
                param.add_(1.0)
    torch.testing.assert_close(shared(batch), before_shared)
    assert not torch.allclose(own(batch), before_own)
    expected = target.eval().head(target.features(batch, source.eval().long_attention(batch)))[0]
    assert (before_shared - expected).abs().max() < 1e-3


def test_ctnet_rejects_an_unknown_adapter() -> None:
    with pytest.raises(ValueError, match="unknown adapter 'mlp'"):
        CTNet(make_schema(), small_backbone(), adapter="mlp")


def test_searched_sim_equals_the_scan_when_the_long_sequence_holds_the_whole_history() -> None:
    """The lifelong path (SIM from the batch's category search) and the window path (a scan of the
    long sequence) are one model when the long sequence is the user's whole history."""
    from ctl.models.blocks import SimHardRetrieval, gather_events

    schema = make_schema()
    lifelong = make_trained_looking(BaseModel(schema, small_backbone()), seed=6).eval()
    window = BaseModel(schema, small_backbone(long_window=LONG_LEN)).eval()
    window.load_state_dict(lifelong.state_dict())
    batch = make_batch(schema)
    index, picked = SimHardRetrieval(SIM_LEN)(batch["category_id"], batch["long_category"], batch["long_mask"])
    # the search's layout: right-aligned, the most recent match last
    searched = {
        "sim_item": (gather_events(batch["long_item"], index) * picked).flip(1),
        "sim_category": (gather_events(batch["long_category"], index) * picked).flip(1),
        "sim_mask": picked.flip(1),
    }
    torch.testing.assert_close(lifelong(dict(batch, **searched)), window(batch))
    # the window path reads no sim_* key; the lifelong path does
    assert not torch.allclose(lifelong(batch), window(batch))
    window_only = {k: v for k, v in batch.items() if not k.startswith("sim_")}
    torch.testing.assert_close(window(window_only), window(batch))


def test_a_long_window_keeps_only_the_last_events() -> None:
    schema = make_schema()
    model = make_trained_looking(BaseModel(schema, small_backbone(long_window=4)), seed=7).eval()
    batch = make_batch(schema)
    older = dict(batch)
    for key in ("long_item", "long_category"):
        older[key] = batch[key].clone()
        older[key][:, :-4] = torch.where(batch["long_mask"][:, :-4], older[key][:, :-4] % 3 + 1, 0)
    torch.testing.assert_close(model(older), model(batch))
    with pytest.raises(ValueError, match="long_window must be >= 1"):
        small_backbone(long_window=0)
    with pytest.raises(ValueError, match=r"sim_k \(9\) exceeds .* sim_len, 4"):
        BaseModel(schema, small_backbone(sim_k=9))
