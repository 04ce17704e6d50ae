"""Lightning checkpoints: written atomically, read with clear refusals, model weights and optimiser state.

Every checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain containers
only, so a checkpoint file cannot run code when it is loaded. ``ctl``'s checkpoints hold nothing
else (no hyper-parameters object, RNG states as tensors); a file that does is refused.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from ctl.errors import CtlError, cut, shorten
from ctl.io import atomic_write
from ctl.models.blocks.embeddings import GrowingEmbedding, grow_table

if TYPE_CHECKING:
    from torch.serialization import MAP_LOCATION

MODEL_PREFIX = "model."

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but fsynced and renamed into place (see :func:`ctl.io.atomic_write`).

    Lightning's own writer renames too but never fsyncs, so after a power loss a checkpoint name
    can point at missing data; a killed process leaves only a hidden temporary file here.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle))

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        # Lightning's resume reads through here: the same tensors-only load and refusal as ctl's own reads
        if weights_only is False:
            raise ValueError("AtomicCheckpointIO loads tensors and plain data only (weights_only=True)")
        # Typed as Lightning's reader is: what the file holds, which Lightning's restore takes as a mapping.
        return cast(dict, load_checkpoint(Path(path), map_location="cpu" if map_location is None else map_location))


def load_checkpoint(path: Path, map_location: MAP_LOCATION = "cpu") -> object:
    """``torch.load`` of tensors and plain data only; a file holding anything else is refused unread.

    Raises:
        CtlError: the file holds other objects (their unpickling could run code), naming the file
            and the first object the loader met.
        Exception: whatever ``torch.load`` raises for a damaged file.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"first found: {found.group(1)}" if found else "pickled code or objects"
        raise CtlError(f"checkpoint {path} holds objects other than tensors and plain data ({what}) and will not "
                       "be loaded, since loading them could run code; delete it (ctl rebuilds a deleted track, "
                       "a run without it starts over)") from None


def read_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CtlError(f"checkpoint {path} does not exist; rebuild the track it belongs to")
    try:
        checkpoint = load_checkpoint(path)
    except CtlError:
        raise
    except Exception as exc:  # noqa: BLE001 (a truncated or foreign file: say which one)
        raise CtlError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}: {cut(str(exc))}); "
                       "delete it so the track is rebuilt") from None
    if not isinstance(checkpoint, dict):
        raise CtlError(f"checkpoint {path} holds {type(checkpoint).__name__}, not a checkpoint's mapping; "
                       "delete it so the track is rebuilt")
    return checkpoint


def model_state(checkpoint: dict, prefix: str = MODEL_PREFIX) -> dict[str, torch.Tensor]:
    """The wrapped model's state_dict (Lightning stores it under ``model.``)."""
    state = checkpoint.get("state_dict", {})
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def grown_model_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every embedding table that is smaller than ``module``'s grown to its size."""
    grown = dict(state)
    for name, table in module.named_modules():
        key = f"{name}.weight" if name else "weight"
        if not isinstance(table, GrowingEmbedding) or key not in state:
            continue
        weight = state[key]
        if weight.shape[0] < table.num_embeddings and tuple(weight.shape[1:]) == tuple(table.weight.shape[1:]):
            seed_key = f"{name}.init_seed" if name else "init_seed"
            grown[key] = grow_table(weight, int(state.get(seed_key, table.init_seed)), table.num_embeddings)
    return grown


