"""Tracks: one model trained continually on one domain, one checkpoint per period, cached.

A track is keyed by (dataset, domain, model config, optimiser, batch size, seed). It is built in
a temporary folder and renamed into ``<home>/tracks/<model>-<domain>-<key>`` only when complete
(checkpoints, ``metrics.json``, ``predictions.parquet``), under a file lock so that concurrent
jobs of a sweep build it once. A folder that exists is a finished track.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from ctl.data.dataset import Dataset
from ctl.errors import CtlError
from ctl.io import atomic_write_json, derived_seed, file_lock, stable_hash
from ctl.models import build_model
from ctl.training.fitting import fit_periods, make_datamodule, optimizer_from, write_predictions
from ctl.training.task import CTRTask

TRACK_FILES = ("metrics.json", "predictions.parquet")


@dataclass(frozen=True)
class Track:
    """A finished track folder."""

    path: Path
    name: str

    def checkpoint(self, period: int) -> Path:
        path = self.path / "checkpoints" / f"period_{period}.ckpt"
        if not path.is_file():
            raise CtlError(f"track {self.path} has no checkpoint for period {period} ({path.name} is missing); "
                           "delete the folder so the track is rebuilt")
        return path

    def metrics(self) -> dict:
        import json

        return json.loads((self.path / "metrics.json").read_text())


def track_spec(cfg: DictConfig, dataset: Dataset, domain: str, net: DictConfig, model_name: str) -> dict:
    """Everything that determines a track's weights: the cache key's content."""
    return {
        "dataset": dataset.fingerprint(),
        "domain": domain,
        "model": model_name,
        "net": OmegaConf.to_container(net, resolve=True),
        "optim": OmegaConf.to_container(cfg.optim, resolve=True),
        "batch_size": int(cfg.data.batch_size),
        "seed": int(cfg.seed),
        "periods": [0, dataset.schema.test_period - 1],
    }


def ensure_track(cfg: DictConfig, dataset: Dataset, domain: str, net: DictConfig, model_name: str) -> Track:
    """The finished track of ``net`` on ``domain``; built (once, under a lock) if missing."""
    dataset.schema.domain_index(domain)
    spec = track_spec(cfg, dataset, domain, net, model_name)
    name = f"{model_name}-{domain}"
    root = Path(str(cfg.home)).expanduser() / "tracks"
    path = root / f"{name}-{stable_hash(spec)}"
    if not _complete(path):
        with file_lock(root / f".{path.name}.lock"):
            if not _complete(path):
                _build(cfg, dataset, domain, net, name, spec, path)
    return Track(path=path, name=name)


def _complete(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in TRACK_FILES)


def _build(cfg: DictConfig, dataset: Dataset, domain: str, net_cfg: DictConfig, name: str, spec: dict,
           path: Path) -> None:
    if path.exists():  # an incomplete folder left by a crash: never trusted
        shutil.rmtree(path)
    tmp = path.with_name(f".{path.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    seed = derived_seed(int(cfg.seed), f"track/{name}")
    pl.seed_everything(seed, workers=True, verbose=False)
    schema = dataset.schema
    periods = list(range(schema.test_period))
    net = build_model(net_cfg, schema)
    datamodule = make_datamodule(cfg, dataset, [domain], periods, eval_domain=domain, seed=seed)
    task = CTRTask(net, optimizer_from(cfg), datamodule.period_of_epoch, schema.test_period)
    result = fit_periods(cfg, task, datamodule, tmp, label=f"track {name}")
    write_predictions(tmp / "predictions.parquet", result.predictions)
    atomic_write_json(tmp / "metrics.json", {
        "kind": "track", "model": spec["model"], "domain": domain, "seed": int(cfg.seed), "spec": spec,
        "periods": result.periods, "test": result.test, "cost": result.cost,
    })
    os.replace(tmp, path)
