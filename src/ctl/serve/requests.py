"""Requests in raw ids -> the artifact's input tensors (:class:`RequestEncoder`), from the columns
read and checked by :mod:`ctl.serve.request_columns`, ids mapped by :mod:`ctl.serve.id_encoding` and
histories from :mod:`ctl.serve.histories`.

A request file (Parquet or CSV) has one row per (user, candidate item) to score:

* every feature of the artifact's schema that its domain carries (``user_id``, ``item_id``,
  ``category_id``, ``seller_id``, context features ...), in **raw ids**: a feature with an id map
  (an imported dataset's dense features) takes the raw values the importer read, as text or
  integers; any other feature takes its ids as integers (a synthetic world's ids are its raw ids);
* optionally ``domain``: the domain's name; it must be the artifact's (the model scores that one);
* the user's behaviour history, one of:

  - in the request: ``history_item_id``, ``history_category_id`` and ``history_domain`` (domain
    names), the events oldest first, as Parquet lists or, in CSV, space-separated text;
  - looked up (no such columns): in ``history=FILE`` (raw ids: ``user_id``, ``item_id``,
    ``category_id``, ``domain`` names, ``ts``) or else in the run's dataset, with the request's
    ``hist_end`` (how many of the user's events are visible) or ``ts`` (events before it are
    visible); with neither, every event of the user is visible.

A raw id missing from the id map, or an id outside the feature's vocabulary, becomes the absent
id 0 and is counted (:attr:`Encoded.unknown`); every other problem (a missing column, a column of
the wrong type, an empty value, an unknown domain) is refused naming the file, column and 1-based
row. Nothing is dropped: the output has one probability per request row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ctl.data.history import UserHistory
from ctl.data.sequences import gather_sequences
from ctl.errors import CtlError
from ctl.serve.artifact import Artifact
from ctl.serve.dataset_requests import requests_from_dataset
from ctl.serve.histories import HISTORY_COLUMNS, HISTORY_FILE_COLUMNS, HistoryLookup, request_history
from ctl.serve.id_encoding import IdEncoder
from ctl.serve.request_columns import READABLE, Where, domain_indices, read_table

#: the names callers import from here; each lives in the module that does its job
__all__ = [
    "HISTORY_COLUMNS",
    "HISTORY_FILE_COLUMNS",
    "READABLE",
    "Encoded",
    "IdEncoder",
    "RequestEncoder",
    "Where",
    "read_table",
    "requests_from_dataset",
]


@dataclass
class Encoded:
    """Request rows encoded as batch tensors, and what the encoding met.

    ``unknown``: per column, raw ids that became the absent id; ``history``: where histories came from.
    """

    batch: dict[str, torch.Tensor]
    rows: int
    unknown: Counter = field(default_factory=Counter)
    history: str = ""


class RequestEncoder:
    """Turns request tables into the artifact's input tensors (see the module docstring).

    Args:
        artifact: the loaded artifact.
        history_file: a raw-id history table to look histories up in, or None for the run's dataset.
    """

    def __init__(self, artifact: Artifact, history_file: Path | None = None) -> None:
        self.artifact = artifact
        self.schema = artifact.schema
        self.ids = IdEncoder(artifact)
        self.domain = self.schema.domain_index(artifact.domain)
        self.history_file = history_file
        self._lookup: HistoryLookup | None = None

    @property
    def notes(self) -> list[str]:
        """What reading the history file met, for the report."""
        return self._lookup.notes if self._lookup is not None else []

    def history_lookup(self) -> HistoryLookup:
        """The histories to look rows up in: read, and their search keys built, on first use only."""
        if self._lookup is None:
            self._lookup = HistoryLookup(self.artifact, self.ids, self.history_file)
        return self._lookup

    def text_columns(self) -> tuple[str, ...]:
        """Columns a CSV request file should be read as text: id-mapped features and in-request histories."""
        return (*self.ids.text_features(), *HISTORY_COLUMNS, "domain")

    def required_features(self) -> tuple[str, ...]:
        """The features a request must give: those the artifact's domain carries."""
        domain = self.artifact.domain
        return tuple(f.name for f in self.schema.features if domain in f.domains)

    def encode(self, table: pa.Table, file: Where, recent: pa.Table | None = None) -> Encoded:
        """The batch of every row of ``table`` (read from ``file``, for messages).

        ``recent``: events of the rows' one user since the history was written (``item_id``,
        ``category_id``, ``domain``: raw ids and names, oldest first), appended to the events each
        row sees of the looked-up history; the rows then must not carry a history of their own.
        """
        names = table.column_names
        required = self.required_features()
        missing = [name for name in required if name not in names]
        if missing:
            raise CtlError(f"{file}: column {missing[0]!r} is missing; a request gives every feature its domain "
                           f"{self.artifact.domain} carries: {list(required)}")
        n = table.num_rows
        if n == 0:
            raise CtlError(f"{file} holds no request rows")
        if "domain" in names:
            domains = domain_indices(table.column("domain"), self.schema.domains, file, "domain")
            other = np.flatnonzero(domains != self.domain)
            if other.size:
                raise CtlError(f"{file}: column 'domain', row {file.row(int(other[0]))}: "
                               f"{self.schema.domains[domains[other[0]]]!r}, but the artifact scores domain "
                               f"{self.artifact.domain}'s rows")
        encoded = Encoded(batch={}, rows=n)
        for feature in self.schema.features:
            if feature.name in required:
                ids, unknown = self.ids.encode(table.column(feature.name), feature.name, file, feature.name)
                encoded.unknown[feature.name] += unknown
            else:  # a feature the domain lacks is absent on its rows, as in the dataset
                ids = np.zeros(n, dtype=np.int64)
            encoded.batch[feature.name] = torch.from_numpy(ids)
        domain = torch.full((n,), self.domain, dtype=torch.int64)
        encoded.batch["domain"] = domain
        encoded.batch["period"] = torch.full((n,), self.schema.test_period, dtype=torch.int64)
        given = [c for c in HISTORY_COLUMNS if c in names]
        if recent is not None:
            if given:
                raise CtlError(f"{file}: recent events extend the looked-up history; the rows cannot also carry "
                               f"{given[0]!r}")
            history, users, visible = self._with_recent(table, file, encoded, recent)
        elif given:
            if len(given) != len(HISTORY_COLUMNS):
                absent = [c for c in HISTORY_COLUMNS if c not in names]
                raise CtlError(f"{file}: column {absent[0]!r} is missing; a history in the request needs all of "
                               f"{list(HISTORY_COLUMNS)}")
            history, visible = request_history(table, file, self.ids, self.schema, encoded.unknown)
            users = torch.arange(n, dtype=torch.int64)  # row i's events are those of history user i
            encoded.history = "in the request"
        else:
            lookup = self.history_lookup()
            history, users = lookup.history, encoded.batch["user_id"]
            visible = lookup.visible(table, file, users.numpy())
            encoded.history = lookup.where
        self._gather(encoded.batch, history, users, visible)
        return encoded

    def _with_recent(self, table: pa.Table, file: Where, encoded: Encoded,
                     recent: pa.Table) -> tuple[UserHistory, torch.Tensor, np.ndarray]:
        """One user's visible looked-up events followed by ``recent``, as the history of a user 0 of its own."""
        lookup = self.history_lookup()
        users = encoded.batch["user_id"].numpy()
        if (users != users[0]).any():
            raise CtlError(f"{file}: recent events belong to one user, but the rows hold several user_id values")
        visible = lookup.visible(table, file, users)
        if (visible != visible[0]).any():
            raise CtlError(f"{file}: recent events follow one visible history, but the rows see different "
                           "numbers of the user's events")
        events = Where(Path(f"{file} recent events"))
        item, bad_items = self.ids.encode(recent.column("item_id"), "item_id", events, "item_id")
        category, bad_categories = self.ids.encode(recent.column("category_id"), "category_id", events, "category_id")
        domain = domain_indices(recent.column("domain"), self.schema.domains, events, "domain")
        encoded.unknown["recent_item_id"] += bad_items
        encoded.unknown["recent_category_id"] += bad_categories
        start = int(lookup.starts[int(users[0])])
        seen = slice(start, start + int(visible[0]))
        item = np.concatenate([lookup.history.item.numpy()[seen], item])
        category = np.concatenate([lookup.history.category.numpy()[seen], category])
        domain = np.concatenate([lookup.history.domain.numpy()[seen], domain])
        # gathering reads the events' order only; their times are not needed
        history = UserHistory(np.array([0, item.size]), item, category, domain, np.arange(item.size),
                              len(self.schema.domains))
        encoded.history = f"{lookup.where}, plus {recent.num_rows} recent events"
        n = table.num_rows
        return history, torch.zeros(n, dtype=torch.int64), np.full(n, item.size, dtype=np.int64)

    def _gather(self, batch: dict[str, torch.Tensor], history: UserHistory, users: torch.Tensor,
                visible: np.ndarray) -> None:
        """The batch's sequences: the last events among each row's ``visible`` events of user ``users``."""
        seen = torch.from_numpy(np.ascontiguousarray(visible, dtype=np.int64))
        domains = {name: self.schema.domain_index(name) for name in self.artifact.domain_sequences}
        batch.update(gather_sequences(history, self.schema, users, seen, batch["domain"], batch["category_id"],
                                      domains))
