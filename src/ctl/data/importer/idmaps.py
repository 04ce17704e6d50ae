"""Id maps in SQL: raw text -> id, one table ``map_<i>`` (``raw``, ``id``) per dense or hashed feature.

Dense ids run ``1..n`` in order of first appearance (0 = absent). A value's first appearance is its
first record (``seq``), the record's own column before the items of its explicit sequence
(``seq_items``, in list order); a fixed ``vocab`` the data outgrows is refused at the record that
brought the first value beyond it. Hashed ids are :func:`~ctl.data.importer.encoders.hashed_ids`
of each distinct value.
"""

from __future__ import annotations

import duckdb

from ctl.data.importer.encoders import HASH_FUNCTION
from ctl.data.importer.engine import one_row
from ctl.data.importer.errors import InputError
from ctl.data.importer.records import staged_name
from ctl.data.importer.spec import ImportSpec

#: ``first`` = seq * SLOTS + slot: slot 0 is the record's column, 1 + pos its list's item ``pos``
SLOTS = 1 << 32


def map_table(index: int) -> str:
    return f"map_{index}"


def number_ids(con: duckdb.DuckDBPyConnection, spec: ImportSpec, locate, extra_items: str | None = None
               ) -> dict[str, int]:
    """Build ``map_<i>`` for every dense and hashed feature; returns each dense one's size (distinct values).

    ``locate(seq)`` gives ``(file, where)`` of a record, for the refusal of an outgrown vocab;
    ``extra_items``: SQL of more items (``raw``, ``first``) numbered with the records' (behaviour logs).
    """
    sizes = {}
    for i, feature in enumerate(spec.features):
        if not feature.mapped:
            continue
        column = staged_name(i)
        sources = [f"SELECT {column} AS raw, seq::HUGEINT * {SLOTS} AS first FROM records WHERE {column} IS NOT NULL"]
        if feature.name == "item_id" and spec.sequences.column is not None:
            sources.append(f"SELECT raw, seq::HUGEINT * {SLOTS} + 1 + pos AS first FROM seq_items")
        if feature.name == "item_id" and extra_items is not None:
            sources.append(extra_items)
        if not feature.dense:
            con.execute(f"""CREATE TABLE {map_table(i)} AS SELECT raw, {HASH_FUNCTION}(raw, {feature.hash_buckets})::INTEGER AS id
                            FROM (SELECT DISTINCT raw FROM ({' UNION ALL '.join(sources)}))""")
            continue
        con.execute(f"""
            CREATE TABLE {map_table(i)} AS
            SELECT raw, row_number() OVER (ORDER BY first)::INTEGER AS id, first
            FROM (SELECT raw, min(first) AS first FROM ({' UNION ALL '.join(sources)}) GROUP BY raw)""")
        sizes[feature.name] = one_row(con, f"SELECT count(*) FROM {map_table(i)}")[0]
        if feature.vocab is not None and sizes[feature.name] > feature.vocab - 1:
            # ids are 1..size, and size >= vocab here
            raw, first = one_row(con, f"SELECT raw, first FROM {map_table(i)} WHERE id = ?", [feature.vocab])
            file, where = locate(int(first // SLOTS))
            if first % SLOTS == 0:
                raise InputError(file, f"value {raw!r} is distinct value {feature.vocab} of feature {feature.name!r}, "
                                       f"beyond its vocab {feature.vocab} (ids 1..{feature.vocab - 1}); raise vocab, "
                                       "set vocab: auto or use hash_buckets", where=where, column=feature.column)
            raise InputError(file, f"item {raw!r} would exceed vocab {feature.vocab} of item_id; raise it or set "
                                   "vocab: auto", where=where, column=spec.sequences.column)
    return sizes
