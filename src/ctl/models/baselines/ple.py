"""``ple``: Progressive Layered Extraction (Tang et al. 2020), one task per domain, on the shared backbone."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import Backbone, BackboneConfig
from ctl.models.baselines.joint import DomainPair, DomainTower, own_domain_logits
from ctl.models.baselines.reuse import Origin, mlp_layers, reuse_parameters, same_names, tower_layers
from ctl.models.blocks import MLP


def mix(gate: nn.Linear, x: torch.Tensor, experts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate-weighted sum of expert outputs.

    x [B, D_in], experts [B, K, D] -> (mixture [B, D], softmax weights [B, K]).
    """
    weights = torch.softmax(gate(x), dim=-1)
    return torch.einsum("bk,bkd->bd", weights, experts), weights


class PleLevel(nn.Module):
    """One extraction level: source, target and shared experts; a gate per domain and one shared gate.

    Every expert is one MLP layer (Linear, BatchNorm, LeakyReLU) of width ``out_dim``. A domain's
    experts read that domain's input, the shared experts read the shared input. The source gate
    mixes ``[source experts, shared experts]``, the target gate ``[target experts, shared experts]``
    (a domain gate never sees the other domain's experts), and the shared gate, which only levels
    below the top have, mixes ``[source, target, shared experts]`` into the next shared input.

    Args:
        in_dim: width of the level's inputs.
        out_dim: width of every expert.
        n_experts: experts per group (source, target, shared).
        final: the top level, which has no shared gate.

    Example::

        level = PleLevel(in_dim=32, out_dim=16, n_experts=2, final=False)
        (source, target, shared), gates = level(x, x, x)  # [B, 16] each; gates["shared"] [B, 6]
    """

    def __init__(self, in_dim: int, out_dim: int, n_experts: int, final: bool) -> None:
        super().__init__()
        if n_experts < 1:
            raise ValueError(f"PleLevel: n_experts must be >= 1, got {n_experts}")
        self.n_experts = n_experts
        self.source_experts = nn.ModuleList(MLP(in_dim, (out_dim,)) for _ in range(n_experts))
        self.target_experts = nn.ModuleList(MLP(in_dim, (out_dim,)) for _ in range(n_experts))
        self.shared_experts = nn.ModuleList(MLP(in_dim, (out_dim,)) for _ in range(n_experts))
        self.source_gate = nn.Linear(in_dim, 2 * n_experts)
        self.target_gate = nn.Linear(in_dim, 2 * n_experts)
        self.shared_gate = None if final else nn.Linear(in_dim, 3 * n_experts)

    @staticmethod
    def _run(experts: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        """Every expert on x [B, D_in] -> [B, K, D]."""
        return torch.stack([expert(x)[0] for expert in experts], dim=1)

    def forward(
        self, source_in: torch.Tensor, target_in: torch.Tensor, shared_in: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]]:
        """Inputs [B, in_dim] each -> ((source, target, shared or None) [B, out_dim], gate weights)."""
        source = self._run(self.source_experts, source_in)
        target = self._run(self.target_experts, target_in)
        shared = self._run(self.shared_experts, shared_in)
        gates: dict[str, torch.Tensor] = {}
        source_out, gates["source"] = mix(self.source_gate, source_in, torch.cat([source, shared], dim=1))
        target_out, gates["target"] = mix(self.target_gate, target_in, torch.cat([target, shared], dim=1))
        shared_out = None
        if self.shared_gate is not None:
            everything = torch.cat([source, target, shared], dim=1)
            shared_out, gates["shared"] = mix(self.shared_gate, shared_in, everything)
        return (source_out, target_out, shared_out), gates


