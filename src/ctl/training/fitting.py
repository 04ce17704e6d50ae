"""One Lightning ``fit`` over a list of periods (epoch k = period k), then the test slice.

Shared by tracks and by every transfer method: it builds the trainer from the config, saves one
checkpoint per period (``period_<p>.ckpt``), and returns what the run measured.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from ctl.data.datamodule import ContinualDataModule
from ctl.data.dataset import Dataset
from ctl.io import atomic_write_bytes
from ctl.training.callbacks import PeriodProgressBar
from ctl.training.task import CTRTask, adagrad


@dataclass
class FitResult:
    """What one fit measured: per-period validation, the test slice, its cost."""

    periods: list[dict]
    test: dict
    cost: dict
    predictions: dict[str, np.ndarray] = field(repr=False)


def optimizer_from(cfg: DictConfig):
    optim = cfg.optim
    if optim.name != "adagrad":
        raise ValueError(f"optim.name={optim.name!r} is not supported; use adagrad (the paper's optimiser)")
    return adagrad(lr=float(optim.lr), initial_accumulator_value=float(optim.initial_accumulator_value),
                   eps=float(optim.eps))


def make_datamodule(cfg: DictConfig, dataset: Dataset, train_domains: Sequence[str], periods: Sequence[int],
                    eval_domain: str, seed: int, domain_sequences: Sequence[str] = ()) -> ContinualDataModule:
    return ContinualDataModule(
        dataset,
        train_domains=list(train_domains),
        periods=list(periods),
        eval_domain=eval_domain,
        batch_size=int(cfg.data.batch_size),
        eval_batch_size=int(cfg.data.eval_batch_size),
        seed=seed,
        domain_sequences=list(domain_sequences),
    )


def fit_periods(
    cfg: DictConfig,
    task: CTRTask,
    datamodule: ContinualDataModule,
    out_dir: Path,
    label: str,
    callbacks: Sequence[pl.Callback] = (),
) -> FitResult:
    """Train ``task`` over the datamodule's periods, test it, and write checkpoints under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n_epochs = len(datamodule.periods)
    checkpoints = ModelCheckpoint(
        dirpath=out_dir / "checkpoints",
        filename="period_{period:.0f}",
        auto_insert_metric_name=False,
        save_top_k=-1,
        every_n_epochs=1,
        enable_version_counter=False,
    )
    all_callbacks: list[pl.Callback] = [checkpoints, *callbacks]
    if cfg.progress:
        all_callbacks.append(PeriodProgressBar(datamodule.period_of_epoch, n_epochs, label))
    logger = instantiate(OmegaConf.merge(cfg.logger, {"save_dir": str(out_dir)}))
    trainer = pl.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        max_epochs=n_epochs,
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        callbacks=all_callbacks,
        logger=logger,
        enable_progress_bar=bool(cfg.progress),
        enable_model_summary=False,
        default_root_dir=str(out_dir),
    )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    trainer.fit(task, datamodule=datamodule)
    trainer.test(task, datamodule=datamodule, verbose=False)
    cost = {
        "train_rows": int(sum(r["train_rows"] for r in task.period_results)),
        "wall_s": round(time.perf_counter() - wall0, 3),
        "cpu_s": round(time.process_time() - cpu0, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    predictions = {k: torch.cat([p[k] for p in task.test_predictions]).numpy() for k in task.test_predictions[0]}
    return FitResult(periods=list(task.period_results), test=dict(task.test_result or {}), cost=cost,
                     predictions=predictions)


def write_predictions(path: Path, predictions: dict[str, np.ndarray]) -> Path:
    """Per-row test predictions (row, user_id, item_id, label, pred) as Parquet, atomically."""
    table = pa.table({
        "row": predictions["row"].astype(np.int64),
        "user_id": predictions["user_id"].astype(np.int64),
        "item_id": predictions["item_id"].astype(np.int64),
        "label": predictions["label"].astype(np.int8),
        "pred": predictions["pred"].astype(np.float32),
    })
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return atomic_write_bytes(path, sink.getvalue().to_pybytes())
