"""Sources -> the ``records`` table: every record checked and encoded by one SQL pass per input.

Per record: ``seq`` (its place among the kept records in input order: it orders everything
downstream), ``input``, ``line``, ``event``, ``domain``, ``label``, ``ts`` (the record's ``seq``
when the schema has no time column), ``period_value`` (explicit periods), and ``f<i>`` per schema
feature: raw text for dense and hashed features (numbered later, :mod:`ctl.data.importer.idmaps`),
ids for bucket and constant features. A feature is null/0 on the rows of domains that lack it.
Explicit sequences add ``seq_count`` (items in the list) and ``seq_key`` (the list's text), and
``seq_items`` holds their items (``seq``, ``pos``, ``raw``).

``records`` is a view of the table ``checked``: ``seq`` is a record's rowid there, and its input
and line follow from it (:meth:`RecordTable.places`) unless records were left out or an input holds
event lines; only then are they stored. ``refusal`` is the first :class:`Check` a record fails, in
schema order (domain, label, time, period, features). With ``on_bad_rows: error`` the first refused
record is reported with its file, place, column and raw value; with ``skip`` refused records are
counted per check and left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from ctl.data.importer.engine import one_row
from ctl.data.importer.errors import InputError
from ctl.data.importer.sources import Source, sql_text
from ctl.data.importer.spec import DomainSpec, FeatureSpec, ImportSpec
from ctl.errors import CtlError, shorten

_FLOATS = ("FLOAT", "DOUBLE", "REAL")
_TEMPORAL = ("TIMESTAMP", "DATE")
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "UHUGEINT", "DECIMAL", "BOOLEAN")


def staged_name(index: int) -> str:
    """Column of the ``index``-th schema feature in ``records`` (feature names may be any text)."""
    return f"f{index}"


@dataclass(frozen=True)
class Check:
    """A refusal: ``condition`` (SQL, true where refused) on input ``column``; ``kind`` names it in the
    skip counts, ``detail(value)`` in the error (``value``: the raw value as the message shows it)."""

    column: str
    kind: str
    condition: str
    detail: Callable[[str], str]


class Values:
    """SQL of one source's raw values: text (null where empty), finite numbers, times in seconds."""

    def __init__(self, spec: ImportSpec, source: Source) -> None:
        self.index = {name: j for j, name in enumerate(spec.needed_columns())}
        self.types = source.types

    @classmethod
    def of(cls, names: tuple[str, ...], types: tuple[str, ...]) -> Values:
        """The values of a relation whose columns ``v0 ..`` hold the input columns ``names``."""
        values = cls.__new__(cls)
        values.index, values.types = {name: j for j, name in enumerate(names)}, types
        return values

    def _column(self, name: str) -> tuple[str, str]:
        j = self.index[name]
        return f"v{j}", self.types[j]

    def present(self, name: str) -> str:
        value, kind = self._column(name)
        if kind == "VARCHAR":
            return f"({value} IS NOT NULL AND {value} <> '')"
        return f"({value} IS NOT NULL AND NOT isnan({value}))" if kind in _FLOATS else f"({value} IS NOT NULL)"

    def text(self, name: str) -> str:
        value, kind = self._column(name)
        return f"nullif({value}, '')" if kind == "VARCHAR" else f"CAST({value} AS VARCHAR)"

    def number(self, name: str) -> str:
        """DOUBLE, null where missing or not a finite number."""
        value, kind = self._column(name)
        if kind.startswith(_NUMERIC):
            return f"CAST({value} AS DOUBLE)"
        number = f"TRY_CAST({value} AS DOUBLE)" if kind.startswith(_FLOATS + ("VARCHAR",)) else \
            f"TRY_CAST(CAST({value} AS VARCHAR) AS DOUBLE)"
        return f"(CASE WHEN isfinite({number}) THEN {number} END)"

    def flag(self, name: str) -> str:
        """DOUBLE of a 0/1 column: a number, or the text true / false (any case: CSV booleans) as 1 / 0."""
        value, kind = self._column(name)
        if kind != "VARCHAR":
            return self.number(name)
        return f"(CASE lower(trim({value})) WHEN 'true' THEN 1.0 WHEN 'false' THEN 0.0 ELSE {self.number(name)} END)"

    def seconds(self, name: str, fmt: str) -> str:
        """BIGINT seconds since the Unix epoch (UTC), null where missing or unreadable."""
        value, kind = self._column(name)
        if kind.startswith(_TEMPORAL):
            return f"CAST(floor(epoch({value})) AS BIGINT)"
        if fmt in ("unix", "unix_ms"):
            return f"TRY_CAST(floor({self.number(name)}{' / 1000' if fmt == 'unix_ms' else ''}) AS BIGINT)"
        return f"CAST(floor(epoch(try_strptime(trim({self.text(name)}), {sql_text(fmt)}))) AS BIGINT)"


