"""An item's attribute values as of a time, in SQL: never from a record that came later.

A sampled negative takes its item's ``of: item`` features, and an event of an explicit sequence
its item's category. Both are looked up as of a time: the item's latest record at or before it
(the last record of that second when several share it). An item whose first record comes later
takes its first record's values: it is in the pool of the period, so it exists then, and a
missing (0) value would mark the row as sampled.
"""

from __future__ import annotations

import duckdb


def create_item_values(con: duckdb.DuckDBPyConnection, item: str, columns: list[str], name: str) -> None:
    """Create ``<name>_at`` (``item_id``, ``ts`` and ``columns``: an item's values at each second it
    has records) and ``<name>_first`` (``item_id`` and its values at its first second), from
    ``encoded``."""
    values = ", ".join(f"arg_max({c}, seq) AS {c}" for c in columns)
    con.execute(f"CREATE TABLE {name}_at AS SELECT {item} AS item_id, ts, {values} FROM encoded GROUP BY ALL")
    firsts = ", ".join(f"arg_min({c}, ts) AS {c}" for c in columns)
    con.execute(f"CREATE TABLE {name}_first AS SELECT item_id, {firsts} FROM {name}_at GROUP BY item_id")


def item_values_joins(name: str, item: str, ts: str, alias: str) -> str:
    """The joins (after a FROM) that look up the values of the item ``item`` as of ``ts`` (SQL
    expressions of the tables before them); :func:`item_value` reads one value from them."""
    return (f"ASOF LEFT JOIN {name}_at {alias} ON {alias}.item_id = {item} AND {ts} >= {alias}.ts "
            f"LEFT JOIN {name}_first {alias}_first ON {alias}_first.item_id = {item}")


def item_value(column: str, alias: str) -> str:
    """One value of :func:`item_values_joins` (null for an item with no record at all)."""
    return f"CASE WHEN {alias}.item_id IS NOT NULL THEN {alias}.{column} ELSE {alias}_first.{column} END"
