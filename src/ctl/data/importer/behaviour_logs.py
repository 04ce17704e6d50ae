"""Behaviour logs: events that are not training rows (browses, carts, ...) joining the history.

A schema's ``behaviour_logs:`` names CSV or Parquet files and their ``user``, ``item``, ``time``
and ``domain`` columns; times are read with ``time.format`` and domains mapped as the records'
``domains.column`` is. Every event joins ``history.parquet`` and every row's ``hist_end`` counts
the events strictly before it, as it counts the records' events; none becomes a row.

Ids: an item the records never show gets an id after theirs (in order of first appearance in the
logs; hashed like the records' items under ``hash_buckets``); its category is the item's category
on its last record, 0 (absent) for an item the records never show. Events of a user without any
record cannot be seen by a row: they are left out and counted (``behaviour events of users
without records``), as are events at or after ``time.end`` (``behaviour events after end``).
An event without a user, item, readable time or known domain is refused naming its file, line
and column (or counted and left out with ``on_bad_rows: skip``).

:func:`stage_behaviour_logs` reads and checks the files into the table ``behaviour``;
:func:`behaviour_items` is the id maps' extra source of items; :func:`add_behaviour_events`
puts the events into ``history``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import duckdb

from ctl.data.importer.engine import one_row
from ctl.data.importer.errors import InputError
from ctl.data.importer.idmaps import SLOTS, map_table
from ctl.data.importer.records import Values, domain_index
from ctl.data.importer.sources import PARQUET_SUFFIXES, sql_text
from ctl.data.importer.spec import ImportSpec

#: ``seq`` of behaviour event ``k`` is this + k: after every record's, so ties in time sort records first.
FIRST_SEQ = 1 << 40


def _relation(con: duckdb.DuckDBPyConnection, spec: ImportSpec, path: Path, columns: tuple[str, ...]):
    """The file as a relation with ``v0 ..`` (``columns``) and ``place`` (1-based line or row), its
    column types, and how a place reads (``line`` or ``row``)."""
    if not path.is_file():
        raise InputError(str(path), "the behaviour-log file does not exist")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        reader, first, where = f"read_parquet({sql_text(str(path))}, file_row_number = true)", 1, "row"
        place = "file_row_number + 1"
    else:
        reader = f"read_csv({sql_text(str(path))}, header = true, all_varchar = true, delim = " \
                 f"{sql_text(spec.csv.delimiter)})"
        first, where, place = 2, "line", None  # the header is line 1
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    except duckdb.Error as exc:
        raise InputError(str(path), f"cannot be read as a behaviour log ({str(exc).splitlines()[0]})") from None
    types = {row[0]: row[1] for row in described}
    for key, name in zip(("user", "item", "time", "domain"), columns, strict=True):
        if name not in types:
            raise InputError(str(path), f"has no column {name!r} (behaviour_logs.{key}; it has {sorted(types)})")
    selected = ", ".join(f'"{name}" AS v{j}' for j, name in enumerate(columns))
    place = place or f"row_number() OVER () + {first - 1}"
    return f"SELECT {selected}, {place} AS place FROM {reader}", tuple(types[n] for n in columns), where


def stage_behaviour_logs(con: duckdb.DuckDBPyConnection, spec: ImportSpec, paths: Sequence[Path]) -> Counter:
    """Create ``behaviour`` (``user_raw``, ``item_raw``, ``domain``, ``ts``, ``seq``, ``input``: index
    into ``paths``, ``place``: ``line 7`` / ``row 7``) from ``paths``; returns the counts of events
    left out (``on_bad_rows: skip``, and after ``time.end``)."""
    logs = spec.behaviour_logs
    assert logs is not None  # import_dataset stages behaviour-log files only with a behaviour_logs section
    columns = (logs.user, logs.item, logs.time, logs.domain)
    skipped: Counter = Counter()
    con.execute("CREATE TABLE behaviour (user_raw VARCHAR, item_raw VARCHAR, domain TINYINT, ts BIGINT, seq BIGINT, "
                "input SMALLINT, place VARCHAR)")
    for index, path in enumerate(paths):
        relation, types, where = _relation(con, spec, Path(path), columns)
        values = Values.of(columns, types)
        domain, seconds = domain_index(spec.domains, values, logs.domain), values.seconds(logs.time, spec.time.format)
        checks = [
            (logs.user, "empty", f"NOT {values.present(logs.user)}", "is empty; every event needs a user"),
            (logs.item, "empty", f"NOT {values.present(logs.item)}", "is empty; every event needs an item"),
            (logs.time, "bad time", f"{seconds} IS NULL", "is empty or not a time in time.format"),
            (logs.domain, "unknown domain", f"{domain} IS NULL",
             "is not one of the domains (domains.values / domains.boundaries)"),
        ]
        refusal = "CASE " + " ".join(f"WHEN {c} THEN {k}" for k, (_, _, c, _) in enumerate(checks)) + " END"
        con.execute(f"""CREATE OR REPLACE TEMP TABLE staged AS
                        SELECT {values.text(logs.user)} AS user_raw, {values.text(logs.item)} AS item_raw,
                               {domain}::TINYINT AS domain, {seconds} AS ts, {refusal} AS refusal, place
                        FROM ({relation})""")
        refused = con.execute("SELECT refusal, place FROM staged WHERE refusal IS NOT NULL ORDER BY place LIMIT 1"
                              ).fetchone()
        if refused and spec.on_bad_rows == "error":
            column, _, _, detail = checks[refused[0]]
            raise InputError(str(path), detail, where=f"{where} {refused[1]}", column=column)
        for code, n in con.execute("SELECT refusal, count(*) FROM staged WHERE refusal IS NOT NULL GROUP BY ALL"
                                   ).fetchall():
            skipped[f"behaviour {checks[code][0]}: {checks[code][1]}"] += n
        kept = "refusal IS NULL" + ("" if spec.time.end is None else f" AND ts < {int(spec.time.end)}")
        if spec.time.end is not None:
            after = one_row(con, "SELECT count(*) FROM staged WHERE refusal IS NULL AND ts >= "
                                 f"{int(spec.time.end)}")[0]
            skipped["behaviour events after end"] += after
        start = one_row(con, "SELECT count(*) FROM behaviour")[0]
        con.execute(f"""INSERT INTO behaviour SELECT user_raw, item_raw, domain, ts,
                        {FIRST_SEQ + start} + row_number() OVER (ORDER BY place) - 1, {index}, '{where} ' || place
                        FROM staged WHERE {kept} ORDER BY place""")
        con.execute("DROP TABLE staged")
    return skipped


def locate_event(con: duckdb.DuckDBPyConnection, paths: Sequence[Path], seq: int) -> tuple[str, str]:
    """The file and place of the behaviour event ``seq`` (as ``RecordTable.locate`` gives a record's)."""
    index, place = one_row(con, "SELECT input, place FROM behaviour WHERE seq = ?", [seq])
    return str(paths[index]), place


def behaviour_items() -> str:
    """The id maps' source of the logs' items (``raw``, ``first``), after every record's."""
    return f"SELECT item_raw AS raw, seq::HUGEINT * {SLOTS} AS first FROM behaviour"


def add_behaviour_events(con: duckdb.DuckDBPyConnection, spec: ImportSpec, column: dict[str, str],
                         item_map: str) -> None:
    """Insert the logs' events of users with records into ``history`` (``column``/``item_map``: as
    :func:`~ctl.data.importer.histories.build_history` has them)."""
    user_map = map_table(spec.features.index(spec.feature("user_id")))
    item, category = column["item_id"], column["category_id"]
    con.execute(f"""CREATE TEMP TABLE behaviour_category AS
                    SELECT {item} AS item_id, arg_max({category}, seq) AS category_id FROM encoded GROUP BY {item}""")
    # users of the records: those a row can belong to
    con.execute(f"""
        INSERT INTO history
        SELECT u.id AS user_id, m.id AS item_id, coalesce(c.category_id, 0) AS category_id, b.domain, b.ts, b.seq,
               0 AS pos
        FROM behaviour b JOIN {user_map} u ON u.raw = b.user_raw
        JOIN (SELECT DISTINCT {column['user_id']} AS id FROM encoded) seen ON seen.id = u.id
        JOIN {item_map} m ON m.raw = b.item_raw LEFT JOIN behaviour_category c ON c.item_id = m.id""")
    con.execute("DROP TABLE behaviour_category")


def behaviour_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """After the history is built: the logs' events in it, and those left out for their user."""
    total = one_row(con, "SELECT count(*) FROM behaviour")[0]
    added = one_row(con, f"SELECT count(*) FROM history WHERE seq >= {FIRST_SEQ}")[0]
    return {"behaviour events": int(added), "behaviour events of users without records": int(total - added)}
