"""Callbacks of the continual protocol: the source refresh and the period-aware progress bar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

from ctl.training.checkpoints import load_model_state


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
        tower = pl_module.model.source
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

    def _get_train_description(self, current_epoch: int) -> str:
        period = self.period_of_epoch(current_epoch)
        return f"{self.label}: period {period} ({current_epoch + 1} of {self.n_epochs})"

