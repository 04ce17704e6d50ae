"""The continual transfer protocol: what ``ctl train`` runs for each kind of method.

* ``track`` methods (``base``, ``din``): the method's own track on ``data.domain``; the run folder
  gets its metrics, predictions and a link to the track's checkpoints.
* ``ctnet`` methods: the base tracks on the source and the target domain, then CTNet over the
  transfer periods: target tower from the target model of period ``t0-1`` (weights and Adagrad
  state), source tower refreshed from the source track every period.

Every run writes ``metrics.json``, ``predictions.parquet`` and ``config.yaml`` (resolved) into
its Hydra output folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from ctl.data.dataset import Dataset
from ctl.data.registry import load_for
from ctl.errors import CtlError
from ctl.io import atomic_write_json, atomic_write_text, derived_seed
from ctl.models import build_model
from ctl.training.callbacks import SourceRefresh
from ctl.training.checkpoints import load_model_state, optimizer_state_by_parameter
from ctl.training.fitting import fit_periods, make_datamodule, optimizer_from, write_predictions
from ctl.training.task import CTRTask
from ctl.training.tracks import Track, ensure_track


def base_net(cfg: DictConfig) -> DictConfig:
    """The base model's net config at the run's size: the production models of both domains."""
    return OmegaConf.create({"_target_": "ctl.models.base.BaseModel",
                             "backbone": OmegaConf.to_container(cfg.model.size, resolve=True)})


def method_name(cfg: DictConfig) -> str:
    """The row label of a run in tables: transfer-once CTNet is its own method."""
    name = str(cfg.model.name)
    if cfg.model.get("protocol") == "ctnet" and not cfg.model.get("refresh_source", True):
        return f"{name}_once"
    return name


def run_train(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the method of ``cfg`` under the protocol; returns the run's metrics (also written)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    dataset = load_for(cfg.data, cfg.home, progress=bool(cfg.progress))
    schema = dataset.schema
    domain = str(cfg.data.domain)
    schema.domain_index(domain)
    protocol = cfg.model.get("protocol", "track")
    if protocol == "track":
        metrics = _run_track(cfg, dataset, domain, run_dir)
    elif protocol == "ctnet":
        if domain == schema.source:
            raise CtlError(f"data.domain={domain} is the source domain; CTNet transfers from {schema.source} "
                           f"to a target domain: use one of {list(schema.targets)}")
        metrics = _run_ctnet(cfg, dataset, domain, run_dir)
    else:
        raise CtlError(f"model.protocol={protocol!r} is unknown; expected track or ctnet")
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def _common(cfg: DictConfig, dataset: Dataset, domain: str) -> dict:
    return {"kind": "run", "model": str(cfg.model.name), "method": method_name(cfg),
            "source": dataset.schema.source, "target": domain, "seed": int(cfg.seed),
            "dataset": dataset.fingerprint(), "dataset_path": str(dataset.path)}


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link, target_is_directory=True)


def _run_track(cfg: DictConfig, dataset: Dataset, domain: str, run_dir: Path) -> dict:
    track = ensure_track(cfg, dataset, domain, cfg.model.net, str(cfg.model.name))
    tm = track.metrics()
    shutil.copyfile(track.path / "predictions.parquet", run_dir / "predictions.parquet")
    _link(track.path / "checkpoints", run_dir / "checkpoints")
    return {**_common(cfg, dataset, domain), "periods": tm["periods"], "test": tm["test"],
            "cost": _total_cost(None, {track.name: tm["cost"]}), "tracks": {"own": str(track.path)},
            "inherited": {}}


def _total_cost(own: dict | None, tracks: dict[str, dict]) -> dict:
    parts = ([own] if own else []) + list(tracks.values())
    total = {k: round(sum(p[k] for p in parts), 3) for k in ("train_rows", "wall_s", "cpu_s")}
    return {**total, "own": own, "tracks": tracks}


def _run_ctnet(cfg: DictConfig, dataset: Dataset, target: str, run_dir: Path) -> dict:
    schema = dataset.schema
    source_track = ensure_track(cfg, dataset, schema.source, base_net(cfg), "base")
    target_track = ensure_track(cfg, dataset, target, base_net(cfg), "base")
    seed = derived_seed(int(cfg.seed), f"run/{method_name(cfg)}/{target}")
    pl.seed_everything(seed, workers=True, verbose=False)
    net = build_model(cfg.model.net, schema)
    production = target_track.checkpoint(schema.t0 - 1)
    checkpoint = load_model_state(net.target, production, what=f"the target model of period {schema.t0 - 1}")
    periods = list(range(schema.t0, schema.test_period))
    datamodule = make_datamodule(cfg, dataset, [target], periods, eval_domain=target, seed=seed)
    task = CTRTask(net, optimizer_from(cfg), datamodule.period_of_epoch, schema.test_period)
    task.inherited_optimizer_state = optimizer_state_by_parameter(checkpoint, list(net.target.parameters()))
    refresh = SourceRefresh(source_track.checkpoint, datamodule.period_of_epoch,
                            refresh=bool(cfg.model.refresh_source))
    result = fit_periods(cfg, task, datamodule, run_dir, label=f"{method_name(cfg)} {schema.source}->{target}",
                         callbacks=[refresh])
    write_predictions(run_dir / "predictions.parquet", result.predictions)
    tracks = {source_track.name: source_track.metrics()["cost"], target_track.name: target_track.metrics()["cost"]}
    return {
        **_common(cfg, dataset, target),
        "periods": result.periods,
        "test": result.test,
        "cost": _total_cost(result.cost, tracks),
        "tracks": {"source": str(source_track.path), "target": str(target_track.path)},
        "inherited": {
            "target_tower": f"{production} (weights and Adagrad state: "
                            f"{len(task.inherited_optimizer_state)} tensors)",
            "source_tower": f"{source_track.path}/checkpoints/period_<t>.ckpt"
                            + (" refreshed every period" if cfg.model.refresh_source else f" (period {schema.t0} only)"),
        },
        "baseline": {"method": "base", "periods": _transfer_periods(target_track, periods),
                     "test": target_track.metrics()["test"]},
    }


def _transfer_periods(track: Track, periods: list[int]) -> list[dict]:
    return [r for r in track.metrics()["periods"] if r["period"] in periods]
