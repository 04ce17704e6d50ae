"""Writing a dataset folder atomically (the format of :mod:`ctl.data.layout`).

Example::

    path = write_dataset(out_dir, schema, rows, history, provenance={"generator": "synthetic"})
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctl.data.layout import (
    HISTORY_FILE,
    META_FILE,
    ORACLE_FILE,
    ROW_GROUP_SIZE,
    ROWS_FILE,
    content_digests,
    history_dtypes,
    meta_yaml,
    row_dtypes,
)
from ctl.data.oracle import oracle_table
from ctl.data.schema import Schema
from ctl.data.validation import normalise_columns, to_disk_dtypes, validate_columns
from ctl.io import fsync_path, rename_into_place, write_synced


def _rows_order(rows: dict[str, np.ndarray]) -> np.ndarray | None:
    """Permutation sorting rows by ``(period, domain, ts)``; None when they already are."""
    keys = (rows["period"], rows["domain"], rows["ts"])
    previous_equal = np.ones(keys[0].shape[0] - 1, dtype=bool)
    for key in keys:
        if np.any(previous_equal & (key[1:] < key[:-1])):
            return np.lexsort(keys[::-1])
        previous_equal &= key[1:] == key[:-1]
    return None


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
    rows64 = normalise_columns(ROWS_FILE, rows, row_types)
    history64 = normalise_columns(HISTORY_FILE, history, history_types)
    if validate:
        validate_columns(schema, rows64, history64)
    order = _rows_order(rows64) if rows64["label"].shape[0] > 1 else None
    if order is not None:
        rows64 = {name: values[order] for name, values in rows64.items()}
    oracle = oracle_table(click_prob, rows64["label"].shape[0], order)
    rows_table = pa.table(to_disk_dtypes(rows64, row_types))
    history_table = pa.table(to_disk_dtypes(history64, history_types))

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        write_synced(
            staging / ROWS_FILE, lambda f: pq.write_table(rows_table, f, row_group_size=ROW_GROUP_SIZE)
        )
        write_synced(
            staging / HISTORY_FILE, lambda f: pq.write_table(history_table, f, row_group_size=ROW_GROUP_SIZE)
        )
        if oracle is not None:
            write_synced(staging / ORACLE_FILE, lambda f: pq.write_table(oracle, f))
        # meta.yaml last: a folder holding it has both data files complete.
        meta_text = meta_yaml(schema, rows_table.num_rows, history_table.num_rows, provenance,
                              content_digests(staging, [ROWS_FILE, HISTORY_FILE]))
        write_synced(staging / META_FILE, lambda f: f.write(meta_text.encode()))
        fsync_path(staging)
        rename_into_place(staging, path, "another writer")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path
