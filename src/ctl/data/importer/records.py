"""Raw blocks -> integer record columns: domain, label, time, feature ids, sequence items.

:class:`RecordEncoder` checks every value a record needs (refusing or, with ``on_bad_rows:
skip``, dropping and counting bad records), then encodes the kept records' features: dense ids
through id maps kept across blocks, hashed ids, numeric buckets, constants; a feature is 0 on the
rows of domains that lack it. :class:`ColumnStore` gathers the blocks' columns and concatenates
each once.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctl.data.importer.encoders import (
    DenseIds,
    Refusals,
    as_text,
    hash_text,
    hashed_ids,
    missing_mask,
    parse_label,
    parse_numbers,
    parse_time,
    raw_text,
    refusal_detail,
    refuse_overflow,
)
from ctl.data.importer.readers import RawBlock
from ctl.data.importer.spec import FeatureSpec, ImportSpec


class ColumnStore:
    """Columns appended block by block, each concatenated once when taken."""

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = defaultdict(list)

    def add(self, columns: dict[str, np.ndarray]) -> None:
        for name, values in columns.items():
            self._parts[name].append(values)

    def take(self, name: str) -> np.ndarray:
        """The whole column (its parts are released)."""
        parts = self._parts.pop(name)
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    def __contains__(self, name: str) -> bool:
        return name in self._parts


class RecordEncoder:
    """Encodes the blocks of every input with one set of id maps.

    Example::

        encoder = RecordEncoder(spec)
        columns, items = encoder.encode(block, input_index=0)  # int arrays; bad records dropped or refused
        encoder.id_maps["user_id"].values()              # raw text of user ids 1..n
    """

    def __init__(self, spec: ImportSpec) -> None:
        self.spec = spec
        self.id_maps = {f.name: DenseIds(f.name, None if f.vocab is None else f.vocab - 1)
                        for f in spec.features if f.dense}
        self.skipped: Counter[str] = Counter()
        self.kept = 0
        names = spec.domains.names
        self._carriers = {f.name: np.array([names.index(d) for d in f.domains], dtype=np.int8)
                          for f in spec.features}
        self._domain_values = None if spec.domains.values is None else pa.array(spec.domains.values, pa.string())

    # --- checks ----------------------------------------------------------------------------------

    def _domain(self, block: RawBlock, checks: Refusals) -> np.ndarray:
        spec = self.spec.domains
        values = block.columns[spec.column]
        missing = missing_mask(values)
        checks.refuse(spec.column, missing, "empty", lambda i: "is empty; every record needs a domain")
        if self._domain_values is not None:
            found = pc.index_in(as_text(values), value_set=self._domain_values)
            unknown = missing_mask(found) & ~missing
            checks.refuse(spec.column, unknown, "unknown domain",
                          refusal_detail(values, f"is not one of the domain values {list(spec.values)} "
                                                 "(domains.values)"))
            index = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
        else:
            numbers, bad = parse_numbers(values)
            checks.refuse(spec.column, bad & ~missing, "not a number",
                          refusal_detail(values, "is not a number (domains.boundaries cut it)"))
            index = np.searchsorted(np.asarray(spec.boundaries), numbers, side="right")
            index[np.isnan(numbers)] = -1
        return index.astype(np.int8)

    def _label(self, block: RawBlock, checks: Refusals) -> np.ndarray:
        column = self.spec.label.column
        if column is None:
            return np.ones(len(block), dtype=np.int8)
        values = block.columns[column]
        label, bad = parse_label(values)
        checks.refuse(column, bad, "not 0/1", refusal_detail(values, "is not a 0/1 label"))
        return label

    def _time(self, block: RawBlock, checks: Refusals) -> np.ndarray | None:
        spec = self.spec.time
        if spec.column is None:
            return None  # file order: the kept records' positions, set after the checks
        values = block.columns[spec.column]
        ts, bad = parse_time(values, spec.format)
        missing = missing_mask(values)
        checks.refuse(spec.column, missing, "empty", lambda i: "is empty; every record needs a time")
        what = {"unix": "is not a Unix time in seconds", "unix_ms": "is not a Unix time in milliseconds"}
        checks.refuse(spec.column, bad & ~missing, "bad time",
                      refusal_detail(values, what.get(spec.format, f"does not match the time format {spec.format!r}")))
        return ts

    def _period_values(self, block: RawBlock, checks: Refusals) -> np.ndarray | None:
        column = self.spec.time.period_column
        if column is None:
            return None
        values = block.columns[column]
        numbers, bad = parse_numbers(values)
        bad |= ~np.isfinite(numbers) | (numbers != np.round(numbers))
        checks.refuse(column, bad, "not an integer period", refusal_detail(values, "is not an integer period"))
        return np.where(bad, 0, numbers).astype(np.int64)

    def _feature_checks(self, block: RawBlock, domain: np.ndarray, checks: Refusals) -> dict[str, np.ndarray]:
        """Numbers of the bucket features (NaN = missing); refuses missing values where not allowed."""
        numbers = {}
        for feature in self.spec.features:
            if feature.constant:
                continue
            values = block.columns[feature.column]
            carrier = np.isin(domain, self._carriers[feature.name])
            missing = missing_mask(values)
            if feature.kind == "bucket":
                parsed, bad = parse_numbers(values)
                checks.refuse(feature.column, carrier & bad, "not a number",
                              refusal_detail(values, f"is not a number (feature {feature.name!r} is a bucket)"))
                numbers[feature.name] = parsed
                missing = np.isnan(parsed) & ~bad
            if feature.missing == "error":
                checks.refuse(feature.column, carrier & missing, "empty",
                              lambda i, f=feature: f"is empty; feature {f.name!r} needs a value on the rows of "
                                                   f"{list(f.domains)} (or set missing: absent)")
        return numbers

    # --- encoding --------------------------------------------------------------------------------

    def _ids(self, feature: FeatureSpec, block: RawBlock, domain: np.ndarray, numbers: np.ndarray | None) -> np.ndarray:
        carrier = np.isin(domain, self._carriers[feature.name])
        ids = np.zeros(len(block), dtype=np.int64)
        if feature.constant:
            ids[carrier] = 1
            return ids
        if feature.kind == "bucket":
            present = carrier & ~np.isnan(numbers)
            ids[present] = np.searchsorted(np.asarray(feature.boundaries), numbers[present], side="right") + 1
            return ids
        values = block.columns[feature.column]
        present = carrier & ~missing_mask(values)
        text = pc.filter(as_text(values), pa.array(present))
        if feature.hash_buckets is not None:
            ids[present] = hashed_ids(text, feature.hash_buckets)
            return ids
        mapping = self.id_maps[feature.name]
        ids[present] = mapping.encode(text)
        if feature.vocab is not None:
            refuse_overflow(block, feature.column, ids, mapping, feature.vocab)
        return ids

    def _sequences(self, block: RawBlock) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per record: list length and raw-list hash; the lists' item ids back to back."""
        spec = self.spec.sequences
        text = as_text(block.columns[spec.column])
        parts = pc.split_pattern(pc.fill_null(text, ""), spec.separator)
        flat = pc.list_flatten(parts)
        owner = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
        nonempty = pc.not_equal(flat, "")
        flat, owner = pc.filter(flat, nonempty), owner[nonempty.to_numpy(zero_copy_only=False)]
        counts = np.bincount(owner, minlength=len(block)).astype(np.int32)
        item = self.spec.feature("item_id")
        if item.hash_buckets is not None:
            items = hashed_ids(flat, item.hash_buckets)
        else:
            mapping = self.id_maps["item_id"]
            items = mapping.encode(flat)
            over = mapping.overflow(items)
            if over.any():
                i = int(owner[np.argmax(over)])
                raise block.error(i, spec.column, f"item {raw_text(flat, int(np.argmax(over)))} would exceed vocab "
                                                  f"{item.vocab} of item_id; raise it or set vocab: auto")
        return counts, hash_text(text), items

    def encode(self, block: RawBlock, input_index: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Record columns of the block's kept records, and their sequence items (None without a column)."""
        checks = Refusals(block, skip=self.spec.on_bad_rows == "skip")
        domain = self._domain(block, checks)
        label = self._label(block, checks)
        ts = self._time(block, checks)
        period_values = self._period_values(block, checks)
        numbers = self._feature_checks(block, domain, checks)
        self.skipped.update(checks.counts)
        keep = ~checks.mask
        if not keep.all():
            block = block.filter(keep)
            domain, label = domain[keep], label[keep]
            ts = None if ts is None else ts[keep]
            period_values = None if period_values is None else period_values[keep]
            numbers = {name: values[keep] for name, values in numbers.items()}
        n = len(block)
        if ts is None:
            ts = np.arange(self.kept, self.kept + n, dtype=np.int64)
        self.kept += n
        columns = {
            "domain": domain,
            "label": label,
            "ts": ts,
            "input": np.full(n, input_index, dtype=np.int16),
            "line": block.line,
            "event": np.zeros(n, dtype=np.int32) if block.event is None else block.event.astype(np.int32),
        }
        if period_values is not None:
            columns["period_value"] = period_values
        for feature in self.spec.features:
            # int32 while the import gathers records: half the memory; rows become int64 at the end
            wide = feature.hash_buckets is not None and feature.hash_buckets > np.iinfo(np.int32).max
            ids = self._ids(feature, block, domain, numbers.get(feature.name))
            columns[feature.name] = ids if wide else ids.astype(np.int32)
        items = None
        if self.spec.sequences.column is not None:
            columns["seq_count"], columns["seq_key"], items = self._sequences(block)
        return columns, items
