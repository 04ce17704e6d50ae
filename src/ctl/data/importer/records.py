"""Raw blocks -> checked records staged for DuckDB: domain, label, time, place, feature values.

:class:`RecordStager` checks every value a record needs (refusing or, with ``on_bad_rows: skip``,
dropping and counting bad records) block by block, and writes the kept records as Parquet parts
of ``records`` (their explicit sequence items as parts of ``seq_items``), which DuckDB reads as
views. What needs no global view
is encoded here: hashed ids, numeric buckets, constants; dense features stay raw text, numbered
later in SQL (:mod:`ctl.data.importer.idmaps`). A feature is null/0 on the rows of domains that
lack it. ``seq`` numbers the kept records in input order: it orders everything downstream.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctl.data.importer.encoders import (
    Refusals,
    as_text,
    hash_text,
    hashed_ids,
    missing_mask,
    parse_label,
    parse_numbers,
    parse_time,
    refusal_detail,
)
from ctl.data.importer.readers import RawBlock
from ctl.data.importer.spec import FeatureSpec, ImportSpec

#: ``seq_items``: the items of the explicit sequences, ``pos`` within the record's list
ITEMS_SCHEMA = pa.schema([("seq", pa.int64()), ("pos", pa.int32()), ("raw", pa.string()), ("hashed", pa.int64())])


def staged_name(index: int) -> str:
    """Column of the ``index``-th schema feature in ``records`` (feature names may be any text)."""
    return f"f{index}"


class RecordStager:
    """Checks blocks and stages their kept records as Parquet parts of ``records`` / ``seq_items``.

    Example::

        stager = RecordStager(spec, folder)
        stager.stage(block, input_index=0)   # bad records dropped (counted) or refused
        stager.views(con)                    # SELECT ... FROM records
    """

    def __init__(self, spec: ImportSpec, folder: Path) -> None:
        self.spec = spec
        self.folder = folder
        self.skipped: Counter[str] = Counter()
        self.kept = 0
        self._parts = 0
        names = spec.domains.names
        self._carriers = {f.name: np.array([names.index(d) for d in f.domains], dtype=np.int8)
                          for f in spec.features}
        self._domain_values = None if spec.domains.values is None else pa.array(spec.domains.values, pa.string())
        for table in ("records", "seq_items"):
            (folder / table).mkdir(parents=True)

    def views(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the views ``records`` and ``seq_items`` (explicit sequences only) over the staged parts."""
        if self.spec.sequences.column is not None and not any((self.folder / "seq_items").iterdir()):
            pq.write_table(ITEMS_SCHEMA.empty_table(), self.folder / "seq_items" / "part-00000.parquet")
        for table in ("records", "seq_items") if self.spec.sequences.column is not None else ("records",):
            parts = ", ".join("'" + str(p).replace("'", "''") + "'" for p in sorted((self.folder / table).iterdir()))
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{parts}])")

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

    def _values(self, feature: FeatureSpec, block: RawBlock, domain: np.ndarray,
                numbers: np.ndarray | None) -> pa.Array:
        """Raw text of a dense feature (null where absent), else its int64 ids (0 where absent)."""
        carrier = np.isin(domain, self._carriers[feature.name])
        if feature.constant:
            return pa.array(carrier.astype(np.int64))
        if feature.kind == "bucket":
            present = carrier & ~np.isnan(numbers)
            ids = np.zeros(len(block), dtype=np.int64)
            ids[present] = np.searchsorted(np.asarray(feature.boundaries), numbers[present], side="right") + 1
            return pa.array(ids)
        values = block.columns[feature.column]
        present = carrier & ~missing_mask(values)
        if feature.dense:
            return pc.if_else(pa.array(present), as_text(values), pa.scalar(None, pa.string()))
        ids = np.zeros(len(block), dtype=np.int64)
        ids[present] = hashed_ids(pc.filter(as_text(values), pa.array(present)), feature.hash_buckets)
        return pa.array(ids)

    def _sequences(self, block: RawBlock, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray, pa.Table]:
        """Per record: list length and raw-list hash; the lists' items as ``(seq, pos, raw, hashed id)``."""
        spec = self.spec.sequences
        text = as_text(block.columns[spec.column])
        parts = pc.split_pattern(pc.fill_null(text, ""), spec.separator)
        flat = pc.list_flatten(parts)
        owner = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
        nonempty = pc.not_equal(flat, "")
        flat, owner = pc.filter(flat, nonempty), owner[nonempty.to_numpy(zero_copy_only=False)]
        counts = np.bincount(owner, minlength=len(block)).astype(np.int32)
        pos = np.arange(owner.shape[0], dtype=np.int32) - np.repeat((np.cumsum(counts) - counts).astype(np.int32),
                                                                    counts)
        item = self.spec.feature("item_id")
        hashed = (hashed_ids(flat, item.hash_buckets) if item.hash_buckets is not None
                  else np.zeros(owner.shape[0], dtype=np.int64))
        items = pa.table({"seq": seq[owner], "pos": pos, "raw": flat, "hashed": hashed}, schema=ITEMS_SCHEMA)
        return counts, hash_text(text), items

    def stage(self, block: RawBlock, input_index: int) -> None:
        """Check ``block`` and append its kept records (of input ``input_index``) to the tables."""
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
        if n == 0:
            return
        seq = np.arange(self.kept, self.kept + n, dtype=np.int64)
        self.kept += n
        columns = {
            "seq": seq,
            "input": np.full(n, input_index, dtype=np.int16),
            "line": block.line,
            "event": np.zeros(n, dtype=np.int32) if block.event is None else block.event.astype(np.int32),
            "domain": domain,
            "label": label,
            "ts": seq if ts is None else ts,
        }
        if period_values is not None:
            columns["period_value"] = period_values
        for i, feature in enumerate(self.spec.features):
            columns[staged_name(i)] = self._values(feature, block, domain, numbers.get(feature.name))
        if self.spec.sequences.column is not None:
            columns["seq_count"], columns["seq_key"], items = self._sequences(block, seq)
            self._append("seq_items", items)
        self._append("records", pa.table(columns))

    def _append(self, table: str, values: pa.Table) -> None:
        # Parquet parts, not INSERTs: DuckDB scans them as fast, and writing them costs a quarter
        if values.num_rows:
            pq.write_table(values, self.folder / table / f"part-{self._parts:05d}.parquet", compression="lz4")
            self._parts += 1
