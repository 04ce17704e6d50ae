"""Stream input files as blocks of raw records: CSV, Parquet, and event-line text.

Every reader yields :class:`RawBlock` objects of bounded size (``block_bytes`` of text, or
``PARQUET_BATCH_ROWS`` rows), each with the columns the import needs and where each record sits
in its file, so a file larger than memory is read in bounded memory and every later refusal can
name its line. Text files are read with one record per physical line (quoted fields may not span
lines), so a record's line number is exact: CSV lines count the header as line 1.

A record whose field count is wrong, text that is not in the declared encoding, an empty file or a
missing column is always refused here, with the file, the line and, where known, the column.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from ctl.data.importer.errors import InputError
from ctl.data.importer.spec import CsvFormat, EventLinesFormat, ReaderSpec

#: Bytes of text per block: large enough for fast parsing, small enough to bound memory.
DEFAULT_BLOCK_BYTES = 16 << 20
PARQUET_BATCH_ROWS = 262_144
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
#: Delimiter used to read event lines as one text column; a line holding it is refused.
_LINE_DELIMITER = "\x1f"
_DELIMITER_GUESSES = (",", ";", "\t", "|")


@dataclass
class RawBlock:
    """Raw records of one file: Arrow columns ``[n]`` and each record's place in the file.

    ``line`` is the 1-based physical line (text files) or row (Parquet, ``unit == "row"``);
    ``event`` the 1-based event index within its line (event lines only, else None); ``records``
    counts the file records (lines or rows) the block consumed.
    """

    file: str
    columns: dict[str, pa.Array]
    line: np.ndarray
    event: np.ndarray | None
    unit: str
    records: int

    def __len__(self) -> int:
        return int(self.line.shape[0])

    def where(self, i: int) -> str:
        place = f"{self.unit} {int(self.line[i])}"
        return place if self.event is None else f"{place}, event {int(self.event[i])}"

    def error(self, i: int, column: str | None, reason: str) -> InputError:
        return InputError(self.file, reason, where=self.where(i), column=column)

    def filter(self, keep: np.ndarray) -> RawBlock:
        mask = pa.array(keep, type=pa.bool_())
        return RawBlock(
            file=self.file,
            columns={name: pc.filter(values, mask) for name, values in self.columns.items()},
            line=self.line[keep],
            event=None if self.event is None else self.event[keep],
            unit=self.unit,
            records=self.records,
        )


def empty_as_null(values: pa.Array) -> pa.Array:
    """An empty text field is a missing value in every format, as it is in CSV."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return values
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)


def reader_kind(path: Path, spec: ReaderSpec) -> str:
    if spec.kind != "auto":
        return spec.kind
    return "parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "csv"


def read_blocks(
    path: Path, spec: ReaderSpec, needed: tuple[str, ...], limit: int | None, block_bytes: int
) -> Iterator[RawBlock]:
    """Blocks of the ``needed`` columns of ``path``, stopping after ``limit`` records (None = all).

    A record is a CSV line, a Parquet row, or a whole event line (which may hold many events, or
    none: a block of event lines can be empty).
    """
    if not path.is_file():
        raise InputError(str(path), "the input file does not exist")
    if path.stat().st_size == 0:
        raise InputError(str(path), "the file is empty")
    kind = reader_kind(path, spec)
    if kind == "parquet":
        yield from _parquet_blocks(path, needed, limit)
    elif kind == "event_lines":
        if spec.event_lines is None:
            raise InputError(str(path), "format event_lines needs the event_lines: section in the schema")
        yield from _event_line_blocks(path, spec.event_lines, needed, limit, block_bytes)
    else:
        yield from _csv_blocks(path, spec.csv, needed, limit, block_bytes)


