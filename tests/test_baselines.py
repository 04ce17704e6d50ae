"""Every baseline of the paper under the continual protocol, on the tiny synthetic world (H=4, T=2)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module

from conftest import assert_test_metrics_are_the_predictions
from ctl.data.batcher import RowBatcher
from ctl.data.registry import load_for
from ctl.data.schema import ID_FEATURES, Feature, Schema
from ctl.errors import CtlError
from ctl.metrics import auc
from ctl.models.backbone import BackboneConfig
from ctl.models.base import BaseModel
from ctl.training.checkpoints import model_state, read_checkpoint
from ctl.training.inherit import assemble_state, embedding_key, finetune_origins
from ctl.training.protocol import run_train
from ctl.training.protocols import dual_embedding, finetune, joint

TRANSFER = [4, 5]
TEST_PERIOD = 6
#: the model configs this file smoke-tests (base, din and ctnet: tests/test_protocol.py)
MODELS = ("source", "ft_id_emb", "ft_all_emb", "ft_all", "dual_emb",
          "mlppp", "share_bottom", "ple", "minet", "ddtcdr", "dasl")
JOINT = ("mlppp", "share_bottom", "ple", "minet", "ddtcdr", "dasl")
TABLE2 = ("base", "source", "din", "ft_id_emb", "ft_all_emb", "ft_all", "dual_emb", "mlppp", "share_bottom", "ple",
          "minet", "ddtcdr", "dasl", "ctnet_linear", "ctnet", "star", "pepnet", "lowrank", "plugin", "distill")
#: every key of a CTNet run's metrics.json (tests/test_protocol.py pins that run)
RUN_KEYS = {"kind", "model", "method", "source", "target", "seed", "dataset", "dataset_path", "periods", "test",
            "cost", "tracks", "inherited", "baseline"}


def make_cfg(home: Path, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[
            "data=synthetic_tiny", f"home={home}", "progress=false", "print_table=false",
            "trainer.log_every_n_steps=1", *overrides])


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ctl_home")


class StartRecorder(pl.Callback):
    """Records a model's state at the start of every trained period (after the protocol's own callbacks)."""

    def __init__(self, period_of_epoch) -> None:
        self.period_of_epoch = period_of_epoch
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        period = self.period_of_epoch(trainer.current_epoch)
        self.states[period] = {k: v.clone() for k, v in pl_module.model.state_dict().items()}


@pytest.fixture(scope="module")
def runs(home, tmp_path_factory):
    """run(model, *overrides) -> Run, each distinct run done once per module.

    Every protocol's ``fit_periods`` is wrapped to record, per run folder, the model's state and
    inherited optimiser state when the fit starts and the state at every period start.
    """
    done: dict[tuple[str, ...], Run] = {}
    fits: dict[Path, dict] = {}
    patch = pytest.MonkeyPatch()
    for module in (finetune, dual_embedding, joint):
        real = module.fit_periods

        def spy(cfg, task, datamodule, out_dir, label, callbacks=(), real=real, **kwargs):
            recorder = StartRecorder(datamodule.period_of_epoch)
            fits[Path(out_dir)] = {
                "start": {k: v.clone() for k, v in task.model.state_dict().items()},
                "optimizer": {name: task.inherited_optimizer_state.get(p) for name, p in task.model.named_parameters()},
                "periods": recorder.states,
            }
            return real(cfg, task, datamodule, out_dir, label, callbacks=[*callbacks, recorder], **kwargs)

        patch.setattr(module, "fit_periods", spy)

    def run(model: str, *overrides: str) -> Run:
        key = (model, *overrides)
        if key not in done:
            run_dir = tmp_path_factory.mktemp(f"run_{model}")
            metrics = run_train(make_cfg(home, f"model={model}", *overrides), run_dir)
            done[key] = Run(run_dir, metrics, fits.get(run_dir, {}))
        return done[key]

    yield run
    patch.undo()


@dataclass
class Run:
    path: Path
    metrics: dict
    #: "start" (state when the fit began), "optimizer" (inherited state by name), "periods" (state per period start)
    fit: dict


def state_of(path: Path) -> dict[str, torch.Tensor]:
    return model_state(read_checkpoint(path))


def track_state(metrics: dict, origin: str, period: int) -> dict[str, torch.Tensor]:
    return state_of(Path(metrics["tracks"][origin]) / "checkpoints" / f"period_{period}.ckpt")


def train_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "logs" / "metrics.csv") as fh:
        return [float(row["train/loss"]) for row in csv.DictReader(fh) if row.get("train/loss")]


# --- smoke: every model config ----------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_every_baseline_completes_with_the_metrics_of_its_predictions(runs, home, model) -> None:
    run = runs(model)
    metrics = run.metrics
    assert json.loads((run.path / "metrics.json").read_text()) == metrics
    assert RUN_KEYS <= set(metrics)
    assert metrics["model"] == model and metrics["source"] == "A" and metrics["target"] == "B"
    assert [r["period"] for r in metrics["periods"]] == TRANSFER
    assert [r["eval_period"] for r in metrics["periods"]] == [5, 6]
    assert metrics["test"]["period"] == TEST_PERIOD
    cfg = make_cfg(home)
    dataset = load_for(cfg.data, home, progress=False)
    for row in metrics["periods"]:
        assert row["rows"] == dataset.select(["B"], [row["eval_period"]]).size
        for key in ("auc", "gauc", "logloss"):
            assert math.isfinite(row[key]), f"{model}: {key} of {row} is not finite"
    assert_test_metrics_are_the_predictions(run.path, metrics, dataset)
    assert [r["period"] for r in metrics["baseline"]["periods"]] == TRANSFER
    assert set(metrics["tracks"]) == {"source", "target"}
    cost = metrics["cost"]
    assert cost["train_rows"] == cost["own"]["train_rows"] + sum(t["train_rows"] for t in cost["tracks"].values())
    if model != "source":
        # a finite loss logged at every optimiser step of every period
        losses = train_losses(run.path)
        steps = sum(math.ceil(r["train_rows"] / cfg.data.batch_size) for r in metrics["periods"])
        assert len(losses) == steps and all(math.isfinite(v) for v in losses)
        assert (run.path / "checkpoints" / "period_5.ckpt").is_file()


def test_joint_models_train_on_both_domains_and_count_the_source_rows(runs, home) -> None:
    dataset = load_for(make_cfg(home).data, home, progress=False)
    source_rows = int(dataset.select(["A"], TRANSFER).size)
    target_rows = int(dataset.select(["B"], TRANSFER).size)
    for model in JOINT:
        metrics = runs(model).metrics
        own = metrics["cost"]["own"]
        assert own["train_rows_by_domain"] == {"A": source_rows, "B": target_rows}, model
        assert own["train_rows"] == source_rows + target_rows, model
        assert sum(r["train_rows"] for r in metrics["periods"]) == source_rows + target_rows, model
        assert sorted(metrics["cost"]["tracks"]) == ["base-A", "base-B"], model


def test_a_joint_model_without_source_rows_trains_on_the_target_rows_only(runs, home) -> None:
    dataset = load_for(make_cfg(home).data, home, progress=False)
    target_rows = int(dataset.select(["B"], TRANSFER).size)
    metrics = runs("ple", "model.source_rows=false").metrics
    assert metrics["method"] == "ple_targetonly"
    assert metrics["cost"]["own"]["train_rows_by_domain"] == {"B": target_rows}
    assert sum(r["train_rows"] for r in metrics["periods"]) == target_rows


def test_joint_models_start_from_the_production_models_of_the_period_before_t0(runs) -> None:
    for model in JOINT:
        run = runs(model)
        inherited = run.metrics["inherited"]
        assert inherited["source_state"].endswith("period_3.ckpt"), model
        assert inherited["target_state"].endswith("period_3.ckpt"), model
        assert inherited["copied_from_source"] and inherited["copied_from_target"], model
        assert inherited["optimizer"] == "fresh Adagrad"
        # the target's user table reaches every joint model unchanged (shared or the target tower's own)
        target_users = track_state(run.metrics, "target", 3)[embedding_key("user_id")]
        assert any(torch.equal(v, target_users) for v in run.fit["start"].values()), model


# --- source ------------------------------------------------------------------------------------------
def tiny_base_model(home: Path) -> BaseModel:
    cfg = make_cfg(home)
    size = {k: v for k, v in cfg.model.size.items() if k != "_target_"}
    return BaseModel(load_for(cfg.data, home, progress=False).schema, BackboneConfig(**size))


def test_source_scores_the_test_slice_with_the_last_source_model(runs, home) -> None:
    run = runs("source")
    dataset = load_for(make_cfg(home).data, home, progress=False)
    model = tiny_base_model(home)
    model.load_state_dict(track_state(run.metrics, "source", 5))
    model.eval()
    rows = dataset.select(["B"], [TEST_PERIOD])
    with torch.no_grad():
        batches = list(RowBatcher(dataset, rows, batch_size=64, shuffle=False, seed=0))
        probs = torch.cat([torch.sigmoid(model(b)) for b in batches]).numpy()
    labels = torch.cat([b["label"] for b in batches]).numpy()
    assert run.metrics["test"]["auc"] == pytest.approx(auc(probs, labels), abs=1e-6)
    saved = pq.read_table(run.path / "predictions.parquet").to_pydict()
    np.testing.assert_allclose(saved["pred"], probs, atol=1e-6)
    assert run.metrics["cost"]["own"]["train_rows"] == 0
    assert list(run.metrics["cost"]["tracks"]) == ["base-A"]  # the target track serves only the baseline


def test_source_validates_each_period_with_that_periods_source_model(runs) -> None:
    metrics = runs("source").metrics
    # the last transfer period's next slice is the test slice, scored by the same model
    assert metrics["periods"][-1]["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-9)
    assert metrics["periods"][0]["auc"] != metrics["periods"][1]["auc"]
    assert all(r["train_rows"] == 0 for r in metrics["periods"])


# --- fine-tuning ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "expected"), [
    ("ft_id_emb", set(ID_FEATURES)),
    ("ft_all_emb", {"user_id", "item_id", "category_id", "seller_id", "price_bucket", "activity_bucket", "hour"}),
])
def test_embedding_fine_tuning_copies_exactly_its_tables_from_the_source(runs, model, expected) -> None:
    run = runs(model)
    start, inherited = run.fit["start"], run.metrics["inherited"]
    source, target = track_state(run.metrics, "source", 3), track_state(run.metrics, "target", 3)
    assert inherited["source_state"].endswith("period_3.ckpt") and inherited["target_state"].endswith("period_3.ckpt")
    assert set(inherited["copied_from_source"]) == {embedding_key(name) for name in expected}
    assert set(inherited["copied_from_target"]) == set(start) - set(inherited["copied_from_source"])
    assert inherited["fresh"] == [] and inherited["optimizer"] == "fresh Adagrad"
    assert all(state is None for state in run.fit["optimizer"].values())
    for key in inherited["copied_from_source"]:
        assert torch.equal(start[key], source[key]) and not torch.equal(start[key], target[key]), key
    for key in inherited["copied_from_target"]:
        assert torch.equal(start[key], target[key]), key
    # the source-only feature keeps the target model's (never trained) table
    assert embedding_key("scene_id") in inherited["copied_from_target"]


def test_ft_all_starts_as_the_whole_source_model(runs) -> None:
    run = runs("ft_all")
    source = track_state(run.metrics, "source", 3)
    assert run.fit["start"].keys() == source.keys()
    assert all(torch.equal(run.fit["start"][k], v) for k, v in source.items())
    assert run.metrics["inherited"]["copied_from_target"] == [] and run.metrics["inherited"]["target_state"] == "none"
    assert list(run.metrics["cost"]["tracks"]) == ["base-A"]


def test_finetune_periods_one_starts_a_period_earlier(runs, home) -> None:
    plain, early = runs("ft_all").metrics, runs("ft_all", "model.finetune_periods=1")
    metrics = early.metrics
    assert metrics["method"] == "ft_all_k1" and metrics["finetune_periods"] == "1"
    assert metrics["inherited"]["source_state"].endswith("period_2.ckpt")
    source = track_state(metrics, "source", 2)
    assert all(torch.equal(early.fit["start"][k], v) for k, v in source.items())
    assert metrics["inherited"]["trained_periods"] == [3, *TRANSFER] and sorted(early.fit["periods"]) == [3, *TRANSFER]
    assert plain["inherited"]["trained_periods"] == TRANSFER and plain["pre_transfer_periods"] == []
    assert [r["period"] for r in metrics["pre_transfer_periods"]] == [3]
    assert [r["period"] for r in metrics["periods"]] == TRANSFER
    dataset = load_for(make_cfg(home).data, home, progress=False)
    extra = int(dataset.select(["B"], [3]).size)
    assert metrics["cost"]["own"]["train_rows"] == plain["cost"]["own"]["train_rows"] + extra


def test_finetune_over_the_whole_history_starts_from_period_zero(runs) -> None:
    run = runs("ft_id_emb", "model.finetune_periods=all")
    inherited = run.metrics["inherited"]
    assert run.metrics["method"] == "ft_id_emb_kall" and inherited["trained_periods"] == [0, 1, 2, 3, *TRANSFER]
    assert inherited["source_state"].endswith("period_3.ckpt") and inherited["target_state"] == "none"
    assert set(inherited["copied_from_source"]) == {embedding_key(name) for name in ID_FEATURES}
    assert set(inherited["fresh"]) == set(run.fit["start"]) - set(inherited["copied_from_source"])
    assert list(run.metrics["cost"]["tracks"]) == ["base-A"]


def test_inherit_optimizer_carries_the_copied_parameters_adagrad_state(runs, home) -> None:
    run = runs("ft_id_emb", "model.inherit_optimizer=true")
    assert run.metrics["method"] == "ft_id_emb_warmopt"
    names = [name for name, _ in tiny_base_model(home).named_parameters()]
    assert list(run.fit["optimizer"]) == names
    for origin, name in (("source", embedding_key("user_id")), ("target", names[-1])):
        checkpoint = read_checkpoint(Path(run.metrics["tracks"][origin]) / "checkpoints" / "period_3.ckpt")
        expected = checkpoint["optimizer_states"][0]["state"][names.index(name)]["sum"]
        assert torch.equal(run.fit["optimizer"][name]["sum"], expected), f"{name} continues the {origin}'s Adagrad"


@pytest.mark.parametrize("value", ["4", "-1", "two"])
def test_finetune_periods_outside_the_history_are_refused(home, tmp_path, value) -> None:
    with pytest.raises(CtlError, match=r"model.finetune_periods=.* must be an integer 0..3 .* or all"):
        run_train(make_cfg(home, "model=ft_all", f"model.finetune_periods={value}"), tmp_path)


# --- inheritance, unit -----------------------------------------------------------------------------------
def _schema_with_target_only_feature() -> Schema:
    every = ("A", "B")
    return Schema(
        features=(Feature("user_id", "categorical", 6, 4, every), Feature("item_id", "categorical", 6, 4, every),
                  Feature("category_id", "categorical", 4, 4, every), Feature("seller_id", "categorical", 4, 4, every),
                  Feature("only_a", "categorical", 3, 4, ("A",)), Feature("only_b", "categorical", 3, 4, ("B",))),
        domains=every, source="A", n_history=2, n_transfer=1, short_len=2, long_len=4)


def test_finetune_origins_by_feature_domains() -> None:
    schema = _schema_with_target_only_feature()
    keys = [embedding_key(f.name) for f in schema.features] + ["tower.bias"]
    # ft_all: the target-only feature's table starts fresh, the source-only one comes along (unused on B rows)
    origins = finetune_origins(keys, schema, "A", "B", "all", has_target=True)
    assert origins == {**{k: "source" for k in keys}, embedding_key("only_b"): "fresh"}
    shared = finetune_origins(keys, schema, "A", "B", "shared_embeddings", has_target=True)
    assert {k for k, o in shared.items() if o == "source"} == {embedding_key(n) for n in ID_FEATURES}
    ids = finetune_origins(keys, schema, "A", "B", "id_embeddings", has_target=False)
    assert {k for k, o in ids.items() if o == "fresh"} == {embedding_key(n) for n in ("only_a", "only_b")} | {"tower.bias"}
    with pytest.raises(ValueError, match="copy must be one of"):
        finetune_origins(keys, schema, "A", "B", "everything", has_target=True)
    with pytest.raises(ValueError, match="no embedding table 'backbone.embeddings.tables.user_id.weight'"):
        finetune_origins(keys[1:], schema, "A", "B", "id_embeddings", has_target=True)


def test_assemble_state_copies_by_origin_and_names_a_mismatch() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    init = {k: v.clone() for k, v in module.state_dict().items()}
    source = {k: torch.full_like(v, 1.0) for k, v in init.items()}
    target = {k: torch.full_like(v, 2.0) for k, v in init.items()}
    origins = {"0.weight": "source", "0.bias": "target", "1.weight": "fresh", "1.bias": "source"}
    inheritance = assemble_state(module, origins, {"source": source, "target": target}, {})
    state = module.state_dict()
    assert torch.equal(state["0.weight"], source["0.weight"]) and torch.equal(state["0.bias"], target["0.bias"])
    assert torch.equal(state["1.weight"], init["1.weight"]) and torch.equal(state["1.bias"], source["1.bias"])
    assert inheritance.as_dict() == {"copied_from_source": ["0.weight", "1.bias"], "copied_from_target": ["0.bias"],
                                     "fresh": ["1.weight"]}
    wrong = dict(source, **{"0.weight": torch.zeros(4, 3)})
    with pytest.raises(CtlError, match=r"'0.weight' has shape \(4, 3\) there but \(2, 3\)"):
        assemble_state(module, origins, {"source": wrong, "target": target}, {"source": "src.ckpt"})
    with pytest.raises(CtlError, match="'1.bias' has no origin"):
        assemble_state(module, {k: o for k, o in origins.items() if k != "1.bias"}, {"source": source}, {})
    with pytest.raises(CtlError, match="no target state was given"):
        assemble_state(module, origins, {"source": source}, {})


# --- dual embedding ---------------------------------------------------------------------------------------
def test_dual_embedding_recopies_the_source_id_tables_at_every_period_start(runs) -> None:
    run = runs("dual_emb")
    extra = {name: f"source_tables.{name}.weight" for name in ID_FEATURES}
    seeds = {f"source_tables.{name}.init_seed" for name in ID_FEATURES}  # the seeds of their never-trained rows
    assert set(run.metrics["inherited"]["copied_from_source"]) == set(extra.values()) | seeds
    assert sorted(run.fit["periods"]) == TRANSFER
    for period, state in [(3, run.fit["start"]), *sorted(run.fit["periods"].items())]:
        source = track_state(run.metrics, "source", period)
        for name, key in extra.items():
            assert torch.equal(state[key], source[embedding_key(name)]), f"period {period}: {key} is not h_s^{period}'s"
    # the extras train within a period: the final model's tables moved away from h_s^5's
    final = state_of(run.path / "checkpoints" / "period_5.ckpt")
    assert not torch.equal(final[extra["user_id"]], track_state(run.metrics, "source", 5)[embedding_key("user_id")])


def test_unknown_protocol_is_refused(home, tmp_path) -> None:
    with pytest.raises(CtlError, match="model.protocol='teleport' is unknown"):
        run_train(make_cfg(home, "model=base", "model.protocol=teleport"), tmp_path)


# --- the whole Table 2 sweep through the installed CLI ------------------------------------------------------
def test_table2_experiment_sweeps_every_method_target_and_seed() -> None:
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=table2"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert tuple(str(params.model).split(",")) == TABLE2
    assert str(params["data.domain"]) == "B,C" and str(params.seed) == "0,1,2"
    conf = Path(sys.modules["ctl.conf"].__file__).parent / "model"
    assert all((conf / f"{name}.yaml").is_file() for name in TABLE2)


@pytest.mark.slow
def test_one_sweep_runs_every_method_and_shares_the_tracks(home, tmp_path) -> None:
    ctl = Path(sys.executable).with_name("ctl")
    env = {k: v for k, v in os.environ.items() if k != "CTL_COMMAND"}
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [str(ctl), "sweep", f"model={','.join(TABLE2)}", "data=synthetic_tiny", f"home={home}", "progress=false",
         "print_table=false", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {m["method"]: m for m in (json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json"))}
    assert sorted(found) == sorted(TABLE2)
    assert len({m["dataset"] for m in found.values()}) == 1
    # every transfer method read the same production tracks
    assert len({m["tracks"]["source"] for m in found.values() if "source" in m["tracks"]}) == 1
    assert {m["tracks"].get("target", m["tracks"].get("own")) for m in found.values() if m["model"] != "din"} == \
        {found["base"]["tracks"]["own"]}
    tracks = sorted(p.name.rsplit("-", 1)[0] for p in (home / "tracks").iterdir() if not p.name.startswith("."))
    assert tracks == ["base-A", "base-B", "din-B"]
