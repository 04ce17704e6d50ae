"""The installed ``ctl`` script: help, config printing, data generate/describe/validate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import known_noise

CTL = [str(Path(sys.executable).with_name("ctl"))]


def ctl(*args: str, home: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    if home is not None:
        env["CTL_HOME"] = str(home)
    env.pop("CTL_COMMAND", None)
    proc = subprocess.run([*CTL, *args], check=False, capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"ctl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_help_lists_the_subcommands() -> None:
    out = ctl("--help").stdout
    for command in ("train", "sweep", "eval", "data"):
        assert f"\n  {command}" in out


def test_train_help_lists_the_config_groups_and_keys_with_their_defaults_and_passes_hydra_flags() -> None:
    out = ctl("train", "--help").stdout
    assert "Usage: ctl train [OPTIONS] [OVERRIDES]" in out
    groups = {line.split()[0]: line.split()[1:] for line in out.split("Config groups")[1].split("Config keys")[0]
              .splitlines()[1:] if line.strip()}
    assert groups["model"][:2] == ["ctnet", "(default)"] and "ple" in out and "hydra/launcher" in groups
    keys = dict(line.split() for line in out.split("Config keys")[1].split("`--cfg job`")[0].splitlines()[1:]
                if len(line.split()) == 2)
    assert keys["seed"] == "0" and keys["resume"] == "false" and keys["continue_from"] == "null"
    assert "== Flags ==" in ctl("train", "--hydra-help").stdout
    job = ctl("train", "--cfg", "job", "model=base", "data=synthetic_tiny").stdout
    assert "name: base" in job and "_target_: ctl.models.base.BaseModel" in job


COMMANDS = (["train"], ["sweep"], ["eval"], ["export"], ["score"], ["serve"], ["data", "generate"], ["data", "import"],
            ["data", "append"], ["data", "validate"], ["data", "describe"])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_the_one_grammars_help(command: list[str]) -> None:
    out = ctl(*command, "--help").stdout
    assert out.startswith(f"Usage: ctl {' '.join(command)} [OPTIONS]") and "-h, --help" in out, out


def test_options_show_their_defaults_and_usage_errors_are_one_line() -> None:
    out = " ".join(ctl("score", "--help").stdout.split())
    assert "--batch-rows <int range> request rows encoded and scored at a time [default: 65536; x>=1]" in out
    assert "[default: torch_export]" in ctl("export", "--help").stdout
    proc = ctl("export", "some/run", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: Missing option '--out'. (see ctl export --help)"
    proc = ctl("eval", "x", "--table", "nope", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "'nope' is not one of 'overall'" in proc.stderr and "(see ctl eval --help)" in proc.stderr


def test_unknown_command_is_refused() -> None:
    proc = ctl("fly", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: No such command 'fly'. (see ctl --help)"


def test_the_demo_shows_world_tracks_progress_and_table_and_no_known_noise(tmp_path: Path) -> None:
    proc = ctl("train", "model=ctnet", "data=synthetic_tiny", f"hydra.run.dir={tmp_path / 'run'}", home=tmp_path / "home")
    output = proc.stdout + proc.stderr
    assert known_noise(output) == [], output
    for shown in ("synthetic world", "track base-A: period", "track base-B: period", "ctnet A->B: period",
                  "ctnet: A -> B (seed 0)", "test (6)"):
        assert shown in output, (shown, output)


# `ctl eval` stands in for any command: it says what a run of ctl code could say, next to the known noise
WARNS = """
import logging, sys, warnings
import ctl.report.cli
from ctl import cli

def say(*args):
    warnings.warn_explicit("real problem", UserWarning, "fitting.py", 1, module="ctl.training.fitting")
    fit_loop = "pytorch_lightning.loops.fit_loop"
    warnings.warn_explicit("another fit-loop warning", UserWarning, "fit_loop.py", 1, module=fit_loop)
    warnings.warn_explicit("Found 3 module(s) in eval mode at the start of training", UserWarning, "fit_loop.py", 2,
                           module=fit_loop)
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    rank_zero.warning("another rank-zero line")
    rank_zero.warning("GPU available: True (cuda), used: True")

