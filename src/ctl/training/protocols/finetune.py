"""``finetune`` protocol (``ft_id_emb``, ``ft_all_emb``, ``ft_all``): pre-train on the source, fine-tune on the target.

The fine-tuned model is a base model assembled by :mod:`ctl.training.inherit` from the production
models of the period before fine-tuning starts (``model.from_source`` says what comes from the source),
then trained on the target rows of every period from its start through the last transfer period.

``model.finetune_periods`` sets where fine-tuning starts (Table 4):

* ``k`` (0 .. t0-1): k periods before t0, from ``h_s^{t0-k-1}`` and ``h_t^{t0-k-1}``; trained on
  target periods t0-k .. t0+T-1;
* ``all``: the whole target history, from period 0. No target model precedes period 0, so what
  would come from the target starts fresh; the source part is ``h_s^{t0-1}``, the latest source
  model that has seen no transfer period (the same source knowledge every other method starts
  from). The paper never tested this variant.

Validation after every trained period is recorded: transfer periods under ``periods``, the ones
before t0 under ``pre_transfer_periods``. The optimiser starts fresh unless
``model.inherit_optimizer=true``, which carries each copied parameter's optimiser state over from
the checkpoint it was copied from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ctl.data.dataset import Dataset
from ctl.data.schema import Schema
from ctl.errors import CtlError
from ctl.methods import method_label
from ctl.models import build_model
from ctl.training.checkpoints import model_state, optimizer_state_by_name, read_checkpoint
from ctl.training.fitting import (
    fit_periods,
    make_datamodule,
    optimizer_from,
    optimizer_name,
    write_predictions,
)
from ctl.training.inherit import assemble_state, finetune_origins
from ctl.training.protocols.common import (
    ProductionTracks,
    require_target,
    run_seed,
    transfer_metrics,
)
from ctl.training.task import CTRTask


def finetune_start(schema: Schema, finetune_periods: int | str) -> tuple[int, int, int | None]:
    """(first fine-tuned period, source model's period, target model's period or None) for ``finetune_periods``."""
    if str(finetune_periods) == "all":
        return 0, schema.t0 - 1, None
    try:
        k = int(finetune_periods)
    except (TypeError, ValueError):
        k = -1
    if not 0 <= k <= schema.t0 - 1 or str(k) != str(finetune_periods):
        raise CtlError(f"model.finetune_periods={finetune_periods!r} must be an integer 0..{schema.t0 - 1} "
                       "(periods before t0 to fine-tune on) or all (the whole target history)")
    return schema.t0 - k, schema.t0 - k - 1, schema.t0 - k - 1


def run_finetune(cfg: DictConfig, dataset: Dataset, target: str, run_dir: Path) -> dict:
    schema = dataset.schema
    require_target(schema, target, "fine-tuning")
    tracks = ProductionTracks.ensure(cfg, dataset, target)
    first, source_period, target_period = finetune_start(schema, cfg.model.finetune_periods)
    seed = run_seed(cfg, target)
    pl.seed_everything(seed, workers=True, verbose=False)
    model = build_model(cfg.model.net, schema)

    origins = finetune_origins(model.state_dict().keys(), schema, schema.source, target, str(cfg.model.from_source),
                               has_target=target_period is not None)
    track_of = {"source": (tracks.source, source_period), "target": (tracks.target, target_period)}
    checkpoints = {origin: track.checkpoint(period) for origin, (track, period) in track_of.items()
                   if period is not None and origin in origins.values()}
    read = {origin: read_checkpoint(path) for origin, path in checkpoints.items()}
    inheritance = assemble_state(model, origins, {o: model_state(c) for o, c in read.items()},
                                 {o: str(p) for o, p in checkpoints.items()})

    periods = list(range(first, schema.test_period))
    datamodule = make_datamodule(cfg, dataset, [target], periods, eval_domain=target, seed=seed)
    task = CTRTask(model, optimizer_from(cfg), datamodule.period_of_epoch, schema.test_period)
    optimizer_note = f"fresh {optimizer_name(cfg)}"
    if cfg.model.inherit_optimizer:
        task.inherit_optimizer_state(_inherited_optimizer_state(model, origins, read, checkpoints),
                                     {str(checkpoints[origin]): c for origin, c in read.items()})
        optimizer_note = (f"{optimizer_name(cfg)} state of {len(task.inherited_optimizer_state)} copied parameters, "
                          "each from the checkpoint it was copied from")
    result = fit_periods(cfg, task, datamodule, run_dir, label=f"{method_label(cfg)} {schema.source}->{target}")
    write_predictions(run_dir / "predictions.parquet", result.predictions)

    used = [track_of[origin][0] for origin in checkpoints]
    transfer = [r for r in result.periods if r["period"] >= schema.t0]
    inherited = {
        **inheritance.as_dict(),
        "source_state": str(checkpoints.get("source", "none")),
        "target_state": str(checkpoints.get("target", "none")),
        "optimizer": optimizer_note,
        "trained_periods": periods,
    }
    return transfer_metrics(cfg, dataset, target, tracks, periods=transfer, test=result.test, own_cost=result.cost,
                            used=tuple(used), inherited=inherited,
                            finetune_periods=str(cfg.model.finetune_periods),
                            pre_transfer_periods=[r for r in result.periods if r["period"] < schema.t0])


def _inherited_optimizer_state(model: torch.nn.Module, origins: Mapping[str, str], checkpoints: dict[str, dict],
                               paths: dict[str, Path]) -> dict:
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    by_origin = {origin: optimizer_state_by_name(c, names, paths[origin]) for origin, c in checkpoints.items()}
    params = dict(model.named_parameters())
    return {params[name]: by_origin[origin][name] for name, origin in origins.items()
            if origin in by_origin and name in params and name in by_origin[origin]}
