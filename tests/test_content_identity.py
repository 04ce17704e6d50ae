"""A dataset is known by its content: ``meta.yaml`` records the sha256 of its data files when it is
written, so the fingerprint changes with the data (an input edited in place at the same size
included), and runs, tracks and artifacts of the earlier data are refused or rebuilt. Cached
synthetic worlds are keyed by the generator's version too."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import random_columns
from ctl.data.dataset import load_dataset, read_fingerprint, write_dataset
from ctl.data.importer import import_dataset, parse_spec
from ctl.data.registry import dataset_dir, ensure_dataset
from ctl.errors import CtlError
from ctl.io import file_sha256
from test_importer import log_schema, make_log, write_csv, write_schema


def edit_in_place(path: Path) -> None:
    """Change one user of the first record, keeping the size and the modification time."""
    stat = path.stat()
    lines = path.read_text().splitlines(keepends=True)
    user = lines[1].split(",", 1)[0]
    other = "u98" if user != "u98" else "u97"
    lines[1] = other + lines[1][len(user):]
    path.write_text("".join(lines))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def test_the_fingerprint_covers_the_data_files(tmp_path) -> None:
    schema, rows, history = random_columns()
    first = write_dataset(tmp_path / "a", schema, rows, history, provenance={"made": "by hand"})
    rows["label"] = 1 - rows["label"]  # same sizes, same provenance, other labels
    second = write_dataset(tmp_path / "b", schema, rows, history, provenance={"made": "by hand"})
    assert read_fingerprint(first) != read_fingerprint(second)
    meta = load_dataset(first).meta
    assert meta["content"] == {name: file_sha256(first / name) for name in ("history.parquet", "rows.parquet")}


def test_an_input_edited_in_place_at_the_same_size_makes_another_dataset(tmp_path) -> None:
    source = write_csv(tmp_path / "log.csv", make_log(120))
    schema = write_schema(tmp_path / "schema.yaml", log_schema())
    data_cfg = OmegaConf.create({"name": "mylog", "importer": {"schema": str(schema), "inputs": ["log.csv"],
                                                               "root": str(tmp_path), "max_rows": None}})
    first = ensure_dataset(data_cfg, tmp_path / "home", progress=False)
    edit_in_place(source)
    second = ensure_dataset(data_cfg, tmp_path / "home", progress=False)
    assert second != first and read_fingerprint(second) != read_fingerprint(first)
    inputs = load_dataset(second).meta["provenance"]["inputs"]
    assert inputs[0]["path"] == str(source.resolve()) and inputs[0]["sha256"] == file_sha256(source)


def test_runs_on_an_edited_input_are_refused_by_export_and_continuation(tmp_path, caplog) -> None:
    from hydra import compose, initialize_config_module

    from ctl.serve.export import load_run_model
    from ctl.training.protocol import run_train

    source = write_csv(tmp_path / "log.csv", make_log(400))
    spec = parse_spec(log_schema(), "log")
    dataset = import_dataset(spec, [source], tmp_path / "ds").path

    def cfg(*overrides: str):
        with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
            return compose(config_name="train", overrides=[
                f"home={tmp_path / 'home'}", f"+data.path={dataset}", "data.name=shop_log", "data.domain=T1",
                "model=ctnet", "model/size=small", "progress=false", "print_table=false", *overrides])

    run_train(cfg(), tmp_path / "run")
    tracks = sorted(p.name for p in (tmp_path / "home" / "tracks").iterdir() if not p.name.startswith("."))
    edit_in_place(source)  # and import it again where the dataset was: same sizes, same counts
    shutil.rmtree(dataset)
    import_dataset(spec, [source], dataset)
    with pytest.raises(CtlError, match=r"is not the one the run trained on .*it was replaced after the run"):
        load_run_model(tmp_path / "run")
    with pytest.raises(CtlError, match=r"continue_from=.*run: its dataset \(\w+\) is not an earlier version"):
        run_train(cfg(f"continue_from={tmp_path / 'run'}"), tmp_path / "continued")
    with caplog.at_level("WARNING", logger="ctl.training.tracks"):
        run_train(cfg(), tmp_path / "again")  # the tracks of the earlier data are not reused: built anew
    rebuilt = sorted(p.name for p in (tmp_path / "home" / "tracks").iterdir() if not p.name.startswith("."))
    assert set(tracks) < set(rebuilt)
    said = [r.getMessage() for r in caplog.records if "changed since track" in r.getMessage()]
    assert len(said) == 2 and all(f"the dataset at {dataset} changed since track" in line for line in said), said


def test_cached_worlds_are_keyed_by_the_generator_version(monkeypatch) -> None:
    from ctl.data import registry

    data_cfg = OmegaConf.create({"name": "world", "generator": {"_target_": "ctl.data.synthetic.SyntheticWorld",
                                                                "seed": 1}})
    before = dataset_dir(data_cfg, "/home")
    monkeypatch.setattr(registry, "GENERATOR_VERSION", registry.GENERATOR_VERSION + 1)
    after = dataset_dir(data_cfg, "/home")
    assert before != after and before.parent == after.parent and after.name.startswith("world-")
