"""What every protocol shares: the production tracks, the run's seed, and the shape of ``metrics.json``.

Also what every protocol's ``rebuild`` shares (:class:`FinishedRun` in, :class:`TrainedModel` out):
``ctl export`` asks the protocol that trained a run for its latest model.

A run's ``metrics.json`` holds ``kind``, ``model``, ``method``, ``source``, ``target``, ``seed``,
``dataset``, ``dataset_path``, ``periods`` (one row per transfer period: ``period``,
``eval_period``, ``train_rows``, ``rows``, ``auc``, ``gauc``, ``logloss``), ``test``, ``cost``,
``tracks``, ``inherited`` and, for transfer methods, ``baseline`` (the target base track's rows
of the same periods and its test row).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ctl.data.batch import DomainView
from ctl.data.dataset import Dataset
from ctl.data.schema import Schema
from ctl.errors import CtlError, cut
from ctl.io import derived_seed
from ctl.methods import method_label
from ctl.models import build_model
from ctl.models.registry import build_from_config
from ctl.received import field
from ctl.training.callbacks import period_checkpoint_name
from ctl.training.checkpoints import load_model_state
from ctl.training.tracks import Track, ensure_track


def base_net(cfg: DictConfig) -> DictConfig:
    """The base model's net config at the run's size: the production models of both domains."""
    return OmegaConf.create(base_net_of(OmegaConf.to_container(cfg.model.size, resolve=True)))


def base_net_of(size: object) -> dict:
    """The base model's net config with the backbone config ``size``."""
    return {"_target_": "ctl.models.base.BaseModel", "backbone": size}


def run_seed(cfg: DictConfig, target: str) -> int:
    """The seed of the run's own random stream (independent of the tracks' streams): ``transfer_seed``'s
    where set, so runs that share ``seed`` (their production tracks) can differ in this stream alone."""
    stream = f"run/{method_label(cfg)}/{target}"
    transfer_seed = cfg.get("transfer_seed")
    if transfer_seed is not None:
        stream += f"/transfer{int(transfer_seed)}"
    return derived_seed(int(cfg.seed), stream)


def require_target(schema: Schema, domain: str, method: str) -> None:
    """Refuse a transfer method whose target is the source domain."""
    if domain == schema.source:
        raise CtlError(f"data.domain={domain} is the source domain; {method} transfers from {schema.source} "
                       f"to a target domain: use one of {list(schema.targets)}")


def transfer_periods(schema: Schema) -> list[int]:
    """The transfer periods t0 .. t0+T-1."""
    return list(range(schema.t0, schema.test_period))


@dataclass(frozen=True)
class ProductionTracks:
    """The base tracks every transfer method shares: the source and the target production models."""

    source: Track
    target: Track

    @classmethod
    def ensure(cls, cfg: DictConfig, dataset: Dataset, target: str) -> ProductionTracks:
        net = base_net(cfg)
        return cls(source=ensure_track(cfg, dataset, dataset.schema.source, net, "base"),
                   target=ensure_track(cfg, dataset, target, net, "base"))

    def paths(self) -> dict[str, str]:
        return {"source": str(self.source.path), "target": str(self.target.path)}

    def costs(self, *tracks: Track) -> dict[str, dict]:
        """The training cost of ``tracks`` (those a method needed), by track name."""
        return {track.name: track.metrics()["cost"] for track in tracks}

    def baseline(self, periods: list[int]) -> dict:
        """The target base track's rows of ``periods`` and its test row."""
        metrics = self.target.metrics()
        return {"method": "base", "periods": [r for r in metrics["periods"] if r["period"] in periods],
                "test": metrics["test"]}


def common_fields(cfg: DictConfig, dataset: Dataset, domain: str) -> dict:
    """The identifying head of every run's ``metrics.json``."""
    return {"kind": "run", "model": str(cfg.model.name), "method": method_label(cfg),
            "source": dataset.schema.source, "target": domain, "seed": int(cfg.seed),
            "dataset": dataset.fingerprint(), "dataset_path": str(dataset.path)}


def transfer_metrics(cfg: DictConfig, dataset: Dataset, target: str, tracks: ProductionTracks, *, periods: list[dict],
                     test: dict, own_cost: dict | None, used: tuple[Track, ...], inherited: dict,
                     **extra: object) -> dict:
    """The ``metrics.json`` of a transfer method: its rows beside the target base track's, its cost
    with the production tracks it ``used``, and ``extra`` method-specific keys."""
    return {
        **common_fields(cfg, dataset, target),
        **extra,
        "periods": periods,
        "test": test,
        "cost": total_cost(own_cost, tracks.costs(*used)),
        "tracks": tracks.paths(),
        "inherited": inherited,
        "baseline": tracks.baseline([row["period"] for row in periods]),
    }


