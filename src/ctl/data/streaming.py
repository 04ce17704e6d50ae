"""Training rows streamed from ``rows.parquet`` one row group at a time (``data.in_memory=false``).

For datasets whose rows do not fit in memory: only a small row index (``domain``, ``period``,
``label``: 4 bytes a row) and the users' histories stay in memory; the feature columns of a
training period are read row group by row group while the epoch runs, so memory holds about one
row group at a time. Validation and test slices (one domain, one period) are read whole.

Order of an epoch: the row groups holding the period in a permutation drawn from
``(seed, epoch)``, and the period's rows of each group in a permutation drawn from
``(seed, epoch, group)``. Every rank reads the same groups in the same order and takes the
positions ``rank, rank + world_size, ...`` of that stream, padded as :class:`RowBatcher` pads
(the first rows repeated), so every rank trains the same number of batches and every row is
seen once per epoch. Inside a rank, DataLoader worker ``w`` of ``n`` builds the batches ``w, w +
n, ...`` (building a batch, its sequence gathers, is the costly part; reading a group is not), so
the loader yields them in the rank's order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ctl.data.batch import Batch
from ctl.data.batcher import BatchAssembler, check_shard, row_columns
from ctl.data.dataset import Dataset
from ctl.data.history import UserHistory
from ctl.data.layout import HISTORY_FILE, ROWS_FILE, history_dtypes, read_meta
from ctl.data.parts import RowGroups, read_parquet_parts

#: the row columns an index-only dataset keeps in memory (``label`` gives ``Dataset.n_rows``)
INDEX_COLUMNS: tuple[str, ...] = ("domain", "period", "label")


def load_row_index(path: Path | str) -> Dataset:
    """A dataset folder with its histories but, of the rows, only :data:`INDEX_COLUMNS` in memory.

    ``select`` works as on a loaded dataset; batches come from :class:`ParquetRowStream` (training)
    and :func:`ctl.data.parts.read_rows` (evaluation slices). Values are not validated here: run ``ctl data
    validate`` once on a dataset before streaming it.
    """
    folder = Path(path)
    meta, schema = read_meta(folder)
    index = read_parquet_parts(folder, ROWS_FILE, INDEX_COLUMNS)
    rows = {name: index.column(name).to_numpy() for name in INDEX_COLUMNS}
    if rows["label"].shape[0] != meta["n_rows"]:
        raise ValueError(f"{folder / ROWS_FILE}: {rows['label'].shape[0]} rows, meta.yaml says {meta['n_rows']}")
    history_table = read_parquet_parts(folder, HISTORY_FILE, list(history_dtypes()))
    history = {name: history_table.column(name).to_numpy() for name in history_dtypes()}
    user_history = UserHistory.from_columns(
        history, n_users=schema.feature("user_id").vocab, n_domains=len(schema.domains)
    )
    return Dataset(path=folder, schema=schema, meta=meta, rows=rows, history=user_history)






class ParquetRowStream(IterableDataset):
    """Training batches of some dataset rows, read from ``rows.parquet`` one row group at a time.

    Args:
        dataset: the dataset (index-only from :func:`load_row_index`, or fully loaded).
        rows: int ``[N]`` dataset row indices to serve (N >= 1), e.g. ``dataset.select([...], [p])``.
        batch_size: B; the epoch's last batch of a rank may be smaller.
        shuffle: permute the row groups and the rows inside each group per ``(seed, epoch)``.
        seed: base seed of the permutations.
        domain_sequences: domains whose own sequences every batch carries.
        rank, world_size: this process's shard.

    Example::

        stream = ParquetRowStream(ds, ds.select(["A"], [30]), batch_size=512, shuffle=True, seed=0)
        stream.set_epoch(3)
        loader = DataLoader(stream, batch_size=None, num_workers=2)
    """

    def __init__(
        self,
        dataset: Dataset,
        rows: np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int,
        domain_sequences: Sequence[str] = (),
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if rows.size == 0:
            raise ValueError("ParquetRowStream: rows is empty")
        if batch_size < 1:
            raise ValueError(f"ParquetRowStream: batch_size must be >= 1, got {batch_size}")
        check_shard(rank, world_size, "ParquetRowStream")
        for name in domain_sequences:
            dataset.schema.domain_index(name)
        self.row_groups = RowGroups(dataset.path)
        self.schema = dataset.schema
        self.history = dataset.history
        self.domain_sequences = tuple(domain_sequences)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        offsets = self.row_groups.offsets
        if rows[-1] >= offsets[-1]:
            raise ValueError(f"ParquetRowStream: row indices must lie in [0, {offsets[-1]}), got {rows[-1]}")
        self.n_rows = int(rows.size)
        group_of = np.searchsorted(offsets, rows, side="right") - 1
        self.groups = np.unique(group_of)
        #: per group: its first row and the local indices of the selected rows in it
        self._local = {int(g): rows[group_of == g] - offsets[g] for g in self.groups}
        self._first_row = {int(g): int(offsets[g]) for g in self.groups}

    @property
    def rows_per_rank(self) -> int:
        return math.ceil(self.n_rows / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return math.ceil(self.rows_per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def start_at(self, batch: int) -> None:
        """Serve the epoch from its batch ``batch`` on (a fit resumed mid-epoch)."""
        if not 0 <= batch <= len(self):
            raise ValueError(f"ParquetRowStream: start batch must lie in [0, {len(self)}], got {batch}")
        self.start_batch = int(batch)

    def _permutation(self, n: int, part: int) -> np.ndarray:
        """A permutation of ``n`` drawn from (seed, epoch, part): part 0 orders the groups, g + 1 group g."""
        state = np.random.SeedSequence([int(self.seed), self.epoch, part]).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state) & (2**63 - 1))
        return torch.randperm(n, generator=generator).numpy()

    def _group_order(self) -> np.ndarray:
        return self.groups[self._permutation(self.groups.size, 0)] if self.shuffle else self.groups

    def _read_group(self, group: int) -> dict[str, np.ndarray]:
        """The group's selected rows (shuffled per epoch), with their dataset row ids under ``row``."""
        local = self._local[group]
        if self.shuffle:
            local = local[self._permutation(local.size, group + 1)]
        values = self.row_groups.read(group, row_columns(self.schema))
        columns = {name: values[name][local] for name in row_columns(self.schema)}
        columns["row"] = local + self._first_row[group]
        return columns

    def _rank_chunks(self) -> Iterator[dict[str, np.ndarray]]:
        """This rank's rows of the epoch, group by group, ending with its padding row if it has one."""
        seen = 0
        head: dict[str, np.ndarray] | None = None  # the stream's first world_size rows, for padding
        for group in self._group_order():
            columns = self._read_group(int(group))
            size = columns["row"].size
            if head is None or head["row"].size < self.world_size:
                taken = {k: v[: self.world_size] for k, v in columns.items()}
                head = taken if head is None else {k: np.concatenate([head[k], taken[k]])[: self.world_size]
                                                   for k in head}
            first = (self.rank - seen) % self.world_size
            yield {k: v[first :: self.world_size] for k, v in columns.items()}
            seen += size
        padded = self.rows_per_rank * self.world_size
        pad_position = self.n_rows + (self.rank - self.n_rows) % self.world_size
        if head is not None and pad_position < padded:
            # the padded stream repeats its first rows, as RowBatcher's permutation does
            index = pad_position - self.n_rows
            yield {k: v[index : index + 1] for k, v in head.items()}

    def _rank_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """This rank's batches of raw columns, in order (only the last one may be smaller)."""
        pending: list[dict[str, np.ndarray]] = []
        pending_rows = 0
        for chunk in self._rank_chunks():
            pending.append(chunk)
            pending_rows += chunk["row"].size
            if pending_rows < self.batch_size:
                continue
            joined = {k: np.concatenate([c[k] for c in pending]) for k in chunk}
            full = pending_rows - pending_rows % self.batch_size
            for start in range(0, full, self.batch_size):
                yield {k: v[start : start + self.batch_size] for k, v in joined.items()}
            pending = [{k: v[full:] for k, v in joined.items()}]
            pending_rows -= full
        if pending_rows:
            yield {k: np.concatenate([c[k] for c in pending]) for k in pending[0]}

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        worker_id, n_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for index, columns in enumerate(self._rank_batches()):
            if index < self.start_batch or (index - self.start_batch) % n_workers != worker_id:
                continue
            assembler = BatchAssembler(self.schema, self.history, columns, columns["row"], self.domain_sequences)
            yield assembler.batch(torch.arange(assembler.n_rows))
