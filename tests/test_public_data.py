"""The public datasets in the shared data folder: they import as their READMEs describe, and train.

The folder is ``$CTL_PUBLIC_DATA`` or ``../shared/data`` next to the repository; tests skip when a
dataset's folder is absent. Amazon is cut to its first lines (users) for the training run.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hydra import compose, initialize_config_module

from conftest import assert_test_metrics_are_the_predictions
from ctl.data.importer import ORIGIN_FILE, public_data_root, read_id_map
from ctl.data.registry import load_for
from ctl.training.protocol import run_train

ROOT = public_data_root(None)
FOLDERS = {"amazon_food_kitchen": "amazon_food_kitchen_c2dsr", "douban": "douban_multidomain_sample",
           "taobao_tiny": "taobao_display_ad_tiny"}
AMAZON_LINES = 300
FOOD_ITEMS = 29_207


def needs(preset: str):
    folder = ROOT / FOLDERS[preset]
    return pytest.mark.skipif(not folder.is_dir(), reason=f"public data folder {folder} is absent "
                                                          "(set CTL_PUBLIC_DATA to the shared data folder)")


def make_cfg(home: Path, preset: str, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[
            f"data={preset}", f"home={home}", "model=base", "progress=false", "print_table=false",
            "data.batch_size=256", "model.size.mlp_dims=[32,16]", *overrides])


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("public_home")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the batches are tiny, and on a busy 2-core machine two threads spent
    over ten times the wall time of one on these runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def amazon_events(lines: list[str]) -> list[tuple[str, int, int]]:
    """(user, item, ts) of every event of C2DSR lines, read naively."""
    events = []
    for line in lines:
        user, _, *raw = line.rstrip("\n").split("\t")
        for event in raw:
            item, ts, _ = event.split("|")[:3]
            events.append((user, int(item), int(ts)))
    return events


@needs("amazon_food_kitchen")
def test_amazon_whole_release_matches_its_readme(home) -> None:
    ds = load_for(make_cfg(home, "amazon_food_kitchen").data, home, progress=False)
    users = read_id_map(ds.path, "user_id")
    assert len(users) - 1 == 16_579
    assert ds.history.n_events == 163_234
    food = ds.schema.domain_index("Food")
    assert int((ds.history.domain == food).sum()) == 76_842
    assert ds.schema.source == "Kitchen" and ds.schema.n_history == 5 and ds.schema.n_transfer == 2
    assert ds.meta["provenance"]["periods"][-1] == "2014-07-01 .. 2014-10-01"
    assert ds.rows["label"].mean() == pytest.approx(1 / 5, abs=1e-3)


@needs("amazon_food_kitchen")
def test_amazon_subset_traces_back_to_its_lines_and_trains(home, tmp_path) -> None:
    cfg = make_cfg(home, "amazon_food_kitchen", f"data.importer.max_rows={AMAZON_LINES}")
    ds = load_for(cfg.data, home, progress=False)
    source = ROOT / FOLDERS["amazon_food_kitchen"] / "val_new.txt"
    lines = source.read_text().splitlines()[:AMAZON_LINES]
    events = amazon_events(lines)
    assert ds.history.n_events == len(events)
    origin = pq.read_table(ds.path / ORIGIN_FILE).to_pydict()
    users, items = read_id_map(ds.path, "user_id"), read_id_map(ds.path, "item_id")
    for r in np.flatnonzero(ds.rows["label"] == 1)[::7]:
        fields = lines[origin["line"][r] - 1].split("\t")
        item, ts, _ = fields[1 + origin["event"][r]].split("|")[:3]
        assert (users[ds.rows["user_id"][r]], items[ds.rows["item_id"][r]], ds.rows["ts"][r]) == (fields[0], item, int(ts))
        assert ds.schema.domains[ds.rows["domain"][r]] == ("Food" if int(item) < FOOD_ITEMS else "Kitchen")
    metrics = run_train(cfg, tmp_path)
    assert metrics["target"] == "Food" and [p["period"] for p in metrics["periods"]] == [0, 1, 2, 3, 4, 5, 6]
    assert_test_metrics_are_the_predictions(tmp_path, metrics, ds)


@needs("douban")
def test_douban_imports_three_domains_in_file_order_and_trains(home, tmp_path) -> None:
    cfg = make_cfg(home, "douban")
    ds = load_for(cfg.data, home, progress=False)
    with open(ROOT / FOLDERS["douban"] / "douban_sample.csv", encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))
    rows = Counter(r["domain"] for r in records)
    assert {d: int((ds.rows["domain"] == ds.schema.domain_index(d)).sum()) for d in rows} == dict(rows)
    assert rows == {"movie": 2299, "book": 364, "music": 337}
    assert ds.schema.source == "movie" and ds.schema.n_periods == 4
    period = np.empty(ds.n_rows, dtype=np.int64)
    line = np.asarray(pq.read_table(ds.path / ORIGIN_FILE).column("line"))
    period[line - 2] = ds.rows["period"]
    np.testing.assert_array_equal(period, np.arange(3000) * 4 // 3000)  # equal chunks in file order
    places = read_id_map(ds.path, "living_place")
    assert {p for p in places[1:]} == {r["living_place"] for r in records if r["living_place"]}
    metrics = run_train(cfg, tmp_path)
    assert metrics["target"] == "book"
    assert_test_metrics_are_the_predictions(tmp_path, metrics, ds)


@needs("taobao_tiny")
def test_taobao_fixture_parses_slots_sequences_and_trains(home, tmp_path) -> None:
    cfg = make_cfg(home, "taobao_tiny")
    ds = load_for(cfg.data, home, progress=False)
    folder = ROOT / FOLDERS["taobao_tiny"]
    records = []
    for name in ("train_sample.csv", "valid_sample.csv"):
        with open(folder / name, encoding="utf-8", newline="") as handle:
            records += list(csv.DictReader(handle))
    assert ds.n_rows == 200 and int(ds.rows["label"].sum()) == 8
    slot = ds.schema.domain_index("pid430539")
    assert int((ds.rows["domain"] == slot).sum()) == sum(r["pid"] == "430539_1007" for r in records) == 60
    items = read_id_map(ds.path, "item_id")
    origin = pq.read_table(ds.path / ORIGIN_FILE).to_pydict()
    long_item, _, _, mask = ds.history.gather_last(ds.rows["user_id"], ds.rows["hist_end"], ds.schema.long_len, None)
    checked = 0
    for r in range(ds.n_rows):
        record = records[origin["line"][r] - 2 + 100 * origin["input"][r]]
        listed = [x for x in record["click_sequence"].split("^") if x]
        if listed:
            seen = [items[i] for i, m in zip(long_item[r].tolist(), mask[r].tolist()) if m]
            assert seen[-len(listed):] == listed[-ds.schema.long_len:]
            checked += 1
    assert checked == sum(1 for r in records if r["click_sequence"])
    metrics = run_train(cfg, tmp_path)
    assert metrics["target"] == "pid430539"
    assert_test_metrics_are_the_predictions(tmp_path, metrics, ds)
