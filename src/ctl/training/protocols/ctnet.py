"""``ctnet`` protocol: CTNet over the transfer periods.

The target tower starts from the target model of period ``t0-1`` (weights and Adagrad state);
the frozen source tower is refreshed from the source track at every period start (or kept at
``h_s^{t0}`` with ``model.refresh_source=false``, transfer once).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from ctl.data.dataset import Dataset
from ctl.models import build_model
from ctl.training.callbacks import SourceRefresh
from ctl.training.checkpoints import load_model_state, optimizer_state_by_parameter
from ctl.training.fitting import (
    fit_periods,
    make_datamodule,
    optimizer_from,
    write_predictions,
    write_val_predictions,
)
from ctl.training.protocols.common import (
    ProductionTracks,
    method_name,
    require_target,
    run_seed,
    transfer_metrics,
    transfer_periods,
)
from ctl.training.task import CTRTask


def run_ctnet(cfg: DictConfig, dataset: Dataset, target: str, run_dir: Path) -> dict:
    schema = dataset.schema
    require_target(schema, target, "CTNet")
    tracks = ProductionTracks.ensure(cfg, dataset, target)
    seed = run_seed(cfg, target)
    pl.seed_everything(seed, workers=True, verbose=False)
    net = build_model(cfg.model.net, schema)
    production = tracks.target.checkpoint(schema.t0 - 1)
    checkpoint = load_model_state(net.target, production, what=f"the target model of period {schema.t0 - 1}")
    periods = transfer_periods(schema)
    datamodule = make_datamodule(cfg, dataset, [target], periods, eval_domain=target, seed=seed)
    task = CTRTask(net, optimizer_from(cfg), datamodule.period_of_epoch, schema.test_period,
                   keep_val_predictions_from=schema.t0)
    task.inherited_optimizer_state = optimizer_state_by_parameter(checkpoint, list(net.target.parameters()))
    refresh = SourceRefresh(tracks.source.checkpoint, datamodule.period_of_epoch,
                            refresh=bool(cfg.model.refresh_source))
    result = fit_periods(cfg, task, datamodule, run_dir, label=f"{method_name(cfg)} {schema.source}->{target}",
                         callbacks=[refresh])
    write_predictions(run_dir / "predictions.parquet", result.predictions)
    write_val_predictions(run_dir / "val_predictions.parquet", result.val_predictions)
    inherited = {
        "target_tower": f"{production} (weights and Adagrad state: {len(task.inherited_optimizer_state)} tensors)",
        "source_tower": f"{tracks.source.path}/checkpoints/period_<t>.ckpt"
                        + (" refreshed every period" if cfg.model.refresh_source else f" (period {schema.t0} only)"),
    }
    return transfer_metrics(cfg, dataset, target, tracks, periods=result.periods, test=result.test,
                            own_cost=result.cost, used=(tracks.source, tracks.target), inherited=inherited)
