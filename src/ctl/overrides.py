"""Checks of a Hydra app's command-line overrides that run before Hydra starts, so that what Hydra
would refuse with a long traceback is refused in one line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ctl.errors import CtlError
from ctl.io import check_writable


def check_overrides(overrides: Sequence[str], conf_dir: Path, output_key: str | None) -> None:
    """Refuse, before Hydra starts, what Hydra would only refuse with a long traceback.

    An unknown config choice (``model=nope``) and, when ``output_key`` names the app's output
    folder (``hydra.run.dir`` / ``hydra.sweep.dir``), a folder that cannot be written: the one the
    override gives, or the working directory that holds the default ones.
    """
    check_config_choices(overrides, conf_dir)
    if output_key is None:
        return
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
