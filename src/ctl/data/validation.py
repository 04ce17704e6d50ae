"""The checks of a dataset's columns, vectorised: the first problem is refused with a
:class:`~ctl.data.layout.DatasetError` naming the file, column, first offending row (0-based, in that
file) and value. Nothing is dropped or repaired silently; the only conversion allowed is an exact
one (e.g. a float column holding integral values, or a wider integer type).
"""

from __future__ import annotations

import numpy as np

from ctl.data.layout import HISTORY_FILE, ORACLE_FILE, ROWS_FILE, DatasetError
from ctl.data.schema import Schema


def _refuse_first(file: str, column: str, values: np.ndarray, bad: np.ndarray, reason: str) -> None:
    """Raise for the first True of ``bad``; ``reason`` follows ``value <v>``."""
    if bad.any():
        row = int(np.argmax(bad))
        raise DatasetError(file, f"value {values[row]} {reason}", column=column, row=row)


def exact_int64(file: str, column: str, values: np.ndarray) -> np.ndarray:
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


def normalise_columns(
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
        out[name] = exact_int64(file, name, values)
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


def to_disk_dtypes(columns: dict[str, np.ndarray], dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """Cast validated int64 columns to their on-disk dtypes (exact after the range checks)."""
    return {name: columns[name].astype(dtype, copy=False) for name, dtype in dtypes.items()}


def validate_click_prob(row: np.ndarray, click_prob: np.ndarray, n_rows: int) -> None:
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
