"""Reading files that may come from someone else: a run folder, an artifact, a dataset's meta.

Each reader refuses a missing, truncated or foreign file, and each field a wrong-typed value, in
one line naming the file and the field (values cut to :data:`ctl.errors.SHOWN_CHARS`), instead
of the ``KeyError`` or ``TypeError`` deep inside the code that used it. YAML is read with
``yaml.safe_load``: no tags that make objects, no OmegaConf interpolation (``${...}`` stays the
text it is).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml

from ctl.errors import CtlError, cut, shorten

T = TypeVar("T")

_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false", list: "a list",
          dict: "a mapping", type(None): "null"}


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def read_json(path: Path, what: str) -> object:
    """The JSON value of ``path``; ``what`` says what the file is for (in the refusal)."""
    path = Path(path)
    if not path.is_file():
        raise CtlError(f"{path} is missing: {what} needs it")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CtlError(f"{path} is not valid JSON ({cut(str(exc))}): {what} cannot read it") from None


def read_yaml(path: Path, what: str) -> object:
    """The YAML value of ``path`` (plain data only: see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise CtlError(f"{path} is missing: {what} needs it")
    try:
        return yaml.safe_load(path.read_bytes())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CtlError(f"{path} is not valid YAML ({cut(first.strip())}): {what} cannot read it") from None


def mapping(value: object, file: Path | str, key: str = "") -> dict:
    """``value`` if it is a mapping; refused naming ``file`` and ``key`` (empty: the whole file)."""
    if not isinstance(value, Mapping):
        where = f"{key} must be" if key else "must hold"
        raise CtlError(f"{file}: {where} a mapping, got {shorten(value)}")
    return dict(value)


@overload
def field(data: Mapping, key: str, kind: type[T], file: Path | str) -> T: ...


@overload
def field(data: Mapping, key: str, kind: tuple[type, ...], file: Path | str) -> Any: ...


def field(data: Mapping, key: str, kind: type | tuple[type, ...], file: Path | str) -> Any:
    """``data[key]`` (``key`` dotted for nested mappings: ``tracks.source``), of one of the types
    ``kind``; a missing key or another type is refused naming ``file`` and ``key``. An integer is
    never taken from a bool, and a float is taken from an integer."""
    value: object = data
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(value, Mapping):
            raise CtlError(f"{file}: {'.'.join(walked)} must be a mapping, got {shorten(value)}")
        walked.append(part)
        if part not in value:
            raise CtlError(f"{file}: {'.'.join(walked)} is missing")
        value = value[part]
    kinds = _kinds(kind)
    accepted = (isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
                or (float in kinds and isinstance(value, int) and not isinstance(value, bool)))
    if not accepted:
        names = " or ".join(_NAMES.get(k, k.__name__) for k in kinds)
        raise CtlError(f"{file}: {key} must be {names}, got {shorten(value)}")
    return value
