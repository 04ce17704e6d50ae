"""Requests in raw ids -> the artifact's input tensors: reading, checking, id mapping, histories.

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
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from ctl.data.history import UserHistory
from ctl.data.sequences import gather_sequences
from ctl.errors import CtlError, shorten
from ctl.serve.artifact import ID_MAPS_DIR, Artifact

#: request columns that carry a history in the request itself (raw ids; domain names)
HISTORY_COLUMNS: tuple[str, ...] = ("history_item_id", "history_category_id", "history_domain")
#: columns of a history file (``history=FILE``), raw ids
HISTORY_FILE_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "category_id", "domain", "ts")
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


def _flat(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values.dictionary_decode() if pa.types.is_dictionary(values.type) else values


def _refuse_nulls(file: Where, column: str, values: pa.Array) -> None:
    if values.null_count:
        row = int(np.argmax(pc.is_null(values).to_numpy(zero_copy_only=False)))
        raise CtlError(f"{file}: column {column!r}, row {file.row(row)}: empty; every value is needed "
                       "(a feature the user or item lacks is id 0)")


class IdEncoder:
    """Maps raw values of the schema's features to the model's ids (0 = absent/unknown).

    A feature with an id map looks values up in it by their text; any other takes integer ids,
    and an id outside ``[0, vocab)`` is unknown.
    """

    def __init__(self, artifact: Artifact) -> None:
        self.vocab = {f.name: f.vocab for f in artifact.schema.features}
        self.maps = {name: artifact.id_map(name) for name in self.vocab}

    def text_features(self) -> tuple[str, ...]:
        return tuple(name for name, mapping in self.maps.items() if mapping is not None)

    def encode(self, values: pa.Array, feature: str, file: Where, column: str) -> tuple[np.ndarray, int]:
        """int64 ids ``[n]`` of raw ``values`` of ``feature``, and how many were unknown."""
        values = _flat(values)
        _refuse_nulls(file, column, values)
        kind = values.type
        mapping = self.maps[feature]
        if mapping is not None:
            if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise CtlError(f"{file}: column {column!r} has type {kind}; raw ids of {feature!r} are text or "
                               "integers (its id map holds the importer's raw values)")
            found = pc.index_in(values.cast(pa.string()), value_set=mapping)
            ids = pc.fill_null(pc.add(found, 1), 0).to_numpy(zero_copy_only=False).astype(np.int64)
            return ids, int(found.null_count)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            values = _parse_integers(values, file, column, feature)
        elif not pa.types.is_integer(kind):
            raise CtlError(f"{file}: column {column!r} has type {kind}; feature {feature!r} has no id map, so "
                           "its values are ids: integers")
        ids = values.to_numpy(zero_copy_only=False).astype(np.int64)
        unknown = (ids < 0) | (ids >= self.vocab[feature])
        return np.where(unknown, 0, ids), int(unknown.sum())


def _parse_integers(values: pa.Array, file: Where, column: str, feature: str) -> pa.Array:
    """Text that must hold integer ids (a CSV's space-separated history): int64, or refuse the first other."""
    matches = pc.match_substring_regex(values, r"^[+-]?[0-9]+$").to_numpy(zero_copy_only=False)
    if not matches.all():
        row = int(np.argmin(matches))
        raise CtlError(f"{file}: column {column!r}, row {file.row(row)}: {shorten(values[row].as_py())} is not an integer; "
                       f"feature {feature!r} has no id map, so its values are ids")
    return pc.cast(values, pa.int64())


def _domain_indices(values: pa.Array, names: tuple[str, ...], file: Where, column: str) -> np.ndarray:
    values = _flat(values)
    _refuse_nulls(file, column, values)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise CtlError(f"{file}: column {column!r} has type {values.type}; domains are given by name ({list(names)})")
    index = pc.index_in(values, value_set=pa.array(names, pa.string()))
    if index.null_count:
        row = int(np.argmax(pc.is_null(index).to_numpy(zero_copy_only=False)))
        raise CtlError(f"{file}: column {column!r}, row {file.row(row)}: {shorten(values[row].as_py())} is not one of the "
                       f"domains {list(names)}")
    return index.to_numpy(zero_copy_only=False).astype(np.int64)


def _event_lists(table: pa.Table, column: str, file: Where) -> pa.ListArray:
    """A history column as a list array: Parquet lists as they are, CSV text split at whitespace."""
    values = _flat(table.column(column))
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pa.array([[] if text is None else text.split() for text in values.to_pylist()], pa.list_(pa.string()))
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return values
    raise CtlError(f"{file}: column {column!r} has type {values.type}; a history in the request is a list of raw "
                   "ids (Parquet) or space-separated raw ids (CSV)")


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
        self._lookup: tuple[UserHistory, np.ndarray, str] | None = None
        #: what reading the history file met, for the report
        self.notes: list[str] = []

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
            domains = _domain_indices(table.column("domain"), self.schema.domains, file, "domain")
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
            history, visible = self._request_history(table, file, encoded.unknown)
            users = torch.arange(n, dtype=torch.int64)  # row i's events are those of history user i
            encoded.history = "in the request"
        else:
            history, ts_sorted, where = self._history_lookup()
            users = encoded.batch["user_id"]
            visible = self._visible(table, file, history, users.numpy(), ts_sorted)
            encoded.history = where
        self._gather(encoded.batch, history, users, visible)
        return encoded

    # --- histories -----------------------------------------------------------------------------
    def _request_history(self, table: pa.Table, file: Where, unknown: Counter) -> tuple[UserHistory, np.ndarray]:
        """Each request row's own events as the history of a user of its own (user i = row i)."""
        lists = {c: _event_lists(table, c, file) for c in HISTORY_COLUMNS}
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
        item, bad_items = self.ids.encode(flat["history_item_id"], "item_id", events, "history_item_id")
        category, bad_categories = self.ids.encode(flat["history_category_id"], "category_id", events,
                                                   "history_category_id")
        unknown["history_item_id"] += bad_items
        unknown["history_category_id"] += bad_categories
        domain = _domain_indices(flat["history_domain"], self.schema.domains, events, "history_domain")
        offsets = np.zeros(first.size + 1, dtype=np.int64)
        np.cumsum(first, out=offsets[1:])
        ts = np.arange(item.size, dtype=np.int64)
        history = UserHistory(offsets, item, category, domain, ts, len(self.schema.domains))
        return history, first.astype(np.int64)

    def _with_recent(self, table: pa.Table, file: Where, encoded: Encoded,
                     recent: pa.Table) -> tuple[UserHistory, torch.Tensor, np.ndarray]:
        """One user's visible looked-up events followed by ``recent``, as the history of a user 0 of its own."""
        lookup, ts_sorted, where = self._history_lookup()
        users = encoded.batch["user_id"].numpy()
        if (users != users[0]).any():
            raise CtlError(f"{file}: recent events belong to one user, but the rows hold several user_id values")
        visible = self._visible(table, file, lookup, users, ts_sorted)
        if (visible != visible[0]).any():
            raise CtlError(f"{file}: recent events follow one visible history, but the rows see different "
                           "numbers of the user's events")
        events = Where(Path(f"{file} recent events"))
        item, bad_items = self.ids.encode(recent.column("item_id"), "item_id", events, "item_id")
        category, bad_categories = self.ids.encode(recent.column("category_id"), "category_id", events, "category_id")
        domain = _domain_indices(recent.column("domain"), self.schema.domains, events, "domain")
        encoded.unknown["recent_item_id"] += bad_items
        encoded.unknown["recent_category_id"] += bad_categories
        start = int(lookup.user_offsets[int(users[0])])
        seen = slice(start, start + int(visible[0]))
        item = np.concatenate([lookup.item.numpy()[seen], item])
        category = np.concatenate([lookup.category.numpy()[seen], category])
        domain = np.concatenate([lookup.domain.numpy()[seen], domain])
        # gathering reads the events' order only; their times are not needed
        history = UserHistory(np.array([0, item.size]), item, category, domain, np.arange(item.size),
                              len(self.schema.domains))
        encoded.history = f"{where}, plus {recent.num_rows} recent events"
        n = table.num_rows
        return history, torch.zeros(n, dtype=torch.int64), np.full(n, item.size, dtype=np.int64)

    def _history_lookup(self) -> tuple[UserHistory, np.ndarray, str]:
        """The history to look users up in (built once): the history file's or the dataset's."""
        if self._lookup is None:
            if self.history_file is not None:
                columns = self._history_file_columns(self.history_file)
                where = f"looked up in {self.history_file}"
            else:
                columns = self._dataset_history()
                where = f"looked up in the dataset {self.artifact.manifest['dataset_path']}"
            history = UserHistory.from_columns(columns, n_users=self.schema.feature("user_id").vocab,
                                               n_domains=len(self.schema.domains))
            self._lookup = (history, columns["ts"], where)
        return self._lookup

    def _dataset_history(self) -> dict[str, np.ndarray]:
        from ctl.data.dataset import HISTORY_FILE, read_fingerprint

        path = Path(self.artifact.manifest["dataset_path"])
        if not (path / HISTORY_FILE).is_file():
            raise CtlError(f"the requests carry no history ({', '.join(HISTORY_COLUMNS)}) and the run's dataset "
                           f"{path} is gone: give history=FILE or put the histories in the requests")
        if read_fingerprint(path) != self.artifact.manifest["dataset"]:
            raise CtlError(f"the dataset at {path} is not the one the model was trained on (fingerprint "
                           f"{read_fingerprint(path)}, the artifact's {self.artifact.manifest['dataset']}); "
                           "give history=FILE or put the histories in the requests")
        table = pq.read_table(path / HISTORY_FILE, columns=list(HISTORY_FILE_COLUMNS))
        return {name: np.array(table.column(name).to_numpy()) for name in HISTORY_FILE_COLUMNS}

    def _history_file_columns(self, path: Path) -> dict[str, np.ndarray]:
        table = read_table(path, text_columns=(*self.ids.text_features(), "domain"))
        file = Where(path)
        missing = [c for c in HISTORY_FILE_COLUMNS if c not in table.column_names]
        if missing:
            raise CtlError(f"{path}: column {missing[0]!r} is missing; a history file has {list(HISTORY_FILE_COLUMNS)}")
        unknown: Counter = Counter()
        columns = {}
        for name in ("user_id", "item_id", "category_id"):
            columns[name], unknown[name] = self.ids.encode(table.column(name), name, file, name)
        columns["domain"] = _domain_indices(table.column("domain"), self.schema.domains, file, "domain")
        ts = _flat(table.column("ts"))
        _refuse_nulls(file, "ts", ts)
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

    def _visible(self, table: pa.Table, file: Where, history: UserHistory, users: np.ndarray,
                 ts_sorted: np.ndarray) -> np.ndarray:
        """How many of each row's user's events it sees: ``hist_end``, the events before ``ts``, or all."""
        counts = history.counts().numpy()[users]
        start = history.user_offsets.numpy()[users]
        names = table.column_names
        if "hist_end" in names:
            visible = _integers(table, "hist_end", file)
            over = np.flatnonzero((visible < 0) | (visible > counts))
            if over.size:
                row = int(over[0])
                raise CtlError(f"{file}: column 'hist_end', row {file.row(row)}: {visible[row]} events visible, but the "
                               f"user has {counts[row]} in the history")
            return visible
        if "ts" in names:
            ts = _integers(table, "ts", file)
            # the events of a user before ts: one search over (user, rank of ts) keys, in history order
            _, rank = np.unique(np.concatenate([ts_sorted, ts]), return_inverse=True)
            span = int(rank.max()) + 1
            event_users = np.repeat(np.arange(history.n_users), history.counts().numpy())
            keys = event_users * span + rank[: ts_sorted.size]
            return np.searchsorted(keys, users * span + rank[ts_sorted.size :], side="left") - start
        return counts.astype(np.int64)

    def _gather(self, batch: dict[str, torch.Tensor], history: UserHistory, users: torch.Tensor,
                visible: np.ndarray) -> None:
        """The batch's sequences: the last events among each row's ``visible`` events of user ``users``."""
        seen = torch.from_numpy(np.ascontiguousarray(visible, dtype=np.int64))
        domains = {name: self.schema.domain_index(name) for name in self.artifact.domain_sequences}
        batch.update(gather_sequences(history, self.schema, users, seen, batch["domain"], batch["category_id"],
                                      domains))


def _integers(table: pa.Table, column: str, file: Where) -> np.ndarray:
    values = _flat(table.column(column))
    _refuse_nulls(file, column, values)
    if not pa.types.is_integer(values.type):
        raise CtlError(f"{file}: column {column!r} has type {values.type}; it holds integers")
    return values.to_numpy().astype(np.int64)


def requests_from_dataset(dataset_path: Path | str, rows: np.ndarray, with_history: bool) -> pa.Table:
    """Dataset rows written back as raw-id requests (the features through the id maps, if any).

    With ``with_history`` each request carries its row's visible history (``history_*`` columns),
    else ``hist_end`` for a lookup. ``row`` (the dataset row) is kept, so scores can be joined to a
    run's ``predictions.parquet``. For tests, examples and the serving benchmark.
    """
    from ctl.data.dataset import load_dataset

    dataset = load_dataset(dataset_path, validate=False)
    schema = dataset.schema
    rows = np.asarray(rows, dtype=np.int64)

    def raw(feature: str, ids: np.ndarray) -> pa.Array:
        file = dataset.path / ID_MAPS_DIR / f"{feature}.parquet"
        if not file.is_file():
            return pa.array(ids, pa.int64())
        table = pq.read_table(file).sort_by("id")
        text = np.concatenate([[None], table.column("raw").to_numpy(zero_copy_only=False).astype(object)])
        return pa.array(text[ids], pa.string())

    columns = {"row": pa.array(rows)}
    domain = dataset.rows["domain"][rows]
    for feature in schema.features:
        columns[feature.name] = raw(feature.name, dataset.rows[feature.name][rows].astype(np.int64))
    columns["domain"] = pa.array([schema.domains[d] for d in domain], pa.string())
    hist_end = dataset.rows["hist_end"][rows].astype(np.int64)
    if not with_history:
        columns["hist_end"] = pa.array(hist_end)
        return pa.table(columns)
    history = dataset.history
    start = history.user_offsets.numpy()[dataset.rows["user_id"][rows]]
    lengths = hist_end
    offsets = np.zeros(rows.size + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    positions = np.concatenate([np.arange(s, s + n) for s, n in zip(start, lengths, strict=True)] or [[]]).astype(
        np.int64)
    events = {"history_item_id": raw("item_id", history.item.numpy()[positions]),
              "history_category_id": raw("category_id", history.category.numpy()[positions]),
              "history_domain": pa.array([schema.domains[d] for d in history.domain.numpy()[positions]], pa.string())}
    for name, values in events.items():
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets), values)
    return pa.table(columns)
