"""The continual protocol as a LightningDataModule: epoch k trains on period ``periods[k]``.

One ``fit`` is one track. With ``reload_dataloaders_every_n_epochs=1`` Lightning asks for new
dataloaders every epoch; this module reads ``trainer.current_epoch`` to serve

* train (epoch k): the rows of ``train_domains`` in period ``periods[k]``, shuffled per (seed, k);
* validation after epoch k: ``eval_domain``'s rows in period ``periods[k] + 1``, the next slice;
* test and predict: ``eval_domain``'s rows in the test period.

Every slice is checked when the module is built, so a run never starts on an empty or unknown one.
Under DDP each rank serves its shard of every slice, reading its rank and the world size from the
attached trainer: training shards are padded to equal sizes (equal step counts), evaluation shards
serve every row exactly once (see :mod:`ctl.data.batcher`).

With ``in_memory=False`` the training rows are streamed from the dataset's Parquet file one row
group at a time (:mod:`ctl.data.streaming`; the dataset may be index-only, from
``load_row_index``) and evaluation slices are read from it when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from ctl.data.batcher import BatchAssembler, RowBatcher
from ctl.data.dataset import Dataset
from ctl.data.streaming import ParquetRowStream

if TYPE_CHECKING:
    from pytorch_lightning.loops.progress import _ProcessedTracker


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
        in_memory: batch from the loaded rows (True) or stream training rows from Parquet (False).
        num_workers: DataLoader workers that build streamed batches (0: in this process).

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
        in_memory: bool = True,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        schema = dataset.schema
        if num_workers < 0:
            raise ValueError(f"ContinualDataModule: num_workers must be >= 0, got {num_workers}")
        self.in_memory = in_memory
        self.num_workers = num_workers
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
        """A training batcher (equal shards) of ``rows`` from the loaded dataset."""
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

    def _eval_batcher(self, rows: np.ndarray) -> RowBatcher:
        """An evaluation batcher: each row served once over all ranks, in ``rows`` order."""
        rank, world_size = self._shard()
        assembler = BatchAssembler.from_dataset(self.dataset, rows, self.domain_sequences)
        # unpadded unless a rank would get no row at all (its metric states must not be empty)
        return RowBatcher.from_assembler(assembler, self.eval_batch_size, shuffle=False, seed=self.seed,
                                         rank=rank, world_size=world_size, equal_shards=rows.size < world_size)

    def _stream(self, rows: np.ndarray, epoch: int) -> ParquetRowStream | DataLoader:
        rank, world_size = self._shard()
        stream = ParquetRowStream(self.dataset, rows, self.batch_size, shuffle=True, seed=self.seed,
                                  domain_sequences=self.domain_sequences, rank=rank, world_size=world_size)
        stream.set_epoch(epoch)
        stream.start_at(self._batches_done_before_restart())
        if self.num_workers == 0:
            return stream
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers)

    def train_dataloader(self) -> RowBatcher | ParquetRowStream | DataLoader:
        epoch = self.current_epoch
        rows = self._rows(self.train_domains, self.period_of_epoch(epoch), "train")
        if not self.in_memory:
            return self._stream(rows, epoch)
        batcher = self._batcher(rows, self.batch_size, shuffle=True, epoch=epoch)
        batcher.start_at(self._batches_done_before_restart())
        return batcher

    def _batches_done_before_restart(self) -> int:
        # Lightning restores its batch counter from a mid-epoch checkpoint but does not skip the
        # batches already trained: the permutation is a function of (seed, epoch), so starting at
        # that counter serves exactly the rest of the epoch.
        loop = self.trainer.fit_loop if self.trainer is not None else None
        if loop is None or not loop.restarting:
            return 0
        # Declared a _ReadyCompletedTracker, the batch progress's tracker is always a _ProcessedTracker.
        return cast("_ProcessedTracker", loop.epoch_loop.batch_progress.current).processed

    def val_dataloader(self) -> RowBatcher:
        # Lightning's sanity check runs before epoch 0's training; both validate epoch 0's next slice.
        period = self.period_of_epoch(min(self.current_epoch, len(self.periods) - 1)) + 1
        return self._eval_batcher(self._rows((self.eval_domain,), period, "validation"))

    def eval_batches(self, period: int) -> RowBatcher:
        """``eval_domain``'s rows of ``period``, batched as validation batches them (a continued fit
        validates its earlier last period again with them)."""
        return self._eval_batcher(self._rows((self.eval_domain,), period, "validation"))

    def test_dataloader(self) -> RowBatcher:
        return self._eval_batcher(self._rows((self.eval_domain,), self.dataset.schema.test_period, "test"))

    def predict_dataloader(self) -> RowBatcher:
        return self.test_dataloader()
