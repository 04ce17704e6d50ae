"""Configs -> imports: ``ctl data import``, and data presets that import on first use.

A data preset with an ``importer:`` node (``conf/data/amazon_food_kitchen.yaml``) names a schema
(a composed mapping, a packaged schema name or a YAML path), its input files (relative to
``root``) and an optional ``max_rows``. The registry keys the imported dataset by the schema, the
inputs' paths, sizes, modification and change times, and ``max_rows`` (:func:`import_key`), so
editing a file or the schema imports again, and an unchanged one is reused. The imported dataset
records each input's sha256, so its fingerprint follows the inputs' content: an input edited in
place makes another dataset, with another fingerprint, even at the same size.

Public data root: ``root`` if set, else ``$CTL_PUBLIC_DATA``, else ``../shared/data`` next to the
repository (the folder holding ``amazon_food_kitchen_c2dsr/`` etc.).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from ctl.data.importer.convert import IMPORTER_VERSION, import_dataset
from ctl.data.importer.engine import DEFAULT_MEMORY_LIMIT
from ctl.data.importer.spec import ImportSpec, load_spec, parse_spec
from ctl.errors import CtlError
from ctl.io import stable_hash

PUBLIC_DATA_ENV = "CTL_PUBLIC_DATA"
IMPORTER_KEYS = ("schema", "inputs", "root", "max_rows")
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "conf" / "schemas"


def repository_root() -> Path:
    """The checkout holding ``src/ctl`` (meaningful for an editable install)."""
    return Path(__file__).resolve().parents[4]


def public_data_root(root: str | Path | None) -> Path:
    """Where relative input paths of a preset are found (see the module docstring)."""
    if root:
        return Path(str(root)).expanduser()
    if os.environ.get(PUBLIC_DATA_ENV):
        return Path(os.environ[PUBLIC_DATA_ENV]).expanduser()
    return (repository_root().parent / "shared" / "data").resolve()


def _plain(node: object) -> object:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def schema_from(value: object, origin: str) -> ImportSpec:
    """An import schema from a mapping, a packaged schema name (``conf/schemas/<name>.yaml``) or a path."""
    value = _plain(value)
    if isinstance(value, Mapping):
        return parse_spec(value, origin)
    if not isinstance(value, str) or not value:
        raise CtlError(f"{origin}: schema must be a mapping, a schema name or a YAML path, got {value!r}")
    if "/" in value or value.endswith((".yaml", ".yml")):
        return load_spec(value)
    packaged = SCHEMAS_DIR / f"{value}.yaml"
    if not packaged.is_file():
        known = sorted(p.stem for p in SCHEMAS_DIR.glob("*.yaml"))
        raise CtlError(f"{origin}: no packaged schema {value!r} (known: {known}); give a path to a YAML file")
    return load_spec(packaged)


def _importer(node: object, origin: str) -> dict:
    importer = _plain(node)
    if not isinstance(importer, Mapping):
        raise CtlError(f"{origin}: must be a mapping with keys {list(IMPORTER_KEYS)}")
    unknown = sorted(set(importer) - set(IMPORTER_KEYS))
    if unknown:
        raise CtlError(f"{origin}: unknown key {unknown[0]!r} (known: {list(IMPORTER_KEYS)})")
    if not importer.get("inputs"):
        raise CtlError(f"{origin}.inputs: list the input files")
    return dict(importer)


def resolve_inputs(inputs: list, root: Path, origin: str) -> list[Path]:
    """Input paths, relative ones under ``root``; refuses missing files with a hint about the root."""
    paths = [Path(str(p)).expanduser() for p in inputs]
    paths = [p if p.is_absolute() else root / p for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise CtlError(f"{origin}: input file {missing[0]} does not exist; point {origin}.root (or "
                       f"${PUBLIC_DATA_ENV}) at the folder that holds the inputs")
    return paths


def behaviour_inputs(spec: ImportSpec, root: Path) -> list[Path]:
    """The schema's ``behaviour_logs.inputs``, relative ones under ``root`` as the inputs are."""
    if spec.behaviour_logs is None:
        return []
    return resolve_inputs(list(spec.behaviour_logs.inputs), root, "behaviour_logs.inputs")


def import_key(data_cfg: DictConfig) -> str:
    """Cache key of a preset's import: schema, input paths/sizes/times, ``max_rows``, importer version."""
    origin = f"data {data_cfg.name!r} importer"
    importer = _importer(data_cfg.importer, origin)
    spec = schema_from(importer.get("schema"), f"{origin}.schema")
    root = public_data_root(importer.get("root"))
    inputs = resolve_inputs(importer["inputs"], root, origin) + behaviour_inputs(spec, root)
    # ctime too: an edit that keeps the size and sets the modification time back still changes it
    files = [{"path": str(p.resolve()), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns,
              "ctime_ns": p.stat().st_ctime_ns} for p in inputs]
    return stable_hash({"importer": IMPORTER_VERSION, "schema": spec.raw, "inputs": files,
                        "max_rows": importer.get("max_rows")})


def import_preset(data_cfg: DictConfig, out: Path, progress: bool, memory_limit: str = DEFAULT_MEMORY_LIMIT,
                  threads: int | None = None) -> Path:
    """Import a preset's data into ``out`` (the registry calls this under its lock)."""
    origin = f"data {data_cfg.name!r} importer"
    importer = _importer(data_cfg.importer, origin)
    spec = schema_from(importer.get("schema"), f"{origin}.schema")
    root = public_data_root(importer.get("root"))
    inputs = resolve_inputs(importer["inputs"], root, origin)
    log = Console(stderr=True).print if progress else None
    import_dataset(spec, inputs, out, max_rows=importer.get("max_rows"), log=log, memory_limit=memory_limit,
                   threads=threads, behaviour=behaviour_inputs(spec, root))
    return out
