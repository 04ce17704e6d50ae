"""The continual transfer protocol: what ``ctl train`` runs for each kind of method.

``model.protocol`` names the kind; each lives in :mod:`ctl.training.protocols`:

* ``track`` (``base``, ``din``): the method's own track on ``data.domain``;
* ``source``: the source production model scores the target slices, untrained;
* ``finetune`` (``ft_id_emb``, ``ft_all_emb``, ``ft_all``): a base model assembled from source
  and target parameters, fine-tuned on target rows;
* ``dual_embedding`` (``dual_emb``): the target model plus refreshed source id embeddings;
* ``joint`` (``mlppp``, ``share_bottom``, ``ple``, ``minet``, ``ddtcdr``, ``dasl``, ``star``, ``pepnet``): trained on
  source and target rows of the transfer periods;
* ``ctnet`` (``ctnet``, ``ctnet_linear``): CTNet with its refreshed frozen source tower;
* ``frozen_source`` (``lowrank``, ``plugin``, ``distill``): a model over the frozen latest source
  model, refreshed every period, trained on target rows.

Every transfer method is validated on the target's slice t+1 after each transfer period t and
tested on the test slice, reuses the shared base tracks of both domains (built once, cached) and
writes ``metrics.json``, ``predictions.parquet`` and ``config.yaml`` (resolved) into its Hydra
output folder (keys: :mod:`ctl.training.protocols.common`). CTNet also writes
``val_predictions.parquet`` (its rows of every validated slice). A transfer run keeps a copy of
its target base track's predictions beside its own (``baseline_predictions.parquet``, and
``baseline_val_predictions.parquet`` where the track has them), so the run folder alone pairs
the two models row by row, whatever becomes of the track cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ctl.data.dataset import Dataset
from ctl.data.registry import load_for
from ctl.data.synthetic.population import with_world
from ctl.errors import CtlError
from ctl.io import atomic_copy, atomic_write_json, atomic_write_text, check_writable
from ctl.run_files import baseline_copy
from ctl.training.distributed import is_rank_zero, scratch_run_dir
from ctl.training.protocols.ctnet import run_ctnet
from ctl.training.protocols.dual_embedding import run_dual_embedding
from ctl.training.protocols.finetune import run_finetune
from ctl.training.protocols.frozen_source import run_frozen_source
from ctl.training.protocols.joint import run_joint
from ctl.training.protocols.source import run_source
from ctl.training.protocols.track import run_track

__all__ = ["PROTOCOLS", "run_train"]

Protocol = Callable[[DictConfig, Dataset, str, Path], dict]

PROTOCOLS: dict[str, Protocol] = {
    "track": run_track,
    "source": run_source,
    "finetune": run_finetune,
    "dual_embedding": run_dual_embedding,
    "joint": run_joint,
    "ctnet": run_ctnet,
    "frozen_source": run_frozen_source,
}


def run_train(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the method of ``cfg`` under its protocol; returns the run's metrics (also written)."""
    protocol = str(cfg.model.protocol)
    if protocol not in PROTOCOLS:
        raise CtlError(f"model.protocol={protocol!r} is unknown; expected one of {', '.join(PROTOCOLS)}")
    run_dir = Path(run_dir)
    cfg = with_world(cfg)  # world=<i>: the config written below names the world's drawn knobs
    check_writable(run_dir, "the run folder (hydra.run.dir)")
    if not is_rank_zero():  # DDP: rank zero writes the run folder, the others a scratch copy
        run_dir = scratch_run_dir(run_dir)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    dataset = load_for(cfg.data, cfg.home, progress=bool(cfg.progress))
    domain = str(cfg.data.domain)
    dataset.schema.domain_index(domain)
    metrics = PROTOCOLS[protocol](cfg, dataset, domain, run_dir)
    target_track = (metrics.get("tracks") or {}).get("target")
    if metrics.get("baseline") and target_track:
        for name in ("predictions.parquet", "val_predictions.parquet"):
            if (Path(target_track) / name).is_file():
                atomic_copy(Path(target_track) / name, baseline_copy(run_dir, name))
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics
