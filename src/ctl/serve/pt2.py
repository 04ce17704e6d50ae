"""Loading a ``torch.export`` program (``model.pt2``) without unpickling anything.

``torch.export.load`` reads a program's graph as JSON and its weights as raw bytes, but unpickles
in three places: a payload marked ``use_pickle`` (weights, constants), opaque or script-object
constants, and the sample inputs, which torch 2.13 loads with ``weights_only=True`` and, when
that fails, again with ``weights_only=False`` (``torch._export.serde.serialize.
deserialize_torch_artifact``). A crafted ``data/sample_inputs/model.pt`` inside the archive
thus runs code. So before torch reads the archive, :func:`check_archive` requires

* every member to be one that ``torch.export.save`` writes for a program of plain tensors (the
  graph, the weights and tensor constants as raw bytes with their JSON configs, the sample
  inputs, the archive's version files): no legacy ``.pt`` payloads, no extra files, no objects;
* every weight and constant to be raw bytes (``use_pickle: false``) of a tensor file name;
* the sample inputs to load with ``weights_only=True`` (so torch's first, safe try succeeds).

And while torch reads it, ``torch.load`` refuses ``weights_only=False``: a second wall should a
later torch add a path this check does not know.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from ctl.errors import CtlError, cut, shorten

#: members of a program's archive (below its one top folder), as torch.export.save writes them
_MEMBERS = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                      r"|models/model\.json|data/sample_inputs/model\.pt"
                      r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
                      r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+")
#: payload configs, and the file names their entries may point to
_PAYLOADS = {"data/weights/model_weights_config.json": re.compile(r"weight_\d+"),
             "data/constants/model_constants_config.json": re.compile(r"tensor_\d+")}
SAMPLE_INPUTS = "data/sample_inputs/model.pt"


def check_archive(path: Path) -> None:
    """Refuse a ``model.pt2`` that torch would unpickle anything from (see the module docstring)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            tops = {name.split("/", 1)[0] for name in names}
            if len(tops) != 1 or any("/" not in name for name in names):
                raise CtlError(f"{path} is not a torch.export archive (its files are not in one top folder)")
            top = tops.pop()
            members = {name.split("/", 1)[1]: name for name in names if not name.endswith("/")}
            foreign = sorted(m for m in members if not _MEMBERS.fullmatch(m))
            if foreign:
                raise CtlError(f"{path} holds {shorten(foreign[0])}, which a program of plain tensors does not; "
                               "refused (its loader could unpickle it)")
            for config, file_names in _PAYLOADS.items():
                if config in members:
                    _check_payloads(path, config, archive.read(members[config]), file_names)
            if SAMPLE_INPUTS in members:
                _check_tensors_only(path, f"{top}/{SAMPLE_INPUTS}", archive.read(members[SAMPLE_INPUTS]))
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise CtlError(f"{path} is not a readable torch.export archive ({cut(str(exc))})") from None


def _check_payloads(path: Path, config: str, data: bytes, file_names: re.Pattern) -> None:
    try:
        entries = json.loads(data)["config"]
        if not isinstance(entries, dict):
            raise TypeError("config is not a mapping")
    except (ValueError, KeyError, TypeError) as exc:
        raise CtlError(f"{path}: {config} is not a payload config ({cut(str(exc))})") from None
    for name, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
            raise CtlError(f"{path}: {config} marks {shorten(name)} to be unpickled (use_pickle); refused: "
                           "ctl's exports hold raw tensors only")
        if not isinstance(entry.get("path_name"), str) or not file_names.fullmatch(entry["path_name"]):
            raise CtlError(f"{path}: {config} entry {shorten(name)} points to {shorten(entry.get('path_name'))}, "
                           "not a tensor file; refused")


def _check_tensors_only(path: Path, member: str, data: bytes) -> None:
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # noqa: BLE001 (whatever the safe loader refused: never retry unsafely)
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CtlError(f"{path}: {member} holds more than tensors and plain data ({cut(first.strip())}); refused, "
                       "since loading it could run code") from None


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    """``torch.load`` refuses ``weights_only=False`` while the block runs."""
    load = torch.load

    def guarded(*args, **kwargs):
        if kwargs.get("weights_only") is False:
            raise CtlError("the program asks to unpickle objects (torch.load with weights_only=False); refused")
        return load(*args, **kwargs)

    torch.load = guarded
    try:
        yield
    finally:
        torch.load = load


def load_program(path: Path) -> torch.export.ExportedProgram:
    """The program saved at ``path``, loaded without unpickling; refused in one line if it cannot be."""
    path = Path(path)
    check_archive(path)
    try:
        with _weights_only():
            return torch.export.load(str(path))
    except CtlError as exc:
        raise CtlError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (torch's deserialiser has many error types: name the file)
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CtlError(f"{path} cannot be loaded as a torch.export program ({type(exc).__name__}: "
                       f"{cut(first.strip(), 160)})") from None
