"""``track`` protocol (``base``, ``din``): the method's own track on ``data.domain``.

The run folder gets the track's metrics and predictions and a link to its checkpoints; the
track itself stays in the cache, shared with every other run that needs it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ctl.data.dataset import Dataset
from ctl.io import atomic_copy
from ctl.training.continuation import continuation_of_run
from ctl.training.protocols.common import common_fields, link_folder, total_cost
from ctl.training.tracks import ensure_track


def run_track(cfg: DictConfig, dataset: Dataset, domain: str, run_dir: Path) -> dict:
    # the track extends from the earlier dataset's track by itself; continue_from is only checked
    continuation_of_run(cfg, dataset, run_dir)
    track = ensure_track(cfg, dataset, domain, cfg.model.net, str(cfg.model.name),
                         first_period=int(cfg.model.first_period))
    metrics = track.metrics()
    atomic_copy(track.path / "predictions.parquet", run_dir / "predictions.parquet")
    link_folder(track.path / "checkpoints", run_dir / "checkpoints")
    return {**common_fields(cfg, dataset, domain), "periods": metrics["periods"], "test": metrics["test"],
            "cost": total_cost(None, {track.name: metrics["cost"]}), "tracks": {"own": str(track.path)},
            "inherited": {}}