def _refuse_missing(file: str, needed: tuple[str, ...], names: list[str], delimiter: str | None) -> None:
    """Refuse a needed column the file lacks; ``delimiter`` is given for CSV (a header to blame)."""
    missing = [name for name in needed if name not in names]
    if not missing:
        return
    hint = ""
    if delimiter is not None and len(names) == 1:
        others = [d for d in _DELIMITER_GUESSES if d != delimiter and d in names[0]]
        if others:
            hint = f"; the header is one field holding {others[0]!r}: is the delimiter {others[0]!r} (csv.delimiter)?"
    raise InputError(file, f"is missing (the file has columns {names}){hint}",
                     where="header" if delimiter is not None else None, column=missing[0])


# --- CSV ---------------------------------------------------------------------------------------


def _header(path: Path, fmt: CsvFormat) -> list[str]:
    with open(path, "rb") as handle:
        first = handle.readline()
    try:
        text = first.decode(fmt.encoding)
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"the header is not valid {fmt.encoding} text ({exc.reason}); set csv.encoding "
                                    "in the schema (e.g. latin-1 or gb18030)", where="line 1") from None
    except LookupError:
        raise InputError(str(path), f"csv.encoding {fmt.encoding!r} is not a known text encoding") from None
    text = text.lstrip("\ufeff").rstrip("\r\n")
    return next(csv.reader([text], delimiter=fmt.delimiter)) if text else []


def _csv_blocks(
    path: Path, fmt: CsvFormat, needed: tuple[str, ...], limit: int | None, block_bytes: int
) -> Iterator[RawBlock]:
    file = str(path)
    names = _header(path, fmt) if fmt.header else list(fmt.column_names)
    if fmt.header and not names:
        raise InputError(file, "the header line is empty", where="line 1")
    _refuse_missing(file, needed, names, fmt.delimiter)
    read = pv.ReadOptions(block_size=block_bytes, encoding=fmt.encoding,
                          column_names=None if fmt.header else names)
    parse = pv.ParseOptions(delimiter=fmt.delimiter, ignore_empty_lines=False, newlines_in_values=False)
    convert = pv.ConvertOptions(include_columns=list(needed), column_types={n: pa.string() for n in needed},
                                strings_can_be_null=True, quoted_strings_can_be_null=True, null_values=[""])
    first_line = 2 if fmt.header else 1
    seen = 0
    try:
        reader = pv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
        for batch in reader:
            n = batch.num_rows if limit is None else min(batch.num_rows, limit - seen)
            if n > 0:
                yield RawBlock(file, {name: batch.column(name).slice(0, n) for name in needed},
                               np.arange(first_line + seen, first_line + seen + n, dtype=np.int64), None, "line", n)
            seen += n
            if limit is not None and seen >= limit:
                break
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _diagnose_text(path, fmt.encoding, fmt.delimiter, names, first_line, exc) from None
    if seen == 0:
        raise InputError(file, "has a header but no data rows" if fmt.header else "has no data rows")


def _diagnose_text(
    path: Path, encoding: str, delimiter: str, names: list[str], first_line: int, exc: Exception
) -> InputError:
    """Find the first undecodable or malformed line (Python scan; only on the failure path)."""
    file = str(path)
    decoder = codecs.getincrementaldecoder(encoding)()
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = decoder.decode(raw)
            except UnicodeDecodeError as bad:
                fields = raw.decode(encoding, errors="replace").rstrip("\r\n").split(delimiter)
                broken = next((i for i, f in enumerate(fields) if "\ufffd" in f), None)
                column = names[broken] if broken is not None and broken < len(names) else None
                return InputError(file, f"is not valid {encoding} text ({bad.reason} at byte {bad.start} of the "
                                        "line); set the encoding in the schema (e.g. latin-1 or gb18030)",
                                  where=f"line {number}", column=column)
            text = text.rstrip("\r\n")
            if number < first_line or not text:
                continue
            fields = next(csv.reader([text], delimiter=delimiter))
            if len(fields) != len(names):
                return InputError(file, f"has {len(fields)} fields where the header has {len(names)} "
                                        f"(delimiter {delimiter!r}): {text[:120]!r}", where=f"line {number}")
    return InputError(file, f"cannot be read ({exc})")


# --- Parquet -----------------------------------------------------------------------------------


