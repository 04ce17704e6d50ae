"""What the methods over a frozen source model share: the source tower, refreshed from outside.

The tower is a ``BaseModel`` named ``source`` (so :class:`ctl.training.callbacks.SourceRefresh`
loads the source track's model of every period into it, in place, as for CTNet), reads the target
row as the source model would (``DomainView``: features the source domain lacks are 0 for it),
never requires grad and stays in ``eval()`` whatever ``train()`` is called with.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ctl.data.batch import Batch, DomainView
from ctl.data.schema import Schema
from ctl.models.backbone import BackboneConfig
from ctl.models.base import BaseModel


class FrozenSourceModel(nn.Module):
    """A model with a frozen source tower ``source``; subclasses add what they train.

    Subclasses say which of their parameters mirror the target production model
    (:meth:`production_parameters`, in the base model's order, so its optimiser state carries
    over by name) and how they start from it (:meth:`init_from_target`).
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig) -> None:
        super().__init__()
        self.config = backbone
        self.source_view = DomainView(schema, schema.source)
        self.source = BaseModel(schema, backbone)
        self.freeze_source()

    def freeze_source(self) -> None:
        """Stop the source tower's gradients and put it in eval mode."""
        self.source.requires_grad_(False)
        self.source.eval()

    def train(self, mode: bool = True) -> FrozenSourceModel:
        """Set everything but the source tower to ``mode``; the source tower stays in eval mode."""
        super().train(mode)
        self.source.eval()
        return self

    @torch.no_grad()
    def source_outputs(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The source model on the batch's source view: (logits [B], its MLP's hiddens [E_s, z_s^1, ..., z_s^n])."""
        source = self.source
        return source.head(source.features(self.source_view(batch)))

    def production_parameters(self) -> dict[str, nn.Parameter]:
        """This model's parameters that mirror a base model's, by the base model's names, in its order;
        empty when nothing starts from the target model."""
        return {}

    def init_from_target(self, target_state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
        """Start from the target production model's state; the report of what came from it."""
        return {"copied_from_target": [], "fresh": [n for n, p in self.named_parameters() if p.requires_grad]}
