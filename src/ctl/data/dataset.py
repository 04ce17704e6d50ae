"""The on-disk dataset: one folder of ``meta.yaml``, ``rows.parquet`` and ``history.parquet``.

``meta.yaml`` holds ``schema`` (:meth:`Schema.to_dict`), ``provenance`` (free-form, how the data
was made), ``format_version``, ``n_rows``, ``n_events`` and ``content`` (the sha256 of each data
file, so the fingerprint follows the data). ``rows.parquet`` has every schema
feature as int64 plus :data:`ROW_COLUMNS`; ``history.parquet`` has :data:`HISTORY_COLUMNS`, sorted
by ``(user_id, ts)``.

A dataset may also hold ``oracle.parquet`` (:data:`ORACLE_FILE`): the true click probability
``click_prob`` of some rows (by ``row``, their position in ``rows.parquet``), which only a
simulator knows; the synthetic world keeps it for its test slice. It is evaluation data, never a
feature: :func:`load_dataset` validates it but leaves it out of :class:`Dataset`, and
:func:`load_click_prob` reads it for ``ctl eval``'s oracle row. Imported datasets have none. It is
not part of ``meta.yaml``, so a dataset's fingerprint does not depend on it.

Loading validates everything, vectorised, and refuses the first problem with a
:class:`DatasetError` naming the file, column, first offending row (0-based, in that file) and
value. Nothing is dropped or repaired silently; the only conversion allowed is an exact one
(e.g. a float column holding integral values, or a wider integer type).

Example::

    path = write_dataset(out_dir, schema, rows, history, provenance={"generator": "synthetic"})
    ds = load_dataset(path)
    train_rows = ds.select(domains=["B"], periods=[ds.schema.t0])
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from ctl.data.schema import HISTORY_COLUMNS, ROW_COLUMNS, Schema
from ctl.io import file_sha256, fsync_path, rename_into_place

if TYPE_CHECKING:  # torch is imported by loading, not by writing (the importer runs without it)
    from ctl.data.history import UserHistory

FORMAT_VERSION = 1
META_FILE = "meta.yaml"
ROWS_FILE = "rows.parquet"
HISTORY_FILE = "history.parquet"
ORACLE_FILE = "oracle.parquet"
#: ``oracle.parquet`` columns: ascending row positions in ``rows.parquet``, their click probabilities
ORACLE_COLUMNS: dict[str, np.dtype] = {"row": np.dtype(np.int64), "click_prob": np.dtype(np.float64)}
#: Parquet row-group size: large enough for fast scans, small enough to bound reader memory.
ROW_GROUP_SIZE = 1_000_000


class DatasetError(ValueError):
    """A dataset refused at load (or write) time; the message names file, column, row and value."""

    def __init__(self, file: str, reason: str, column: str | None = None, row: int | None = None) -> None:
        where = []
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{file}: {', '.join(where)}: {reason}" if where else f"{file}: {reason}")
        self.file = file
        self.column = column
        self.row = row


def row_dtypes(schema: Schema) -> dict[str, np.dtype]:
    """On-disk dtype of every ``rows.parquet`` column: features int64, then :data:`ROW_COLUMNS`."""
    dtypes = {name: np.dtype(np.int64) for name in schema.feature_names}
    dtypes.update({name: np.dtype(dtype) for name, dtype in ROW_COLUMNS.items()})
    return dtypes


def history_dtypes() -> dict[str, np.dtype]:
    return {name: np.dtype(dtype) for name, dtype in HISTORY_COLUMNS.items()}


# --- checks ------------------------------------------------------------------------------------


def _refuse_first(file: str, column: str, values: np.ndarray, bad: np.ndarray, reason: str) -> None:
    """Raise for the first True of ``bad``; ``reason`` follows ``value <v>``."""
    if bad.any():
        row = int(np.argmax(bad))
        raise DatasetError(file, f"value {values[row]} {reason}", column=column, row=row)


def _exact_int64(file: str, column: str, values: np.ndarray) -> np.ndarray:
    """``values`` as int64 if that conversion is exact, else refuse naming the first bad value."""
    kind = values.dtype.kind
    if kind in "iub":
        if kind == "u" and values.dtype.itemsize == 8:
            _refuse_first(file, column, values, values > np.iinfo(np.int64).max, "does not fit in int64")
        return values.astype(np.int64, copy=False)
    if kind == "f":
        _refuse_first(file, column, values, np.isnan(values), "is NaN")
        too_big = np.abs(values) >= 2.0**63
        _refuse_first(file, column, values, too_big, "does not fit in int64")
        _refuse_first(file, column, values, values != np.trunc(values), "is not an integer")
        return values.astype(np.int64)
    raise DatasetError(file, f"dtype {values.dtype} is not an integer type", column=column)


def _check_range(file: str, column: str, values: np.ndarray, low: int, high: int, what: str) -> None:
    """Refuse values outside ``[low, high)``."""
    _refuse_first(
        file, column, values, (values < low) | (values >= high), f"is outside {what} [{low}, {high})"
    )


def _normalise(
    file: str, columns: dict[str, np.ndarray], dtypes: dict[str, np.dtype]
) -> dict[str, np.ndarray]:
    """Check presence, lengths and integer-ness; return the columns as int64, in ``dtypes`` order."""
    missing = [name for name in dtypes if name not in columns]
    if missing:
        raise DatasetError(file, f"missing (have {sorted(columns)})", column=missing[0])
    out = {}
    n = None
    for name in dtypes:
        values = np.asarray(columns[name])
        if values.ndim != 1:
            raise DatasetError(file, f"must be 1-d, got shape {values.shape}", column=name)
        if n is None:
            n = values.shape[0]
        elif values.shape[0] != n:
            raise DatasetError(file, f"has {values.shape[0]} values, other columns have {n}", column=name)
        out[name] = _exact_int64(file, name, values)
    return out


def _validate_rows(schema: Schema, rows: dict[str, np.ndarray]) -> None:
    """Range checks of int64 row columns against the schema."""
    n_rows = rows["label"].shape[0]
    if n_rows == 0:
        raise DatasetError(ROWS_FILE, "the dataset has no rows")
    _refuse_first(
        ROWS_FILE, "label", rows["label"], (rows["label"] != 0) & (rows["label"] != 1), "is not 0/1"
    )
    _check_range(ROWS_FILE, "period", rows["period"], 0, schema.test_period + 1, "the period layout")
    _check_range(
        ROWS_FILE, "domain", rows["domain"], 0, len(schema.domains), f"the domains {list(schema.domains)}"
    )
    _check_range(ROWS_FILE, "hist_end", rows["hist_end"], 0, np.iinfo(np.int32).max, "hist_end's range")
    domain = rows["domain"]
    for feature in schema.features:
        values = rows[feature.name]
        _check_range(
            ROWS_FILE, feature.name, values, 0, feature.vocab, f"feature {feature.name!r}'s vocabulary"
        )
        carriers = np.array([schema.domain_index(d) for d in feature.domains], dtype=np.int64)
        stray = (values != 0) & ~np.isin(domain, carriers)
        if stray.any():
            row = int(np.argmax(stray))
            raise DatasetError(
                ROWS_FILE,
                f"value {values[row]} on domain {schema.domains[domain[row]]!r}, which the schema says lacks "
                f"feature {feature.name!r} (it must be 0 there; carried by {list(feature.domains)})",
                column=feature.name,
                row=row,
            )


def _validate_history(schema: Schema, history: dict[str, np.ndarray]) -> None:
    user, ts = history["user_id"], history["ts"]
    _check_range(
        HISTORY_FILE, "user_id", user, 0, schema.feature("user_id").vocab, "feature 'user_id''s vocabulary"
    )
    _check_range(
        HISTORY_FILE,
        "item_id",
        history["item_id"],
        0,
        schema.feature("item_id").vocab,
        "feature 'item_id''s vocabulary",
    )
    _check_range(
        HISTORY_FILE,
        "category_id",
        history["category_id"],
        0,
        schema.feature("category_id").vocab,
        "feature 'category_id''s vocabulary",
    )
    _check_range(
        HISTORY_FILE,
        "domain",
        history["domain"],
        0,
        len(schema.domains),
        f"the domains {list(schema.domains)}",
    )
    user_down = np.concatenate([[False], user[1:] < user[:-1]])
    _refuse_first(
        HISTORY_FILE,
        "user_id",
        user,
        user_down,
        "breaks the (user_id, ts) order: it follows a larger user_id",
    )
    ts_down = np.concatenate([[False], (user[1:] == user[:-1]) & (ts[1:] < ts[:-1])])
    _refuse_first(
        HISTORY_FILE,
        "ts",
        ts,
        ts_down,
        "breaks the (user_id, ts) order: it follows a later ts of the same user",
    )


def _validate_visibility(schema: Schema, rows: dict[str, np.ndarray], history: dict[str, np.ndarray]) -> None:
    """``hist_end`` must count existing events, all of which happened strictly before the impression."""
    counts = np.bincount(history["user_id"], minlength=schema.feature("user_id").vocab)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    user, hist_end = rows["user_id"], rows["hist_end"]
    available = counts[user]
    too_many = hist_end > available
    if too_many.any():
        row = int(np.argmax(too_many))
        raise DatasetError(
            ROWS_FILE,
            f"value {hist_end[row]} exceeds the {available[row]} history events of user {user[row]}",
            column="hist_end",
            row=row,
        )
    seen = hist_end > 0
    last_ts = np.full(hist_end.shape, np.iinfo(np.int64).min)
    last_ts[seen] = history["ts"][offsets[user[seen]] + hist_end[seen] - 1]
    leak = seen & (last_ts >= rows["ts"])
    if leak.any():
        row = int(np.argmax(leak))
        raise DatasetError(
            ROWS_FILE,
            f"value {hist_end[row]} makes visible a history event at ts {last_ts[row]}, not before the "
            f"impression's ts {rows['ts'][row]}",
            column="hist_end",
            row=row,
        )


def validate_columns(schema: Schema, rows: dict[str, np.ndarray], history: dict[str, np.ndarray]) -> None:
    """Refuse (DatasetError) int64 row/history columns that break the data contract."""
    _validate_rows(schema, rows)
    _validate_history(schema, history)
    _validate_visibility(schema, rows, history)


def _to_disk_dtypes(columns: dict[str, np.ndarray], dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """Cast validated int64 columns to their on-disk dtypes (exact after the range checks)."""
    return {name: columns[name].astype(dtype, copy=False) for name, dtype in dtypes.items()}


def _validate_click_prob(row: np.ndarray, click_prob: np.ndarray, n_rows: int) -> None:
    """Refuse oracle rows that are not strictly ascending positions of ``rows.parquet``, and
    probabilities outside [0, 1] (NaN included)."""
    if row.shape != click_prob.shape or row.ndim != 1:
        raise DatasetError(ORACLE_FILE, f"row and click_prob must be 1-d of one length, got {row.shape} and "
                                        f"{click_prob.shape}")
    _check_range(ORACLE_FILE, "row", row, 0, n_rows, f"the {n_rows} rows of {ROWS_FILE}")
    _refuse_first(ORACLE_FILE, "row", row, np.concatenate([[False], row[1:] <= row[:-1]]),
                  "is not above the row before it (rows must be strictly ascending)")
    _refuse_first(ORACLE_FILE, "click_prob", click_prob, ~((click_prob >= 0.0) & (click_prob <= 1.0)),
                  "is not a probability in [0, 1]")


def _oracle_table(click_prob: np.ndarray | None, n_rows: int, order: np.ndarray | None) -> pa.Table | None:
    """``oracle.parquet`` of a per-row ``click_prob`` ``[n_rows]`` (NaN: unknown); None if none is known."""
    if click_prob is None:
        return None
    prob = np.asarray(click_prob, dtype=np.float64)
    if prob.shape != (n_rows,):
        raise DatasetError(ORACLE_FILE, f"click_prob has shape {prob.shape}, the rows are {n_rows}", column="click_prob")
    if order is not None:
        prob = prob[order]
    row = np.flatnonzero(~np.isnan(prob)).astype(np.int64)
    if row.size == 0:
        return None
    _validate_click_prob(row, prob[row], n_rows)
    return pa.table({"row": row, "click_prob": prob[row]})


# --- writing -----------------------------------------------------------------------------------


def _write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def _rows_order(rows: dict[str, np.ndarray]) -> np.ndarray | None:
    """Permutation sorting rows by ``(period, domain, ts)``; None when they already are."""
    keys = (rows["period"], rows["domain"], rows["ts"])
    previous_equal = np.ones(keys[0].shape[0] - 1, dtype=bool)
    for key in keys:
        if np.any(previous_equal & (key[1:] < key[:-1])):
            return np.lexsort(keys[::-1])
        previous_equal &= key[1:] == key[:-1]
    return None


def content_digests(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """The sha256 of each data file ``names`` of ``folder`` (paths relative to it), for ``meta.yaml``'s
    ``content``: computed once, as the dataset is written."""
    return {name: file_sha256(Path(folder) / name) for name in sorted(names)}


def meta_yaml(schema: Schema, n_rows: int, n_events: int, provenance: dict, content: dict[str, str]) -> str:
    """The text of a dataset's ``meta.yaml``; ``content``: :func:`content_digests` of its data files."""
    meta = {
        "format_version": FORMAT_VERSION,
        "n_rows": int(n_rows),
        "n_events": int(n_events),
        "schema": schema.to_dict(),
        "provenance": provenance,
        "content": content,
    }
    return yaml.safe_dump(meta, sort_keys=False)


