"""A sweep's failed jobs: reported when they fail and again, all together, when the sweep ends.

Hydra's sweeper runs every job of a batch and re-raises the first failure only after the last
one, with nothing logged meanwhile; a long sweep would hide a failed job for hours, and one
stopped before its end would hide it for good. So a job that raises writes ``error.txt`` (the
traceback) into its run folder and logs one ERROR line at once, and the sweep goes on; when the
sweep ends, ``ctl sweep`` lists every failed job from those files (whatever launcher ran them,
in this process or another) and exits with status 1.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ctl.io import atomic_write_text

ERROR_FILE = "error.txt"

log = logging.getLogger("ctl.sweep")


@dataclass(frozen=True)
class FailedJob:
    run_dir: Path
    message: str


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def clear_failure(run_dir: Path) -> None:
    """Forget an earlier attempt's failure: the job runs again in the same folder."""
    (run_dir / ERROR_FILE).unlink(missing_ok=True)


def record_failure(run_dir: Path, exc: BaseException, overrides: list[str]) -> None:
    """Write the traceback next to the job's outputs and log the failure in one line."""
    message = one_line(exc)
    details = "".join(traceback.format_exception(exc))
    atomic_write_text(run_dir / ERROR_FILE, f"{message}\noverrides: {' '.join(overrides)}\n\n{details}")
    log.error("job %s failed: %s (traceback in %s); the sweep goes on", " ".join(overrides), message,
              run_dir / ERROR_FILE)


def _job_order(path: Path) -> tuple[int, str]:
    # job folders start with Hydra's job number: 2-... before 10-...
    number = path.parent.name.split("-", 1)[0]
    return (int(number) if number.isdigit() else -1, path.parent.name)


def failed_jobs(sweep_dir: Path) -> list[FailedJob]:
    """The jobs of ``sweep_dir`` whose last attempt failed, in job order."""
    jobs = []
    for path in sorted(Path(sweep_dir).glob(f"*/{ERROR_FILE}"), key=_job_order):
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        jobs.append(FailedJob(path.parent, first[0] if first else "(no message)"))
    return jobs


class SweepFolder(Callback):
    """Remembers the sweep folder of this process's multirun, for the summary at its end."""

    last: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepFolder.last = Path(str(config.hydra.sweep.dir))
