"""End-to-end runs of the continual protocol on the tiny synthetic world."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from conftest import assert_test_metrics_are_the_predictions
from ctl.data.dataset import load_dataset
from ctl.models import build_model
from ctl.training import tracks
from ctl.training.checkpoints import model_state, read_checkpoint
from ctl.training.protocol import run_train


def make_cfg(home: Path, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(
            config_name="train",
            overrides=["data=synthetic_tiny", f"home={home}", "progress=false", "print_table=false", *overrides],
        )


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ctl_home")


@pytest.fixture(scope="module")
def ctnet_run(home, tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("ctnet_run")
    return run_dir, run_train(make_cfg(home, "model=ctnet"), run_dir)


def test_ctnet_run_writes_metrics_for_every_transfer_period(ctnet_run) -> None:
    run_dir, metrics = ctnet_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == metrics
    cfg = make_cfg(Path("/unused"), "model=ctnet")
    assert metrics["method"] == "ctnet"
    assert [r["period"] for r in metrics["periods"]] == [4, 5]  # tiny world: H=4, T=2
    dataset = load_dataset(metrics["dataset_path"])
    for row in metrics["periods"]:
        assert row["train_rows"] == dataset.select(["B"], [row["period"]]).size
        assert row["rows"] == dataset.select(["B"], [row["eval_period"]]).size
    assert metrics["test"]["period"] == 6
    assert_test_metrics_are_the_predictions(run_dir, metrics, dataset)
    assert (run_dir / "predictions.parquet").is_file()
    assert (run_dir / "config.yaml").read_text().startswith("data:")
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"period_4.ckpt", "period_5.ckpt"}
    assert metrics["baseline"]["method"] == "base" and len(metrics["baseline"]["periods"]) == 2
    assert cfg.model.refresh_source is True


def test_source_refresh_keeps_the_source_tower_equal_to_the_source_track(ctnet_run) -> None:
    run_dir, metrics = ctnet_run
    source_track = Path(metrics["tracks"]["source"])
    target_track = Path(metrics["tracks"]["target"])
    for period in (4, 5):
        ctnet = model_state(read_checkpoint(run_dir / "checkpoints" / f"period_{period}.ckpt"))
        source = model_state(read_checkpoint(source_track / "checkpoints" / f"period_{period}.ckpt"))
        tower = {k[len("source."):]: v for k, v in ctnet.items() if k.startswith("source.")}
        assert tower.keys() == source.keys()
        assert any("running_mean" in k for k in tower)  # BatchNorm statistics are compared too
        for name, value in source.items():
            assert torch.equal(tower[name], value), f"source tower {name} differs from the source track"
    # the target tower and the adapters did learn
    production = model_state(read_checkpoint(target_track / "checkpoints" / "period_3.ckpt"))
    final = model_state(read_checkpoint(run_dir / "checkpoints" / "period_5.ckpt"))
    changed = [k for k, v in production.items() if not torch.equal(final[f"target.{k}"], v)]
    assert len(changed) > len(production) // 2
    # one full-width GLU matrix per MLP layer of the small size (128, 64), trained in every period:
    # the N(0, 1e-6) init is long gone after period 4, and period 5 moved them again
    first = model_state(read_checkpoint(run_dir / "checkpoints" / "period_4.ckpt"))
    adapters = sorted(k for k in final if not k.startswith(("source.", "target.")))
    assert adapters == ["adapters.0.proj.weight", "adapters.1.proj.weight"]
    for key in adapters:
        assert first[key].abs().max() > 1e-3, key
        assert not torch.equal(final[key], first[key]), key


def test_transfer_once_keeps_the_first_source_model(home, tmp_path) -> None:
    metrics = run_train(make_cfg(home, "model=ctnet", "model.refresh_source=false"), tmp_path)
    assert metrics["method"] == "ctnet_once"
    source_track = Path(metrics["tracks"]["source"])
    ctnet = model_state(read_checkpoint(tmp_path / "checkpoints" / "period_5.ckpt"))
    first = model_state(read_checkpoint(source_track / "checkpoints" / "period_4.ckpt"))
    assert all(torch.equal(ctnet[f"source.{k}"], v) for k, v in first.items())


def test_low_rank_ctnet_is_its_own_method_with_factored_adapters(home, ctnet_run, tmp_path) -> None:
    metrics = run_train(make_cfg(home, "model=ctnet", "model.net.adapter_rank=4"), tmp_path)
    assert metrics["method"] == "ctnet_r4"
    assert metrics["tracks"] == ctnet_run[1]["tracks"]  # the same production models
    low = model_state(read_checkpoint(tmp_path / "checkpoints" / "period_5.ckpt"))
    full = model_state(read_checkpoint(ctnet_run[0] / "checkpoints" / "period_5.ckpt"))
    adapters = sorted(k for k in low if k.startswith("adapters."))
    # per layer: down [4, in] then up [2 * out, 4] (the GLU's value and gate halves)
    assert adapters == [f"adapters.{layer}.proj.{i}.weight" for layer in (0, 1) for i in (0, 1)]
    assert all(low[k].shape[0] == 4 or low[k].shape[1] == 4 for k in adapters)
    assert sum(low[k].numel() for k in adapters) < sum(v.numel() for k, v in full.items() if k.startswith("adapters."))
    assert_test_metrics_are_the_predictions(tmp_path, metrics, load_dataset(metrics["dataset_path"]))


def test_shared_attention_ctnet_trains_and_keeps_the_target_attention_frozen(home, ctnet_run, tmp_path) -> None:
    metrics = run_train(make_cfg(home, "model=ctnet", "model.net.share_attention=true"), tmp_path)
    assert metrics["method"] == "ctnet_shared"
    production = model_state(read_checkpoint(Path(metrics["tracks"]["target"]) / "checkpoints" / "period_3.ckpt"))
    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "period_5.ckpt")
    final = model_state(checkpoint)
    frozen = [k for k in production if k.startswith(("backbone.sim_attention.", "backbone.eta_attention."))]
    assert frozen and all(torch.equal(final[f"target.{k}"], production[k]) for k in frozen)
    assert not torch.equal(final["target.tower.mlp.linears.0.weight"], production["tower.mlp.linears.0.weight"])
    # the optimiser holds exactly the trainable parameters: the target tower's, less the frozen
    # attention, and the adapters
    cfg = make_cfg(home, "model=ctnet", "model.net.share_attention=true")
    net = build_model(cfg.model.net, load_dataset(metrics["dataset_path"]).schema)
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert len(checkpoint["optimizer_states"][0]["state"]) == len(trainable)
    assert sum(len(g["params"]) for g in checkpoint["optimizer_states"][0]["param_groups"]) == len(trainable)


def test_tracks_are_reused_not_rebuilt(home, ctnet_run, tmp_path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a cached track was rebuilt")

    monkeypatch.setattr(tracks, "_build", refuse)
    metrics = run_train(make_cfg(home, "model=base", "data.domain=B"), tmp_path)
    assert metrics["tracks"]["own"] == ctnet_run[1]["tracks"]["target"]
    assert [r["period"] for r in metrics["periods"]] == list(range(6))


def test_ctnet_refuses_the_source_domain_as_target(home, tmp_path) -> None:
    from ctl.errors import CtlError

    with pytest.raises(CtlError, match="is the source domain"):
        run_train(make_cfg(home, "model=ctnet", "data.domain=A"), tmp_path)


def test_a_slice_without_any_two_label_user_records_gauc_as_nan() -> None:
    from ctl.training.task import StageMetrics

    metrics = StageMetrics()
    metrics.update(torch.tensor([0.1, -0.3, 0.5]), torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1, 2, 3]))
    with pytest.warns(UserWarning, match="GAUC recorded as NaN"):
        values = metrics.compute()
    assert values["auc"] == 0.5 and math.isnan(values["gauc"])


def test_a_mixed_precision_track_has_a_cache_key_of_its_own_and_fp32_keys_stay_as_they_were():
    from types import SimpleNamespace

    dataset = SimpleNamespace(fingerprint=lambda: "f" * 16, schema=SimpleNamespace(test_period=9))

    def spec(*overrides: str) -> dict:
        with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
            cfg = compose(config_name="train", overrides=["model=base", *overrides])
        return tracks.track_spec(cfg, dataset, "B", cfg.model.net, "base")

    cpu, gpu = spec(), spec("trainer=gpu")
    assert "precision" not in cpu  # the keys of every fp32 track already cached are unchanged
    assert gpu.pop("precision") == "bf16-mixed" and gpu == cpu
    assert spec("trainer=gpu", "trainer.precision=32-true") == cpu
