"""``ctl eval --table findings``: the rule of every verdict by hand, then on hand-made run folders
whose predictions make each finding hold, fail or go unmeasured, in every output format."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_module
from scipy import stats

from ctl.cli import main as ctl_main
from ctl.errors import CtlError
from ctl.metrics import auc, gauc
from ctl.report.cli import evaluate
from ctl.report.findings import (
    DOES_NOT_HOLD,
    HOLDS,
    MIXED,
    NOT_MEASURED,
    NOT_SHOWN,
    Z95,
    SeedDelta,
    combine,
    part_interval,
    rule_verdict,
    slope,
)
from ctl.report.records import RECORD_KEYS
from references import reference_metric

DATASET = "0123456789abcdef"
SEEDS = (0, 1, 2)
ROWS, USERS = 3000, 300


# --- the rules by hand -------------------------------------------------------------------------


def test_a_part_over_seeds_rests_on_students_t_over_the_seeds_deltas() -> None:
    # mean 0.011, sd 0.001, t_{0.975, 2} = 4.302652729911275: 0.011 ± 0.0024841
    deltas = [SeedDelta(0, 0.010, -0.01, 0.03), SeedDelta(1, 0.012, -0.01, 0.03), SeedDelta(2, 0.011, -0.01, 0.03)]
    claim = part_interval(deltas)
    half = 4.302652729911275 * 0.001 / 3 ** 0.5
    assert (claim["delta"], claim["low"], claim["high"]) == pytest.approx((0.011, 0.011 - half, 0.011 + half))
    assert claim["covers"] == "training seeds and test users"
    # every seed's test-slice interval holds 0, the seeds agree: the claim holds
    assert rule_verdict(claim) == HOLDS
    mirrored = [SeedDelta(d.seed, -d.delta, -d.high, -d.low) for d in deltas]
    assert rule_verdict(part_interval(mirrored)) == DOES_NOT_HOLD


def test_a_part_whose_seeds_disagree_is_not_shown_though_every_seed_is_significant_on_its_test_slice() -> None:
    # mean 0.011, sd 0.01646: 0.011 ± 0.0409 holds 0; each seed's test-slice interval lies above 0
    deltas = [SeedDelta(0, 0.03, 0.02, 0.04), SeedDelta(1, 0.001, 0.0005, 0.0015), SeedDelta(2, 0.002, 0.001, 0.003)]
    claim = part_interval(deltas)
    assert claim["low"] == pytest.approx(0.011 - 4.302652729911275 * 0.016462077633154 / 3 ** 0.5)
    assert rule_verdict(claim) == NOT_SHOWN


def test_one_seed_rests_on_its_test_slice_interval_and_says_so() -> None:
    claim = part_interval([SeedDelta(0, 0.01, 0.002, 0.02)])
    assert claim == {"delta": 0.01, "low": 0.002, "high": 0.02, "significant": True,
                     "test": "paired user bootstrap", "covers": "test slice only"}
    assert rule_verdict(claim) == HOLDS
    assert rule_verdict(part_interval([SeedDelta(0, 0.0, -0.01, 0.01)])) == NOT_SHOWN
    # a seed-aware interval computed from the predictions is taken as given
    given = {"delta": -0.01, "low": -0.02, "high": -0.001, "covers": "training seeds and test users"}
    assert rule_verdict(part_interval([SeedDelta(0, 0.01, 0.002, 0.02)], given)) == DOES_NOT_HOLD


def test_a_part_without_seeds_is_not_measured_and_parts_combine() -> None:
    assert rule_verdict(part_interval([])) == NOT_MEASURED
    assert combine([HOLDS, NOT_MEASURED, HOLDS]) == HOLDS
    assert combine([DOES_NOT_HOLD, NOT_MEASURED]) == DOES_NOT_HOLD
    assert combine([NOT_SHOWN, NOT_MEASURED, NOT_SHOWN]) == NOT_SHOWN
    assert combine([HOLDS, DOES_NOT_HOLD]) == MIXED
    assert combine([HOLDS, NOT_SHOWN]) == MIXED
    assert combine([DOES_NOT_HOLD, NOT_SHOWN]) == MIXED
    assert combine([HOLDS, MIXED]) == MIXED
    assert combine([NOT_MEASURED, NOT_MEASURED]) == NOT_MEASURED


def test_the_growing_gap_is_a_least_squares_slope() -> None:
    assert slope([4, 5, 6], [0.0, 0.01, 0.02]) == pytest.approx(0.01)
    # sum (x - 5)(y - 0.002) / sum (x - 5)^2 = (-1 * 0 + 0 * 0.002 + 1 * -0.002) / 2
    assert slope([4, 5, 6], [0.002, 0.004, 0.0]) == pytest.approx(-0.001)
    assert slope([4], [0.01]) is None and slope([4, 4], [0.0, 1.0]) is None


# --- hand-made run folders -----------------------------------------------------------------------

#: std of the noise each method adds to the true score on each target: a smaller noise ranks better
NOISE = {
    "B": {"base": 1.0, "ctnet": 0.5, "ctnet_linear": 0.3, "ft_all": 2.0, "ple": 0.9, "ctnet_once": 0.8, "plugin": 0.2},
    "C": {"base": 2.0, "ctnet": 0.5, "ctnet_linear": 0.3, "ft_all": 3.0, "ple": 1.8, "ctnet_once": 0.8, "plugin": 0.2},
}
#: per transfer period (4, 5, 6): validation AUC of ctnet_once and the gap ctnet opens over it
ONCE_PERIODS = {4: 0.70, 5: 0.69, 6: 0.68}
GROWING, SHRINKING = {4: 0.0, 5: 0.01, 6: 0.02}, {4: 0.02, 5: 0.01, 6: 0.0}


def target_slice(target: str) -> dict[str, np.ndarray]:
    """A test slice of ``target``: rows, users, labels drawn from a true score."""
    rng = np.random.default_rng({"B": 11, "C": 12}[target])
    score = rng.normal(size=ROWS)
    label = (rng.random(ROWS) < 1 / (1 + np.exp(-(score * 2 - 1)))).astype(np.int8)
    first = {"B": 0, "C": ROWS}[target]
    return {"row": np.arange(first, first + ROWS), "user_id": rng.integers(1, USERS, ROWS),
            "item_id": rng.integers(1, 500, ROWS), "label": label, "score": score}


def write_run(root: Path, method: str, target: str, seed: int, gaps: dict[int, float]) -> Path:
    """A run folder as ``ctl train`` writes it: metrics.json, config.yaml and predictions.parquet."""
    rows = target_slice(target)
    rng = np.random.default_rng([seed, list(NOISE[target]).index(method), ord(target)])
    pred = 1 / (1 + np.exp(-(rows["score"] + rng.normal(0, NOISE[target][method], ROWS))))
    folder = root / f"{method}-{target}-s{seed}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"row": rows["row"], "user_id": rows["user_id"], "item_id": rows["item_id"],
                             "label": rows["label"], "pred": pred.astype(np.float32)}), folder / "predictions.parquet")
    pred32 = pred.astype(np.float32)
    periods = []
    if method.startswith("ctnet"):
        gap = gaps if method == "ctnet" else dict.fromkeys(gaps, 0.0)
        periods = [{"period": p, "eval_period": p + 1, "train_rows": 100, "rows": 500, "auc": ONCE_PERIODS[p] + gap[p],
                    "gauc": ONCE_PERIODS[p] - 0.05 + gap[p], "logloss": 0.4} for p in sorted(ONCE_PERIODS)]
    metrics = {
        "kind": "run", "model": "ctnet" if method == "ctnet_once" else method, "method": method, "source": "A",
        "target": target, "seed": seed, "dataset": DATASET, "periods": periods,
        "test": {"period": 7, "rows": ROWS, "auc": auc(pred32, rows["label"]),
                 "gauc": gauc(pred32, rows["label"], rows["user_id"]), "logloss": 0.4},
        "cost": {"train_rows": 100, "wall_s": 1.0, "cpu_s": 1.0},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(f"model:\n  name: {metrics['model']}\nseed: {seed}\n")
    return folder


def make_runs(root: Path, methods: tuple[str, ...], gaps: dict[int, float] = GROWING) -> Path:
    for target in ("B", "C"):
        for method in methods:
            for seed in SEEDS:
                write_run(root, method, target, seed, gaps)
    return root


ALL_BUT_ONCE = ("base", "ft_all", "ple", "ctnet_linear", "ctnet")


@pytest.fixture(scope="module")
def without_once(tmp_path_factory) -> Path:
    return make_runs(tmp_path_factory.mktemp("runs"), ALL_BUT_ONCE)


def verdicts(records: list[dict]) -> dict[str, str]:
    return {r["finding"].split()[0]: r["verdict"] for r in records}


def test_each_finding_gets_its_verdict_from_the_hand_made_predictions(without_once) -> None:
    records = evaluate([without_once], ["findings"], bootstrap=200).records["findings"]
    assert [list(r) for r in records] == [list(RECORD_KEYS)] * 7
    assert verdicts(records) == {
        "F1": HOLDS,          # ctnet (noise 0.5) above ple (0.9 on B, 1.8 on C), the best other method
        "F1p": HOLDS,         # the same: no method since the paper among the runs
        "F2": HOLDS,          # base (1.0 / 2.0) above ft_all (2.0 / 3.0)
        "F3": NOT_MEASURED,   # no ctnet_once runs
        "F4": DOES_NOT_HOLD,  # ctnet_linear (0.3) ranks better than ctnet (0.5)
        "F5": HOLDS,          # base is worse on C (2.0 vs 1.0), so ctnet's gain is larger there
        "F6": NOT_MEASURED,   # the runs name no dataset: no cold-start slices
    }
    f1 = records[0]
    assert {p["best_other"] for p in f1["evidence"]} == {"ple"} and f1["target"] == "B,C" and f1["seeds"] == [0, 1, 2]
    f3 = records[3]
    assert all(p["note"] == f"no ctnet_once runs on {p['target']}" for p in f3["evidence"])


def _gain(method: str, reference: str, target: str, seed: int, root: Path, metric: str) -> float:
    """``method − reference`` on ``metric`` from sklearn, on the runs' test predictions."""
    def value(name: str) -> float:
        table = pq.read_table(root / f"{name}-{target}-s{seed}" / "predictions.parquet").to_pydict()
        rows = {k: np.asarray(v) for k, v in table.items()}
        return reference_metric(metric, rows["pred"], rows["label"], rows["user_id"])

    return value(method) - value(reference)


