"""Finding the newest published artifact, loading it off the request path, and watching for new ones.

``ctl serve DIR`` serves ``DIR`` itself if it is an artifact (it holds ``manifest.json``), else the
newest artifact published in it: the sub-folder whose name sorts last (hidden ones, such as
``ctl export``'s staging folders, are skipped), so names should sort by period or date
(``period-0007``, ``2026-12-07``). ``ctl export RUN_DIR --out DIR/<name>`` publishes atomically (its folder
is renamed into place once complete); a folder copied in by other means may be seen half-written:
it is refused, and tried again once its files change.

:class:`Reloader` checks once (the watcher's poll and ``POST /admin/reload``): it loads a new
candidate completely in the calling thread, never a scoring one, then swaps it in; a candidate that
fails to load is refused with one log line naming the file, and the current model keeps serving.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from ctl.errors import CtlError
from ctl.io import MANIFEST_FILE
from ctl.serve.online.metrics import ServeMetrics
from ctl.serve.online.state import LoadedModel, ModelSlot, load_model

log = logging.getLogger("ctl.serve")


def newest_artifact(root: Path) -> Path:
    """``root`` if it is an artifact, else its published artifact folder whose name sorts last."""
    if (root / MANIFEST_FILE).is_file():
        return root
    if not root.is_dir():
        raise CtlError(f"{root} is not a folder; pass an artifact of ctl export or a folder of them")
    # a link could lead out of the published folder: only real sub-folders are served
    published = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    if not published:
        raise CtlError(f"{root} holds no {MANIFEST_FILE} and no artifact folder: publish one with "
                       f"ctl export RUN_DIR --out {root}/<name>")
    return published[-1]


def folder_state(folder: Path) -> tuple:
    """What changes when a file in ``folder`` is written: every file's path, size and time."""
    try:
        return tuple(sorted((str(p.relative_to(folder)), s.st_size, s.st_mtime_ns)
                            for p in folder.rglob("*") if p.is_file() and (s := p.stat())))
    except OSError:  # a file removed while listing: the state is changing
        return ("changing",)


@dataclass(frozen=True)
class ReloadOutcome:
    """What one check did: ``swapped``, ``unchanged`` or ``refused`` (with the refusal)."""

    outcome: str
    serving: LoadedModel
    message: str = ""


class Reloader:
    """Swaps in the newest artifact under ``root`` when it changes and verifies."""

    def __init__(self, root: Path, slot: ModelSlot, metrics: ServeMetrics, verify_key: Path | None = None) -> None:
        self.root, self.slot, self.metrics, self.verify_key = root, slot, metrics, verify_key
        self._lock = threading.Lock()
        self._served = (slot.current.path, folder_state(slot.current.path))
        self._refused: tuple | None = None
        self._refused_message = ""

    def check(self) -> ReloadOutcome:
        """Load and swap in the newest artifact if it is new; the one served stays on any refusal."""
        with self._lock:
            current = self.slot.current
            try:
                candidate = newest_artifact(self.root)
            except CtlError as exc:
                return self._refuse(("listing", str(exc)), str(exc), current)
            state = (candidate, folder_state(candidate))
            if state == self._served:
                return ReloadOutcome("unchanged", current)
            if state == self._refused:
                return ReloadOutcome("refused", current, self._refused_message)
            try:
                model = load_model(candidate, self.verify_key)
            except CtlError as exc:
                return self._refuse(state, f"refused artifact {candidate}: {exc}", current)
            except Exception as exc:  # noqa: BLE001 (a received graph can fail its warm-up call in any way)
                return self._refuse(state, f"refused artifact {candidate}: its graph failed a warm-up call "
                                           f"({type(exc).__name__}: {exc})", current)
            self._served, self._refused = state, None
            if model.fingerprint == current.fingerprint:
                return ReloadOutcome("unchanged", current)
            self.slot.swap(model)
            self.metrics.serving(model)
            self.metrics.reloads.labels("swapped").inc()
            log.info("serving %s (%s, period %d, fingerprint %s); was %s (fingerprint %s)", model.path,
                     model.method, model.period, model.fingerprint, current.path, current.fingerprint)
            return ReloadOutcome("swapped", model)

    def _refuse(self, state: tuple, message: str, current: LoadedModel) -> ReloadOutcome:
        # one log line per refused state: a watcher polling the same bad folder says it once
        if state != self._refused:
            self._refused, self._refused_message = state, message
            self.metrics.reloads.labels("refused").inc()
            log.error("%s; still serving %s", " ".join(message.split()), current.path)
        return ReloadOutcome("refused", current, message)


class Watcher:
    """A thread that calls :meth:`Reloader.check` every ``interval`` seconds until stopped."""

    def __init__(self, reloader: Reloader, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"the watch interval must be > 0 seconds, got {interval}")
        self.reloader, self.interval = reloader, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ctl-serve-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reloader.check()
            except Exception:
                log.exception("checking %s for a new artifact failed; still serving %s", self.reloader.root,
                              self.reloader.slot.current.path)