def check_fits(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, source: Path) -> None:
    """Refuse a state that does not fit ``module``, naming the first mismatching parameter."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CtlError(f"{what} ({source}) does not fit: {detail} "
                       f"({len(missing)} missing, {len(unexpected)} unexpected tensors); "
                       "was it trained with another model size or dataset schema?")
    for name, tensor in own.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CtlError(f"{what} ({source}) does not fit: parameter {name!r} has shape "
                           f"{tuple(state[name].shape)} in the checkpoint but {tuple(tensor.shape)} in the model; "
                           "was it trained with another model size or dataset schema?")


def check_weights(checkpoint: dict, path: Path) -> dict:
    """``checkpoint``, refused unless its ``state_dict`` maps parameter names to tensors."""
    weights = checkpoint.get("state_dict")
    if not isinstance(weights, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
        raise CtlError(f"checkpoint {path}: state_dict must map parameter names to tensors, got "
                       f"{shorten(weights)}; it holds no model to load")
    return checkpoint


def load_model_state(module: torch.nn.Module, path: Path, what: str) -> dict:
    """Copy a checkpoint's model weights into ``module`` in place; returns the checkpoint.

    A checkpoint written for a smaller vocabulary (the dataset grew since) loads too: its embedding
    tables get the never-trained rows the larger model starts with (:func:`grown_model_state`).
    """
    checkpoint = check_weights(read_checkpoint(path), path)
    state = grown_model_state(module, model_state(checkpoint))
    check_fits(module, state, what, path)
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
    return checkpoint


def optimizer_state_by_name(checkpoint: dict, names: list[str], source: Path | str) -> dict[str, dict]:
    """A checkpoint's first optimiser's per-parameter state, keyed by parameter name.

    ``names`` are the trained model's trainable parameter names in the order its optimiser held
    them (for a base model: ``named_parameters()`` order). The optimiser stores its state by
    position only, so a model with another parameter list would silently get the wrong state:
    the counts must agree. A checkpoint without optimiser state gives ``{}``.

    Raises:
        CtlError: the optimiser held another number of parameters than ``names``, naming both
            counts and ``source`` (the checkpoint, for the message).
    """
    states = checkpoint.get("optimizer_states") or []
    if not states:
        return {}
    held = sum(len(group["params"]) for group in states[0]["param_groups"])
    if held != len(names):
        raise CtlError(f"the optimiser state in {source} holds {held} parameters but the model it goes to has "
                       f"{len(names)}; was it trained with another model?")
    indexed = states[0]["state"]
    return {name: indexed[i] for i, name in enumerate(names) if i in indexed}


def first_difference(saved: object, current: object, where: str = "") -> str | None:
    """The first leaf where two JSON-like trees differ, as ``key: saved -> current``, or None."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in saved or key not in current:
                side = "the checkpoint" if key in saved else "this run"
                return f"{path} is only in {side}"
            found = first_difference(saved[key], current[key], path)
            if found:
                return found
        return None
    if saved != current:
        return f"{where or 'the value'}: {saved!r} in the checkpoint, {current!r} now"
    return None


def resume_point(path: Path, identity: dict, module: torch.nn.Module, fit_key: str, strict: bool) -> Path | None:
    """The checkpoint at ``path`` if a fit described by ``identity`` can resume from it, else None.

    A checkpoint resumes a fit when it can be read, was written by a fit with the same identity
    (``checkpoint[fit_key]["identity"]``) and fits ``module``. Otherwise, with ``strict``
    (``resume=true``) the fit is refused saying why; without, the stale checkpoint is removed and
    the fit starts over. No checkpoint at all: None (a fresh start).
    """
    path = Path(path)
    if not path.is_file():
        if strict:
            log.warning("resume=true but %s does not exist: nothing to resume, starting from the beginning", path)
        return None
    foreign = False  # whose it is cannot be told: never replaced, even without resume=true
    try:
        checkpoint = load_checkpoint(path)
        problem = _resume_problem(checkpoint, identity, module, path, fit_key)
        foreign = problem == NO_IDENTITY
    except CtlError:
        raise  # not a stale checkpoint to replace quietly: a file that would run code when loaded
    except Exception as exc:  # noqa: BLE001 (a damaged file: say what the reader said, and refuse below)
        problem, foreign = f"it cannot be read ({exc.__class__.__name__}: {exc})", True
    if problem is None:
        log.warning("resuming from %s", path)
        # a checkpoint with no problem is a mapping (_resume_problem found the fit's identity in it)
        threads = cast(dict, checkpoint)[fit_key].get("threads")
        if threads != torch.get_num_threads():
            log.warning("%s was written with %s torch threads, this process has %s: the resumed metrics may differ "
                        "in the last digits from an uninterrupted run (set OMP_NUM_THREADS=%s to match)",
                        path, threads, torch.get_num_threads(), threads)
        return path
    if strict:
        raise CtlError(f"cannot resume from {path}: {problem}; rerun with the same overrides, or choose a new "
                       "hydra.run.dir (resume=false starts this folder over)")
    if foreign:
        raise CtlError(f"{path} is in the way of this fit and {problem.removeprefix('it ')}: it is not the checkpoint "
                       "of a ctl fit, so it is not replaced; move it away or choose a new hydra.run.dir")
    log.warning("not resuming from %s (%s): starting over", path, problem)
    path.unlink()
    return None


#: why a checkpoint that no ctl fit wrote cannot be resumed from
NO_IDENTITY = "it records no fit identity (not written by ctl)"


def _resume_problem(checkpoint: object, identity: dict, module: torch.nn.Module, path: Path,
                    fit_key: str) -> str | None:
    if not isinstance(checkpoint, dict):
        return NO_IDENTITY
    saved = checkpoint.get(fit_key, {}).get("identity")
    if saved is None:
        return NO_IDENTITY
    difference = first_difference(saved, identity)
    if difference is not None:
        return f"it was written by another configuration ({difference})"
    try:
        check_fits(module, checkpoint.get("state_dict", {}), "its model", path)
    except CtlError as exc:
        return str(exc)
    return None
