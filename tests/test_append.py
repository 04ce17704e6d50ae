"""``ctl data append``: an imported dataset grows by a period of new logs, keeping every stored row
and id (with explicit labels: as importing everything at once makes it), and refuses older records,
another schema and a doubled append in one line each; a killed append leaves the dataset as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    _tmp_path, _, paths, dataset = logs
    ctl = Path(sys.executable).with_name("ctl")
    env = {k: v for k, v in os.environ.items() if k != "CTL_COMMAND"}
    done = subprocess.run([str(ctl), "data", "append", str(dataset), f"inputs=[{paths['new']}]", "progress=false"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "as period(s) 4" in done.stdout and "the test slice is now period 4" in done.stdout
    again = subprocess.run([str(ctl), "data", "append", str(dataset), f"inputs=[{paths['new']}]"],
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
