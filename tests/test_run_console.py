"""The lines under a CTNet run's table: the test slice paired with base (bootstrap intervals and
DeLong's p), the oracle's headroom, and the warning when validation falls below base beyond the
noise. Checked on the tiny world against the metrics recomputed from the saved predictions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_module
from rich.console import Console

from ctl.data.dataset import load_click_prob
from ctl.metrics import auc, delong_test, gauc, paired_bootstrap, pooled_paired_bootstrap
from ctl.report.console import comparison_lines, print_run
from ctl.training.protocol import run_train

CTL = str(Path(sys.executable).with_name("ctl"))


@pytest.fixture(scope="module")
def ctnet_run(tmp_path_factory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("home")
    run_dir = tmp_path_factory.mktemp("ctnet")
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=synthetic_tiny", f"home={home}", "progress=false",
                                          "print_table=false", "model=ctnet"])
    return run_dir, run_train(cfg, run_dir)


def read(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path).to_pydict()
    order = np.lexsort((table["row"], table.get("period", np.zeros(len(table["row"])))))
    return {k: np.asarray(v)[order] for k, v in table.items()}


def of_period(columns: dict[str, np.ndarray], period: int) -> dict[str, np.ndarray]:
    keep = columns["period"] == period
    return {k: v[keep] for k, v in columns.items()}


def test_the_run_keeps_validation_predictions_beside_its_base_tracks(ctnet_run) -> None:
    run_dir, metrics = ctnet_run
    own, base = read(run_dir / "val_predictions.parquet"), read(run_dir / "baseline_val_predictions.parquet")
    track = Path(metrics["tracks"]["target"])
    assert (run_dir / "baseline_predictions.parquet").read_bytes() == (track / "predictions.parquet").read_bytes()
    assert (run_dir / "baseline_val_predictions.parquet").read_bytes() == (track / "val_predictions.parquet").read_bytes()
    for mine, theirs in ((metrics["periods"], own), (metrics["baseline"]["periods"], base)):
        assert sorted(set(theirs["period"].tolist())) == [r["period"] for r in mine] == [4, 5]
        for row in mine:
            rows = of_period(theirs, row["period"])
            assert len(rows["row"]) == row["rows"]
            # metrics.json holds torchmetrics' float32 AUC
            assert auc(rows["pred"], rows["label"]) == pytest.approx(row["auc"], abs=1e-6)
            assert gauc(rows["pred"], rows["label"], rows["user_id"]) == pytest.approx(row["gauc"], abs=1e-6)
    # the base track keeps the transfer periods only (t0 = 4 on), not its whole history
    assert set(read(track / "val_predictions.parquet")["period"].tolist()) == {4, 5}


def _signed(text: str) -> float:
    return float(text.replace("−", "-"))


def test_the_test_line_is_the_paired_bootstrap_and_delong_of_ctnet_against_base(ctnet_run) -> None:
    run_dir, metrics = ctnet_run
    lines = [line.plain for line in comparison_lines(metrics, run_dir)]
    own, base = read(run_dir / "predictions.parquet"), read(run_dir / "baseline_predictions.parquet")
    assert np.array_equal(own["row"], base["row"])
    boot = paired_bootstrap(own["label"], own["pred"], base["pred"], own["user_id"], 1000, seed=0)
    p_value = delong_test(own["label"], own["pred"], base["pred"])["p_value"]
    number = r"([+-]\d\.\d{4})"
    found = re.fullmatch(rf"test: ctnet − base  ΔAUC {number} \[{number}, {number}\] \(DeLong p (\S+)\)  "
                         rf"ΔGAUC {number} \[{number}, {number}\]  → (.+)", lines[0])
    assert found, lines[0]
    values = [float(found.group(i)) for i in (1, 2, 3, 5, 6, 7)]
    expected = [boot[m][k] for m in ("auc", "gauc") for k in ("delta", "low", "high")]
    assert values == pytest.approx(expected, abs=5e-5)
    assert float(found.group(4)) == pytest.approx(p_value, rel=0.05)
    above = [m.upper() for m in ("auc", "gauc") if boot[m]["low"] > 0]
    below = [m.upper() for m in ("auc", "gauc") if boot[m]["high"] < 0]
    verdict = found.group(8)
    assert verdict.startswith("not significant") == (not above and not below)
    for name in above:
        assert "above" in verdict and name in verdict


def test_the_oracle_line_gives_the_true_probabilities_and_the_headroom_covered(ctnet_run) -> None:
    run_dir, metrics = ctnet_run
    oracle_line = next(line.plain for line in comparison_lines(metrics, run_dir) if line.plain.startswith("oracle"))
    own, base = read(run_dir / "predictions.parquet"), read(run_dir / "baseline_predictions.parquet")
    known, prob = load_click_prob(metrics["dataset_path"])
    truth = prob[np.searchsorted(known, own["row"])]
    oracle_auc, base_auc, own_auc = (auc(p, own["label"]) for p in (truth, base["pred"], own["pred"]))
    share = (own_auc - base_auc) / (oracle_auc - base_auc)
    assert f"AUC {oracle_auc:.4f}" in oracle_line and f"covers {share:.0%} (AUC)" in oracle_line


def _pooled_below(run_dir: Path, metrics: dict) -> list[str]:
    """The metrics whose mean delta over the validated slices has its interval entirely below 0,
    recomputed from the files."""
    own, base = read(run_dir / "val_predictions.parquet"), read(run_dir / "baseline_val_predictions.parquet")
    slices = []
    for row in metrics["periods"]:
        mine, theirs = of_period(own, row["period"]), of_period(base, row["period"])
        assert np.array_equal(mine["row"], theirs["row"])
        slices.append((mine["label"], mine["pred"], theirs["pred"], mine["user_id"]))
    pooled = pooled_paired_bootstrap(slices, 1000, seed=0)
    return [f"Δ{name} {pooled[m]['delta']:+.4f} [" for name, m in (("AUC", "auc"), ("GAUC", "gauc"))
            if pooled[m]["high"] < 0]


def test_a_run_below_its_base_on_validation_says_so(ctnet_run, tmp_path) -> None:
    run_dir, metrics = ctnet_run
    # as the run stands: a warning exactly where the pooled interval lies below 0
    warnings = [line.plain for line in comparison_lines(metrics, run_dir) if line.plain.startswith("warning")]
    assert bool(warnings) == bool(_pooled_below(run_dir, metrics))
    # a CTNet that ranks every click of its validation slices below every non-click is far below base
    worse = tmp_path / "worse"
    shutil.copytree(run_dir, worse, symlinks=True)
    table = pq.read_table(worse / "val_predictions.parquet").to_pydict()
    noise = np.random.default_rng(0).uniform(0.0, 0.4, size=len(table["label"]))
    table["pred"] = (0.5 * (1 - np.asarray(table["label"])) + noise).tolist()
    pq.write_table(pa.table(table), worse / "val_predictions.parquet")
    expected = _pooled_below(worse, metrics)
    assert expected, "inverted predictions should fall below base beyond the noise"
    (warning,) = [line for line in comparison_lines(metrics, worse) if line.plain.startswith("warning")]
    assert warning.plain.startswith("warning: on validation ctnet is below base beyond the noise — mean over its "
                                    "validated 2 slices 5–6: ")
    assert "red" in str(warning.style)
    for entry in expected:
        assert entry in warning.plain
    assert "does worse than the model it would replace" in warning.plain


# --- the validation rule on hand-made slices ---------------------------------------------------------

SLICE_USERS, ROWS_PER_USER = 150, 8
#: a seed whose five slices, CTNet level with base, put one slice (period 2's) below 0 on its own
ONE_DIP_SEED = 21


def hand_made_slice(seed: int, period: int, ctnet_noise: float) -> dict[str, np.ndarray]:
    """One validation slice: labels from a true score, base and CTNet the score plus their own noise
    (base's std 1; CTNet's ``ctnet_noise``: 1 is level with base, more is worse)."""
    rng = np.random.default_rng([seed, period])
    users = rng.integers(0, SLICE_USERS, SLICE_USERS * ROWS_PER_USER)
    score = rng.normal(size=len(users))
    label = (rng.random(len(users)) < 1 / (1 + np.exp(-(2 * score - 1)))).astype(np.int8)
    return {"row": np.arange(len(users)) + 10_000 * period, "user_id": users, "item_id": np.ones(len(users), np.int64),
            "label": label, "base": score + rng.normal(0, 1.0, len(users)),
            "ctnet": score + rng.normal(0, ctnet_noise, len(users))}


def hand_made_run(root: Path, seed: int, ctnet_noise: float, periods=range(5)) -> tuple[Path, dict]:
    """A CTNet run folder with five validated transfer periods and its base's validation predictions."""
    root.mkdir()
    slices = {p: hand_made_slice(seed, p, ctnet_noise) for p in periods}
    for name, column in (("val_predictions.parquet", "ctnet"), ("baseline_val_predictions.parquet", "base")):
        pq.write_table(pa.concat_tables([pa.table({
            "period": np.full(len(s["row"]), p), "row": s["row"], "user_id": s["user_id"], "item_id": s["item_id"],
            "label": s["label"], "pred": s[column].astype(np.float32)}) for p, s in slices.items()]), root / name)
    metrics = {"method": "ctnet", "baseline": {"periods": []}, "tracks": {},
               "periods": [{"period": p, "eval_period": p + 1} for p in periods]}
    return root, metrics


