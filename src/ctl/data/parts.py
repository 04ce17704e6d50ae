"""Reading a dataset's Parquet files: a single file or a folder of part files, whole or by row groups."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctl.data.layout import ROWS_FILE, DatasetError


def part_files(folder: Path, file: str) -> list[Path]:
    """The Parquet files holding ``file`` (``rows.parquet``) of a dataset: the file itself, or the
    part files of the folder of its stem (``rows/``, as Spark and DuckDB write it), in name order.

    In a folder, files whose names start with ``_`` or ``.`` (``_SUCCESS``, ``.crc`` checksums)
    and files not ending in ``.parquet`` are skipped.
    """
    single, parts = folder / file, folder / Path(file).stem
    if single.is_file():
        return [single]
    if parts.is_dir():
        found = sorted(p for p in parts.iterdir()
                       if p.is_file() and p.suffix == ".parquet" and not p.name.startswith(("_", ".")))
        if not found:
            raise DatasetError(f"{parts.name}/", f"holds no .parquet part files (in {folder})")
        return found
    raise DatasetError(file, f"missing from the dataset folder {folder} (nor is there a folder {parts.name}/ of "
                             "part files)")


def read_parquet_parts(folder: Path, file: str, columns: Sequence[str]) -> pa.Table:
    """``columns`` of ``file`` (a single file or its part files, concatenated in order)."""
    tables = []
    for path in part_files(folder, file):
        name = file if path.name == file else f"{path.parent.name}/{path.name}"
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(name, f"not a readable Parquet file ({exc})") from exc
        missing = [column for column in columns if column not in names]
        if missing:
            raise DatasetError(name, f"missing (the file has {names})", column=missing[0])
        tables.append(pq.read_table(path, columns=list(columns)))
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


def read_columns(folder: Path, file: str, dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """Read the expected columns of one Parquet file (or its part files), refusing missing columns and nulls."""
    table = read_parquet_parts(folder, file, list(dtypes))
    columns = {}
    for name in dtypes:
        column = table.column(name)
        if column.null_count:
            first = int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
            raise DatasetError(file, "value null is missing", column=name, row=first)
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DatasetError(file, f"dtype {kind} is not an integer type", column=name)
        # A writable copy: Arrow's zero-copy views are read-only, which torch.from_numpy refuses to share.
        columns[name] = np.array(column.to_numpy(), copy=True)
    return columns


class RowGroups:
    """The row groups of a dataset's rows in order, across its part files (``rows.parquet`` or ``rows/``).

    ``offsets[g]`` is the first dataset row of group ``g`` and ``offsets[-1]`` the number of rows.
    Files are opened per read, so the object pickles into DataLoader workers as paths.
    """

    def __init__(self, folder: Path | str) -> None:
        self.groups: list[tuple[Path, int]] = []
        sizes = []
        for path in part_files(Path(folder), ROWS_FILE):
            metadata = pq.ParquetFile(path).metadata
            for group in range(metadata.num_row_groups):
                self.groups.append((path, group))
                sizes.append(metadata.row_group(group).num_rows)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def read(self, group: int, columns: Sequence[str]) -> dict[str, np.ndarray]:
        path, local = self.groups[group]
        table = pq.ParquetFile(path).read_row_group(local, columns=list(columns))
        return {name: table.column(name).to_numpy() for name in columns}


def read_rows(path: Path | str, rows: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """``columns`` of the ascending dataset rows ``rows``, reading only the row groups that hold them."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and np.any(rows[1:] <= rows[:-1]):
        raise ValueError("read_rows: rows must be strictly ascending")
    groups = RowGroups(path)
    offsets = groups.offsets
    if rows.size and (rows[0] < 0 or rows[-1] >= offsets[-1]):
        raise ValueError(f"read_rows: row indices must lie in [0, {offsets[-1]}), got {rows[0]} .. {rows[-1]}")
    group_of = np.searchsorted(offsets, rows, side="right") - 1
    parts: dict[str, list[np.ndarray]] = {name: [] for name in columns}
    for group in np.unique(group_of):
        values = groups.read(int(group), columns)
        local = rows[group_of == group] - offsets[group]
        for name in columns:
            parts[name].append(values[name][local])
    return {name: np.concatenate(values) if values else np.empty(0, np.int64) for name, values in parts.items()}
