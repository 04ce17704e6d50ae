"""``ctl score``: an artifact's click probabilities for a file of raw-id requests.

The output (Parquet or CSV, by ``out``'s suffix) has every request column that is not a list
(a history), in the request's order, plus ``pred`` (float32): one row per request row.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ctl.errors import CtlError
from ctl.io import atomic_write_bytes
from ctl.serve.artifact import Artifact
from ctl.serve.requests import READABLE, Encoded, RequestEncoder, Where, read_table

#: request rows encoded and scored at a time
DEFAULT_BATCH_ROWS = 65536


@dataclass(frozen=True)
class ScoreReport:
    """What one ``ctl score`` did: rows scored, unknown raw ids per column, where histories came from."""

    out: Path
    rows: int
    unknown: dict[str, int]
    history: str
    notes: tuple[str, ...]
    seconds: float

    def lines(self) -> list[str]:
        lines = [f"scored {self.rows:,} request rows in {self.seconds:.2f} s -> {self.out}",
                 f"histories: {self.history}"]
        unknown = [f"{column} {count:,} " + ("events" if column.startswith("history_") else f"of {self.rows:,} values")
                   for column, count in self.unknown.items() if count]
        lines.append(f"unknown ids scored as the absent id: {', '.join(unknown)}" if unknown else "unknown ids: none")
        return lines + list(self.notes)


def _write(out: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    if out.suffix.lower() == ".csv":
        pacsv.write_csv(table, sink)
    else:
        pq.write_table(table, sink)
    atomic_write_bytes(out, sink.getvalue().to_pybytes())


def score_encoded(artifact: Artifact, encoded: Encoded) -> np.ndarray:
    """Click probabilities float32 ``[rows]`` of encoded request rows."""
    missing = [spec.name for spec in artifact.inputs if spec.name not in encoded.batch]
    if missing:
        raise CtlError(f"the artifact's graph takes {missing}, which requests cannot give")
    return artifact.score([encoded.batch[spec.name] for spec in artifact.inputs])


def score_file(artifact: Artifact | Path | str, requests: Path | str, out: Path | str, history: Path | str | None = None,
               batch_rows: int = DEFAULT_BATCH_ROWS, progress: Callable[[int, int], None] | None = None,
               verify_key: Path | str | None = None) -> ScoreReport:
    """Score every row of ``requests`` with ``artifact``; writes ``out`` and returns the report.

    ``verify_key``: refuse an artifact (given by its folder) unless it is signed with that key.

    ``progress(done, total)`` is called after every block of ``batch_rows`` rows.
    """
    started = time.perf_counter()
    artifact = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact, verify_key)
    requests, out = Path(requests).expanduser(), Path(out).expanduser()
    if out.suffix.lower() not in READABLE:
        raise CtlError(f"out={out}: expected a {' or '.join(READABLE)} file name")
    if batch_rows < 1:
        raise CtlError(f"batch_rows={batch_rows} must be >= 1")
    encoder = RequestEncoder(artifact, Path(history).expanduser() if history is not None else None)
    table = read_table(requests, text_columns=encoder.text_columns())
    unknown: Counter = Counter()
    parts, where = [], ""
    for start in range(0, max(table.num_rows, 1), batch_rows):
        encoded = encoder.encode(table.slice(start, batch_rows), Where(requests, start))
        parts.append(score_encoded(artifact, encoded))
        unknown.update(encoded.unknown)
        where = encoded.history
        if progress is not None:
            progress(min(start + batch_rows, table.num_rows), table.num_rows)
    kept = [name for name in table.column_names
            if not (pa.types.is_list(table.schema.field(name).type) or name.startswith("history_"))]
    result = table.select(kept).append_column("pred", pa.array(np.concatenate(parts), pa.float32()))
    _write(out, result)
    return ScoreReport(out=out, rows=table.num_rows, unknown=dict(unknown), history=where,
                       notes=tuple(encoder.notes), seconds=time.perf_counter() - started)
