"""The adapters' starting optimiser state, and production tracks that start later in the history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from ctl.data.dataset import load_dataset
from ctl.errors import CtlError
from ctl.methods import method_label
from ctl.models import build_model
from ctl.models.ctnet import CTNet
from ctl.training.checkpoints import read_checkpoint
from ctl.training.protocol import run_train
from ctl.training.protocols.ctnet import start_adapter_state
from hand_made import make_schema, small_backbone


def make_cfg(home: Path, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(
            config_name="train",
            overrides=["data=synthetic_tiny", f"home={home}", "progress=false", "print_table=false", *overrides],
        )


def _net() -> CTNet:
    return CTNet(make_schema(), small_backbone())


def _target_mlp_state(net: CTNet, values: list[float]) -> dict:
    return {layer.weight: {"step": torch.tensor(7.0), "sum": torch.full_like(layer.weight, value)}
            for layer, value in zip(net.target.tower.mlp.linears, values, strict=True)}


def test_matched_state_starts_every_adapter_at_the_target_mlps_mean_accumulator() -> None:
    net = _net()
    linears = net.target.tower.mlp.linears
    assert len(linears) == 2
    inherited = _target_mlp_state(net, [2.0, 5.0])
    sizes = [layer.weight.numel() for layer in linears]
    expected = (2.0 * sizes[0] + 5.0 * sizes[1]) / (sizes[0] + sizes[1])
    note = start_adapter_state(inherited, net, "matched")
    adapters = list(net.adapters.parameters())
    assert adapters and all(p in inherited for p in adapters)
    for param in adapters:
        assert inherited[param]["sum"].shape == param.shape
        torch.testing.assert_close(inherited[param]["sum"], torch.full_like(param, expected))
        assert float(inherited[param]["step"]) == 0.0
    assert f"{expected:.3g}" in note
    # the target's own state is left as it was
    assert float(inherited[linears[0].weight]["sum"][0, 0]) == 2.0


def test_fresh_state_leaves_the_adapters_to_the_optimisers_default() -> None:
    net = _net()
    inherited = _target_mlp_state(net, [2.0, 5.0])
    start_adapter_state(inherited, net, "fresh")
    assert not any(p in inherited for p in net.adapters.parameters())


def test_matched_state_refuses_an_unknown_choice_and_a_target_without_state() -> None:
    net = _net()
    with pytest.raises(CtlError, match="model.adapter_state='warm': choose one of matched, fresh"):
        start_adapter_state({}, net, "warm")
    with pytest.raises(CtlError, match="holds none for the MLP"):
        start_adapter_state({}, net, "matched")


def _first_step_change(state: str) -> torch.Tensor:
    """|change| of the first adapter's weights after one Adagrad step on a fixed batch-free loss."""
    torch.manual_seed(0)
    net = _net()
    inherited = _target_mlp_state(net, [1e-4, 1e-4])
    start_adapter_state(inherited, net, state)
    weight = net.adapters[0].proj.weight
    optimizer = torch.optim.Adagrad([weight], lr=0.01, eps=1e-10)
    if weight in inherited:
        optimizer.state[weight] = {k: v.clone() for k, v in inherited[weight].items()}
    before = weight.detach().clone()
    z = torch.randn(64, weight.shape[1])
    # a small, realistic gradient: the adapter's output times a weak error signal
    loss = (net.adapters[0](z) * 1e-3).sum()
    loss.backward()
    optimizer.step()
    return (weight.detach() - before).abs()


