"""Thin Hydra task functions behind ``ctl``; the work lives in pure functions they call."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ctl import errors


def train_task(cfg: DictConfig) -> float | None:
    from ctl.report.console import print_run
    from ctl.training.distributed import is_rank_zero
    from ctl.training.protocol import run_train

    with errors.friendly():
        metrics = run_train(cfg, Path(HydraConfig.get().runtime.output_dir))
        if cfg.print_table and is_rank_zero():
            print_run(metrics)
        return metrics["test"].get("auc")


def generate_task(cfg: DictConfig) -> None:
    from hydra.utils import instantiate
    from rich.console import Console

    from ctl.data.registry import ensure_dataset

    with errors.friendly():
        if cfg.out:
            out = Path(str(cfg.out)).expanduser()
            if out.exists():
                raise errors.CtlError(f"out={out} already exists; choose a new folder")
            instantiate(cfg.data.generator).generate(out, progress=bool(cfg.progress))
            path = out
        else:
            path = ensure_dataset(cfg.data, cfg.home, progress=bool(cfg.progress))
        Console().print(f"dataset: {path}")


def import_task(cfg: DictConfig) -> None:
    from ctl.data.importer import run_import

    with errors.friendly():
        run_import(cfg)
