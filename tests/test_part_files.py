"""Datasets written as folders of Parquet part files (as Spark and DuckDB write them) load, stream
and train like the single-file dataset they were cut from.

The part files are written here with pyarrow the way ``docs/data.md``'s PySpark recipe lays them
out: ``rows/`` and ``history/`` hold ``part-<n>-<uuid>.snappy.parquet`` files whose name order is
the row order, next to Spark's ``_SUCCESS`` marker and ``.crc`` checksums.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hydra import compose, initialize_config_module

from conftest import make_random_dataset
from ctl.data.dataset import DatasetError, load_dataset
from ctl.data.streaming import ParquetRowStream, load_row_index
from ctl.training.protocol import run_train


def write_parts(table, folder: Path, cuts: list[int], row_group_size: int) -> None:
    """``table`` cut at ``cuts`` into Spark-named part files (and Spark's side files)."""
    folder.mkdir()
    for n, (start, stop) in enumerate(zip([0, *cuts], [*cuts, table.num_rows], strict=True)):
        name = f"part-{n:05d}-3f2a9c1e-5b7d-4e1a-9f0c-2d6e8b4a1c7f-c000.snappy.parquet"
        pq.write_table(table.slice(start, stop - start), folder / name, row_group_size=row_group_size)
        (folder / f".{name}.crc").write_bytes(b"not parquet")
    (folder / "_SUCCESS").touch()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    """A random dataset, and the same dataset as part files (one of them empty, as Spark may write)."""
    base = tmp_path_factory.mktemp("parts")
    whole = make_random_dataset(base, n_rows=900, n_events=2000)
    parts = base / "as_parts"
    parts.mkdir()
    shutil.copy(whole / "meta.yaml", parts / "meta.yaml")
    write_parts(pq.read_table(whole / "rows.parquet"), parts / "rows", [100, 100, 450, 700], row_group_size=64)
    write_parts(pq.read_table(whole / "history.parquet"), parts / "history", [999, 1500], row_group_size=500)
    return whole, parts


def test_part_files_load_as_the_single_file_dataset(datasets) -> None:
    whole, parts = map(load_dataset, datasets)
    assert parts.n_rows == whole.n_rows == 900
    for name, values in whole.rows.items():
        np.testing.assert_array_equal(parts.rows[name], values, err_msg=name)
    for name in ("item", "category", "domain", "ts", "user_offsets"):
        assert torch.equal(getattr(parts.history, name), getattr(whole.history, name)), name


def test_part_files_stream_every_row_of_a_period_with_its_values(datasets) -> None:
    whole = load_dataset(datasets[0])
    index = load_row_index(datasets[1])
    rows = index.select(["A", "B"], [3])
    stream = ParquetRowStream(index, rows, batch_size=32, shuffle=True, seed=3)
    assert len(stream.row_groups.groups) > 10  # row groups of every part file, in order
    served = []
    for batch in stream:
        served.append(batch["row"].numpy())
        assert torch.equal(batch["item_id"], torch.from_numpy(whole.rows["item_id"][served[-1]]))
    np.testing.assert_array_equal(np.sort(np.concatenate(served)), rows)


def test_part_files_out_of_order_are_refused(datasets, tmp_path) -> None:
    folder = tmp_path / "swapped"
    shutil.copytree(datasets[1], folder)
    first, second = sorted((folder / "history").glob("part-*.parquet"))[:2]
    first.rename(folder / "history" / "held")
    second.rename(first)
    (folder / "history" / "held").rename(second)  # the parts' name order is no longer the user order
    with pytest.raises(DatasetError, match=r"^history\.parquet: column 'user_id', row \d+: value \d+ breaks the "
                                           r"\(user_id, ts\) order"):
        load_dataset(folder)
    shutil.rmtree(folder / "rows")
    (folder / "rows").mkdir()
    with pytest.raises(DatasetError, match=r"^rows/: holds no \.parquet part files"):
        load_dataset(folder)


def test_a_part_file_dataset_trains_streamed(datasets, tmp_path) -> None:
    torch.set_num_threads(1)
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "data=synthetic_tiny", f"home={tmp_path / 'home'}", "progress=false", "print_table=false", "model=base",
            f"+data.path={datasets[1]}", "data.domain=B", "data.in_memory=false", "data.batch_size=64"])
    metrics = run_train(cfg, tmp_path / "run")
    assert metrics["target"] == "B"
    assert [p["period"] for p in metrics["periods"]] == list(range(load_dataset(datasets[1]).schema.test_period))
