"""Find (or make) the dataset a config asks for.

A data config either points at a dataset folder (``path: ...``) or describes how to make one
(``generator: {_target_: ...}``, or ``importer: {schema, inputs, ...}`` for real logs); made
datasets live in ``<home>/datasets/<name>-<key>``, keyed by the generator config and
:data:`~ctl.data.synthetic.version.GENERATOR_VERSION` (or the import schema and the input files'
sizes and times), and are made once (under a file lock, so
concurrent jobs of a sweep wait for the first instead of generating twice).

A generated dataset made before generators kept the true click probabilities of the test slice
(``oracle.parquet``) gets them added once, if its generator can (``add_oracle``): the rest of the
folder, and so its fingerprint, stays as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ctl.data.dataset import ORACLE_FILE, Dataset, DatasetError, load_dataset, read_fingerprint
from ctl.data.synthetic.version import GENERATOR_VERSION
from ctl.errors import CtlError
from ctl.io import check_writable, file_lock, stable_hash

#: loaded datasets by folder and fingerprint (an append changes a folder's dataset in place)
_LOADED: dict[tuple[Path, str], Dataset] = {}


def dataset_dir(data_cfg: DictConfig, home: str | Path) -> Path:
    """Where the dataset of ``data_cfg`` lives (it may not exist yet)."""
    if data_cfg.get("path"):
        return Path(str(data_cfg.path)).expanduser()
    if data_cfg.get("importer") is not None:
        from ctl.data.importer import import_key

        return Path(str(home)).expanduser() / "datasets" / f"{data_cfg.name}-{import_key(data_cfg)}"
    if data_cfg.get("generator") is None:
        raise CtlError(f"data config {data_cfg.name!r} has none of 'path', 'generator' or 'importer'")
    # the generator's code version too: a changed generator draws other worlds from the same config
    key = stable_hash({"generator": OmegaConf.to_container(data_cfg.generator, resolve=True),
                       "version": GENERATOR_VERSION})
    return Path(str(home)).expanduser() / "datasets" / f"{data_cfg.name}-{key}"


def ensure_dataset(data_cfg: DictConfig, home: str | Path, progress: bool = True) -> Path:
    """The dataset folder of ``data_cfg``, generated first if it is missing."""
    path = dataset_dir(data_cfg, home)
    if data_cfg.get("path"):
        if not path.exists():
            raise CtlError(f"dataset folder {path} does not exist (data.path); "
                           "make one with `ctl data generate` or `ctl data import`")
        return path
    if (path / "meta.yaml").exists():
        if data_cfg.get("generator") is not None and not (path / ORACLE_FILE).exists():
            _add_oracle(data_cfg, path, progress)
        return path
    check_writable(path.parent, "the dataset cache (home= or CTL_HOME)")
    with file_lock(path.parent / f".{path.name}.lock"):
        if not (path / "meta.yaml").exists():
            if data_cfg.get("importer") is not None:
                from ctl.data.importer import import_preset

                import_preset(data_cfg, path, progress=progress)
            else:
                instantiate(data_cfg.generator).generate(path, progress=progress)
    return path


def _add_oracle(data_cfg: DictConfig, path: Path, progress: bool) -> None:
    generator = instantiate(data_cfg.generator)
    # a read-only shared cache still trains; only ctl eval's oracle row is missing then
    if not hasattr(generator, "add_oracle") or not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        return
    with file_lock(path.parent / f".{path.name}.lock"):
        if not (path / ORACLE_FILE).exists():
            generator.add_oracle(path, progress=progress)


def load_for(data_cfg: DictConfig, home: str | Path, progress: bool = True) -> Dataset:
    """Load (once per process) the dataset of ``data_cfg``, validated.

    With ``data.in_memory=false`` only the row index and the histories are loaded; training rows
    are streamed from Parquet (:mod:`ctl.data.streaming`).
    """
    path = ensure_dataset(data_cfg, home, progress).resolve()
    if not data_cfg.in_memory:
        from ctl.data.streaming import load_row_index

        return load_row_index(path)
    try:
        key = (path, read_fingerprint(path))
        if key not in _LOADED:
            _LOADED[key] = load_dataset(path)
    except DatasetError as exc:
        if data_cfg.get("path"):
            raise
        raise CtlError(f"the cached dataset {path} is damaged ({exc}); delete that folder so it is made again") from exc
    return _LOADED[key]
