"""Raw Arrow values -> numbers: labels, times, domains, numeric buckets and hashed ids.

Parsers return the parsed values and a mask of the records they refuse; :class:`Refusals` turns a
mask into an :class:`InputError` at its first record (``on_bad_rows: error``) or drops and counts
the records (``skip``). Hashed ids are :func:`hash_text` modulo a bucket count; dense ids are
numbered in SQL (:mod:`ctl.data.importer.idmaps`).
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
    text = as_text(values)
    try:  # fast path: every value a plain finite number (Arrow's cast also takes nan/inf, refused below)
        numbers = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        if not np.isinf(numbers).any() and np.isnan(numbers).sum() == text.null_count:
            return numbers, np.zeros(numbers.shape[0], dtype=bool)
    except pa.ArrowInvalid:
        pass
    text = pc.utf8_trim_whitespace(text)
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


def refusal_detail(values: pa.Array, what: str) -> Callable[[int], str]:
    """``detail(i)`` for :meth:`Refusals.refuse`: the raw value and what it should be."""
    return lambda i: f"value {raw_text(values, i)} {what}"