def write_dataset(
    path: Path | str,
    schema: Schema,
    rows: dict[str, np.ndarray],
    history: dict[str, np.ndarray],
    provenance: dict,
    validate: bool = True,
    click_prob: np.ndarray | None = None,
) -> Path:
    """Write a dataset folder atomically and return its path.

    Rows are stored sorted by ``(period, domain, ts)`` (stable: the given order is kept when it
    already is). The history must already be sorted by ``(user_id, ts)``, since ``hist_end``
    counts positions in that order. Files are written into a temporary sibling folder, fsynced,
    then the folder is renamed to ``path``: a crash never leaves a half dataset at ``path``.

    Args:
        path: destination folder; it must not exist (``FileExistsError``, also if another writer
            creates it meanwhile).
        rows: ``rows.parquet`` columns, int arrays ``[n_rows]`` (any exact integer type).
        history: ``history.parquet`` columns, int arrays ``[n_events]``.
        provenance: plain YAML-serialisable description of how the data was made.
        validate: run the load-time validation first (off only to write deliberately broken data).
        click_prob: float ``[n_rows]``, the true click probability of each row as given (NaN where
            unknown), written to ``oracle.parquet`` for the known rows; None (or all NaN): no file.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: a dataset (or file) already exists there")
    row_types, history_types = row_dtypes(schema), history_dtypes()
    rows64 = _normalise(ROWS_FILE, rows, row_types)
    history64 = _normalise(HISTORY_FILE, history, history_types)
    if validate:
        validate_columns(schema, rows64, history64)
    order = _rows_order(rows64) if rows64["label"].shape[0] > 1 else None
    if order is not None:
        rows64 = {name: values[order] for name, values in rows64.items()}
    oracle_table = _oracle_table(click_prob, rows64["label"].shape[0], order)
    rows_table = pa.table(_to_disk_dtypes(rows64, row_types))
    history_table = pa.table(_to_disk_dtypes(history64, history_types))

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _write_synced(
            staging / ROWS_FILE, lambda f: pq.write_table(rows_table, f, row_group_size=ROW_GROUP_SIZE)
        )
        _write_synced(
            staging / HISTORY_FILE, lambda f: pq.write_table(history_table, f, row_group_size=ROW_GROUP_SIZE)
        )
        if oracle_table is not None:
            _write_synced(staging / ORACLE_FILE, lambda f: pq.write_table(oracle_table, f))
        # meta.yaml last: a folder holding it has both data files complete.
        meta_text = meta_yaml(schema, rows_table.num_rows, history_table.num_rows, provenance,
                              content_digests(staging, [ROWS_FILE, HISTORY_FILE]))
        _write_synced(staging / META_FILE, lambda f: f.write(meta_text.encode()))
        fsync_path(staging)
        rename_into_place(staging, path, "another writer")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def add_click_prob(path: Path | str, click_prob: np.ndarray) -> Path:
    """Add ``oracle.parquet`` to the existing dataset ``path`` (atomically: a temporary file renamed).

    ``click_prob``: float ``[n_rows]`` in the stored row order, NaN where unknown. The other files
    are left as they are, so the dataset keeps its fingerprint.
    """
    folder = Path(path)
    meta, _ = read_meta(folder)
    table = _oracle_table(click_prob, int(meta["n_rows"]), None)
    if table is None:
        raise DatasetError(ORACLE_FILE, "click_prob knows no row: nothing to write")
    staging = folder / f".{ORACLE_FILE}.partial-{uuid.uuid4().hex[:8]}"
    try:
        _write_synced(staging, lambda f: pq.write_table(table, f))
        os.replace(staging, folder / ORACLE_FILE)
        fsync_path(folder)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return folder / ORACLE_FILE


def load_click_prob(path: Path | str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(row, click_prob)`` of the dataset's ``oracle.parquet`` (int64 and float64 ``[K]``, rows
    ascending), validated; None when the dataset has no such file."""
    folder = Path(path)
    if not (folder / ORACLE_FILE).is_file():
        return None
    meta, _ = read_meta(folder)
    columns = _read_columns(folder, ORACLE_FILE, ORACLE_COLUMNS)
    row = _exact_int64(ORACLE_FILE, "row", columns["row"])
    click_prob = columns["click_prob"].astype(np.float64, copy=False)
    _validate_click_prob(row, click_prob, int(meta["n_rows"]))
    return row, click_prob


