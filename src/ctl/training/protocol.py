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

Each protocol also rebuilds what it trained: :func:`rebuild_trained_model` gives a finished run's
latest model, built from ctl's own classes as the protocol built it and loaded with the weights
it scored the test slice with (``ctl export`` serves it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ctl.data.dataset import Dataset
from ctl.data.registry import load_for
from ctl.data.schema import Schema
from ctl.data.synthetic.population import with_world
from ctl.errors import CtlError
from ctl.io import atomic_copy, atomic_write_json, atomic_write_text, check_writable
from ctl.received import field
from ctl.run_files import baseline_copy
from ctl.training.distributed import is_rank_zero, scratch_run_dir
from ctl.training.protocols.common import FinishedRun, TrainedModel, rebuild_own_net, rebuild_transfer_net
from ctl.training.protocols.ctnet import run_ctnet
from ctl.training.protocols.dual_embedding import run_dual_embedding
from ctl.training.protocols.finetune import run_finetune
from ctl.training.protocols.frozen_source import run_frozen_source
from ctl.training.protocols.joint import rebuild_joint, run_joint
from ctl.training.protocols.source import rebuild_source, run_source
from ctl.training.protocols.track import run_track

__all__ = ["PROTOCOLS", "Protocol", "rebuild_trained_model", "run_train"]


@dataclass(frozen=True)
class Protocol:
    """One kind of method: how ``ctl train`` runs it, and how its latest model is rebuilt from a finished run."""

    #: (config, dataset, target domain, run folder) -> the run's metrics
    run: Callable[[DictConfig, Dataset, str, Path], dict]
    #: (the finished run, the dataset's schema, the target domain) -> its latest model, in eval mode
    rebuild: Callable[[FinishedRun, Schema, str], TrainedModel]


PROTOCOLS: dict[str, Protocol] = {
    "track": Protocol(run_track, rebuild_own_net),
    "source": Protocol(run_source, rebuild_source),
    "finetune": Protocol(run_finetune, rebuild_own_net),
    "dual_embedding": Protocol(run_dual_embedding, rebuild_transfer_net),
    "joint": Protocol(run_joint, rebuild_joint),
    "ctnet": Protocol(run_ctnet, rebuild_own_net),
    "frozen_source": Protocol(run_frozen_source, rebuild_own_net),
}


def protocol_of(name: object, key: str) -> Protocol:
    """The protocol ``name`` (``model.protocol``, named ``key`` in the refusal of an unknown one)."""
    if not isinstance(name, str) or name not in PROTOCOLS:
        raise CtlError(f"{key}={name!r} is unknown; expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def rebuild_trained_model(run: FinishedRun, schema: Schema, domain: str) -> TrainedModel:
    """The latest model of the finished ``run`` on ``schema``'s dataset, built by the protocol that trained it.

    The run folder may come from someone else: its model is built from ctl's own classes only
    (:mod:`ctl.models.registry`), its checkpoints read as tensors only.
    """
    config_file = run.folder / "config.yaml"
    protocol = protocol_of(field(run.config, "model.protocol", str, config_file), f"{config_file}: model.protocol")
    return protocol.rebuild(run, schema, domain)


def run_train(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the method of ``cfg`` under its protocol; returns the run's metrics (also written)."""
    protocol = protocol_of(str(cfg.model.protocol), "model.protocol")
    run_dir = Path(run_dir)
    cfg = with_world(cfg)  # world=<i>: the config written below names the world's drawn knobs
    check_writable(run_dir, "the run folder (hydra.run.dir)")
    if not is_rank_zero():  # DDP: rank zero writes the run folder, the others a scratch copy
        run_dir = scratch_run_dir(run_dir)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    dataset = load_for(cfg.data, cfg.home, progress=bool(cfg.progress))
    domain = str(cfg.data.domain)
    dataset.schema.domain_index(domain)
    metrics = protocol.run(cfg, dataset, domain, run_dir)
    target_track = (metrics.get("tracks") or {}).get("target")
    if metrics.get("baseline") and target_track:
        for name in ("predictions.parquet", "val_predictions.parquet"):
            if (Path(target_track) / name).is_file():
                atomic_copy(Path(target_track) / name, baseline_copy(run_dir, name))
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics
