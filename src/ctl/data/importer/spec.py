"""The import schema YAML: what the input files hold and how they become a dataset.

A schema YAML names the reader (CSV, Parquet or event lines), the domain column and the source
domain, the label (a 0/1 column, or implicit feedback with sampled negatives), the time column
and how periods are cut, the behaviour sequences, and every feature (``docs/data.md`` lists every
key). :func:`load_spec` reads one from a file, :func:`parse_spec` from a mapping (a composed
Hydra node). Unknown keys are refused, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ctl.data.importer.errors import SpecError
from ctl.data.schema import FEATURE_KINDS, ID_FEATURES

READER_KINDS = ("auto", "csv", "parquet", "event_lines")
#: Calendar period names, and the fixed-length units a period like ``6d`` may use (in seconds).
CALENDAR_PERIODS = ("month", "quarter")
PERIOD_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
TIME_FORMATS = ("unix", "unix_ms")
#: Features that are attributes of the item by default (a sampled negative takes its item's values).
ITEM_ATTRIBUTES = ("item_id", "category_id", "seller_id")
_MISSING = object()


class _Node:
    """One mapping of the YAML, read key by key; :meth:`done` refuses the keys nobody asked for."""

    def __init__(self, data: object, key: str, origin: str) -> None:
        if not isinstance(data, Mapping):
            raise SpecError(origin, key or "(top level)", f"must be a mapping, got {type(data).__name__}")
        self.data = dict(data)
        self.key = key
        self.origin = origin
        self._used: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def fail(self, name: str, reason: str) -> SpecError:
        return SpecError(self.origin, self.path(name), reason)

    def get(self, name: str, default: object = _MISSING) -> object:
        self._used.add(name)
        if name in self.data and self.data[name] is not None:
            return self.data[name]
        if default is _MISSING:
            raise self.fail(name, "is required")
        return default

    def text(self, name: str, default: object = _MISSING) -> str | None:
        value = self.get(name, default)
        if value is None:
            return None
        if isinstance(value, (dict, list, tuple)):
            raise self.fail(name, f"must be a string, got {value!r}")
        return str(value)

    def integer(self, name: str, default: object = _MISSING, at_least: int | None = None) -> int | None:
        value = self.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, got {value!r}")
        if at_least is not None and value < at_least:
            raise self.fail(name, f"must be >= {at_least}, got {value}")
        return int(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {value!r}")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: object = _MISSING) -> str:
        value = self.text(name, default)
        if value not in options:
            raise self.fail(name, f"must be one of {list(options)}, got {value!r}")
        return value

    def texts(self, name: str, default: object = _MISSING) -> tuple[str, ...] | None:
        value = self.get(name, default)
        if value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise self.fail(name, f"must be a list, got {value!r}")
        return tuple(str(v) for v in value)

    def numbers(self, name: str, default: object = _MISSING) -> tuple[float, ...] | None:
        value = self.get(name, default)
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not value:
            raise self.fail(name, f"must be a non-empty list of numbers, got {value!r}")
        try:
            numbers = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise self.fail(name, f"must be a list of numbers, got {value!r}") from None
        if any(b <= a for a, b in itertools.pairwise(numbers)) or not all(np.isfinite(numbers)):
            raise self.fail(name, f"must be finite and strictly increasing, got {list(value)}")
        return numbers

    def child(self, name: str, required: bool) -> _Node | None:
        value = self.get(name, _MISSING if required else None)
        return None if value is None else _Node(value, self.path(name), self.origin)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._used)
        if unknown:
            raise self.fail(unknown[0], f"is not a known key here (known: {sorted(self._used)})")


@dataclass(frozen=True)
class CsvFormat:
    """How to read delimited text: one record per line, a header line unless ``column_names``."""

    delimiter: str
    encoding: str
    header: bool
    column_names: tuple[str, ...] | None


@dataclass(frozen=True)
class EventLinesFormat:
    """One line per key (e.g. a user): key fields, then events whose fields are joined by a separator.

    A line reads ``key_1 <sep> .. key_k <sep> event_1 <sep> event_2 ...`` and an event reads
    ``field_1 <event_sep> field_2 ...``; extra trailing event fields (e.g. a trailing separator)
    are ignored. Each event becomes one record with the key fields and the event fields as columns.
    """

    separator: str
    key_fields: tuple[str, ...]
    event_separator: str
    event_fields: tuple[str, ...]
    encoding: str


@dataclass(frozen=True)
class ReaderSpec:
    kind: str  # one of READER_KINDS; auto picks by file extension
    csv: CsvFormat
    event_lines: EventLinesFormat | None


@dataclass(frozen=True)
class DomainSpec:
    """The domain of each record: raw values named one by one, or a numeric column cut at boundaries."""

    column: str
    names: tuple[str, ...]  # schema order
    values: tuple[str, ...] | None  # raw value of each name (value mode)
    boundaries: tuple[float, ...] | None  # numeric mode: names[i] holds [boundaries[i-1], boundaries[i])
    source: str


@dataclass(frozen=True)
class LabelSpec:
    """A 0/1 label column, or implicit feedback (``column`` None): every record is a positive."""

    column: str | None
    negatives: int  # implicit: sampled negatives per positive
    seed: int


@dataclass(frozen=True)
class TimeSpec:
    """Event time and the period cut.

    Exactly one of ``period`` (calendar ``month``/``quarter`` or a fixed length like ``6d``),
    ``period_column`` (explicit integer periods) or ``periods`` (file order: equal chunks of the
    records, ``column`` None) is set. ``start``/``end`` are seconds since the Unix epoch (UTC).
    """

    column: str | None  # None: time is the record's position in the inputs
    format: str  # unix | unix_ms | a strptime pattern
    period: str | None
    period_column: str | None
    periods: int | None
    start: int | None  # records before it feed the behaviour history only
    end: int | None  # records at or after it are left out (counted)
    n_transfer: int

    @property
    def period_seconds(self) -> int | None:
        """Length of a fixed period in seconds; None for calendar, explicit or file-order periods."""
        if self.period is None or self.period in CALENDAR_PERIODS:
            return None
        count, unit = re.fullmatch(r"(\d+)\s*([a-z]+)", self.period).groups()
        return int(count) * PERIOD_UNITS[unit]


@dataclass(frozen=True)
class SequenceSpec:
    """Behaviour sequences: from the users' earlier events, or from an explicit per-record column."""

    short_len: int
    long_len: int
    events: str  # positives | all: which records become behaviour events
    column: str | None  # explicit: each record's earlier items, joined by ``separator``
    separator: str