def test_the_evidence_is_each_seeds_measured_gain_with_its_interval(without_once) -> None:
    report = evaluate([without_once], ["overall", "findings"], bootstrap=200).records
    records = report["findings"]
    f2 = next(p for p in records[2]["evidence"] if p["target"] == "C" and p["metric"] == "gauc")
    for entry in f2["per_seed"]:
        assert entry["delta"] == pytest.approx(_gain("base", "ft_all", "C", entry["seed"], without_once, "gauc"),
                                               abs=1e-12)
        assert entry["low"] < entry["delta"] < entry["high"]
    assert f2["mean"] == pytest.approx(np.mean([e["delta"] for e in f2["per_seed"]]))
    assert f2["above"] == sum(e["low"] > 0 for e in f2["per_seed"]) >= 2
    # the verdict's interval: Student's t over the seeds' deltas (scipy's quantile), training noise counted
    def t_interval(deltas: list[float]) -> tuple[float, float]:
        half = stats.t.ppf(0.975, len(deltas) - 1) * np.std(deltas, ddof=1) / np.sqrt(len(deltas))
        return float(np.mean(deltas) - half), float(np.mean(deltas) + half)

    assert f2["interval"]["covers"] == "training seeds and test users" and f2["interval"]["test"] == "t over seeds"
    assert (f2["interval"]["low"], f2["interval"]["high"]) == pytest.approx(
        t_interval([e["delta"] for e in f2["per_seed"]]), abs=1e-12)
    # F5: the difference of the two targets' gains, its half-width from both targets' intervals (as the
    # overall table reports them, ctnet against base per seed); its verdict's interval: t over the seeds
    f5 = next(p for p in records[5]["evidence"] if p["metric"] == "auc")
    assert (f5["interval"]["low"], f5["interval"]["high"]) == pytest.approx(
        t_interval([e["delta"] for e in f5["per_seed"]]), abs=1e-12)

    def interval(target: str, seed: int) -> dict:
        sig = next(r for r in report["overall"] if r["model"] == "ctnet" and r["metric"] == "auc"
                   and r["target"] == target)["significance"]
        return next(e for e in sig["per_seed"] if e["seed"] == seed)

    for entry in f5["per_seed"]:
        seed = entry["seed"]
        gains = {t: _gain("ctnet", "base", t, seed, without_once, "auc") for t in ("C", "B")}
        c, b = interval("C", seed), interval("B", seed)
        half = Z95 * np.hypot((c["high"] - c["low"]) / (2 * Z95), (b["high"] - b["low"]) / (2 * Z95))
        assert entry["delta"] == pytest.approx(gains["C"] - gains["B"], abs=1e-12)
        assert (entry["low"], entry["high"]) == pytest.approx((entry["delta"] - half, entry["delta"] + half))
        assert half > 0


