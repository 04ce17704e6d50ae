"""The one atomic table writer: tables, one after another, into one Parquet or CSV file.

The file is filled under a temporary name and renamed into place (:func:`ctl.io.atomic_write`), so
a reader never meets half of it. The tables are written as they come, so a caller can stream rows
out block by block without holding them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ctl.errors import CtlError
from ctl.io import atomic_write

#: pyarrow's own default, so a table written in one piece keeps the layout ``pq.write_table`` gives it
ROW_GROUP_ROWS = 1 << 20


def write_table(path: Path | str, tables: Iterable[pa.Table], row_group_rows: int = ROW_GROUP_ROWS) -> Path:
    """Write ``tables`` (all of one schema, at least one) as one file at ``path``, atomically: CSV if its
    suffix is ``.csv``, else Parquet.

    Parquet rows are cut into row groups of ``row_group_rows`` whatever the sizes of the tables, so the
    file's bytes depend on its rows alone, not on how they were split into tables.
    """
    path = Path(path)
    is_csv = path.suffix.lower() == ".csv"

    def fill(handle: BinaryIO) -> None:
        writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
        pending: list[pa.Table] = []
        pending_rows = 0
        written = False
        for table in tables:
            if writer is None:
                writer = pacsv.CSVWriter(handle, table.schema) if is_csv else pq.ParquetWriter(handle, table.schema)
            if is_csv:
                writer.write_table(table)
                written = True
                continue
            pending.append(table)
            pending_rows += table.num_rows
            while pending_rows >= row_group_rows:
                # one contiguous chunk per group: the encoded pages do not depend on the tables' chunks
                joined = pa.concat_tables(pending).combine_chunks()
                writer.write_table(joined.slice(0, row_group_rows), row_group_size=row_group_rows)
                written = True
                pending = [joined.slice(row_group_rows)]
                pending_rows -= row_group_rows
        if writer is None:
            raise CtlError(f"{path}: no table to write")
        if pending_rows or not written:
            writer.write_table(pa.concat_tables(pending).combine_chunks(), row_group_size=row_group_rows)
        writer.close()

    return atomic_write(path, fill)