@dataclass(frozen=True)
class FeatureSpec:
    """One schema feature and how its ids are made.

    Categorical ids are dense (``1..n`` in order of first appearance, ``vocab`` None = as many as
    the data has, an int = a fixed table size) or hashed (``hash_buckets``); ``bucket`` features cut
    a numeric column at ``boundaries`` (id 1 below the first, ``len+1`` at or above the last); a
    ``constant`` feature is id 1 on every row of its domains. A missing value is id 0 (``missing:
    absent``) or an error.
    """

    name: str
    column: str | None
    kind: str
    dim: int
    vocab: int | None
    hash_buckets: int | None
    boundaries: tuple[float, ...] | None
    domains: tuple[str, ...]
    of: str  # row | item: item attributes are looked up for sampled negatives
    missing: str  # absent | error
    constant: bool

    @property
    def dense(self) -> bool:
        """Ids come from a dense id map (saved next to the dataset)."""
        return self.kind == "categorical" and not self.constant and self.hash_buckets is None


@dataclass(frozen=True)
class ImportSpec:
    name: str
    description: str
    reader: ReaderSpec
    domains: DomainSpec
    label: LabelSpec
    time: TimeSpec
    sequences: SequenceSpec
    features: tuple[FeatureSpec, ...]
    on_bad_rows: str  # error | skip
    origin: str  # where the spec came from, for messages
    raw: dict  # the mapping it was parsed from (provenance and cache keys)

    @property
    def implicit(self) -> bool:
        return self.label.column is None

    def feature(self, name: str) -> FeatureSpec:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def needed_columns(self) -> tuple[str, ...]:
        """Every input column the import reads, in first-use order."""
        names = [self.domains.column, self.label.column, self.time.column, self.time.period_column,
                 self.sequences.column, *(f.column for f in self.features)]
        return tuple(dict.fromkeys(n for n in names if n is not None))


