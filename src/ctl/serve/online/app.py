"""The HTTP routes of ``ctl serve`` (FastAPI): score, health, readiness, metrics, reload.

* ``POST /score``: the body of :mod:`ctl.serve.online.schema`; answers the probabilities in
  candidate order with the artifact's method, period and fingerprint and the unknown ids' count.
  4xx name the field and the problem: 413 a body over ``max_body_bytes``, 422 a malformed one (not
  JSON, not UTF-8, wrong types, missing fields, too many candidates, unknown domain or feature).
  503 at once when ``max_in_flight`` requests are admitted already.
* ``GET /healthz``: the process answers. ``GET /readyz``: the artifact being served.
* ``GET /metrics``: Prometheus text (:mod:`ctl.serve.online.metrics`).
* ``POST /admin/reload``: check for a new artifact now (loopback clients only); 409 if refused.

Scoring runs on a pool of ``score_threads`` threads, so the event loop keeps answering health
checks, metrics and 503s while models compute, and a reload loads in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ctl.errors import CtlError
from ctl.serve.online.admission import Admission
from ctl.serve.online.metrics import ServeMetrics
from ctl.serve.online.schema import RequestProblem, problems_of, score_request_model
from ctl.serve.online.scoring import score_one
from ctl.serve.online.state import ModelSlot
from ctl.serve.online.watcher import Reloader, Watcher

log = logging.getLogger("ctl.serve")
#: how the offline encoder names a column and row in its refusals
ENCODER_FIELD = re.compile(r"column '(\w+)'(?:, row (\d+))?")


@dataclass(frozen=True)
class ServeLimits:
    """What one server takes on at most."""

    #: requests admitted (scoring or queued for a scoring thread); one more gets 503
    max_in_flight: int = 64
    #: requests scored at a time
    score_threads: int = 1
    max_candidates: int = 10_000
    max_recent_events: int = 10_000
    max_body_bytes: int = 4 * 2**20


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused once it passes ``limit`` bytes (before it is all in memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def field_of(message: str) -> str:
    """The request field an encoder's refusal names (``column 'x', row r``), as the request spells it."""
    found = ENCODER_FIELD.search(message)
    if found is None:
        return "request"
    column, row = found.group(1), found.group(2)
    if column in ("domain", "hist_end", "ts", "user_id"):
        return column
    return f"candidates[{int(row) - 1}].{column}" if row else column


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(slot: ModelSlot, reloader: Reloader, metrics: ServeMetrics, limits: ServeLimits = ServeLimits(),
               watch_interval: float | None = None) -> FastAPI:
    """The server's app around ``slot``; with ``watch_interval`` (seconds) a watcher polls for new artifacts."""
    admission = Admission(limits.max_in_flight)
    request_model = score_request_model(limits.max_candidates, limits.max_recent_events)
    executor = ThreadPoolExecutor(max_workers=limits.score_threads, thread_name_prefix="ctl-score")
    watcher = Watcher(reloader, watch_interval) if watch_interval else None
    metrics.serving(slot.current)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if watcher is not None:
            watcher.start()
        try:
            yield
        finally:  # uvicorn gets here after the requests in flight were answered
            if watcher is not None:
                watcher.stop()
            executor.shutdown(wait=True)

    app = FastAPI(title="ctl serve", lifespan=lifespan)

    def answer(route: str, code: int, body: object, error: str | None = None, **headers: str) -> JSONResponse:
        metrics.requests.labels(route, str(code)).inc()
        if error is not None:
            metrics.errors.labels(error).inc()
        return JSONResponse(body, status_code=code, headers=headers or None)

    def release(_=None) -> None:
        admission.leave()
        metrics.in_flight.dec()

    @app.post("/score")
    async def score(request: Request) -> JSONResponse:
        if not admission.try_enter():
            return answer("/score", 503, {"error": f"overloaded: {limits.max_in_flight} requests in flight; retry "
                                                   "later"}, "overloaded", **{"Retry-After": "1"})
        started = time.perf_counter()
        metrics.in_flight.inc()
        submitted = False
        try:
            model = slot.current  # the one model this request sees, whatever is swapped in meanwhile
            parsed = request_model.model_validate_json(await read_body(request, limits.max_body_bytes))
            future = executor.submit(score_one, model, parsed)
            future.add_done_callback(release)
            submitted = True
            result = await asyncio.wrap_future(future)
        except BodyTooLarge:
            return answer("/score", 413, {"error": f"body: larger than {limits.max_body_bytes:,} bytes",
                                          "problems": [{"field": "body", "problem": "too large"}]}, "too_large")
        except ValidationError as exc:
            problems = problems_of(exc)
            first = problems[0]
            return answer("/score", 422, {"error": f"{first['field']}: {first['problem']}", "problems": problems},
                          "bad_request")
        except RequestProblem as exc:
            return answer("/score", 422, {"error": str(exc), "problems": [{"field": exc.field,
                                                                           "problem": exc.problem}]}, "bad_request")
        except CtlError as exc:
            message = " ".join(str(exc).split())
            return answer("/score", 422, {"error": message, "problems": [{"field": field_of(message),
                                                                          "problem": message}]}, "bad_request")
        except Exception:
            log.exception("scoring a request failed")
            return answer("/score", 500, {"error": "internal error while scoring; see the server's log"}, "internal")
        finally:
            if not submitted:
                release()
        metrics.latency.observe(time.perf_counter() - started)
        return answer("/score", 200, result.model_dump())

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return answer("/healthz", 200, {"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return answer("/readyz", 200, {"status": "ready", **slot.current.describe(),
                                       "in_flight": admission.admitted, "max_in_flight": admission.limit})

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.requests.labels("/metrics", "200").inc()
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/admin/reload")
    async def reload(request: Request) -> JSONResponse:
        host = request.client.host if request.client else None
        if not is_loopback(host):
            return answer("/admin/reload", 403, {"error": f"POST /admin/reload is answered to loopback clients "
                                                          f"only, not {host}"}, "bad_request")
        outcome = await run_in_threadpool(reloader.check)
        body = {"outcome": outcome.outcome, "serving": outcome.serving.describe()}
        if outcome.outcome == "refused":
            return answer("/admin/reload", 409, {**body, "error": outcome.message})
        return answer("/admin/reload", 200, body)

    return app
