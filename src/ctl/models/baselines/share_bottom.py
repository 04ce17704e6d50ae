"""``share_bottom``: Shared-Bottom multi-task model, one task per domain (Caruana 1997; paper 4.4)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import Backbone, BackboneConfig
from ctl.models.baselines.joint import DomainPair, DomainTower, own_domain_logits
from ctl.models.baselines.reuse import mlp_layers, reuse_parameters, same_names, tower_layers
from ctl.models.blocks import MLP


class ShareBottom(nn.Module):
    """Shared embeddings, sequence modules and lower MLP layers; one tower per domain on top.

    The base model's MLP ``mlp_dims`` is cut after ``shared_layers`` layers: layers below the cut
    are shared, layers above (and the logit) are per domain. Each row is scored by its own domain's
    tower.

    ``init_from``: everything shared comes from the target model (it is evaluated on the target
    domain, whose path then starts as the target model exactly); the source tower's layers come
    from the same layers of the source model.

    Args:
        schema: the dataset's features.
        backbone: the sizes.
        source: the source domain.
        target: the target domain.
        shared_layers: how many of the MLP's lower layers both domains share (0 .. len(mlp_dims)).

    Example::

        model = ShareBottom(schema, backbone, source="A", target="B", shared_layers=1)
        logits = model(batch)["logits"]  # [B]
    """

    def __init__(
        self, schema: Schema, backbone: BackboneConfig, source: str, target: str, shared_layers: int = 1
    ) -> None:
        super().__init__()
        dims = backbone.mlp_dims
        if not 0 <= shared_layers <= len(dims):
            raise ValueError(
                f"ShareBottom: shared_layers must lie in 0 .. {len(dims)} (the MLP's layers {dims}), "
                f"got {shared_layers}"
            )
        self.pair = DomainPair(schema, source, target)
        self.config = backbone
        self.shared_layers = shared_layers
        self.backbone = Backbone(schema, backbone)
        self.bottom = MLP(self.backbone.out_dim, dims[:shared_layers]) if shared_layers else None
        tower_in = dims[shared_layers - 1] if shared_layers else self.backbone.out_dim
        self.source_tower = DomainTower(tower_in, dims[shared_layers:])
        self.target_tower = DomainTower(tower_in, dims[shared_layers:])

    def domain_sequences(self) -> tuple[str, ...]:
        """No per-domain sequences: the backbone reads the row's own short and long sequences."""
        return ()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"logits": [B]}``, each row's logit from its own domain's tower."""
        is_target = self.pair.target_rows(batch)
        shared = self.backbone(batch)
        if self.bottom is not None:
            shared, _ = self.bottom(shared)
        logits = own_domain_logits(
            is_target, lambda: self.source_tower(shared), lambda: self.target_tower(shared)
        )
        return {"logits": logits}

    def init_from(
        self, source_state: Mapping[str, torch.Tensor], target_state: Mapping[str, torch.Tensor]
    ) -> dict[str, list[str]]:
        """Backbone and shared layers <- the target model; each tower <- its domain's upper layers."""
        plan = same_names("backbone.", self.backbone, "target", state_prefix="backbone.")
        if self.bottom is not None:
            plan.update(mlp_layers("bottom.", self.bottom, "target", first_layer=0))
        plan.update(tower_layers("source_tower.", self.source_tower, "source", self.shared_layers))
        plan.update(tower_layers("target_tower.", self.target_tower, "target", self.shared_layers))
        return reuse_parameters(self, plan, source_state, target_state)
