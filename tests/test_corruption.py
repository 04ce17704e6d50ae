"""Half-written or damaged artifacts are never used; concurrent jobs build a track once.

* a cached track whose file was truncated, removed or altered is detected by its manifest and
  rebuilt (the same weights and metrics), never trained on;
* a track build killed after training, before its manifest is in place, is never taken for a
  finished track;
* an atomic write killed before its rename leaves the old file intact;
* two processes that need the same track build it once;
* random corruptions of a tiny dataset are refused naming the file, or load exactly what the
  files hold (hypothesis).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_random_dataset
from ctl.data.dataset import HISTORY_FILE, META_FILE, ROWS_FILE, DatasetError, load_dataset
from ctl.data.registry import load_for
from ctl.data.schema import HISTORY_COLUMNS, ROW_COLUMNS
from ctl.io import (
    KILL_AT_ENV,
    atomic_write_json,
    manifest_problem,
    remove_stale_temporaries,
)
from ctl.training import tracks
from ctl.training.protocols.common import base_net

# timings, and the folder the dataset lay in: they differ between two builds of one track
TIMINGS = {"wall_s", "cpu_s", "peak_rss_mb", "dataset_path"}


def make_cfg(home: Path, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[
            "data=synthetic_tiny", f"home={home}", "progress=false", "print_table=false", "model=base",
            "data.domain=C", *overrides])


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    return value


def in_child(action: Callable[[], object], env: dict[str, str] | None = None) -> int:
    """Run ``action`` in a forked child; return its exit code (negative: killed by that signal)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.environ.update(env or {})
            action()
        except BaseException:  # noqa: BLE001 (report, then leave without the parent's cleanup)
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    load_for(make_cfg(home).data, home, progress=False)
    return home


def track_of(home: Path) -> tracks.Track:
    cfg = make_cfg(home)
    dataset = load_for(cfg.data, home, progress=False)
    return tracks.ensure_track(cfg, dataset, "C", base_net(cfg), "base")


def weights(track: tracks.Track) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted((track.path / "checkpoints").glob("period_*.ckpt")):
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        out.update({f"{path.name}/{k}": v for k, v in state.items()})
    return out


@pytest.fixture(scope="module")
def pristine_track(home) -> tuple[dict, dict[str, torch.Tensor], bytes]:
    track = track_of(home)
    assert manifest_problem(track.path) is None
    return track.metrics(), weights(track), (track.path / "predictions.parquet").read_bytes()


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {
    "checkpoint-truncated": ("checkpoints/period_3.ckpt", cut_in_half, (r"checkpoints/period_3\.ckpt has \d+ bytes, the "
                                                                        r"manifest says \d+")),
    "checkpoint-removed": ("checkpoints/period_5.ckpt", Path.unlink, r"checkpoints/period_5\.ckpt is missing"),
    "metrics-removed": ("metrics.json", Path.unlink, r"metrics\.json is missing"),
    "predictions-altered": ("predictions.parquet", flip_a_byte, (r"predictions\.parquet differs from the file the "
                                                                r"manifest recorded \(sha256 mismatch\)")),
    "manifest-removed": ("manifest.json", Path.unlink, r"manifest\.json is missing \(the folder was never finished\)"),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_damaged_track_is_detected_and_rebuilt(case, home, pristine_track, caplog) -> None:
    name, damage, problem = DAMAGES[case]
    metrics, tensors, predictions = pristine_track
    track = track_of(home)
    damage(track.path / name)
    assert re.fullmatch(problem, manifest_problem(track.path))
    with caplog.at_level(logging.WARNING, logger="ctl.training.tracks"):
        rebuilt = track_of(home)
    assert rebuilt.path == track.path
    assert any(f"track {track.path} is damaged (" in r.getMessage() and "): rebuilding it" in r.getMessage()
               and re.search(problem, r.getMessage()) for r in caplog.records), caplog.text
    assert manifest_problem(rebuilt.path) is None
    assert without_timings(rebuilt.metrics()) == without_timings(metrics)
    assert (rebuilt.path / "predictions.parquet").read_bytes() == predictions
    again = weights(rebuilt)
    assert again.keys() == tensors.keys() and all(torch.equal(again[k], v) for k, v in tensors.items())


def test_a_track_killed_before_its_manifest_is_never_taken_for_finished(home, pristine_track, tmp_path) -> None:
    fresh = tmp_path / "home"
    shutil.copytree(home / "datasets", fresh / "datasets")
    assert in_child(lambda: track_of(fresh), {KILL_AT_ENV: "write:manifest.json"}) == -signal.SIGKILL
    final = track_of(home).path
    building = tracks.building_folder(fresh / "tracks" / final.name)
    assert (building / "metrics.json").is_file() and not (fresh / "tracks" / final.name).exists()
    track = track_of(fresh)  # finishes from the building folder's last period checkpoint
    assert manifest_problem(track.path) is None and not building.exists()
    assert without_timings(track.metrics()) == without_timings(pristine_track[0])


def test_an_atomic_write_killed_before_its_rename_leaves_the_old_file(tmp_path) -> None:
    path = atomic_write_json(tmp_path / "metrics.json", {"auc": 0.5})
    code = in_child(lambda: atomic_write_json(path, {"auc": 0.9}), {KILL_AT_ENV: "write:metrics.json"})
    assert code == -signal.SIGKILL
    assert json.loads(path.read_text()) == {"auc": 0.5}
    (leftover,) = tmp_path.glob(".metrics.json.tmp-*")
    assert json.loads(leftover.read_text()) == {"auc": 0.9}  # complete, but under a name nobody reads
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_two_processes_needing_the_same_track_build_it_once(home, pristine_track, tmp_path, monkeypatch) -> None:
    fresh = tmp_path / "home"
    shutil.copytree(home / "datasets", fresh / "datasets")
    builds = tmp_path / "builds.log"
    build = tracks._build

    def counted_build(*args, **kwargs):
        with open(builds, "a") as log:
            log.write(f"{os.getpid()}\n")
        return build(*args, **kwargs)

    monkeypatch.setattr(tracks, "_build", counted_build)
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                track_of(fresh)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert codes == [0, 0]
    assert len(builds.read_text().split()) == 1
    (track,) = (fresh / "tracks").glob("base-C-*")
    assert manifest_problem(track) is None
    assert without_timings(json.loads((track / "metrics.json").read_text())) == without_timings(pristine_track[0])
    assert not list((fresh / "tracks").glob(".*.building"))


# --- random corruptions of a dataset -------------------------------------------------------------

DATASET_FILES = (META_FILE, ROWS_FILE, HISTORY_FILE)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_random_dataset(tmp_path_factory.mktemp("tiny"), n_users=12, n_items=15, n_rows=40, n_events=90)


ROW_FEATURES = ("user_id", "item_id", "category_id", "seller_id", "price_bucket", "source_only")
COLUMNS = [(ROWS_FILE, c) for c in (*ROW_FEATURES, *ROW_COLUMNS)] + [(HISTORY_FILE, c) for c in HISTORY_COLUMNS]
DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64", "bool",
          "string")
