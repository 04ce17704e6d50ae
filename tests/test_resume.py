"""A run SIGKILLed at any point resumes from its last checkpoint and ends as if never interrupted.

Each scenario forks a child that runs the training and SIGKILLs itself at a named point (the
``CTL_TEST_KILL_AT`` hook of :func:`ctl.io.crash_point`); the parent then reruns the same config
in the same folder and compares ``metrics.json`` with an uninterrupted run, value for value
(timings aside). Batches of 16 rows and a checkpoint every 3 steps put several steps and a
mid-period checkpoint in every period of the tiny world (B: 4 batches per period).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from ctl.errors import CtlError
from ctl.io import KILL_AT_ENV
from ctl.training import fitting
from ctl.training.callbacks import FIT_KEY
from ctl.training.protocol import run_train
from ctl.training.tracks import building_folder

SMALL_STEPS = (
    "data.batch_size=16",
    "checkpoint_every_n_steps=3",
    # a smaller source domain keeps the source track quick at 16 rows a batch
    "data.generator.domains.A.rows_per_period=150",
    "data.generator.domains.A.test_rows=150",
)
# timings, and the folder the dataset lay in: they differ between two builds of one track
TIMINGS = {"wall_s", "cpu_s", "peak_rss_mb", "dataset_path"}


def make_cfg(home: Path, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[
            "data=synthetic_tiny", f"home={home}", "progress=false", "print_table=false", "model=ctnet",
            *SMALL_STEPS, *overrides])


def without_timings(value):
    """``value`` with every wall/CPU/memory measurement removed (they differ from run to run)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def killed_run(cfg, run_dir: Path, kill_at: str) -> int:
    """Run ``cfg`` in a forked child that SIGKILLs itself at ``kill_at``; return its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.environ[KILL_AT_ENV] = kill_at
            run_train(cfg, run_dir)
        except BaseException:  # noqa: BLE001 (report, then leave without running the parent's cleanup)
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Forked children must not inherit a started OpenMP pool; one thread also fixes the summation order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def reference_dir(home, tmp_path_factory) -> Path:
    """The folder of the uninterrupted run (which also builds and caches the two base tracks)."""
    run_dir = tmp_path_factory.mktemp("reference")
    run_train(make_cfg(home), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def reference(reference_dir) -> dict:
    return json.loads((reference_dir / "metrics.json").read_text())


def checkpoint_step(path: Path) -> tuple[int, int]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint["epoch"], checkpoint["global_step"]


# (kill point, files the kill leaves in checkpoints/, (epoch, global step) of the checkpoint resumed from)
SCENARIOS = {
    # after step 7 (period 5, its batch 2): resumes mid-period from step 6
    "mid-period": ("train-batch#7", {"period_4.ckpt", "last.ckpt"}, (1, 6)),
    # period 4 validated but its checkpoint not written: resumes mid-period 4 from step 3
    "period-end": ("period-end#1", {"last.ckpt"}, (0, 3)),
    # period 5's checkpoint written but not renamed into place
    "checkpoint-write": ("write:period_5.ckpt", {"period_4.ckpt", "last.ckpt", ".period_5.ckpt.tmp-*"}, (1, 6)),
    # period 4's checkpoint in place, last.ckpt not yet moved onto it
    "between-checkpoints": ("write:last.ckpt#2", {"period_4.ckpt", "last.ckpt", ".last.ckpt.tmp-*"}, (0, 3)),
    # training and test done, metrics.json not renamed: resumes from the last period's checkpoint
    "metrics-write": ("write:metrics.json", {"period_4.ckpt", "period_5.ckpt"}, (1, 8)),
    # killed before any checkpoint: starts over
    "first-step": ("train-batch#1", set(), None),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_killed_ctnet_run_resumes_to_the_uninterrupted_metrics(scenario, home, reference, tmp_path) -> None:
    kill_at, left, resumed_from = SCENARIOS[scenario]
    cfg = make_cfg(home)
    assert killed_run(cfg, tmp_path, kill_at) == -signal.SIGKILL
    checkpoints = tmp_path / "checkpoints"
    found = {p.name for p in checkpoints.iterdir()} if checkpoints.exists() else set()
    assert {re.sub(r"tmp-\d+$", "tmp-*", name) for name in found} == left
    assert not (tmp_path / "metrics.json").exists()
    if resumed_from is not None:
        latest = checkpoints / ("last.ckpt" if "last.ckpt" in found else "period_5.ckpt")
        assert checkpoint_step(latest) == resumed_from

    metrics = run_train(cfg, tmp_path)
    assert without_timings(metrics) == without_timings(reference)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert {p.name for p in checkpoints.iterdir()} == {"period_4.ckpt", "period_5.ckpt"}


def test_a_track_build_killed_midway_resumes_from_its_building_folder(home, reference, tmp_path,
                                                                       monkeypatch) -> None:
    fresh = tmp_path / "home"
    shutil.copytree(home / "datasets", fresh / "datasets")
    cfg = make_cfg(fresh)
    # the source track trains first: 10 batches per period, step 25 = period 2, its batch 4
    assert killed_run(cfg, tmp_path / "run", "train-batch#25") == -signal.SIGKILL
    source_track = Path(reference["tracks"]["source"])
    building = building_folder(fresh / "tracks" / source_track.name)
    assert checkpoint_step(building / "checkpoints" / "last.ckpt") == (2, 24)
    assert not (fresh / "tracks" / source_track.name).exists()

    resumed_from = []
    resume_point = fitting.resume_point

    def spy(path, *args, **kwargs):
        found = resume_point(path, *args, **kwargs)
        resumed_from.append(found)
        return found

    monkeypatch.setattr(fitting, "resume_point", spy)
    metrics = run_train(cfg, tmp_path / "run")
    assert resumed_from[0] == building / "checkpoints" / "last.ckpt"
    assert not building.exists()
    moved = json.loads(json.dumps(without_timings(metrics)).replace(str(fresh), str(home)))
    assert moved == without_timings(reference)
    track_metrics = json.loads((fresh / "tracks" / source_track.name / "metrics.json").read_text())
    assert without_timings(track_metrics) == without_timings(json.loads((source_track / "metrics.json").read_text()))


def test_resume_true_refuses_a_checkpoint_of_another_config(home, reference_dir, reference, tmp_path) -> None:
    shutil.copytree(reference_dir / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(CtlError, match=r"cannot resume from .*period_5\.ckpt: it was written by another configuration "
                                       r"\(config\.optim\.lr: 0\.01 in the checkpoint, 0\.02 now\)"):
        run_train(make_cfg(home, "optim.lr=0.02", "resume=true"), tmp_path)
    # without resume=true the folder starts over with the new config: every period retrained
    changed = run_train(make_cfg(home, "optim.lr=0.02"), tmp_path)
    assert [r["train_rows"] for r in changed["periods"]] == [r["train_rows"] for r in reference["periods"]]
    assert changed["test"] != reference["test"]
    for period in (4, 5):
        saved = torch.load(tmp_path / "checkpoints" / f"period_{period}.ckpt", map_location="cpu", weights_only=True)
        assert saved[FIT_KEY]["identity"]["config"]["optim"]["lr"] == 0.02


@pytest.mark.slow  # a fresh `ctl` process: most of its time is importing torch and Lightning
def test_rerunning_the_same_command_in_the_same_folder_resumes(home, reference, tmp_path) -> None:
    run_dir = tmp_path / "run"
    assert killed_run(make_cfg(home), run_dir, "train-batch#7") == -signal.SIGKILL
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == (1, 6)
    env = {k: v for k, v in os.environ.items() if k not in ("CTL_COMMAND", KILL_AT_ENV)}
    env["OMP_NUM_THREADS"] = "1"  # the threads of this module's processes
    command = [str(Path(sys.executable).with_name("ctl")), "train", "model=ctnet", "data=synthetic_tiny",
               f"home={home}", "progress=false", "print_table=false", *SMALL_STEPS, "resume=true",
               f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from" in proc.stdout + proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert without_timings(metrics) == without_timings(reference)