def _slices_below(run_dir: Path, metrics: dict) -> list[int]:
    """The periods whose own slice has an AUC or GAUC interval entirely below 0 (the per-slice view)."""
    own, base = read(run_dir / "val_predictions.parquet"), read(run_dir / "baseline_val_predictions.parquet")
    below = []
    for row in metrics["periods"]:
        mine, theirs = of_period(own, row["period"]), of_period(base, row["period"])
        boot = paired_bootstrap(mine["label"], mine["pred"], theirs["pred"], mine["user_id"], 1000, seed=0)
        if boot["auc"]["high"] < 0 or boot["gauc"]["high"] < 0:
            below.append(row["period"])
    return below


def test_one_slice_in_five_below_base_by_chance_is_no_warning(tmp_path) -> None:
    run_dir, metrics = hand_made_run(tmp_path / "level", ONE_DIP_SEED, ctnet_noise=1.0)
    assert _slices_below(run_dir, metrics) == [2]  # what the per-slice rule warned about
    assert _pooled_below(run_dir, metrics) == []
    assert comparison_lines(metrics, run_dir) == []


def test_a_crippled_ctnet_is_warned_about(tmp_path) -> None:
    run_dir, metrics = hand_made_run(tmp_path / "crippled", ONE_DIP_SEED, ctnet_noise=2.5)
    expected = _pooled_below(run_dir, metrics)
    assert expected
    (warning,) = comparison_lines(metrics, run_dir)
    assert warning.plain.startswith("warning: on validation ctnet is below base beyond the noise — mean over its "
                                    "validated 5 slices 1–5: ")
    for entry in expected:
        assert entry in warning.plain


