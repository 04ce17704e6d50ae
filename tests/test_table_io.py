"""The atomic table writer and the id-map reader: hand-made tables and maps, their bytes and refusals."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctl.data.id_maps import ID_MAPS_DIR, raw_values, read_id_map
from ctl.errors import CtlError
from ctl.table_io import write_table


def _rows(start: int, stop: int) -> pa.Table:
    return pa.table({"row": np.arange(start, stop, dtype=np.int64),
                     "pred": (np.arange(start, stop) / 8).astype(np.float32)})


def test_parquet_bytes_depend_on_the_rows_not_on_how_they_were_split(tmp_path):
    whole = pa.concat_tables([_rows(0, 4), _rows(4, 10)])
    one = write_table(tmp_path / "one.parquet", [whole], row_group_rows=4)
    split = write_table(tmp_path / "split.parquet", [_rows(0, 3), _rows(3, 4), _rows(4, 9), _rows(9, 10)],
                        row_group_rows=4)
    assert one.read_bytes() == split.read_bytes()
    meta = pq.ParquetFile(split).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 4, 2]
    assert pq.read_table(split).equals(whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.parquet", "split.parquet"]  # no temporaries


def test_a_single_table_is_written_as_pyarrow_writes_it(tmp_path):
    table = _rows(0, 7)
    pq.write_table(table, tmp_path / "plain.parquet")
    assert write_table(tmp_path / "ours.parquet", [table]).read_bytes() == (tmp_path / "plain.parquet").read_bytes()


def test_csv_by_suffix_with_one_header(tmp_path):
    out = write_table(tmp_path / "out.csv", [_rows(0, 1), _rows(1, 2)])
    assert out.read_text().splitlines() == ['"row","pred"', "0,0", "1,0.125"]


def test_no_table_is_refused_and_leaves_no_file(tmp_path):
    with pytest.raises(CtlError, match="out.parquet: no table to write"):
        write_table(tmp_path / "out.parquet", [])
    assert list(tmp_path.iterdir()) == []


def _write_map(folder, feature: str, ids: list[int], raw: list[str]) -> None:
    (folder / ID_MAPS_DIR).mkdir(exist_ok=True)
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "raw": raw}), folder / ID_MAPS_DIR / f"{feature}.parquet")


def test_an_id_map_is_read_by_its_ids_whatever_the_file_order(tmp_path):
    _write_map(tmp_path, "user_id", [2, 3, 1], ["bob", "carol", "ann"])
    assert raw_values(tmp_path, "user_id").to_pylist() == ["ann", "bob", "carol"]
    assert list(read_id_map(tmp_path, "user_id")) == [None, "ann", "bob", "carol"]
    assert raw_values(tmp_path, "item_id") is None


def test_id_map_refusals(tmp_path):
    _write_map(tmp_path, "user_id", [1, 3], ["ann", "carol"])
    with pytest.raises(CtlError, match=r"user_id.parquet: ids must run 1..2 without gaps"):
        read_id_map(tmp_path, "user_id")
    with pytest.raises(CtlError, match="item_id.parquet does not exist: feature 'item_id' has no id map"):
        read_id_map(tmp_path, "item_id")
    with pytest.raises(CtlError, match="the id map of feature '../x' would be .*outside"):
        raw_values(tmp_path, "../x")