def total_cost(own: dict | None, tracks: dict[str, dict]) -> dict:
    """The run's own cost plus every track it needed, each counted once."""
    parts = ([own] if own else []) + list(tracks.values())
    total = {k: round(sum(p[k] for p in parts), 3) for k in ("train_rows", "wall_s", "cpu_s")}
    return {**total, "own": own, "tracks": tracks}


def build_transfer_model(net: DictConfig | dict, schema: Schema, source: str, target: str,
                         key: str = "model.net") -> torch.nn.Module:
    """Build a cross-domain ``net`` config for the ``source`` -> ``target`` pair, from ctl's own
    classes only (:mod:`ctl.models.registry`); ``key`` names the config in refusals.

    The domains come from the run (``data.domain`` and the dataset's source), not from the model
    config, so one model config serves every target.
    """
    model = build_from_config(net, key, schema=schema, source=source, target=target)
    if not isinstance(model, torch.nn.Module):
        raise CtlError(f"{key}: {type(model).__name__} is no model (torch.nn.Module)")
    return model


def link_folder(target: Path, link: Path) -> None:
    """Point ``link`` at the folder ``target`` (replacing an older link)."""
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link, target_is_directory=True)


@dataclass(frozen=True)
class FinishedRun:
    """What a protocol reads of a finished run folder to rebuild its latest model.

    ``config`` is the folder's ``config.yaml`` read as plain YAML (nothing in it resolved or
    instantiated); ``periods`` and ``tracks`` come from its ``metrics.json``. The folder may come
    from someone else: every field a protocol reads is checked, in a refusal naming it.
    """

    folder: Path
    config: dict
    periods: tuple[int, ...]
    tracks: dict[str, str]

    def key(self, name: str) -> str:
        """``model.<name>`` of the run's ``config.yaml``, as refusals name it."""
        return f"{self.folder / 'config.yaml'}: model.{name}"

    def model_field(self, name: str) -> dict:
        """The mapping ``model.<name>`` of the run's config; refused if missing or not a mapping."""
        return field(self.config, f"model.{name}", dict, self.folder / "config.yaml")

    def track(self, name: str) -> Path:
        """The folder of the production track ``name`` the run used (``metrics.json`` tracks)."""
        if not isinstance(self.tracks.get(name), str):
            raise CtlError(f"{self.folder / 'metrics.json'}: tracks.{name} is missing; the run names no {name} track")
        return Path(self.tracks[name])

    def last_checkpoint(self) -> Path:
        """The checkpoint of the run's last trained period (``metrics.json`` periods)."""
        if not self.periods:
            raise CtlError(f"{self.folder / 'metrics.json'}: periods is empty; the run trained no period to export")
        checkpoint = self.folder / "checkpoints" / period_checkpoint_name(max(self.periods))
        if not checkpoint.is_file():
            raise CtlError(f"{checkpoint} is missing: the run's last period ({max(self.periods)}, metrics.json "
                           "periods) has no checkpoint to export")
        return checkpoint


@dataclass(frozen=True)
class TrainedModel:
    """A run's latest model as its protocol trained it, in eval mode: the net, the domain view it
    reads its rows through (None: as they are), the checkpoint its weights came from, and the
    domains whose rows it scores, each through its own head (empty: the run's domain alone)."""

    net: torch.nn.Module
    view: DomainView | None
    checkpoint: Path
    domains: tuple[str, ...] = ()


def loaded(key: str, build: Callable[[], torch.nn.Module], checkpoint: Path,
           view: DomainView | None = None) -> TrainedModel:
    """The model ``build`` makes (``key`` names its config in refusals) with the weights of ``checkpoint``
    (read as tensors only), in eval mode."""
    try:
        net = build()
    except CtlError:
        raise
    except Exception as exc:  # noqa: BLE001 (a received config's arguments can fail a constructor in any way)
        raise CtlError(f"{key}: the model cannot be built from it for the run's dataset ({type(exc).__name__}: "
                       f"{cut(str(exc), 160)})") from None
    load_model_state(net, checkpoint, what=f"the model of {checkpoint.name}")
    net.eval()
    return TrainedModel(net=net, view=view, checkpoint=checkpoint)


def rebuild_own_net(run: FinishedRun, schema: Schema, domain: str) -> TrainedModel:
    """``model.net`` built for the dataset alone (a single-domain model, CTNet, a model over a frozen
    source tower) with the weights of the run's last period: every part the run trained or refreshed
    (CTNet's source tower of that period included) is in that checkpoint."""
    net, key = run.model_field("net"), run.key("net")
    return loaded(key, lambda: build_model(net, schema, key), run.last_checkpoint())


def rebuild_transfer_net(run: FinishedRun, schema: Schema, domain: str) -> TrainedModel:
    """``model.net`` built for the dataset's source -> ``domain`` pair (joint and dual-embedding
    models), with the weights of the run's last period."""
    net, key = run.model_field("net"), run.key("net")
    return loaded(key, lambda: build_transfer_model(net, schema, schema.source, domain, key), run.last_checkpoint())
