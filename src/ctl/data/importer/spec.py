"""The import schema YAML: what the input files hold and how they become a dataset.

A schema YAML names the reader (CSV, Parquet or event lines), the domain column and the source
domain, the label (a 0/1 column, or implicit feedback with sampled negatives), the time column
and how periods are cut, the behaviour sequences, and every feature (``docs/data.md`` lists every
key). :func:`load_spec` reads one from a file, :func:`parse_spec` from a mapping (a composed
Hydra node). Keys, types and choices are checked by OmegaConf against the structured configs of
:mod:`ctl.data.importer.schema_yaml` (unknown keys are refused, so a typo never silently falls
back to a default); what spans several keys is checked here.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import cast

import numpy as np
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from ctl.data.importer.errors import SpecError
from ctl.data.importer.sampling import EXCLUDE_RULES
from ctl.data.importer.schema_yaml import (
    BehaviourLogsConfig,
    CsvConfig,
    DomainsConfig,
    EventLinesConfig,
    FeatureConfig,
    LabelConfig,
    ReaderKind,
    SchemaConfig,
    SequencesConfig,
    TimeConfig,
)
from ctl.data.schema import ID_FEATURES, NAME_PATTERN, FeatureKind
from ctl.errors import shorten

#: Calendar period names, and the fixed-length units a period like ``6d`` may use (in seconds).
CALENDAR_PERIODS = ("month", "quarter")
PERIOD_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
TIME_FORMATS = ("unix", "unix_ms")
#: Features that are attributes of the item by default (a sampled negative takes its item's values).
ITEM_ATTRIBUTES = ("item_id", "category_id", "seller_id")
#: what a dataset's ``name`` may be (it names cache folders)
DATASET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class DomainSpec:
    """The domain of each record: raw values named one by one, or a numeric column cut at boundaries."""

    column: str
    names: tuple[str, ...]  # schema order
    values: tuple[str, ...] | None  # raw value of each name (value mode)
    boundaries: tuple[float, ...] | None  # numeric mode: names[i] holds [boundaries[i-1], boundaries[i])
    source: str


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
    kind: FeatureKind
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

    @property
    def mapped(self) -> bool:
        """Ids come from the raw text by a map: dense (numbered) or hashed."""
        return self.kind == "categorical" and not self.constant


@dataclass(frozen=True)
class ImportSpec:
    name: str
    description: str
    format: str  # auto (by file extension), csv, parquet or event_lines
    csv: CsvConfig
    event_lines: EventLinesConfig | None
    domains: DomainSpec
    label: LabelConfig
    time: TimeConfig  # start/end: seconds since the Unix epoch (UTC)
    sequences: SequencesConfig
    features: tuple[FeatureSpec, ...]
    on_bad_rows: str  # error | skip
    origin: str  # where the spec came from, for messages
    raw: dict  # the mapping it was parsed from (provenance and cache keys)
    behaviour_logs: BehaviourLogsConfig | None = None  # event logs that join the history, never rows

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


# --- parsing -------------------------------------------------------------------------------------


def _plain(value: object) -> object:
    """A YAML/JSON-safe copy (dates as ISO text) for OmegaConf, provenance and cache keys."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def _literal(value: object) -> object:
    """``value`` with every ``${`` escaped for OmegaConf, so that text reads as written: a schema
    (or a dataset's ``provenance.schema``) from elsewhere never resolves ``${oc.env:...}``."""
    if isinstance(value, str):
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    if isinstance(value, Mapping):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    return value


