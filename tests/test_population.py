"""A/A calibration and the population of worlds, end to end on the tiny world: ``transfer_seed`` and
``world`` in ``ctl train``, then ``ctl eval --table aa`` and ``--table population`` checked against the
saved predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from ctl.cli import main as ctl_main
from ctl.data.synthetic.population import TARGET_RANGES, draw_world, knobs_of
from ctl.errors import CtlError
from ctl.metrics import delong_test, paired_bootstrap, seed_t_interval
from ctl.report import views
from ctl.report.cli import evaluate

BOOT = 200


def train(root: Path, home: Path, name: str, *overrides: str) -> Path:
    from ctl.training.protocol import run_train

    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=synthetic_tiny", f"home={home}", "progress=false", "print_table=false",
                                          *overrides])
    run_train(cfg, root / name)
    return root / name


def predictions(run_dir: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(run_dir / "predictions.parquet").to_pydict()
    order = np.argsort(table["row"])
    return {k: np.asarray(v)[order] for k, v in table.items()}


@pytest.fixture(scope="module")
def aa_sweep(tmp_path_factory) -> Path:
    """CTNet on A -> B of the tiny world: seeds 0 and 1, transfer seeds 0 and 1."""
    home, root = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("aa")
    for seed in (0, 1):
        for transfer in (0, 1):
            train(root, home, f"ctnet-s{seed}-t{transfer}", "model=ctnet", f"seed={seed}", f"transfer_seed={transfer}")
    return root


def test_runs_of_one_seed_share_their_production_tracks_and_differ_in_the_transfer_periods(aa_sweep: Path) -> None:
    metrics = {p.name: json.loads((p / "metrics.json").read_text()) for p in aa_sweep.iterdir()}
    assert metrics["ctnet-s0-t0"]["tracks"] == metrics["ctnet-s0-t1"]["tracks"]
    assert metrics["ctnet-s0-t0"]["tracks"] != metrics["ctnet-s1-t0"]["tracks"]
    assert not np.array_equal(predictions(aa_sweep / "ctnet-s0-t0")["pred"], predictions(aa_sweep / "ctnet-s0-t1")["pred"])


def test_the_aa_table_counts_each_tests_false_positives_on_pairs_that_differ_only_in_randomness(aa_sweep, capsys):
    records = evaluate([aa_sweep], ["aa"], bootstrap=BOOT).records["aa"]

    def rec(model: str, metric: str, test: str, pairs: str) -> dict:
        (found,) = [r for r in records if (r["model"], r["metric"], r["aa"]["test"], r["aa"]["pairs"])
                    == (model, metric, test, pairs)]
        return found

    # per-seed tests: 2 transfer-only pairs (one per seed), 2 seed pairs (one per transfer seed); base: 1 seed pair
    runs = {(s, t): predictions(aa_sweep / f"ctnet-s{s}-t{t}") for s in (0, 1) for t in (0, 1)}
    transfer_pairs = [(runs[(s, 0)], runs[(s, 1)]) for s in (0, 1)]
    for metric in ("auc", "gauc"):
        boot = rec("ctnet", metric, "paired user bootstrap", "transfer only")
        called = []
        for a, b in transfer_pairs:
            r = paired_bootstrap(a["label"], a["pred"], b["pred"], a["user_id"], BOOT, seed=0)[metric]
            called.append(r["low"] > 0 or r["high"] < 0)
        assert boot["aa"]["tests"] == 2 and boot["aa"]["false_positives"] == sum(called)
        assert boot["mean"] == sum(called) / 2
        assert rec("ctnet", metric, "paired user bootstrap", "seed")["aa"]["tests"] == 2
        assert rec("base", metric, "paired user bootstrap", "seed")["aa"]["tests"] == 1
        # seed-aware: transfer seed 0 against 1 over both seeds, paired by seed
        t_rec = rec("ctnet", metric, "t over seeds", "2 seeds")
        assert t_rec["aa"]["tests"] == 1
        (delta,) = t_rec["values"]
        per_seed = [paired_bootstrap(a["label"], a["pred"], b["pred"], a["user_id"], 1)[metric]["delta"]
                    for a, b in transfer_pairs]
        t = seed_t_interval(per_seed)
        assert delta == pytest.approx(t["delta"], abs=1e-12)
        assert t_rec["aa"]["false_positives"] == int(t["low"] > 0 or t["high"] < 0)
        assert rec("ctnet", metric, "two-level bootstrap", "2 seeds")["aa"]["tests"] == 1
    delong = rec("ctnet", "auc", "DeLong", "transfer only")
    assert delong["aa"]["false_positives"] == sum(
        delong_test(a["label"], a["pred"], b["pred"])["p_value"] < 0.05 for a, b in transfer_pairs)
    ctl_main(["eval", str(aa_sweep), "--table", "aa", "--bootstrap", "50", "--format", "markdown"])
    out = capsys.readouterr().out
    assert "A/A calibration" in out and "transfer only" in out and "t over seeds (seed-aware)" in out


def test_the_aa_table_refuses_runs_without_replicates(aa_sweep: Path, tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    import shutil

    shutil.copytree(aa_sweep / "ctnet-s0-t0", tmp_path / "one" / "ctnet-s0-t0", symlinks=True)
    for baseline in (tmp_path / "one" / "ctnet-s0-t0").glob("baseline_*"):
        baseline.unlink()
    with pytest.raises(CtlError, match="needs several runs of one method"):
        evaluate([tmp_path / "one"], ["aa"], bootstrap=10)


def test_a_world_of_the_population_is_drawn_by_its_index_alone() -> None:
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        generator = OmegaConf.to_container(compose("train").data.generator, resolve=True)
    first, again, other = (draw_world(generator, "A", i) for i in (3, 3, 4))
    assert first == again and first != other
    assert first["seed"] != other["seed"] and set(first["domains"]) == {"B", "C"}
    for domain in ("B", "C"):
        default = generator["domains"][domain]
        drawn = first["domains"][domain]
        for name, (kind, low, high) in TARGET_RANGES.items():
            value, base = drawn[name], default.get(name, 1.0)
            if kind == "scale" and name != "rows_per_period":
                assert base * low - 1e-9 <= value <= base * high + 1e-9 or name == "recent_item_share" and value <= 1
            elif kind == "shift":
                assert base + low - 1e-9 <= value <= base + high + 1e-9
            elif kind == "uniform":
                assert low <= value <= high
        assert default["rows_per_period"] * 0.25 - 6 <= drawn["rows_per_period"] <= default["rows_per_period"] * 1.4 + 6
        assert drawn["rows_per_period"] % generator["items_per_request"] == 0
    assert "B.rows_per_period" in knobs_of(first) and "interest_drift" in knobs_of(first)
    with pytest.raises(CtlError, match="no source domain Z"):
        draw_world(generator, "Z", 0)


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> Path:
    """Worlds 0 (seeds 0 and 1) and 1 (seed 0) of the tiny world's population: base and CTNet on B."""
    home, root = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("population")
    for world, seeds in ((0, (0, 1)), (1, (0,))):
        for seed in seeds:
            for model in ("base", "ctnet"):
                train(root, home, f"w{world}-{model}-s{seed}", f"model={model}", f"seed={seed}", f"world={world}")
    return root


