"""What a schema YAML may hold: OmegaConf structured configs, one dataclass per section.

OmegaConf checks keys (unknown ones are refused), types and the choice fields (enums) against
these dataclasses; :func:`ctl.data.importer.spec.parse_spec` checks what spans several keys and
turns the result into an :class:`~ctl.data.importer.spec.ImportSpec`. ``docs/data.md`` documents
every key; ``None`` fields are optional.
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class ReaderKind(Enum):
    auto = "auto"
    csv = "csv"
    parquet = "parquet"
    event_lines = "event_lines"


class FeatureKind(Enum):
    categorical = "categorical"
    bucket = "bucket"


class SequenceEvents(Enum):
    positives = "positives"
    all = "all"


class Owner(Enum):
    row = "row"
    item = "item"


class Missing(Enum):
    absent = "absent"
    error = "error"


class BadRows(Enum):
    error = "error"
    skip = "skip"


@dataclass
class CsvConfig:
    delimiter: str = ","
    encoding: str = "utf-8"
    header: bool = True
    column_names: list[str] | None = None


@dataclass
class EventLinesConfig:
    key_fields: list[str] = MISSING
    event_separator: str = MISSING
    event_fields: list[str] = MISSING
    separator: str = "\t"
    encoding: str = "utf-8"


@dataclass
class DomainsConfig:
    column: str = MISSING
    source: str = MISSING
    values: Any = None  # raw value -> name mapping, or a list of raw values used as names
    boundaries: list[float] | None = None
    names: list[str] | None = None


@dataclass
class LabelConfig:
    column: str | None = None
    negatives: int | None = None
    exclude: str = "past"
    seed: int = 0


@dataclass
class TimeConfig:
    n_transfer: int = MISSING
    column: str | None = None
    format: str = "unix"
    period: str | None = None
    period_column: str | None = None
    periods: int | None = None
    start: Any = None  # a date (ISO text) or Unix seconds
    end: Any = None


@dataclass
class SequencesConfig:
    short_len: int = 10
    long_len: int = 64
    sim_len: int = 64
    events: SequenceEvents = SequenceEvents.positives
    column: str | None = None
    separator: str = "^"


@dataclass
class BehaviourLogsConfig:
    inputs: list[str] = MISSING
    user: str = MISSING
    item: str = MISSING
    time: str = MISSING
    domain: str = MISSING


@dataclass
class FeatureConfig:
    name: str = MISSING
    dim: int = MISSING
    column: str | None = None
    constant: bool = False
    kind: FeatureKind = FeatureKind.categorical
    vocab: Any = "auto"  # auto or an integer
    hash_buckets: int | None = None
    boundaries: list[float] | None = None
    domains: list[str] | None = None
    of: Owner | None = None  # default: item for item_id, category_id, seller_id
    missing: Missing | None = None  # default: error for user_id, item_id


@dataclass
class SchemaConfig:
    domains: DomainsConfig = MISSING
    label: LabelConfig = MISSING
    time: TimeConfig = MISSING
    features: list[Any] = MISSING  # FeatureConfig each, checked one by one (errors name features[i])
    name: str | None = None
    description: str = ""
    format: ReaderKind = ReaderKind.auto
    csv: CsvConfig = field(default_factory=CsvConfig)
    event_lines: EventLinesConfig | None = None
    sequences: SequencesConfig = field(default_factory=SequencesConfig)
    behaviour_logs: BehaviourLogsConfig | None = None
    on_bad_rows: BadRows = BadRows.error
