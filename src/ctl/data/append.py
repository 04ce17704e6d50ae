"""``ctl data append DATASET inputs=[...]``: an imported dataset grows by the periods of new logs.

The new logs are imported together with the inputs the dataset was made from (its
``provenance.inputs``), with its own import schema, and the new periods' rows of that import are
added to the stored dataset:

* every stored row (the test slice included, which becomes a transfer period) is kept as it is,
  and every id of the stored id maps (new users, items and categories get the next ids; the tables
  only grow); the import of all logs must agree with the stored dataset on every history event
  before the new periods, so that stored rows see the same behaviour sequences;
* the new periods' rows and the extended histories are the import's: for logs with explicit labels
  the result is the dataset an import of all logs at once gives; with sampled negatives only the
  stored periods' negatives differ from such an import (they were drawn before the new logs
  existed, and an import draws them from one stream over all positives, avoiding every item a
  user ever touched), and they are kept, never redrawn;
* the history periods stay, the transfer periods grow by the new ones but the last, which is the
  new test slice;
* the dataset keeps the earlier version in ``lineage.json``, so tracks and runs extend
  (:mod:`ctl.training.continuation`).

Refused with one line: an input that is already one of the dataset's inputs (a doubled append),
an earlier input that is missing or changed, records that fall in a stored period (older than the
new periods), inputs of another schema (the importer names the file and column), and logs that
add no period. The new folder is built beside the dataset and swapped in with one atomic rename
exchange: a killed append leaves the dataset as it was (and a hidden folder the next append removes).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctl.data.dataset import HISTORY_FILE, META_FILE, ROWS_FILE, read_meta, write_dataset
from ctl.data.importer import ID_MAPS_DIR, ORIGIN_FILE, import_dataset, parse_spec
from ctl.data.lineage import check_history_prefix, lineage_after, write_lineage
from ctl.data.schema import Schema
from ctl.errors import CtlError
from ctl.io import crash_point, file_sha256, fsync_path

#: renameat2's flag that swaps two paths atomically (Linux)
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class AppendReport:
    """What an append added: the new periods (with their spans) and rows."""

    path: Path
    periods: tuple[int, ...]
    spans: tuple[str, ...]
    new_rows: int
    n_rows: int


def _earlier_inputs(dataset: Path, provenance: dict) -> list[Path]:
    inputs = []
    for entry in provenance["inputs"]:
        path = Path(entry["path"])
        if not path.is_file():
            raise CtlError(f"{path}: an input of {dataset} is missing; an append re-reads the dataset's inputs "
                           "(provenance.inputs in its meta.yaml), so keep them where they were imported from")
        if path.stat().st_size != int(entry["bytes"]):
            raise CtlError(f"{path}: an input of {dataset} changed since it was imported ({entry['bytes']} bytes "
                           f"then, {path.stat().st_size} now); append new records in new files")
        inputs.append(path)
    return inputs


def _refuse_doubled(dataset: Path, earlier: list[Path], new: Sequence[Path]) -> None:
    seen = {p.resolve(): i for i, p in enumerate(earlier)}
    for path in new:
        if not path.is_file():
            raise CtlError(f"{path}: no such input file")
        if path.resolve() in seen:
            raise CtlError(f"{path} is already an input of {dataset} (input {seen[path.resolve()] + 1} of its "
                           "provenance): each append takes new logs only")
    digests = {}
    for i, path in enumerate(earlier):
        digests.setdefault((path.stat().st_size, file_sha256(path)), i)
    for path in new:
        key = (path.stat().st_size, file_sha256(path))
        if key in digests:
            raise CtlError(f"{path} holds the same bytes as {earlier[digests[key]]}, already an input of "
                           f"{dataset}: the same logs cannot be appended twice")
    if len({p.resolve() for p in new}) != len(new):
        raise CtlError(f"inputs={[str(p) for p in new]} names one file twice")


def _refuse_older(staged: Path, n_earlier: int, test_period: int, inputs: list[Path], spans: list[str]) -> None:
    """Refuse new records that landed in a stored period, naming the first one's file and line."""
    period = pq.read_table(staged / ROWS_FILE, columns=["period"]).column("period").to_numpy()
    origin = pq.read_table(staged / ORIGIN_FILE, columns=["input", "line"])
    source, line = origin.column("input").to_numpy(), origin.column("line").to_numpy()
    older = (source >= n_earlier) & (period <= test_period)
    if older.any():
        first = np.flatnonzero(older)
        row = first[np.argmin(source[first].astype(np.int64) * (1 << 40) + line[first])]
        p = int(period[row])
        raise CtlError(f"{inputs[int(source[row])]}: line {int(line[row])} falls in period {p} ({spans[p]}), which "
                       f"the dataset already has (its last period is {test_period}, {spans[test_period]}): "
                       "an append takes records after the dataset's last period only")


