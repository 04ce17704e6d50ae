"""The methods published after the paper, end to end on the tiny world: each trains under the
continual protocol, records the metrics of its predictions, and exports a graph that reproduces them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hydra import compose, initialize_config_module

from conftest import assert_test_metrics_are_the_predictions
from ctl.data.dataset import load_dataset
from ctl.methods import ADDED_METHODS, METHOD_ORDER
from ctl.report.cli import evaluate
from ctl.serve.export import export_run
from ctl.serve.flops import serving_mflop_per_row
from ctl.serve.requests import requests_from_dataset
from ctl.serve.score import score_file
from ctl.training.checkpoints import model_state, read_checkpoint
from ctl.training.protocol import run_train

TOLERANCE = 1e-5
FROZEN_SOURCE = ("lowrank", "plugin", "distill")


def make_cfg(home: Path, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=["data=synthetic_tiny", f"home={home}", "progress=false",
                                                       "print_table=false", *overrides])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    home = tmp_path_factory.mktemp("recent_home")
    found = {}
    for model in ("base", *ADDED_METHODS):
        run_dir = tmp_path_factory.mktemp(f"run_{model}")
        found[model] = run_dir, run_train(make_cfg(home, f"model={model}", "data.domain=C"), run_dir)
    return found


def test_the_added_methods_are_five_and_ordered_after_the_papers() -> None:
    assert ADDED_METHODS == ("star", "pepnet", "lowrank", "plugin", "distill")
    assert METHOD_ORDER[-5:] == ADDED_METHODS


@pytest.mark.parametrize("model", ADDED_METHODS)
def test_each_added_method_completes_with_the_metrics_of_its_predictions(runs, model) -> None:
    run_dir, metrics = runs[model]
    assert metrics["method"] == model and metrics["target"] == "C"
    assert [row["period"] for row in metrics["periods"]] == [4, 5]
    dataset = load_dataset(metrics["dataset_path"])
    assert_test_metrics_are_the_predictions(run_dir, metrics, dataset)
    assert metrics["baseline"]["method"] == "base"
    assert metrics["cost"]["own"]["train_rows"] > 0


@pytest.mark.parametrize("model", FROZEN_SOURCE)
def test_the_frozen_source_tower_ends_as_the_last_source_model(runs, model) -> None:
    run_dir, metrics = runs[model]
    final = model_state(read_checkpoint(run_dir / "checkpoints" / "period_5.ckpt"))
    source = model_state(read_checkpoint(Path(metrics["tracks"]["source"]) / "checkpoints" / "period_5.ckpt"))
    tower = {k.removeprefix("source."): v for k, v in final.items() if k.startswith("source.")}
    assert tower.keys() == source.keys()
    assert all(torch.equal(tower[k], source[k]) for k in source)


def test_frozen_source_methods_say_what_they_took_from_the_target_model(runs) -> None:
    assert runs["lowrank"][1]["inherited"]["fresh"] == [f"deltas.{i}.{w}" for i in range(2) for w in ("down", "up")]
    assert "target_model" not in runs["lowrank"][1]["inherited"]
    plugin = runs["plugin"][1]["inherited"]
    assert "tower.mlp.linears.0.weight" in plugin["copied_from_target"] and plugin["fresh"] == []
    assert "Adagrad state" in plugin["target_model"]
    assert runs["distill"][1]["inherited"]["fresh"] == []


@pytest.mark.parametrize("model", ADDED_METHODS)
def test_each_added_method_exports_a_graph_that_reproduces_its_test_predictions(runs, model, tmp_path) -> None:
    run_dir, metrics = runs[model]
    artifact = export_run(run_dir, tmp_path / "artifact")
    table = pq.read_table(run_dir / "predictions.parquet")
    expected = {name: np.array(table.column(name).to_numpy()) for name in ("row", "pred")}
    requests = tmp_path / "requests.parquet"
    pq.write_table(requests_from_dataset(metrics["dataset_path"], expected["row"], with_history=True), requests)
    scores = pq.read_table(score_file(artifact, requests, tmp_path / "scores.parquet").out)
    np.testing.assert_array_equal(scores.column("row").to_numpy(), expected["row"])
    np.testing.assert_allclose(scores.column("pred").to_numpy(), expected["pred"], atol=TOLERANCE, rtol=0)
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["method"] == model and manifest["checkpoint"] == "period_5.ckpt"


def test_serving_flops_come_from_the_exported_graph_and_distillation_serves_at_bases_cost(runs) -> None:
    flops = {model: serving_mflop_per_row(runs[model][0]) for model in ("base", "distill", "plugin", "lowrank")}
    assert flops["base"] > 0
    assert flops["distill"] == flops["base"]  # the teacher and the auxiliary head never run when serving
    # the plug-in runs the source model and then a target model whose first layer reads 64 + 1 more inputs
    assert flops["plugin"] > 1.9 * flops["base"]
    # the source model plus rank-8 changes: base plus 2 * 8 * (in + out) per layer, per row
    assert flops["base"] < flops["lowrank"] < 1.2 * flops["base"]


def test_the_cost_table_shows_serving_flops_beside_bases(runs) -> None:
    report = evaluate([runs["base"][0], runs["distill"][0], runs["plugin"][0]], ["cost"], bootstrap=0)
    serving = {r["model"]: r for r in report.records["cost"] if r["metric"] == "serving_mflop"}
    assert set(serving) == {"base", "distill", "plugin"}
    assert serving["distill"]["mean"] == serving["distill"]["base"] == serving["base"]["mean"]
    view = report.views["cost"][0]
    column = view.headers.index("serving MFLOP/row")
    cells = {row[0].text: row[column].text for row in view.rows}
    assert cells["distill"].endswith("(1.00× base)") and "× base" in cells["plugin"]
