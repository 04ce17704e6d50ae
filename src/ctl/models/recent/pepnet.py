"""``pepnet``: PEPNet, parameter and embedding personalised network (Chang et al., KDD 2023)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import Backbone, BackboneConfig
from ctl.models.baselines.joint import DomainPair, own_domain_logits
from ctl.models.baselines.reuse import (
    PRODUCTION_LOGIT,
    PRODUCTION_MLP,
    Origin,
    Plan,
    Reuse,
    reuse_parameters,
    same_names,
)
from ctl.models.blocks import GateNU, PartitionedNorm
from ctl.models.blocks.mlp import LEAKY_SLOPE

#: domain indices of the pair inside PEPNet's per-domain parameters
SOURCE, TARGET = 0, 1
#: the prior (persona) features PPNet's gates read besides the domain
PRIOR_FEATURES: tuple[str, ...] = ("user_id", "item_id")


class PEPNet(nn.Module):
    """One shared tower whose input and every layer are scaled by gates of the domain and the row's priors.

    * EPNet: ``E' = delta_E ⊙ E`` with ``delta_E = GateNU([e_d, sg(E)])``;
    * PPNet: layer l is ``z^{l+1} = delta_l ⊙ LeakyReLU(PN_l(W_l z^l; d))`` with
      ``delta_l = GateNU_l([e_user, e_item, e_d, sg(E')])``;

    where ``e_d`` is the domain's embedding, ``sg`` stops the gradient (the gates must not bend the
    embeddings they read) and every GateNU is ``2 sigmoid(W2 ReLU(W1 x + b1) + b2)`` starting at 1.
    The tower's normalisation keeps one set of statistics per domain (:class:`PartitionedNorm`):
    with A about 60x B, one BatchNorm's running statistics would be the source's.

    ``init_from``: the backbone, the tower's weights and logit from the target model; each domain's
    normalisation from its own production model; gates fresh (at 1): on target rows PEPNet starts
    as the target model.

    Args:
        schema: the dataset's features.
        backbone: the sizes.
        source: the source domain.
        target: the target domain.
        gate_width: hidden width of every gate unit.
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig, source: str, target: str,
                 gate_width: int = 64) -> None:
        super().__init__()
        self.pair = DomainPair(schema, source, target)
        self.config = backbone
        self.backbone = Backbone(schema, backbone)
        dims = backbone.mlp_dims
        in_dim = self.backbone.out_dim
        domain_dim = backbone.embed_dim or dims[-1]
        self.domain_embedding = nn.Embedding(2, domain_dim)
        prior_dim = sum(self.backbone.embeddings.dim(name) for name in PRIOR_FEATURES) + domain_dim
        self.embedding_gate = GateNU(domain_dim + in_dim, gate_width, in_dim)
        self.linears = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in zip((in_dim, *dims[:-1]), dims))
        self.norms = nn.ModuleList(PartitionedNorm(o, 2) for o in dims)
        self.layer_gates = nn.ModuleList(GateNU(prior_dim + in_dim, gate_width, o) for o in dims)
        self.logit = nn.Linear(dims[-1], 1)

    def domain_sequences(self) -> tuple[str, ...]:
        """No per-domain sequences: the backbone reads the row's own short and long sequences."""
        return ()

    def domain_logits(self, features: torch.Tensor, priors: torch.Tensor, domain: int,
                      rows: torch.Tensor | None) -> torch.Tensor:
        """Logits [B] of every row of E ``features`` as domain ``domain``; ``priors`` [B, P] the rows'
        prior embeddings; ``rows``: the domain's rows (its normalisation statistics)."""
        indicator = self.domain_embedding.weight[domain].expand(features.shape[0], -1)
        gated = self.embedding_gate(torch.cat([indicator, features.detach()], dim=-1)) * features
        gate_input = torch.cat([priors, indicator, gated.detach()], dim=-1)
        z = gated
        for linear, norm, gate in zip(self.linears, self.norms, self.layer_gates, strict=True):
            z = gate(gate_input) * F.leaky_relu(norm(linear(z), domain, rows), LEAKY_SLOPE)
        return self.logit(z).squeeze(-1).float()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"logits": [B]}``, each row's logit as its own domain."""
        is_target = self.pair.target_rows(batch)
        features = self.backbone(batch)
        embeddings = self.backbone.embeddings
        priors = torch.cat([embeddings.lookup(name, batch[name]) for name in PRIOR_FEATURES], dim=-1)
        logits = own_domain_logits(is_target, lambda: self.domain_logits(features, priors, SOURCE, ~is_target),
                                   lambda: self.domain_logits(features, priors, TARGET, is_target))
        return {"logits": logits}

    def init_from(self, source_state: Mapping[str, torch.Tensor],
                  target_state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
        """Backbone, tower and logit <- the target model; each domain's normalisation <- its own model."""
        plan: Plan = same_names("backbone.", self.backbone, "target", state_prefix="backbone.")
        origins: tuple[tuple[int, Origin], ...] = ((SOURCE, "source"), (TARGET, "target"))
        for i in range(len(self.linears)):
            plan[f"linears.{i}.weight"] = Reuse("target", f"{PRODUCTION_MLP}.linears.{i}.weight")
            norm = cast(PartitionedNorm, self.norms[i])
            for domain, origin in origins:
                for key in norm.domains[domain].state_dict():
                    plan[f"norms.{i}.domains.{domain}.{key}"] = Reuse(origin, f"{PRODUCTION_MLP}.norms.{i}.{key}")
        plan.update(same_names("logit.", self.logit, "target", state_prefix=f"{PRODUCTION_LOGIT}."))
        return reuse_parameters(self, plan, source_state, target_state)
