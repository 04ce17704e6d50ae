"""Input files as DuckDB relations: CSV, Parquet and event-line text, read by DuckDB itself.

:func:`open_source` checks what must hold before a file is read (it exists, is not empty, has the
needed columns) and returns a :class:`Source`: a SQL relation with the needed columns ``v0 ..``
(in :meth:`ImportSpec.needed_columns` order), ``line`` and ``event``. ``line`` is the 1-based
row (Parquet) or line (event lines), or null for CSV, whose records are one per line from
:attr:`TextFile.first_line` on, so a record's line follows from its place (a window numbering the
lines would read the file on one thread); ``event`` is the 1-based event within its line (event
lines; else 0).

DuckDB skips empty lines and lets quoted values span lines, so the lines of a text file are counted
and compared with its records (:meth:`TextFile.verify`); a file whose counts differ, whose text is
not valid in its encoding or that has a line of the wrong field count is refused naming its first
such line (:func:`diagnose_text`, a Python scan run only then). Text in another encoding than
UTF-8, and the first ``limit`` lines of a text file, are copied into the import's work folder as
UTF-8 first, so DuckDB always reads a whole UTF-8 file.
"""

from __future__ import annotations

import codecs
import csv
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ctl.data.importer.engine import one_row
from ctl.data.importer.errors import InputError
from ctl.data.importer.schema_yaml import CsvConfig, EventLinesConfig
from ctl.data.importer.spec import ImportSpec

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_COPY_BYTES = 16 << 20
#: Delimiter used to read event lines as one text column; a line holding it is refused.
_LINE_DELIMITER = "\x1f"
_DELIMITER_GUESSES = (",", ";", "\t", "|")


