"""``ctl data append DATASET INPUT...``: an imported dataset grows by the periods of new logs.

The new logs are imported together with the inputs the dataset was made from (its
``provenance.inputs``: absolute paths with their sha256), with its own import schema, and that
import becomes the dataset: an append gives exactly the dataset an import of all logs at once
gives (rows, ids, histories, origins and their Parquet schemas), after any number of appends,
except the layout:

* the history periods stay, the transfer periods grow by the new ones but the last, which is the
  new test slice;
* ids only grow: the import of all logs must give every stored id the same raw value (new users,
  items and categories get the next ids), and every history event before the new periods must be
  as stored, else the append is refused;
* when the import keeps every stored row as it is, the dataset records the earlier version in
  ``lineage.json``, so tracks and runs extend (:mod:`ctl.training.continuation`). That holds for
  explicit labels and for negatives sampled with ``label.exclude: past`` (a period's negatives
  never depend on later logs). With ``exclude: all`` the new logs redraw earlier negatives (an
  item a user clicks in a new period is no longer a negative before), and so do datasets imported
  by an earlier importer: the append says so in one line, and tracks and runs on it retrain.

Refused with one line: an input that is already one of the dataset's inputs (a doubled append),
an earlier input that is missing or changed (its sha256), records that fall in a stored period
(older than the new periods), inputs of another schema (the importer names the file and column),
and logs that add no period. An append holds the dataset's lock (``.NAME.lock`` beside it, the
lock the registry makes datasets under): a second append waits for the first and is then checked
against the grown dataset. The new folder is built beside the dataset and swapped in with one
atomic rename exchange (Linux ``renameat2``): a killed append leaves the dataset as it was (and a
hidden folder the next append removes). Where the exchange is unavailable (another system, or a
file system without it) the swap is two renames: the dataset moves into the hidden folder
(``.NAME.append-XXXX/previous``), then the new one takes its name; an append killed between the
two leaves the dataset there, and the next append names that folder instead of going on.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

from ctl.data.dataset import META_FILE, ROWS_FILE, read_meta
from ctl.data.id_maps import ID_MAPS_DIR
from ctl.data.importer import ORIGIN_FILE, import_dataset, parse_spec
from ctl.data.lineage import check_history_prefix, lineage_after, same_values, write_lineage
from ctl.data.schema import Schema
from ctl.errors import CtlError
from ctl.io import atomic_write_text, crash_point, file_lock, file_sha256, fsync_path

#: renameat2's flag that swaps two paths atomically (Linux)
_RENAME_EXCHANGE = 2
#: where a two-rename swap puts the earlier version, inside the append's hidden folder
_PREVIOUS = "previous"


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
        if "sha256" in entry and file_sha256(path) != entry["sha256"]:
            raise CtlError(f"{path}: an input of {dataset} changed since it was imported (same size, other "
                           "content: its sha256 differs); append new records in new files")
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
    digests: dict[tuple[int, str], int] = {}
    for i, path in enumerate(earlier):
        digests.setdefault((path.stat().st_size, file_sha256(path)), i)
    for path in new:
        key = (path.stat().st_size, file_sha256(path))
        if key in digests:
            raise CtlError(f"{path} holds the same bytes as {earlier[digests[key]]}, already an input of "
                           f"{dataset}: the same logs cannot be appended twice")
    if len({p.resolve() for p in new}) != len(new):
        raise CtlError(f"the inputs {[str(p) for p in new]} name one file twice")


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


def _rename_exchange() -> Callable[[Path, Path], int] | None:
    """Linux ``renameat2(..., RENAME_EXCHANGE)`` as ``(a, b) -> errno`` (0: swapped); None where the C
    library has no such call."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return None
    at_cwd = -100

    def exchange(a: Path, b: Path) -> int:
        if libc.renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) != 0:
            return ctypes.get_errno() or errno.EIO
        return 0

    return exchange


def _exchange(dataset: Path, grown: Path, staged: Path) -> None:
    """Swap ``grown`` into ``dataset``'s place; afterwards ``grown`` or ``staged/previous`` holds the
    earlier version (removed with ``staged``). One atomic exchange where the system has it, else two
    renames (see the module docstring)."""
    exchange = _rename_exchange()
    if exchange is not None:
        err = exchange(dataset, grown)
        if err == 0:
            return
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise CtlError(f"cannot swap {grown} into {dataset} atomically ({os.strerror(err)}); the dataset is "
                           "unchanged")
    os.rename(dataset, staged / _PREVIOUS)
    crash_point("append-between-renames")
    os.rename(grown, dataset)


