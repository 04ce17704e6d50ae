"""Callbacks of the continual protocol: period checkpoints, the source refresh, the progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, RichProgressBar

from ctl.errors import CtlError
from ctl.io import atomic_link, crash_point
from ctl.training.checkpoints import load_model_state

#: the checkpoint a killed fit resumes from
LAST_CHECKPOINT = "last.ckpt"
#: checkpoint key of the fit's own record (see :class:`PeriodCheckpoints`)
FIT_KEY = "ctl_fit"


def period_checkpoint_name(period: int) -> str:
    return f"period_{period}.ckpt"


class PeriodCheckpoints(Checkpoint):
    """The checkpoints of a continual fit: ``period_<p>.ckpt`` after each period, ``last.ckpt`` to resume from.

    ``last.ckpt`` is written every ``every_n_steps`` optimiser steps inside a period and at every
    period end (there as a hard link to the period's checkpoint), so a killed fit loses at most
    ``every_n_steps`` steps; a finished fit removes it, and the last period's checkpoint takes
    its place (periods are trained in ascending order). The step that ends a period is not
    saved on its own: the period's checkpoint follows right after its validation, and Lightning
    cannot resume a fit between the two (it would skip that validation). Files go through the
    trainer's checkpoint IO (atomic: see :class:`ctl.training.checkpoints.AtomicCheckpointIO`).

    Every checkpoint carries ``checkpoint[FIT_KEY] = {"identity", "spent", "threads"}``: what the
    fit is (so that a resumed fit can refuse another fit's checkpoint), the wall/CPU seconds spent
    on it so far, including earlier, interrupted processes (``spent_before`` after a resume), and
    torch's intra-op thread count (CPU results depend on it in the last digits).

    Args:
        dirpath: the ``checkpoints`` folder.
        period_of_epoch: the period trained at each epoch.
        every_n_steps: optimiser steps between two ``last.ckpt`` inside a period; 0 = period ends only.
        identity: a JSON-able description of the fit.
    """

    def __init__(self, dirpath: Path, period_of_epoch: Callable[[int], int], every_n_steps: int,
                 identity: dict) -> None:
        if every_n_steps < 0:
            raise ValueError(f"PeriodCheckpoints: every_n_steps must be >= 0, got {every_n_steps}")
        self.dirpath = Path(dirpath)
        self.period_of_epoch = period_of_epoch
        self.every_n_steps = every_n_steps
        self.identity = identity
        self.spent_before = {"wall_s": 0.0, "cpu_s": 0.0}
        self._clock = (time.perf_counter(), time.process_time())

    @property
    def last_path(self) -> Path:
        return self.dirpath / LAST_CHECKPOINT

    def latest(self) -> Path:
        """The checkpoint a resumed fit starts from: ``last.ckpt``, or the latest period's once the fit finished."""
        if self.last_path.is_file():
            return self.last_path
        periods = sorted(self.dirpath.glob("period_*.ckpt"), key=lambda p: int(p.stem.removeprefix("period_")))
        return periods[-1] if periods else self.last_path

    def spent(self) -> dict[str, float]:
        """Seconds spent on this fit: earlier processes' share plus this process's since ``fit`` started."""
        wall0, cpu0 = self._clock
        return {"wall_s": self.spent_before["wall_s"] + time.perf_counter() - wall0,
                "cpu_s": self.spent_before["cpu_s"] + time.process_time() - cpu0}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clock = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        crash_point("train-batch")
        ends_period = batch_idx + 1 >= trainer.num_training_batches
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and not ends_period:
            trainer.save_checkpoint(self.last_path, weights_only=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        crash_point("period-end")
        path = self.dirpath / period_checkpoint_name(self.period_of_epoch(trainer.current_epoch))
        # the full state (optimiser, loops, callbacks): a resumed fit and the next method continue from it
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:
            atomic_link(path, self.last_path)
        trainer.strategy.barrier("PeriodCheckpoints.last")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # CPU results depend on the intra-op thread count: a resume warns when it differs.
        checkpoint[FIT_KEY] = {"identity": self.identity, "spent": self.spent(), "threads": torch.get_num_threads()}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.spent_before = dict(checkpoint.get(FIT_KEY, {}).get("spent", self.spent_before))


class SourceRefresh(pl.Callback):
    """Load the source track's model of the current period into CTNet's frozen source tower.

    At every train epoch start (epoch k = period ``period_of_epoch(k)``) the weights and BatchNorm
    statistics of ``source_checkpoint(period)`` are copied *in place* into ``pl_module.model.source``
    (never replacing Parameter objects, so the optimiser and any DDP wrapper stay valid), and the
    tower is put back into ``eval()`` with ``requires_grad`` off. With ``refresh=False`` (transfer
    once) the tower is loaded once, from the first period, and kept.
    """

    def __init__(self, source_checkpoint: Callable[[int], Path], period_of_epoch: Callable[[int], int],
                 refresh: bool = True) -> None:
        self.source_checkpoint = source_checkpoint
        self.period_of_epoch = period_of_epoch
        self.refresh = refresh
        #: period whose source model sits in the tower now (restored with the callback state)
        self.loaded_period: int | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        period = self.period_of_epoch(trainer.current_epoch)
        if not self.refresh and self.loaded_period is not None:
            period = self.loaded_period
        self.load(pl_module, period)

    def load(self, pl_module: pl.LightningModule, period: int) -> None:
        tower = getattr(pl_module.model, "source", None)
        if not isinstance(tower, torch.nn.Module):
            raise CtlError(f"{type(pl_module.model).__name__} has no source tower (a module named source) to load "
                           "the source model into")
        path = self.source_checkpoint(period)
        load_model_state(tower, path, what=f"the source model of period {period}")
        tower.requires_grad_(False)
        tower.eval()
        self.loaded_period = period

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resumed run validates before its first train epoch start.
        if self.loaded_period is None:
            self.load(pl_module, self.period_of_epoch(trainer.current_epoch))

    on_test_start = on_validation_start

    def state_dict(self) -> dict:
        return {"loaded_period": self.loaded_period, "refresh": self.refresh}

    def load_state_dict(self, state_dict: dict) -> None:
        self.loaded_period = state_dict.get("loaded_period")


class PeriodProgressBar(RichProgressBar):
    """Rich progress whose description says which period of how many is training."""

    def __init__(self, period_of_epoch: Callable[[int], int], n_epochs: int, label: str) -> None:
        super().__init__(leave=False)
        self.period_of_epoch = period_of_epoch
        self.n_epochs = n_epochs
        self.label = label

    @property
    def test_description(self) -> str:
        return f"{self.label}: test"

    def _get_train_description(self, current_epoch: int) -> str:
        period = self.period_of_epoch(current_epoch)
        return f"{self.label}: period {period} ({current_epoch + 1} of {self.n_epochs})"

