"""Embedding tables for every feature of a schema."""

from __future__ import annotations

import hashlib
from typing import cast

import torch
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema

#: Standard deviation of the embedding init: rows that are never trained stay near zero, so an id
#: a stale model never saw adds near-zero signal rather than noise.
EMBEDDING_INIT_STD = 0.01
#: Rows per block of an embedding table's init; each block has a random stream of its own.
INIT_BLOCK_ROWS = 4096


def _block_seed(table_seed: int, block: int) -> int:
    digest = hashlib.sha256(f"{table_seed}/{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def init_rows(table_seed: int, start: int, stop: int, dim: int) -> torch.Tensor:
    """Rows ``start .. stop-1`` of the init of a table drawn under ``table_seed``: ``[stop - start, dim]``.

    Row ``r`` is N(0, EMBEDDING_INIT_STD^2) from the stream of its block ``r // INIT_BLOCK_ROWS``
    (always drawn whole), and row 0 (padding) is zero, so a row's init depends on the seed and its
    index only, never on the table's size: a table grown to a larger vocabulary gets exactly the
    rows a table built at that size started with.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"init_rows: need 0 <= start <= stop, got {start}, {stop}")
    if start == stop:
        return torch.zeros(0, dim)
    first, last = start // INIT_BLOCK_ROWS, (stop - 1) // INIT_BLOCK_ROWS
    blocks = [torch.empty(INIT_BLOCK_ROWS, dim).normal_(
        0.0, EMBEDDING_INIT_STD, generator=torch.Generator().manual_seed(_block_seed(table_seed, b)))
        for b in range(first, last + 1)]
    offset = first * INIT_BLOCK_ROWS
    rows = torch.cat(blocks)[start - offset:stop - offset].clone()
    if start == 0:
        rows[0].zero_()
    return rows


class GrowingEmbedding(nn.Embedding):
    """An ``nn.Embedding`` (padding id 0) whose init rows depend on their index only (:func:`init_rows`).

    The table's seed is one draw of the global random stream, whatever the vocabulary, so a model's
    other parameters are initialised the same for any vocabulary size too. It is kept as the
    buffer ``init_seed``: :func:`grow_table` extends a trained table (a checkpoint of a smaller
    vocabulary) with the rows a table of the larger vocabulary started with.
    """

    init_seed: torch.Tensor

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        seed = int(torch.randint(0, 2**62, ()).item())
        # _weight given: nn.Embedding skips its own (size-dependent) draw of the global stream
        super().__init__(num_embeddings, embedding_dim, padding_idx=0,
                         _weight=init_rows(seed, 0, num_embeddings, embedding_dim))
        self.register_buffer("init_seed", torch.tensor(seed, dtype=torch.int64))


def grow_table(weight: torch.Tensor, init_seed: int, rows: int) -> torch.Tensor:
    """``weight [V, D]`` extended to ``rows >= V`` rows by the table's never-trained init rows."""
    have, dim = weight.shape
    if rows < have:
        raise ValueError(f"grow_table: cannot shrink a table of {have} rows to {rows}")
    if rows == have:
        return weight
    return torch.cat([weight, init_rows(init_seed, have, rows, dim).to(weight.dtype)])


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
            self.tables[feature.name] = GrowingEmbedding(feature.vocab, dim)

    def table(self, name: str) -> GrowingEmbedding:
        """The embedding table of the feature ``name``."""
        # nn.ModuleDict is typed as holding any module; this one holds GrowingEmbeddings only.
        return cast(GrowingEmbedding, self.tables[name])

    def dim(self, name: str) -> int:
        """Embedding dim of the feature ``name``."""
        return self.table(name).embedding_dim

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
