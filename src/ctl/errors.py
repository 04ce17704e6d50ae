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
        from rich.markup import escape

        # One line whatever the message holds (a parser's multi-line report, say), never read as markup.
        message = escape(" ".join(str(exc).split()))
        Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


#: characters of a value a message shows (a received file's value may be a megabyte long)
SHOWN_CHARS = 80


def cut(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def shorten(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a value read from a file in a message."""
    return cut(repr(value), limit)
