"""The forest plot of ``ctl eval --out``: each method's paired difference to the --versus method."""

from __future__ import annotations

import math

import pytest

from ctl.cli import main as ctl_main
from ctl.report.cli import evaluate
from ctl.report.plots import forest_rows, seed_interval
from test_findings import make_runs


def test_the_seed_interval_is_the_t_interval_of_the_mean() -> None:
    mean, low, high = seed_interval([0.01, 0.02, 0.03])
    # sd 0.01, t(0.975, 2) = 4.302653
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert mean == pytest.approx(0.02) and low == pytest.approx(0.02 - half, abs=1e-6)
    assert high == pytest.approx(0.02 + half, abs=1e-6)
    assert seed_interval([0.5]) == (0.5, 0.5, 0.5)


def test_forest_rows_pair_every_method_with_the_versus_method_sorted_by_the_mean(tmp_path) -> None:
    root = make_runs(tmp_path / "runs", ("base", "ple", "ft_all", "ctnet"))
    records = evaluate([root], ["overall"], bootstrap=50, versus="ctnet").records["overall"]
    rows = forest_rows(records, "B", "auc")
    # noise on B: ctnet 0.5 < ple 0.9 < base 1.0 < ft_all 2.0: ft_all lies furthest below ctnet
    assert [r[0] for r in rows] == ["ft_all", "base", "ple"]
    for label, deltas, mean, low, high in rows:
        assert len(deltas) == 3 and mean == pytest.approx(sum(deltas) / 3) and low <= mean <= high
    assert rows[0][4] < 0  # ft_all is below ctnet on every seed: its interval lies below 0


def test_eval_out_draws_the_forest_plot_only_with_paired_differences(tmp_path) -> None:
    root = make_runs(tmp_path / "runs", ("base", "ple", "ctnet"))
    ctl_main(["eval", str(root), "--bootstrap", "20", "--versus", "ctnet", "--out", str(tmp_path / "paired")])
    assert (tmp_path / "paired" / "forest.png").stat().st_size > 0
    ctl_main(["eval", str(root), "--bootstrap", "0", "--out", str(tmp_path / "unpaired")])
    assert not (tmp_path / "unpaired" / "forest.png").exists()