@pytest.mark.parametrize(("gaps", "expected"), [(GROWING, HOLDS), (SHRINKING, MIXED)])
def test_continual_above_once_holds_only_with_a_growing_gap(tmp_path, gaps, expected) -> None:
    root = make_runs(tmp_path, ("base", "ctnet", "ctnet_once"), gaps)
    records = evaluate([root], ["findings"], bootstrap=200).records["findings"]
    f3 = records[3]
    assert f3["verdict"] == expected
    for part in f3["evidence"]:
        assert part["test_verdict"] == HOLDS  # ctnet (noise 0.5) above ctnet_once (0.8) on the test slice
        assert part["slope"] == pytest.approx(0.01 if gaps is GROWING else -0.01)
        assert [g["gap"] for g in part["period_gaps"]] == pytest.approx([gaps[p] for p in (4, 5, 6)])
    # base and the three CTNets only: no baseline besides base for F1
    assert records[0]["verdict"] == NOT_MEASURED
    assert all(p["note"] == f"no baseline besides base on {p['target']}" for p in records[0]["evidence"])


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
def test_every_format_prints_the_six_findings(without_once, fmt, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # rich folds cells to the terminal's width
    ctl_main(["eval", str(without_once), "--table", "findings", "--bootstrap", "50", "--format", fmt])
    out = capsys.readouterr().out
    names = ["F1 ", "F1p", *(f"F{i} " for i in range(2, 7))]
    if fmt == "json":
        rows = json.loads(out)
        assert [r["finding"][:3] for r in rows] == names
        assert [r["verdict"] for r in rows] == [HOLDS, HOLDS, HOLDS, NOT_MEASURED, DOES_NOT_HOLD, HOLDS, NOT_MEASURED]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["finding"][:3] for r in rows] == names
        assert "ctnet − ple" in rows[0]["evidence"] and rows[0]["rule"].startswith("per target and metric")
    else:
        lines = [line for line in out.splitlines() if any(line.lstrip("│| ").startswith(n) for n in names)]
        assert len(lines) == 7, out
        assert "does not hold" in out and "not measured" in out and "ctnet − ctnet_linear" in out


