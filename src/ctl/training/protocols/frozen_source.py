"""``frozen_source`` protocol (``lowrank``, ``plugin``, ``distill``): a model over the frozen latest source model.

The model's ``source`` tower is refreshed from the source track at every period start (the latest
source model ``h_s^t``, as CTNet's); what it trains continues across periods. Whatever mirrors the
target production model (:meth:`production_parameters`) starts from the target model of period
``t0-1`` with its optimiser state, where the shapes agree (a widened first layer starts its state
afresh); everything else starts fresh. Trained on the target rows of the transfer periods.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from ctl.data.dataset import Dataset
from ctl.errors import CtlError
from ctl.methods import method_label
from ctl.models import build_model
from ctl.models.recent.frozen import FrozenSourceModel
from ctl.training.callbacks import SourceRefresh
from ctl.training.checkpoints import check_weights, model_state, optimizer_state_by_name, read_checkpoint
from ctl.training.fitting import (
    fit_periods,
    make_datamodule,
    optimizer_from,
    optimizer_name,
    write_predictions,
    write_val_predictions,
)
from ctl.training.protocols.common import (
    ProductionTracks,
    require_target,
    run_seed,
    transfer_metrics,
    transfer_periods,
)
from ctl.training.task import CTRTask
from ctl.training.tracks import Track


def run_frozen_source(cfg: DictConfig, dataset: Dataset, target: str, run_dir: Path) -> dict:
    schema = dataset.schema
    require_target(schema, target, str(cfg.model.name))
    tracks = ProductionTracks.ensure(cfg, dataset, target)
    seed = run_seed(cfg, target)
    pl.seed_everything(seed, workers=True, verbose=False)
    net = build_model(cfg.model.net, schema)
    if not isinstance(net, FrozenSourceModel):
        raise CtlError(f"model.net: {type(net).__name__} is no model over a frozen source tower "
                       "(ctl.models.recent.frozen.FrozenSourceModel); model.protocol=frozen_source needs one")
    periods = transfer_periods(schema)
    datamodule = make_datamodule(cfg, dataset, [target], periods, eval_domain=target, seed=seed)
    task = CTRTask(net, optimizer_from(cfg), datamodule.period_of_epoch, schema.test_period,
                   keep_val_predictions_from=schema.t0)
    mirrors = net.production_parameters()
    used: tuple[Track, ...] = (tracks.source,)
    inherited: dict[str, str | list[str]] = {"source_tower": f"{tracks.source.path}/checkpoints/period_<t>.ckpt refreshed every period"}
    if mirrors:
        production = tracks.target.checkpoint(schema.t0 - 1)
        checkpoint = check_weights(read_checkpoint(production), production)
        report = net.init_from_target(model_state(checkpoint))
        by_name = optimizer_state_by_name(checkpoint, list(mirrors), production)
        # a widened weight's saved state has the production shape: it starts afresh
        states = {mirrors[name]: state for name, state in by_name.items()
                  if all(getattr(v, "shape", mirrors[name].shape) in ((), mirrors[name].shape) for v in state.values())}
        task.inherit_optimizer_state(states, {str(production): checkpoint})
        used = (tracks.source, tracks.target)
        inherited.update({
            "target_model": f"{production} (weights and {optimizer_name(cfg)} state: {len(states)} tensors)",
            "copied_from_target": report["copied_from_target"], "fresh": report["fresh"]})
    else:
        inherited["fresh"] = net.init_from_target({})["fresh"]
    result = fit_periods(cfg, task, datamodule, run_dir, label=f"{method_label(cfg)} {schema.source}->{target}",
                         callbacks=[SourceRefresh(tracks.source.checkpoint, datamodule.period_of_epoch)])
    write_predictions(run_dir / "predictions.parquet", result.predictions)
    write_val_predictions(run_dir / "val_predictions.parquet", result.val_predictions)
    return transfer_metrics(cfg, dataset, target, tracks, periods=result.periods, test=result.test,
                            own_cost=result.cost, used=used, inherited=inherited)