def _parquet_blocks(path: Path, needed: tuple[str, ...], limit: int | None) -> Iterator[RawBlock]:
    file = str(path)
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(file, f"is not a readable Parquet file ({exc})") from None
    _refuse_missing(file, needed, handle.schema_arrow.names, None)
    if handle.metadata.num_rows == 0:
        raise InputError(file, "has no rows")
    seen = 0
    for batch in handle.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(needed)):
        n = batch.num_rows if limit is None else min(batch.num_rows, limit - seen)
        if n > 0:
            yield RawBlock(file, {name: empty_as_null(batch.column(name).slice(0, n)) for name in needed},
                           np.arange(seen + 1, seen + n + 1, dtype=np.int64), None, "row", n)
        seen += n
        if limit is not None and seen >= limit:
            break


# --- event lines -------------------------------------------------------------------------------


def _event_line_blocks(
    path: Path, fmt: EventLinesFormat, needed: tuple[str, ...], limit: int | None, block_bytes: int
) -> Iterator[RawBlock]:
    file = str(path)
    names = [*fmt.key_fields, *fmt.event_fields]
    _refuse_missing(file, needed, names, None)
    read = pv.ReadOptions(block_size=block_bytes, encoding=fmt.encoding, column_names=["line"])
    parse = pv.ParseOptions(delimiter=_LINE_DELIMITER, quote_char=False, ignore_empty_lines=False)
    convert = pv.ConvertOptions(column_types={"line": pa.string()}, strings_can_be_null=False)
    seen = 0
    try:
        reader = pv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
        for batch in reader:
            n = batch.num_rows if limit is None else min(batch.num_rows, limit - seen)
            if n > 0:
                lines = batch.column("line").slice(0, n)
                yield _explode_events(file, lines, np.arange(seen + 1, seen + n + 1, dtype=np.int64), fmt, needed)
            seen += n
            if limit is not None and seen >= limit:
                break
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _diagnose_text(path, fmt.encoding, _LINE_DELIMITER, ["line"], 1, exc) from None


def _explode_events(
    file: str, lines: pa.Array, line_numbers: np.ndarray, fmt: EventLinesFormat, needed: tuple[str, ...]
) -> RawBlock:
    """One record per event: key fields repeated, event fields split out (vectorised over the block)."""
    n_keys = len(fmt.key_fields)
    fields = pc.split_pattern(lines, fmt.separator)
    counts = pc.list_value_length(fields).to_numpy(zero_copy_only=False).astype(np.int64)
    short = counts < n_keys
    if short.any():
        i = int(np.argmax(short))
        raise InputError(file, f"has {counts[i]} field(s); a line starts with the key fields {list(fmt.key_fields)} "
                               f"(separator {fmt.separator!r}): {lines[i].as_py()[:120]!r}",
                         where=f"line {int(line_numbers[i])}")
    events = pc.list_slice(fields, n_keys)
    per_line = counts - n_keys
    owner = np.repeat(np.arange(len(lines), dtype=np.int64), per_line)
    first = np.cumsum(per_line) - per_line
    event_number = np.arange(owner.shape[0], dtype=np.int64) - np.repeat(first, per_line) + 1
    parts = pc.split_pattern(pc.list_flatten(events), fmt.event_separator)
    n_parts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    bad = n_parts < len(fmt.event_fields)
    if bad.any():
        i = int(np.argmax(bad))
        text = pc.list_flatten(events)[i].as_py()
        raise InputError(file, f"{text!r} has {n_parts[i]} field(s); an event reads "
                               f"{fmt.event_separator.join(fmt.event_fields)}",
                         where=f"line {int(line_numbers[owner[i]])}, event {int(event_number[i])}")
    take = pa.array(owner)
    columns = {}
    for name in needed:
        if name in fmt.key_fields:
            values = pc.take(pc.list_element(fields, fmt.key_fields.index(name)), take)
        else:
            values = pc.list_element(parts, fmt.event_fields.index(name))
        columns[name] = empty_as_null(values)
    return RawBlock(file, columns, line_numbers[owner], event_number, "line", len(lines))
