"""Hashed ids: a stable hash of the raw text modulo a bucket count, the same on every machine and run.

:func:`register_hash` makes :func:`hashed_ids` a DuckDB function (:data:`HASH_FUNCTION`), applied
to the distinct values of each hashed feature (:mod:`ctl.data.importer.idmaps`).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HASH_MULTIPLIER = np.uint64(0x100000001B3)
#: ``HASH_FUNCTION(text, buckets)``: :func:`hashed_ids` in SQL
HASH_FUNCTION = "ctl_hashed_id"


def _flat(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def hash_text(values: pa.Array) -> np.ndarray:
    """A stable 64-bit hash of every string (uint64 ``[n]``), vectorised over the bytes.

    A polynomial hash modulo 2**64 mixed with the length and a splitmix64 finaliser: the same text
    hashes the same on every machine and run. Nulls hash like the empty string.
    """
    text = pc.cast(_flat(values), pa.large_string())
    n = len(text)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + n + 1]
    data_buffer = text.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    start, end = offsets[:-1], offsets[1:]
    lengths = end - start
    byte_position = np.arange(offsets[0], offsets[-1], dtype=np.int64)
    owner_end = np.repeat(end, lengths)
    longest = int(lengths.max()) if n else 0
    powers = np.ones(longest + 1, dtype=np.uint64)
    if longest:
        powers[1:] = np.cumprod(np.full(longest, _HASH_MULTIPLIER, dtype=np.uint64))
    terms = (data[byte_position].astype(np.uint64) + np.uint64(1)) * powers[owner_end - 1 - byte_position]
    running = np.zeros(terms.shape[0] + 1, dtype=np.uint64)
    np.cumsum(terms, out=running[1:])
    base = offsets[0]
    mixed = (running[end - base] - running[start - base]) ^ lengths.astype(np.uint64)
    mixed ^= mixed >> np.uint64(30)
    mixed *= np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(27)
    mixed *= np.uint64(0x94D049BB133111EB)
    mixed ^= mixed >> np.uint64(31)
    return mixed


def hashed_ids(values: pa.Array, buckets: int) -> np.ndarray:
    """int64 ids ``1 .. buckets-1`` from :func:`hash_text` (0 stays 'absent')."""
    return (hash_text(values) % np.uint64(buckets - 1)).astype(np.int64) + 1


def register_hash(con: duckdb.DuckDBPyConnection) -> None:
    """Create :data:`HASH_FUNCTION` on ``con`` (vectorised over Arrow batches)."""

    def hashed(text: pa.Array, buckets: pa.Array) -> pa.Array:
        return pa.array(hashed_ids(text, int(pc.min(buckets).as_py())))

    # The stub wants a PythonUDFType, whose module moved between duckdb 1.x and 2.x; both take its name.
    con.create_function(  # type: ignore[call-overload]
        HASH_FUNCTION, hashed, ["VARCHAR", "BIGINT"], "BIGINT", type="arrow")