# --- loading -----------------------------------------------------------------------------------


def part_files(folder: Path, file: str) -> list[Path]:
    """The Parquet files holding ``file`` (``rows.parquet``) of a dataset: the file itself, or the
    part files of the folder of its stem (``rows/``, as Spark and DuckDB write it), in name order.

    In a folder, files whose names start with ``_`` or ``.`` (``_SUCCESS``, ``.crc`` checksums)
    and files not ending in ``.parquet`` are skipped.
    """
    single, parts = folder / file, folder / Path(file).stem
    if single.is_file():
        return [single]
    if parts.is_dir():
        found = sorted(p for p in parts.iterdir()
                       if p.is_file() and p.suffix == ".parquet" and not p.name.startswith(("_", ".")))
        if not found:
            raise DatasetError(f"{parts.name}/", f"holds no .parquet part files (in {folder})")
        return found
    raise DatasetError(file, f"missing from the dataset folder {folder} (nor is there a folder {parts.name}/ of "
                             "part files)")


def read_parquet_parts(folder: Path, file: str, columns: Sequence[str]) -> pa.Table:
    """``columns`` of ``file`` (a single file or its part files, concatenated in order)."""
    tables = []
    for path in part_files(folder, file):
        name = file if path.name == file else f"{path.parent.name}/{path.name}"
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(name, f"not a readable Parquet file ({exc})") from exc
        missing = [column for column in columns if column not in names]
        if missing:
            raise DatasetError(name, f"missing (the file has {names})", column=missing[0])
        tables.append(pq.read_table(path, columns=list(columns)))
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


