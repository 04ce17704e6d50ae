"""Sampled negatives know nothing of the future: a positive's negatives avoid only the items its
user touched at or before its time (``label.exclude: past``; ``all`` is the leaky rule some papers
use), and a negative's item attributes are the item's as of that time. Hand-made click log."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ctl.data.dataset import load_dataset
from ctl.data.importer import SpecError, import_dataset, parse_spec, read_id_map

DAY = 86_400
START = 1_709_251_200  # 2024-03-01 00:00 UTC: period p is day p


def click_schema(exclude: str | None = None) -> dict:
    label = {"negatives": 2, "seed": 5} | ({"exclude": exclude} if exclude else {})
    return {
        "domains": {"column": "domain", "values": {"s": "S", "t": "T"}, "source": "S"},
        "label": label,
        "time": {"column": "ts", "format": "unix", "period": "1d", "n_transfer": 1},
        "features": [{"name": "user_id", "column": "user", "dim": 4}, {"name": "item_id", "column": "item", "dim": 4},
                     {"name": "category_id", "column": "domain", "dim": 4},
                     {"name": "seller_id", "constant": True, "dim": 4},
                     {"name": "shop", "column": "shop", "of": "item", "dim": 4}],
    }


def clicks(path: Path) -> Path:
    """Seven days, one a period. User u clicks item a on day 2 at noon and first clicks x on day 5;
    v clicks x on day 2 at 10:00, from shop s1 (x moves to shop s2 by day 5). Both domains have a
    click every day (w on b, z on c)."""
    at = lambda day, hour: START + day * DAY + hour * 3600
    records = [("w", "b", "t", "s0", at(d, 9)) for d in (0, 1, 3, 4, 6)]
    records += [("z", "c", "s", "s0", at(d, 9)) for d in range(7)]
    records += [("v", "x", "t", "s1", at(2, 10)), ("u", "a", "t", "s9", at(2, 12)), ("u", "x", "t", "s2", at(5, 10))]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "item", "domain", "shop", "ts"])
        writer.writerows(sorted(records, key=lambda r: r[-1]))
    return path


def negatives_of(dataset: Path, user: str, day: int) -> list[tuple[str, str]]:
    """(item, shop) of the sampled negatives of ``user``'s click on ``day``, as raw text."""
    ds = load_dataset(dataset)
    users, items, shops = (read_id_map(dataset, f) for f in ("user_id", "item_id", "shop"))
    rows = ds.rows
    picked = (rows["label"] == 0) & (rows["period"] == day) & (users[rows["user_id"]] == user)
    return [(items[i], shops[s]) for i, s in zip(rows["item_id"][picked], rows["shop"][picked], strict=True)]


def test_an_item_first_clicked_in_period_5_is_a_negative_in_period_2_with_its_attributes_of_then(tmp_path) -> None:
    source = clicks(tmp_path / "clicks.csv")
    dataset = import_dataset(parse_spec(click_schema(), "clicks"), [source], tmp_path / "past").path
    # day 2's pool of T: a and x; u touched only a by noon, so both draws are x, from the shop it had then
    assert negatives_of(dataset, "u", 2) == [("x", "s1"), ("x", "s1")]
    # v at 10:00: a is u's (later) item, never v's; its first record (noon) gives its shop
    assert negatives_of(dataset, "v", 2) == [("a", "s9"), ("a", "s9")]
    meta = load_dataset(dataset).meta
    # pools of one item its user clicked: w in T on days 0, 1, 3, 4, 6; z in S every day; u on day 5
    assert meta["provenance"]["counts"]["negatives_unavailable"] == 2 * (5 + 7 + 1)


def test_exclude_all_keeps_the_leaky_rule(tmp_path) -> None:
    source = clicks(tmp_path / "clicks.csv")
    dataset = import_dataset(parse_spec(click_schema("all"), "clicks"), [source], tmp_path / "all").path
    assert negatives_of(dataset, "u", 2) == []  # x is u's later click: never u's negative, so none is left
    assert negatives_of(dataset, "v", 2) == [("a", "s9"), ("a", "s9")]
    counts = load_dataset(dataset).meta["provenance"]["counts"]
    assert counts["negatives_unavailable"] == 2 * (5 + 7 + 1) + 2


def test_an_unknown_exclude_rule_is_refused_naming_the_key(tmp_path) -> None:
    with pytest.raises(SpecError, match=r"label.exclude.*must be one of \['past', 'all'\], got 'future'"):
        parse_spec(click_schema("future"), "clicks")


def test_an_explicit_sequences_event_takes_its_items_category_as_of_the_event(tmp_path) -> None:
    """Item x is listed in u's sequence on day 1 and changes category on day 3: the listed event has
    the category x had then (c1), not its last one (c2)."""
    path = tmp_path / "views.csv"
    rows = [("u", "x", "c1", "", 0), ("u", "y", "c1", "x", 1), ("v", "y", "c1", "", 2), ("v", "x", "c2", "", 3)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "item", "cat", "seq", "domain", "label", "ts"])
        writer.writerows([(u, i, c, s, "t", 1, START + day * DAY) for u, i, c, s, day in rows])
    schema = {"domains": {"column": "domain", "values": {"s": "S", "t": "T"}, "source": "S"},
              "label": {"column": "label"},
              "time": {"column": "ts", "format": "unix", "period": "1d", "n_transfer": 1},
              "sequences": {"column": "seq", "separator": ";"},
              "features": [{"name": "user_id", "column": "user", "dim": 4},
                           {"name": "item_id", "column": "item", "dim": 4},
                           {"name": "category_id", "column": "cat", "dim": 4},
                           {"name": "seller_id", "constant": True, "dim": 4}]}
    dataset = import_dataset(parse_spec(schema, "views"), [path], tmp_path / "views").path
    history = pq.read_table(dataset / "history.parquet").to_pydict()
    items, categories = read_id_map(dataset, "item_id"), read_id_map(dataset, "category_id")
    assert [(items[i], categories[c]) for i, c in zip(history["item_id"], history["category_id"], strict=True)] == \
        [("x", "c1")]
