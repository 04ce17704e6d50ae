"""``dual_embedding`` protocol (``dual_emb``): the target model plus the latest source id embeddings.

The model starts as the target production model of period ``t0-1`` with the source model's id
embeddings as *extra* tables (``init_from``), and at every period start
:class:`SourceEmbeddingRefresh` copies the extra tables again from ``h_s^t``, the source model of
that period. All parameters train on the target rows of the transfer periods; the optimiser starts
fresh.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from ctl.data.dataset import Dataset
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
from ctl.training.protocols.common import (
    ProductionTracks,
    build_transfer_model,
    require_target,
    run_seed,
    transfer_metrics,
    transfer_periods,
)
from ctl.training.protocols.joint import init_from_production
from ctl.training.task import CTRTask


class SourceEmbeddingRefresh(pl.Callback):
    """At every train epoch start, copy ``h_s^t``'s id embeddings into the model's extra tables.

    Epoch k trains period ``period_of_epoch(k)``; the model's ``load_source_embeddings`` copies in
    place, so the optimiser keeps its (trainable) parameters. A fit resumed inside a period finds
    that period already copied (the callback state travels with the checkpoint) and keeps the
    tables as they were trained since.
    """

    def __init__(self, source_checkpoint: Callable[[int], Path], period_of_epoch: Callable[[int], int]) -> None:
        self.source_checkpoint = source_checkpoint
        self.period_of_epoch = period_of_epoch
        #: period whose source embeddings were copied last (restored with the callback state)
        self.loaded_period: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        _embedding_loader(pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        period = self.period_of_epoch(trainer.current_epoch)
        if period == self.loaded_period:
            # resumed inside this period: the checkpoint holds the tables as trained since its start
            return
        _embedding_loader(pl_module)(model_state(read_checkpoint(self.source_checkpoint(period))))
        self.loaded_period = period

    def state_dict(self) -> dict:
        return {"loaded_period": self.loaded_period}

    def load_state_dict(self, state_dict: dict) -> None:
        self.loaded_period = state_dict.get("loaded_period")


def _embedding_loader(pl_module: pl.LightningModule) -> Callable[[dict], object]:
    """The trained model's ``load_source_embeddings``; refused if it has none."""
    load = getattr(pl_module.model, "load_source_embeddings", None)
    if not callable(load):
        raise CtlError(f"{type(pl_module.model).__name__} has no load_source_embeddings(source_state)")
    return load


def run_dual_embedding(cfg: DictConfig, dataset: Dataset, target: str, run_dir: Path) -> dict:
    schema = dataset.schema
    require_target(schema, target, "dual embedding")
    tracks = ProductionTracks.ensure(cfg, dataset, target)
    seed = run_seed(cfg, target)
    pl.seed_everything(seed, workers=True, verbose=False)
    model = build_transfer_model(cfg.model.net, schema, schema.source, target)
    inherited = {**init_from_production(model, tracks, schema.t0 - 1), "optimizer": f"fresh {optimizer_name(cfg)}"}
    periods = transfer_periods(schema)
    datamodule = make_datamodule(cfg, dataset, [target], periods, eval_domain=target, seed=seed)
    task = CTRTask(model, optimizer_from(cfg), datamodule.period_of_epoch, schema.test_period)
    refresh = SourceEmbeddingRefresh(tracks.source.checkpoint, datamodule.period_of_epoch)
    result = fit_periods(cfg, task, datamodule, run_dir, label=f"{method_label(cfg)} {schema.source}->{target}",
                         callbacks=[refresh])
    write_predictions(run_dir / "predictions.parquet", result.predictions)
    inherited = {**inherited, "source_embeddings": f"{tracks.source.path}/checkpoints/period_<t>.ckpt, "
                                                   "re-copied at the start of every transfer period t"}
    return transfer_metrics(cfg, dataset, target, tracks, periods=result.periods, test=result.test,
                            own_cost=result.cost, used=(tracks.source, tracks.target), inherited=inherited)