def sql_text(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class TextFile:
    """A text input as DuckDB reads it (``read``: the file, or a UTF-8 copy of it in the work folder),
    and what it takes to name its first line that is not one record."""

    file: Path  # the input as given (for messages)
    read: Path
    delimiter: str
    names: tuple[str, ...]
    first_line: int  # line of the first record
    counted: Future  # the lines of ``read``, counted on a thread while DuckDB reads it

    def refusal(self, exc: Exception | None = None) -> InputError:
        return diagnose_text(self.file, self.read, "utf-8", self.delimiter, list(self.names), self.first_line, exc)

    def verify(self, lines_read: int) -> None:
        """Refuse the file unless its lines are its records one by one (``lines_read``: the last record's line)."""
        if self.counted.result() != lines_read:
            raise self.refusal()


@dataclass(frozen=True)
class Source:
    """One input as a relation (see the module docstring); ``types[j]`` is column ``v<j>``'s DuckDB type."""

    file: Path
    kind: str  # csv | parquet | event_lines
    relation: str
    types: tuple[str, ...]
    text: TextFile | None = None
    lines: int = 0  # event lines: the lines read

    def where(self, line: int, event: int) -> str:
        place = f"{'row' if self.kind == 'parquet' else 'line'} {line}"
        return place + (f", event {event}" if self.kind == "event_lines" else "")

    def read_error(self, exc: Exception) -> InputError:
        """The refusal of a file DuckDB could not read (text files: its first bad line, found by a Python scan)."""
        if self.text is None:
            return InputError(str(self.file), f"cannot be read ({str(exc).splitlines()[0]})")
        return self.text.refusal(exc)


def reader_kind(path: Path, spec: ImportSpec) -> str:
    if spec.format != "auto":
        return spec.format
    return "parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "csv"


def open_source(con: duckdb.DuckDBPyConnection, spec: ImportSpec, path: Path, index: int, limit: int | None,
                work: Path, block_bytes: int | None = None) -> Source:
    """The relation of input ``path`` (number ``index``), at most its first ``limit`` records;
    ``block_bytes``: DuckDB's buffer for text files (None: its own, read on every thread)."""
    if not path.is_file():
        raise InputError(str(path), "the input file does not exist")
    if path.stat().st_size == 0:
        raise InputError(str(path), "the file is empty")
    kind = reader_kind(path, spec)
    needed = spec.needed_columns()
    if kind == "parquet":
        return _parquet(con, path, needed, limit)
    if kind == "event_lines":
        if spec.event_lines is None:
            raise InputError(str(path), "format event_lines needs the event_lines: section in the schema")
        return _event_lines(con, path, spec.event_lines, needed, limit, work, index, block_bytes)
    return _csv(path, spec.csv, needed, limit, work, block_bytes)


def _refuse_missing(file: Path, needed: tuple[str, ...], names: list[str], delimiter: str | None) -> None:
    """Refuse a needed column the file lacks; ``delimiter`` is given for CSV (a header to blame)."""
    missing = [name for name in needed if name not in names]
    if not missing:
        return
    hint = ""
    if delimiter is not None and len(names) == 1:
        others = [d for d in _DELIMITER_GUESSES if d != delimiter and d in names[0]]
        if others:
            hint = f"; the header is one field holding {others[0]!r}: is the delimiter {others[0]!r} (csv.delimiter)?"
    raise InputError(str(file), f"is missing (the file has columns {names}){hint}",
                     where="header" if delimiter is not None else None, column=missing[0])


def _text_file(path: Path, encoding: str, lines: int | None, work: Path, delimiter: str, names: list[str],
               first_line: int) -> TextFile:
    """``path`` as DuckDB reads it: itself, or (another encoding, or only its first ``lines`` lines) a UTF-8 copy."""
    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        raise InputError(str(path), f"the encoding {encoding!r} is not a known text encoding") from None
    read = path
    if lines is not None or not utf8:
        read = work / f"{path.stem}-{uuid.uuid4().hex[:8]}.txt"
        decoder, left = codecs.getincrementaldecoder(encoding)(errors="strict"), lines
        with open(path, "rb") as source, open(read, "wb") as target:
            try:
                while (left is None or left > 0) and (data := source.read(_COPY_BYTES)):
                    if left is not None and data.count(b"\n") >= left:
                        cut = -1
                        for _ in range(left):
                            cut = data.index(b"\n", cut + 1)
                        data = data[: cut + 1]
                    if left is not None:
                        left -= data.count(b"\n")
                    target.write(decoder.decode(data).encode("utf-8"))
                target.write(decoder.decode(b"", final=True).encode("utf-8"))
            except UnicodeDecodeError:
                raise diagnose_text(path, path, encoding, delimiter, names, first_line, None) from None
    pool = ThreadPoolExecutor(1)  # the count runs on while DuckDB reads (without the GIL); the thread ends with it
    counted = pool.submit(_count_lines, read)
    pool.shutdown(wait=False)
    return TextFile(path, read, delimiter, tuple(names), first_line, counted)


def _count_lines(path: Path) -> int:
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        while data := handle.read(_COPY_BYTES):
            lines += data.count(b"\n")
            last = data[-1:]
    return lines + (last != b"\n")


def _read_csv(path: Path, names: list[str], header: bool, delimiter: str, quote: str, block_bytes: int | None) -> str:
    columns = ", ".join(f"'c{k}': 'VARCHAR'" for k in range(len(names)))
    # a set buffer size reads on one thread: DuckDB's parallel reader refuses quoted values with one (DuckDB 2.0)
    buffer = "" if block_bytes is None else (f", buffer_size={int(block_bytes) + 1}, max_line_size={int(block_bytes)}, "
                                             "parallel=false")
    return (f"read_csv({sql_text(str(path))}, header={str(header).lower()}, columns={{{columns}}}, "
            f"delim={sql_text(delimiter)}, quote={sql_text(quote)}, escape={sql_text(quote)}, auto_detect=false, "
            f"strict_mode=true{buffer})")


# --- CSV ---------------------------------------------------------------------------------------


def _header(path: Path, fmt: CsvConfig) -> list[str]:
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


def _csv(path: Path, fmt: CsvConfig, needed: tuple[str, ...], limit: int | None, work: Path,
         block_bytes: int | None) -> Source:
    if fmt.header:
        names = _header(path, fmt)
    else:
        assert fmt.column_names is not None  # parse_spec requires column_names when header is false
        names = list(fmt.column_names)
    if fmt.header and not names:
        raise InputError(str(path), "the header line is empty", where="line 1")
    _refuse_missing(path, needed, names, fmt.delimiter)
    first_line = 2 if fmt.header else 1
    text = _text_file(path, fmt.encoding, None if limit is None else limit + first_line - 1, work, fmt.delimiter,
                      names, first_line)
    columns = ", ".join(f"c{names.index(name)} AS v{j}" for j, name in enumerate(needed))
    relation = (f"SELECT {columns}, NULL::BIGINT AS line, 0 AS event "
                f"FROM {_read_csv(text.read, names, fmt.header, fmt.delimiter, chr(34), block_bytes)}")
    return Source(path, "csv", relation, ("VARCHAR",) * len(needed), text)


# --- Parquet -----------------------------------------------------------------------------------


def _parquet(con: duckdb.DuckDBPyConnection, path: Path, needed: tuple[str, ...], limit: int | None) -> Source:
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(str(path), f"is not a readable Parquet file ({exc})") from None
    names = handle.schema_arrow.names
    _refuse_missing(path, needed, names, None)
    if handle.metadata.num_rows == 0:
        raise InputError(str(path), "has no rows")
    columns = ", ".join(f'"{name.replace(chr(34), chr(34) * 2)}" AS v{j}' for j, name in enumerate(needed))
    kept = "" if limit is None else f" WHERE file_row_number < {int(limit)}"
    relation = (f"SELECT {columns}, file_row_number + 1 AS line, 0 AS event "
                f"FROM read_parquet({sql_text(str(path))}, file_row_number = true){kept}")
    types = tuple(row[1] for row in con.execute(f"DESCRIBE SELECT {columns} FROM read_parquet("
                                                f"{sql_text(str(path))})").fetchall())
    return Source(path, "parquet", relation, types)


# --- event lines -------------------------------------------------------------------------------


def _event_lines(con: duckdb.DuckDBPyConnection, path: Path, fmt: EventLinesConfig, needed: tuple[str, ...],
                 limit: int | None, work: Path, index: int, block_bytes: int | None) -> Source:
    """Each line's key fields and events become one record per event (key fields repeated)."""
    names = [*fmt.key_fields, *fmt.event_fields]
    _refuse_missing(path, needed, names, None)
    text = _text_file(path, fmt.encoding, limit, work, _LINE_DELIMITER, ["line"], 1)
    table = f"lines_{index}"
    keys, sep = len(fmt.key_fields), sql_text(fmt.separator)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT string_split(c0, {sep}) AS fields, c0 AS text "
                    f"FROM {_read_csv(text.read, ['line'], False, _LINE_DELIMITER, '', block_bytes)}")
    except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
        raise text.refusal(exc) from None
    lines = one_row(con, f"SELECT count(*) FROM {table}")[0]
    text.verify(lines)
    short = con.execute(f"SELECT rowid + 1, len(fields), text FROM {table} WHERE len(fields) < {keys} "
                        "ORDER BY rowid LIMIT 1").fetchone()
    if short:
        line, count, text = short
        raise InputError(str(path), f"has {count} field(s); a line starts with the key fields {list(fmt.key_fields)} "
                                    f"(separator {fmt.separator!r}): {text[:120]!r}", where=f"line {line}")
    events = (f"SELECT rowid + 1 AS line, generate_subscripts(fields[{keys + 1}:], 1) AS event, "
              f"string_split(unnest(fields[{keys + 1}:]), {sql_text(fmt.event_separator)}) AS parts, "
              f"fields FROM {table}")
    n_fields = len(fmt.event_fields)
    bad = con.execute(f"SELECT line, event, len(parts), array_to_string(parts, {sql_text(fmt.event_separator)}) "
                      f"FROM ({events}) WHERE len(parts) < {n_fields} ORDER BY line, event LIMIT 1").fetchone()
    if bad:
        line, event, count, text = bad
        raise InputError(str(path), f"{text!r} has {count} field(s); an event reads "
                                    f"{fmt.event_separator.join(fmt.event_fields)}", where=f"line {line}, event {event}")
    columns = ", ".join(f"nullif(fields[{fmt.key_fields.index(n) + 1}], '') AS v{j}" if n in fmt.key_fields
                        else f"nullif(parts[{fmt.event_fields.index(n) + 1}], '') AS v{j}"
                        for j, n in enumerate(needed))
    return Source(path, "event_lines", f"SELECT {columns}, line, event FROM ({events})", ("VARCHAR",) * len(needed),
                  text, lines)


