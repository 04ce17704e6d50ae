"""Behaviour histories of imported data and each row's ``hist_end``, in SQL.

Two sources (behaviour logs, :mod:`ctl.data.importer.behaviour_logs`, add their events to the first):

* events: chosen records become the users' behaviour events, time-ordered across all domains; a
  row sees the events of its user strictly before its time;
* an explicit sequence column: each record lists the items its user acted on before it. The
  record's list becomes a block of events one time unit before the record (identical blocks of a
  user at one time are kept once), and the row sees the history up to the end of its own block,
  so the last events of its long sequence are exactly its list. Rows without a list see the
  blocks strictly before their time. An event's category is its item's as of the event's time
  (:mod:`ctl.data.importer.asof`).

:func:`build_history` creates ``history`` (its events, written sorted by ``(user_id, ts, seq,
pos)``: ties in input order) and ``visible`` (``seq``, ``hist_end`` of every shown record) from
the ``encoded`` records.
"""

from __future__ import annotations

import duckdb

from ctl.data.importer.asof import create_item_values, item_value, item_values_joins
from ctl.data.importer.behaviour_logs import add_behaviour_events
from ctl.data.importer.spec import ImportSpec

#: ``history`` columns in the order ``history.parquet`` stores them, and the sort that orders them
HISTORY_ORDER = "user_id, ts, seq, pos"


def _strictly_before(user: str) -> str:
    """Per shown record: how many of its user's events lie strictly before its ``ts``.

    Records and events in one window per user, ordered by time with records first on ties: a
    running count of events stops just before the record's own second.
    """
    return f"""
        SELECT seq, hist_end::INTEGER AS hist_end FROM (
            SELECT seq, is_event, sum(is_event) OVER (PARTITION BY user_id ORDER BY ts, is_event
                                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS hist_end
            FROM (SELECT {user} AS user_id, ts, 0 AS is_event, seq FROM encoded WHERE period >= 0
                  UNION ALL SELECT user_id, ts, 1, NULL FROM history))
        WHERE is_event = 0"""


def build_history(con: duckdb.DuckDBPyConnection, spec: ImportSpec, column: dict[str, str], item_map: str) -> None:
    """Create ``history`` and ``visible``; ``column[name]`` is a feature's id column in ``encoded``,
    ``item_map`` the item id map's table (dense or hashed)."""
    user, item, category = column["user_id"], column["item_id"], column["category_id"]
    if spec.sequences.column is None:
        chosen = "TRUE" if spec.implicit or spec.sequences.events.value == "all" else "label = 1"
        con.execute(f"""CREATE TABLE history AS SELECT {user} AS user_id, {item} AS item_id, {category} AS category_id,
                        domain, ts, seq, 0 AS pos FROM encoded WHERE {chosen}""")
        if spec.behaviour_logs is not None:
            add_behaviour_events(con, spec, column, item_map)
        con.execute(f"CREATE TABLE visible AS {_strictly_before(user)}")
        return
    create_item_values(con, item, [category], "item_category")  # an event's category as of its time
    # one block per distinct (user, ts, list), represented by its first record; list_end: where it ends
    con.execute(f"""
        CREATE TABLE blocks AS
        SELECT user_id, ts, seq_key, head,
               sum(n) OVER (PARTITION BY user_id ORDER BY ts, head ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                   AS list_end
        FROM (SELECT {user} AS user_id, ts, seq_key, min(seq) AS head, arg_min(seq_count, seq) AS n
              FROM encoded WHERE seq_count > 0 GROUP BY ALL)""")
    con.execute(f"""
        CREATE TABLE history AS
        SELECT b.user_id, m.id AS item_id, coalesce({item_value(category, 'c')}, 0) AS category_id, e.domain,
               b.ts - 1 AS ts, b.head AS seq, s.pos
        FROM blocks b JOIN encoded e ON e.seq = b.head JOIN seq_items s ON s.seq = b.head
        JOIN {item_map} m ON m.raw = s.raw {item_values_joins("item_category", "m.id", "b.ts - 1", "c")}""")
    con.execute(f"""
        CREATE TABLE visible AS
        SELECT w.seq, coalesce(b.list_end, w.hist_end) AS hist_end
        FROM ({_strictly_before(user)}) w JOIN encoded e ON e.seq = w.seq
        LEFT JOIN blocks b ON e.seq_count > 0 AND b.user_id = e.{user} AND b.ts = e.ts AND b.seq_key = e.seq_key""")
