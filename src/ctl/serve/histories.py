"""The behaviour history of each request row: carried in the request, or looked up.

* in the request (:data:`HISTORY_COLUMNS`): each row's own events become the history of a user of
  its own (user i = row i), every event visible;
* looked up (:class:`HistoryLookup`): in a raw-id history file or in the run's dataset, built once
  per encoder; a row sees ``hist_end`` of its user's events, those before its ``ts``, or all.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctl.data.history import UserHistory
from ctl.data.layout import HISTORY_FILE, read_fingerprint
from ctl.data.schema import Schema
from ctl.errors import CtlError
from ctl.serve.artifact import Artifact
from ctl.serve.id_encoding import IdEncoder
from ctl.serve.request_columns import (
    Where,
    domain_indices,
    event_lists,
    flat_values,
    integer_column,
    read_table,
    refuse_nulls,
)

#: request columns that carry a history in the request itself (raw ids; domain names)
HISTORY_COLUMNS: tuple[str, ...] = ("history_item_id", "history_category_id", "history_domain")
#: columns of a history file (``history=FILE``), raw ids
HISTORY_FILE_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "category_id", "domain", "ts")


def request_history(table: pa.Table, file: Where, ids: IdEncoder, schema: Schema,
                    unknown: Counter) -> tuple[UserHistory, np.ndarray]:
    """Each request row's own events as the history of a user of its own (user i = row i), and how
    many of them each row sees (all). Unknown raw ids are counted in ``unknown``."""
    lists = {c: event_lists(table, c, file) for c in HISTORY_COLUMNS}
    lengths = {c: pc.list_value_length(v).fill_null(0).to_numpy(zero_copy_only=False) for c, v in lists.items()}
    first = lengths[HISTORY_COLUMNS[0]]
    for column in HISTORY_COLUMNS[1:]:
        differ = np.flatnonzero(lengths[column] != first)
        if differ.size:
            row = int(differ[0])
            raise CtlError(f"{file}: row {file.row(row)}: {column!r} has {lengths[column][row]} events but "
                           f"{HISTORY_COLUMNS[0]!r} has {first[row]}; the history columns list the same events")
    flat = {c: pc.list_flatten(v) for c, v in lists.items()}
    events = file.events(lists["history_item_id"])
    item, bad_items = ids.encode(flat["history_item_id"], "item_id", events, "history_item_id")
    category, bad_categories = ids.encode(flat["history_category_id"], "category_id", events, "history_category_id")
    unknown["history_item_id"] += bad_items
    unknown["history_category_id"] += bad_categories
    domain = domain_indices(flat["history_domain"], schema.domains, events, "history_domain")
    offsets = np.zeros(first.size + 1, dtype=np.int64)
    np.cumsum(first, out=offsets[1:])
    ts = np.arange(item.size, dtype=np.int64)
    history = UserHistory(offsets, item, category, domain, ts, len(schema.domains))
    return history, first.astype(np.int64)


class HistoryLookup:
    """The users' histories to look request rows up in, and the search keys of their times.

    Built once per encoder, so scoring a file block by block reads the histories and sorts their
    times once, not per block.

    Args:
        artifact: the loaded artifact (its schema; its dataset when there is no history file).
        ids: the artifact's id encoder (a history file holds raw ids).
        history_file: a raw-id history table, or None for the run's dataset.
    """

    def __init__(self, artifact: Artifact, ids: IdEncoder, history_file: Path | None) -> None:
        self.schema = artifact.schema
        #: what reading the history file met, for the report
        self.notes: list[str] = []
        if history_file is not None:
            columns = self._history_file_columns(history_file, ids)
            self.where = f"looked up in {history_file}"
        else:
            columns = _dataset_history(artifact)
            self.where = f"looked up in the dataset {artifact.manifest['dataset_path']}"
        self.history = UserHistory.from_columns(columns, n_users=self.schema.feature("user_id").vocab,
                                                n_domains=len(self.schema.domains))
        self.counts = self.history.counts().numpy()
        self.starts = self.history.user_offsets.numpy()
        # events in (user, ts) order keyed by user * span + the rank of their ts among the distinct
        # times: a row's events before ts are those whose key lies below (user, rank of ts)
        self.times = np.unique(columns["ts"])
        self.span = self.times.size + 1
        event_users = np.repeat(np.arange(self.history.n_users, dtype=np.int64), self.counts)
        self.keys = event_users * self.span + np.searchsorted(self.times, columns["ts"], side="left")

    def visible(self, table: pa.Table, file: Where, users: np.ndarray) -> np.ndarray:
        """How many of each row's user's events it sees: ``hist_end``, the events before ``ts``, or all."""
        counts = self.counts[users]
        names = table.column_names
        if "hist_end" in names:
            visible = integer_column(table, "hist_end", file)
            over = np.flatnonzero((visible < 0) | (visible > counts))
            if over.size:
                row = int(over[0])
                raise CtlError(f"{file}: column 'hist_end', row {file.row(row)}: {visible[row]} events visible, but the "
                               f"user has {counts[row]} in the history")
            return visible
        if "ts" in names:
            rank = np.searchsorted(self.times, integer_column(table, "ts", file), side="left")
            return np.searchsorted(self.keys, users * self.span + rank, side="left") - self.starts[users]
        return counts.astype(np.int64)

    def _history_file_columns(self, path: Path, ids: IdEncoder) -> dict[str, np.ndarray]:
        table = read_table(path, text_columns=(*ids.text_features(), "domain"))
        file = Where(path)
        missing = [c for c in HISTORY_FILE_COLUMNS if c not in table.column_names]
        if missing:
            raise CtlError(f"{path}: column {missing[0]!r} is missing; a history file has {list(HISTORY_FILE_COLUMNS)}")
        unknown: Counter = Counter()
        columns = {}
        for name in ("user_id", "item_id", "category_id"):
            columns[name], unknown[name] = ids.encode(table.column(name), name, file, name)
        columns["domain"] = domain_indices(table.column("domain"), self.schema.domains, file, "domain")
        ts = flat_values(table.column("ts"))
        refuse_nulls(file, "ts", ts)
        if not pa.types.is_integer(ts.type):
            raise CtlError(f"{path}: column 'ts' has type {ts.type}; times are integers (e.g. Unix seconds)")
        columns["ts"] = ts.to_numpy().astype(np.int64)
        # events of unknown users cannot be any request's history: they are left out, and said so
        known = columns["user_id"] != 0
        self.notes.append(f"{path}: {int((~known).sum())} of {known.size} events are of users the model does not "
                          f"know (left out); unknown ids among the rest became the absent id: "
                          f"item_id {unknown['item_id']}, category_id {unknown['category_id']}")
        order = np.lexsort((columns["ts"], columns["user_id"]))
        order = order[known[order]]
        return {name: values[order] for name, values in columns.items()}


def _dataset_history(artifact: Artifact) -> dict[str, np.ndarray]:
    """The history columns of the run's dataset, refused when it is gone or is another dataset."""
    path = Path(artifact.manifest["dataset_path"])
    if not (path / HISTORY_FILE).is_file():
        raise CtlError(f"the requests carry no history ({', '.join(HISTORY_COLUMNS)}) and the run's dataset "
                       f"{path} is gone: give history=FILE or put the histories in the requests")
    if read_fingerprint(path) != artifact.manifest["dataset"]:
        raise CtlError(f"the dataset at {path} is not the one the model was trained on (fingerprint "
                       f"{read_fingerprint(path)}, the artifact's {artifact.manifest['dataset']}); "
                       "give history=FILE or put the histories in the requests")
    table = pq.read_table(path / HISTORY_FILE, columns=list(HISTORY_FILE_COLUMNS))
    return {name: np.array(table.column(name).to_numpy()) for name in HISTORY_FILE_COLUMNS}
