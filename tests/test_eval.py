"""``ctl eval``: the paper's tables from run folders, checked against the saved predictions."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from hydra import compose, initialize_config_module

from ctl.cli import main as ctl_main
from ctl.data.dataset import load_dataset
from ctl.errors import CtlError
from ctl.methods import method_label
from ctl.metrics import (
    auc,
    cold_start_gains,
    cold_start_slices,
    delong_test,
    gauc,
    seed_t_interval,
    slice_metrics,
)
from ctl.report import views
from ctl.report.cli import evaluate
from ctl.report.records import RECORD_KEYS
from ctl.training.protocol import run_train
from references import reference_metric

CTL = str(Path(sys.executable).with_name("ctl"))
ARMS = {"base": ["model=base"], "ctnet": ["model=ctnet"], "ctnet_once": ["model=ctnet", "model.refresh_source=false"]}
SEEDS = (0, 1)
TOL = 1e-6  # metrics.json holds torchmetrics' float32 AUC; the reference is float64


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """base, ctnet and transfer-once CTNet on A -> B of the tiny world, seeds 0 and 1."""
    home = tmp_path_factory.mktemp("home")
    root = tmp_path_factory.mktemp("sweep")
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        for seed in SEEDS:
            for name, overrides in ARMS.items():
                cfg = compose("train", overrides=["data=synthetic_tiny", f"home={home}", "progress=false",
                                                  "print_table=false", f"seed={seed}", *overrides])
                run_train(cfg, root / f"{name}-s{seed}")
    return root


def predictions(run_dir: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(run_dir / "predictions.parquet").to_pydict()
    order = np.argsort(table["row"])
    return {k: np.asarray(v)[order] for k, v in table.items()}


def only(rows: list[dict], **match: object) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} records match {match}"
    return found[0]


def reference(run_dir: Path, metric: str) -> float:
    p = predictions(run_dir)
    return auc(p["pred"], p["label"]) if metric == "auc" else gauc(p["pred"], p["label"], p["user_id"])


def test_json_matches_metrics_recomputed_from_predictions(sweep: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CTL_COMMAND"}
    proc = subprocess.run([CTL, "eval", str(sweep), "--format", "json", "--bootstrap", "1000"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert all(list(r) == list(RECORD_KEYS) for r in rows)
    assert {r["table"] for r in rows} == {"overall"}
    for name in ARMS:
        for metric in ("auc", "gauc"):
            values = [reference(sweep / f"{name}-s{s}", metric) for s in SEEDS]
            row = only(rows, model=name, target="B", metric=metric)
            assert row["n"] == 2 and row["seeds"] == [0, 1]
            assert row["mean"] == pytest.approx(np.mean(values), abs=TOL)
            assert row["std"] == pytest.approx(np.std(values, ddof=1), abs=TOL)
            if name == "base":
                assert row["delta"] is None and row["significance"] is None
                continue
            base = [reference(sweep / f"base-s{s}", metric) for s in SEEDS]
            assert row["delta"] == pytest.approx(np.mean(np.subtract(values, base)), abs=TOL)
            assert row["base"] == pytest.approx(np.mean(base), abs=TOL)


def test_significance_pairs_the_rows_by_id_and_brackets_the_measured_gain(sweep: Path) -> None:
    rows = evaluate([sweep], ["overall"], bootstrap=1000).records["overall"]
    for metric in ("auc", "gauc"):
        sig = only(rows, model="ctnet", metric=metric)["significance"]
        assert sig["resamples"] == 1000 and sig["tested_seeds"] == 2
        assert sig["significant_seeds"] == sum(s["significant"] for s in sig["per_seed"])
        for entry in sig["per_seed"]:
            model, base = predictions(sweep / f"ctnet-s{entry['seed']}"), predictions(sweep / f"base-s{entry['seed']}")
            assert np.array_equal(model["row"], base["row"])
            # the gain from sklearn on the rows paired by id; the interval brackets it
            gain = (reference_metric(metric, model["pred"], model["label"], model["user_id"])
                    - reference_metric(metric, base["pred"], base["label"], base["user_id"]))
            assert entry["delta"] == pytest.approx(gain, abs=1e-12)
            assert entry["low"] < entry["delta"] < entry["high"]
            assert entry["significant"] == (entry["low"] > 0 or entry["high"] < 0)
            if metric == "auc":
                assert entry["p_value"] == delong_test(model["label"], model["pred"], base["pred"])["p_value"]
        # the claim over both seeds: Student's t over their test-slice deltas, training noise counted
        aware = sig["seed_aware"]
        t = seed_t_interval([entry["delta"] for entry in sig["per_seed"]])
        assert aware["covers"] == "training seeds and test users" and aware["seeds"] == 2
        assert (aware["delta"], aware["low"], aware["high"]) == pytest.approx((t["delta"], t["low"], t["high"]), abs=1e-12)


def test_a_method_that_predicts_as_base_gains_nothing_and_is_not_significant(sweep: Path, tmp_path: Path) -> None:
    for seed in SEEDS:
        _copy_run(sweep / f"base-s{seed}", tmp_path / f"base-s{seed}", {})
        twin = _copy_run(sweep / f"ctnet-s{seed}", tmp_path / f"ctnet-s{seed}", {})
        shutil.copyfile(sweep / f"base-s{seed}" / "predictions.parquet", twin / "predictions.parquet")
    rows = evaluate([tmp_path], ["overall"], bootstrap=200).records["overall"]
    for metric in ("auc", "gauc"):
        sig = only(rows, model="ctnet", metric=metric)["significance"]
        assert sig["tested_seeds"] == 2 and sig["significant_seeds"] == 0
        assert [(e["delta"], e["low"], e["high"]) for e in sig["per_seed"]] == [(0.0, 0.0, 0.0)] * 2


def test_versus_pairs_every_method_with_the_chosen_one(sweep: Path) -> None:
    rows = evaluate([sweep], ["overall"], bootstrap=200, versus="ctnet").records["overall"]
    assert only(rows, model="ctnet", metric="auc")["significance"] is None
    for name in ("base", "ctnet_once"):
        sig = only(rows, model=name, metric="auc")["significance"]
        assert sig["versus"] == "ctnet" and sig["tested_seeds"] == 2
        for entry in sig["per_seed"]:
            model, ctnet = predictions(sweep / f"{name}-s{entry['seed']}"), predictions(sweep / f"ctnet-s{entry['seed']}")
            assert entry["delta"] == pytest.approx(auc(model["pred"], model["label"]) - auc(ctnet["pred"], ctnet["label"]))
            assert entry["p_value"] == delong_test(model["label"], model["pred"], ctnet["pred"])["p_value"]
    # the Δ columns stay against base, as in the paper's tables
    base = [reference(sweep / f"base-s{s}", "auc") for s in SEEDS]
    once = [reference(sweep / f"ctnet_once-s{s}", "auc") for s in SEEDS]
    assert only(rows, model="ctnet_once", metric="auc")["delta"] == pytest.approx(np.mean(np.subtract(once, base)),
                                                                                  abs=TOL)
    shown = views.significance_view(rows)
    assert shown.title.startswith("Significance vs ctnet") and "with ctnet of the same seed" in shown.caption
    assert "B Δ vs ctnet [95%]" in views.overall_view(rows).headers
    with pytest.raises(CtlError, match=r"--versus ple: no run of that method here; the methods are: base, ctnet"):
        evaluate([sweep], ["overall"], bootstrap=10, versus="ple")


def test_a_ctnet_run_alone_compares_against_its_recorded_base_track(sweep: Path) -> None:
    rows = evaluate([sweep / "ctnet-s0", sweep / "ctnet-s1"], ["overall"], bootstrap=1000).records["overall"]
    # the recorded base track is the very model the base runs of the same seeds report
    base = only(rows, model="base", metric="auc")
    assert base["values"] == [json.loads((sweep / f"base-s{s}" / "metrics.json").read_text())["test"]["auc"]
                              for s in SEEDS]
    with_base_runs = evaluate([sweep], ["overall"], bootstrap=1000).records["overall"]
    alone = only(rows, model="ctnet", metric="gauc")
    assert alone["delta"] == only(with_base_runs, model="ctnet", metric="gauc")["delta"]
    assert alone["significance"] == only(with_base_runs, model="ctnet", metric="gauc")["significance"]


def test_periods_table_has_every_transfer_period_of_every_method(sweep: Path) -> None:
    rows = evaluate([sweep], ["periods"], bootstrap=0).records["periods"]
    # tiny world: t0 = 4, periods 4 and 5; period 5 is validated on the test slice (6), so no extra test row;
    # the oracle is known on the test slice only
    assert {(r["model"], r["slice"], r["metric"]) for r in rows} == {
        (m, f"period {p}", metric) for m in ARMS for p in (4, 5) for metric in ("auc", "gauc")} | {
        ("oracle", "period 5", metric) for metric in ("auc", "gauc")}
    for r in rows:
        if r["model"] == "oracle":
            continue
        assert r["eval_period"] == r["period"] + 1
        values = []
        for s in SEEDS:
            saved = json.loads((sweep / f"{r['model']}-s{s}" / "metrics.json").read_text())
            values.append(next(p[r["metric"]] for p in saved["periods"] if p["period"] == r["period"]))
        assert r["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        if r["model"] != "base":
            base = only(rows, model="base", slice=r["slice"], metric=r["metric"])
            assert r["delta"] == pytest.approx(r["mean"] - base["mean"], abs=1e-12)


def test_coldstart_table_matches_a_naive_slicing(sweep: Path) -> None:
    rows = evaluate([sweep], ["coldstart"], bootstrap=0).records["coldstart"]
    assert {(r["model"], r["slice"]) for r in rows} == {
        (m, s) for m in ("ctnet", "ctnet_once", "oracle") for s in ("new users", "old users", "new items", "old items")}
    saved = json.loads((sweep / "ctnet-s0" / "metrics.json").read_text())
    dataset = load_dataset(saved["dataset_path"], validate=False)
    b = dataset.schema.domain_index("B")
    known_users = {int(u) for u, d, p in zip(dataset.rows["user_id"], dataset.rows["domain"], dataset.rows["period"])
                   if d == b and p < dataset.schema.t0}
    gains = []
    for s in SEEDS:
        model, base = predictions(sweep / f"ctnet-s{s}"), predictions(sweep / f"base-s{s}")
        new = np.array([int(u) not in known_users for u in model["user_id"]])
        assert 0 < new.sum() < len(new)
        gains.append(auc(model["pred"][new], model["label"][new]) - auc(base["pred"][new], base["label"][new]))
    new_users = only(rows, model="ctnet", slice="new users", metric="auc")
    old_users = only(rows, model="ctnet", slice="old users", metric="auc")
    assert new_users["rows"] == new.sum() and new_users["rows"] + old_users["rows"] == saved["test"]["rows"]
    assert new_users["delta"] == pytest.approx(np.mean(gains), abs=1e-12)
    new_items = only(rows, model="ctnet", slice="new items", metric="gauc")
    old_items = only(rows, model="ctnet", slice="old items", metric="gauc")
    assert new_items["rows"] + old_items["rows"] == saved["test"]["rows"]


def test_cost_table_reads_own_and_total_cost_of_every_run(sweep: Path) -> None:
    rows = evaluate([sweep], ["cost"], bootstrap=0).records["cost"]
    for name in ARMS:
        saved = [json.loads((sweep / f"{name}-s{s}" / "metrics.json").read_text())["cost"] for s in SEEDS]
        # a track method's own cost is its track's; a transfer method's is its own fit
        own = [c["own"] or c["tracks"]["base-B"] for c in saved]
        assert only(rows, model=name, metric="own_rows")["values"] == [o["train_rows"] for o in own]
        assert only(rows, model=name, metric="own_cpu_s")["values"] == [o["cpu_s"] for o in own]
        assert only(rows, model=name, metric="total_rows")["values"] == [c["train_rows"] for c in saved]
        assert only(rows, model=name, metric="total_wall_s")["values"] == [c["wall_s"] for c in saved]
    # CTNet trains on the two transfer periods of B only; its total adds both production tracks
    ctnet = only(rows, model="ctnet", metric="own_rows")
    assert ctnet["mean"] < only(rows, model="base", metric="own_rows")["mean"]
    assert only(rows, model="ctnet", metric="total_rows")["mean"] > ctnet["mean"]


def test_eval_help_names_every_table(capsys) -> None:
    ctl_main(["eval", "--help"])
    out = capsys.readouterr().out
    for name in ("overall", "periods", "finetune", "coldstart", "cost", "--bootstrap", "--out", "--format"):
        assert name in out


def test_cold_start_slices_and_gains_by_hand() -> None:
    users = np.array([1, 3, 3, 2, 3, 1])
    items = np.array([7, 7, 8, 9, 9, 8])
    slices = cold_start_slices(users, items, known_users=np.array([1, 2, 2]), known_items=np.array([7]))
    assert slices["new users"].tolist() == [False, True, True, False, True, False]
    assert slices["old users"].tolist() == [True, False, False, True, False, True]
    assert slices["new items"].tolist() == [False, False, True, True, True, True]
    labels = np.array([1, 0, 1, 1, 0, 0])
    preds = np.array([0.9, 0.2, 0.4, 0.3, 0.6, 0.5])
    # new users: rows 1, 2, 4 (labels 0, 1, 0; preds 0.2, 0.4, 0.6): the positive beats 1 of 2 negatives
    new = slice_metrics(labels, preds, users, slices["new users"])
    assert new == {"rows": 3, "positives": 1, "auc": 0.5, "gauc": 0.5}
    # old users: rows 0, 3, 5 (labels 1, 1, 0; preds 0.9, 0.3, 0.5): AUC 1/2; user 1 holds both labels
    # (0.9 > 0.5: AUC 1), user 2 only a click and is left out: GAUC 1
    old = slice_metrics(labels, preds, users, slices["old users"])
    assert old["auc"] == 0.5 and old["gauc"] == 1.0
    # a slice with one label has neither AUC nor GAUC
    assert slice_metrics(labels, preds, users, users == 2)["auc"] is None
    flat = np.full(6, 0.5)
    gains = cold_start_gains(labels, preds, flat, users, slices)
    assert gains["new users"]["base_auc"] == 0.5 and gains["new users"]["auc_gain"] == 0.0
    assert gains["old users"]["gauc_gain"] == 0.5 and gains["old users"]["auc_gain"] == 0.0
    with pytest.raises(ValueError, match="mask must be a bool array"):
        slice_metrics(labels, preds, users, np.ones(5, dtype=bool))


def _copy_run(src: Path, dst: Path, metrics_edit: dict, config_edit: dict | None = None) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    metrics = json.loads((dst / "metrics.json").read_text())
    for key, value in metrics_edit.items():
        target = metrics
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    (dst / "metrics.json").write_text(json.dumps(metrics))
    if config_edit:
        config = yaml.safe_load((dst / "config.yaml").read_text())
        for key, value in config_edit.items():
            *parents, leaf = key.split(".")
            target = config
            for parent in parents:
                target = target[parent]
            target[leaf] = value
        (dst / "config.yaml").write_text(yaml.safe_dump(config))
    return dst


def test_finetune_table_orders_runs_by_finetune_periods(sweep: Path, tmp_path: Path) -> None:
    with pytest.raises(CtlError, match="needs runs of model=ft_all"):
        evaluate([sweep], ["finetune"], bootstrap=0)
    for k, rows in (("all", 900), ("1", 300), ("0", 120)):
        method = "ft_all" if k == "0" else f"ft_all_k{k}"
        _copy_run(sweep / "ctnet-s0", tmp_path / method,
                  {"model": "ft_all", "method": method, "finetune_periods": k, "cost.own.train_rows": rows},
                  {"model.name": "ft_all", "model.protocol": "finetune", "model.finetune_periods": k})
    records = evaluate([tmp_path, sweep / "ctnet-s0"], ["finetune"], bootstrap=0).records["finetune"]
    order = list(dict.fromkeys(r["model"] for r in records))
    assert order == ["base", "ft_all", "ft_all_k1", "ft_all_kall", "ctnet", "oracle"]
    assert [only(records, model=m, metric="own_rows")["mean"] for m in order[1:4]] == [120, 300, 900]
    assert only(records, model="ft_all_kall", metric="auc")["finetune_periods"] == "all"


def test_runs_of_different_datasets_are_not_mixed(sweep: Path, tmp_path: Path) -> None:
    _copy_run(sweep / "ctnet-s0", tmp_path / "other", {"dataset": "0123456789abcdef"})
    report = evaluate([sweep, tmp_path], ["overall"], bootstrap=0)
    assert any("2 datasets" in note for note in report.notes)
    rows = report.records["overall"]
    assert only(rows, dataset="0123456789abcdef", model="ctnet", metric="auc")["n"] == 1
    assert only(rows, dataset="0123456789abcdef", model="base", metric="auc")["n"] == 1
    real = json.loads((sweep / "ctnet-s0" / "metrics.json").read_text())["dataset"]
    assert only(rows, dataset=real, model="base", metric="auc")["n"] == 2
    assert len(report.views["overall"]) == 2


def test_variants_get_their_own_rows_and_duplicates_are_ignored(sweep: Path, tmp_path: Path) -> None:
    _copy_run(sweep / "ctnet-s0", tmp_path / "a", {})
    _copy_run(sweep / "ctnet-s0", tmp_path / "b", {})
    _copy_run(sweep / "ctnet-s0", tmp_path / "c", {}, {"model.net.adapter_init_std": 0.001})
    report = evaluate([tmp_path], ["overall"], bootstrap=0)
    labels = {r["model"] for r in report.records["overall"]}
    assert labels == {"base", "ctnet[model.net.adapter_init_std=1e-06]", "ctnet[model.net.adapter_init_std=0.001]",
                      "oracle"}
    assert any(note.startswith(f"ignoring {tmp_path / 'b'}") for note in report.notes)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no runs under"),
        ({"hello": 1}, "found 1 other metrics.json"),
        ({"kind": "track"}, "found 1 track folder(s)"),
    ],
)
def test_eval_refuses_a_folder_without_runs_in_one_line(content, expected, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CTL_COMMAND", "eval")  # restored afterwards: main() sets it
    if content is not None:
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "metrics.json").write_text(json.dumps(content))
    with pytest.raises(SystemExit) as exit_info:
        ctl_main(["eval", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert expected in err and 'expected run folders holding metrics.json with "kind": "run"' in err


def test_eval_refuses_a_missing_path_and_a_bad_bootstrap(tmp_path) -> None:
    with pytest.raises(CtlError, match="does not exist"):
        evaluate([tmp_path / "nowhere"], ["overall"])
    with pytest.raises(CtlError, match="--bootstrap must be >= 0"):
        evaluate([tmp_path], ["overall"], bootstrap=-1)


def test_out_writes_csv_markdown_and_figures(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    ctl_main(["eval", str(sweep), "--table", "all", "--bootstrap", "0", "--format", "markdown", "--out", str(out)])
    captured = capsys.readouterr()
    assert "### Table 2" in captured.out and "### Table 5" in captured.out
    assert "no finetune table" in captured.err
    tables = ("overall", "periods", "coldstart", "cost")
    expected = {f"{t}.{ext}" for t in tables for ext in ("csv", "md")} | {"table2.png", "periods.png", "cost_gain.png"}
    assert {p.name for p in out.iterdir()} == expected
    for name in ("table2.png", "periods.png", "cost_gain.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (out / "overall.csv").read_text().splitlines()[0]
    assert header.startswith("table,dataset,dataset_name,model,method")


def test_best_value_of_each_column_is_bold(sweep: Path) -> None:
    records = evaluate([sweep], ["overall"], bootstrap=0).records["overall"]
    view = views.overall_view(records)
    for column, metric in ((2, "auc"), (3, "gauc")):
        bold = [row[0].text for row in view.rows if row[column].bold]
        # the oracle is a ceiling, not a contender
        best = max((r for r in records if r["metric"] == metric and r["model"] != "oracle"), key=lambda r: r["mean"])
        assert bold == [best["model"]]


@pytest.mark.parametrize(
    ("experiment", "job"),
    [
        ("table3", ["model=ctnet", "model.refresh_source=false", "data.domain=C"]),
        ("table4", ["model=ft_all", "model.finetune_periods=all", "data.domain=B"]),
        ("table5", ["model=base", "data.domain=C"]),
        ("paper", ["model=ctnet_once", "data.domain=C"]),
    ],
)
def test_experiments_compose_with_their_sweeps(experiment: str, job: list[str]) -> None:
    conf = Path(__file__).resolve().parents[1] / "src" / "ctl" / "conf"
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *job], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.seed == "0,1,2"
    for model in str(params.model).split(","):
        assert (conf / "model" / f"{model}.yaml").is_file(), f"{experiment} sweeps model={model}, which has no config"
    assert cfg.progress is False


def test_the_paper_experiment_runs_every_method_the_findings_need() -> None:
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        paper = compose("train", overrides=["experiment=paper", "model=ctnet_once"], return_hydra_config=True)
        table2 = compose("train", overrides=["experiment=table2"], return_hydra_config=True)
    models = str(paper.hydra.sweeper.params.model).split(",")
    assert set(str(table2.hydra.sweeper.params.model).split(",")) | {"ctnet_once"} == set(models)
    assert str(paper.hydra.sweeper.params["data.domain"]) == "B,C"
    # model=ctnet_once is CTNet with the refresh off, so its runs are the method ctnet_once
    assert paper.model.name == "ctnet" and paper.model.refresh_source is False
    assert method_label(paper) == "ctnet_once"


def plugin_name(conf_class: str) -> str:
    return {"JobLibLauncherConf": "joblib", "SlurmQueueConf": "submitit_slurm"}[conf_class]


@pytest.mark.parametrize(
    ("launcher", "module", "conf_class"),
    [
        ("parallel", "hydra_plugins.hydra_joblib_launcher.config", "JobLibLauncherConf"),
        ("slurm", "hydra_plugins.hydra_submitit_launcher.config", "SlurmQueueConf"),
    ],
)
def test_launcher_configs_set_every_field_of_their_plugin(launcher: str, module: str, conf_class: str) -> None:
    plugin = pytest.importorskip(module)
    fields = {f.name for f in dataclasses.fields(getattr(plugin, conf_class))}
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert set(cfg.hydra.launcher) == fields
    assert cfg.hydra.launcher._target_ == getattr(plugin, conf_class)._target_
    # our presets extend the plugin's config instead of shadowing it (Hydra warns about shadowing)
    assert (conf_dir := Path(sys.modules["ctl.conf"].__file__).parent / "hydra" / "launcher").is_dir()
    assert not (conf_dir / f"{plugin_name(conf_class)}.yaml").exists()


def _regime_cells(sweep: Path, root: Path) -> dict[str, Path]:
    """The tiny sweep's runs as two cells of a regime map: ``lll`` (the runs as they are) and ``hhh``
    (the same runs under another dataset id, as another world would have)."""
    cells = {}
    for code, levels, dataset in (("lll", "low", None), ("hhh", "high", "fedcba9876543210")):
        for run in sorted(sweep.iterdir()):
            _copy_run(run, root / code / run.name, {"dataset": dataset} if dataset else {},
                      {"regime": {"volume": levels, "gap": levels, "drift": levels}})
        cells[code] = root / code
    return cells


def test_regimes_table_gives_each_cell_its_gains_with_the_seeds_mean_interval(sweep: Path, tmp_path: Path) -> None:
    from scipy import stats

    from ctl.report.cli import DEFAULT_BOOTSTRAP

    cells = _regime_cells(sweep, tmp_path / "map")
    report = evaluate([tmp_path / "map"], ["regimes"], bootstrap=DEFAULT_BOOTSTRAP)
    records = report.records["regimes"]
    assert records[0]["regime"]["cell"] == "lll"  # low before high
    assert {r["regime"]["cell"] for r in records} == {"lll", "hhh"}
    for code, folder in cells.items():
        for metric in ("auc", "gauc"):
            rec = only(records, model="ctnet", metric=metric, regime={"volume": {"lll": "low"}.get(code, "high"),
                       "gap": {"lll": "low"}.get(code, "high"), "drift": {"lll": "low"}.get(code, "high"),
                       "cell": code})
            gains = []
            for seed in SEEDS:
                mine, base = predictions(folder / f"ctnet-s{seed}"), predictions(folder / f"base-s{seed}")
                gains.append(reference_metric(metric, mine["pred"], mine["label"], mine["user_id"])
                             - reference_metric(metric, base["pred"], base["label"], base["user_id"]))
            # two seeds: Student's t over the seeds' sklearn gains (scipy's quantile), training noise counted
            half = stats.t.ppf(0.975, len(gains) - 1) * np.std(gains, ddof=1) / np.sqrt(len(gains))
            sig = rec["significance"]
            assert sig["covers"] == "training seeds and test users" and sig["seeds"] == 2
            assert (sig["delta"], sig["low"], sig["high"]) == pytest.approx(
                (np.mean(gains), np.mean(gains) - half, np.mean(gains) + half), abs=1e-9)
            assert sig["significant"] == (sig["low"] > 0 or sig["high"] < 0)
            assert sig["two_level"]["low"] < sig["delta"] < sig["two_level"]["high"]
            assert rec["delta"] == pytest.approx(np.mean([reference(folder / f"ctnet-s{s}", metric)
                                                          - reference(folder / f"base-s{s}", metric)
                                                          for s in SEEDS]), abs=TOL)
            # the winner has the best mean; ctnet_once is CTNet's family, so the best other method is base
            means = {m: only(records, model=m, metric=metric, regime=rec["regime"])["mean"]
                     for m in ("base", "ctnet", "ctnet_once")}
            winner = only(records, rank=1, metric=metric, regime=rec["regime"])
            assert winner["model"] == max(means, key=means.get)
            assert winner["runner_up"]["model"] == sorted(means, key=means.get)[-2]
            assert rec["best_other"]["model"] == "base"
            assert rec["best_other"]["delta"] == pytest.approx(sig["delta"], abs=1e-12)
    # the real dataset keeps its oracle, the copied id finds none
    lll = only(records, model="ctnet", metric="auc", regime={"volume": "low", "gap": "low", "drift": "low",
                                                           "cell": "lll"})
    assert lll["oracle"] is not None and lll["headroom_share"] == pytest.approx(
        lll["delta"] / (lll["oracle"] - lll["base"]))
    assert only(records, model="ctnet", metric="auc", regime={"volume": "high", "gap": "high", "drift": "high",
                                                             "cell": "hhh"})["oracle"] is None
    assert only(records, model="ctnet", metric="own_rows", regime=lll["regime"])["mean"] > 0


def test_regimes_out_writes_the_heat_maps_and_refuses_runs_of_no_cell(sweep: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(CtlError, match="none of these runs names a regime cell"):
        evaluate([sweep], ["regimes"])
    # `all` skips the map with a note instead
    assert any(n.startswith("no regimes table") for n in evaluate([sweep], ["all"], bootstrap=50).notes)
    _regime_cells(sweep, tmp_path / "map")
    ctl_main(["eval", str(tmp_path / "map"), "--table", "regimes", "--bootstrap", "50", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "Regime map" in printed and "lll" in printed and "hhh" in printed
    assert "| winner: margin over runner-up | ctnet − best other |" in (tmp_path / "out" / "regimes.md").read_text()
    for name in ("regimes_ctnet_vs_base.png", "regimes_ctnet_vs_best_other.png", "regimes.csv", "regimes.md"):
        assert (tmp_path / "out" / name).stat().st_size > 1000, name
    _copy_run(sweep / "ctnet-s0", tmp_path / "map" / "twin", {"dataset": "0000000000000000"},
              {"regime": {"volume": "low", "gap": "low", "drift": "low"}})
    _copy_run(sweep / "base-s0", tmp_path / "map" / "twin-base", {"dataset": "0000000000000000"},
              {"regime": {"volume": "low", "gap": "low", "drift": "low"}})
    with pytest.raises(CtlError, match="two datasets are cell lll"):
        evaluate([tmp_path / "map"], ["regimes"], bootstrap=50)
