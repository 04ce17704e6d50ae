"""The server's Prometheus metrics, on a registry of its own (``GET /metrics``).

* ``ctl_serve_requests_total{route, code}``: answered requests;
* ``ctl_serve_errors_total{kind}``: ``bad_request``, ``too_large``, ``overloaded``, ``internal``;
* ``ctl_serve_request_seconds``: ``POST /score`` latency (admission to answer), a histogram;
* ``ctl_serve_in_flight``: requests admitted and not yet answered;
* ``ctl_serve_artifact_info{artifact, method, period, fingerprint}``: 1 for the one being served;
* ``ctl_serve_reloads_total{outcome}``: ``swapped`` or ``refused`` artifacts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ctl.serve.online.state import LoadedModel

ERROR_KINDS = ("bad_request", "too_large", "overloaded", "internal")
#: latency buckets (seconds): the tiny models answer in milliseconds, paper-size CTNet in tens
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServeMetrics:
    """The metrics of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ctl_serve_requests", "Answered requests", ("route", "code"), registry=self.registry)
        self.errors = Counter("ctl_serve_errors", "Requests refused or failed, by kind", ("kind",),
                              registry=self.registry)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        self.latency = Histogram("ctl_serve_request_seconds", "POST /score latency", buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.in_flight = Gauge("ctl_serve_in_flight", "Requests admitted and not yet answered",
                               registry=self.registry)
        self.artifact = Gauge("ctl_serve_artifact_info", "The artifact being served (1)",
                              ("artifact", "method", "period", "fingerprint"), registry=self.registry)
        self.reloads = Counter("ctl_serve_reloads", "Artifacts swapped in or refused", ("outcome",),
                               registry=self.registry)
        self._serving: tuple[str, ...] | None = None

    def serving(self, model: LoadedModel) -> None:
        """Mark ``model`` as the one served (and the one before it as not)."""
        labels = (str(model.path), model.method, str(model.period), model.fingerprint)
        if self._serving is not None and self._serving != labels:
            self.artifact.remove(*self._serving)
        self.artifact.labels(*labels).set(1)
        self._serving = labels

    def text(self) -> bytes:
        return generate_latest(self.registry)