def _typed(data: object, origin: str, config: type, key: str = ""):
    """``data`` checked against the structured config ``config`` (keys, types, choices, required keys);
    ``key`` is where ``data`` sits in the schema, for messages."""

    def where(full_key: object) -> str:
        return ".".join(part for part in (key, str(full_key or "")) if part) or "(top level)"

    if not isinstance(data, Mapping):
        raise SpecError(origin, where(""), f"must be a mapping, got {type(data).__name__}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config), _literal(data)))
    except ConfigKeyError as exc:
        known = sorted(f.name for f in fields(exc.object_type)) if is_dataclass(exc.object_type) else []
        raise SpecError(origin, where(exc.full_key), f"is not a known key here (known: {known})") from None
    except MissingMandatoryValue as exc:
        raise SpecError(origin, where(exc.full_key), "is required") from None
    except OmegaConfBaseException as exc:
        raise SpecError(origin, where(exc.full_key), str(exc).splitlines()[0]) from None


def _seconds(value: object, fail) -> int | None:
    """A point in time: Unix seconds, or an ISO date / date-time (UTC)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(np.datetime64(str(value).strip().replace(" ", "T"), "s").astype(np.int64))
    except ValueError:
        raise fail(f"{value!r} is not a date (YYYY-MM-DD[ HH:MM:SS]) or Unix seconds") from None


def _one_char(value: str, fail) -> str:
    if len(value) != 1:
        raise fail(f"must be one character, got {value!r}")
    return value


def _increasing(values: list[float] | None, fail) -> tuple[float, ...] | None:
    if values is None:
        return None
    numbers = tuple(values)
    if not numbers or any(b <= a for a, b in itertools.pairwise(numbers)) or not all(np.isfinite(numbers)):
        raise fail(f"must be finite and strictly increasing, got {list(values)}")
    return numbers


def _check_reader(cfg: SchemaConfig, fail) -> None:
    csv = cfg.csv
    _one_char(csv.delimiter, fail("csv.delimiter"))
    if not csv.header and csv.column_names is None:
        raise fail("csv.column_names")("is required when header is false")
    lines = cfg.event_lines
    if lines is None and cfg.format is ReaderKind.event_lines:
        raise fail("event_lines")("is required")
    if lines is not None:
        for name in ("separator", "event_separator"):
            _one_char(getattr(lines, name), fail(f"event_lines.{name}"))
        if lines.separator == lines.event_separator:
            raise fail("event_lines.event_separator")("must differ from separator")
        if not lines.event_fields:
            raise fail("event_lines.event_fields")("must name at least one field")


def _domains(cfg: DomainsConfig, fail) -> DomainSpec:
    boundaries = _increasing(cfg.boundaries, fail("domains.boundaries"))
    if (cfg.values is None) == (boundaries is None):
        raise fail("domains.values")("give either values (raw value -> domain name) or boundaries + names")
    if cfg.values is not None:
        if isinstance(cfg.values, Mapping):
            raws, names = tuple(str(k) for k in cfg.values), tuple(str(v) for v in cfg.values.values())
        elif isinstance(cfg.values, (list, tuple)):
            raws = names = tuple(str(v) for v in cfg.values)
        else:
            raise fail("domains.values")(f"must be a mapping (raw value -> name) or a list, got {cfg.values!r}")
        if cfg.names is not None:
            raise fail("domains.names")("goes with boundaries; with values, name the domains in the mapping")
    else:
        assert boundaries is not None  # given, since values is not (refused above otherwise)
        raws, names = None, tuple(cfg.names or ())
        if len(names) != len(boundaries) + 1:
            raise fail("domains.names")(f"needs {len(boundaries) + 1} names for {len(boundaries)} boundaries, "
                                        f"got {list(names)}")
    if len(names) < 2:
        raise fail("domains.values")(f"need a source and at least one target domain, got {list(names)}")
    if len(set(names)) != len(names):
        raise fail("domains.values")(f"domain names repeat: {list(names)}")
    bad = [n for n in names if not NAME_PATTERN.fullmatch(n)]
    if bad:
        raise fail("domains.values")(f"domain names must be identifiers (letters, digits, _), got {shorten(bad)}")
    if cfg.source not in names:
        raise fail("domains.source")(f"{cfg.source!r} is not one of the domains {list(names)}")
    return DomainSpec(cfg.column, names, raws, boundaries, cfg.source)


def _check_label(cfg: LabelConfig, fail) -> None:
    if cfg.negatives is not None and cfg.negatives < 1:
        raise fail("label.negatives")(f"must be >= 1, got {cfg.negatives}")
    if cfg.seed < 0:
        raise fail("label.seed")(f"must be >= 0, got {cfg.seed}")
    if cfg.column is None and cfg.negatives is None:
        raise fail("label.column")("give the 0/1 label column, or negatives: N for implicit feedback")
    if cfg.column is not None and cfg.negatives is not None:
        raise fail("label.negatives")("is for implicit feedback; a label column already gives the negatives")
    if cfg.exclude not in EXCLUDE_RULES:
        raise fail("label.exclude")(f"must be one of {list(EXCLUDE_RULES)}, got {cfg.exclude!r}")


def _check_time(cfg: TimeConfig, fail) -> None:
    """Also turns ``start``/``end`` into seconds since the Unix epoch."""
    if cfg.format not in TIME_FORMATS and "%" not in cfg.format:
        raise fail("time.format")(f"must be one of {list(TIME_FORMATS)} or a strptime pattern like "
                                  f"'%Y-%m-%d %H:%M:%S', got {cfg.format!r}")
    if cfg.periods is not None and cfg.periods < 3:
        raise fail("time.periods")(f"must be >= 3, got {cfg.periods}")
    if cfg.n_transfer < 1:
        raise fail("time.n_transfer")(f"must be >= 1, got {cfg.n_transfer}")
    start, end = _seconds(cfg.start, fail("time.start")), _seconds(cfg.end, fail("time.end"))
    given = [name for name in ("period", "period_column", "periods") if getattr(cfg, name) is not None]
    if len(given) != 1:
        raise fail("time.period")(f"give exactly one of period, period_column or periods (got {given or 'none'})")
    if cfg.period is not None:
        if cfg.column is None:
            raise fail("time.period")("cuts by time and needs time.column; without one use periods: N")
        match = re.fullmatch(r"(\d+)\s*([a-z]+)", cfg.period)
        if cfg.period not in CALENDAR_PERIODS and not (match and match[2] in PERIOD_UNITS and int(match[1]) > 0):
            raise fail("time.period")(f"must be month, quarter or a length like 6d, 12h, 30min, 1w, 10s; "
                                      f"got {cfg.period!r}")
    if cfg.periods is not None and cfg.column is not None:
        raise fail("time.periods")("cuts the records in file order and goes with time.column: null")
    if cfg.column is None and (start is not None or end is not None):
        raise fail("time.start")("start/end need time.column (a real event time)")
    if start is not None and end is not None and end <= start:
        raise fail("time.end")("must lie after start")
    cfg.start, cfg.end = start, end


def _check_sequences(cfg: SequencesConfig, fail) -> None:
    for name in ("short_len", "long_len", "sim_len"):
        if getattr(cfg, name) < 1:
            raise fail(f"sequences.{name}")(f"must be >= 1, got {getattr(cfg, name)}")
    if not cfg.separator:
        raise fail("sequences.separator")("must not be empty")


def _check_behaviour_logs(cfg: SchemaConfig, fail) -> None:
    logs = cfg.behaviour_logs
    if logs is None:
        return
    if not logs.inputs:
        raise fail("behaviour_logs.inputs")("list the behaviour-log files")
    if cfg.time.column is None:
        raise fail("behaviour_logs")("needs time.column: its events join the history by their time")
    if cfg.sequences.column is not None:
        raise fail("behaviour_logs")("goes with event histories; sequences.column already lists each record's "
                                     "history")
    columns = [logs.user, logs.item, logs.time, logs.domain]
    if len(set(columns)) != len(columns):
        raise fail("behaviour_logs")(f"user, item, time and domain must be four different columns, got {columns}")


def _feature(cfg: FeatureConfig, domains: tuple[str, ...], fail) -> FeatureSpec:
    if not NAME_PATTERN.fullmatch(cfg.name):
        raise fail("name")(f"must be letters, digits and _ (not starting with a digit): it names the feature's "
                           f"files and columns; got {shorten(cfg.name)}")
    ids = cfg.name in ("user_id", "item_id")
    if cfg.dim < 1:
        raise fail("dim")(f"must be >= 1, got {cfg.dim}")
    if cfg.hash_buckets is not None and cfg.hash_buckets < 2:
        raise fail("hash_buckets")(f"must be >= 2, got {cfg.hash_buckets}")
    vocab = cfg.vocab
    if vocab != "auto" and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2):
        raise fail("vocab")(f"must be auto or an integer >= 2 (id 0 is 'absent'), got {vocab!r}")
    unknown = sorted(set(cfg.domains or ()) - set(domains))
    if unknown:
        raise fail("domains")(f"names unknown domains {unknown} (the domains are {list(domains)})")
    on = cfg.domains or domains
    spec = FeatureSpec(
        name=cfg.name,
        column=cfg.column,
        kind=cfg.kind.value,
        dim=cfg.dim,
        vocab=None if vocab == "auto" else int(vocab),
        hash_buckets=cfg.hash_buckets,
        boundaries=_increasing(cfg.boundaries, fail("boundaries")),
        domains=tuple(d for d in domains if d in on),
        of=cfg.of.value if cfg.of is not None else "item" if cfg.name in ITEM_ATTRIBUTES else "row",
        missing=cfg.missing.value if cfg.missing is not None else "error" if ids else "absent",
        constant=cfg.constant,
    )
    if spec.constant == (spec.column is not None):
        raise fail("column")("give the input column, or constant: true for a feature without one")
    if spec.constant and (spec.vocab is not None or spec.hash_buckets is not None or spec.boundaries is not None):
        raise fail("constant")("a constant feature takes no vocab, hash_buckets or boundaries")
    if spec.kind == "bucket" and spec.boundaries is None:
        raise fail("boundaries")("a bucket feature needs boundaries: [b1, b2, ...]")
    if spec.kind == "bucket" and (spec.vocab is not None or spec.hash_buckets is not None):
        raise fail("kind")("a bucket feature's ids come from its boundaries; drop vocab/hash_buckets")
    if spec.kind == "categorical" and spec.boundaries is not None:
        raise fail("boundaries")("only bucket features take boundaries (set kind: bucket)")
    if spec.vocab is not None and spec.hash_buckets is not None:
        raise fail("hash_buckets")("give vocab or hash_buckets, not both")
    if ids:
        if spec.constant or spec.kind != "categorical":
            raise fail("kind")(f"{spec.name} must be a categorical column")
        if spec.missing != "error":
            raise fail("missing")(f"must be error for {spec.name}: every row needs one")
        if spec.domains != domains:
            raise fail("domains")(f"{spec.name} exists on every domain")
    return spec


def parse_spec(data: Mapping, origin: str) -> ImportSpec:
    """Parse an import schema from a plain mapping; ``origin`` names it in error messages."""
    raw = _plain(data) if isinstance(data, Mapping) else data
    cfg = _typed(raw, origin, SchemaConfig)

    def fail(key: str):
        return lambda reason: SpecError(origin, key, reason)

    if cfg.name is not None and not DATASET_NAME.fullmatch(cfg.name):
        raise fail("name")(f"must be letters, digits, _, . and - (not starting with . or -), got {shorten(cfg.name)}")
    domains = _domains(cfg.domains, fail)
    if not cfg.features:
        raise fail("features")("must be a non-empty list of features")
    features = tuple(_feature(_typed(f, origin, FeatureConfig, f"features[{i}]"), domains.names,
                              lambda key, i=i: fail(f"features[{i}].{key}"))
                     for i, f in enumerate(cfg.features))
    names = [f.name for f in features]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise fail("features")(f"feature names repeat: {repeated}")
    missing = [n for n in ID_FEATURES if n not in names]
    if missing:
        raise fail("features")(f"the id features {missing} are missing (every dataset has {list(ID_FEATURES)}; "
                               "use constant: true where the data has no such column)")
    _check_reader(cfg, fail)
    _check_label(cfg.label, fail)
    _check_time(cfg.time, fail)
    _check_sequences(cfg.sequences, fail)
    _check_behaviour_logs(cfg, fail)
    return ImportSpec(
        name=cfg.name if cfg.name is not None else Path(origin).stem,
        description=cfg.description,
        format=cfg.format.value,
        csv=cfg.csv,
        event_lines=cfg.event_lines,
        domains=domains,
        label=cfg.label,
        time=cfg.time,
        sequences=cfg.sequences,
        features=features,
        on_bad_rows=cfg.on_bad_rows.value,
        origin=origin,
        raw=cast(dict, raw),  # a mapping: _typed refused anything else
        behaviour_logs=cfg.behaviour_logs,
    )


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