# --- parsing ---------------------------------------------------------------------------------------


def _seconds(node: _Node, name: str) -> int | None:
    """A point in time: Unix seconds, or an ISO date / date-time (UTC)."""
    value = node.get(name, None)
    if value is None:
        return None
    if isinstance(value, bool):
        raise node.fail(name, f"must be a date or Unix seconds, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        value = value.replace(tzinfo=None).isoformat()
    elif isinstance(value, dt.date):
        value = value.isoformat()
    try:
        return int(np.datetime64(str(value).strip().replace(" ", "T"), "s").astype(np.int64))
    except ValueError:
        raise node.fail(name, f"{value!r} is not a date (YYYY-MM-DD[ HH:MM:SS]) or Unix seconds") from None


def _reader(top: _Node) -> ReaderSpec:
    kind = top.choice("format", READER_KINDS, "auto")
    csv_node = top.child("csv", required=False) or _Node({}, "csv", top.origin)
    delimiter = csv_node.text("delimiter", ",")
    if len(delimiter) != 1:
        raise csv_node.fail("delimiter", f"must be one character, got {delimiter!r}")
    header = csv_node.flag("header", True)
    column_names = csv_node.texts("column_names", None)
    if not header and column_names is None:
        raise csv_node.fail("column_names", "is required when header is false")
    csv = CsvFormat(delimiter, csv_node.text("encoding", "utf-8"), header, column_names)
    csv_node.done()
    lines_node = top.child("event_lines", required=kind == "event_lines")
    lines = None
    if lines_node is not None:
        lines = EventLinesFormat(
            separator=lines_node.text("separator", "\t"),
            key_fields=lines_node.texts("key_fields"),
            event_separator=lines_node.text("event_separator"),
            event_fields=lines_node.texts("event_fields"),
            encoding=lines_node.text("encoding", "utf-8"),
        )
        for name in ("separator", "event_separator"):
            if len(getattr(lines, name)) != 1:
                raise lines_node.fail(name, f"must be one character, got {getattr(lines, name)!r}")
        if lines.separator == lines.event_separator:
            raise lines_node.fail("event_separator", "must differ from separator")
        if not lines.event_fields:
            raise lines_node.fail("event_fields", "must name at least one field")
        lines_node.done()
    return ReaderSpec(kind, csv, lines)


def _domains(top: _Node) -> DomainSpec:
    node = top.child("domains", required=True)
    column = node.text("column")
    values = node.get("values", None)
    boundaries = node.numbers("boundaries", None)
    if (values is None) == (boundaries is None):
        raise node.fail("values", "give either values (raw value -> domain name) or boundaries + names")
    if values is not None:
        if isinstance(values, Mapping):
            raws, names = tuple(str(k) for k in values), tuple(str(v) for v in values.values())
        elif isinstance(values, (list, tuple)):
            raws = names = tuple(str(v) for v in values)
        else:
            raise node.fail("values", f"must be a mapping (raw value -> name) or a list, got {values!r}")
        if node.get("names", None) is not None:
            raise node.fail("names", "goes with boundaries; with values, name the domains in the mapping")
    else:
        raws = None
        names = node.texts("names")
        if len(names) != len(boundaries) + 1:
            raise node.fail("names", f"needs {len(boundaries) + 1} names for {len(boundaries)} boundaries, "
                                     f"got {list(names)}")
    if len(names) < 2:
        raise node.fail("values", f"need a source and at least one target domain, got {list(names)}")
    if len(set(names)) != len(names):
        raise node.fail("values", f"domain names repeat: {list(names)}")
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
    if bad:
        raise node.fail("values", f"domain names must be identifiers (letters, digits, _), got {bad}")
    source = node.text("source")
    if source not in names:
        raise node.fail("source", f"{source!r} is not one of the domains {list(names)}")
    node.done()
    return DomainSpec(column, names, raws, boundaries, source)


def _label(top: _Node) -> LabelSpec:
    node = top.child("label", required=True)
    column = node.text("column", None)
    negatives = node.integer("negatives", None, at_least=1)
    seed = node.integer("seed", 0, at_least=0)
    if column is None and negatives is None:
        raise node.fail("column", "give the 0/1 label column, or negatives: N for implicit feedback")
    if column is not None and negatives is not None:
        raise node.fail("negatives", "is for implicit feedback; a label column already gives the negatives")
    node.done()
    return LabelSpec(column, negatives or 0, seed)


def _time(top: _Node) -> TimeSpec:
    node = top.child("time", required=True)
    column = node.text("column", None)
    fmt = node.text("format", "unix")
    if fmt not in TIME_FORMATS and "%" not in fmt:
        raise node.fail("format", f"must be one of {list(TIME_FORMATS)} or a strptime pattern like "
                                  f"'%Y-%m-%d %H:%M:%S', got {fmt!r}")
    period = node.text("period", None)
    period_column = node.text("period_column", None)
    periods = node.integer("periods", None, at_least=3)
    start, end = _seconds(node, "start"), _seconds(node, "end")
    n_transfer = node.integer("n_transfer", at_least=1)
    given = [name for name, v in (("period", period), ("period_column", period_column), ("periods", periods))
             if v is not None]
    if len(given) != 1:
        raise node.fail("period", f"give exactly one of period, period_column or periods (got {given or 'none'})")
    if period is not None:
        if column is None:
            raise node.fail("period", "cuts by time and needs time.column; without one use periods: N")
        match = re.fullmatch(r"(\d+)\s*([a-z]+)", period)
        if period not in CALENDAR_PERIODS and not (match and match[2] in PERIOD_UNITS and int(match[1]) > 0):
            raise node.fail("period", f"must be month, quarter or a length like 6d, 12h, 30min, 1w, 10s; "
                                      f"got {period!r}")
    if periods is not None and column is not None:
        raise node.fail("periods", "cuts the records in file order and goes with time.column: null")
    if column is None and (start is not None or end is not None):
        raise node.fail("start", "start/end need time.column (a real event time)")
    if start is not None and end is not None and end <= start:
        raise node.fail("end", "must lie after start")
    node.done()
    return TimeSpec(column, fmt, period, period_column, periods, start, end, n_transfer)


def _sequences(top: _Node) -> SequenceSpec:
    node = top.child("sequences", required=False) or _Node({}, "sequences", top.origin)
    spec = SequenceSpec(
        short_len=node.integer("short_len", 10, at_least=1),
        long_len=node.integer("long_len", 64, at_least=1),
        events=node.choice("events", ("positives", "all"), "positives"),
        column=node.text("column", None),
        separator=node.text("separator", "^"),
    )
    if not spec.separator:
        raise node.fail("separator", "must not be empty")
    node.done()
    return spec


def _feature(node: _Node, domains: tuple[str, ...]) -> FeatureSpec:
    name = node.text("name")
    constant = node.flag("constant", False)
    column = node.text("column", None)
    kind = node.choice("kind", FEATURE_KINDS, "categorical")
    vocab = node.get("vocab", "auto")
    hash_buckets = node.integer("hash_buckets", None, at_least=2)
    boundaries = node.numbers("boundaries", None)
    on = node.texts("domains", None) or domains
    unknown = sorted(set(on) - set(domains))
    if unknown:
        raise node.fail("domains", f"names unknown domains {unknown} (the domains are {list(domains)})")
    spec = FeatureSpec(
        name=name,
        column=column,
        kind=kind,
        dim=node.integer("dim", at_least=1),
        vocab=None if vocab == "auto" else _vocab(node, vocab),
        hash_buckets=hash_buckets,
        boundaries=boundaries,
        domains=tuple(d for d in domains if d in on),
        of=node.choice("of", ("row", "item"), "item" if name in ITEM_ATTRIBUTES else "row"),
        missing=node.choice("missing", ("absent", "error"), "error" if name in ("user_id", "item_id") else "absent"),
        constant=constant,
    )
    if constant == (column is not None):
        raise node.fail("column", "give the input column, or constant: true for a feature without one")
    if constant and (spec.vocab is not None or hash_buckets is not None or boundaries is not None):
        raise node.fail("constant", "a constant feature takes no vocab, hash_buckets or boundaries")
    if kind == "bucket" and boundaries is None:
        raise node.fail("boundaries", "a bucket feature needs boundaries: [b1, b2, ...]")
    if kind == "bucket" and (spec.vocab is not None or hash_buckets is not None):
        raise node.fail("kind", "a bucket feature's ids come from its boundaries; drop vocab/hash_buckets")
    if kind == "categorical" and boundaries is not None:
        raise node.fail("boundaries", "only bucket features take boundaries (set kind: bucket)")
    if spec.vocab is not None and hash_buckets is not None:
        raise node.fail("hash_buckets", "give vocab or hash_buckets, not both")
    if name in ("user_id", "item_id"):
        if constant or kind != "categorical":
            raise node.fail("kind", f"{name} must be a categorical column")
        if spec.missing != "error":
            raise node.fail("missing", f"must be error for {name}: every row needs one")
        if spec.domains != domains:
            raise node.fail("domains", f"{name} exists on every domain")
    node.done()
    return spec


def _vocab(node: _Node, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise node.fail("vocab", f"must be auto or an integer >= 2 (id 0 is 'absent'), got {value!r}")
    return int(value)


def _features(top: _Node, domains: tuple[str, ...]) -> tuple[FeatureSpec, ...]:
    items = top.get("features")
    if not isinstance(items, (list, tuple)) or not items:
        raise top.fail("features", "must be a non-empty list of features")
    features = tuple(_feature(_Node(item, f"features[{i}]", top.origin), domains) for i, item in enumerate(items))
    names = [f.name for f in features]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise top.fail("features", f"feature names repeat: {repeated}")
    missing = [n for n in ID_FEATURES if n not in names]
    if missing:
        raise top.fail("features", f"the id features {missing} are missing (every dataset has {list(ID_FEATURES)}; "
                                   "use constant: true where the data has no such column)")
    return features


def parse_spec(data: Mapping, origin: str) -> ImportSpec:
    """Parse an import schema from a plain mapping; ``origin`` names it in error messages."""
    top = _Node(data, "", origin)
    reader = _reader(top)
    domains = _domains(top)
    spec = ImportSpec(
        name=top.text("name", Path(origin).stem),
        description=top.text("description", ""),
        reader=reader,
        domains=domains,
        label=_label(top),
        time=_time(top),
        sequences=_sequences(top),
        features=_features(top, domains.names),
        on_bad_rows=top.choice("on_bad_rows", ("error", "skip"), "error"),
        origin=origin,
        raw=_plain(data),
    )
    top.done()
    return spec


def _plain(value: object) -> object:
    """A YAML/JSON-safe copy (dates as ISO text) for provenance and cache keys."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def load_spec(path: Path | str) -> ImportSpec:
    """Read and parse a schema YAML file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SpecError(str(path), "", "the schema file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), "", f"not valid YAML ({exc})") from exc
    return parse_spec(data, str(path))
