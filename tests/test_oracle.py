"""The oracle: the synthetic world's true click probabilities of the test slice, kept beside the
dataset, validated, never a feature, and scored by ``ctl eval`` as a ceiling with each method's
share of base's headroom."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from scipy import integrate, special
from sklearn.metrics import roc_auc_score

from conftest import random_columns
from ctl.data.dataset import (
    HISTORY_FILE,
    META_FILE,
    ORACLE_FILE,
    ROWS_FILE,
    DatasetError,
    load_click_prob,
    load_dataset,
    read_fingerprint,
    write_dataset,
)
from ctl.data.registry import ensure_dataset
from ctl.data.synthetic import SyntheticWorld
from ctl.data.synthetic.simulation import marginal_click_prob
from ctl.report import cli, views
from ctl.report.cli import evaluate
from ctl.report.oracle import fill_headroom, headroom_share
from ctl.training.protocol import run_train

CONF = Path(__file__).resolve().parents[1] / "src" / "ctl" / "conf" / "data"


def tiny_world(**changes) -> SyntheticWorld:
    cfg = OmegaConf.load(CONF / "synthetic_tiny.yaml").generator
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    knobs = OmegaConf.to_container(cfg)
    knobs.pop("_target_")
    return SyntheticWorld(**knobs)


@pytest.fixture(scope="module")
def world_path(tmp_path_factory) -> Path:
    return tiny_world().generate(tmp_path_factory.mktemp("world") / "tiny", progress=False)


def reference_gauc(preds: np.ndarray, labels: np.ndarray, users: np.ndarray) -> float:
    """Impression-weighted sklearn AUCs of the users holding both labels."""
    total, weight = 0.0, 0
    for user in np.unique(users):
        mine = users == user
        if labels[mine].min() != labels[mine].max():
            total += mine.sum() * roc_auc_score(labels[mine], preds[mine])
            weight += mine.sum()
    return total / weight


# --- the generator ---------------------------------------------------------------------------


@pytest.mark.parametrize("noise", [0.0, 0.3, 1.0])
def test_marginal_click_prob_is_the_expected_sigmoid_over_the_noise(noise):
    logits = np.array([-6.0, -3.2, -1.0, 0.0, 2.5])
    expected = [integrate.quad(lambda z, x=x: special.expit(x + noise * z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi),
                               -30, 30, epsabs=1e-13)[0] for x in logits]
    np.testing.assert_allclose(marginal_click_prob(logits, noise), expected, rtol=1e-10, atol=1e-13)
    # increasing in the logit: it ranks rows as the logit does
    assert np.all(np.diff(marginal_click_prob(np.linspace(-8, 4, 50), noise)) > 0)


def test_the_test_slice_keeps_the_true_click_probability_of_every_row(world_path):
    sample = tiny_world().simulate(with_logits=True)
    dataset = load_dataset(world_path)
    row, prob = load_click_prob(world_path)
    test = np.flatnonzero(dataset.rows["period"] == dataset.schema.test_period)
    np.testing.assert_array_equal(row, test)
    # rows are stored in the simulation's order, so the logits line up with the stored rows
    np.testing.assert_array_equal(dataset.rows["label"], sample.rows["label"])
    np.testing.assert_array_equal(prob, marginal_click_prob(sample.oracle_logit[test], tiny_world().click_noise))
    assert np.isnan(sample.click_prob[sample.rows["period"] != dataset.schema.test_period]).all()


def test_keeping_the_oracle_draws_nothing_more(world_path):
    # the logits for sanity checks are bookkeeping on the same draws: every column, and the oracle, agree
    plain, with_logits = tiny_world().simulate(), tiny_world().simulate(with_logits=True)
    for name in plain.rows:
        np.testing.assert_array_equal(plain.rows[name], with_logits.rows[name], err_msg=name)
    for name in plain.history:
        np.testing.assert_array_equal(plain.history[name], with_logits.history[name], err_msg=name)
    np.testing.assert_array_equal(plain.click_prob, with_logits.click_prob)
    # and the clicks follow it: the test slice's click rate matches the mean probability
    test = plain.rows["period"] == tiny_world().n_periods - 1
    n = test.sum()
    assert plain.rows["label"][test].mean() == pytest.approx(plain.click_prob[test].mean(), abs=4 / np.sqrt(n))


def test_the_oracle_is_no_feature_and_leaves_the_fingerprint_alone(world_path, tmp_path):
    dataset = load_dataset(world_path)
    assert "click_prob" not in dataset.rows
    assert "click_prob" not in pq.read_schema(world_path / ROWS_FILE).names
    assert ORACLE_FILE not in (world_path / META_FILE).read_text()
    without = tmp_path / "without"
    shutil.copytree(world_path, without)
    (without / ORACLE_FILE).unlink()
    assert load_dataset(without).fingerprint() == dataset.fingerprint() == read_fingerprint(world_path)
    assert load_click_prob(without) is None


def test_an_imported_dataset_has_no_oracle_and_loads(tmp_path):
    schema, rows, history = random_columns()
    path = write_dataset(tmp_path / "imported", schema, rows, history, {"generator": "import"})
    assert not (path / ORACLE_FILE).exists()
    assert load_click_prob(path) is None
    assert load_dataset(path).n_rows == 600


def _with_oracle(tmp_path: Path, name: str, table: pa.Table) -> Path:
    schema, rows, history = random_columns()
    path = write_dataset(tmp_path / name, schema, rows, history, {"generator": "test"})
    pq.write_table(table, path / ORACLE_FILE)
    return path


@pytest.mark.parametrize(
    ("table", "column", "row", "detail"),
    [
        ({"row": [3, 600], "click_prob": [0.1, 0.2]}, "row", 1, "value 600 is outside the 600 rows of rows.parquet"),
        ({"row": [5, 5], "click_prob": [0.1, 0.2]}, "row", 1, "is not above the row before it"),
        ({"row": [1, 2], "click_prob": [0.1, 1.5]}, "click_prob", 1, "value 1.5 is not a probability in [0, 1]"),
        ({"row": [1, 2], "click_prob": [float("nan"), 0.5]}, "click_prob", 0, "value nan is not a probability"),
    ],
)
def test_a_broken_oracle_file_is_refused_naming_column_and_row(tmp_path, table, column, row, detail):
    path = _with_oracle(tmp_path, "broken", pa.table(table))
    prefix = f"{ORACLE_FILE}: column {column!r}, row {row}"
    with pytest.raises(DatasetError, match=re.escape(prefix) + ".*" + re.escape(detail)):
        load_dataset(path)
    with pytest.raises(DatasetError, match=re.escape(prefix)):
        load_click_prob(path)


def test_write_dataset_keeps_the_probabilities_of_the_rows_given_in_any_order(tmp_path):
    schema, rows, history = random_columns()
    prob = np.full(600, np.nan)
    prob[[7, 42, 100]] = [0.25, 0.5, 0.75]
    path = write_dataset(tmp_path / "ds", schema, rows, history, {"generator": "test"}, click_prob=prob)
    stored = load_dataset(path)
    row, kept = load_click_prob(path)
    # rows were re-sorted on writing: each probability follows its row
    order = np.lexsort((rows["ts"], rows["domain"], rows["period"]))
    assert sorted(kept.tolist()) == [0.25, 0.5, 0.75]
    for r, p in zip(row, kept):
        assert prob[order[r]] == p
        assert stored.rows["ts"][r] == rows["ts"][order[r]]


def test_a_world_cached_before_the_oracle_gets_it_once_and_keeps_its_fingerprint(tmp_path):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=synthetic_tiny", f"home={tmp_path}"])
    path = ensure_dataset(cfg.data, tmp_path, progress=False)
    made = (path / ORACLE_FILE).read_bytes()
    fingerprint = read_fingerprint(path)
    (path / ORACLE_FILE).unlink()
    assert ensure_dataset(cfg.data, tmp_path, progress=False) == path
    assert (path / ORACLE_FILE).read_bytes() == made and read_fingerprint(path) == fingerprint
    # rows of another world are never given this world's probabilities
    (path / ORACLE_FILE).unlink()
    assert tiny_world(seed=1).add_oracle(path) is False
    assert not (path / ORACLE_FILE).exists()
    for name in (ROWS_FILE, HISTORY_FILE, META_FILE):
        assert (path / name).is_file()


# --- ctl eval ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """base and ctnet on A -> B of the tiny world, seeds 0 and 1."""
    home = tmp_path_factory.mktemp("home")
    root = tmp_path_factory.mktemp("runs")
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        for seed in (0, 1):
            for model in ("base", "ctnet"):
                cfg = compose("train", overrides=["data=synthetic_tiny", f"home={home}", "progress=false",
                                                  "print_table=false", f"seed={seed}", f"model={model}"])
                run_train(cfg, root / f"{model}-s{seed}")
    return root


def _dataset_path(runs: Path) -> Path:
    return Path(json.loads((runs / "ctnet-s0" / "metrics.json").read_text())["dataset_path"])


def only(rows: list[dict], **match: object) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} records match {match}"
    return found[0]


def test_eval_scores_the_oracle_as_sklearn_does_on_the_stored_probabilities(runs):
    rows = evaluate([runs], ["overall"], bootstrap=0).records["overall"]
    oracle_auc = only(rows, model="oracle", metric="auc")
    dataset = load_dataset(_dataset_path(runs))
    test = dataset.select(["B"], [dataset.schema.test_period])
    known, prob = load_click_prob(dataset.path)
    truth, labels, users = prob[np.searchsorted(known, test)], dataset.rows["label"][test], dataset.rows["user_id"][test]
    assert oracle_auc["mean"] == pytest.approx(roc_auc_score(labels, truth), abs=1e-12)
    assert only(rows, model="oracle", metric="gauc")["mean"] == pytest.approx(reference_gauc(truth, labels, users),
                                                                              abs=1e-12)
    assert oracle_auc["std"] is None and oracle_auc["rows"] == len(test) and oracle_auc["seeds"] == [0, 1]
    # its delta is base's headroom, paired by seed; every method's share of it follows
    base = only(rows, model="base", metric="auc")
    assert oracle_auc["delta"] == pytest.approx(oracle_auc["mean"] - base["mean"], abs=1e-12)
    ctnet = only(rows, model="ctnet", metric="auc")
    assert ctnet["oracle"] == oracle_auc["mean"]
    assert ctnet["headroom_share"] == pytest.approx(ctnet["delta"] / (oracle_auc["mean"] - ctnet["base"]))


def test_every_table_of_a_synthetic_world_has_an_oracle_row(runs):
    report = evaluate([runs], ["all"], bootstrap=0)
    for table in ("overall", "periods", "coldstart", "cost"):
        assert any(r["model"] == "oracle" for r in report.records[table]), table
        for view in report.views[table]:
            assert any(row[2 if table == "periods" else 0].text == "oracle" for row in view.rows), table
    overall = views.overall_view(report.records["overall"])
    assert "B headroom" in overall.headers
    ctnet_row = next(row for row in overall.rows if row[0].text == "ctnet")
    share = only(report.records["overall"], model="ctnet", metric="auc")["headroom_share"]
    assert ctnet_row[overall.headers.index("B headroom")].text.startswith(f"AUC {share:.0%} · GAUC ")


def test_an_imported_dataset_gets_no_oracle_row(runs, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy, symlinks=True)
    dataset = tmp_path / "dataset"
    shutil.copytree(_dataset_path(runs), dataset)
    (dataset / ORACLE_FILE).unlink()
    for metrics in copy.glob("*/metrics.json"):
        metrics.write_text(metrics.read_text().replace(str(_dataset_path(runs)), str(dataset)))
    report = evaluate([copy], ["overall"], bootstrap=0)
    assert cli.ORACLE_FILE == ORACLE_FILE
    assert not any(r["model"] == "oracle" for r in report.records["overall"])
    assert any("keeps no true click probabilities" in note for note in report.notes)


def test_headroom_share_by_hand():
    # base 0.70, oracle 0.80: a method at 0.72 covers a fifth of the headroom, one at 0.68 minus a fifth
    assert headroom_share(0.02, 0.70, 0.80) == pytest.approx(0.2)
    assert headroom_share(-0.02, 0.70, 0.80) == pytest.approx(-0.2)
    assert headroom_share(0.02, 0.80, 0.80) is None and headroom_share(None, 0.7, 0.8) is None

    def rec(model: str, mean: float, base: float | None, delta: float | None) -> dict:
        return {"model": model, "target": "B", "slice": "test", "metric": "auc", "mean": mean, "base": base,
                "delta": delta, "oracle": None, "headroom_share": None}

    records = fill_headroom([rec("base", 0.70, None, None), rec("ctnet", 0.725, 0.70, 0.025),
                             rec("oracle", 0.80, 0.70, 0.10)])
    assert records[1]["headroom_share"] == pytest.approx(0.25) and records[1]["oracle"] == 0.80
    assert records[0]["headroom_share"] is None and records[0]["oracle"] == 0.80
