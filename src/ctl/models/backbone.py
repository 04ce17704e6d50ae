"""The shared backbone of the paper's production model (section 3.1): everything below the MLP.

``Backbone`` turns a batch into ``E = concat(feature embeddings, A_TA, A_SIM, A_ETA)``; ``BaseModel``
puts an ``MlpHead`` on it, CTNet runs two of them, and other models reuse its parts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.blocks import (
    EtaRetrieval,
    FeatureEmbeddings,
    SequenceEncoder,
    SimHardRetrieval,
    TargetAttention,
    gather_events,
)

SHORT_SEQUENCE_KEYS: tuple[str, ...] = ("short_item", "short_category", "short_mask")
LONG_SEQUENCE_KEYS: tuple[str, ...] = ("long_item", "long_category", "long_mask")
SIM_SEQUENCE_KEYS: tuple[str, ...] = ("sim_item", "sim_category", "sim_mask")

#: feed-forward width of the sequence encoder, in multiples of the event width
ENCODER_FF_MULTIPLE = 4


@dataclass(frozen=True)
class BackboneConfig:
    """Sizes of the backbone shared by every model.

    Attributes:
        embed_dim: one embedding dim for every feature, or None for each feature's schema dim.
        mlp_dims: widths of the MLP's layers.
        num_heads: heads of the sequence encoder and of every target attention.
        attn_dim: width of every target attention's output.
        sim_k: events SIM keeps from the long sequence.
        eta_k: events ETA keeps from the long sequence.
        eta_bits: SimHash signature length.
        eta_seed: seed of ETA's hyperplanes.
        long_window: None (the paper's model): SIM searches the user's whole lifelong history (the
            batch's ``sim_*`` events, found through the per-category index) and ETA scans the last
            ``long_len`` events; an int W: both read only the last W events of the long sequence,
            the window ctl read before lifelong histories (method suffix ``_w<W>``).
    """

    embed_dim: int | None
    mlp_dims: tuple[int, ...]
    num_heads: int
    attn_dim: int
    sim_k: int
    eta_k: int
    eta_bits: int
    eta_seed: int
    long_window: int | None = None

    def __post_init__(self) -> None:
        # configs hand lists (or omegaconf ListConfig); keep an immutable tuple of ints
        object.__setattr__(self, "mlp_dims", tuple(int(d) for d in self.mlp_dims))
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ValueError(f"BackboneConfig: embed_dim must be >= 1 or None, got {self.embed_dim}")
        if not self.mlp_dims or min(self.mlp_dims) < 1:
            raise ValueError(f"BackboneConfig: mlp_dims needs at least one width >= 1, got {self.mlp_dims}")
        if self.num_heads < 1 or self.attn_dim % self.num_heads != 0:
            raise ValueError(
                f"BackboneConfig: attn_dim ({self.attn_dim}) must be a positive multiple of "
                f"num_heads ({self.num_heads})"
            )
        for name in ("sim_k", "eta_k", "eta_bits"):
            if getattr(self, name) < 1:
                raise ValueError(f"BackboneConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.long_window is not None and self.long_window < 1:
            raise ValueError(f"BackboneConfig: long_window must be >= 1 or None, got {self.long_window}")


def require_batch_keys(batch: Batch, keys: Iterable[str], who: str) -> None:
    """Raise ValueError naming every key of ``keys`` the batch lacks."""
    missing = [key for key in keys if key not in batch]
    if missing:
        raise ValueError(f"{who}: the batch lacks {missing}")


class Backbone(nn.Module):
    """Feature embeddings + TA(transformer(short sequence)) + SIM and ETA attention on the lifelong history.

    Args:
        schema: the dataset's features and sequence lengths.
        config: the sizes.

    Example::

        backbone = Backbone(schema, config)
        e = backbone(batch)  # [B, backbone.out_dim]
    """

    def __init__(self, schema: Schema, config: BackboneConfig) -> None:
        super().__init__()
        self.embeddings = FeatureEmbeddings(schema, config.embed_dim)
        event_dim = self.embeddings.seq_dim
        if event_dim % config.num_heads != 0:
            raise ValueError(
                f"Backbone: the event width (item dim + category dim = {event_dim}) must be a "
                f"multiple of num_heads ({config.num_heads})"
            )
        self.short_encoder = SequenceEncoder(
            event_dim, config.num_heads, ENCODER_FF_MULTIPLE * event_dim, schema.short_len
        )
        self.short_attention = TargetAttention(event_dim, event_dim, config.num_heads, config.attn_dim)
        self.long_window = config.long_window
        if self.long_window is None and config.sim_k > schema.sim_len:
            raise ValueError(
                f"Backbone: sim_k ({config.sim_k}) exceeds the events of the candidate's category a batch "
                f"carries (the schema's sim_len, {schema.sim_len}); lower sim_k or raise sequences.sim_len"
            )
        self.sim = SimHardRetrieval(config.sim_k)
        self.sim_attention = TargetAttention(event_dim, event_dim, config.num_heads, config.attn_dim)
        self.eta = EtaRetrieval(
            config.eta_k, config.eta_bits, self.embeddings.dim("item_id"), config.eta_seed
        )
        self.eta_attention = TargetAttention(event_dim, event_dim, config.num_heads, config.attn_dim)
        self.long_attention_dim = 2 * config.attn_dim
        self.out_dim = self.embeddings.out_dim + config.attn_dim + self.long_attention_dim

    def candidate(self, batch: Batch) -> torch.Tensor:
        """The candidate item as an event: [B, D_seq]."""
        return self.embeddings.embed_sequence(batch["item_id"], batch["category_id"])

    def short_interest(self, batch: Batch, candidate: torch.Tensor) -> torch.Tensor:
        """A_TA: target attention over the encoded short sequence: [B, attn_dim]."""
        require_batch_keys(batch, SHORT_SEQUENCE_KEYS, "Backbone")
        mask = batch["short_mask"]
        events = self.embeddings.embed_sequence(batch["short_item"], batch["short_category"])
        return self.short_attention(candidate, self.short_encoder(events, mask), mask)

    def long_attention(self, batch: Batch, candidate: torch.Tensor | None = None) -> torch.Tensor:
        """concat(A_SIM, A_ETA): attention over the events SIM and ETA retrieve: [B, 2 * attn_dim]."""
        require_batch_keys(batch, LONG_SEQUENCE_KEYS, "Backbone")
        if candidate is None:
            candidate = self.candidate(batch)
        item, category, mask = batch["long_item"], batch["long_category"], batch["long_mask"]
        if self.long_window is not None:
            item, category, mask = (t[:, -self.long_window :] for t in (item, category, mask))
        # Target attention ignores the order of its events, so a retrieval that keeps every event
        # it may pick (k >= M) equals attention over the whole sequence under the retrieval's mask:
        # no top-k, no gathers, one lookup shared by SIM and ETA.
        length = mask.shape[1]
        scans_whole = length <= self.eta.k or (self.long_window is not None and length <= self.sim.k)
        whole = self.embeddings.embed_sequence(item, category) if scans_whole else None
        if self.long_window is None:
            sim_out = self._searched_sim(batch, candidate)
        elif length <= self.sim.k:
            sim_out = self.sim_attention(candidate, whole, self.sim.matches(batch["category_id"], category, mask))
        else:
            index, picked = self.sim(batch["category_id"], category, mask)
            events = self.embeddings.embed_sequence(gather_events(item, index), gather_events(category, index))
            sim_out = self.sim_attention(candidate, events, picked)

        if length <= self.eta.k:
            eta_out = self.eta_attention(candidate, whole, mask)
        else:
            codes = self.eta.item_codes(self.embeddings.table("item_id").weight)
            event_codes = codes.index_select(0, item.reshape(-1)).view(*item.shape, -1)
            index, picked = self.eta(codes.index_select(0, batch["item_id"]), event_codes, mask)
            events = self.embeddings.embed_sequence(gather_events(item, index), gather_events(category, index))
            eta_out = self.eta_attention(candidate, events, picked)
        return torch.cat([sim_out, eta_out], dim=-1)

    def _searched_sim(self, batch: Batch, candidate: torch.Tensor) -> torch.Tensor:
        """A_SIM over the k most recent events of the candidate's category in the whole history (the batch's search)."""
        require_batch_keys(batch, SIM_SEQUENCE_KEYS, "Backbone")
        k = self.sim.k
        item, category, mask = (batch[key][:, -k:] for key in SIM_SEQUENCE_KEYS)
        return self.sim_attention(candidate, self.embeddings.embed_sequence(item, category), mask)

    def forward(self, batch: Batch, long_attention: torch.Tensor | None = None) -> torch.Tensor:
        """E [B, out_dim]; ``long_attention`` [B, 2 * attn_dim], if given, replaces this backbone's SIM/ETA output."""
        candidate = self.candidate(batch)
        if long_attention is None:
            long_attention = self.long_attention(batch, candidate)
        elif long_attention.shape != (candidate.shape[0], self.long_attention_dim):
            raise ValueError(
                f"Backbone: long_attention must be [{candidate.shape[0]}, {self.long_attention_dim}], "
                f"got {tuple(long_attention.shape)}"
            )
        return torch.cat(
            [self.embeddings(batch), self.short_interest(batch, candidate), long_attention], dim=-1
        )
