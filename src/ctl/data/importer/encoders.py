"""Raw Arrow values -> numbers: labels, times, domains, numeric buckets and categorical ids.

Parsers return the parsed values and a mask of the records they refuse; :class:`Refusals` turns a
mask into an :class:`InputError` at its first record (``on_bad_rows: error``) or drops and counts
the records (``skip``). Categorical ids come from a :class:`DenseIds` map (``1..n`` in order of
first appearance, 0 = absent) or from :func:`hash_text` modulo a bucket count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctl.data.importer.readers import RawBlock

_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
_HASH_MULTIPLIER = np.uint64(0x100000001B3)


class Refusals:
    """The records of one block refused by the checks so far.

    Args:
        block: the block the masks index.
        skip: drop refused records and count them (True) or raise at the first one (False).
    """

    def __init__(self, block: RawBlock, skip: bool) -> None:
        self.block = block
        self.skip = skip
        self.mask = np.zeros(len(block), dtype=bool)
        self.counts: Counter[str] = Counter()

    def refuse(self, column: str, bad: np.ndarray, kind: str, detail: Callable[[int], str]) -> None:
        """Refuse the records where ``bad``; ``kind`` names the problem in counts, ``detail(i)`` in errors."""
        if not bad.any():
            return
        if not self.skip:
            i = int(np.argmax(bad))
            raise self.block.error(i, column, detail(i))
        self.counts[f"{column}: {kind}"] += int((bad & ~self.mask).sum())
        self.mask |= bad


def raw_text(values: pa.Array, i: int) -> str:
    """The ``i``-th raw value as text, for messages."""
    value = values[i].as_py()
    return "(empty)" if value is None else repr(value if isinstance(value, str) else str(value))


def _flat(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def missing_mask(values: pa.Array) -> np.ndarray:
    """bool ``[n]``: the value is null (an empty field)."""
    return pc.is_null(values).to_numpy(zero_copy_only=False)


def as_text(values: pa.Array) -> pa.Array:
    """Raw values as text (numbers of a Parquet column become their decimal text)."""
    values = _flat(values)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_string(values.type):
        return values
    return pc.cast(values, pa.string())


def parse_numbers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``[n]`` (NaN where missing) and the mask of present values that are not numbers."""
    values = _flat(values)
    if pa.types.is_boolean(values.type):
        values = pc.cast(values, pa.int8())
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        return numbers, np.zeros(numbers.shape[0], dtype=bool)
    text = pc.utf8_trim_whitespace(as_text(values))
    good = pc.fill_null(pc.match_substring_regex(text, _NUMBER), True)
    bad = ~good.to_numpy(zero_copy_only=False)
    cleaned = pc.if_else(good, text, pa.scalar(None, pa.string()))
    numbers = pc.cast(cleaned, pa.float64()).to_numpy(zero_copy_only=False)
    return numbers, bad


