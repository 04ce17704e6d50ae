"""``source`` protocol: the source production model scores the target domain, untouched.

After transfer period t the source track's ``h_s^t`` scores the target's slice t+1; the test
slice is scored by the last source model ``h_s^{t0+T-1}``. Nothing is trained: each score is a
plain inference pass over the slice, measured with the same metrics as a training run's
validation. The model reads the target rows through its domain's ``DomainView``, as CTNet's source
tower does: features the source domain lacks, target-only ones included, are 0 (absent) for it.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ctl.data.batch import DomainView
from ctl.data.batcher import RowBatcher
from ctl.data.dataset import Dataset
from ctl.data.schema import Schema
from ctl.models import build_model
from ctl.training.checkpoints import load_model_state
from ctl.training.fitting import write_predictions
from ctl.training.protocols.common import (
    FinishedRun,
    ProductionTracks,
    TrainedModel,
    base_net,
    base_net_of,
    loaded,
    require_target,
    transfer_metrics,
    transfer_periods,
)
from ctl.training.task import StageMetrics
from ctl.training.tracks import Track

PREDICTION_KEYS: tuple[str, ...] = ("row", "user_id", "item_id", "label")


@torch.inference_mode()
def score_rows(model: torch.nn.Module, dataset: Dataset, rows: np.ndarray, batch_size: int,
               view: DomainView) -> tuple[dict, dict[str, np.ndarray]]:
    """Metrics (``rows``, ``auc``, ``gauc``, ``logloss``) and per-row predictions of ``model`` on ``rows``.

    ``view`` is the batch as the model's own domain reads it (``DomainView(schema, domain)``).
    """
    model.eval()
    metrics = StageMetrics()
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in (*PREDICTION_KEYS, "pred")}
    for batch in RowBatcher(dataset, rows, batch_size=batch_size, shuffle=False, seed=0):
        out = model(view(batch))
        logits = out["logits"] if isinstance(out, dict) else out
        metrics.update(logits, batch["label"], batch["user_id"])
        for key in PREDICTION_KEYS:
            parts[key].append(batch[key])
        parts["pred"].append(torch.sigmoid(logits).float())
    predictions = {key: torch.cat(values).numpy() for key, values in parts.items()}
    return {"rows": int(rows.size), **metrics.compute()}, predictions


def run_source(cfg: DictConfig, dataset: Dataset, target: str, run_dir: Path) -> dict:
    schema = dataset.schema
    require_target(schema, target, "the source model")
    tracks = ProductionTracks.ensure(cfg, dataset, target)
    model = build_model(base_net(cfg), schema)
    source_view = DomainView(schema, schema.source)
    batch_size = int(cfg.data.eval_batch_size)
    wall0, cpu0 = time.perf_counter(), time.process_time()

    def score(period: int, rows: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
        load_model_state(model, tracks.source.checkpoint(period), what=f"the source model of period {period}")
        return score_rows(model, dataset, rows, batch_size, view=source_view)

    periods = []
    for period in transfer_periods(schema):
        values, _ = score(period, dataset.select([target], [period + 1]))
        periods.append({"period": period, "eval_period": period + 1, "train_rows": 0, **values})
    last = schema.test_period - 1
    values, predictions = score(last, dataset.select([target], [schema.test_period]))
    write_predictions(run_dir / "predictions.parquet", predictions)
    own = {"train_rows": 0, "wall_s": round(time.perf_counter() - wall0, 3),
           "cpu_s": round(time.process_time() - cpu0, 3),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    inherited = {"model": f"{tracks.source.path}/checkpoints/period_<t>.ckpt, the source model of "
                          f"each transfer period t; the test slice is scored by period {last}'s"}
    return transfer_metrics(cfg, dataset, target, tracks, periods=periods, test={"period": schema.test_period, **values},
                            own_cost=own, used=(tracks.source,), inherited=inherited)


def rebuild_source(run: FinishedRun, schema: Schema, domain: str) -> TrainedModel:
    """The model that scored the run's test slice: the source track's model of the last transfer
    period, at the run's ``model.size``, reading rows through the source domain's view."""
    size, key = run.model_field("size"), run.key("size")
    checkpoint = Track(run.track("source"), "base").checkpoint(schema.test_period - 1)
    return loaded(key, lambda: build_model(base_net_of(size), schema, key), checkpoint,
                  view=DomainView(schema, schema.source))