class PLE(nn.Module):
    """Shared backbone -> ``n_levels`` PLE levels -> one tower per domain.

    Level l's experts have the width of the base MLP's layer l (``mlp_dims[l]``); each domain's
    tower holds the remaining layers ``mlp_dims[n_levels:]`` (possibly none) and the logit. Each row
    is scored by its own domain's tower.

    ``init_from``: the backbone comes from the target model; the experts of level l from layer l of
    a production MLP (source experts from the source model, target and shared experts from the
    target model, as the model is evaluated on the target domain); each tower from its domain's
    model; the gates start fresh. Unlike Share Bottom the target path does not start as the target
    model exactly: from level 2 on the shared experts read the shared gate's mixture, which holds
    source experts.

    Args:
        schema: the dataset's features.
        backbone: the sizes.
        source: the source domain.
        target: the target domain.
        n_levels: extraction levels (1 .. len(mlp_dims)).
        n_experts: experts per group and level.

    Example::

        model = PLE(schema, backbone, source="A", target="B")
        logits = model(batch)["logits"]  # [B]
        gates = model.gate_weights(batch)  # per level: {"source": [B, 4], "target": [B, 4], ...}
    """

    def __init__(
        self,
        schema: Schema,
        backbone: BackboneConfig,
        source: str,
        target: str,
        n_levels: int = 2,
        n_experts: int = 2,
    ) -> None:
        super().__init__()
        dims = backbone.mlp_dims
        if not 1 <= n_levels <= len(dims):
            raise ValueError(
                f"PLE: n_levels must lie in 1 .. {len(dims)} (one level per layer of mlp_dims {dims}), "
                f"got {n_levels}"
            )
        self.pair = DomainPair(schema, source, target)
        self.config = backbone
        self.n_levels = n_levels
        self.backbone = Backbone(schema, backbone)
        in_dims = (self.backbone.out_dim, *dims[: n_levels - 1])
        self.levels = nn.ModuleList(
            PleLevel(in_dim, out_dim, n_experts, final=level == n_levels - 1)
            for level, (in_dim, out_dim) in enumerate(zip(in_dims, dims[:n_levels]))
        )
        self.source_tower = DomainTower(dims[n_levels - 1], dims[n_levels:])
        self.target_tower = DomainTower(dims[n_levels - 1], dims[n_levels:])

    def domain_sequences(self) -> tuple[str, ...]:
        """No per-domain sequences: the backbone reads the row's own short and long sequences."""
        return ()

    def _extract(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
        """(source top [B, D], target top [B, D], gate weights per level)."""
        e = self.backbone(batch)
        source, target, shared = e, e, e
        gates = []
        for level in self.levels:
            (source, target, shared), level_gates = level(source, target, shared)
            gates.append(level_gates)
        return source, target, gates

    def gate_weights(self, batch: Batch) -> list[dict[str, torch.Tensor]]:
        """Per level, the gates' softmax weights: ``source``/``target`` [B, 2K] (own experts, then shared),
        and below the top level ``shared`` [B, 3K] (source, target, shared experts)."""
        return self._extract(batch)[2]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"logits": [B]}``, each row's logit from its own domain's tower."""
        is_target = self.pair.target_rows(batch)
        source, target, _ = self._extract(batch)
        logits = own_domain_logits(
            is_target, lambda: self.source_tower(source), lambda: self.target_tower(target)
        )
        return {"logits": logits}

    def init_from(
        self, source_state: Mapping[str, torch.Tensor], target_state: Mapping[str, torch.Tensor]
    ) -> dict[str, list[str]]:
        """Backbone <- target; level-l experts <- layer l (source experts: the source's); towers <- own."""
        plan = same_names("backbone.", self.backbone, "target", state_prefix="backbone.")
        origin_of_group: tuple[tuple[str, Origin], ...] = (("source", "source"), ("target", "target"),
                                                           ("shared", "target"))
        for index, level in enumerate(self.levels):
            for group, origin in origin_of_group:
                for k, expert in enumerate(getattr(level, f"{group}_experts")):
                    plan.update(mlp_layers(f"levels.{index}.{group}_experts.{k}.", expert, origin, index))
        plan.update(tower_layers("source_tower.", self.source_tower, "source", self.n_levels))
        plan.update(tower_layers("target_tower.", self.target_tower, "target", self.n_levels))
        return reuse_parameters(self, plan, source_state, target_state)
