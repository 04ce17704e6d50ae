"""One Lightning ``fit`` over a list of periods (epoch k = period k), then the test slice.

Shared by tracks and by every transfer method: it builds the trainer from ``cfg.trainer`` and the
``cfg.callbacks`` (``_target_`` configs) next to the protocol's own arguments and callbacks, saves
one checkpoint per period (``period_<p>.ckpt``) and a ``last.ckpt`` every
``checkpoint_every_n_steps`` steps, and returns what the run measured.

A fit resumes from ``<out_dir>/checkpoints/last.ckpt`` when that checkpoint was written by a
fit of the same identity (the resolved config without its display and resume keys, and the
dataset's fingerprint): mid-period too, with the data order, the period records and the random
stream restored, so the resumed fit ends with the metrics of an uninterrupted one. With
``resume=true`` a checkpoint of another identity is refused instead of replaced.
"""

from __future__ import annotations

import resource
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ctl.data.datamodule import ContinualDataModule
from ctl.data.dataset import Dataset
from ctl.errors import CtlError
from ctl.io import check_free_space, check_writable, remove_stale_temporaries
from ctl.models import build_model
from ctl.table_io import write_table
from ctl.training.callbacks import FIT_KEY, PeriodCheckpoints, PeriodProgressBar
from ctl.training.checkpoints import AtomicCheckpointIO, resume_point
from ctl.training.continuation import Continuation, continuation_of_run, continued_cost, prepare
from ctl.training.distributed import is_rank_zero
from ctl.training.task import CTRTask, OptimizerFactory

#: config keys that change how a run is shown or resumed, never what it computes
RUN_ONLY_KEYS = ("resume", "progress", "print_table", "checkpoint_every_n_steps", "continue_from")
#: Trainer arguments the protocol sets itself: a trainer config may not set them
PROTOCOL_TRAINER_ARGS = ("max_epochs", "reload_dataloaders_every_n_epochs", "num_sanity_val_steps", "callbacks",
                         "logger", "plugins", "enable_progress_bar", "enable_model_summary", "default_root_dir")


@dataclass
class FitResult:
    """What one fit measured: per-period validation, the test slice, its cost; per-row predictions
    of the test slice and of the validation slices the task kept (trained-through period -> rows)."""

    periods: list[dict]
    test: dict
    cost: dict
    predictions: dict[str, np.ndarray] = field(repr=False)
    val_predictions: dict[int, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)


def optimizer_from(cfg: DictConfig) -> OptimizerFactory:
    """The optimiser of ``cfg.optim``: a ``_partial_`` config of a ``torch.optim`` class, later called
    with the model's parameter groups.

    It is built once on a probe parameter here, so that a class or an argument it does not take
    is refused before any track or run starts training.
    """
    try:
        factory = instantiate(cfg.optim)
        factory([{"params": [torch.nn.Parameter(torch.zeros(1))]}])
    except (InstantiationException, TypeError, ValueError, RuntimeError) as exc:
        raise CtlError(f"optim ({cfg.optim._target_}) cannot be built: {' '.join(str(exc).split())}; every key of "
                       "optim but _target_ and _partial_ (true) goes to its constructor: pick optim=adagrad|adam, "
                       "or drop a key with ~optim.<key>") from exc
    return factory


def optimizer_name(cfg: DictConfig) -> str:
    """The class name of ``cfg.optim`` (``Adagrad``), for the run's records."""
    return str(cfg.optim._target_).rsplit(".", 1)[-1]


def build_net(net_cfg: DictConfig, dataset: Dataset, model_name: str) -> torch.nn.Module:
    """Instantiate ``net_cfg`` for the dataset's schema, refusing a mismatch in one line naming both."""
    try:
        return build_model(net_cfg, dataset.schema)
    except (ValueError, KeyError) as exc:
        raise CtlError(f"model {model_name} does not fit the schema of the dataset {dataset.path} "
                       f"({str(exc).strip()}); change model.size or the dataset's meta.yaml") from exc


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
        in_memory=bool(cfg.data.in_memory),
        num_workers=int(cfg.data.num_workers),
    )


def run_identity(cfg: DictConfig, dataset: Dataset) -> dict:
    """What a run's fit computes: its resolved config without :data:`RUN_ONLY_KEYS`, and the dataset."""
    config = cast(dict, OmegaConf.to_container(cfg, resolve=True))
    return {"config": {k: v for k, v in config.items() if k not in RUN_ONLY_KEYS}, "dataset": dataset.fingerprint()}


