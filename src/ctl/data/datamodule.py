"""The continual protocol as a LightningDataModule: epoch k trains on period ``periods[k]``.

One ``fit`` is one track. With ``reload_dataloaders_every_n_epochs=1`` Lightning asks for new
dataloaders every epoch; this module reads ``trainer.current_epoch`` to serve

* train (epoch k): the rows of ``train_domains`` in period ``periods[k]``, shuffled per (seed, k);
* validation after epoch k: ``eval_domain``'s rows in period ``periods[k] + 1``, the next slice;
* test and predict: ``eval_domain``'s rows in the test period.

Every slice is checked when the module is built, so a run never starts on an empty or unknown one.
Under DDP each rank serves its shard of every slice (see :mod:`ctl.data.batcher`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl

from ctl.data.batcher import RowBatcher
from ctl.data.dataset import Dataset


class ContinualDataModule(pl.LightningDataModule):
    """Serves one period per epoch of a continual track.

    Args:
        dataset: the loaded dataset.
        train_domains: domains whose rows are trained on (one for a single-domain track, several
            for joint methods).
        periods: the period trained at each epoch; the trainer's ``max_epochs`` is ``len(periods)``.
        eval_domain: the domain validated and tested on.
        batch_size, eval_batch_size: rows per training / evaluation batch.
        seed: base seed of the per-epoch shuffles.
        domain_sequences: domains whose own sequences every batch carries (``seq_<domain>_*``).

    Example::

        dm = ContinualDataModule(ds, ["B"], periods=range(ds.schema.t0, ds.schema.test_period), eval_domain="B")
        trainer = pl.Trainer(max_epochs=len(dm.periods), reload_dataloaders_every_n_epochs=1)
    """

    def __init__(
        self,
        dataset: Dataset,
        train_domains: Sequence[str],
        periods: Sequence[int],
        eval_domain: str,
        batch_size: int = 512,
        eval_batch_size: int = 4096,
        seed: int = 0,
        domain_sequences: Sequence[str] = (),
    ) -> None:
        super().__init__()
        schema = dataset.schema
        self.dataset = dataset
        self.train_domains = tuple(train_domains)
        self.periods = tuple(int(p) for p in periods)
        self.eval_domain = eval_domain
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.domain_sequences = tuple(domain_sequences)
        if not self.train_domains:
            raise ValueError("ContinualDataModule: train_domains is empty")
        if not self.periods:
            raise ValueError("ContinualDataModule: periods is empty")
        for name in (*self.train_domains, eval_domain, *self.domain_sequences):
            schema.domain_index(name)
        # The last training period is validated on the slice after it, which must still be in the layout.
        outside = [p for p in self.periods if not 0 <= p < schema.test_period]
        if outside:
            raise ValueError(
                f"ContinualDataModule: periods {outside} are outside the trainable layout [0, {schema.test_period - 1}] "
                f"(period {schema.test_period} is the test slice)"
            )
        for period in self.periods:
            self._rows(self.train_domains, period, "train")
            self._rows((eval_domain,), period + 1, "validation")
        self._rows((eval_domain,), schema.test_period, "test")

    def _rows(self, domains: Sequence[str], period: int, purpose: str) -> np.ndarray:
        rows = self.dataset.select(domains, [period])
        if rows.size == 0:
            raise ValueError(
                f"ContinualDataModule: the {purpose} slice (domains {list(domains)}, period {period}) of "
                f"{self.dataset.path} has no rows"
            )
        return rows

    @property
    def current_epoch(self) -> int:
        """The attached trainer's epoch, 0 when no trainer is attached."""
        return self.trainer.current_epoch if self.trainer is not None else 0

    def period_of_epoch(self, epoch: int) -> int:
        """The period trained at ``epoch``."""
        if not 0 <= epoch < len(self.periods):
            raise ValueError(
                f"ContinualDataModule: epoch {epoch} has no period; periods {list(self.periods)} cover epochs "
                f"0..{len(self.periods) - 1} (set max_epochs={len(self.periods)})"
            )
        return self.periods[epoch]

    def _shard(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _batcher(self, rows: np.ndarray, batch_size: int, shuffle: bool, epoch: int) -> RowBatcher:
        rank, world_size = self._shard()
        batcher = RowBatcher(
            self.dataset,
            rows,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=self.seed,
            domain_sequences=self.domain_sequences,
            rank=rank,
            world_size=world_size,
        )
        batcher.set_epoch(epoch)
        return batcher

    def train_dataloader(self) -> RowBatcher:
        epoch = self.current_epoch
        rows = self._rows(self.train_domains, self.period_of_epoch(epoch), "train")
        return self._batcher(rows, self.batch_size, shuffle=True, epoch=epoch)

    def val_dataloader(self) -> RowBatcher:
        # Lightning's sanity check runs before epoch 0's training; both validate epoch 0's next slice.
        period = self.period_of_epoch(min(self.current_epoch, len(self.periods) - 1)) + 1
        return self._batcher(
            self._rows((self.eval_domain,), period, "validation"), self.eval_batch_size, False, 0
        )

    def test_dataloader(self) -> RowBatcher:
        rows = self._rows((self.eval_domain,), self.dataset.schema.test_period, "test")
        return self._batcher(rows, self.eval_batch_size, shuffle=False, epoch=0)

    def predict_dataloader(self) -> RowBatcher:
        return self.test_dataloader()