def test_the_population_table_gives_each_world_its_seed_aware_gains_and_knobs(population: Path, capsys) -> None:
    records = evaluate([population], ["population"], bootstrap=BOOT).records["population"]
    assert {r["population"]["world"] for r in records} == {0, 1}
    assert len({r["dataset"] for r in records}) == 2  # two worlds, two datasets
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        generator = OmegaConf.to_container(compose("train", overrides=["data=synthetic_tiny"]).data.generator,
                                           resolve=True)
    for world, seeds in ((0, (0, 1)), (1, (0,))):
        drawn = draw_world(generator, "A", world)
        for metric in ("auc", "gauc"):
            (rec,) = [r for r in records if r["population"]["world"] == world and r["metric"] == metric]
            cell = rec["population"]
            assert cell["knobs"]["rows_per_period"] == drawn["domains"]["B"]["rows_per_period"]
            assert cell["knobs"]["seed"] == drawn["seed"]
            per_seed = []
            for seed in seeds:
                own, base = predictions(population / f"w{world}-ctnet-s{seed}"), predictions(population / f"w{world}-base-s{seed}")
                per_seed.append(paired_bootstrap(own["label"], own["pred"], base["pred"], own["user_id"], BOOT)[metric])
            assert cell["delta"] == pytest.approx(np.mean([p["delta"] for p in per_seed]), abs=1e-12)
            if len(seeds) == 2:
                t = seed_t_interval([p["delta"] for p in per_seed])
                assert cell["covers"] == "training seeds and test users"
                assert (cell["low"], cell["high"]) == pytest.approx((t["low"], t["high"]), abs=1e-12)
            else:
                assert cell["covers"] == "test slice only"
                assert (cell["low"], cell["high"]) == pytest.approx((per_seed[0]["low"], per_seed[0]["high"]), abs=1e-12)
    summary, losing = views.population_views(records)
    auc_row = next(row for row in summary.rows if [c.text for c in row[:3]] == ["ctnet", "B", "AUC"])
    deltas = sorted(r["population"]["delta"] for r in records if r["metric"] == "auc")
    assert auc_row[3].text == "2" and auc_row[4].text == f"{np.median(deltas):+.4f}"
    assert auc_row[5].text == f"{np.quantile(deltas, 0.1):+.4f}" and auc_row[6].text == f"{np.quantile(deltas, 0.9):+.4f}"
    below = [r for r in records if r["metric"] == "auc" and r["population"]["delta"] < 0]
    assert len([row for row in losing.rows]) >= len(below)
    ctl_main(["eval", str(population), "--table", "population", "--bootstrap", "50", "--format", "markdown"])
    assert "Population of 2 worlds" in capsys.readouterr().out


def test_the_population_table_refuses_runs_of_no_world(aa_sweep: Path) -> None:
    with pytest.raises(CtlError, match="none of these runs names a world"):
        evaluate([aa_sweep], ["population"], bootstrap=10)
