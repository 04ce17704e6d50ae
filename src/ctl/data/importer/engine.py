"""The DuckDB database an import works in: in memory up to a limit, spilling to a folder beyond it.

Everything the import holds lives in this database: DuckDB keeps at most ``memory_limit`` in
memory and spills the rest (tables, sorts, joins, windows) to ``spill/`` in the staging folder, so
memory stays bounded whatever the input size. An in-memory database, not a database file: its
tables go to disk only when they outgrow the limit, uncompressed (a database file compresses every
table it writes: the checked records of a 2M-row click log took 2.3 s to write there, 0.9 s in
memory). The folder is deleted with the staging folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import duckdb

from ctl.data.importer.encoders import register_hash

#: DuckDB's memory limit during an import (``memory_limit=`` of ``ctl data import``).
DEFAULT_MEMORY_LIMIT = "2GB"


def connect(folder: Path, memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory database that spills to ``folder/spill`` (``folder`` is created).

    Args:
        memory_limit: DuckDB's limit, e.g. ``"2GB"`` or ``"500MB"``.
        threads: DuckDB's worker threads; None = one per core.
    """
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{folder / 'spill'}'")
    # ordered CREATE/COPY keep their order, and a table's rowids follow the order it was filled in
    con.execute("SET preserve_insertion_order = true")
    con.execute("SET TimeZone = 'UTC'")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    _hash_macros(con)
    register_hash(con)
    return con


def one_row(con: duckdb.DuckDBPyConnection, query: str, parameters: list | None = None) -> tuple:
    """The first row of ``query``, one that always has a row (an aggregate such as ``count(*)``, or a
    lookup of a row known to exist)."""
    return cast(tuple, con.execute(query, parameters).fetchone())


def _hash_macros(con: duckdb.DuckDBPyConnection) -> None:
    """``mix32(x)``: a 32-bit integer hash (Wellons' lowbias32) in plain integer SQL, the same on every
    DuckDB version (unlike ``hash()``): the negative sampler's counter-based random numbers."""
    con.execute("CREATE MACRO mix32a(x) AS (xor(x, x >> 16) * 2146121005) & 4294967295")
    con.execute("CREATE MACRO mix32b(x) AS ((xor(x, x >> 15))::UBIGINT * 2221713035::UBIGINT & 4294967295)::BIGINT")
    con.execute("CREATE MACRO mix32(x) AS xor(mix32b(mix32a(x)), mix32b(mix32a(x)) >> 16)")
