"""``ctl serve``: the command's one function, whose parameters are its options."""

from __future__ import annotations

import logging
from pathlib import Path

from ctl.errors import CtlError

#: uvicorn's bound on open connections and tasks (past it, 503), well above max_in_flight
DEFAULT_MAX_CONNECTIONS = 1024


def serve_command(artifact_dir: Path, host: str = "127.0.0.1", port: int = 8000, watch: bool = False,
                  poll_seconds: float = 5.0, verify_key: Path | None = None, max_in_flight: int = 64,
                  score_threads: int = 1, torch_threads: int = 1, max_candidates: int = 10_000,
                  max_body_bytes: int = 4 * 2**20, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
    """Answer scoring requests over HTTP with an artifact of ctl export, swapping in newer ones.

    ARTIFACT_DIR is an artifact folder, or a folder of published artifacts whose sub-folder that
    sorts last is served (name them by period or date). With --watch the folder is checked every
    --poll-seconds; POST /admin/reload (loopback clients only) checks at once. A new artifact is
    verified and loaded off the request path, then swapped in between requests; one that does not
    verify is refused in one log line and the current one keeps serving.

    Routes: POST /score, GET /healthz, GET /readyz, GET /metrics, POST /admin/reload (docs/serving.md).
    One process; --score-threads requests are scored at a time with --torch-threads threads each,
    and past --max-in-flight admitted requests the server answers 503 at once. SIGTERM finishes the
    requests in flight, then exits.
    """
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise CtlError(f"ctl serve needs {exc.name}, which is not installed: pip install 'ctl[serve]'") from None
    import torch

    from ctl.serve.online.app import ServeLimits, create_app
    from ctl.serve.online.metrics import ServeMetrics
    from ctl.serve.online.state import ModelSlot, load_model
    from ctl.serve.online.watcher import Reloader, newest_artifact

    for name, value in (("max_in_flight", max_in_flight), ("score_threads", score_threads),
                        ("torch_threads", torch_threads), ("max_candidates", max_candidates),
                        ("max_body_bytes", max_body_bytes), ("max_connections", max_connections)):
        if value < 1:
            raise CtlError(f"--{name.replace('_', '-')}={value} must be >= 1")
    if watch and poll_seconds <= 0:
        raise CtlError(f"--poll-seconds={poll_seconds} must be > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(torch_threads)
    root = Path(artifact_dir).expanduser()
    key = Path(verify_key).expanduser() if verify_key is not None else None
    model = load_model(newest_artifact(root), key)
    slot, metrics = ModelSlot(model), ServeMetrics()
    limits = ServeLimits(max_in_flight=max_in_flight, score_threads=score_threads, max_candidates=max_candidates,
                         max_recent_events=max_candidates, max_body_bytes=max_body_bytes)
    app = create_app(slot, Reloader(root, slot, metrics, key), metrics, limits, poll_seconds if watch else None)
    logging.getLogger("ctl.serve").info("serving %s (%s, period %d, fingerprint %s) on http://%s:%d", model.path,
                                        model.method, model.period, model.fingerprint, host, port)
    uvicorn.run(app, host=host, port=port, workers=1, limit_concurrency=max_connections, log_level="info",
                access_log=False)
