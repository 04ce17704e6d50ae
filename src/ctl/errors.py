"""One-line refusals: what went wrong, where, and how to fix it.

Code raises ``CtlError`` (or a ``ValueError`` subclass such as ``DatasetError``) with a message a
user can act on; the CLI prints it in one line and exits non-zero. ``CTL_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


class CtlError(Exception):
    """A refusal whose message is meant for the user as it is."""


def debug_enabled() -> bool:
    return os.environ.get("CTL_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def friendly() -> Iterator[None]:
    """Turn refusals into ``error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except (CtlError, ValueError, FileNotFoundError, PermissionError, OSError) as exc:
        if debug_enabled():
            raise
        from rich.console import Console

        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
