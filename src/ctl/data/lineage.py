"""The earlier versions a dataset continues: ``lineage.json``.

A dataset that grew by whole periods (``ctl data append``, ``ctl data generate ... extend=k``)
keeps the fingerprint and the test period of every earlier version it continues. Every row of
an earlier version's periods before its test period is the same in the newer one, and so is every
history event before that test period: a model trained on those periods of the earlier version
is the model the newer one would train there, so its tracks and runs are extended from their
checkpoints instead of retrained (:mod:`ctl.training.continuation`). An imported dataset also
keeps the earlier test slice's rows (they become the next trainable period); a synthetic world
draws that period anew as a training period, as a world generated at once does.

The file sits beside ``meta.yaml``, not in it: a world continued by k periods has the same
fingerprint as the same world generated at once. Nearest ancestor first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctl.data.dataset import HISTORY_FILE, ROWS_FILE, read_fingerprint
from ctl.data.schema import HISTORY_COLUMNS
from ctl.errors import CtlError
from ctl.io import atomic_write_text

LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class Ancestor:
    """An earlier version of a dataset: its fingerprint and its test period (its periods before are kept)."""

    fingerprint: str
    test_period: int


def read_lineage(path: Path | str) -> list[Ancestor]:
    """The earlier versions the dataset ``path`` continues, nearest first ([] without ``lineage.json``)."""
    target = Path(path) / LINEAGE_FILE
    if not target.is_file():
        return []
    try:
        entries = json.loads(target.read_text())["ancestors"]
        return [Ancestor(str(e["fingerprint"]), int(e["test_period"])) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise CtlError(f"{target} is damaged ({exc}); delete it (tracks and runs then retrain instead of extending)") \
            from None


def write_lineage(path: Path | str, ancestors: list[Ancestor]) -> Path:
    """Write ``lineage.json`` of the dataset ``path`` atomically (nearest ancestor first, one entry per fingerprint)."""
    unique: dict[str, Ancestor] = {}
    for ancestor in sorted(ancestors, key=lambda a: -a.test_period):
        unique.setdefault(ancestor.fingerprint, ancestor)
    text = json.dumps({"ancestors": [asdict(a) for a in unique.values()]}, indent=1)
    return atomic_write_text(Path(path) / LINEAGE_FILE, text + "\n")


def lineage_after(parent: Path | str, test_period: int) -> list[Ancestor]:
    """The lineage of a dataset that continues ``parent`` (whose test period is ``test_period``)."""
    return [Ancestor(read_fingerprint(parent), int(test_period)), *read_lineage(parent)]


def same_values(a: pa.Table, b: pa.Table) -> bool:
    """Equal column names, types and values. Whether a column is marked not-null is left out: it is
    the writer's business (DuckDB marks the columns it can prove, pyarrow from numpy none), not the
    data's."""
    if [(f.name, f.type) for f in a.schema] != [(f.name, f.type) for f in b.schema]:
        return False
    return a.cast(b.schema).equals(b)


def check_prefix(parent: Path | str, child: Path | str, test_period: int) -> None:
    """Refuse ``child`` as a continuation of ``parent`` unless both have the same rows in every period
    before ``test_period`` (the parent's test slice) and the same history events before it."""
    parent, child = Path(parent), Path(child)
    old = pq.read_table(parent / ROWS_FILE)
    new = pq.read_table(child / ROWS_FILE, columns=old.column_names)
    kept = int(pc.sum(pc.less(old.column("period"), test_period)).as_py() or 0)
    if new.num_rows < kept or not same_values(new.slice(0, kept), old.slice(0, kept)):
        raise CtlError(f"{child} does not continue {parent}: their rows of periods 0..{test_period - 1} differ")
    check_history_prefix(parent, child, test_period, old, new)


def check_history_prefix(parent: Path | str, child: Path | str, test_period: int, old: pa.Table | None = None,
                         new: pa.Table | None = None) -> None:
    """Refuse ``child`` unless it has the history events of ``parent`` before its period ``test_period``
    (``old``/``new``: the two ``rows.parquet`` tables, if already read)."""
    parent, child = Path(parent), Path(child)
    old = pq.read_table(parent / ROWS_FILE, columns=["period", "ts"]) if old is None else old
    new = pq.read_table(child / ROWS_FILE, columns=["period", "ts"]) if new is None else new
    # events before the first impression of a period from test_period on (in either dataset) are kept
    starts = [table.filter(pc.greater_equal(table.column("period"), test_period)).column("ts") for table in (old, new)]
    boundary = min([pc.min(ts).as_py() for ts in starts if len(ts)] or [np.iinfo(np.int64).max])
    columns = list(HISTORY_COLUMNS)
    before = [pq.read_table(folder / HISTORY_FILE, columns=columns) for folder in (parent, child)]
    before = [table.filter(pc.less(table.column("ts"), boundary)) for table in before]
    if not same_values(before[1], before[0]):
        raise CtlError(f"{child} does not continue {parent}: their history events before period {test_period} differ")