@pytest.fixture(scope="module")
def level_with_base(tmp_path_factory) -> Path:
    """Runs where ft_all is exactly as good as base (the same noise, drawn apart): F2 shows nothing."""
    saved = {t: dict(n) for t, n in NOISE.items()}
    for noise in NOISE.values():
        noise["ft_all"] = noise["base"]
    try:
        return make_runs(tmp_path_factory.mktemp("level"), ("base", "ft_all"))
    finally:
        NOISE.update(saved)


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
def test_a_finding_without_evidence_either_way_is_not_shown_in_every_format(level_with_base, fmt, capsys,
                                                                           monkeypatch) -> None:
    records = evaluate([level_with_base], ["findings"], bootstrap=200).records["findings"]
    f2 = records[2]
    assert f2["verdict"] == NOT_SHOWN
    assert {p["verdict"] for p in f2["evidence"]} == {NOT_SHOWN}
    assert all(max(p["above"], p["below"]) <= 1 for p in f2["evidence"])  # no majority of seeds either way
    monkeypatch.setenv("COLUMNS", "400")
    ctl_main(["eval", str(level_with_base), "--table", "findings", "--bootstrap", "200", "--format", fmt])
    out = capsys.readouterr().out
    if fmt == "json":
        assert json.loads(out)[2]["verdict"] == "not shown"
    elif fmt == "csv":
        assert list(csv.DictReader(io.StringIO(out)))[2]["verdict"] == "not shown"
    else:
        line = next(line for line in out.splitlines() if line.lstrip("│| ").startswith("F2 "))
        assert "not shown" in line and "does not hold" not in line and "mixed" not in line
        assert "does not hold: below 0; not shown: it holds 0" in " ".join(out.split())