ctl.report.cli.run_eval = say
cli.main(["eval", "anything"])
"""


def test_real_warnings_and_other_lines_of_the_same_modules_are_still_shown() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CTL_COMMAND", "PYTHONWARNINGS")}
    proc = subprocess.run([sys.executable, "-c", WARNS], check=True, capture_output=True, text=True, env=env,
                          timeout=120)
    assert "UserWarning: real problem" in proc.stderr
    assert "another fit-loop warning" in proc.stderr and "another rank-zero line" in proc.stderr
    assert "in eval mode" not in proc.stderr and "GPU available" not in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    out = ctl("data", "generate", "data=synthetic_tiny", "progress=false", home=home).stdout
    path = Path(out.strip().splitlines()[-1].split("dataset: ", 1)[1])
    assert path.parent == home / "datasets"
    return path


def test_generate_then_describe(generated: Path) -> None:
    out = ctl("data", "describe", str(generated)).stdout
    for domain in ("A", "B", "C"):
        assert f" {domain} " in out
    assert "CTR" in out
    assert "History lengths" in out and "visible per row" in out


def test_validate_accepts_then_refuses_a_corrupted_label(generated: Path, tmp_path: Path) -> None:
    assert "ok" in ctl("data", "validate", str(generated)).stdout
    bad = tmp_path / "bad"
    shutil.copytree(generated, bad)
    table = pq.read_table(bad / "rows.parquet")
    labels = table.column("label").to_numpy().copy()
    labels[7] = 2
    table = table.set_column(table.column_names.index("label"), "label", pa.array(labels))
    pq.write_table(table, bad / "rows.parquet")
    proc = ctl("data", "validate", str(bad), check=False)
    assert proc.returncode == 2
    assert "rows.parquet" in proc.stderr and "'label'" in proc.stderr and "row 7" in proc.stderr


def test_a_failed_sweep_job_is_reported_at_once_and_at_the_end(generated: Path, tmp_path: Path) -> None:
    home = generated.parent.parent
    sweep = tmp_path / "sweep"
    proc = ctl("sweep", "model=ctnet,base", "data=synthetic_tiny", "data.domain=A", "progress=false",
               "print_table=false", f"hydra.sweep.dir={sweep}", home=home, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    refusal = "CtlError: data.domain=A is the source domain"
    # the next job still ran
    assert (sweep / "1-base-A-s0" / "metrics.json").is_file()
    failed = sweep / "0-ctnet-A-s0"
    assert not (failed / "metrics.json").exists()
    error = (failed / "error.txt").read_text()
    assert error.startswith(refusal) and "Traceback" in error and "model=ctnet" in error
    # logged when it happened (the job's own log too), listed again when the sweep ended
    assert f"failed: {refusal}" in (failed / "train.log").read_text()
    summary = proc.stderr[proc.stderr.index("1 of 2 jobs"):]
    assert f"0-ctnet-A-s0: {refusal}" in summary and "1-base-A-s0" not in summary


def test_failed_jobs_are_listed_in_job_order(tmp_path: Path) -> None:
    from ctl.sweep_jobs import ERROR_FILE, failed_jobs

    for name, message in (("10-ple-B-s0", "KeyError: 3"), ("2-base-B-s0", "ValueError: x"), ("3-din-B-s0", None)):
        (tmp_path / name).mkdir()
        if message:
            (tmp_path / name / ERROR_FILE).write_text(f"{message}\noverrides: model=...\n\nTraceback ...")
    jobs = failed_jobs(tmp_path)
    assert [(j.run_dir.name, j.message) for j in jobs] == [("2-base-B-s0", "ValueError: x"), ("10-ple-B-s0", "KeyError: 3")]


@pytest.mark.parametrize("mode", ["RUN", "MULTIRUN"])
def test_a_failed_train_still_closes_the_process_group(monkeypatch, tmp_path: Path, mode: str) -> None:
    """`ctl train` closes the process group however the run ends: a refused (or, in a sweep, recorded)
    failure does not leave gloo's threads to the exit's destructors."""
    from types import SimpleNamespace

    from hydra.types import RunMode
    from omegaconf import OmegaConf

    import ctl.app
    import ctl.training.distributed
    import ctl.training.protocol
    from ctl.errors import CtlError

    def refuse(cfg, run_dir):
        raise CtlError(f"{run_dir}: refused")

    closed = []
    hydra = SimpleNamespace(runtime=SimpleNamespace(output_dir=str(tmp_path)), mode=RunMode[mode],
                            overrides=SimpleNamespace(task=["model=base"]))
    monkeypatch.setattr(ctl.app.HydraConfig, "get", staticmethod(lambda: hydra))
    monkeypatch.setattr(ctl.training.protocol, "run_train", refuse)
    monkeypatch.setattr(ctl.training.distributed, "shutdown", lambda: closed.append(True))
    cfg = OmegaConf.create({"print_table": False})
    if mode == "RUN":
        with pytest.raises(SystemExit):
            ctl.app.train_task(cfg)
    else:
        assert ctl.app.train_task(cfg) is None
    assert closed == [True]