def checkpoint_bytes(task: CTRTask) -> int:
    """About how large one checkpoint of ``task`` is: weights, buffers and a same-size optimiser state."""
    tensors = [*task.parameters(), *task.buffers()]
    return 2 * sum(t.numel() * t.element_size() for t in tensors)


def fit_periods(
    cfg: DictConfig,
    task: CTRTask,
    datamodule: ContinualDataModule,
    out_dir: Path,
    label: str,
    callbacks: Sequence[pl.Callback] = (),
    identity: dict | None = None,
    strict_resume: bool | None = None,
    continuation: Continuation | None = None,
) -> FitResult:
    """Train ``task`` over the datamodule's periods, test it, and write checkpoints under ``out_dir``.

    ``identity`` says what this fit is (default: :func:`run_identity`); a ``last.ckpt`` of the
    same identity in ``out_dir/checkpoints`` is resumed (see the module docstring). With
    ``strict_resume`` (default: the config's ``resume``) a ``last.ckpt`` of another identity is
    refused rather than replaced.

    A fit on a dataset grown from an earlier version starts from the earlier fit's checkpoint of its
    last period (``continuation``; for a run's own fit, ``cfg.continue_from``) and trains only the
    new periods (:mod:`ctl.training.continuation`); its cost counts those periods' rows.
    """
    out_dir = Path(out_dir)
    new_trainer, own_callbacks = make_trainer(cfg), configured_callbacks(cfg)
    if identity is None and continuation is None:  # a run's own fit (a track's has an identity of its own)
        continuation = continuation_of_run(cfg, datamodule.dataset, out_dir)
    identity = run_identity(cfg, datamodule.dataset) if identity is None else identity
    prepared = (time.perf_counter(), time.process_time())
    if continuation is not None:  # every rank (see prepare)
        prepare(continuation, task, datamodule, list(callbacks), out_dir / "checkpoints", identity)
    prepared = (time.perf_counter() - prepared[0], time.process_time() - prepared[1])
    strict = bool(cfg.resume) if strict_resume is None else strict_resume
    saver, resume_from = _checkpoints(cfg, task, datamodule, out_dir, label, identity, strict)
    n_epochs = len(datamodule.periods)
    all_callbacks: list[pl.Callback] = [saver, *callbacks]
    if cfg.progress:
        all_callbacks.append(PeriodProgressBar(datamodule.period_of_epoch, n_epochs, label))
    all_callbacks += own_callbacks
    logger = instantiate(OmegaConf.merge(cfg.logger, {"save_dir": str(out_dir)}, _log_version(cfg.logger, out_dir)))
    trainer = new_trainer(
        max_epochs=n_epochs,
        reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0,
        callbacks=all_callbacks,
        logger=logger,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=bool(cfg.progress),
        enable_model_summary=False,
        default_root_dir=str(out_dir),
    )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        # Lightning cannot see that the datamodule serves a resumed period from its first untrained batch.
        warnings.filterwarnings("ignore", message=".*your dataloader is not resumable")
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    trainer.test(task, datamodule=datamodule, verbose=False)
    # Finished: the last period's checkpoint now stands for last.ckpt (PeriodCheckpoints.latest).
    if is_rank_zero():  # under DDP only rank zero touches the files (ctl.training.distributed)
        saver.last_path.unlink(missing_ok=True)
    cost = {
        "train_rows": int(sum(r["train_rows"] for r in task.period_results)),
        "wall_s": round(saver.spent_before["wall_s"] + time.perf_counter() - wall0, 3),
        "cpu_s": round(saver.spent_before["cpu_s"] + time.process_time() - cpu0, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if continuation is not None:
        cost = continued_cost(cost, continuation, task.period_results, prepared)
    predictions = {k: torch.cat([p[k] for p in task.test_predictions]).numpy() for k in task.test_predictions[0]}
    val_predictions = {period: {k: v.numpy() for k, v in rows.items()}
                       for period, rows in sorted(task.val_predictions.items())}
    return FitResult(periods=list(task.period_results), test=dict(task.test_result or {}), cost=cost,
                     predictions=predictions, val_predictions=val_predictions)


def _log_version(logger_cfg: DictConfig, out_dir: Path) -> dict:
    """Where a fit's logs go: ``<name>/`` itself for the first fit of a folder; ``<name>/fit-<k>/``
    for the k-th (a resumed or continued fit), because a logger writing into a folder that holds
    files deletes them, and a daily continuation in one run folder would keep only its last day."""
    if logger_cfg.get("version") != "":
        return {}
    logs = out_dir / str(logger_cfg.name)
    if not logs.is_dir() or not any(p.is_file() for p in logs.iterdir()):
        return {}
    k = 2
    while (logs / f"fit-{k}").exists():
        k += 1
    return {"version": f"fit-{k}"}


def make_trainer(cfg: DictConfig) -> Callable[..., pl.Trainer]:
    """``cfg.trainer`` as a Trainer factory that :func:`fit_periods` completes with the protocol's own
    arguments (:data:`PROTOCOL_TRAINER_ARGS`); a trainer config that sets one of them is refused."""
    owned = [key for key in PROTOCOL_TRAINER_ARGS if key in cfg.trainer]
    if owned:
        raise CtlError(f"trainer.{owned[0]} is set by ctl for every fit (epoch k = period k, with its own "
                       "callbacks, logger and checkpoints); remove it from the trainer config (callbacks: "
                       "+callbacks.<name>._target_=..., loggers: logger=...)")
    return instantiate(cfg.trainer, _partial_=True)


def configured_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The callbacks of ``cfg.callbacks`` (name -> ``_target_`` config), in their order."""
    built = []
    for name, node in cfg.callbacks.items():
        callback = instantiate(node)
        if not isinstance(callback, pl.Callback):
            raise CtlError(f"callbacks.{name} builds a {type(callback).__name__}, not a Lightning Callback")
        built.append(callback)
    return built


def _checkpoints(cfg: DictConfig, task: CTRTask, datamodule: ContinualDataModule, out_dir: Path, label: str,
                 identity: dict, strict: bool) -> tuple[PeriodCheckpoints, Path | None]:
    """The fit's checkpoint writer and the checkpoint to resume from (None: a fresh start), after the checks."""
    check_writable(out_dir, f"the output folder of {label}")
    checkpoint_dir = out_dir / "checkpoints"
    if checkpoint_dir.is_symlink() and is_rank_zero():  # a track run's link into the cache: never write through it
        checkpoint_dir.unlink()
    if is_rank_zero():
        remove_stale_temporaries(checkpoint_dir)
    needed = checkpoint_bytes(task) * (len(datamodule.periods) + 2)
    check_free_space(out_dir, needed, f"saving the checkpoints of {label}")
    every_n_steps = int(cfg.checkpoint_every_n_steps)
    if every_n_steps < 0:
        raise CtlError(f"checkpoint_every_n_steps={every_n_steps} must be >= 0 (0 = checkpoints at period ends only)")
    saver = PeriodCheckpoints(checkpoint_dir, datamodule.period_of_epoch, every_n_steps, identity)
    resume_from = resume_point(saver.latest(), identity, task, FIT_KEY, strict=strict)
    if resume_from is None and is_rank_zero():
        for stale in checkpoint_dir.glob("period_*.ckpt"):
            stale.unlink()
    return saver, resume_from


def _prediction_columns(predictions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "row": predictions["row"].astype(np.int64),
        "user_id": predictions["user_id"].astype(np.int64),
        "item_id": predictions["item_id"].astype(np.int64),
        "label": predictions["label"].astype(np.int8),
        "pred": predictions["pred"].astype(np.float32),
    }


def write_predictions(path: Path, predictions: dict[str, np.ndarray]) -> Path:
    """Per-row test predictions (row, user_id, item_id, label, pred) as Parquet, atomically."""
    return write_table(path, [pa.table(_prediction_columns(predictions))])


def write_val_predictions(path: Path, val_predictions: dict[int, dict[str, np.ndarray]]) -> Path | None:
    """Per-row validation predictions as Parquet, atomically: ``period`` (trained through; the rows are
    of period + 1's slice), then the columns of :func:`write_predictions`. None (nothing written) if empty."""
    if not val_predictions:
        return None
    parts = []
    for period, rows in sorted(val_predictions.items()):
        columns = _prediction_columns(rows)
        parts.append(pa.table({"period": np.full(len(columns["row"]), period, dtype=np.int64), **columns}))
    return write_table(path, parts)
