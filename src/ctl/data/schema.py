"""The feature schema of a dataset: what every column is and which domains have it.

A dataset folder holds ``meta.yaml`` (this schema, the period layout, provenance), ``rows.parquet``
(one row per impression) and ``history.parquet`` (every user's time-ordered events, the CSR
values; offsets are derived from its sorted ``user_id`` column).

Id conventions, shared by every feature and sequence:
  * id 0 means "absent / padding": a feature a domain does not have is 0 on that domain's rows;
  * real ids are 1 .. vocab-1, so an embedding table of ``vocab`` rows covers the whole dataset.

Period layout: periods ``0 .. H-1`` are history, ``H .. H+T-1`` are the transfer periods
(``t0 = H``), and period ``H+T`` is the test slice. Every period index lies in ``[0, H+T]``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Literal

#: what a feature or domain name may be: it becomes a file name (``id_maps/<feature>.parquet``) and
#: a column name (``seq_<domain>_item``), so it never holds a path separator or ``..``
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

FeatureKind = Literal["categorical", "bucket"]
FEATURE_KINDS: tuple[str, ...] = ("categorical", "bucket")

#: The four id features every model needs (paper: user, item, category, seller).
ID_FEATURES: tuple[str, ...] = ("user_id", "item_id", "category_id", "seller_id")

#: Row columns besides the features, with their on-disk dtypes.
ROW_COLUMNS: dict[str, str] = {
    "domain": "int8",  # index into Schema.domains
    "period": "int16",
    "ts": "int64",
    "label": "int8",
    "hist_end": "int32",  # how many of the user's history events were visible at impression time
}

#: History (CSR values) columns, sorted by (user_id, ts).
HISTORY_COLUMNS: dict[str, str] = {
    "user_id": "int64",
    "item_id": "int64",
    "category_id": "int64",
    "domain": "int8",
    "ts": "int64",
}


@dataclass(frozen=True)
class Feature:
    """One categorical (or bucketised numerical) row feature.

    ``vocab`` counts id 0 (absent); ``domains`` lists the domain names whose rows carry it.
    """

    name: str
    kind: FeatureKind
    vocab: int
    dim: int
    domains: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"feature name {self.name!r:.80} must be letters, digits and _ (not starting with a digit)")
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature {self.name!r}: kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.vocab < 2:
            raise ValueError(f"feature {self.name!r}: vocab must be >= 2 (id 0 is 'absent'), got {self.vocab}")
        if self.dim < 1:
            raise ValueError(f"feature {self.name!r}: dim must be >= 1, got {self.dim}")


@dataclass(frozen=True)
class Schema:
    """Features, domains and period layout of one dataset."""

    features: tuple[Feature, ...]
    domains: tuple[str, ...]
    source: str
    n_history: int
    n_transfer: int
    short_len: int = 10
    long_len: int = 64
    sim_len: int = 64
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        for required in ID_FEATURES:
            if required not in names:
                raise ValueError(f"schema: the id feature {required!r} is missing (have {names})")
        if len(set(names)) != len(names):
            raise ValueError(f"schema: duplicate feature names in {names}")
        bad = [d for d in self.domains if not isinstance(d, str) or not NAME_PATTERN.fullmatch(d)]
        if bad:
            raise ValueError(f"schema: domain name {bad[0]!r:.80} must be letters, digits and _ (not starting with a digit)")
        if self.source not in self.domains:
            raise ValueError(f"schema: source domain {self.source!r} is not one of {self.domains}")
        for f in self.features:
            unknown = set(f.domains) - set(self.domains)
            if unknown:
                raise ValueError(f"schema: feature {f.name!r} names unknown domains {sorted(unknown)}")
        if self.n_history < 1 or self.n_transfer < 1:
            raise ValueError("schema: n_history and n_transfer must both be >= 1")
        for name in ("short_len", "long_len", "sim_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"schema: {name} must be >= 1, got {getattr(self, name)}")

    # --- period layout -------------------------------------------------------------------------
    @property
    def t0(self) -> int:
        """First transfer period."""
        return self.n_history

    @property
    def test_period(self) -> int:
        return self.n_history + self.n_transfer

    @property
    def n_periods(self) -> int:
        """History + transfer + the test slice."""
        return self.n_history + self.n_transfer + 1

    # --- lookups ---------------------------------------------------------------------------------
    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(d for d in self.domains if d != self.source)

    def domain_index(self, name: str) -> int:
        if name not in self.domains:
            raise ValueError(f"unknown domain {name!r}; this dataset has {list(self.domains)}")
        return self.domains.index(name)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"unknown feature {name!r}; schema has {[f.name for f in self.features]}")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    # --- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = [dict(asdict(f), domains=list(f.domains)) for f in self.features]
        d["domains"] = list(self.domains)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Schema:
        feats = tuple(
            Feature(
                name=str(f["name"]),
                kind=f["kind"],
                vocab=int(f["vocab"]),
                dim=int(f["dim"]),
                domains=tuple(f["domains"]),
            )
            for f in d["features"]
        )
        return cls(
            features=feats,
            domains=tuple(d["domains"]),
            source=str(d["source"]),
            n_history=int(d["n_history"]),
            n_transfer=int(d["n_transfer"]),
            short_len=int(d.get("short_len", 10)),
            long_len=int(d.get("long_len", 64)),
            sim_len=int(d.get("sim_len", 64)),
            description=str(d.get("description", "")),
            extra=dict(d.get("extra", {}) or {}),
        )