def test_f1_counts_the_methods_since_the_paper_and_f1p_leaves_them_out(tmp_path) -> None:
    root = make_runs(tmp_path, ("base", "ple", "ctnet", "plugin"))
    records = {r["finding"].split()[0]: r for r in evaluate([root], ["findings"], bootstrap=200).records["findings"]}
    # plugin (noise 0.2) ranks above ctnet (0.5); ple (0.9 / 1.8) is the best of the paper's baselines
    assert {p["best_other"] for p in records["F1"]["evidence"]} == {"plugin"}
    assert records["F1"]["verdict"] == DOES_NOT_HOLD
    assert {p["best_other"] for p in records["F1p"]["evidence"]} == {"ple"}
    assert records["F1p"]["verdict"] == HOLDS
    assert "star, pepnet, lowrank, plugin, distill" in records["F1p"]["rule"]


def test_findings_need_intervals(without_once) -> None:
    with pytest.raises(CtlError, match=r"findings table needs --bootstrap N > 0"):
        evaluate([without_once], ["findings"], bootstrap=0)


def test_findings_on_the_tiny_world_measure_the_cold_start_slices(tmp_path) -> None:
    from ctl.training.protocol import run_train

    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        for model in ("ctnet", "ctnet_once"):
            cfg = compose("train", overrides=["data=synthetic_tiny", f"home={tmp_path / 'home'}", "progress=false",
                                              "print_table=false", f"model={model}"])
            run_train(cfg, tmp_path / "runs" / model)
    records = evaluate([tmp_path / "runs"], ["findings"], bootstrap=100).records["findings"]
    assert len(records) == 7
    found = verdicts(records)
    assert found["F1"] == found["F2"] == found["F4"] == found["F5"] == NOT_MEASURED
    # F3 measured: on B's test slice, per metric, the one seed's ctnet − ctnet_once as sklearn gives it
    assert found["F3"] in (HOLDS, DOES_NOT_HOLD, NOT_SHOWN, MIXED)
    runs = {}
    for model in ("ctnet", "ctnet_once"):
        table = pq.read_table(tmp_path / "runs" / model / "predictions.parquet").to_pydict()
        runs[model] = {k: np.asarray(v) for k, v in table.items()}
    f3 = records[3]["evidence"]
    assert sorted(p["metric"] for p in f3) == ["auc", "gauc"]
    for part in f3:
        mine, once = runs["ctnet"], runs["ctnet_once"]
        gain = (reference_metric(part["metric"], mine["pred"], mine["label"], mine["user_id"])
                - reference_metric(part["metric"], once["pred"], once["label"], once["user_id"]))
        assert part["target"] == "B" and part["seeds"] == 1
        assert part["per_seed"][0]["delta"] == pytest.approx(gain, abs=1e-12)
    f6 = records[6]["evidence"]
    assert {(p["target"], p["slice"], p["metric"]) for p in f6} == {
        ("B", s, m) for s in ("new users", "new items") for m in ("auc", "gauc")}
    assert any(p["seeds"] == 1 for p in f6)  # measured on the slices the world has both labels on
