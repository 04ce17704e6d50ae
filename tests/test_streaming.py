"""Streaming training rows from Parquet row groups: the same rows as the in-memory path, once each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import make_random_dataset, scramble_global_generators
from ctl.data.batcher import BatchAssembler
from ctl.data.datamodule import ContinualDataModule
from ctl.data.dataset import ROWS_FILE, Dataset, load_dataset
from ctl.data.parts import read_rows
from ctl.data.streaming import ParquetRowStream, load_row_index

GROUP_ROWS = 70


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A random dataset whose rows.parquet is rewritten in row groups of GROUP_ROWS rows."""
    path = make_random_dataset(tmp_path_factory.mktemp("stream"), n_rows=900, n_events=2000)
    table = pq.read_table(path / ROWS_FILE)
    pq.write_table(table, path / ROWS_FILE, row_group_size=GROUP_ROWS)
    assert pq.ParquetFile(path / ROWS_FILE).metadata.num_row_groups > 5
    return path


@pytest.fixture(scope="module")
def loaded(folder: Path) -> Dataset:
    return load_dataset(folder)


@pytest.fixture(scope="module")
def index(folder: Path) -> Dataset:
    return load_row_index(folder)


def served_rows(batches) -> np.ndarray:
    return torch.cat([b["row"] for b in batches]).numpy()


def test_row_index_selects_like_the_loaded_dataset(loaded: Dataset, index: Dataset) -> None:
    assert index.n_rows == loaded.n_rows
    assert set(index.rows) == {"domain", "period", "label"}
    for domains, periods in ((["A"], [2]), (["B", "C"], [1, 3]), (None, None)):
        np.testing.assert_array_equal(index.select(domains, periods), loaded.select(domains, periods))
    np.testing.assert_array_equal(index.history.item, loaded.history.item)


@pytest.mark.parametrize(("world_size", "workers"), [(1, 0), (2, 0), (3, 0), (2, 2)])
def test_stream_serves_every_row_of_a_period_once_with_equal_batch_counts(
    index: Dataset, world_size: int, workers: int
) -> None:
    rows = index.select(["A", "B"], [3])
    shards = []
    for rank in range(world_size):
        stream = ParquetRowStream(index, rows, batch_size=16, shuffle=True, seed=5, rank=rank,
                                  world_size=world_size)
        stream.set_epoch(2)
        batches = list(DataLoader(stream, batch_size=None, num_workers=workers) if workers else stream)
        assert len(batches) == len(stream)
        assert all(b["row"].shape[0] == 16 for b in batches[:-1])
        shards.append(served_rows(batches))
    assert len({s.size for s in shards}) == 1  # DDP: every rank steps as often
    served = np.concatenate(shards)
    np.testing.assert_array_equal(np.unique(served), rows)
    assert served.size - rows.size == (-rows.size) % world_size  # only the padding repeats


def test_workers_yield_the_batches_of_a_single_process_in_the_same_order(index: Dataset) -> None:
    rows = index.select(None, [1, 2])
    stream = ParquetRowStream(index, rows, batch_size=32, shuffle=True, seed=0)
    alone = [b["row"] for b in stream]
    with_workers = [b["row"] for b in DataLoader(stream, batch_size=None, num_workers=2)]
    assert len(alone) == len(with_workers) > 4
    for a, b in zip(alone, with_workers, strict=True):
        assert torch.equal(a, b)


def test_streamed_batches_hold_the_in_memory_values_of_their_rows(loaded: Dataset, index: Dataset) -> None:
    rows = index.select(["A", "C"], [4])
    stream = ParquetRowStream(index, rows, batch_size=50, shuffle=True, seed=1, domain_sequences=["A"])
    for batch in stream:
        reference = BatchAssembler.from_dataset(loaded, batch["row"].numpy(), ["A"]).batch(
            torch.arange(batch["row"].shape[0])
        )
        assert batch.keys() == reference.keys()
        for key, value in reference.items():
            assert value.dtype == batch[key].dtype and torch.equal(value, batch[key]), key


def test_order_depends_on_seed_and_epoch_and_resumes_mid_epoch(index: Dataset) -> None:
    rows = index.select(None, [3])

    def order(seed: int, epoch: int, start: int = 0) -> list[int]:
        scramble_global_generators()
        stream = ParquetRowStream(index, rows, batch_size=20, shuffle=True, seed=seed)
        stream.set_epoch(epoch)
        stream.start_at(start)
        return served_rows(stream).tolist()

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    assert order(0, 1, start=3) == order(0, 1)[3 * 20 :]
    unshuffled = ParquetRowStream(index, rows, batch_size=20, shuffle=False, seed=0)
    assert served_rows(unshuffled).tolist() == rows.tolist()
    with pytest.raises(ValueError, match=r"start batch must lie in \[0, \d+\], got 99"):
        unshuffled.start_at(99)


def test_streaming_datamodule_serves_the_in_memory_slices(loaded: Dataset, index: Dataset) -> None:
    kwargs = {"train_domains": ["B"], "periods": [2, 3], "eval_domain": "B", "batch_size": 8,
              "eval_batch_size": 16, "seed": 3}
    in_memory = ContinualDataModule(loaded, **kwargs)
    streamed = ContinualDataModule(index, **kwargs, in_memory=False, num_workers=0)
    assert isinstance(streamed.train_dataloader(), ParquetRowStream)
    np.testing.assert_array_equal(np.sort(served_rows(streamed.train_dataloader())),
                                  np.sort(served_rows(in_memory.train_dataloader())))
    for name in ("val_dataloader", "test_dataloader"):
        expected, got = list(getattr(in_memory, name)()), list(getattr(streamed, name)())
        assert len(expected) == len(got)
        for a, b in zip(expected, got, strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(ContinualDataModule(index, **kwargs, in_memory=False, num_workers=2).train_dataloader(),
                      DataLoader)


def test_read_rows_and_the_stream_refuse_bad_rows(folder: Path, index: Dataset) -> None:
    picked = read_rows(folder, np.array([3, 140, 899]), ["label", "period"])
    table = pq.read_table(folder / ROWS_FILE, columns=["label", "period"])
    np.testing.assert_array_equal(picked["period"], table.column("period").to_numpy()[[3, 140, 899]])
    with pytest.raises(ValueError, match="strictly ascending"):
        read_rows(folder, np.array([5, 2]), ["label"])
    with pytest.raises(ValueError, match=r"must lie in \[0, 900\), got 3 .. 900"):
        read_rows(folder, np.array([3, 900]), ["label"])
    with pytest.raises(ValueError, match="rows is empty"):
        ParquetRowStream(index, np.array([], dtype=np.int64), 8, True, 0)
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        ParquetRowStream(index, np.arange(4), 8, True, 0, rank=2, world_size=2)
