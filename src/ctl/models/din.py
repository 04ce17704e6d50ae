"""``din``: Deep Interest Network (Zhou et al. 2018) on the shared features and MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import SHORT_SEQUENCE_KEYS, BackboneConfig, require_batch_keys
from ctl.models.blocks import DinAttention, FeatureEmbeddings, MlpHead


class DIN(nn.Module):
    """The base model without transformer, SIM and ETA: DIN's activation unit over the short sequence.

    ``E = concat(feature embeddings, sum_i w_i e_i)`` with unnormalised weights ``w_i`` from the
    activation unit (hidden width ``attn_dim``), then the same MLP head as the base model.

    Args:
        schema: the dataset's features.
        backbone: the sizes (``num_heads``, ``sim_k`` and the ETA sizes are unused).

    Example::

        model = DIN(schema, backbone)
        logits = model(batch)  # [B]
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig) -> None:
        super().__init__()
        self.config = backbone
        self.embeddings = FeatureEmbeddings(schema, backbone.embed_dim)
        self.interest = DinAttention(self.embeddings.seq_dim, backbone.attn_dim)
        self.tower = MlpHead(self.embeddings.out_dim + self.interest.out_dim, backbone.mlp_dims)

    def features(self, batch: Batch) -> torch.Tensor:
        """E [B, D_in]."""
        require_batch_keys(batch, SHORT_SEQUENCE_KEYS, "DIN")
        candidate = self.embeddings.embed_sequence(batch["item_id"], batch["category_id"])
        events = self.embeddings.embed_sequence(batch["short_item"], batch["short_category"])
        interest = self.interest(candidate, events, batch["short_mask"])
        return torch.cat([self.embeddings(batch), interest], dim=-1)

    def head(
        self, features: torch.Tensor, pre_activation_adds: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """E [B, D_in] -> (logits float32 [B], hiddens [z^0 = E, z^1, ..., z^n])."""
        return self.tower(features, pre_activation_adds)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits [B]."""
        logits, _ = self.head(self.features(batch))
        return logits
