"""``ctl data append``: an imported dataset grows by a period of new logs, keeping every stored row
and id (with explicit labels: as importing everything at once makes it), and refuses older records,
another schema and a doubled append in one line each; a killed append leaves the dataset as it was."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ctl.data.append import append_logs
from ctl.data.dataset import load_dataset
from ctl.data.importer import import_dataset, load_spec, parse_spec
from ctl.data.lineage import read_lineage
from ctl.errors import CtlError
from ctl.io import KILL_AT_ENV
from test_importer import IMPLICIT_SCHEMA, log_schema, make_log, write_csv, write_event_lines, write_schema

LAST_DAY = "2024-03-06"


@pytest.fixture()
def logs(tmp_path):
    """The test log cut into the days before 2024-03-06 and that day; the dataset of the first part."""
    records = make_log(n=600)
    old = [r for r in records if r["when"] < LAST_DAY]
    new = [r for r in records if r["when"] >= LAST_DAY]
    schema = write_schema(tmp_path / "schema.yaml", log_schema())
    paths = {"old": write_csv(tmp_path / "old.csv", old), "new": write_csv(tmp_path / "new.csv", new),
             "all": write_csv(tmp_path / "all.csv", old + new)}
    dataset = import_dataset(load_spec(schema), [paths["old"]], tmp_path / "ds").path
    return tmp_path, schema, paths, dataset


def same_table(a: pa.Table, b: pa.Table) -> bool:
    """Equal names, types and values; whether a column is marked non-nullable is the writer's
    business (DuckDB marks what it can prove, pyarrow from numpy marks nothing)."""
    types = [(f.name, f.type) for f in a.schema] == [(f.name, f.type) for f in b.schema]
    return types and a.cast(b.schema).equals(b)


def test_an_append_equals_importing_everything_at_once(logs) -> None:
    tmp_path, schema, paths, dataset = logs
    before = load_dataset(dataset).schema
    shutil.copy(dataset / "rows.parquet", tmp_path / "old_rows.parquet")
    report = append_logs(dataset, [paths["new"]])
    at_once = import_dataset(load_spec(schema), [paths["old"], paths["new"]], tmp_path / "at_once").path
    for name in ("rows.parquet", "history.parquet", "origin.parquet"):
        assert same_table(pq.read_table(dataset / name), pq.read_table(at_once / name)), name
    for table in sorted((at_once / "id_maps").glob("*.parquet")):
        assert same_table(pq.read_table(dataset / "id_maps" / table.name), pq.read_table(table)), table.name
    after = load_dataset(dataset).schema  # validates
    # the history periods stay; the earlier test slice became a transfer period, the new day is the test slice
    assert (after.n_history, after.n_transfer) == (before.n_history, before.n_transfer + 1)
    assert report.periods == (before.test_period + 1,) and after.test_period == before.test_period + 1
    assert after.feature("user_id").vocab >= before.feature("user_id").vocab
    (ancestor,) = read_lineage(dataset)
    assert ancestor.test_period == before.test_period
    assert report.new_rows == report.n_rows - pq.read_metadata(tmp_path / "old_rows.parquet").num_rows


def test_appending_the_same_logs_twice_is_refused(logs) -> None:
    tmp_path, _, paths, dataset = logs
    with pytest.raises(CtlError, match=r"old.csv is already an input of .*: each append takes new logs only"):
        append_logs(dataset, [paths["old"]])
    append_logs(dataset, [paths["new"]])
    copy = shutil.copy(paths["new"], tmp_path / "new_again.csv")
    with pytest.raises(CtlError, match=r"new_again.csv holds the same bytes as .*new.csv"):
        append_logs(dataset, [Path(copy)])


def test_records_of_a_stored_period_are_refused_naming_file_and_line(logs) -> None:
    tmp_path, _, _paths, dataset = logs
    records = make_log(n=600)
    late = [r for r in records if r["when"] >= LAST_DAY]
    early = dict(late[0], when="2024-03-03 10:00:00")
    mixed = write_csv(tmp_path / "mixed.csv", [*late[:3], early, *late[3:]])
    meta = (dataset / "meta.yaml").read_bytes()
    with pytest.raises(CtlError, match=r"mixed.csv: line 5 falls in period 1 \(2024-03-03 .*which the dataset already "
                                       r"has \(its last period is 3"):
        append_logs(dataset, [mixed])
    assert (dataset / "meta.yaml").read_bytes() == meta


def test_inputs_of_another_schema_are_refused(logs) -> None:
    tmp_path, _, _paths, dataset = logs
    other = tmp_path / "other.csv"
    other.write_text("user,item,when\nu1,i1,2024-03-06 10:00:00\n")
    with pytest.raises(Exception, match="other.csv") as refusal:
        append_logs(dataset, [other])
    assert "\n" not in str(refusal.value)


def test_a_killed_append_leaves_the_dataset_as_it_was(logs) -> None:
    tmp_path, _, paths, dataset = logs
    files = {p.relative_to(dataset): p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    env = dict(os.environ, **{KILL_AT_ENV: "append-swap"})
    code = ("import sys; from ctl.data.append import append_logs; "
            f"append_logs({str(dataset)!r}, [{str(paths['new'])!r}])")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert {p.relative_to(dataset): p.read_bytes() for p in dataset.rglob("*") if p.is_file()} == files
    assert list(tmp_path.glob(".ds.append-*"))  # the killed append's staging folder, left for the next one
    append_logs(dataset, [paths["new"]])
    assert not list(tmp_path.glob(".ds.append-*"))
    assert yaml.safe_load((dataset / "meta.yaml").read_text())["schema"]["n_transfer"] == 2


def test_the_cli_appends_and_says_what_it_added(logs) -> None:
    tmp_path, _, paths, dataset = logs
    ctl = Path(sys.executable).with_name("ctl")
    env = {k: v for k, v in os.environ.items() if k != "CTL_COMMAND"}
    # any path: a comma and a space in a file name are no list syntax
    odd = tmp_path / "day 4, new.csv"
    shutil.copyfile(paths["new"], odd)
    done = subprocess.run([str(ctl), "data", "append", str(dataset), str(odd), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "as period(s) 4" in done.stdout and "the test slice is now period 4" in done.stdout
    again = subprocess.run([str(ctl), "data", "append", str(dataset), str(odd)],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
    assert again.returncode != 0 and "already an input" in again.stderr
    assert len([line for line in again.stderr.splitlines() if line.strip()]) == 1


def test_a_dataset_cut_in_file_order_is_refused(tmp_path) -> None:
    time = {"column": None, "periods": 4, "n_transfer": 1}
    schema = write_schema(tmp_path / "schema.yaml", log_schema(time=time))
    records = make_log(n=400)
    dataset = import_dataset(load_spec(schema), [write_csv(tmp_path / "a.csv", records[:300])], tmp_path / "ds").path
    with pytest.raises(CtlError, match=r"cuts its records into 4 equal chunks in file order \(time.periods\)"):
        append_logs(dataset, [write_csv(tmp_path / "b.csv", records[300:])])


def test_a_run_continued_after_an_append_equals_a_run_on_everything_imported_at_once(logs) -> None:
    from hydra import compose, initialize_config_module

    from ctl.training.protocol import run_train
    from test_continuation import assert_close, assert_same_checkpoint, comparable

    tmp_path, schema, paths, dataset = logs
    at_once = tmp_path / "at_once"
    spec = yaml.safe_load(schema.read_text())
    spec["time"]["n_transfer"] = 2  # the appended dataset's layout: the history stays, the transfer periods grow
    import_dataset(load_spec(write_schema(tmp_path / "schema_t2.yaml", spec)), [paths["old"], paths["new"]], at_once)

    def cfg(home: Path, path: Path, *overrides: str):
        with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
            return compose(config_name="train", overrides=[
                f"home={home}", f"+data.path={path}", "data.name=shop_log", "data.domain=T1",
                "model=ctnet", "model/size=small", "progress=false", "print_table=false", *overrides])

    run_train(cfg(tmp_path / "home", dataset), tmp_path / "short")
    append_logs(dataset, [paths["new"]])
    continued = run_train(cfg(tmp_path / "home", dataset, f"continue_from={tmp_path / 'short'}"), tmp_path / "cont")
    full = run_train(cfg(tmp_path / "scratch", at_once), tmp_path / "full")
    assert continued["dataset"] != full["dataset"]  # the provenance differs (two imports), the rows do not
    assert_close(comparable({k: v for k, v in continued.items() if k != "dataset"}),
                 comparable({k: v for k, v in full.items() if k != "dataset"}))
    last = f"period_{full['test']['period'] - 1}.ckpt"
    assert_same_checkpoint(tmp_path / "cont" / "checkpoints" / last, tmp_path / "full" / "checkpoints" / last)
    new_rows = next(r["train_rows"] for r in full["periods"] if r["period"] == full["test"]["period"] - 1)
    assert continued["cost"]["own"]["train_rows"] == new_rows


def test_sampled_negatives_of_the_stored_periods_are_kept_and_the_new_period_gets_its_own(tmp_path) -> None:
    everything = tmp_path / "all.txt"
    write_event_lines(everything, users=60, seed=3)
    cut = 1_700_000_000 + 30 * 86_400  # the first second of the fourth 10-day period
    parts = {"old": [], "new": []}
    for line in everything.read_text().splitlines():
        user, seq, *events = line.split("\t")
        for part, keep in (("old", lambda ts: ts < cut), ("new", lambda ts: ts >= cut)):
            chosen = [e for e in events if keep(int(e.split("|")[1]))]
            if chosen:
                parts[part].append("\t".join([user, seq, *chosen]))
    for part, lines in parts.items():
        (tmp_path / f"{part}.txt").write_text("\n".join(lines) + "\n")
    spec = parse_spec(IMPLICIT_SCHEMA, "implicit schema")
    dataset = import_dataset(spec, [tmp_path / "old.txt"], tmp_path / "ds").path
    stored = pq.read_table(dataset / "rows.parquet")
    append_logs(dataset, [tmp_path / "new.txt"])
    grown = load_dataset(dataset)  # validated: every stored row's hist_end still counts the right events
    rows = pq.read_table(dataset / "rows.parquet")
    assert same_table(rows.slice(0, stored.num_rows), stored)
    new = rows.slice(stored.num_rows).to_pydict()
    assert set(new["period"]) == {3} and 0 in new["label"] and 1 in new["label"]
    assert (grown.schema.n_history, grown.schema.n_transfer) == (1, 2)
    origin = pq.read_table(dataset / "origin.parquet").to_pydict()
    assert len(origin["input"]) == rows.num_rows and set(origin["input"][stored.num_rows:]) == {1}
    assert grown.meta["provenance"]["appended"] == [{"inputs": [str(tmp_path / "new.txt")], "periods": [3]}]


# --- chained appends, concurrent appends, the swap off Linux -----------------------------------------

RULES = {"labels": {"column": "label"}, "past": {"negatives": 2, "seed": 3},
         "all": {"negatives": 2, "seed": 3, "exclude": "all"}}


def ten_days(folder: Path, n: int = 900) -> dict[str, Path]:
    """A click log of 2024-03-01 .. 03-10 (day 1 before the schema's start) cut into days 1-7 and a
    file for each of days 8, 9 and 10, and one file of all ten days."""
    rng = np.random.default_rng(11)
    records = []
    for record in make_log(n=n, seed=4):
        day = int(rng.integers(0, 10))
        when = f"2024-03-{day + 1:02d} {record['when'][11:]}"
        records.append(dict(record, when=when))
    records.sort(key=lambda r: r["when"])
    parts = {"days_1_7": [r for r in records if r["when"] < "2024-03-08"]}
    for day in (8, 9, 10):
        parts[f"day_{day}"] = [r for r in records if r["when"][:10] == f"2024-03-{day:02d}"]
    parts["all"] = records
    return {name: write_csv(folder / f"{name}.csv", rows) for name, rows in parts.items()}


def assert_same_dataset(appended: Path, at_once: Path) -> None:
    """Every data file equal in values and Parquet schema (not-null marks included); the same layout,
    inputs (absolute paths, sha256) and counts."""
    files = ["rows.parquet", "history.parquet", "origin.parquet",
             *(f"id_maps/{p.name}" for p in sorted((at_once / "id_maps").glob("*.parquet")))]
    for name in files:
        a, b = pq.read_table(appended / name), pq.read_table(at_once / name)
        assert a.schema.equals(b.schema) and a.equals(b), name
    meta_a, meta_b = load_dataset(appended).meta, load_dataset(at_once).meta  # both validate
    assert meta_a["schema"] == meta_b["schema"] and meta_a["content"] == meta_b["content"]
    for key in ("inputs", "counts", "periods", "id_maps"):
        assert meta_a["provenance"][key] == meta_b["provenance"][key], key


@pytest.mark.parametrize("rule", list(RULES))
def test_appends_chain_and_equal_one_import_of_all_days(tmp_path, rule) -> None:
    logs = ten_days(tmp_path)
    schema = log_schema(label=RULES[rule])
    dataset = import_dataset(parse_spec(schema, "log"), [logs["days_1_7"]], tmp_path / "ds").path
    for day in (8, 9, 10):
        append_logs(dataset, [logs[f"day_{day}"]])
    schema["time"]["n_transfer"] = 4  # the appended layout: the history periods stay
    inputs = [logs[name] for name in ("days_1_7", "day_8", "day_9", "day_10")]
    at_once = import_dataset(parse_spec(schema, "log"), inputs, tmp_path / "at_once").path
    assert_same_dataset(dataset, at_once)
    provenance = load_dataset(dataset).meta["provenance"]
    assert all(Path(e["path"]).is_absolute() and len(e["sha256"]) == 64 for e in provenance["inputs"])
    assert [a["periods"] for a in provenance["appended"]] == [[6], [7], [8]]
    if rule != "all":  # every stored row kept: the earlier versions are ancestors
        assert [a.test_period for a in read_lineage(dataset)] == [7, 6, 5]


def test_runs_continue_after_every_append_and_equal_a_run_on_all_days(tmp_path) -> None:
    from hydra import compose, initialize_config_module

    from ctl.training.protocol import run_train
    from test_continuation import assert_close, comparable

    logs = ten_days(tmp_path, n=600)
    schema = log_schema(label=RULES["past"])
    dataset = import_dataset(parse_spec(schema, "log"), [logs["days_1_7"]], tmp_path / "ds").path

    def cfg(home: Path, path: Path, *overrides: str):
        with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
            return compose(config_name="train", overrides=[
                f"home={home}", f"+data.path={path}", "data.name=shop_log", "data.domain=T1", "model=ctnet",
                "model/size=small", "progress=false", "print_table=false", *overrides])

    run_train(cfg(tmp_path / "home", dataset), tmp_path / "run_7")
    for day in (8, 9, 10):
        append_logs(dataset, [logs[f"day_{day}"]])
        continued = run_train(cfg(tmp_path / "home", dataset, f"continue_from={tmp_path / f'run_{day - 1}'}"),
                              tmp_path / f"run_{day}")
        assert continued["periods"][-1]["period"] == day - 3  # day 8 made the earlier test slice (period 5) trainable
    schema["time"]["n_transfer"] = 4
    inputs = [logs[name] for name in ("days_1_7", "day_8", "day_9", "day_10")]
    at_once = import_dataset(parse_spec(schema, "log"), inputs, tmp_path / "at_once").path
    full = run_train(cfg(tmp_path / "scratch", at_once), tmp_path / "full")
    assert_close(comparable({k: v for k, v in continued.items() if k != "dataset"}),
                 comparable({k: v for k, v in full.items() if k != "dataset"}))
    new_rows = next(r["train_rows"] for r in full["periods"] if r["period"] == full["test"]["period"] - 1)
    assert continued["cost"]["own"]["train_rows"] == new_rows  # the last continuation trained period 7 alone


def test_two_concurrent_appends_one_waits_and_none_is_lost(tmp_path) -> None:
    from ctl.io import file_lock

    logs = ten_days(tmp_path)
    schema = write_schema(tmp_path / "schema.yaml", log_schema(label=RULES["past"]))
    dataset = import_dataset(load_spec(schema), [logs["days_1_7"]], tmp_path / "ds").path
    halves = {}  # day 8 in two files: each is a valid append, the second one then is not
    lines = logs["day_8"].read_text().splitlines(keepends=True)
    for name, part in (("a", lines[1::2]), ("b", lines[2::2])):
        halves[name] = tmp_path / f"day_8{name}.csv"
        halves[name].write_text(lines[0] + "".join(part))
    ctl = Path(sys.executable).with_name("ctl")
    env = {k: v for k, v in os.environ.items() if k != "CTL_COMMAND"}
    before = (dataset / "meta.yaml").read_bytes()
    with file_lock(tmp_path / ".ds.lock"):  # the dataset's lock: both appends must wait for it
        procs = {name: subprocess.Popen([str(ctl), "data", "append", str(dataset), str(path),
                                         "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env) for name, path in halves.items()}
        time.sleep(5)
        assert all(p.poll() is None for p in procs.values())  # still waiting
        assert (dataset / "meta.yaml").read_bytes() == before
    done = {name: (p.wait(timeout=300), *p.communicate()) for name, p in procs.items()}
    won = [name for name, (code, _, _) in done.items() if code == 0]
    assert len(won) == 1, done
    (lost,) = set(done) - set(won)
    assert "falls in period 6" in done[lost][2] and "already has" in done[lost][2]
    at_once = import_dataset(load_spec(schema), [logs["days_1_7"], halves[won[0]]], tmp_path / "at_once").path
    for name in ("rows.parquet", "history.parquet"):
        assert pq.read_table(dataset / name).equals(pq.read_table(at_once / name)), name


def test_without_an_atomic_exchange_the_swap_is_two_renames(logs, monkeypatch) -> None:
    from ctl.data import append

    tmp_path, _, paths, dataset = logs
    monkeypatch.setattr(append, "_rename_exchange", lambda: None)  # a system without renameat2
    report = append_logs(dataset, [paths["new"]])
    assert report.periods == (4,) and load_dataset(dataset).schema.test_period == 4
    assert not list(tmp_path.glob(".ds.append-*"))
    # a file system that refuses the exchange (EINVAL) gets the two renames too
    monkeypatch.setattr(append, "_rename_exchange", lambda: (lambda a, b: errno.EINVAL))
    later = write_csv(tmp_path / "later.csv", [dict(r, when="2024-03-07 10:00:00") for r in make_log(n=40)])
    assert append_logs(dataset, [later]).periods == (5,)


def test_an_append_killed_between_the_two_renames_names_where_the_dataset_is(logs) -> None:
    tmp_path, _, paths, dataset = logs
    env = dict(os.environ, **{KILL_AT_ENV: "append-between-renames"})
    code = ("import ctl.data.append as a; a._rename_exchange = lambda: None; "
            f"a.append_logs({str(dataset)!r}, [{str(paths['new'])!r}])")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    (left,) = tmp_path.glob(".ds.append-*/previous")
    with pytest.raises(CtlError, match=rf"ds is missing: an append was killed while swapping it in; its data is in "
                                       rf"{left}"):
        append_logs(dataset, [paths["new"]])