def _refuse_interrupted_swap(dataset: Path) -> None:
    """A two-rename swap killed between its renames left the dataset in a hidden folder: name it."""
    if dataset.exists():
        return
    for left in dataset.parent.glob(f".{dataset.name}.append-*/{_PREVIOUS}"):
        raise CtlError(f"{dataset} is missing: an append was killed while swapping it in; its data is in {left} "
                       f"(move that folder back to {dataset})")


def append_logs(dataset: Path | str, inputs: Sequence[Path | str], log: Callable[[str], None] | None = None) -> AppendReport:
    """Append the records of ``inputs`` to the imported dataset ``dataset`` as its next period(s),
    holding the dataset's lock (a concurrent append waits, then appends to the grown dataset)."""
    dataset = Path(dataset).expanduser().resolve()
    new = [Path(p).expanduser().resolve() for p in inputs]
    if not new:
        raise CtlError("no input files given (ctl data append DATASET day_31.csv ...)")
    with file_lock(dataset.parent / f".{dataset.name}.lock"):
        # under the lock: another append between its two renames is no interrupted swap
        _refuse_interrupted_swap(dataset)
        return _append(dataset, new, log or (lambda message: None))


def _append(dataset: Path, new: list[Path], log: Callable[[str], None]) -> AppendReport:
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
    grown = staged / "grown"
    try:
        report = import_dataset(spec, [*earlier, *new], grown, log=log)
        spans = list(report.spans)
        _refuse_older(grown, len(earlier), schema.test_period, [*earlier, *new], spans)
        if len(spans) <= schema.n_periods:
            raise CtlError(f"the inputs {[str(p) for p in new]} add no period after the dataset's last one "
                           f"({spans[schema.test_period]})")
        _check_id_maps(dataset, grown)
        try:
            check_history_prefix(dataset, grown, schema.test_period + 1)
        except CtlError as exc:
            raise CtlError(f"cannot append to {dataset}: importing the new logs with its inputs changes what it "
                           f"holds ({str(exc).split(': ', 1)[-1]})") from None
        _relayout(grown, schema, meta, len(new), spans)
        changed = _changed_rows(dataset, grown, spec.label.exclude)
        if changed is None:
            write_lineage(grown, lineage_after(dataset, schema.test_period))
        else:
            log(f"{changed}: tracks and runs on {dataset} retrain instead of extending")
        fsync_path(grown)
        crash_point("append-swap")
        _exchange(dataset, grown, staged)
        fsync_path(dataset.parent)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # after the swap it holds the earlier version
    added = tuple(range(schema.n_periods, len(spans)))
    return AppendReport(path=dataset, periods=added, spans=tuple(spans[p] for p in added),
                        new_rows=report.n_rows - int(meta["n_rows"]), n_rows=report.n_rows)


def _relayout(grown: Path, schema: Schema, meta: dict, n_new: int, spans: list[str]) -> None:
    """Give the imported ``grown`` the dataset's layout (its history periods, every new period but the
    last a transfer period) and the append in its provenance; the data files stay as imported."""
    imported, _ = read_meta(grown)
    layout = dict(imported["schema"], n_history=schema.n_history, n_transfer=len(spans) - schema.n_history - 1)
    Schema.from_dict(layout)  # a consistent layout, or refused here
    appended = {"inputs": [entry["path"] for entry in imported["provenance"]["inputs"][-n_new:]],
                "periods": list(range(schema.n_periods, len(spans)))}
    provenance = dict(imported["provenance"], appended=[*meta["provenance"].get("appended", []), appended])
    text = yaml.safe_dump(dict(imported, schema=layout, provenance=provenance), sort_keys=False)
    atomic_write_text(grown / META_FILE, text)


def _changed_rows(dataset: Path, grown: Path, exclude: str) -> str | None:
    """None when ``grown`` starts with every stored row as it is, else why not (one line)."""
    stored = pq.read_table(dataset / ROWS_FILE)
    rows = pq.read_table(grown / ROWS_FILE, columns=stored.column_names)
    if rows.num_rows >= stored.num_rows and same_values(rows.slice(0, stored.num_rows), stored):
        return None
    why = ("label.exclude: all avoids every item a user ever touches, so the new logs change earlier negatives"
           if exclude == "all" else "they were made by an earlier importer")
    return f"the stored periods' rows differ from an import of all logs ({why})"
