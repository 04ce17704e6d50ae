"""A bound on the requests being scored or waiting to be: past it, the server answers 503 at once.

Scoring runs on a fixed pool of threads; without a bound, requests would pile up in its queue and
in memory while each waited longer. :class:`Admission` counts the admitted ones; one more than
``limit`` is turned away before its body is read.
"""

from __future__ import annotations

import threading


class Admission:
    """At most ``limit`` requests admitted at a time."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {limit}")
        self.limit = limit
        self._admitted = 0
        self._lock = threading.Lock()

    @property
    def admitted(self) -> int:
        return self._admitted

    def try_enter(self) -> bool:
        """Admit one more request, or return False if ``limit`` are admitted."""
        with self._lock:
            if self._admitted >= self.limit:
                return False
            self._admitted += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._admitted -= 1
