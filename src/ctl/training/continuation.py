"""Continue a fit on a dataset that grew by whole periods, from the fit on its earlier version.

A dataset continued by k periods (:mod:`ctl.data.lineage`) has the same rows and history events
as its earlier version in every period that version trained on, so a fit over its periods
``first .. P`` passes, after the earlier fit's last period ``P - 1``, through exactly the state
the earlier fit saved there: weights, optimiser state, the global random stream, the period
records. Such a fit starts from that checkpoint instead of period ``first``:

* the checkpoint is *grown* to the larger vocabulary: every embedding table gets the rows a
  table built at that size started with (:class:`~ctl.models.blocks.embeddings.GrowingEmbedding`),
  its optimiser state the values a fresh optimiser starts such rows with (Adagrad's
  ``initial_accumulator_value``, zero otherwise), which is what a never-trained row keeps;
* the last period is validated again on this dataset's slice after it (a synthetic world draws
  the earlier test slice anew as a training period);
* it is written as the fit's ``last.ckpt`` under the new fit's identity, and Lightning resumes
  from it: only the new periods are trained, with the same data order and random draws as a fit
  over all periods from the start would use, so both end with the same metrics and weights
  (on the same threads; optimisers that move never-trained rows, e.g. with weight decay, differ).

A killed continuation resumes like any fit: its ``last.ckpt`` already carries the new identity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from omegaconf import DictConfig, OmegaConf

from ctl.data.dataset import Dataset
from ctl.data.lineage import read_lineage
from ctl.errors import CtlError
from ctl.io import atomic_link
from ctl.received import field, mapping, read_json
from ctl.training.callbacks import FIT_KEY, LAST_CHECKPOINT, SourceRefresh, period_checkpoint_name
from ctl.training.checkpoints import (
    AtomicCheckpointIO,
    check_weights,
    first_difference,
    grown_model_state,
    read_checkpoint,
)
from ctl.training.distributed import barrier, gather_rows, is_rank_zero
from ctl.training.task import TASK_KEY, CTRTask, StageMetrics, row_predictions

log = logging.getLogger(__name__)

#: configuration keys a continued run may change: where the data is, and how the run is shown
FREE_KEYS = ("continue_from", "home", "resume", "progress", "print_table", "checkpoint_every_n_steps")
#: the data keys that must stay (the rest say which dataset, checked by its lineage instead)
KEPT_DATA_KEYS = ("domain", "batch_size", "eval_batch_size", "in_memory")


@dataclass(frozen=True)
class Continuation:
    """Where a fit continues from.

    Attributes:
        checkpoint: the earlier fit's checkpoint of its last trained period.
        last_period: that period.
        origin: the earlier track or run folder (for messages and ``metrics.json``).
        copy_earlier: also copy (grown) the earlier fit's checkpoints of every period into the new
            fit's folder (a track, whose every period's model other methods read).
    """

    checkpoint: Path
    last_period: int
    origin: str
    copy_earlier: bool = False


# --- growing a checkpoint -------------------------------------------------------------------------


def grow_checkpoint(checkpoint: dict, task: torch.nn.Module, source: Path) -> tuple[dict, list[str]]:
    """``checkpoint`` of ``task`` (read from ``source``) written with smaller embedding tables, grown
    to ``task``'s; and the names of the grown tables. Optimiser state is grown along (positions as
    ``task`` orders its parameters for its optimiser)."""
    before = dict(checkpoint.get("state_dict", {}))
    state = grown_model_state(task, before)
    grown = {key: int(before[key].shape[0]) for key in state if state[key] is not before[key]}
    out = dict(checkpoint, state_dict=state)
    if grown and checkpoint.get("optimizer_states") and isinstance(task, CTRTask):
        grown_state = _grow_optimizer_state(checkpoint["optimizer_states"][0], task, grown, state, source)
        out["optimizer_states"] = [grown_state, *checkpoint["optimizer_states"][1:]]
    return out, sorted(grown)


def _grow_optimizer_state(saved: dict, task: CTRTask, grown: dict[str, int], state: dict, source: Path) -> dict:
    optimizer = task.configure_optimizers()
    names = {id(p): n for n, p in task.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    held = sum(len(group["params"]) for group in saved["param_groups"])
    if held != len(order):
        raise CtlError(f"{source}: its optimiser state holds {held} parameters but this model has {len(order)}; "
                       "was it trained with another model?")
    fill_of = {i: group.get("initial_accumulator_value", 0.0) for group in saved["param_groups"] for i in group["params"]}
    per_param = dict(saved["state"])
    for index, name in enumerate(order):
        if name not in grown or index not in per_param:
            continue
        rows = state[name].shape[0]
        per_param[index] = {
            key: (torch.cat([value, torch.full((rows - value.shape[0], *value.shape[1:]),
                                               float(fill_of[index]) if key == "sum" else 0.0, dtype=value.dtype)])
                  if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == grown[name] else value)
            for key, value in per_param[index].items()}
    return dict(saved, state=per_param)


# --- preparing the resume point ----------------------------------------------------------------------


def _identity_of(path: Path) -> dict | None:
    """The fit identity ``path`` records; None for a checkpoint written by no ctl fit. An unreadable
    file is refused (:func:`read_checkpoint` names it): whose it is cannot be told."""
    checkpoint = read_checkpoint(path)
    fit = checkpoint.get(FIT_KEY) if isinstance(checkpoint, dict) else None
    return fit.get("identity") if isinstance(fit, dict) else None


def _holds_this_fit(checkpoint_dir: Path, identity: dict) -> bool:
    """Whether ``checkpoint_dir`` already holds a checkpoint of the fit ``identity`` (a continuation
    that was killed, or finished): then it resumes from there as any fit. A ``last.ckpt`` of
    another fit (or of none) is refused: writing the continuation there would destroy it."""
    last = checkpoint_dir / LAST_CHECKPOINT
    if last.is_file():
        if _identity_of(last) != identity:
            raise CtlError(f"{last} holds the unfinished fit of another configuration or dataset (or was not "
                           "written by ctl); the continuation will not overwrite it: resume that fit, or move "
                           "the file away, or continue into a new hydra.run.dir")
        return True
    periods = sorted(checkpoint_dir.glob("period_*.ckpt"), key=lambda p: int(p.stem.removeprefix("period_")))
    return bool(periods) and _identity_of(periods[-1]) == identity


def prepare(continuation: Continuation, task: CTRTask, datamodule, callbacks: list, checkpoint_dir: Path,
            identity: dict) -> None:
    """Write ``checkpoint_dir/last.ckpt``: the earlier fit's last checkpoint grown to ``task``, its
    last period validated again on ``datamodule``'s dataset, under ``identity`` (see the module
    docstring). Nothing is done when ``checkpoint_dir`` already holds a checkpoint of this fit.

    Under DDP every rank calls it: every rank decides alike (the folder is looked at before anyone
    writes), loads the checkpoint and validates the whole slice itself with no collective (the
    datamodule has no trainer yet, so it serves every row), then rank zero writes and the others
    wait for it before they resume from what it wrote.
    """
    checkpoint_dir = Path(checkpoint_dir)
    done = _holds_this_fit(checkpoint_dir, identity)
    barrier()  # every rank has looked before rank zero writes
    if done:
        return
    last = continuation.last_period
    if is_rank_zero():
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if continuation.copy_earlier:
            _copy_earlier(continuation, task, checkpoint_dir)
    checkpoint, _ = grow_checkpoint(read_checkpoint(continuation.checkpoint), task, continuation.checkpoint)
    if TASK_KEY not in checkpoint or FIT_KEY not in checkpoint:
        raise CtlError(f"{continuation.checkpoint} is not the checkpoint of a ctl fit (no task state); "
                       "cannot continue from it")
    with torch.no_grad():
        task.load_state_dict(checkpoint["state_dict"], strict=True)
    for callback in callbacks:
        saved = (checkpoint.get("callbacks") or {}).get(getattr(callback, "state_key", None))
        if saved is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(saved)
        if isinstance(callback, SourceRefresh):  # the source model the last period was validated with
            loaded = callback.loaded_period
            callback.load(task, loaded if not callback.refresh and loaded is not None else last)
    keep_from = task.keep_val_predictions_from
    record, predictions = revalidate(task, datamodule.eval_batches(last + 1),
                                     keep_from is not None and last >= keep_from)
    task_state = dict(checkpoint[TASK_KEY])
    earlier = {r["period"]: r for r in task_state["period_results"]}
    if last not in earlier:
        raise CtlError(f"{continuation.checkpoint} records no period {last}; cannot continue from it")
    earlier[last] = {**earlier[last], "rows": record["rows"], **record["metrics"]}
    task_state["period_results"] = [earlier[p] for p in sorted(earlier)]
    if predictions is not None:
        task_state["val_predictions"] = {**task_state.get("val_predictions", {}), last: predictions}
    checkpoint[TASK_KEY] = task_state
    checkpoint[FIT_KEY] = {**checkpoint[FIT_KEY], "identity": identity, "spent": {"wall_s": 0.0, "cpu_s": 0.0},
                           "continued_from": _summary(continuation, task_state["period_results"])}
    if is_rank_zero():
        AtomicCheckpointIO().save_checkpoint(checkpoint, checkpoint_dir / LAST_CHECKPOINT)
        log.warning("continuing %s after its period %d", continuation.origin, last)
    barrier()  # the other ranks resume from the last.ckpt rank zero wrote


def _summary(continuation: Continuation, records: list[dict]) -> dict:
    return {"origin": continuation.origin, "checkpoint": str(continuation.checkpoint),
            "last_period": continuation.last_period,
            "train_rows": int(sum(r["train_rows"] for r in records if r["period"] <= continuation.last_period))}


def _copy_earlier(continuation: Continuation, task: CTRTask, checkpoint_dir: Path) -> None:
    """The earlier fit's period checkpoints, grown to ``task`` (linked when nothing grows)."""
    for path in sorted(continuation.checkpoint.parent.glob("period_*.ckpt")):
        period = int(path.stem.removeprefix("period_"))
        if period > continuation.last_period:
            continue
        target = checkpoint_dir / period_checkpoint_name(period)
        checkpoint, grown = grow_checkpoint(read_checkpoint(path), task, path)
        if grown:
            AtomicCheckpointIO().save_checkpoint(checkpoint, target)
        else:
            atomic_link(path, target)


