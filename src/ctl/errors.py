"""One-line refusals: what went wrong, where, and how to fix it.

Code raises ``CtlError`` (or a ``ValueError`` subclass such as ``DatasetError``) with a message a
user can act on; the CLI prints it in one line and exits non-zero. ``CTL_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path


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


def check_overrides(overrides: Sequence[str], conf_dir: Path, output_key: str | None) -> None:
    """Refuse, before Hydra starts, what Hydra would only refuse with a long traceback.

    An unknown config choice (``model=nope``) and, when ``output_key`` names the app's output
    folder (``hydra.run.dir`` / ``hydra.sweep.dir``), a folder that cannot be written: the one the
    override gives, or the working directory that holds the default ones.
    """
    check_config_choices(overrides, conf_dir)
    if output_key is None:
        return
    from ctl.io import check_writable  # ctl.io raises CtlError: imported here, not at module load

    given = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{output_key}=")]
    if given and "${" not in given[-1]:
        check_writable(Path(given[-1]), f"the output folder ({output_key})")
    elif not given:
        check_writable(Path.cwd(), f"the working directory (the default {output_key} is under it)")


def check_config_choices(overrides: Sequence[str], conf_dir: Path) -> None:
    """Refuse a ``group=name`` override that names no ``<conf_dir>/<group>/<name>.yaml``, listing the known names.

    Hydra's own error for a missing config is a long block; this one line comes first. Sweep lists
    (``model=base,ctnet``) and lists of configs (``callbacks=[a,b]``) are checked item by item;
    Hydra's sweep functions (``choice(...)``) are left to Hydra.
    """
    for override in overrides:
        key, sep, value = override.partition("=")
        group = key.lstrip("+~")
        if not sep or group.startswith(("-", "hydra")) or "(" in value or not (conf_dir / group).is_dir():
            continue
        known = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
        for name in (v.strip(" []") for v in value.split(",")):
            if name and name != "null" and name not in known:
                raise CtlError(f"unknown {group} {name!r} (in {override}); the known ones are: {', '.join(known)}")


#: characters of a value a message shows (a received file's value may be a megabyte long)
SHOWN_CHARS = 80


def cut(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def shorten(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a value read from a file in a message."""
    return cut(repr(value), limit)
