"""Embedding tables for every feature of a schema."""

from __future__ import annotations

import torch
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema

#: Standard deviation of the embedding init: rows that are never trained stay near zero, so an id
#: a stale model never saw adds near-zero signal rather than noise.
EMBEDDING_INIT_STD = 0.01


class FeatureEmbeddings(nn.Module):
    """One ``nn.Embedding`` per schema feature; id 0 (absent / padding) embeds to zeros.

    Sequence events look up the ``item_id`` and ``category_id`` tables, shared with the row
    features, so a behaviour and a candidate item live in the same space.

    Args:
        schema: the dataset's features.
        embed_dim: one dim D for every table, or None to use each feature's schema dim.

    Example::

        emb = FeatureEmbeddings(schema, embed_dim=8)
        e = emb(batch)                                             # [B, emb.out_dim]
        s = emb.embed_sequence(batch["short_item"], batch["short_category"])  # [B, L, emb.seq_dim]
    """

    def __init__(self, schema: Schema, embed_dim: int | None) -> None:
        super().__init__()
        if not isinstance(schema, Schema):
            # hydra's instantiate turns a dataclass kwarg into a DictConfig unless _convert_="object"
            raise TypeError(
                f"schema must be a ctl Schema, got {type(schema).__name__} "
                "(with hydra, instantiate(..., _convert_='object'))"
            )
        if embed_dim is not None and embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1 or None, got {embed_dim}")
        self.feature_names: tuple[str, ...] = schema.feature_names
        self.tables = nn.ModuleDict()
        for feature in schema.features:
            dim = embed_dim if embed_dim is not None else feature.dim
            table = nn.Embedding(feature.vocab, dim, padding_idx=0)
            with torch.no_grad():
                table.weight.normal_(0.0, EMBEDDING_INIT_STD)
                table.weight[0].zero_()
            self.tables[feature.name] = table

    def dim(self, name: str) -> int:
        """Embedding dim of the feature ``name``."""
        return self.tables[name].embedding_dim

    @property
    def out_dim(self) -> int:
        """Width of ``forward``'s output: the sum of every table's dim."""
        return sum(self.dim(name) for name in self.feature_names)

    @property
    def seq_dim(self) -> int:
        """Width of an embedded event or candidate: item dim + category dim."""
        return self.dim("item_id") + self.dim("category_id")

    def lookup(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """Embed ``ids`` (any shape [...]) with the table of feature ``name``: [..., D]."""
        return self.tables[name](ids)

    def embed_sequence(self, item: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """Embed events (or candidates): item [...], category [...] -> [..., seq_dim]."""
        if item.shape != category.shape:
            raise ValueError(
                f"item ids {tuple(item.shape)} and category ids {tuple(category.shape)} differ in shape"
            )
        return torch.cat([self.lookup("item_id", item), self.lookup("category_id", category)], dim=-1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Concatenate every row feature's embedding, in schema order: [B, out_dim]."""
        missing = [name for name in self.feature_names if name not in batch]
        if missing:
            raise ValueError(f"batch lacks the schema features {missing}")
        return torch.cat([self.tables[name](batch[name]) for name in self.feature_names], dim=-1)