VALUES = st.one_of(st.integers(-3, 200), st.sampled_from([2**31, 2**40, -(2**40)]))

CORRUPTIONS = st.one_of(
    st.tuples(st.just("value"), st.sampled_from(COLUMNS), st.integers(0, 10**6), VALUES),
    st.tuples(st.just("dtype"), st.sampled_from(COLUMNS), st.sampled_from(DTYPES)),
    st.tuples(st.just("null"), st.sampled_from(COLUMNS), st.integers(0, 10**6)),
    st.tuples(st.just("drop"), st.sampled_from(COLUMNS)),
    st.tuples(st.just("truncate"), st.sampled_from(DATASET_FILES), st.floats(0.0, 1.0)),
)


def corrupt(folder: Path, corruption: tuple) -> None:
    """Apply one corruption of :data:`CORRUPTIONS` to the files of ``folder`` (written without any check)."""
    kind = corruption[0]
    if kind == "truncate":
        _, file, keep = corruption
        data = (folder / file).read_bytes()
        (folder / file).write_bytes(data[: int(len(data) * keep)])
        return
    file, column = corruption[1]
    table = pq.read_table(folder / file)
    values = table.column(column).to_numpy()
    if kind == "drop":
        table = table.drop_columns([column])
    else:
        if kind == "value":
            values = values.astype(np.int64)
            values[corruption[2] % len(values)] = corruption[3]
            array = pa.array(values)
        elif kind == "null":
            row = corruption[2] % len(values)
            array = pa.array([None if i == row else int(v) for i, v in enumerate(values)], type=pa.int64())
        elif corruption[2] == "string":  # kind == "dtype"
            array = pa.array([str(v) for v in values])
        else:  # kind == "dtype": numpy's cast, wrapping what does not fit
            with np.errstate(over="ignore", invalid="ignore"):
                array = pa.array(values.astype(corruption[2]))
        table = table.set_column(table.column_names.index(column), column, array)
    pq.write_table(table, folder / file)


def assert_loaded_as_written(folder: Path) -> None:
    """Load ``folder``: refused naming one of its files, or holding exactly what the files hold."""
    try:
        dataset = load_dataset(folder)
    except DatasetError as exc:
        assert exc.file in DATASET_FILES and str(exc).startswith(f"{exc.file}: "), str(exc)
        return
    assert dataset.meta == yaml.safe_load((folder / META_FILE).read_text())
    rows = pq.read_table(folder / ROWS_FILE)
    for name, values in dataset.rows.items():
        assert np.array_equal(values, rows.column(name).to_numpy().astype(values.dtype)), name
        assert np.array_equal(values.astype(np.float64), rows.column(name).to_numpy().astype(np.float64)), name
    history = pq.read_table(folder / HISTORY_FILE)
    counts = np.diff(dataset.history.user_offsets.numpy())
    assert np.array_equal(np.repeat(np.arange(counts.size), counts), history.column("user_id").to_numpy())
    for name, held in (("item_id", dataset.history.item), ("category_id", dataset.history.category),
                       ("domain", dataset.history.domain), ("ts", dataset.history.ts)):
        assert np.array_equal(held.numpy(), history.column(name).to_numpy()), name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corruptions=st.lists(CORRUPTIONS, min_size=1, max_size=2))
def test_a_corrupted_dataset_is_refused_naming_its_file_or_loads_exactly_what_is_written(tiny_dataset,
                                                                                         corruptions) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "dataset"
        shutil.copytree(tiny_dataset, folder)
        for corruption in corruptions:
            try:
                corrupt(folder, corruption)
            except (pa.ArrowException, OSError, KeyError, ValueError):
                break  # an earlier corruption made this one impossible to apply (e.g. a truncated file)
        assert_loaded_as_written(folder)


def test_the_uncorrupted_tiny_dataset_loads_as_written(tiny_dataset) -> None:
    assert_loaded_as_written(tiny_dataset)
    assert load_dataset(tiny_dataset).n_rows == 40
