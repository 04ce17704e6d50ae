"""``ctl score``: an artifact's click probabilities for a file of raw-id requests.

The output (Parquet or CSV, by ``out``'s suffix) has every request column that is not a list
(a history), in the request's order, plus ``pred`` (float32): one row per request row.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ctl.errors import CtlError
from ctl.serve import DEFAULT_BATCH_ROWS
from ctl.serve.artifact import Artifact
from ctl.serve.request_columns import READABLE, Where, count_rows, read_blocks
from ctl.serve.requests import Encoded, RequestEncoder
from ctl.table_io import write_table

#: rows of a row group of a Parquet output, whatever ``batch_rows`` is: memory holds at most one
OUTPUT_ROW_GROUP_ROWS = 65536
#: rows the graph scores per call, at fixed offsets from the file's first row: a row's float32 score
#: depends on the size of the call it is in (the kernels' blocking), so the same calls whatever
#: ``batch_rows`` is make the same bytes
SCORE_CALL_ROWS = 4096


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


def graph_inputs(artifact: Artifact, encoded: Encoded) -> list[torch.Tensor]:
    """The tensors the artifact's graph takes, in its order, from encoded request rows."""
    missing = [spec.name for spec in artifact.inputs if spec.name not in encoded.batch]
    if missing:
        raise CtlError(f"the artifact's graph takes {missing}, which requests cannot give")
    return [encoded.batch[spec.name] for spec in artifact.inputs]


def score_encoded(artifact: Artifact, encoded: Encoded) -> np.ndarray:
    """Click probabilities float32 ``[rows]`` of encoded request rows, in one call of the graph."""
    return artifact.score(graph_inputs(artifact, encoded))


def score_file(artifact: Artifact | Path | str, requests: Path | str, out: Path | str, history: Path | str | None = None,
               batch_rows: int = DEFAULT_BATCH_ROWS, progress: Callable[[int, int], None] | None = None,
               verify_key: Path | str | None = None) -> ScoreReport:
    """Score every row of ``requests`` with ``artifact``; writes ``out`` and returns the report.

    ``verify_key``: refuse an artifact (given by its folder) unless it is signed with that key.

    The requests are read, scored and written ``batch_rows`` rows at a time, so memory holds a
    block, not the file; the output's bytes do not depend on ``batch_rows``.
    ``progress(done, total)`` is called after every block (``total``: the file's rows when its
    metadata says, else the rows so far).
    """
    started = time.perf_counter()
    artifact = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact, verify_key)
    requests, out = Path(requests).expanduser(), Path(out).expanduser()
    if out.suffix.lower() not in READABLE:
        raise CtlError(f"--out {out}: expected a {' or '.join(READABLE)} file name")
    if batch_rows < 1:
        raise CtlError(f"--batch-rows {batch_rows} must be >= 1")
    encoder = RequestEncoder(artifact, Path(history).expanduser() if history is not None else None)
    total = count_rows(requests)
    unknown: Counter = Counter()
    rows, where = 0, ""

    def encoded_blocks() -> Iterator[tuple[pa.Table, list[torch.Tensor]]]:
        nonlocal rows, where
        for block in read_blocks(requests, encoder.text_columns(), batch_rows):
            encoded = encoder.encode(block, Where(requests, rows))
            inputs = graph_inputs(artifact, encoded)
            unknown.update(encoded.unknown)
            rows, where = rows + block.num_rows, encoded.history
            if progress is not None:
                progress(rows, max(total or 0, rows))
            kept = [name for name in block.column_names
                    if not (pa.types.is_list(block.schema.field(name).type) or name.startswith("history_"))]
            yield block.select(kept), inputs
        if rows == 0:
            raise CtlError(f"{requests} holds no request rows")

    write_table(out, _scored_in_calls(artifact, encoded_blocks()), row_group_rows=OUTPUT_ROW_GROUP_ROWS)
    return ScoreReport(out=out, rows=rows, unknown=dict(unknown), history=where,
                       notes=tuple(encoder.notes), seconds=time.perf_counter() - started)


def _scored_in_calls(artifact: Artifact, blocks: Iterable[tuple[pa.Table, list[torch.Tensor]]]) -> Iterator[pa.Table]:
    """The blocks' kept request columns with ``pred``, the graph called on :data:`SCORE_CALL_ROWS` rows
    at a time from the file's first row, whatever the blocks' sizes."""
    tables: list[pa.Table] = []
    inputs: list[list[torch.Tensor]] = []
    for table, tensors in blocks:
        tables.append(table)
        inputs.append(tensors)
        held = sum(t.num_rows for t in tables)
        if held < SCORE_CALL_ROWS:
            continue
        joined, joined_inputs = pa.concat_tables(tables), [torch.cat(parts) for parts in zip(*inputs, strict=True)]
        calls = held // SCORE_CALL_ROWS * SCORE_CALL_ROWS
        for start in range(0, calls, SCORE_CALL_ROWS):
            yield _score(artifact, joined.slice(start, SCORE_CALL_ROWS),
                         [t[start : start + SCORE_CALL_ROWS] for t in joined_inputs])
        tables, inputs = [joined.slice(calls)], [[t[calls:] for t in joined_inputs]]
    if tables and sum(t.num_rows for t in tables):
        yield _score(artifact, pa.concat_tables(tables), [torch.cat(parts) for parts in zip(*inputs, strict=True)])


def _score(artifact: Artifact, table: pa.Table, inputs: list[torch.Tensor]) -> pa.Table:
    return table.append_column("pred", pa.array(artifact.score(inputs), pa.float32()))
