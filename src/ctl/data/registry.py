"""Find (or make) the dataset a config asks for.

A data config either points at a dataset folder (``path: ...``) or describes how to make one
(``generator: {_target_: ...}``); made datasets live in ``<home>/datasets/<name>-<key>``, keyed
by the generator config, and are made once (under a file lock, so concurrent jobs of a sweep wait
for the first instead of generating twice).
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ctl.data.dataset import Dataset, load_dataset
from ctl.errors import CtlError
from ctl.io import file_lock, stable_hash

_LOADED: dict[Path, Dataset] = {}


def dataset_dir(data_cfg: DictConfig, home: str | Path) -> Path:
    """Where the dataset of ``data_cfg`` lives (it may not exist yet)."""
    if data_cfg.get("path"):
        return Path(str(data_cfg.path)).expanduser()
    if data_cfg.get("generator") is None:
        raise CtlError(f"data config {data_cfg.get('name')!r} has neither 'path' nor 'generator'")
    key = stable_hash(OmegaConf.to_container(data_cfg.generator, resolve=True))
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
        return path
    with file_lock(path.parent / f".{path.name}.lock"):
        if not (path / "meta.yaml").exists():
            instantiate(data_cfg.generator).generate(path, progress=progress)
    return path


def load_for(data_cfg: DictConfig, home: str | Path, progress: bool = True) -> Dataset:
    """Load (once per process) the dataset of ``data_cfg``, validated."""
    path = ensure_dataset(data_cfg, home, progress).resolve()
    if path not in _LOADED:
        _LOADED[path] = load_dataset(path)
    return _LOADED[path]