def parse_label(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """int8 labels ``[n]`` and the mask of values that are missing or not 0/1."""
    numbers, bad = parse_numbers(values)
    bad |= ~((numbers == 0) | (numbers == 1))
    return np.where(bad, 0, numbers).astype(np.int8), bad


def parse_time(values: pa.Array, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """int64 seconds since the Unix epoch (UTC) ``[n]`` and the mask of missing or unparseable values.

    ``fmt`` is ``unix`` (seconds), ``unix_ms`` or a strptime pattern for text; Arrow timestamp and
    date columns (Parquet) are taken as they are.
    """
    values = _flat(values)
    kind = values.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        if pa.types.is_date(kind):
            values = pc.cast(values, pa.timestamp("s"))
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[values.type.unit]
        raw = pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False)
        bad = missing_mask(values)
        return np.where(bad, 0, np.floor_divide(np.where(bad, 0, raw), per_second)), bad
    if fmt in ("unix", "unix_ms"):
        numbers, bad = parse_numbers(values)
        bad |= ~np.isfinite(numbers)
        seconds = np.floor(np.where(bad, 0.0, numbers) / (1_000.0 if fmt == "unix_ms" else 1.0))
        return seconds.astype(np.int64), bad
    text = pc.utf8_trim_whitespace(as_text(values))
    parsed = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
    bad = missing_mask(parsed)
    seconds = pc.cast(pc.fill_null(parsed, pa.scalar(0, pa.timestamp("s", tz=parsed.type.tz))), pa.int64())
    return seconds.to_numpy(zero_copy_only=False), bad


def hash_text(values: pa.Array) -> np.ndarray:
    """A stable 64-bit hash of every string (uint64 ``[n]``), vectorised over the bytes.

    A polynomial hash modulo 2**64 mixed with the length and a splitmix64 finaliser: the same text
    hashes the same on every machine and run. Nulls hash like the empty string.
    """
    text = pc.cast(_flat(as_text(values)), pa.large_string())
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


class DenseIds:
    """Dense ids ``1..n`` for raw text values, in order of first appearance (0 = absent).

    Known values are looked up by a sorted array of their 64-bit :func:`hash_text` hashes, so a
    block costs a sort-merge of its distinct values, not a rebuild of a hash table of every value
    seen so far. Matches are confirmed on the text itself: two texts with the same hash are refused,
    never merged.

    Args:
        name: the feature (for messages).
        capacity: the most ids allowed (``vocab - 1`` for a fixed table), or None.

    Example::

        ids = DenseIds("user_id", capacity=None)
        ids.encode(pa.array(["u7", "u3", "u7"]))   # -> [1, 2, 1]
        ids.values()                               # -> ["u7", "u3"]: the raw value of ids 1, 2
    """

    def __init__(self, name: str, capacity: int | None) -> None:
        self.name = name
        self.capacity = capacity
        self._chunks: list[pa.Array] = []
        self._size = 0
        self._hashes = np.zeros(0, dtype=np.uint64)  # sorted
        self._ids = np.zeros(0, dtype=np.int64)  # id of each sorted hash

    def __len__(self) -> int:
        return self._size

    def encode(self, values: pa.Array) -> np.ndarray:
        """int64 ids ``[n]`` of non-null text values, new values getting the next ids."""
        encoded = pc.dictionary_encode(_flat(values))
        distinct = encoded.dictionary  # in order of first appearance
        hashes = hash_text(distinct)
        where = np.minimum(np.searchsorted(self._hashes, hashes), max(self._hashes.shape[0] - 1, 0))
        found = self._hashes[where] == hashes if self._hashes.size else np.zeros(hashes.shape[0], dtype=bool)
        ids = np.zeros(hashes.shape[0], dtype=np.int64)
        ids[found] = self._ids[where[found]]
        if found.any():
            known = pa.chunked_array(self._chunks).take(pa.array(ids[found] - 1))
            clash = ~pc.equal(known, pc.filter(distinct, pa.array(found))).to_numpy(zero_copy_only=False)
            if clash.any():
                raise ValueError(f"feature {self.name!r}: two raw values share a 64-bit hash; use hash_buckets")
        new = ~found
        if new.any():
            fresh = np.arange(self._size + 1, self._size + 1 + int(new.sum()), dtype=np.int64)
            ids[new] = fresh
            self._chunks.append(pc.filter(distinct, pa.array(new)))
            self._size += fresh.shape[0]
            merged = np.concatenate([self._hashes, hashes[new]])
            order = np.argsort(merged, kind="stable")
            self._hashes, self._ids = merged[order], np.concatenate([self._ids, fresh])[order]
            if np.any(self._hashes[1:] == self._hashes[:-1]):
                raise ValueError(f"feature {self.name!r}: two raw values share a 64-bit hash; use hash_buckets")
        return ids[encoded.indices.to_numpy(zero_copy_only=False)]

    def values(self) -> pa.Array:
        """The raw text of ids ``1..n`` (position ``i`` holds id ``i + 1``)."""
        return pa.concat_arrays(self._chunks) if self._chunks else pa.array([], type=pa.string())

    def overflow(self, ids: np.ndarray) -> np.ndarray:
        """Mask of ids beyond the capacity (none without one)."""
        if self.capacity is None:
            return np.zeros(ids.shape[0], dtype=bool)
        return ids > self.capacity


def refuse_overflow(block: RawBlock, column: str, ids: np.ndarray, mapping: DenseIds, vocab: int) -> None:
    """A fixed vocabulary is a schema limit, never skipped: refuse the first value beyond it."""
    over = mapping.overflow(ids)
    if over.any():
        i = int(np.argmax(over))
        raise block.error(i, column, f"value {raw_text(block.columns[column], i)} is distinct value {ids[i]} of "
                                     f"feature {mapping.name!r}, beyond its vocab {vocab} (ids 1..{vocab - 1}); "
                                     "raise vocab, set vocab: auto or use hash_buckets")


def refusal_detail(values: pa.Array, what: str) -> Callable[[int], str]:
    """``detail(i)`` for :meth:`Refusals.refuse`: the raw value and what it should be."""
    return lambda i: f"value {raw_text(values, i)} {what}"

