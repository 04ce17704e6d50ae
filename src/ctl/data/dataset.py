"""A loaded dataset: its rows in memory and its users' histories (:class:`Dataset`, :func:`load_dataset`).

The folder's format is :mod:`ctl.data.layout`; loading validates everything
(:mod:`ctl.data.validation`) and refuses the first problem with a :class:`DatasetError`. The names
of the dataset modules a caller needs are importable from here too.

Example::

    path = write_dataset(out_dir, schema, rows, history, provenance={"generator": "synthetic"})
    ds = load_dataset(path)
    train_rows = ds.select(domains=["B"], periods=[ds.schema.t0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ctl.data.layout import (
    HISTORY_FILE,
    META_FILE,
    ORACLE_FILE,
    ROWS_FILE,
    DatasetError,
    content_digests,
    fingerprint_of,
    history_dtypes,
    meta_yaml,
    read_fingerprint,
    read_meta,
    row_dtypes,
)
from ctl.data.oracle import add_click_prob, load_click_prob
from ctl.data.parts import read_columns
from ctl.data.schema import Schema
from ctl.data.validation import normalise_columns, to_disk_dtypes, validate_columns
from ctl.data.writing import write_dataset

if TYPE_CHECKING:  # torch is imported by loading, not by writing (the importer runs without it)
    from ctl.data.history import UserHistory

__all__ = [
    "HISTORY_FILE",
    "META_FILE",
    "ORACLE_FILE",
    "ROWS_FILE",
    "Dataset",
    "DatasetError",
    "add_click_prob",
    "content_digests",
    "load_click_prob",
    "load_dataset",
    "meta_yaml",
    "read_fingerprint",
    "read_meta",
    "write_dataset",
]

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


def load_dataset(path: Path | str, validate: bool = True) -> Dataset:
    """Read and (by default) validate a dataset folder; refuse problems with :class:`DatasetError`.

    With ``validate=False`` only the structure (files, columns, nulls, integer dtypes, sizes) is
    checked; value ranges, order and visibility are trusted.
    """
    folder = Path(path)
    meta, schema = read_meta(folder)
    row_types, history_types = row_dtypes(schema), history_dtypes()
    rows = normalise_columns(ROWS_FILE, read_columns(folder, ROWS_FILE, row_types), row_types)
    history = normalise_columns(HISTORY_FILE, read_columns(folder, HISTORY_FILE, history_types), history_types)
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
        rows=to_disk_dtypes(rows, row_types),
        history=user_history,
    )
