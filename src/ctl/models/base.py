"""``base``: the paper's single-domain production model (section 3.1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import Backbone, BackboneConfig
from ctl.models.blocks import MlpHead


class BaseModel(nn.Module):
    """Embeddings + TA(transformer(short sequence)) + SIM + ETA -> MLP (BN, LeakyReLU) -> logit.

    ``features`` and ``head`` expose the two halves so that CTNet can join two such models at
    every MLP layer; ``head`` returns the MLP's hidden states ``[z^0 = E, z^1, ..., z^n]``.

    Args:
        schema: the dataset's features and sequence lengths.
        backbone: the sizes.

    Example::

        model = BaseModel(schema, backbone)
        logits = model(batch)  # [B]
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig) -> None:
        super().__init__()
        self.config = backbone
        self.backbone = Backbone(schema, backbone)
        self.tower = MlpHead(self.backbone.out_dim, backbone.mlp_dims)

    def long_attention(self, batch: Batch) -> torch.Tensor:
        """concat(A_SIM, A_ETA): [B, 2 * attn_dim] (another tower may reuse it, see ``features``)."""
        return self.backbone.long_attention(batch)

    def features(self, batch: Batch, long_attention: torch.Tensor | None = None) -> torch.Tensor:
        """E [B, D_in]; ``long_attention``, if given, replaces this model's own SIM/ETA output."""
        return self.backbone(batch, long_attention)

    def head(
        self, features: torch.Tensor, pre_activation_adds: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """E [B, D_in] -> (logits float32 [B], hiddens [z^0 = E, z^1, ..., z^n])."""
        return self.tower(features, pre_activation_adds)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits [B]."""
        logits, _ = self.head(self.features(batch))
        return logits
