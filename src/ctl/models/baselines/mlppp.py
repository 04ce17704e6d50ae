"""``mlppp``: MLP++ (the baseline of CoNet, Hu et al. 2018): two domain towers sharing the user embedding."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import BackboneConfig
from ctl.models.base import BaseModel
from ctl.models.baselines.joint import DomainPair, own_domain_logits
from ctl.models.baselines.reuse import reuse_parameters, same_names


class MlpPlusPlus(nn.Module):
    """A base model per domain; the two share only the user-id embedding table.

    Each row is scored by its own domain's tower (``own_domain_logits``), so the loss is
    ``BCE_source + BCE_target`` summed over the batch's rows, each through its own tower; the only
    path between the domains is the shared user table.

    The shared table is the target tower's, also plugged into the source tower, so it appears once
    in ``parameters()`` (as ``target_model.backbone.embeddings.tables.user_id.weight``) and under
    both towers' names in ``state_dict()``. ``init_from`` fills it from the target model (the model
    is evaluated on the target domain, and the target tower then starts as the target model
    exactly); every other tensor of a tower comes from its domain's model.

    Args:
        schema: the dataset's features.
        backbone: the sizes of both towers.
        source: the source domain.
        target: the target domain.

    Example::

        model = MlpPlusPlus(schema, backbone, source="A", target="B")
        logits = model(batch)["logits"]  # [B], each row from its own domain's tower
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig, source: str, target: str) -> None:
        super().__init__()
        self.pair = DomainPair(schema, source, target)
        self.config = backbone
        # registered first so that the shared table is named after the target tower
        self.target_model = BaseModel(schema, backbone)
        self.source_model = BaseModel(schema, backbone)
        shared = self.target_model.backbone.embeddings.tables["user_id"]
        self.source_model.backbone.embeddings.tables["user_id"] = shared

    def domain_sequences(self) -> tuple[str, ...]:
        """No per-domain sequences: each tower reads the row's own short and long sequences."""
        return ()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"logits": [B]}``, each row's logit from its own domain's tower."""
        is_target = self.pair.target_rows(batch)
        logits = own_domain_logits(
            is_target, lambda: self.source_model(batch), lambda: self.target_model(batch)
        )
        return {"logits": logits}

    def init_from(
        self, source_state: Mapping[str, torch.Tensor], target_state: Mapping[str, torch.Tensor]
    ) -> dict[str, list[str]]:
        """Each tower <- its domain's model; the shared user table <- the target model's."""
        plan = same_names("source_model.", self.source_model, "source")
        plan.update(same_names("target_model.", self.target_model, "target"))
        # the shared table is inherited once, under the target tower's name
        del plan["source_model.backbone.embeddings.tables.user_id.weight"]
        return reuse_parameters(self, plan, source_state, target_state)
