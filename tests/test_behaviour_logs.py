"""Behaviour logs of an import: events that join the history, are counted by hist_end, never become rows."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctl.data.dataset import load_dataset
from ctl.data.importer import import_dataset, parse_spec, read_id_map
from ctl.data.importer.errors import InputError, SpecError
from ctl.errors import CtlError
from test_importer import log_schema, make_log, seconds, write_csv

LOG_COLUMNS = {"user": "uid", "item": "iid", "time": "at", "domain": "dom"}
#: uid, iid, at, dom: a hand-made browse log (users and items of the records, one new item, one
#: user without records, an event before the schema's start)
BROWSES = [
    ("u01", "i3", "2024-03-01 08:00:00", "main"),
    ("u01", "i3", "2024-03-03 09:30:00", "side-1"),
    ("u01", "new-item", "2024-03-03 10:00:00", "side-2"),
    ("u02", "i7", "2024-03-02 12:00:00", "main"),
    ("u02", "new-item", "2024-03-04 00:00:00", "main"),
    ("u05", "i1", "2024-03-05 23:59:59", "side-1"),
    ("ghost", "i1", "2024-03-03 10:00:00", "main"),
] + [(f"u{u:02d}", f"i{(u * 7 + k) % 50}", f"2024-03-0{2 + k % 4} {u % 24:02d}:{k:02d}:00", "main")
     for u in range(30) for k in range(6)]


def write_browses(path: Path, events: list[tuple[str, str, str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["uid", "iid", "at", "dom"])
        writer.writerows(events)
    return path


def schema_with_logs(path: Path, **changes: object) -> dict:
    return log_schema(behaviour_logs={"inputs": [str(path)], **LOG_COLUMNS}, **changes)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browses")
    records = make_log()
    source = write_csv(folder / "log.csv", records)
    browses = write_browses(folder / "browse.csv", BROWSES)
    plain = import_dataset(parse_spec(log_schema(), "s"), [source], folder / "plain")
    report = import_dataset(parse_spec(schema_with_logs(browses), "s"), [source], folder / "logged",
                            behaviour=[browses])
    return records, plain, report


def test_behaviour_events_join_the_history_and_never_become_rows(imported) -> None:
    records, plain, report = imported
    ds, without = load_dataset(report.path), load_dataset(plain.path)
    assert ds.n_rows == without.n_rows
    for column in ("label", "ts", "period", "domain"):
        np.testing.assert_array_equal(ds.rows[column], without.rows[column])
    known = {r["user"] for r in records}
    kept = [b for b in BROWSES if b[0] in known]
    assert len(kept) == len(BROWSES) - 1
    assert ds.history.n_events == without.history.n_events + len(kept)
    assert report.counts["behaviour events"] == len(kept)
    assert report.counts["behaviour events of users without records"] == 1
    # hist_end counts clicks and browses of the row's user strictly before the row, none at or after it
    users = read_id_map(report.path, "user_id")
    events = [(r["user"], seconds(r["when"])) for r in records if r["label"] == "1"]
    events += [(u, seconds(t)) for u, _, t, _ in kept]
    for r in range(ds.n_rows):
        user, ts = users[ds.rows["user_id"][r]], int(ds.rows["ts"][r])
        assert ds.rows["hist_end"][r] == sum(1 for u, t in events if u == user and t < ts), r


def test_behaviour_items_get_ids_after_the_records_and_their_records_category(imported) -> None:
    _, plain, report = imported
    items = read_id_map(report.path, "item_id")
    assert list(items[: len(read_id_map(plain.path, "item_id"))]) == list(read_id_map(plain.path, "item_id"))
    assert items[-1] == "new-item"  # the only item no record shows
    history = pq.read_table(report.path / "history.parquet").to_pydict()
    new_id = len(items) - 1
    categories = read_id_map(report.path, "category_id")
    domains = ["S", "T1", "T2"]
    u01 = list(read_id_map(report.path, "user_id")).index("u01")
    mine = [(i, c, domains[d], t) for u, i, c, d, t in zip(*history.values(), strict=True) if u == u01]
    browsed = [(i, c, d) for i, c, d, t in mine if t in (seconds("2024-03-01 08:00:00"),
                                                         seconds("2024-03-03 10:00:00"))]
    i3 = list(items).index("i3")
    assert sorted(browsed) == sorted([(i3, list(categories).index("c3"), "S"), (new_id, 0, "T2")])


def test_a_log_event_in_an_unknown_domain_is_refused_with_its_line(tmp_path) -> None:
    source = write_csv(tmp_path / "log.csv", make_log(60))
    browses = write_browses(tmp_path / "browse.csv", BROWSES[:3] + [("u01", "i3", "2024-03-03 09:30:00", "moon")])
    with pytest.raises(InputError, match=re.escape(f"{browses}: line 5, column 'dom': is not one of the domains")):
        import_dataset(parse_spec(schema_with_logs(browses), "s"), [source], tmp_path / "no", behaviour=[browses])
    skipped = import_dataset(parse_spec(schema_with_logs(browses, on_bad_rows="skip"), "s"), [source],
                             tmp_path / "skip", behaviour=[browses])
    assert skipped.counts["skipped behaviour dom: unknown domain"] == 1
    assert skipped.counts["behaviour events"] == 3


def test_a_parquet_log_gives_the_same_history(imported, tmp_path) -> None:
    records, _, report = imported
    source = write_csv(tmp_path / "log.csv", records)
    table = pa.table({name: [b[k] for b in BROWSES] for k, name in enumerate(["uid", "iid", "at", "dom"])})
    pq.write_table(table, tmp_path / "browse.parquet")
    again = import_dataset(parse_spec(schema_with_logs(tmp_path / "browse.parquet"), "s"), [source], tmp_path / "pq",
                           behaviour=[tmp_path / "browse.parquet"])
    assert (again.path / "history.parquet").read_bytes() == (report.path / "history.parquet").read_bytes()


def test_behaviour_log_refusals(tmp_path) -> None:
    browses = write_browses(tmp_path / "browse.csv", BROWSES[:2])
    source = write_csv(tmp_path / "log.csv", make_log(60))
    with pytest.raises(SpecError, match="behaviour_logs: goes with event histories"):
        parse_spec(schema_with_logs(browses, sequences={"column": "item"}), "s")
    with pytest.raises(SpecError, match="behaviour_logs: needs time.column"):
        parse_spec(log_schema(behaviour_logs={"inputs": ["b.csv"], **LOG_COLUMNS},
                              time={"periods": 4, "n_transfer": 1}), "s")
    with pytest.raises(SpecError, match=r"behaviour_logs: user, item, time and domain must be four different"):
        parse_spec(log_schema(behaviour_logs={"inputs": ["b.csv"], **LOG_COLUMNS, "item": "uid"}), "s")
    with pytest.raises(CtlError, match="behaviour-log files go with a schema's behaviour_logs section"):
        import_dataset(parse_spec(log_schema(), "s"), [source], tmp_path / "no", behaviour=[browses])
    missing = write_browses(tmp_path / "other.csv", [])
    missing.write_text("uid,iid,when,dom\n")
    with pytest.raises(InputError, match=r"has no column 'at' \(behaviour_logs.time"):
        import_dataset(parse_spec(schema_with_logs(missing), "s"), [source], tmp_path / "no", behaviour=[missing])


def test_sequences_long_len_takes_any_size(tmp_path) -> None:
    spec = parse_spec(log_schema(sequences={"short_len": 50, "long_len": 100_000}), "s")
    out = import_dataset(spec, [write_csv(tmp_path / "log.csv", make_log(100))], tmp_path / "long").path
    assert load_dataset(out).schema.long_len == 100_000
