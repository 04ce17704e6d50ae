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

import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ctl.data.dataset import HISTORY_FILE, META_FILE, ROWS_FILE, content_digests, meta_yaml
from ctl.data.id_maps import ID_MAPS_DIR, id_map_file
from ctl.data.importer.assemble import assemble
from ctl.data.importer.behaviour_logs import (
    FIRST_SEQ,
    behaviour_counts,
    behaviour_items,
    locate_event,
    stage_behaviour_logs,
)
from ctl.data.importer.engine import DEFAULT_MEMORY_LIMIT, connect
from ctl.data.importer.idmaps import map_table, number_ids
from ctl.data.importer.records import RecordTable
from ctl.data.importer.sources import open_source, reader_kind
from ctl.data.importer.spec import ImportSpec
from ctl.errors import CtlError
from ctl.io import file_sha256, fsync_path, rename_into_place

IMPORTER_VERSION = 3
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


def _read(con: duckdb.DuckDBPyConnection, spec: ImportSpec, inputs: Sequence[Path], table: RecordTable,
          max_rows: int | None, work: Path, block_bytes: int | None, log: Callable[[str], None] | None) -> list[dict]:
    """Check and stage every input's records; returns each input's absolute path, bytes, sha256 and
    records read."""
    described = []
    remaining = max_rows
    for index, path in enumerate(inputs):
        records = 0
        if remaining is None or remaining > 0:
            records = table.add(open_source(con, spec, path, index, remaining, work, block_bytes), index)
            if remaining is not None:
                remaining -= records
        described.append({"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": file_sha256(path),
                          "records": records})
        if log is not None:
            log(f"read {records:,} records from {path}")
    table.finish()
    return described


def _write_id_maps(con: duckdb.DuckDBPyConnection, spec: ImportSpec, folder: Path) -> list[str]:
    (folder / ID_MAPS_DIR).mkdir()
    names = []
    for i, feature in enumerate(spec.features):
        if feature.dense:
            target = str(id_map_file(folder, feature.name)).replace("'", "''")
            con.execute(f"COPY (SELECT id::BIGINT AS id, raw FROM {map_table(i)} ORDER BY id) TO '{target}' "
                        "(FORMAT parquet)")
            names.append(feature.name)
    return sorted(names)


def import_dataset(
    spec: ImportSpec,
    inputs: Sequence[Path | str],
    out: Path | str,
    max_rows: int | None = None,
    block_bytes: int | None = None,
    log: Callable[[str], None] | None = None,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    threads: int | None = None,
    behaviour: Sequence[Path | str] = (),
) -> ImportReport:
    """Convert ``inputs`` (read in order, as one log) with ``spec`` into the dataset folder ``out``.

    Args:
        spec: the import schema (:func:`ctl.data.importer.load_spec`).
        inputs: CSV, Parquet or event-line files.
        out: the new dataset folder; it must not exist.
        max_rows: read at most this many records (CSV lines, Parquet rows, event lines), in order.
        block_bytes: bytes of a text file DuckDB reads at a time; None = DuckDB's own buffer, read on
            every thread (a set size reads on one).
        log: called with a line of progress per input and per step.
        memory_limit: DuckDB's memory limit (``"2GB"``); beyond it the import spills to disk
            (a ``spill/`` folder inside the hidden staging folder next to ``out``).
        threads: DuckDB's threads; None = one per core.
        behaviour: the files of the schema's ``behaviour_logs`` (its ``inputs``, resolved), whose
            events join the history and never become rows.
    """
    out = Path(out).expanduser()
    input_files = [Path(p).expanduser() for p in inputs]
    if out.exists():
        raise CtlError(f"{out}: a dataset (or file) already exists there; choose a new folder")
    if not input_files:
        raise CtlError("no input files given (inputs=[a.csv,b.parquet])")
    behaviour_files = [Path(p).expanduser() for p in behaviour]
    if bool(behaviour_files) != (spec.behaviour_logs is not None):
        raise CtlError("behaviour-log files go with a schema's behaviour_logs section: give both or neither")
    if max_rows is not None and max_rows < 1:
        raise CtlError(f"max_rows must be >= 1 or null, got {max_rows}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.import-{uuid.uuid4().hex[:8]}"
    folder = staging / "dataset"
    folder.mkdir(parents=True)
    con = connect(staging / "work", memory_limit, threads)
    try:
        events = any(reader_kind(path, spec) == "event_lines" for path in input_files)
        table = RecordTable(con, spec, events=events)
        described = _read(con, spec, input_files, table, max_rows, staging / "work", block_bytes, log)
        logged = stage_behaviour_logs(con, spec, behaviour_files) if behaviour_files else {}

        def locate(seq: int) -> tuple[str, str]:
            return locate_event(con, behaviour_files, seq) if seq >= FIRST_SEQ else table.locate(seq)

        sizes = number_ids(con, spec, locate, behaviour_items() if behaviour_files else None)
        built = assemble(con, spec, sizes, folder, table.derived_places(), log)
        counts = {"records": table.rows, **built.counts,
                  **{f"skipped {reason}": int(n) for reason, n in sorted(table.skipped.items())}}
        if behaviour_files:
            counts.update({**behaviour_counts(con), **{f"skipped {k}": int(n) for k, n in sorted(logged.items())}})
        provenance = {
            "importer": IMPORTER_VERSION,
            "name": spec.name,
            "schema_origin": spec.origin,
            "schema": spec.raw,
            "inputs": described,
            **({"behaviour_inputs": [{"path": str(p), "bytes": p.stat().st_size} for p in behaviour_files]}
               if behaviour_files else {}),
            "counts": counts,
            "periods": list(built.spans),
            "id_maps": _write_id_maps(con, spec, folder),
        }
        con.close()
        # meta.yaml last: a folder holding it has every data file complete
        files = [ROWS_FILE, HISTORY_FILE, ORIGIN_FILE, *(f"{ID_MAPS_DIR}/{p.name}" for p in (folder / ID_MAPS_DIR).iterdir())]
        (folder / META_FILE).write_text(meta_yaml(built.schema, built.n_rows, built.n_events, provenance,
                                                  content_digests(folder, files)))
        for path in [*folder.iterdir(), *(folder / ID_MAPS_DIR).iterdir()]:
            if path.is_file():
                fsync_path(path)
        fsync_path(folder / ID_MAPS_DIR)
        fsync_path(folder)
        try:
            rename_into_place(folder, out, "another import")
        except FileExistsError as exc:
            raise CtlError(f"{out}: another import created it meanwhile; choose a new folder") from exc
    finally:
        con.close()
        shutil.rmtree(staging, ignore_errors=True)
    return ImportReport(
        path=out,
        n_rows=built.n_rows,
        n_events=built.n_events,
        rows_per_domain=built.rows_per_domain,
        spans=built.spans,
        n_history=built.schema.n_history,
        n_transfer=built.schema.n_transfer,
        counts=counts,
    )
