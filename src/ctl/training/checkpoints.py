"""Reading model weights and optimiser state out of Lightning checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from ctl.errors import CtlError

MODEL_PREFIX = "model."


def read_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CtlError(f"checkpoint {path} does not exist; rebuild the track it belongs to")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 (a truncated or foreign file: say which one)
        raise CtlError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}: {exc}); "
                       "delete it so the track is rebuilt") from None


def model_state(checkpoint: dict, prefix: str = MODEL_PREFIX) -> dict[str, torch.Tensor]:
    """The wrapped model's state_dict (Lightning stores it under ``model.``)."""
    state = checkpoint.get("state_dict", {})
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


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


def load_model_state(module: torch.nn.Module, path: Path, what: str) -> dict:
    """Copy a checkpoint's model weights into ``module`` in place; returns the checkpoint."""
    checkpoint = read_checkpoint(path)
    state = model_state(checkpoint)
    check_fits(module, state, what, path)
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
    return checkpoint


def optimizer_state_by_parameter(checkpoint: dict, parameters: list[torch.nn.Parameter]) -> dict:
    """Map a checkpoint's first optimiser's per-index state onto ``parameters`` (same order)."""
    states = checkpoint.get("optimizer_states") or []
    if not states:
        return {}
    indexed = states[0]["state"]
    return {p: indexed[i] for i, p in enumerate(parameters) if i in indexed}
