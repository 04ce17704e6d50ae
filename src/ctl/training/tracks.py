"""Tracks: one model trained continually on one domain, one checkpoint per period, cached.

A track is keyed by (dataset, domain, model config, optimiser, callbacks, batch size, seed). It is built in
the folder ``<home>/tracks/.<model>-<domain>-<key>.building`` under a file lock, so concurrent
jobs of a sweep build it once; a build killed midway resumes there from its ``last.ckpt``. A
finished build gets ``manifest.json`` (every file's size and sha256, written last) and is renamed
to ``<home>/tracks/<model>-<domain>-<key>``. A track is used only if its manifest verifies; a
damaged one (a file truncated, removed or altered) is rebuilt.

A track on a dataset that grew by whole periods (``lineage.json``, :mod:`ctl.data.lineage`) is not
retrained: the finished track of the same key on the nearest earlier version of the dataset is
extended from its last checkpoint (:mod:`ctl.training.continuation`), its earlier checkpoints
copied grown to the new vocabulary. That earlier track stays in the cache.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from ctl.data.dataset import Dataset
from ctl.data.lineage import read_lineage
from ctl.errors import CtlError
from ctl.io import (
    atomic_write_json,
    check_writable,
    derived_seed,
    file_lock,
    fsync_path,
    manifest_problem,
    stable_hash,
    write_manifest,
)
from ctl.training.callbacks import period_checkpoint_name
from ctl.training.continuation import Continuation
from ctl.training.distributed import barrier, is_rank_zero
from ctl.training.fitting import (
    build_net,
    fit_periods,
    make_datamodule,
    optimizer_from,
    write_predictions,
    write_val_predictions,
)
from ctl.training.task import CTRTask

log = logging.getLogger(__name__)

#: sub-folders of a track that its manifest leaves out (free-form logs)
UNCHECKED = ("logs",)


@dataclass(frozen=True)
class Track:
    """A finished track folder."""

    path: Path
    name: str

    def checkpoint(self, period: int) -> Path:
        path = self.path / "checkpoints" / period_checkpoint_name(period)
        if not path.is_file():
            raise CtlError(f"track {self.path} has no checkpoint for period {period} ({path.name} is missing); "
                           "delete the folder so the track is rebuilt")
        return path

    def metrics(self) -> dict:
        return json.loads((self.path / "metrics.json").read_text())


FULL_PRECISION = "32-true"


def track_spec(cfg: DictConfig, dataset: Dataset, domain: str, net: DictConfig, model_name: str,
               first_period: int = 0) -> dict:
    """Everything that determines a track's weights: the cache key's content."""
    spec = {
        "dataset": dataset.fingerprint(),
        "domain": domain,
        "model": model_name,
        "net": OmegaConf.to_container(net, resolve=True),
        "optim": OmegaConf.to_container(cfg.optim, resolve=True),
        # a callback may change what is trained (weight averaging, say): its config is part of the key
        "callbacks": OmegaConf.to_container(cfg.callbacks, resolve=True),
        "batch_size": int(cfg.data.batch_size),
        "seed": int(cfg.seed),
        "periods": [first_period, dataset.schema.test_period - 1],
        # embedding rows drawn per row block (GrowingEmbedding): tracks trained before have other weights
        "embedding_init": "row-blocks",
    }
    if not cfg.data.in_memory:
        spec["rows"] = "streamed"  # another shuffle order, hence other weights
    precision = str(cfg.trainer.get("precision", FULL_PRECISION))
    if precision not in (FULL_PRECISION, "32"):
        spec["precision"] = precision  # a bf16 track is another model than the fp32 one it approximates
    return spec


def ensure_track(cfg: DictConfig, dataset: Dataset, domain: str, net: DictConfig, model_name: str,
                 first_period: int = 0) -> Track:
    """The finished track of ``net`` on ``domain``; built (once, under a lock) if missing or damaged.

    ``first_period`` > 0 starts the track later (periods before it are never trained on): how much
    the target history matters, the learning curve of the production model.
    """
    dataset.schema.domain_index(domain)
    if not 0 <= first_period < dataset.schema.t0:
        raise CtlError(f"model.first_period={first_period} must lie in 0..{dataset.schema.t0 - 1} "
                       f"(the history periods of {dataset.path})")
    spec = track_spec(cfg, dataset, domain, net, model_name, first_period)
    name = f"{model_name}-{domain}" + (f"-from{first_period}" if first_period else "")
    root = Path(str(cfg.home)).expanduser() / "tracks"
    path = root / f"{name}-{stable_hash(spec)}"
    if manifest_problem(path) is not None:
        check_writable(root, "the track cache (home= or CTL_HOME)")
        earlier = earlier_track(root, name, spec, dataset)
        if not is_rank_zero():  # DDP: rank zero builds under the lock; the other ranks join its fits
            _build(cfg, dataset, domain, net, name, spec, path, earlier)
            return Track(path=path, name=name)
        with file_lock(root / f".{path.name}.lock"):
            problem = manifest_problem(path)
            if problem is not None:
                if path.exists():
                    log.warning("track %s is damaged (%s): rebuilding it", path, problem)
                    shutil.rmtree(path)
                else:
                    _say_if_the_data_changed(root, name, spec, dataset)
                _build(cfg, dataset, domain, net, name, spec, path, earlier)
    return Track(path=path, name=name)


def _say_if_the_data_changed(root: Path, name: str, spec: dict, dataset: Dataset) -> None:
    """One line when a finished track of the same model was built on other data at the dataset's path
    (the fingerprint follows the content): it is not reused, and this says why."""
    for metrics_file in sorted(root.glob(f"{name}-*/metrics.json")):
        try:
            metrics = json.loads(metrics_file.read_text())
        except (OSError, ValueError):
            continue
        earlier = metrics.get("spec", {})
        if metrics.get("dataset_path") == str(dataset.path) and earlier.get("dataset") != spec["dataset"] \
                and {k: v for k, v in earlier.items() if k != "dataset"} == {k: v for k, v in spec.items() if k != "dataset"}:
            log.warning("the dataset at %s changed since track %s was built on it (fingerprint %s, now %s): "
                        "building the track anew", dataset.path, metrics_file.parent, earlier.get("dataset"),
                        spec["dataset"])
            return


def earlier_track(root: Path, name: str, spec: dict, dataset: Dataset) -> Continuation | None:
    """The finished track of the same model on an earlier version of ``dataset`` (its lineage,
    nearest first) that this track extends, as a :class:`Continuation`; None if there is none."""
    first = spec["periods"][0]
    for ancestor in read_lineage(dataset.path):
        last = ancestor.test_period - 1
        if last < first or last >= spec["periods"][1]:
            continue
        path = root / f"{name}-{stable_hash(dict(spec, dataset=ancestor.fingerprint, periods=[first, last]))}"
        if manifest_problem(path) is None:
            return Continuation(checkpoint=path / "checkpoints" / period_checkpoint_name(last), last_period=last,
                                origin=str(path), copy_earlier=True)
    return None


def building_folder(path: Path) -> Path:
    """Where the track of ``path`` is built: a stable name, so a killed build resumes there."""
    return path.with_name(f".{path.name}.building")


def _build(cfg: DictConfig, dataset: Dataset, domain: str, net_cfg: DictConfig, name: str, spec: dict,
           path: Path, earlier: Continuation | None = None) -> None:
    tmp = building_folder(path)
    seed = derived_seed(int(cfg.seed), f"track/{name}")
    pl.seed_everything(seed, workers=True, verbose=False)
    schema = dataset.schema
    periods = list(range(spec["periods"][0], schema.test_period))
    net = build_net(net_cfg, dataset, spec["model"])
    datamodule = make_datamodule(cfg, dataset, [domain], periods, eval_domain=domain, seed=seed)
    # a target track's validation rows of the transfer periods: transfer runs pair their own with them
    keep_from = schema.t0 if domain != schema.source else None
    task = CTRTask(net, optimizer_from(cfg), datamodule.period_of_epoch, schema.test_period,
                   keep_val_predictions_from=keep_from)
    result = fit_periods(cfg, task, datamodule, tmp, label=f"track {name}", identity={"track": spec},
                         strict_resume=False, continuation=earlier)
    if is_rank_zero():
        write_predictions(tmp / "predictions.parquet", result.predictions)
        write_val_predictions(tmp / "val_predictions.parquet", result.val_predictions)
        atomic_write_json(tmp / "metrics.json", {
            "kind": "track", "model": spec["model"], "domain": domain, "seed": int(cfg.seed), "spec": spec,
            "dataset_path": str(dataset.path),
            "periods": result.periods, "test": result.test, "cost": result.cost,
        })
        write_manifest(tmp, skip=UNCHECKED)
        os.replace(tmp, path)
        fsync_path(path.parent)
    barrier()  # the other ranks use the track once rank zero has renamed it into place

