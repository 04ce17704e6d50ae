"""``plugin``: the source model's knowledge as input features, in the spirit of KEEP (Zhang et al., CIKM 2022)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import Backbone, BackboneConfig
from ctl.models.baselines.reuse import head_layers, reuse_parameters, same_names
from ctl.models.blocks import MlpHead
from ctl.models.recent.frozen import FrozenSourceModel


class KnowledgePlugin(FrozenSourceModel):
    """The target model whose MLP reads ``concat(E, z_s^n, s_s)``: the frozen source model's last
    hidden layer and logit on the same target row, as extra input features.

    ``backbone`` and ``tower`` carry a base model's names: the target production model loads into
    them, its first MLP weight widened by zero columns for the plug-in, so the model starts as
    the target model and learns to read the source knowledge from there.

    Args:
        schema: the dataset's features.
        backbone: the sizes of the target model and the source model alike.
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig) -> None:
        super().__init__(schema, backbone)
        self.backbone = Backbone(schema, backbone)
        self.knowledge_dim = backbone.mlp_dims[-1] + 1
        self.tower = MlpHead(self.backbone.out_dim + self.knowledge_dim, backbone.mlp_dims)

    def knowledge(self, batch: Batch) -> torch.Tensor:
        """The plug-in: ``concat(z_s^n, s_s)`` [B, knowledge_dim] of the source model on the row."""
        logits, hiddens = self.source_outputs(batch)
        return torch.cat([hiddens[-1], logits.unsqueeze(-1).to(hiddens[-1].dtype)], dim=-1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits [B]."""
        logits, _ = self.tower(torch.cat([self.backbone(batch), self.knowledge(batch)], dim=-1))
        return logits

    def production_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if name.startswith(("backbone.", "tower."))}

    def init_from_target(self, target_state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
        """Backbone and tower <- the target model, the plug-in's input columns at zero."""
        plan = same_names("backbone.", self.backbone, "target", state_prefix="backbone.")
        plan.update(head_layers("tower.", self.tower, "target", widen_input=True))
        report = reuse_parameters(self, plan, {}, target_state)
        return {"copied_from_target": report["copied_from_target"],
                "fresh": [n for n in report["fresh"] if not n.startswith("source.")]}