def _raw(value: object) -> str:
    return "(empty)" if value is None or value == "" else shorten(value if isinstance(value, str) else str(value))


def _counted_boundaries(number: str, boundaries: tuple[float, ...]) -> str:
    """How many boundaries lie at or below ``number`` (numpy's ``searchsorted(..., side='right')``)."""
    return " + ".join(f"CAST({number} >= {float(b)!r} AS INTEGER)" for b in boundaries)


def _not_a_number(feature: FeatureSpec) -> Callable[[str], str]:
    """The detail of a bucket ``feature``'s refused value."""
    return lambda v: f"value {v} is not a number (feature {feature.name!r} is a bucket)"


def _empty(feature: FeatureSpec) -> Callable[[str], str]:
    """The detail of ``feature``'s refused empty value (``missing: error``)."""
    return lambda v: (f"is empty; feature {feature.name!r} needs a value on the rows of {list(feature.domains)} "
                      "(or set missing: absent)")


def domain_index(domains: DomainSpec, values: Values, column: str) -> str:
    """SQL of the domain index of input ``column`` (null where it names no domain)."""
    if domains.values is not None:
        cases = " ".join(f"WHEN {sql_text(raw)} THEN {i}" for i, raw in enumerate(domains.values))
        return f"(CASE {values.text(column)} {cases} END)"
    assert domains.boundaries is not None  # parse_spec: boundaries where no values are given
    number = values.number(column)
    return f"(CASE WHEN {number} IS NOT NULL THEN {_counted_boundaries(number, domains.boundaries)} END)"