def test_a_fresh_state_moves_every_adapter_weight_by_the_learning_rate_whatever_its_gradient() -> None:
    # the root cause of CTNet's collapse at wide layers: Adagrad's first step is lr * sign(grad)
    fresh = _first_step_change("fresh")
    value_half = fresh[: fresh.shape[0] // 2]  # U1; U2's gradients are ~1e-7 and it moves by up to lr too
    torch.testing.assert_close(value_half, torch.full_like(value_half, 0.01), rtol=1e-3, atol=0.0)
    assert float(fresh[fresh.shape[0] // 2:].median()) > 1e-3
    # matched to a tower whose accumulators hold 1e-4, a step is about the gradient itself (lr / sqrt(1e-4)
    # = 1): the gate's ~1e-7 gradients leave it in place, the value half moves less than lr
    matched = _first_step_change("matched")
    assert float(matched[matched.shape[0] // 2:].max()) < 1e-5
    assert float(matched[: matched.shape[0] // 2].median()) < 0.5 * 0.01


def test_ctnet_with_a_matched_adapter_state_trains_and_records_it(tmp_path) -> None:
    home = tmp_path / "home"
    cfg = make_cfg(home, "model=ctnet", "model.adapter_state=matched")
    metrics = run_train(cfg, tmp_path / "run")
    assert metrics["inherited"]["adapters"].startswith("Adagrad accumulators started at ")
    level = float(metrics["inherited"]["adapters"].split(" started at ")[1].split(" ")[0])
    assert level > 0
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "period_4.ckpt")
    state = checkpoint["optimizer_states"][0]["state"]
    # the optimiser holds the target tower's parameters, then the adapters' (one matrix each)
    adapter_sums = [state[i]["sum"] for i in sorted(state)[-2:]]
    assert [tuple(s.shape) for s in adapter_sums] == [tuple(a.proj.weight.shape) for a in
                                                      build_model(cfg.model.net, load_dataset(metrics["dataset_path"]).schema).adapters]
    # each accumulator grew from the matched level, never below it
    # (the message rounds the level to 3 significant digits: up by at most half a unit of the third)
    assert all(float(s.min()) >= level * (1 - 5e-3) for s in adapter_sums)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["method"] == method_label(cfg)


def test_a_track_can_start_later_in_the_history(tmp_path) -> None:
    home = tmp_path / "home"
    cfg = make_cfg(home, "model=base", "model.first_period=2")
    assert method_label(cfg) == "base_from2"
    metrics = run_train(cfg, tmp_path / "run")
    full = run_train(make_cfg(home, "model=base"), tmp_path / "full")
    assert metrics["method"] == "base_from2" and full["method"] == "base"
    # periods 0 and 1 were never trained on
    assert [r["period"] for r in metrics["periods"]] == [2, 3, 4, 5]
    assert [r["period"] for r in full["periods"]] == [0, 1, 2, 3, 4, 5]
    skipped = sum(r["train_rows"] for r in full["periods"][:2])
    assert metrics["cost"]["train_rows"] == full["cost"]["train_rows"] - skipped
    assert metrics["test"]["auc"] != full["test"]["auc"]
    with pytest.raises(CtlError, match=r"model.first_period=4 must lie in 0..3"):
        run_train(make_cfg(home, "model=base", "model.first_period=4"), tmp_path / "bad")


def test_adapter_base_width_scales_each_adapters_rate_by_base_over_input_width() -> None:
    from functools import partial

    from ctl.training.task import CTRTask

    net = CTNet(make_schema(), small_backbone(), adapter_base_width=64)
    in_dims = net.source.tower.mlp.in_dims
    task = CTRTask(net, partial(torch.optim.Adagrad, lr=0.01), lambda epoch: epoch, 9)
    optimizer = task.configure_optimizers()
    rates = [group["lr"] for group in optimizer.param_groups]
    assert rates == pytest.approx([0.01] + [0.01 * 64 / d for d in in_dims], rel=1e-12)
    assert all("lr_scale" not in group for group in optimizer.param_groups)
    adapter_groups = [set(group["params"]) for group in optimizer.param_groups[1:]]
    assert adapter_groups == [set(adapter.parameters()) for adapter in net.adapters]
    # with its own rate as well, the scale multiplies that rate
    own = CTNet(make_schema(), small_backbone(), adapter_base_width=64, adapter_lr=0.1)
    optimizer = CTRTask(own, partial(torch.optim.Adagrad, lr=0.01), lambda e: e, 9).configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01] + [0.1 * 64 / d for d in in_dims])
    with pytest.raises(ValueError, match="adapter_base_width must be >= 1 or null, got 0"):
        CTNet(make_schema(), small_backbone(), adapter_base_width=0)
