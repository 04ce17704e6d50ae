"""Dataset folder: round trip, atomic writes, one refusal per broken contract; describe."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from conftest import make_random_dataset, random_columns
from ctl.data import writing as writing_module
from ctl.data.dataset import DatasetError, load_dataset, write_dataset
from ctl.data.describe import (
    describe_dataset,
    describe_domains,
    history_lengths,
    print_description,
    regime_knobs,
)

Columns = dict[str, np.ndarray]


def _read(path: Path) -> Columns:
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _rewrite(path: Path, file: str, mutate: Callable[[Columns], Columns | pa.Table]) -> None:
    """Replace one Parquet file of a dataset by a mutated copy, as a hand-edited file would be."""
    columns = {name: np.array(values) for name, values in _read(path / file).items()}
    result = mutate(columns)
    table = result if isinstance(result, pa.Table) else pa.table(result)
    pq.write_table(table, path / file)


def _refused(path: Path, file: str, column: str | None, row: int | None, detail: str) -> None:
    prefix = file
    if column is not None:
        prefix += f": column {column!r}"
    if row is not None:
        prefix += f", row {row}"
    with pytest.raises(DatasetError, match=re.escape(prefix) + ".*" + re.escape(detail)):
        load_dataset(path)


def _history_counts(path: Path) -> np.ndarray:
    return np.bincount(_read(path / "history.parquet")["user_id"], minlength=51)


# --- round trip and writing --------------------------------------------------------------------


def test_round_trip_returns_the_written_rows_sorted_and_the_history(tmp_path: Path) -> None:
    schema, rows, history = random_columns(seed=3)
    path = write_dataset(tmp_path / "ds", schema, rows, history, {"seed": 3})
    ds = load_dataset(path)
    order = np.lexsort((rows["ts"], rows["domain"], rows["period"]))
    assert ds.schema == schema
    assert ds.meta["provenance"] == {"seed": 3}
    assert ds.meta["n_rows"] == 600 and ds.meta["n_events"] == 1500
    assert set(ds.rows) == set(rows)
    for name, values in rows.items():
        np.testing.assert_array_equal(ds.rows[name], values[order], err_msg=name)
    assert ds.rows["label"].dtype == np.int8 and ds.rows["hist_end"].dtype == np.int32
    assert ds.rows["item_id"].dtype == np.int64
    np.testing.assert_array_equal(ds.history.item.numpy(), history["item_id"])
    np.testing.assert_array_equal(ds.history.category.numpy(), history["category_id"])
    np.testing.assert_array_equal(ds.history.domain.numpy(), history["domain"])
    np.testing.assert_array_equal(ds.history.ts.numpy(), history["ts"])
    np.testing.assert_array_equal(ds.history.counts().numpy(), np.bincount(history["user_id"], minlength=51))


def test_already_sorted_rows_keep_their_order(tmp_path: Path) -> None:
    schema, rows, history = random_columns(seed=4)
    # Sorted by (period, domain, ts) but with a custom order among equal keys.
    rows["ts"] = rows["period"] * 1000
    order = np.lexsort((-np.arange(600), rows["domain"], rows["period"]))
    hist_free = {name: values[order] for name, values in rows.items()}
    hist_free["hist_end"] = np.zeros(600, dtype=np.int64)
    ds = load_dataset(write_dataset(tmp_path / "ds", schema, hist_free, history, {}))
    np.testing.assert_array_equal(ds.rows["user_id"], hist_free["user_id"])


def test_write_refuses_an_existing_path_and_leaves_nothing_on_failure(tmp_path: Path, monkeypatch) -> None:
    schema, rows, history = random_columns()
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="taken"):
        write_dataset(tmp_path / "taken", schema, rows, history, {})

    calls = []
    real_write = pq.write_table

    def failing_write(table: pa.Table, where, row_group_size: int) -> None:
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(table, where, row_group_size=row_group_size)

    monkeypatch.setattr(writing_module.pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(tmp_path / "ds", schema, rows, history, {})
    assert calls == [600, 1500]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_write_validates_before_writing(tmp_path: Path) -> None:
    schema, rows, history = random_columns()
    rows["label"][5] = 3
    with pytest.raises(
        DatasetError, match=re.escape("rows.parquet: column 'label', row 5: value 3 is not 0/1")
    ):
        write_dataset(tmp_path / "ds", schema, rows, history, {})
    assert not (tmp_path / "ds").exists()


def test_select_and_fingerprint(tmp_path: Path) -> None:
    ds = load_dataset(make_random_dataset(tmp_path))
    picked = ds.select(["B", "C"], [3, 4])
    expected = np.flatnonzero(np.isin(ds.rows["domain"], [1, 2]) & np.isin(ds.rows["period"], [3, 4]))
    np.testing.assert_array_equal(picked, expected)
    assert picked.size > 0
    np.testing.assert_array_equal(ds.select(None, None), np.arange(600))
    with pytest.raises(ValueError, match="unknown domain 'Z'"):
        ds.select(["Z"], None)
    with pytest.raises(ValueError, match=r"periods \[6\] lie outside the layout \[0, 5\]"):
        ds.select(None, [6])
    assert load_dataset(ds.path).fingerprint() == ds.fingerprint()
    other = load_dataset(make_random_dataset(tmp_path, seed=1, name="other"))
    assert other.fingerprint() != ds.fingerprint()


def test_integral_floats_and_narrow_ints_load_exactly(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    before = load_dataset(path)

    def as_floats(columns: Columns) -> Columns:
        columns["item_id"] = columns["item_id"].astype(np.float64)
        columns["user_id"] = columns["user_id"].astype(np.int16)
        return columns

    _rewrite(path, "rows.parquet", as_floats)
    after = load_dataset(path)
    np.testing.assert_array_equal(after.rows["item_id"], before.rows["item_id"])
    assert after.rows["item_id"].dtype == np.int64 and after.rows["user_id"].dtype == np.int64


# --- refusals ------------------------------------------------------------------------------------


def _set(column: str, row: int, value) -> Callable[[Columns], Columns]:
    def mutate(columns: Columns) -> Columns:
        if np.asarray(value).dtype.kind == "f":
            columns[column] = columns[column].astype(np.float64)
        columns[column][row] = value
        return columns

    return mutate


def test_refuses_a_missing_folder_meta_or_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"meta.yaml: the dataset folder .*nowhere does not exist"):
        load_dataset(tmp_path / "nowhere")
    path = make_random_dataset(tmp_path)
    (path / "history.parquet").unlink()
    with pytest.raises(DatasetError, match="history.parquet: missing from the dataset folder"):
        load_dataset(path)
    (path / "meta.yaml").unlink()
    with pytest.raises(DatasetError, match="meta.yaml: missing from the dataset folder"):
        load_dataset(path)


def test_refuses_a_missing_column(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "rows.parquet", lambda c: {k: v for k, v in c.items() if k != "seller_id"})
    _refused(path, "rows.parquet", "seller_id", None, "missing (the file has")


def test_refuses_a_non_integer_dtype(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "history.parquet", lambda c: dict(c, item_id=c["item_id"].astype(str)))
    _refused(path, "history.parquet", "item_id", None, "dtype string is not an integer type")


def test_refuses_a_non_integral_float(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "rows.parquet", _set("item_id", 7, 1.5))
    _refused(path, "rows.parquet", "item_id", 7, "value 1.5 is not an integer")


def test_refuses_nan(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "rows.parquet", _set("category_id", 11, np.nan))
    _refused(path, "rows.parquet", "category_id", 11, "value nan is NaN")


def test_refuses_null(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)

    def with_null(columns: Columns) -> pa.Table:
        table = pa.table(columns)
        ts = columns["ts"].tolist()
        ts[42] = None
        return table.set_column(table.column_names.index("ts"), "ts", pa.array(ts, type=pa.int64()))

    _rewrite(path, "history.parquet", with_null)
    _refused(path, "history.parquet", "ts", 42, "value null is missing")


def test_refuses_a_label_outside_0_1(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "rows.parquet", _set("label", 17, 2))
    _refused(path, "rows.parquet", "label", 17, "value 2 is not 0/1")


def test_refuses_a_period_outside_the_layout(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "rows.parquet", _set("period", 3, 6))
    _refused(path, "rows.parquet", "period", 3, "value 6 is outside the period layout [0, 6)")


def test_refuses_an_unknown_domain(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "rows.parquet", _set("domain", 9, 3))
    _refused(path, "rows.parquet", "domain", 9, "value 3 is outside the domains ['A', 'B', 'C'] [0, 3)")


def test_refuses_a_feature_id_outside_its_vocabulary(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "rows.parquet", _set("seller_id", 21, 10))
    _refused(
        path, "rows.parquet", "seller_id", 21, "value 10 is outside feature 'seller_id''s vocabulary [0, 10)"
    )


def test_refuses_a_feature_on_a_domain_that_lacks_it(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    domain = _read(path / "rows.parquet")["domain"]
    row = int(np.flatnonzero(domain == 2)[3])
    _rewrite(path, "rows.parquet", _set("source_only", row, 4))
    _refused(path, "rows.parquet", "source_only", row, "value 4 on domain 'C', which the schema says lacks")


def test_refuses_a_negative_hist_end(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "rows.parquet", _set("hist_end", 30, -1))
    _refused(path, "rows.parquet", "hist_end", 30, "value -1 is outside")


def test_refuses_a_hist_end_beyond_the_users_events(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    user = int(_read(path / "rows.parquet")["user_id"][30])
    count = int(_history_counts(path)[user])
    _rewrite(path, "rows.parquet", _set("hist_end", 30, count + 1))
    _refused(
        path,
        "rows.parquet",
        "hist_end",
        30,
        f"value {count + 1} exceeds the {count} history events of user {user}",
    )


def test_refuses_a_hist_end_that_shows_events_after_the_impression(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    rows = _read(path / "rows.parquet")
    counts = _history_counts(path)
    room = np.flatnonzero(rows["hist_end"] < counts[rows["user_id"]])
    row = int(room[0])
    _rewrite(path, "rows.parquet", _set("hist_end", row, int(rows["hist_end"][row]) + 1))
    _refused(path, "rows.parquet", "hist_end", row, "not before the impression's ts")


def test_refuses_history_out_of_user_order(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    users = _read(path / "history.parquet")["user_id"]
    row = int(np.flatnonzero(np.diff(users) > 0)[0]) + 1  # first event of the second user
    _rewrite(path, "history.parquet", _set("user_id", row, 0))
    _refused(path, "history.parquet", "user_id", row, "value 0 breaks the (user_id, ts) order")


def test_refuses_history_out_of_time_order(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    users = _read(path / "history.parquet")["user_id"]
    row = int(np.flatnonzero(np.diff(users) == 0)[5]) + 1  # an event with an earlier event of its user
    _rewrite(path, "history.parquet", _set("ts", row, -5))
    _refused(path, "history.parquet", "ts", row, "value -5 breaks the (user_id, ts) order")


def test_refuses_history_ids_outside_the_vocabulary(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "history.parquet", _set("item_id", 12, 81))
    _refused(
        path, "history.parquet", "item_id", 12, "value 81 is outside feature 'item_id''s vocabulary [0, 81)"
    )
    path = make_random_dataset(tmp_path, name="second")
    _rewrite(path, "history.parquet", _set("category_id", 13, 8))
    _refused(
        path, "history.parquet", "category_id", 13, "value 8 is outside feature 'category_id''s vocabulary"
    )


def test_refuses_an_empty_dataset(tmp_path: Path) -> None:
    schema, rows, history = random_columns()
    empty = {name: values[:0] for name, values in rows.items()}
    with pytest.raises(DatasetError, match=re.escape("rows.parquet: the dataset has no rows")):
        write_dataset(tmp_path / "ds", schema, empty, history, {})


def test_refuses_a_size_that_disagrees_with_meta(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    _rewrite(path, "rows.parquet", lambda c: {k: v[:-1] for k, v in c.items()})
    with pytest.raises(
        DatasetError, match=re.escape("meta.yaml: n_rows is 600 but rows.parquet has 599 rows")
    ):
        load_dataset(path)


# --- describe ------------------------------------------------------------------------------------


def test_describe_matches_a_per_cell_reference(tmp_path: Path) -> None:
    ds = load_dataset(make_random_dataset(tmp_path))
    rows = ds.rows
    records = describe_dataset(ds)
    assert len(records) == 3 * 6
    first_period = {}
    for item, period in zip(rows["item_id"].tolist(), rows["period"].tolist()):
        first_period[item] = min(period, first_period.get(item, period))
    for record in records:
        d, p = ds.schema.domain_index(record["domain"]), record["period"]
        cell = [i for i in range(ds.n_rows) if rows["domain"][i] == d and rows["period"][i] == p]
        assert record["rows"] == len(cell) > 0
        assert record["ctr"] == pytest.approx(np.mean([rows["label"][i] for i in cell]))
        assert record["users"] == len({int(rows["user_id"][i]) for i in cell})
        assert record["items"] == len({int(rows["item_id"][i]) for i in cell})
        new = [first_period[int(rows["item_id"][i])] >= p - 1 for i in cell]
        assert record["new_item_share"] == pytest.approx(np.mean(new))
        assert record["split"] == ("history" if p < 3 else "transfer" if p < 5 else "test")
    assert any(0 < r["new_item_share"] < 1 for r in records)
    domains = describe_domains(ds)
    assert [r["rows"] for r in domains] == [int((rows["domain"] == d).sum()) for d in range(3)]
    assert [r["role"] for r in domains] == ["source", "target", "target"]
    assert sum(r["events"] for r in domains) == ds.history.n_events


def test_regime_knobs_are_the_training_periods_means_of_each_target(tmp_path: Path) -> None:
    ds = load_dataset(make_random_dataset(tmp_path))
    rows = ds.rows
    knobs = regime_knobs(ds)
    assert [k["domain"] for k in knobs] == ["B", "C"]

    def per_period(domain: int, periods: range, what: str) -> float:
        cells = [(rows["domain"] == domain) & (rows["period"] == p) for p in periods]
        if what == "rows":
            return float(np.mean([c.sum() for c in cells]))
        return float(np.mean([len(np.unique(rows["user_id"][c])) for c in cells]))

    source_rows = per_period(0, range(5), "rows")
    for d, knob in enumerate(knobs, start=1):
        rows_a_period, users = per_period(d, range(5), "rows"), per_period(d, range(5), "users")
        assert knob["rows_per_period"] == pytest.approx(rows_a_period)
        assert knob["users_per_period"] == pytest.approx(users)
        assert knob["rows_per_user"] == pytest.approx(rows_a_period / users)
        assert knob["source_ratio"] == pytest.approx(source_rows / rows_a_period)
        test = next(r for r in describe_dataset(ds) if r["domain"] == knob["domain"] and r["split"] == "test")
        assert knob["test_new_item_share"] == test["new_item_share"]


def test_history_lengths_match_a_per_user_and_per_row_reference(tmp_path: Path) -> None:
    path = make_random_dataset(tmp_path)
    ds = load_dataset(path)
    history, rows = _read(path / "history.parquet"), ds.rows
    records = history_lengths(ds)
    assert [r["scope"] for r in records] == ["all", "A", "B", "C"]
    for record in records:
        d = None if record["scope"] == "all" else ds.schema.domain_index(record["scope"])
        per_user = {}
        for user, domain in zip(history["user_id"].tolist(), history["domain"].tolist()):
            if d is None or domain == d:
                per_user[user] = per_user.get(user, 0) + 1
        counts = np.array(sorted(per_user.values()))
        assert record["events"] == counts.sum() and record["users"] == len(per_user)
        assert record["per_user"]["mean"] == pytest.approx(counts.mean())
        assert record["per_user"]["p50"] == pytest.approx(np.median(counts))
        assert record["per_user"]["p99"] == pytest.approx(np.percentile(counts, 99))
        assert record["per_user"]["max"] == counts.max()
        # a row sees its user's events of every domain strictly before it, whatever its own domain
        seen = [int(np.sum((history["user_id"] == u) & (history["ts"] < t)))
                for u, t, rd in zip(rows["user_id"], rows["ts"], rows["domain"]) if d is None or rd == d]
        assert record["rows"] == len(seen)
        assert record["visible"]["mean"] == pytest.approx(np.mean(seen))
        assert record["visible"]["max"] == max(seen)
        test = [h for h, p, rd in zip(rows["hist_end"], rows["period"], rows["domain"])
                if p == ds.schema.test_period and (d is None or rd == d)]
        assert record["test_rows"] == len(test)
        assert record["visible_test"]["mean"] == pytest.approx(np.mean(test))
    assert records[0]["events"] == ds.history.n_events == sum(r["events"] for r in records[1:])


def test_print_description_renders_both_tables(tmp_path: Path) -> None:
    ds = load_dataset(make_random_dataset(tmp_path))
    console = Console(record=True, width=160)
    print_description(ds, console)
    text = console.export_text()
    assert "Rows per domain and period" in text and "Per domain" in text and "Target knobs" in text
    assert "History lengths" in text
    lengths = history_lengths(ds)[0]
    visible = [f"{lengths['visible'][k]:,.0f}" for k in ("mean", "p50", "p99", "max")]
    line = next(line for line in text.splitlines() if "all" in line and "visible per row" in line)
    assert [cell.strip() for cell in line.split("│")[3:8]] == [f"{lengths['rows']:,}", *visible]
    assert ds.fingerprint() in text
    first = describe_dataset(ds)[0]
    assert f"{first['rows']:,}" in text and f"{first['ctr']:.4f}" in text