def _read_columns(folder: Path, file: str, dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """Read the expected columns of one Parquet file (or its part files), refusing missing columns and nulls."""
    table = read_parquet_parts(folder, file, list(dtypes))
    columns = {}
    for name in dtypes:
        column = table.column(name)
        if column.null_count:
            first = int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
            raise DatasetError(file, "value null is missing", column=name, row=first)
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DatasetError(file, f"dtype {kind} is not an integer type", column=name)
        # A writable copy: Arrow's zero-copy views are read-only, which torch.from_numpy refuses to share.
        columns[name] = np.array(column.to_numpy(), copy=True)
    return columns


def read_meta(folder: Path) -> tuple[dict, Schema]:
    target = folder / META_FILE
    if not folder.is_dir():
        raise DatasetError(META_FILE, f"the dataset folder {folder} does not exist")
    if not target.is_file():
        raise DatasetError(META_FILE, f"missing from the dataset folder {folder}")
    try:
        meta = yaml.safe_load(target.read_text())
    except yaml.YAMLError as exc:
        raise DatasetError(META_FILE, f"not valid YAML ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(META_FILE, "must be a mapping")
    for key in ("format_version", "schema", "n_rows", "n_events"):
        if key not in meta:
            raise DatasetError(META_FILE, f"key {key!r} is missing")
    if meta["format_version"] != FORMAT_VERSION:
        raise DatasetError(
            META_FILE, f"format_version {meta['format_version']} is not the supported {FORMAT_VERSION}"
        )
    try:
        schema = Schema.from_dict(meta["schema"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(META_FILE, f"invalid schema: {exc}") from exc
    return meta, schema


@dataclass
class Dataset:
    """A loaded dataset: row columns (numpy, on-disk dtypes ``[n_rows]``) and the users' histories."""

    path: Path
    schema: Schema
    meta: dict
    rows: dict[str, np.ndarray]
    history: UserHistory

    @property
    def n_rows(self) -> int:
        return int(self.rows["label"].shape[0])

    def select(self, domains: Sequence[str] | None, periods: Sequence[int] | None) -> np.ndarray:
        """Ascending int64 indices of the rows in ``domains`` and ``periods`` (None = all)."""
        keep = np.ones(self.n_rows, dtype=bool)
        if domains is not None:
            wanted = [self.schema.domain_index(d) for d in domains]
            keep &= np.isin(self.rows["domain"], wanted)
        if periods is not None:
            outside = [p for p in periods if not 0 <= int(p) <= self.schema.test_period]
            if outside:
                raise ValueError(
                    f"periods {outside} lie outside the layout [0, {self.schema.test_period}] of {self.path}"
                )
            keep &= np.isin(self.rows["period"], [int(p) for p in periods])
        return np.flatnonzero(keep).astype(np.int64)

    def fingerprint(self) -> str:
        """Short hash of ``meta.yaml`` (schema, provenance, sizes and the data files' digests), for
        cache keys: two datasets with other contents have other fingerprints."""
        return fingerprint_of(self.meta)


def fingerprint_of(meta: dict) -> str:
    """:meth:`Dataset.fingerprint` of a dataset whose ``meta.yaml`` holds ``meta``.

    The meta holds the sha256 of every data file (``content``, computed once as the dataset was
    written), so the fingerprint follows the data, not only its description; a dataset written
    before ``content`` existed is known by its meta alone.
    """
    text = yaml.safe_dump(meta, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_fingerprint(path: Path | str) -> str:
    """The fingerprint of the dataset folder ``path``, from its ``meta.yaml`` alone."""
    meta, _ = read_meta(Path(path))
    return fingerprint_of(meta)


def load_dataset(path: Path | str, validate: bool = True) -> Dataset:
    """Read and (by default) validate a dataset folder; refuse problems with :class:`DatasetError`.

    With ``validate=False`` only the structure (files, columns, nulls, integer dtypes, sizes) is
    checked; value ranges, order and visibility are trusted.
    """
    folder = Path(path)
    meta, schema = read_meta(folder)
    row_types, history_types = row_dtypes(schema), history_dtypes()
    rows = _normalise(ROWS_FILE, _read_columns(folder, ROWS_FILE, row_types), row_types)
    history = _normalise(HISTORY_FILE, _read_columns(folder, HISTORY_FILE, history_types), history_types)
    n_rows, n_events = rows["label"].shape[0], history["user_id"].shape[0]
    if meta["n_rows"] != n_rows:
        raise DatasetError(META_FILE, f"n_rows is {meta['n_rows']} but {ROWS_FILE} has {n_rows} rows")
    if meta["n_events"] != n_events:
        raise DatasetError(
            META_FILE, f"n_events is {meta['n_events']} but {HISTORY_FILE} has {n_events} rows"
        )
    if validate:
        validate_columns(schema, rows, history)
        load_click_prob(folder)
    elif n_rows == 0:
        raise DatasetError(ROWS_FILE, "the dataset has no rows")
    from ctl.data.history import UserHistory

    user_history = UserHistory.from_columns(
        history, n_users=schema.feature("user_id").vocab, n_domains=len(schema.domains)
    )
    return Dataset(
        path=folder,
        schema=schema,
        meta=meta,
        rows=_to_disk_dtypes(rows, row_types),
        history=user_history,
    )
