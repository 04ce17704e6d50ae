"""The artifact being served, and its replacement by one reference swap.

A :class:`LoadedModel` is everything a request needs, built completely before it is served: the
verified artifact, its request encoder with the history index looked up in, and a warm-up call
through both. :class:`ModelSlot` holds the current one; a request reads :attr:`ModelSlot.current`
once at its start and uses that object to the end, so no request mixes two models, and the old
model is freed when the last request holding it is answered.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ctl.io import MANIFEST_FILE
from ctl.serve.artifact import Artifact
from ctl.serve.requests import RequestEncoder, Where
from ctl.serve.score import score_encoded

#: rows of the warm-up call a model makes before it is served
WARMUP_ROWS = 2


@dataclass(frozen=True)
class LoadedModel:
    """A verified artifact ready to score: its encoder and what answers and metrics say of it."""

    artifact: Artifact
    encoder: RequestEncoder
    #: the first 16 hex digits of the manifest's sha256 (the manifest holds every file's sha256)
    fingerprint: str

    @property
    def path(self) -> Path:
        return self.artifact.path

    @property
    def method(self) -> str:
        return str(self.artifact.manifest["method"])

    @property
    def period(self) -> int:
        """The last period the model was trained on (-1 if the manifest lists none)."""
        periods = self.artifact.manifest.get("periods") or [-1]
        return int(max(periods))

    def describe(self) -> dict[str, object]:
        return {"artifact": str(self.path), "method": self.method, "domain": self.artifact.domain,
                "period": self.period, "fingerprint": self.fingerprint}


def artifact_fingerprint(folder: Path) -> str:
    return hashlib.sha256((folder / MANIFEST_FILE).read_bytes()).hexdigest()[:16]


def load_model(folder: Path, verify_key: Path | None = None) -> LoadedModel:
    """Verify and load the artifact in ``folder``, build its history index and call it once.

    Raises:
        CtlError: whatever :meth:`Artifact.load` refuses (a changed, half-written, unsigned or
            foreign folder), a dataset that is gone or replaced, a graph that cannot run.
    """
    fingerprint = artifact_fingerprint(folder) if (folder / MANIFEST_FILE).is_file() else ""
    artifact = Artifact.load(folder, verify_key)
    encoder = RequestEncoder(artifact)
    # absent ids (0) of every feature the domain carries: builds the history index and runs the graph
    warmup = pa.table({name: pa.array([0] * WARMUP_ROWS, pa.int64()) for name in encoder.required_features()})
    score_encoded(artifact, encoder.encode(warmup, Where(folder / "warm-up request")))
    return LoadedModel(artifact=artifact, encoder=encoder, fingerprint=fingerprint)


class ModelSlot:
    """The model being served; :meth:`swap` replaces it between requests."""

    def __init__(self, model: LoadedModel) -> None:
        self._current = model
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedModel:
        return self._current

    def swap(self, model: LoadedModel) -> LoadedModel:
        """Serve ``model`` from the next request on; returns the one it replaces."""
        with self._lock:
            old, self._current = self._current, model
        return old
