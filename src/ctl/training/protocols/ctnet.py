"""``ctnet`` protocol: CTNet over the transfer periods.

The target tower starts from the target model of period ``t0-1`` (weights and optimiser state);
the frozen source tower is refreshed from the source track at every period start (or kept at
``h_s^{t0}`` with ``model.refresh_source=false``, transfer once).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ctl.data.dataset import Dataset
from ctl.errors import CtlError
from ctl.methods import method_label
from ctl.models import build_model
from ctl.models.ctnet import CTNet
from ctl.training.callbacks import SourceRefresh
from ctl.training.checkpoints import load_model_state, optimizer_state_by_name
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


def run_ctnet(cfg: DictConfig, dataset: Dataset, target: str, run_dir: Path) -> dict:
    schema = dataset.schema
    require_target(schema, target, "CTNet")
    tracks = ProductionTracks.ensure(cfg, dataset, target)
    seed = run_seed(cfg, target)
    pl.seed_everything(seed, workers=True, verbose=False)
    net = build_model(cfg.model.net, schema)
    if not isinstance(net, CTNet):
        raise CtlError(f"model.net: {type(net).__name__} is no CTNet (ctl.models.ctnet.CTNet); model.protocol=ctnet "
                       "needs one")
    production = tracks.target.checkpoint(schema.t0 - 1)
    checkpoint = load_model_state(net.target, production, what=f"the target model of period {schema.t0 - 1}")
    periods = transfer_periods(schema)
    datamodule = make_datamodule(cfg, dataset, [target], periods, eval_domain=target, seed=seed)
    task = CTRTask(net, optimizer_from(cfg), datamodule.period_of_epoch, schema.test_period,
                   keep_val_predictions_from=schema.t0)
    # every parameter of the tower: the base model it was trained as had none frozen (a frozen one here,
    # e.g. shared attention, gets its state dropped by CTRTask.configure_optimizers)
    tower = dict(net.target.named_parameters())
    by_name = optimizer_state_by_name(checkpoint, list(tower), production)
    task.inherit_optimizer_state({tower[name]: state for name, state in by_name.items()}, {str(production): checkpoint})
    adapter_note = start_adapter_state(task.inherited_optimizer_state, net, str(cfg.model.adapter_state))
    refresh = SourceRefresh(tracks.source.checkpoint, datamodule.period_of_epoch,
                            refresh=bool(cfg.model.refresh_source))
    result = fit_periods(cfg, task, datamodule, run_dir, label=f"{method_label(cfg)} {schema.source}->{target}",
                         callbacks=[refresh])
    write_predictions(run_dir / "predictions.parquet", result.predictions)
    write_val_predictions(run_dir / "val_predictions.parquet", result.val_predictions)
    inherited = {
        "target_tower": f"{production} (weights and {optimizer_name(cfg)} state: "
                        f"{len(task.inherited_optimizer_state)} tensors)",
        "adapters": adapter_note,
        "source_tower": f"{tracks.source.path}/checkpoints/period_<t>.ckpt"
                        + (" refreshed every period" if cfg.model.refresh_source else f" (period {schema.t0} only)"),
    }
    return transfer_metrics(cfg, dataset, target, tracks, periods=result.periods, test=result.test,
                            own_cost=result.cost, used=(tracks.source, tracks.target), inherited=inherited)


ADAPTER_STATES: tuple[str, ...] = ("matched", "fresh")


def start_adapter_state(inherited: dict, net, how: str) -> str:
    """Give the adapters an Adagrad state (in ``inherited``, keyed by parameter) and say which.

    ``fresh``: zero accumulators, the optimiser's default. Adagrad's first step is then about
    ``lr * sign(grad)`` for every weight whatever the gradient's size, so the adapter's output moves
    by about ``lr * sum_i |z_i|``: a shock that grows with the adapter's input width, lands before
    the activation of a tower trained for many periods, and that the few steps of a small target
    period cannot undo (CTNet fell far below base at the paper's sizes on C).

    ``matched``: every accumulator starts at the mean accumulator of the target tower's MLP
    weights, the layers the adapters add into. The adapters then take steps of the same scale as
    the tower they join, at any width, and still start from (almost) zero output.
    """
    if how not in ADAPTER_STATES:
        raise CtlError(f"model.adapter_state={how!r}: choose one of {', '.join(ADAPTER_STATES)}")
    if how == "fresh":
        return "fresh optimiser state"
    states = [inherited[p] for p in (layer.weight for layer in net.target.tower.mlp.linears) if p in inherited]
    if states and any("sum" not in state for state in states):
        raise CtlError("model.adapter_state=matched reads Adagrad's accumulators, and this run's optimiser keeps "
                       "none; use model.adapter_state=fresh with another optimiser")
    sums = [state["sum"] for state in states]
    if not sums:
        raise CtlError("model.adapter_state=matched needs the target model's Adagrad state, but its checkpoint "
                       "holds none for the MLP; use model.adapter_state=fresh")
    level = float(torch.cat([s.flatten() for s in sums]).mean())
    for param in net.adapters.parameters():
        if param.requires_grad:
            inherited[param] = {"step": torch.zeros((), dtype=torch.float32),
                                "sum": torch.full_like(param, level, memory_format=torch.preserve_format)}
    return f"Adagrad accumulators started at {level:.3g} (the target MLP's mean)"
