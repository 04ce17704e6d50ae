"""``import_dataset``: input files + an import schema -> a dataset folder with its id maps.

The folder is the dataset format of :mod:`ctl.data.dataset` plus two files that trace every row
back to its source:

* ``id_maps/<feature>.parquet``: ``id`` (int64, 1..n) and ``raw`` (the raw text) of every dense
  feature, so ``raw[id - 1]`` is the value a prediction's id came from;
* ``origin.parquet``: per dataset row (same order as ``rows.parquet``), ``input`` (index into
  ``meta.yaml``'s ``provenance.inputs``), ``line`` (1-based line, or row for Parquet), ``event``
  (1-based event within the line for event-line files, else 0) and ``sampled`` (a sampled
  negative, whose origin is its positive's).

Everything is written into a hidden staging folder and renamed into place at the end.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctl.data.dataset import write_dataset
from ctl.data.importer.assemble import ORIGIN_COLUMNS, Assembled, assemble
from ctl.data.importer.readers import DEFAULT_BLOCK_BYTES, read_blocks
from ctl.data.importer.records import ColumnStore, RecordEncoder
from ctl.data.importer.spec import ImportSpec
from ctl.errors import CtlError
from ctl.io import fsync_path

IMPORTER_VERSION = 1
ID_MAPS_DIR = "id_maps"
ORIGIN_FILE = "origin.parquet"


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote and what it left out (``counts``: see ``docs/data.md``)."""

    path: Path
    n_rows: int
    n_events: int
    rows_per_domain: dict[str, int]
    spans: tuple[str, ...]
    n_history: int
    n_transfer: int
    counts: dict[str, int]


def _read(spec: ImportSpec, inputs: Sequence[Path], max_rows: int | None, block_bytes: int,
          log: Callable[[str], None] | None) -> tuple[RecordEncoder, dict[str, np.ndarray], np.ndarray | None, list]:
    encoder = RecordEncoder(spec)
    store = ColumnStore()
    item_parts: list[np.ndarray] = []
    described = []
    remaining = max_rows
    for index, path in enumerate(inputs):
        records = 0
        if remaining is None or remaining > 0:
            for block in read_blocks(path, spec.reader, spec.needed_columns(), remaining, block_bytes):
                columns, items = encoder.encode(block, index)
                store.add(columns)
                if items is not None:
                    item_parts.append(items)
                records += block.records
            if remaining is not None:
                remaining -= records
        described.append({"path": str(path), "bytes": path.stat().st_size, "records": records})
        if log is not None:
            log(f"read {records:,} records from {path}")
    if "domain" not in store:
        raise CtlError("the inputs hold no records")
    names = ["domain", "label", "ts", "input", "line", "event", *(f.name for f in spec.features)]
    names += [n for n in ("period_value", "seq_count", "seq_key") if n in store]
    records = {name: store.take(name) for name in names}
    if records["domain"].shape[0] == 0:
        raise CtlError(f"no records left after skipping bad ones ({dict(encoder.skipped)})")
    items = None
    if spec.sequences.column is not None:
        items = np.concatenate(item_parts) if item_parts else np.zeros(0, dtype=np.int64)
    return encoder, records, items, described


def _write_parquet(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)
    fsync_path(path)


def _write(out: Path, built: Assembled, encoder: RecordEncoder, provenance: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.import-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        folder = write_dataset(staging / "dataset", built.schema, built.rows, built.history, provenance)
        maps = folder / ID_MAPS_DIR
        maps.mkdir()
        for name, mapping in encoder.id_maps.items():
            values = mapping.values()
            _write_parquet(maps / f"{name}.parquet",
                           pa.table({"id": np.arange(1, len(values) + 1, dtype=np.int64), "raw": values}))
        fsync_path(maps)
        origin = {name: built.origin[name] for name in ORIGIN_COLUMNS}
        origin["input"] = origin["input"].astype(np.int16)
        origin["event"] = origin["event"].astype(np.int32)
        _write_parquet(folder / ORIGIN_FILE, pa.table(origin))
        fsync_path(folder)
        try:
            os.rename(folder, out)
        except OSError as exc:
            if out.exists():
                raise FileExistsError(f"{out}: another import created this dataset meanwhile") from exc
            raise
        fsync_path(out.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def import_dataset(
    spec: ImportSpec,
    inputs: Sequence[Path | str],
    out: Path | str,
    max_rows: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    log: Callable[[str], None] | None = None,
) -> ImportReport:
    """Convert ``inputs`` (read in order, as one log) with ``spec`` into the dataset folder ``out``.

    Args:
        spec: the import schema (:func:`ctl.data.importer.load_spec`).
        inputs: CSV, Parquet or event-line files.
        out: the new dataset folder; it must not exist.
        max_rows: read at most this many records (CSV lines, Parquet rows, event lines), in order.
        block_bytes: text read per block; memory grows with it, not with the file size.
        log: called with a line of progress per input.
    """
    out = Path(out).expanduser()
    inputs = [Path(p).expanduser() for p in inputs]
    if out.exists():
        raise FileExistsError(f"{out}: a dataset (or file) already exists there; choose a new folder")
    if not inputs:
        raise CtlError("no input files given (inputs=[a.csv,b.parquet])")
    if max_rows is not None and max_rows < 1:
        raise CtlError(f"max_rows must be >= 1 or null, got {max_rows}")
    encoder, records, items, described = _read(spec, inputs, max_rows, block_bytes, log)
    n_records = int(records["domain"].shape[0])
    built = assemble(spec, records, items, {name: len(m) for name, m in encoder.id_maps.items()})  # empties records
    counts = {"records": n_records + sum(encoder.skipped.values()),
              **built.counts, **{f"skipped {reason}": int(n) for reason, n in sorted(encoder.skipped.items())}}
    provenance = {
        "importer": IMPORTER_VERSION,
        "name": spec.name,
        "schema_origin": spec.origin,
        "schema": spec.raw,
        "inputs": described,
        "counts": counts,
        "periods": list(built.spans),
        "id_maps": sorted(encoder.id_maps),
    }
    _write(out, built, encoder, provenance)
    domain = built.rows["domain"]
    return ImportReport(
        path=out,
        n_rows=int(domain.shape[0]),
        n_events=int(built.history["user_id"].shape[0]),
        rows_per_domain={name: int((domain == i).sum()) for i, name in enumerate(built.schema.domains)},
        spans=built.spans,
        n_history=built.schema.n_history,
        n_transfer=built.schema.n_transfer,
        counts=counts,
    )


def read_id_map(dataset: Path | str, feature: str) -> np.ndarray:
    """Raw text of every id of a dense feature: ``raw[id]`` (object ``[vocab_used + 1]``; ``raw[0]`` is None)."""
    path = Path(dataset) / ID_MAPS_DIR / f"{feature}.parquet"
    if not path.is_file():
        raise CtlError(f"{path} does not exist: feature {feature!r} has no id map (hashed, bucket and constant "
                       "features have none; or this dataset was not imported)")
    table = pq.read_table(path)
    raw = np.empty(table.num_rows + 1, dtype=object)
    raw[table.column("id").to_numpy()] = table.column("raw").to_numpy(zero_copy_only=False)
    return raw
