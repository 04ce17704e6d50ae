"""The body of ``POST /score`` and of its answer, and the request as the offline encoder's tables.

A request is one user and N candidate items, every value a raw id (text or an integer, as in a
``ctl score`` request file)::

    {"user_id": "u-17", "features": {"hour": 20},
     "candidates": [{"item_id": "i-3", "category_id": "c-1", "seller_id": 4, "price_bucket": 2}, ...],
     "recent_events": [{"item_id": "i-9", "category_id": "c-1", "domain": "A"}],
     "hist_end": 40}

``features`` are the ones every candidate shares (user and context features); each candidate
gives the rest. ``hist_end`` / ``ts`` choose how much of the user's logged history is visible, as
in a request file (neither: all of it); ``recent_events`` (oldest first) are the user's events since
the artifact's dataset was written, appended to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictInt, StrictStr, ValidationError

from ctl.serve.requests import Where


def _raw_id(value: object) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        # pydantic reports a ValueError as the field's problem (a TypeError would escape as a crash)
        raise ValueError(f"a raw id is text or an integer, not {type(value).__name__}")  # noqa: TRY004
    return value


#: a raw id: the text an importer read, or an integer id
RawId = Annotated[str | int, PlainValidator(_raw_id)]
#: the ``file`` of the offline encoder's messages
REQUEST = Where(Path("request"))
#: most field problems listed in a 4xx answer
MAX_PROBLEMS = 10


class RecentEvent(BaseModel):
    """One behaviour event of the user since the artifact's dataset was written."""

    model_config = ConfigDict(extra="forbid")
    item_id: RawId
    category_id: RawId
    domain: StrictStr


class ScoreRequest(BaseModel):
    """One user and the candidates to score (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    user_id: RawId
    domain: StrictStr | None = None
    features: dict[str, RawId] = Field(default_factory=dict)
    candidates: list[dict[str, RawId]] = Field(min_length=1)
    recent_events: list[RecentEvent] = Field(default_factory=list)
    hist_end: StrictInt | None = Field(default=None, ge=0)
    ts: StrictInt | None = None


def score_request_model(max_candidates: int, max_recent_events: int) -> type[ScoreRequest]:
    """The request's model with the server's bounds on its lists."""

    class BoundedScoreRequest(ScoreRequest):
        candidates: list[dict[str, RawId]] = Field(min_length=1, max_length=max_candidates)
        recent_events: list[RecentEvent] = Field(default_factory=list, max_length=max_recent_events)

    return BoundedScoreRequest


class ScoreResponse(BaseModel):
    """The answer: probabilities in candidate order and the artifact that gave them."""

    probabilities: list[float]
    method: str
    period: int
    fingerprint: str
    artifact: str
    unknown_ids: int
    unknown: dict[str, int]


class RequestProblem(ValueError):
    """A request that cannot be scored: ``field`` names what is wrong, ``problem`` says how."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def problems_of(error: ValidationError) -> list[dict[str, str]]:
    """Pydantic's findings as ``{"field": "candidates[2].item_id", "problem": ...}`` (the first few)."""
    found = []
    for item in error.errors(include_url=False)[:MAX_PROBLEMS]:
        field = ""
        for part in item["loc"]:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        found.append({"field": field or "body", "problem": item["msg"]})
    return found


def _column(values: list) -> pa.Array:
    """Raw ids of one feature: integers if all are, else text (an id map's lookup reads text)."""
    if all(isinstance(v, int) for v in values):
        return pa.array(values, pa.int64())
    return pa.array([str(v) for v in values], pa.string())


def request_tables(request: ScoreRequest, required: tuple[str, ...],
                   known: tuple[str, ...]) -> tuple[pa.Table, pa.Table | None]:
    """The request as the encoder's rows (one per candidate) and its recent events (None if none).

    ``required``: the features of the artifact's domain; ``known``: every feature of its schema (one
    the domain lacks is absent on its rows, as in ``ctl score``, whatever the request gives).
    Refuses a feature given twice, missing from a candidate or unknown to the schema, naming it.
    """
    shared = {"user_id": request.user_id, **request.features}
    if "user_id" in request.features:
        raise RequestProblem("features.user_id", "give user_id once, at the top level")
    n = len(request.candidates)
    columns: dict[str, pa.Array] = {}
    for name in required:
        if name in shared:
            clash = next((i for i, c in enumerate(request.candidates) if name in c), None)
            if clash is not None:
                raise RequestProblem(f"candidates[{clash}].{name}", "also given for every candidate in features; "
                                                                    "give it in one place")
            columns[name] = _column([shared[name]] * n)
            continue
        absent = next((i for i, c in enumerate(request.candidates) if name not in c), None)
        if absent is not None:
            raise RequestProblem(f"candidates[{absent}].{name}", f"missing; the artifact's domain needs {list(required)}"
                                                                  " (shared ones may go in features)")
        columns[name] = _column([c[name] for c in request.candidates])
    unknown = sorted({k for c in request.candidates for k in c} - set(known))
    unknown += sorted(set(request.features) - set(known))
    if unknown:
        raise RequestProblem(unknown[0], f"not a feature of the artifact's schema; its domain takes {list(required)}")
    if request.domain is not None:
        columns["domain"] = pa.array([request.domain] * n, pa.string())
    if request.hist_end is not None and request.ts is not None:
        raise RequestProblem("hist_end", "give hist_end or ts, not both")
    if request.hist_end is not None:
        columns["hist_end"] = pa.array(np.full(n, request.hist_end, dtype=np.int64))
    if request.ts is not None:
        columns["ts"] = pa.array(np.full(n, request.ts, dtype=np.int64))
    recent = None
    if request.recent_events:
        events = request.recent_events
        recent = pa.table({"item_id": _column([e.item_id for e in events]),
                           "category_id": _column([e.category_id for e in events]),
                           "domain": pa.array([e.domain for e in events], pa.string())})
    return pa.table(columns), recent
