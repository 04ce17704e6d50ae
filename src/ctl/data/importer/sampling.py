"""Negative sampling for implicit feedback, in SQL: unclicked items of the same domain and period.

Each positive gets ``per_positive`` items drawn uniformly (with replacement) from the distinct
items of its cell (its domain and period), redrawing any item the user has touched:

* ``past`` (the default): an item the user has a record with at or before the positive's time.
  A negative is what the user had not done yet, so an item first clicked in a later period may be
  a negative earlier, and the negatives of a period never depend on later logs (an append of new
  logs keeps every stored negative);
* ``all``: an item the user has a record with at any time, later ones included. Some papers
  sample this way; it leaks the future (the user's later clicks shape the earlier negatives), and
  new logs change the negatives of the stored periods.

A draw that still hits one of the user's items after :data:`MAX_ROUNDS` rounds (the user has
touched most of a tiny pool) is left out and counted, never silently.

The random numbers are counter-based: draw ``j`` of the positive ``seq`` in round ``r`` hashes
``(seed, seq, j, r)`` with ``mix32`` (:mod:`ctl.data.importer.engine`), so the negatives depend on
the records and the seed only, never on threads, memory or the order SQL visits rows in.
"""

from __future__ import annotations

import duckdb

from ctl.data.importer.engine import one_row

MAX_ROUNDS = 32
#: ``label.exclude`` values: which of a user's items are never their negatives
EXCLUDE_RULES = ("past", "all")


def _seed_hash(seed: int) -> int:
    """``mix32(seed mod 2**32)`` (Wellons' lowbias32), computed here once for every draw."""
    x = seed & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def sample_negatives(con: duckdb.DuckDBPyConnection, user: str, item: str, per_positive: int,
                     seed: int, exclude: str = "past") -> tuple[int, int]:
    """Create ``drawn`` (``seq``, ``j``, ``item_id``): negative ``j`` of every shown positive ``seq``.

    ``user``/``item`` name the id columns of ``encoded``; ``exclude`` (:data:`EXCLUDE_RULES`) says
    which of the user's items are never their negatives. Returns the negatives drawn and the draws
    given up.
    """
    if exclude not in EXCLUDE_RULES:
        raise ValueError(f"exclude must be one of {EXCLUDE_RULES}, got {exclude!r}")
    con.execute(f"""CREATE TABLE pool AS
                    SELECT domain, period, item_id, row_number() OVER (PARTITION BY domain, period ORDER BY item_id) - 1 AS k
                    FROM (SELECT DISTINCT domain, period, {item} AS item_id FROM encoded WHERE period >= 0)""")
    con.execute("CREATE TABLE cells AS SELECT domain, period, count(*) AS size FROM pool GROUP BY ALL")
    # first: when the user first touched the item; "past" excludes it from that second on
    con.execute(f"CREATE TABLE seen AS SELECT {user} AS user_id, {item} AS item_id, min(ts) AS first "
                "FROM encoded GROUP BY ALL")
    touched = ("s.user_id = c.user_id AND s.item_id = c.item_id"
               + (" AND s.first <= c.ts" if exclude == "past" else ""))
    con.execute(f"""CREATE TABLE pending AS
                    SELECT e.seq, j.range::INTEGER AS j, e.{user} AS user_id, e.domain, e.period, e.ts
                    FROM encoded e CROSS JOIN range({per_positive}) j WHERE e.period >= 0""")
    con.execute("CREATE TABLE drawn (seq BIGINT, j INTEGER, item_id BIGINT)")
    base = _seed_hash(seed)
    for round_ in range(MAX_ROUNDS):
        counter = f"(seq * {per_positive * MAX_ROUNDS} + j * {MAX_ROUNDS} + {round_})"
        con.execute(f"""
            CREATE OR REPLACE TABLE candidate AS
            SELECT p.seq, p.j, p.user_id, p.ts, pool.item_id
            FROM (SELECT p.*, (p.u * c.size) >> 32 AS k
                  FROM (SELECT *, mix32(xor(h, {counter} >> 32)) AS u
                        FROM (SELECT *, mix32(xor({base}, {counter} & 4294967295)) AS h FROM pending)) p
                  JOIN cells c ON c.domain = p.domain AND c.period = p.period) p
            JOIN pool ON pool.domain = p.domain AND pool.period = p.period AND pool.k = p.k""")
        con.execute(f"INSERT INTO drawn SELECT c.seq, c.j, c.item_id FROM candidate c ANTI JOIN seen s ON {touched}")
        con.execute(f"""CREATE OR REPLACE TABLE pending AS SELECT p.* FROM pending p SEMI JOIN
                        (SELECT c.seq, c.j FROM candidate c SEMI JOIN seen s ON {touched}) r
                        ON r.seq = p.seq AND r.j = p.j""")
        if one_row(con, "SELECT count(*) FROM pending")[0] == 0:
            break
    unavailable = one_row(con, "SELECT count(*) FROM pending")[0]
    return one_row(con, "SELECT count(*) FROM drawn")[0], unavailable