# --- failures ----------------------------------------------------------------------------------


def diagnose_text(file: Path, path: Path, encoding: str, delimiter: str, names: list[str], first_line: int,
                  exc: Exception | None) -> InputError:
    """The first line of ``path`` (read for ``file``) that is not one record: undecodable, empty or ragged."""
    decoder = codecs.getincrementaldecoder(encoding)()
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = decoder.decode(raw)
            except UnicodeDecodeError as bad:
                fields = raw.decode(encoding, errors="replace").rstrip("\r\n").split(delimiter)
                broken = next((i for i, f in enumerate(fields) if "\ufffd" in f), None)
                column = names[broken] if broken is not None and broken < len(names) else None
                return InputError(str(file), f"is not valid {encoding} text ({bad.reason} at byte {bad.start} of "
                                             "the line); set the encoding in the schema (e.g. latin-1 or gb18030)",
                                  where=f"line {number}", column=column)
            text = text.rstrip("\r\n")
            if number < first_line:
                continue
            if not text:
                return InputError(str(file), "is empty; every line of the file must hold one record",
                                  where=f"line {number}")
            if delimiter == _LINE_DELIMITER:
                fields = text.split(delimiter)
            else:
                fields = next(csv.reader([text], delimiter=delimiter))
                if text.count('"') % 2:
                    return InputError(str(file), "has an unclosed quote: a quoted value may not span lines "
                                                 f"(one record per line): {text[:120]!r}", where=f"line {number}")
            if len(fields) != len(names):
                return InputError(str(file), f"has {len(fields)} fields where the header has {len(names)} "
                                             f"(delimiter {delimiter!r}): {text[:120]!r}", where=f"line {number}")
    reason = "its records do not match its lines" if exc is None else str(exc).splitlines()[0]
    return InputError(str(file), f"cannot be read ({reason})")
