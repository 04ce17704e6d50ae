"""``distill``: the target model taught by the frozen source model through an auxiliary head
(in the spirit of ExFM's auxiliary-head distillation, WWW 2025)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import Backbone, BackboneConfig
from ctl.models.baselines.reuse import PRODUCTION_LOGIT, reuse_parameters, same_names
from ctl.models.blocks import MlpHead
from ctl.models.recent.frozen import FrozenSourceModel


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * mean_i BCE(sigmoid(s_i), sigmoid(t_i))``: cross-entropy towards the teacher's probabilities."""
    return weight * F.binary_cross_entropy_with_logits(student_logits, torch.sigmoid(teacher_logits))


class SourceDistillation(FrozenSourceModel):
    """The target model plus an auxiliary logit head trained towards the frozen source model's predictions.

    Training loss: ``BCE(s, y) + w BCE(s_aux, sigmoid(s_src))`` with ``s = logit(z^n)`` the serving
    head, ``s_aux = logit_aux(z^n)`` the auxiliary head on the same last hidden layer and ``s_src``
    the source model's logit on the row. The serving head learns from the labels alone; the
    layers below it learn from both. Evaluation and serving run the target model only: its cost
    is base's.

    ``backbone`` and ``tower`` carry a base model's names: the target production model loads into
    them; the auxiliary head starts as its logit layer.

    Args:
        schema: the dataset's features.
        backbone: the sizes of the target model and the source model alike.
        weight: w, the distillation loss's weight.
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig, weight: float = 0.5) -> None:
        super().__init__(schema, backbone)
        if weight < 0:
            raise ValueError(f"SourceDistillation: weight must be >= 0, got {weight}")
        self.weight = weight
        self.backbone = Backbone(schema, backbone)
        self.tower = MlpHead(self.backbone.out_dim, backbone.mlp_dims)
        self.distill_head = nn.Linear(backbone.mlp_dims[-1], 1)

    def forward(self, batch: Batch) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits [B]; in training ``{"logits", "aux_loss"}`` with the distillation loss."""
        logits, hiddens = self.tower(self.backbone(batch))
        if not self.training:
            return logits
        teacher, _ = self.source_outputs(batch)
        student = self.distill_head(hiddens[-1]).squeeze(-1).float()
        return {"logits": logits, "aux_loss": distillation_loss(student, teacher, self.weight)}

    def production_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if name.startswith(("backbone.", "tower."))}

    def init_from_target(self, target_state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
        """Backbone and tower <- the target model; the auxiliary head <- its logit layer."""
        plan = same_names("backbone.", self.backbone, "target", state_prefix="backbone.")
        plan.update(same_names("tower.", self.tower, "target", state_prefix="tower."))
        plan.update(same_names("distill_head.", self.distill_head, "target", state_prefix=f"{PRODUCTION_LOGIT}."))
        report = reuse_parameters(self, plan, {}, target_state)
        return {"copied_from_target": report["copied_from_target"],
                "fresh": [n for n in report["fresh"] if not n.startswith("source.")]}
