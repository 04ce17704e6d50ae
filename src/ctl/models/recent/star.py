"""``star``: STAR, the star-topology multi-domain model (Sheng et al., CIKM 2021)."""

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
from ctl.models.blocks import PartitionedNorm, StarLinear
from ctl.models.blocks.mlp import LEAKY_SLOPE

#: domain indices of the pair inside STAR's per-domain parameters
SOURCE, TARGET = 0, 1


class STAR(nn.Module):
    """Shared backbone -> star-topology MLP with partitioned normalisation -> star logit, plus an
    auxiliary network on the domain indicator; each row is scored by its own domain's path.

    Domain d's layer l is ``z^{l+1} = LeakyReLU(PN_l((W_l ⊙ W_l^d) z^l; d))`` (:class:`StarLinear`,
    :class:`PartitionedNorm` where the base model has BatchNorm), its logit
    ``s_d = (w ⊙ w^d) z^n + b + b^d + a([e_d, E])`` where ``a`` is the auxiliary network (one hidden
    LeakyReLU layer over the domain's embedding ``e_d`` and E) whose output layer starts at zero.

    ``init_from``: the backbone from the target model; each domain's weights ``W^d``, its
    normalisation (affine and running statistics) and its logit from its own production model; the
    shared weights start at ones, so on its own rows each domain's path starts as its production model.

    Args:
        schema: the dataset's features.
        backbone: the sizes.
        source: the source domain.
        target: the target domain.
        aux_width: width of the auxiliary network's hidden layer (None: the MLP's last width).
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig, source: str, target: str,
                 aux_width: int | None = None) -> None:
        super().__init__()
        self.pair = DomainPair(schema, source, target)
        self.config = backbone
        self.backbone = Backbone(schema, backbone)
        dims = backbone.mlp_dims
        in_dims = (self.backbone.out_dim, *dims[:-1])
        self.layers = nn.ModuleList(StarLinear(i, o, 2, bias=False) for i, o in zip(in_dims, dims))
        self.norms = nn.ModuleList(PartitionedNorm(o, 2) for o in dims)
        self.logit = StarLinear(dims[-1], 1, 2, bias=True)
        width = aux_width or dims[-1]
        domain_dim = backbone.embed_dim or dims[-1]
        self.domain_embedding = nn.Embedding(2, domain_dim)
        self.auxiliary = nn.Sequential(nn.Linear(domain_dim + self.backbone.out_dim, width),
                                       nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(width, 1))
        auxiliary_out = cast(nn.Linear, self.auxiliary[-1])
        nn.init.zeros_(auxiliary_out.weight)
        nn.init.zeros_(auxiliary_out.bias)

    def domain_sequences(self) -> tuple[str, ...]:
        """No per-domain sequences: the backbone reads the row's own short and long sequences."""
        return ()

    def domain_logits(self, features: torch.Tensor, domain: int, rows: torch.Tensor | None) -> torch.Tensor:
        """Domain ``domain``'s logits [B] of every row of E ``features`` [B, D]; ``rows``: that domain's rows."""
        z = features
        for layer, norm in zip(self.layers, self.norms, strict=True):
            z = F.leaky_relu(norm(layer(z, domain), domain, rows), LEAKY_SLOPE)
        indicator = self.domain_embedding.weight[domain].expand(features.shape[0], -1)
        auxiliary = self.auxiliary(torch.cat([indicator, features], dim=-1))
        return (self.logit(z, domain) + auxiliary).squeeze(-1).float()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"logits": [B]}``, each row's logit from its own domain's path."""
        is_target = self.pair.target_rows(batch)
        features = self.backbone(batch)
        logits = own_domain_logits(is_target, lambda: self.domain_logits(features, SOURCE, ~is_target),
                                   lambda: self.domain_logits(features, TARGET, is_target))
        return {"logits": logits}

    def init_from(self, source_state: Mapping[str, torch.Tensor],
                  target_state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
        """Backbone <- the target model; each domain's weights, normalisation and logit <- its own model."""
        plan: Plan = same_names("backbone.", self.backbone, "target", state_prefix="backbone.")
        origins: tuple[tuple[int, Origin], ...] = ((SOURCE, "source"), (TARGET, "target"))
        for domain, origin in origins:
            for i in range(len(self.layers)):
                plan[f"layers.{i}.domain_weights.{domain}"] = Reuse(origin, f"{PRODUCTION_MLP}.linears.{i}.weight")
                for key in cast(PartitionedNorm, self.norms[i]).domains[domain].state_dict():
                    plan[f"norms.{i}.domains.{domain}.{key}"] = Reuse(origin, f"{PRODUCTION_MLP}.norms.{i}.{key}")
            plan[f"logit.domain_weights.{domain}"] = Reuse(origin, f"{PRODUCTION_LOGIT}.weight")
            plan[f"logit.domain_biases.{domain}"] = Reuse(origin, f"{PRODUCTION_LOGIT}.bias")
        return reuse_parameters(self, plan, source_state, target_state)
