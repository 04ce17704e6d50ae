"""Where a run folder keeps what training writes and ``ctl eval`` reads, named once for both."""

from __future__ import annotations

from pathlib import Path


def baseline_copy(run_dir: Path, name: str) -> Path:
    """Where a transfer run keeps its own copy of its target base track's file ``name``."""
    return run_dir / f"baseline_{name}"