def _check_id_maps(dataset: Path, staged: Path) -> None:
    for old in sorted((dataset / ID_MAPS_DIR).glob("*.parquet")):
        before, after = pq.read_table(old), pq.read_table(staged / ID_MAPS_DIR / old.name)
        if after.num_rows < before.num_rows or not after.slice(0, before.num_rows).equals(before):
            raise CtlError(f"cannot append: the ids of {old.stem} would change (id_maps/{old.name}); "
                           "the dataset's ids must stay as they are")


def _exchange(a: Path, b: Path) -> None:
    """Swap the folders ``a`` and ``b`` in one atomic step (renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_cwd = -100
    if libc.renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise CtlError(f"cannot swap {b} into {a} atomically ({os.strerror(err)}); the dataset is unchanged")


def append_logs(dataset: Path | str, inputs: Sequence[Path | str], log: Callable[[str], None] | None = None) -> AppendReport:
    """Append the records of ``inputs`` to the imported dataset ``dataset`` as its next period(s)."""
    dataset = Path(dataset).expanduser().resolve()
    new = [Path(p).expanduser() for p in inputs]
    if not new:
        raise CtlError("no input files given (inputs=[day_31.csv])")
    meta, schema = read_meta(dataset)
    provenance = meta.get("provenance") or {}
    if "importer" not in provenance:
        raise CtlError(f"{dataset} was not imported (no importer provenance); a synthetic world grows with "
                       "`ctl data generate data=... extend=k`")
    earlier = _earlier_inputs(dataset, provenance)
    _refuse_doubled(dataset, earlier, new)
    for stale in dataset.parent.glob(f".{dataset.name}.append-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a killed append's leftovers
    spec = parse_spec(provenance["schema"], str(provenance.get("schema_origin", dataset / META_FILE)))
    if spec.time.periods is not None:
        raise CtlError(f"{dataset} cuts its records into {spec.time.periods} equal chunks in file order "
                       "(time.periods): more records would move every chunk; import with time.period or "
                       "time.period_column to append new logs as new periods")
    staged = dataset.parent / f".{dataset.name}.append-{uuid.uuid4().hex[:8]}"
    try:
        report = import_dataset(spec, [*earlier, *new], staged, log=log)
        spans = list(report.spans)
        _refuse_older(staged, len(earlier), schema.test_period, [*earlier, *new], spans)
        if len(spans) <= schema.n_periods:
            raise CtlError(f"inputs={[str(p) for p in new]} add no period after the dataset's last one "
                           f"({spans[schema.test_period]})")
        _check_id_maps(dataset, staged)
        try:
            check_history_prefix(dataset, staged, schema.test_period + 1)
        except CtlError as exc:
            raise CtlError(f"cannot append to {dataset}: importing the new logs with its inputs changes what it "
                           f"holds ({str(exc).split(': ', 1)[-1]})") from None
        grown = _merge(dataset, staged, schema, new, spans)
        write_lineage(grown, lineage_after(dataset, schema.test_period))
        fsync_path(grown)
        crash_point("append-swap")
        _exchange(dataset, grown)
        fsync_path(dataset.parent)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # after the swap it holds the earlier version
    added = tuple(range(schema.n_periods, len(spans)))
    n_rows = int(read_meta(dataset)[0]["n_rows"])
    return AppendReport(path=dataset, periods=added, spans=tuple(spans[p] for p in added),
                        new_rows=n_rows - int(meta["n_rows"]), n_rows=n_rows)


def _merge(dataset: Path, staged: Path, schema: Schema, new: Sequence[Path], spans: list[str]) -> Path:
    """The grown dataset inside ``staged`` (``staged/grown``): the stored rows and origins as they are,
    then the import's rows of the new periods; the import's history and id maps; the stored
    history periods, every new period but the last a transfer period."""
    stored_rows, imported = pq.read_table(dataset / ROWS_FILE), pq.read_table(staged / ROWS_FILE)
    later = pc.greater(imported.column("period"), schema.test_period)
    rows = pa.concat_tables([stored_rows, imported.filter(later).select(stored_rows.column_names)])
    origin = pa.concat_tables([pq.read_table(dataset / ORIGIN_FILE),
                               pq.read_table(staged / ORIGIN_FILE).filter(later)])
    meta, _ = read_meta(staged)
    layout = dict(meta["schema"], n_history=schema.n_history, n_transfer=len(spans) - schema.n_history - 1)
    provenance = dict(meta["provenance"])
    provenance["appended"] = [*read_meta(dataset)[0]["provenance"].get("appended", []),
                              {"inputs": [str(p) for p in new], "periods": list(range(schema.n_periods, len(spans)))}]
    grown = write_dataset(staged / "grown", Schema.from_dict(layout), _columns(rows),
                          _columns(pq.read_table(staged / HISTORY_FILE)), provenance)
    shutil.copytree(staged / ID_MAPS_DIR, grown / ID_MAPS_DIR)
    pq.write_table(origin, grown / ORIGIN_FILE)
    for path in (grown / ID_MAPS_DIR, grown / ORIGIN_FILE, grown):
        fsync_path(path)
    return grown


def _columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy() for name in table.column_names}


def append_main(argv: list[str]) -> None:
    """``ctl data append DATASET inputs=[a.csv,b.parquet] [root=DIR] [progress=false]``."""
    from rich.console import Console

    if not argv or argv[0] in ("-h", "--help"):
        print(APPEND_USAGE)
        return
    dataset, options = argv[0], dict(_option(arg) for arg in argv[1:])
    unknown = sorted(set(options) - {"inputs", "root", "progress"})
    if unknown:
        raise CtlError(f"ctl data append: unknown option {unknown[0]!r}; see ctl data append --help")
    items = options.get("inputs", "").strip()
    items = items[1:-1] if items.startswith("[") and items.endswith("]") else items
    root = Path(options.get("root", ".")).expanduser()
    inputs = [p if Path(p).is_absolute() else root / p for p in (s.strip() for s in items.split(",")) if p]
    log = Console(stderr=True).print if options.get("progress", "true").lower() != "false" else None
    report = append_logs(dataset, inputs, log=log)
    Console().print(f"appended {report.new_rows:,} rows as period(s) {', '.join(map(str, report.periods))} "
                    f"({'; '.join(report.spans)}); {report.n_rows:,} rows in all; the test slice is now period "
                    f"{report.periods[-1]}\ndataset: {report.path}", highlight=False)


def _option(arg: str) -> tuple[str, str]:
    key, sep, value = arg.partition("=")
    if not sep:
        raise CtlError(f"ctl data append: expected key=value after DATASET, got {arg!r}")
    return key.strip(), value.strip()


APPEND_USAGE = """usage: ctl data append DATASET inputs=[a.csv,b.parquet] [root=DIR] [progress=false]

Append the records of new log files (same schema as the import) to the imported dataset DATASET as
its next period(s): the last one is the new test slice, the one before (the earlier test slice)
becomes trainable. Ids already given keep their ids, new users/items/categories get new ones, and
histories extend. The dataset's own inputs are read again (they must still be where they were
imported from). Tracks and runs then extend: ctl train ... continue_from=RUN_DIR (docs/operations.md).

Refused with one line: records in a period the dataset already has, inputs of another schema, an
input appended before, logs that add no period. Atomic: a killed append leaves DATASET as it was.
"""