def revalidate(task: CTRTask, batches, keep_predictions: bool) -> tuple[dict, dict | None]:
    """``task``'s metrics on ``batches`` as its validation computes them: ``{"rows", "metrics"}``, and
    the per-row predictions when kept. ``batches`` hold every row of the slice: nothing is gathered
    from other ranks."""
    metrics, parts, rows = StageMetrics(across_ranks=False), [], 0
    modes = {module: module.training for module in task.modules()}
    task.eval()
    with torch.no_grad():
        for batch in batches:
            logits = task(batch)["logits"]
            metrics.update(logits, batch["label"], batch["user_id"])
            rows += int(batch["label"].shape[0])
            if keep_predictions:
                parts.append(row_predictions(batch, logits))
    for module, training in modes.items():  # Lightning trains on in the modes the modules are left in
        module.train(training)
    return {"rows": rows, "metrics": metrics.compute()}, (gather_rows(parts, across_ranks=False)[0] if keep_predictions else None)


def continued_cost(cost: dict, continuation: Continuation, records: list[dict],
                   prepared: tuple[float, float] = (0.0, 0.0)) -> dict:
    """A continued fit's cost: the rows of the new periods only, its own wall and CPU time with the
    ``prepared`` (wall, CPU) seconds of :func:`prepare` (growing and copying the earlier checkpoints,
    validating the last period again), and under ``continued_from`` what the earlier fit had trained."""
    summary = {**_summary(continuation, records), "prepare_wall_s": round(prepared[0], 3)}
    return {**cost, "train_rows": int(sum(r["train_rows"] for r in records if r["period"] > continuation.last_period)),
            "wall_s": round(cost["wall_s"] + prepared[0], 3), "cpu_s": round(cost["cpu_s"] + prepared[1], 3),
            "continued_from": summary}


