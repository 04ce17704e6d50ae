"""Reading a request file and checking its columns: every refusal names the file, the column and
the 1-based file row (:class:`Where`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ctl.errors import CtlError, shorten

READABLE = (".parquet", ".csv")


def read_table(path: Path, text_columns: tuple[str, ...] = ()) -> pa.Table:
    """A Parquet or CSV file as a table; ``text_columns`` of a CSV are read as text (raw ids keep leading zeros)."""
    if not path.is_file():
        raise CtlError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            header = pacsv.open_csv(path).schema.names
            types = {name: pa.string() for name in text_columns if name in header}
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    except (pa.ArrowInvalid, OSError) as exc:
        raise CtlError(f"{path} cannot be read: {' '.join(str(exc).split())}") from None
    raise CtlError(f"{path}: expected a {' or '.join(READABLE)} file, got {suffix or 'no suffix'}")


def count_rows(path: Path) -> int | None:
    """The rows of a Parquet request file from its metadata; None for a CSV (or a file not readable so)."""
    if path.suffix.lower() != ".parquet" or not path.is_file():
        return None
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowInvalid, OSError):
        return None  # read_blocks refuses it in one line


def read_blocks(path: Path, text_columns: tuple[str, ...], rows: int) -> Iterator[pa.Table]:
    """A Parquet or CSV file in tables of ``rows`` rows (the last may be shorter), read as they are
    taken: memory holds a block, not the file. A CSV's ``text_columns`` are read as text, the types of
    its other columns are those of its first block."""
    if not path.is_file():
        raise CtlError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            batches: Iterable[pa.RecordBatch] = pq.ParquetFile(path).iter_batches(batch_size=rows)
        elif suffix == ".csv":
            header = pacsv.open_csv(path).schema.names
            types = {name: pa.string() for name in text_columns if name in header}
            batches = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
        else:
            raise CtlError(f"{path}: expected a {' or '.join(READABLE)} file, got {suffix or 'no suffix'}")
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= rows:
                joined = pa.Table.from_batches(pending)
                yield joined.slice(0, rows)
                rest = joined.slice(rows)
                pending, pending_rows = rest.to_batches(), rest.num_rows
        if pending_rows:
            yield pa.Table.from_batches(pending)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CtlError(f"{path} cannot be read: {' '.join(str(exc).split())}") from None


@dataclass(frozen=True)
class Where:
    """A table's file and the file row its first row is, for messages (1-based rows)."""

    path: Path
    first_row: int = 0
    #: for flattened events: the table row each value belongs to
    row_of: np.ndarray | None = None

    def __str__(self) -> str:
        return str(self.path)

    def row(self, index: int) -> int:
        """The 1-based file row of value ``index``."""
        return self.first_row + int(index if self.row_of is None else self.row_of[index]) + 1

    def events(self, lists: pa.Array) -> Where:
        """The same file, for the flattened values of ``lists`` (one list per table row)."""
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        return Where(self.path, self.first_row, parents)


def flat_values(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values.dictionary_decode() if pa.types.is_dictionary(values.type) else values


def refuse_nulls(file: Where, column: str, values: pa.Array) -> None:
    if values.null_count:
        row = int(np.argmax(pc.is_null(values).to_numpy(zero_copy_only=False)))
        raise CtlError(f"{file}: column {column!r}, row {file.row(row)}: empty; every value is needed "
                       "(a feature the user or item lacks is id 0)")


def parse_integers(values: pa.Array, file: Where, column: str, feature: str) -> pa.Array:
    """Text that must hold integer ids (a CSV's space-separated history): int64, or refuse the first other."""
    matches = pc.match_substring_regex(values, r"^[+-]?[0-9]+$").to_numpy(zero_copy_only=False)
    if not matches.all():
        row = int(np.argmin(matches))
        raise CtlError(f"{file}: column {column!r}, row {file.row(row)}: {shorten(values[row].as_py())} is not an integer; "
                       f"feature {feature!r} has no id map, so its values are ids")
    return pc.cast(values, pa.int64())


def domain_indices(values: pa.Array, names: tuple[str, ...], file: Where, column: str) -> np.ndarray:
    values = flat_values(values)
    refuse_nulls(file, column, values)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise CtlError(f"{file}: column {column!r} has type {values.type}; domains are given by name ({list(names)})")
    index = pc.index_in(values, value_set=pa.array(names, pa.string()))
    if index.null_count:
        row = int(np.argmax(pc.is_null(index).to_numpy(zero_copy_only=False)))
        raise CtlError(f"{file}: column {column!r}, row {file.row(row)}: {shorten(values[row].as_py())} is not one of the "
                       f"domains {list(names)}")
    return index.to_numpy(zero_copy_only=False).astype(np.int64)


def event_lists(table: pa.Table, column: str, file: Where) -> pa.ListArray:
    """A history column as a list array: Parquet lists as they are, CSV text split at whitespace."""
    values = flat_values(table.column(column))
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pa.array([[] if text is None else text.split() for text in values.to_pylist()], pa.list_(pa.string()))
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return values
    raise CtlError(f"{file}: column {column!r} has type {values.type}; a history in the request is a list of raw "
                   "ids (Parquet) or space-separated raw ids (CSV)")


def integer_column(table: pa.Table, column: str, file: Where) -> np.ndarray:
    values = flat_values(table.column(column))
    refuse_nulls(file, column, values)
    if not pa.types.is_integer(values.type):
        raise CtlError(f"{file}: column {column!r} has type {values.type}; it holds integers")
    return values.to_numpy().astype(np.int64)
