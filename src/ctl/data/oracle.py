"""``oracle.parquet``: the true click probability of some rows of a dataset, which only a simulator
knows; the synthetic world keeps it for its test slice. It is evaluation data, never a feature:
:func:`~ctl.data.dataset.load_dataset` validates it but leaves it out of the dataset, and
:func:`load_click_prob` reads it for ``ctl eval``'s oracle row. Imported datasets have none.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctl.data.layout import ORACLE_COLUMNS, ORACLE_FILE, DatasetError, read_meta
from ctl.data.parts import read_columns
from ctl.data.validation import exact_int64, validate_click_prob
from ctl.io import fsync_path, write_synced


def oracle_table(click_prob: np.ndarray | None, n_rows: int, order: np.ndarray | None) -> pa.Table | None:
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
    validate_click_prob(row, prob[row], n_rows)
    return pa.table({"row": row, "click_prob": prob[row]})


def add_click_prob(path: Path | str, click_prob: np.ndarray) -> Path:
    """Add ``oracle.parquet`` to the existing dataset ``path`` (atomically: a temporary file renamed).

    ``click_prob``: float ``[n_rows]`` in the stored row order, NaN where unknown. The other files
    are left as they are, so the dataset keeps its fingerprint.
    """
    folder = Path(path)
    meta, _ = read_meta(folder)
    table = oracle_table(click_prob, int(meta["n_rows"]), None)
    if table is None:
        raise DatasetError(ORACLE_FILE, "click_prob knows no row: nothing to write")
    staging = folder / f".{ORACLE_FILE}.partial-{uuid.uuid4().hex[:8]}"
    try:
        write_synced(staging, lambda f: pq.write_table(table, f))
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
    columns = read_columns(folder, ORACLE_FILE, ORACLE_COLUMNS)
    row = exact_int64(ORACLE_FILE, "row", columns["row"])
    click_prob = columns["click_prob"].astype(np.float64, copy=False)
    validate_click_prob(row, click_prob, int(meta["n_rows"]))
    return row, click_prob