# --- a run's continuation (continue_from=RUN_DIR) ---------------------------------------------------


def continuation_of_run(cfg: DictConfig, dataset: Dataset, run_dir: Path) -> Continuation | None:
    """The continuation ``cfg.continue_from`` asks for, checked; None when there is nothing to continue
    (no ``continue_from``, or the run folder itself already trained on this dataset: then it resumes)."""
    source = cfg.get("continue_from")
    if not source:
        return None
    earlier = Path(str(source)).expanduser()
    metrics_file = earlier / "metrics.json"
    if not metrics_file.is_file():
        raise CtlError(f"continue_from={earlier}: no metrics.json there (not a finished ctl run); "
                       "finish it first (resume=true in that folder)")
    metrics = mapping(read_json(metrics_file, f"continue_from={earlier}"), metrics_file)
    field(metrics, "dataset", str, metrics_file)
    if metrics.get("dataset") == dataset.fingerprint():
        if earlier.resolve() == Path(run_dir).resolve():
            return None
        raise CtlError(f"continue_from={earlier} was trained on this very dataset ({dataset.path}): nothing to "
                       "continue; append a period first (ctl data append, or ctl data generate ... extend=1)")
    ancestor = next((a for a in read_lineage(dataset.path) if a.fingerprint == metrics.get("dataset")), None)
    if ancestor is None:
        raise CtlError(f"continue_from={earlier}: its dataset ({metrics.get('dataset')}) is not an earlier version "
                       f"of {dataset.path} (not in its lineage.json); a run continues only on the dataset it was "
                       "trained on, grown by `ctl data append` or `ctl data generate ... extend=k`")
    last = ancestor.test_period - 1
    checkpoint = earlier / "checkpoints" / period_checkpoint_name(last)
    if not checkpoint.is_file():
        raise CtlError(f"continue_from={earlier}: {checkpoint.name} is missing from its checkpoints; "
                       "it cannot be continued (train it again on the longer dataset)")
    saved = _saved_config(check_weights(read_checkpoint(checkpoint), checkpoint), checkpoint)
    if saved is not None:
        difference = first_difference(_comparable(saved), _comparable(cast(dict, OmegaConf.to_container(cfg, resolve=True))))
        if difference is not None:
            raise CtlError(f"continue_from={earlier} was trained with another configuration ({difference}); "
                           "continue it with its own overrides (only the dataset may grow)")
    return Continuation(checkpoint=checkpoint, last_period=last, origin=str(earlier))


def _saved_config(checkpoint: dict, path: Path) -> dict | None:
    """The configuration the checkpoint's fit recorded (None: it recorded none), each level checked."""
    fit = checkpoint.get(FIT_KEY)
    if fit is None:
        return None
    identity = mapping(fit, path, FIT_KEY).get("identity", {})
    config = mapping(identity, path, f"{FIT_KEY}.identity").get("config")
    if config is None:
        return None
    config = mapping(config, path, f"{FIT_KEY}.identity.config")
    mapping(config.get("data", {}), path, f"{FIT_KEY}.identity.config.data")
    return config


def _comparable(config: dict) -> dict:
    kept = {k: v for k, v in config.items() if k not in FREE_KEYS and k != "data"}
    kept["data"] = {k: config.get("data", {}).get(k) for k in KEPT_DATA_KEYS}
    return kept