def test_print_run_prints_the_lines_under_the_table(ctnet_run) -> None:
    run_dir, metrics = ctnet_run
    console = Console(record=True, width=250)
    print_run(metrics, console, run_dir=run_dir)
    text = console.export_text()
    assert text.index("test (6)") < text.index("test: ctnet − base  ΔAUC ") < text.index("oracle (true click")
    # without the run folder nothing is paired
    console = Console(record=True, width=250)
    print_run(metrics, console)
    assert "test: ctnet − base" not in console.export_text()


def test_ctl_train_ends_with_the_significance_line(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CTL_COMMAND"}
    env.update(CTL_HOME=str(tmp_path / "home"), COLUMNS="250")
    proc = subprocess.run([CTL, "train", "model=ctnet", "data=synthetic_tiny", "progress=false",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^test: ctnet − base  ΔAUC [+-]\d\.\d{4} \[", proc.stdout, re.MULTILINE), proc.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["method"] == "ctnet"


def test_the_test_line_says_what_its_interval_covers_and_the_measured_training_noise(ctnet_run, monkeypatch) -> None:
    from ctl.report import aa_noise

    run_dir, metrics = ctnet_run
    lines = [line.plain for line in comparison_lines(metrics, run_dir)]
    assert lines[1].startswith("this interval covers the test slice only (this training of ctnet against this "
                               "training of base)")
    assert "was not measured" in lines[1]  # the tiny world has no committed A/A
    monkeypatch.setitem(aa_noise.MEASURED, metrics["dataset"],
                        {metrics["target"]: {"auc": 0.0031, "gauc": 0.0042, "trainings": 12}})
    text = aa_noise.noise_text("ctnet", metrics["dataset"], metrics["target"])
    assert text.endswith(f"retrained, ctnet − base moves by sd 0.0031 AUC / 0.0042 GAUC on {metrics['target']} "
                         "(A/A calibration of this world, 12 trainings: docs/eval.md)")
    assert "was not measured" in aa_noise.noise_text("ple", metrics["dataset"], metrics["target"])