class RecordTable:
    """Builds ``records`` input by input and reports or drops refused records.

    Example::

        table = RecordTable(con, spec, events=False)
        table.add(source, input_index=0)   # refuses at the first bad record unless on_bad_rows: skip
        table.finish()                     # skip: counts and removes refused records; seq_items
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, spec: ImportSpec, events: bool) -> None:
        """``events``: some input holds event lines, whose records' lines and events are stored; every
        other record's place follows from its rowid (spilled work tables stay narrow)."""
        self.con = con
        self.spec = spec
        self.rows = 0
        self.skipped: Counter[str] = Counter()
        self.events = events
        self._checks: list[Check] = []
        self._firsts: dict[int, tuple[int, int]] = {}  # input -> rowid of its first record, line of it
        self._sources: dict[int, Source] = {}

    def _domain(self, values: Values) -> str:
        return domain_index(self.spec.domains, values, self.spec.domains.column)

    def _carrier(self, domains: tuple[str, ...], domain: str) -> str:
        names = self.spec.domains.names
        if set(domains) == set(names):
            return "TRUE"
        return f"({domain} IN ({', '.join(str(names.index(d)) for d in domains)}))"

    def _select(self, values: Values, input_index: int) -> tuple[str, list[Check]]:
        """The SELECT list over a source computing every column of ``records``, and its checks."""
        spec, checks = self.spec, []
        domain = self._domain(values)
        column = spec.domains.column
        checks.append(Check(column, "empty", f"NOT {values.present(column)}",
                            lambda v: "is empty; every record needs a domain"))
        if spec.domains.values is not None:
            known = list(spec.domains.values)
            checks.append(Check(column, "unknown domain", f"{domain} IS NULL",
                                lambda v: f"value {v} is not one of the domain values {known} (domains.values)"))
        else:
            checks.append(Check(column, "not a number", f"{domain} IS NULL",
                                lambda v: f"value {v} is not a number (domains.boundaries cut it)"))
        selected = {"line": "line", "event": "event"} if self.events else {}
        selected["domain"] = domain
        label = spec.label.column
        if label is not None:
            number = values.flag(label)
            checks.append(Check(label, "not 0/1", f"coalesce({number} NOT IN (0, 1), TRUE)",
                                lambda v: f"value {v} is not a 0/1 label"))
            selected["label"] = f"TRY_CAST({number} AS TINYINT)"
        else:
            selected["label"] = "1"
        time = spec.time
        if time.column is not None:
            seconds = values.seconds(time.column, time.format)
            what = {"unix": "is not a Unix time in seconds", "unix_ms": "is not a Unix time in milliseconds"}
            checks.append(Check(time.column, "empty", f"NOT {values.present(time.column)}",
                                lambda v: "is empty; every record needs a time"))
            checks.append(Check(time.column, "bad time", f"{seconds} IS NULL", lambda v: f"value {v} " + what.get(
                time.format, f"does not match the time format {time.format!r}")))
            selected["ts"] = seconds
        else:
            selected["ts"] = "NULL"  # the record's seq (see finish)
        if time.period_column is not None:
            number = values.number(time.period_column)
            checks.append(Check(time.period_column, "not an integer period",
                                f"coalesce({number} <> round({number}), TRUE)",
                                lambda v: f"value {v} is not an integer period"))
            selected["period_value"] = f"TRY_CAST({number} AS BIGINT)"
        for i, feature in enumerate(spec.features):
            carrier = self._carrier(feature.domains, domain)
            if feature.constant:
                selected[staged_name(i)] = f"CASE WHEN {carrier} THEN 1 ELSE 0 END"
                continue
            input_column = feature.column
            assert input_column is not None  # parse_spec: a feature that is not constant names its column
            present = values.present(input_column)
            if feature.kind == "bucket":
                assert feature.boundaries is not None  # parse_spec refuses a bucket feature without boundaries
                number = values.number(input_column)
                checks.append(Check(input_column, "not a number", f"{carrier} AND {present} AND {number} IS NULL",
                                    _not_a_number(feature)))
                counted = _counted_boundaries(number, feature.boundaries)
                selected[staged_name(i)] = f"CASE WHEN {carrier} AND {number} IS NOT NULL THEN 1 + {counted} ELSE 0 END"
            else:
                selected[staged_name(i)] = (f"CASE WHEN {carrier} THEN {values.text(input_column)} END"
                                            if carrier != "TRUE" else values.text(input_column))
            if feature.missing == "error":
                checks.append(Check(input_column, "empty", f"{carrier} AND NOT {present}", _empty(feature)))
        if spec.sequences.column is not None:
            text = f"coalesce({values.text(spec.sequences.column)}, '')"
            separator = sql_text(spec.sequences.separator)
            selected["seq_count"] = f"len(list_filter(string_split({text}, {separator}), lambda x: x <> ''))"
            selected["seq_key"] = text
        cases = " ".join(f"WHEN {check.condition} THEN {k}" for k, check in enumerate(checks))
        selected["refusal"] = f"CASE {cases} END"
        types = {"line": "BIGINT", "event": "INTEGER", "domain": "TINYINT",
                 "label": "TINYINT", "ts": "BIGINT", "period_value": "BIGINT", "seq_count": "INTEGER",
                 "seq_key": "VARCHAR", "refusal": "SMALLINT"}
        for i, feature in enumerate(spec.features):
            types[staged_name(i)] = "VARCHAR" if feature.mapped else "INTEGER"
        return ", ".join(f"CAST({sql} AS {types[name]}) AS {name}" for name, sql in selected.items()), checks

    def add(self, source: Source, input_index: int) -> int:
        """Append the records of ``source`` (input ``input_index``); returns the file records it held
        (lines or rows; an event line holds many records, or none)."""
        values = Values(self.spec, source)
        select, checks = self._select(values, input_index)
        verb = "INSERT INTO checked" if self._checks else "CREATE TABLE checked AS"
        try:
            added = one_row(self.con, f"{verb} SELECT {select} FROM ({source.relation})")[0]
        except (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.NotImplementedException) as exc:
            raise source.read_error(exc) from None
        first_line = 1 if source.text is None else source.text.first_line
        if source.kind == "csv":
            assert source.text is not None  # a CSV source is read through its text file (sources._csv)
            if added == 0:
                raise InputError(str(source.file), "has a header but no data rows" if first_line > 1
                                 else "has no data rows")
            source.text.verify(added + first_line - 1)
        if added:
            self._firsts[input_index] = (self.rows, first_line)
        self.rows += added
        self._checks, self._sources[input_index] = checks, source
        _, line, event = self.places("rowid")
        refused = self.rows and self.con.execute(f"SELECT {line}, {event}, refusal FROM checked WHERE refusal IS NOT "
                                                 "NULL ORDER BY rowid LIMIT 1").fetchone()
        if refused and self.spec.on_bad_rows == "error":
            line, event, code = refused
            check = self._checks[code]
            j = values.index[check.column]
            place = f"row_number() OVER () + {first_line - 1}" if source.kind == "csv" else "line"
            raw = one_row(self.con, f"SELECT v{j} FROM (SELECT *, {place} AS place FROM ({source.relation})) "
                                    "WHERE place = ? AND event = ?", [line, event])[0]
            raise InputError(str(source.file), check.detail(_raw(raw)), where=source.where(line, event),
                             column=check.column)
        return source.lines if source.kind == "event_lines" else added

    def locate(self, seq: int) -> tuple[str, str]:
        """The file and the place (``line 4``, ``row 9``, ``line 3, event 2``) of the kept record ``seq``."""
        index, line, event = one_row(self.con, "SELECT input, line, event FROM records WHERE seq = ?", [seq])
        return str(self._sources[index].file), self._sources[index].where(line, event)

    def places(self, position: str) -> tuple[str, str, str]:
        """SQL of a record's input, line and event from its ``position`` (a rowid of ``checked``, or a
        ``seq`` while no record was left out): a stored line and event, or its place in its input."""
        starts = sorted((first, i, f"{position} - {first - line}") for i, (first, line) in self._firsts.items())

        def by_input(values: list[str]) -> str:  # the value of the input a position falls in
            cases = " ".join(f"WHEN {position} >= {first} THEN {value}" for (first, _, _), value
                             in zip(starts[:0:-1], values[:0:-1], strict=True))
            return f"(CASE {cases} ELSE {values[0]} END)" if cases else values[0]

        line = by_input([line for _, _, line in starts])
        return (by_input([str(i) for _, i, _ in starts]), f"coalesce(line, {line})" if self.events else line,
                "event" if self.events else "0")

    def derived_places(self) -> tuple[str, str, str] | None:
        """:meth:`places` from a column ``seq`` when no place is stored (no record left out, no event
        lines), else None."""
        return None if self.skipped or self.events else self.places("seq")

    def finish(self) -> None:
        """Count and leave out the refused records (``skip``), create the view ``records`` (``seq``: the
        kept records' place in input order) and stage ``seq_items``."""
        names = {k: f"{check.column}: {check.kind}" for k, check in enumerate(self._checks)}
        for code, n in self.con.execute("SELECT refusal, count(*) FROM checked WHERE refusal IS NOT NULL "
                                        "GROUP BY refusal").fetchall():
            self.skipped[names[code]] += n
        if self.rows == sum(self.skipped.values()):
            if self.skipped:
                raise CtlError(f"no records left after skipping bad ones ({dict(self.skipped)})")
            raise CtlError("the inputs hold no records")
        places, stored = self.places("rowid"), ["refusal", "line", "event"] if self.events else ["refusal"]
        if self.skipped:  # in insertion order, so the kept records' rowids number them; their places are stored
            self.con.execute(f"CREATE TABLE kept AS SELECT * EXCLUDE ({', '.join(stored)}), {places[0]} AS input, "
                             f"{places[1]} AS line, {places[2]} AS event FROM checked WHERE refusal IS NULL")
            self.con.execute("DROP TABLE checked")
            self.con.execute("ALTER TABLE kept RENAME TO checked")
            places, stored = ("input", "line", "event"), ["input", "line", "event"]
        ts = "" if self.spec.time.column else " REPLACE (rowid AS ts)"
        self.con.execute(f"CREATE VIEW records AS SELECT rowid AS seq, {places[0]} AS input, {places[1]} AS line, "
                         f"{places[2]} AS event, * EXCLUDE ({', '.join(stored)}){ts} FROM checked")
        if self.spec.sequences.column is not None:
            separator = sql_text(self.spec.sequences.separator)
            self.con.execute(f"""
                CREATE TABLE seq_items AS
                SELECT seq, unnest(items) AS raw, CAST(generate_subscripts(items, 1) - 1 AS INTEGER) AS pos
                FROM (SELECT seq, list_filter(string_split(seq_key, {separator}), lambda x: x <> '') AS items
                      FROM records WHERE seq_count > 0)""")
