"""Thin Hydra task functions behind ``ctl``; the work lives in pure functions they call."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ctl import errors
from ctl.methods import register_label_resolver

# before Hydra resolves the run folder: conf/train.yaml names it by ${method_label:}
register_label_resolver()


def train_task(cfg: DictConfig) -> float | None:
    from ctl import quiet
    from ctl.report.console import print_run
    from ctl.sweep_jobs import clear_failure, record_failure
    from ctl.training.distributed import is_rank_zero, shutdown
    from ctl.training.protocol import run_train

    quiet.install()  # again: a launcher may run this job in a process that never went through `ctl`
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    try:  # the process group is closed however the run ends (see shutdown)
        if hydra.mode == RunMode.MULTIRUN:
            # One job's failure is recorded and the sweep goes on (ctl.sweep_jobs); `ctl sweep` lists them at its end.
            clear_failure(run_dir)
            try:
                metrics = run_train(cfg, run_dir)
            except Exception as exc:  # noqa: BLE001 - any failure of one job is recorded, not raised
                record_failure(run_dir, exc, list(hydra.overrides.task))
                return None
        else:
            with errors.friendly():
                metrics = run_train(cfg, run_dir)
        if cfg.print_table and is_rank_zero():
            print_run(metrics, run_dir=run_dir)
    finally:
        shutdown()
    return metrics["test"].get("auc")


def generate_task(cfg: DictConfig) -> None:
    from hydra.utils import instantiate
    from rich.console import Console

    from ctl.data.registry import ensure_dataset

    with errors.friendly():
        if int(cfg.extend):
            from ctl.data.synthetic.continuation import continue_world

            out = Path(str(cfg.out)).expanduser() if cfg.out else None
            path = continue_world(cfg.data, cfg.home, int(cfg.extend), out, progress=bool(cfg.progress))
        elif cfg.out:
            out = Path(str(cfg.out)).expanduser()
            if out.exists():
                raise errors.CtlError(f"out={out} already exists; choose a new folder")
            instantiate(cfg.data.generator).generate(out, progress=bool(cfg.progress))
            path = out
        else:
            path = ensure_dataset(cfg.data, cfg.home, progress=bool(cfg.progress))
        Console().print(f"dataset: {path}")


def import_task(cfg: DictConfig) -> None:
    from ctl.data.import_run import run_import

    with errors.friendly():
        run_import(cfg)
