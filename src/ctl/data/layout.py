"""The on-disk dataset: one folder of ``meta.yaml``, ``rows.parquet`` and ``history.parquet``.

``meta.yaml`` holds ``schema`` (:meth:`Schema.to_dict`), ``provenance`` (free-form, how the data
was made), ``format_version``, ``n_rows``, ``n_events`` and ``content`` (the sha256 of each data
file, so the fingerprint follows the data). ``rows.parquet`` has every schema
feature as int64 plus :data:`ROW_COLUMNS`; ``history.parquet`` has :data:`HISTORY_COLUMNS`, sorted
by ``(user_id, ts)``. Either may instead be a folder of part files (``rows/``, :mod:`ctl.data.parts`).

A dataset may also hold ``oracle.parquet`` (:data:`ORACLE_FILE`): the true click probability
``click_prob`` of some rows (by ``row``, their position in ``rows.parquet``), which only a
simulator knows (:mod:`ctl.data.oracle`). It is not part of ``meta.yaml``, so a dataset's
fingerprint does not depend on it.

This module names the files, their dtypes and the meta; :mod:`ctl.data.validation` checks the
columns, :mod:`ctl.data.writing` writes a folder and :mod:`ctl.data.dataset` loads one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from ctl.data.schema import HISTORY_COLUMNS, ROW_COLUMNS, Schema
from ctl.io import file_sha256

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
