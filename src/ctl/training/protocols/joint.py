"""``joint`` protocol (``mlppp``, ``share_bottom``, ``ple``, ``minet``, ``ddtcdr``, ``dasl``).

A joint model learns both domains at once: every batch of a transfer period mixes source and
target rows (each row's loss comes from its own domain's head), and every batch carries the
per-domain sequences the model asks for (``domain_sequences()``). It starts from the production
models of period ``t0-1`` wherever its parameters match them (``init_from``) with a fresh
optimiser, trains on the transfer periods only (the paper: "the limited 30-days source domain
training data") and is validated and tested on target rows only.

``model.source_rows=false`` drops the source rows (the ablation that says how much of a joint
model's gain comes from reading them; method ``<name>_targetonly``). In a sweep over models write
``++model.source_rows=false``: Hydra checks the override against the default model first.

Its real cost is the source rows it reads: with A ≈ 60x B a joint model trains on ~61x the rows
of a target-only method; ``cost.own.train_rows_by_domain`` says how many of each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ctl.data.dataset import Dataset
from ctl.data.schema import Schema
from ctl.errors import CtlError
from ctl.methods import method_label
from ctl.training.checkpoints import model_state, read_checkpoint
from ctl.training.fitting import (
    fit_periods,
    make_datamodule,
    optimizer_from,
    optimizer_name,
    write_predictions,
)
from ctl.training.inherit import Inheritance
from ctl.training.protocols.common import (
    FinishedRun,
    ProductionTracks,
    TrainedModel,
    build_transfer_model,
    rebuild_transfer_net,
    require_target,
    run_seed,
    transfer_metrics,
    transfer_periods,
)
from ctl.training.task import CTRTask


@runtime_checkable
class StartsFromProduction(Protocol):
    """A cross-domain model that says which production parameters it reuses."""

    def init_from(self, source_state: Mapping[str, torch.Tensor],
                  target_state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]: ...


@runtime_checkable
class JointNet(StartsFromProduction, Protocol):
    """A joint model: it also names the per-domain sequences its batches must carry."""

    def domain_sequences(self) -> tuple[str, ...]: ...


def init_from_production(model: torch.nn.Module, tracks: ProductionTracks, period: int) -> dict:
    """Call ``model.init_from`` with the production models of ``period``; the ``inherited`` record."""
    if not isinstance(model, StartsFromProduction):
        raise CtlError(f"{type(model).__name__} has no init_from(source_state, target_state); "
                       "a cross-domain model must say which production parameters it reuses")
    source, target = tracks.source.checkpoint(period), tracks.target.checkpoint(period)
    report = model.init_from(model_state(read_checkpoint(source)), model_state(read_checkpoint(target)))
    return {**Inheritance.from_report(report).as_dict(), "source_state": str(source),
            "target_state": str(target)}


def run_joint(cfg: DictConfig, dataset: Dataset, target: str, run_dir: Path) -> dict:
    schema = dataset.schema
    require_target(schema, target, "joint learning")
    tracks = ProductionTracks.ensure(cfg, dataset, target)
    seed = run_seed(cfg, target)
    pl.seed_everything(seed, workers=True, verbose=False)
    model = build_transfer_model(cfg.model.net, schema, schema.source, target)
    if not isinstance(model, JointNet):
        raise CtlError(f"model.net: {type(model).__name__} has no domain_sequences(); model.protocol=joint needs a "
                       "joint model (one head per domain)")
    inherited = {**init_from_production(model, tracks, schema.t0 - 1), "optimizer": f"fresh {optimizer_name(cfg)}"}
    periods = transfer_periods(schema)
    domains = [schema.source, target] if cfg.model.source_rows else [target]
    datamodule = make_datamodule(cfg, dataset, domains, periods, eval_domain=target, seed=seed,
                                 domain_sequences=tuple(model.domain_sequences()))
    task = CTRTask(model, optimizer_from(cfg), datamodule.period_of_epoch, schema.test_period)
    result = fit_periods(cfg, task, datamodule, run_dir, label=f"{method_label(cfg)} {schema.source}->{target}")
    write_predictions(run_dir / "predictions.parquet", result.predictions)
    own = {**result.cost, "train_rows_by_domain": {d: int(dataset.select([d], periods).size) for d in domains}}
    return transfer_metrics(cfg, dataset, target, tracks, periods=result.periods, test=result.test,
                            own_cost=own, used=(tracks.source, tracks.target), inherited=inherited)


def rebuild_joint(run: FinishedRun, schema: Schema, domain: str) -> TrainedModel:
    """The joint model of the run's last period; it scores rows of both domains, each through its own head."""
    return dataclasses.replace(rebuild_transfer_net(run, schema, domain), domains=(schema.source, domain))
