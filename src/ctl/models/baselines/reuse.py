"""Starting a cross-domain model from the production models' parameters ("reuse as many as possible").

A model's ``init_from(source_state, target_state)`` builds a *plan*: for each of its state tensors
that a part of a production model (a ``BaseModel``) matches, which state (``source`` or ``target``)
and which name there it comes from. :func:`reuse_parameters` copies in place every planned tensor
whose shape fits, and reports what came from where; everything else keeps its fresh init.

A head that reads ``concat(E, extras)`` where the production head read ``E`` alone plans its first
linear layer as *widened*: the production weight fills the leading input columns and the extra
columns start at zero, so the new head first computes exactly what the production head did and
learns to use the extras from there (like CTNet's near-zero adapters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ctl.models.baselines.joint import DomainTower
from ctl.models.blocks import MLP, MlpHead

Origin = Literal["source", "target"]

#: a BaseModel's MLP layers and logit, by state name
PRODUCTION_MLP = "tower.mlp"
PRODUCTION_LOGIT = "tower.logit"

_MLP_KEY = re.compile(r"^(linears|norms)\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Reuse:
    """Where one state tensor of the new model comes from.

    Attributes:
        origin: ``source`` or ``target``: the production model whose state holds it.
        name: its name in that state.
        widen: the tensor is a linear weight [out, in'] reading more inputs than the production one
            [out, in]: copy into columns ``:in`` and zero the rest.
    """

    origin: Origin
    name: str
    widen: bool = False


Plan = dict[str, Reuse]


def same_names(prefix: str, module: nn.Module, origin: Origin, state_prefix: str = "") -> Plan:
    """Every state tensor of ``module`` (named ``prefix + key`` in the model) <- ``state_prefix + key``."""
    return {prefix + key: Reuse(origin, state_prefix + key) for key in module.state_dict()}


def mlp_layers(prefix: str, mlp: MLP, origin: Origin, first_layer: int) -> Plan:
    """Layer i of ``mlp`` <- layer ``first_layer + i`` of a production model's MLP."""
    plan: Plan = {}
    for key in mlp.state_dict():
        match = _MLP_KEY.match(key)
        if match is None:
            raise ValueError(f"mlp_layers: unexpected MLP state key {key!r}")
        kind, index, rest = match.groups()
        plan[prefix + key] = Reuse(origin, f"{PRODUCTION_MLP}.{kind}.{first_layer + int(index)}.{rest}")
    return plan


def head_layers(prefix: str, head: MlpHead, origin: Origin, widen_input: bool) -> Plan:
    """An ``MlpHead`` <- a production model's whole head; ``widen_input``: the head reads extras after E."""
    plan = mlp_layers(prefix + "mlp.", head.mlp, origin, first_layer=0)
    plan.update(same_names(prefix + "logit.", head.logit, origin, state_prefix=f"{PRODUCTION_LOGIT}."))
    if widen_input:
        first = f"{prefix}mlp.linears.0.weight"
        plan[first] = Reuse(origin, plan[first].name, widen=True)
    return plan


def tower_layers(prefix: str, tower: DomainTower, origin: Origin, first_layer: int) -> Plan:
    """A ``DomainTower`` <- a production model's MLP layers from ``first_layer`` on, and its logit."""
    plan = {} if tower.mlp is None else mlp_layers(prefix + "mlp.", tower.mlp, origin, first_layer)
    plan.update(same_names(prefix + "logit.", tower.logit, origin, state_prefix=f"{PRODUCTION_LOGIT}."))
    return plan


def _copy_into(tensor: torch.Tensor, value: torch.Tensor, widen: bool) -> bool:
    """Copy ``value`` into ``tensor`` in place if it fits (see ``Reuse.widen``); whether it did."""
    if tuple(value.shape) == tuple(tensor.shape):
        tensor.copy_(value)
        return True
    fits_widened = (
        widen
        and tensor.dim() == 2
        and value.dim() == 2
        and value.shape[0] == tensor.shape[0]
        and value.shape[1] < tensor.shape[1]
    )
    if not fits_widened:
        return False
    tensor.zero_()
    tensor[:, : value.shape[1]].copy_(value)
    return True


def reuse_parameters(
    model: nn.Module,
    plan: Plan,
    source_state: Mapping[str, torch.Tensor],
    target_state: Mapping[str, torch.Tensor],
) -> dict[str, list[str]]:
    """Copy the planned tensors into ``model`` in place; report which came from where.

    A tensor shared by two modules (a tied table) is visited once, under the name
    ``named_parameters`` gives it. A planned tensor that its state lacks or whose shape does not fit
    stays fresh.

    Returns:
        ``{"copied_from_source": [...], "copied_from_target": [...], "fresh": [...]}``, names of the
        model's parameters and buffers in model order.
    """
    unknown = sorted(set(plan) - set(model.state_dict()))
    if unknown:
        raise ValueError(f"reuse_parameters: the plan names {unknown[0]!r}, which the model does not have")
    states = {"source": source_state, "target": target_state}
    report: dict[str, list[str]] = {"copied_from_source": [], "copied_from_target": [], "fresh": []}
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    with torch.no_grad():
        for name, tensor in tensors.items():
            rule = plan.get(name)
            value = None if rule is None else states[rule.origin].get(rule.name)
            if rule is None or value is None or not _copy_into(tensor, value, rule.widen):
                report["fresh"].append(name)
                continue
            report[f"copied_from_{rule.origin}"].append(name)
    return report
