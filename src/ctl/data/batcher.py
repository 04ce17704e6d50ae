"""Batches of dataset rows as column tensors, with sequences gathered per batch.

The selected rows are converted to torch columns once; a batch is a slice of a (shuffled)
permutation of them, and its behaviour sequences are gathered from the users' CSR history with
vectorised indexing. This replaces a per-row ``Dataset.__getitem__`` + collate, which is an
order of magnitude slower on CPU.

Distributed: rank ``r`` takes every ``world_size``-th position of the permutation starting at
``r``. For training (``equal_shards``) the permutation is first padded to a multiple of
``world_size`` by repeating its first rows, so every rank gets the same number of rows and
batches (DDP needs equal step counts); up to ``world_size - 1`` rows are served twice per epoch,
never dropped. For evaluation (``equal_shards=False``) nothing is padded: every row is served
exactly once over all ranks, and ranks may differ by one row (metrics are gathered, not stepped).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from ctl.data.batch import Batch
from ctl.data.dataset import Dataset
from ctl.data.history import UserHistory
from ctl.data.parts import read_rows
from ctl.data.schema import Schema
from ctl.data.sequences import gather_sequences


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit generator seed for one (seed, epoch) pair."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)


def row_columns(schema: Schema) -> tuple[str, ...]:
    """The ``rows.parquet`` columns a batch is built from: every feature, label, domain, period, hist_end."""
    return (*schema.feature_names, "label", "domain", "period", "hist_end")


class BatchAssembler:
    """Column tensors of N dataset rows, turned into batch dicts with their sequences gathered.

    Args:
        schema: the dataset's features and sequence lengths.
        history: the users' behaviour events.
        columns: :func:`row_columns` as arrays ``[N]`` (any integer dtype), in the order served.
        row_ids: int ``[N]``, each row's index in the dataset (the batch's ``row`` key).
        domain_sequences: domain names whose own sequences (``seq_<domain>_*``) every batch carries.

    Example::

        assembler = BatchAssembler.from_dataset(ds, ds.select(["B"], [3]), domain_sequences=())
        batch = assembler.batch(torch.arange(512))
    """

    def __init__(
        self,
        schema: Schema,
        history: UserHistory,
        columns: Mapping[str, np.ndarray],
        row_ids: np.ndarray,
        domain_sequences: Sequence[str],
    ) -> None:
        missing = [name for name in row_columns(schema) if name not in columns]
        if missing:
            raise ValueError(f"BatchAssembler: the row columns {missing} are missing")
        row_ids = np.asarray(row_ids)
        sizes = {name: np.asarray(columns[name]).shape for name in row_columns(schema)}
        wrong = {name: shape for name, shape in sizes.items() if shape != row_ids.shape}
        if row_ids.ndim != 1 or wrong:
            raise ValueError(f"BatchAssembler: row_ids {row_ids.shape} and the columns {wrong} differ in shape")
        self.sequence_domains = {name: schema.domain_index(name) for name in domain_sequences}
        self.history = history
        self.schema = schema
        self.columns: dict[str, torch.Tensor] = {
            name: torch.from_numpy(np.asarray(columns[name]).astype(np.int64, copy=False))
            for name in (*schema.feature_names, "domain", "period")
        }
        self.columns["label"] = torch.from_numpy(np.asarray(columns["label"]).astype(np.float32))
        self.columns["row"] = torch.from_numpy(row_ids.astype(np.int64, copy=False))
        self.hist_end = torch.from_numpy(np.asarray(columns["hist_end"]).astype(np.int64, copy=False))

    @classmethod
    def from_dataset(cls, dataset: Dataset, rows: np.ndarray, domain_sequences: Sequence[str]) -> BatchAssembler:
        """The rows ``rows`` (dataset indices, in that order) of a dataset.

        From memory when the dataset holds its row columns; an index-only dataset (streamed, see
        :mod:`ctl.data.streaming`) has them read from its Parquet file, only the row groups needed.
        """
        schema = dataset.schema
        names = row_columns(schema)
        rows = np.asarray(rows)
        if all(name in dataset.rows for name in names):
            columns = {name: dataset.rows[name][rows] for name in names}
        else:
            unique, position = np.unique(rows, return_inverse=True)
            columns = {name: values[position] for name, values in read_rows(dataset.path, unique, names).items()}
        return cls(schema, dataset.history, columns, rows, domain_sequences)

    @property
    def n_rows(self) -> int:
        return int(self.hist_end.shape[0])

    def batch(self, positions: torch.Tensor) -> Batch:
        """The batch of the rows at ``positions`` (int64 ``[B]``)."""
        # index_select: several times faster than advanced indexing for 1-d gathers.
        batch = {name: column.index_select(0, positions) for name, column in self.columns.items()}
        visible = self.hist_end.index_select(0, positions)
        batch.update(gather_sequences(self.history, self.schema, batch["user_id"], visible, batch["domain"],
                                      batch["category_id"], self.sequence_domains))
        return batch


def check_shard(rank: int, world_size: int, who: str) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"{who}: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def rows_of_rank(n_rows: int, world_size: int, rank: int, equal_shards: bool) -> int:
    """How many of ``n_rows`` rank ``rank`` serves (see the module docstring)."""
    if equal_shards:
        return math.ceil(n_rows / world_size)
    return len(range(rank, n_rows, world_size))


class RowBatcher:
    """An iterable of batch dicts (see :mod:`ctl.data.batch`) over some rows of a dataset.

    Args:
        dataset: the loaded dataset.
        rows: int ``[N]`` dataset row indices to serve (N >= 1).
        batch_size: B, rows per batch (the last batch of an epoch may be smaller unless ``drop_last``).
        shuffle: serve the rows in a permutation drawn from ``(seed, epoch)``; else in ``rows`` order.
        seed: base seed of the permutations.
        domain_sequences: domain names whose own sequences (``seq_<domain>_*``, length
            ``schema.short_len``) every batch also carries.
        drop_last: drop each rank's last incomplete batch.
        rank, world_size: this process's shard (see the module docstring).
        equal_shards: pad so every rank serves as many rows (training); False serves each row once.

    Example::

        batcher = RowBatcher(ds, ds.select(["B"], [3]), batch_size=512, shuffle=True, seed=0)
        batcher.set_epoch(1)
        for batch in batcher:
            logits = model(batch)
    """

    def __init__(
        self,
        dataset: Dataset,
        rows: np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int,
        domain_sequences: Sequence[str] = (),
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        equal_shards: bool = True,
    ) -> None:
        rows = np.asarray(rows)
        if rows.ndim != 1 or rows.size == 0:
            raise ValueError(f"RowBatcher: rows must be a non-empty 1-d index array, got shape {rows.shape}")
        if rows.dtype.kind not in "iu":
            raise ValueError(f"RowBatcher: rows must hold integer row indices, got dtype {rows.dtype}")
        if rows.min() < 0 or rows.max() >= dataset.n_rows:
            raise ValueError(
                f"RowBatcher: row indices must lie in [0, {dataset.n_rows}), got {rows.min()} .. {rows.max()}"
            )
        for name in domain_sequences:
            dataset.schema.domain_index(name)
        self._start(batch_size, shuffle, seed, drop_last, rank, world_size, equal_shards)
        self.assembler = BatchAssembler.from_dataset(dataset, rows, domain_sequences)

    @classmethod
    def from_assembler(
        cls,
        assembler: BatchAssembler,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        equal_shards: bool = True,
    ) -> RowBatcher:
        """A batcher over rows already assembled (e.g. a slice read from Parquet)."""
        if assembler.n_rows == 0:
            raise ValueError("RowBatcher: the assembler holds no rows")
        batcher = cls.__new__(cls)
        batcher._start(batch_size, shuffle, seed, drop_last, rank, world_size, equal_shards)
        batcher.assembler = assembler
        return batcher

    def _start(self, batch_size: int, shuffle: bool, seed: int, drop_last: bool, rank: int, world_size: int,
               equal_shards: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"RowBatcher: batch_size must be >= 1, got {batch_size}")
        check_shard(rank, world_size, "RowBatcher")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.equal_shards = equal_shards
        self.epoch = 0
        self.start_batch = 0

    @property
    def n_selected(self) -> int:
        return self.assembler.n_rows

    @property
    def rows_per_rank(self) -> int:
        """Rows this rank serves per epoch."""
        return rows_of_rank(self.n_selected, self.world_size, self.rank, self.equal_shards)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank with ``equal_shards``)."""
        if self.drop_last:
            return self.rows_per_rank // self.batch_size
        return math.ceil(self.rows_per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of the next iteration (with ``shuffle``)."""
        self.epoch = int(epoch)

    def start_at(self, batch: int) -> None:
        """Serve the epoch from its batch ``batch`` on (a fit resumed mid-epoch skips the batches it trained)."""
        if not 0 <= batch <= len(self):
            raise ValueError(f"RowBatcher: start batch must lie in [0, {len(self)}], got {batch}")
        self.start_batch = int(batch)

    def positions(self) -> torch.Tensor:
        """This rank's positions into the selected rows for the current epoch, int64 ``[rows_per_rank]``."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n_selected, generator=generator)
        else:
            order = torch.arange(self.n_selected)
        padded = self.rows_per_rank * self.world_size if self.equal_shards else self.n_selected
        if padded > self.n_selected:
            order = order.repeat(math.ceil(padded / self.n_selected))[:padded]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Batch]:
        positions = self.positions()
        for start in range(self.start_batch * self.batch_size, len(self) * self.batch_size, self.batch_size):
            yield self.batch(positions[start : start + self.batch_size])

    def batch(self, positions: torch.Tensor) -> Batch:
        """The batch of the selected rows at ``positions`` (int64 ``[B]``)."""
        return self.assembler.batch(positions)
