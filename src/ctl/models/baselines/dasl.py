"""``dasl``: Dual Attentive Sequential Learning (Li et al. 2021) for cross-domain CTR prediction."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import Backbone, BackboneConfig
from ctl.models.baselines.joint import DomainPair, domain_sequence, orthogonality_gap, own_domain_logits
from ctl.models.baselines.reuse import Origin, head_layers, reuse_parameters, same_names
from ctl.models.blocks import MlpHead, TargetAttention


def left_align(events: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real events to the front, order kept: events [B, L, D], mask [B, L] -> same shapes.

    Sequences are right-aligned (padding first); a GRU reading them left to right would start from
    the padding. Left-aligned, the real events come first and the outputs at real positions do not
    depend on the padding behind them.
    """
    length = mask.shape[1]
    counts = mask.sum(dim=1, keepdim=True)
    positions = torch.arange(length, device=mask.device)[None, :]
    index = (positions + length - counts) % length
    aligned = torch.gather(events, 1, index[..., None].expand_as(events))
    return aligned, positions < counts


class DaslDomain(nn.Module):
    """One domain's part of DASL: its base backbone, its sequence GRU, its dual attention and its head.

    The backbone and head keep a ``BaseModel``'s names (``backbone.*``, ``tower.*``); the head reads
    ``concat(E, dual attention)``.

    Args:
        schema: the dataset's features.
        backbone: the sizes.
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig) -> None:
        super().__init__()
        self.backbone = Backbone(schema, backbone)
        event_dim = self.backbone.embeddings.seq_dim
        self.encoder = nn.GRU(event_dim, event_dim, batch_first=True)
        self.attention = TargetAttention(event_dim, event_dim, backbone.num_heads, backbone.attn_dim)
        self.tower = MlpHead(self.backbone.out_dim + backbone.attn_dim, backbone.mlp_dims)

    def encode(
        self, item: torch.Tensor, category: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A sequence of this domain's events, embedded with this domain's tables, through its GRU.

        item, category [B, L], mask bool [B, L] -> (outputs [B, L, D], mask [B, L]), left-aligned.
        """
        events, aligned_mask = left_align(self.backbone.embeddings.embed_sequence(item, category), mask)
        outputs, _ = self.encoder(events)
        return outputs * aligned_mask[..., None].to(outputs.dtype), aligned_mask

    def user(self, batch: Batch) -> torch.Tensor:
        """This domain's embedding of the row's user: [B, d]."""
        return self.backbone.embeddings.lookup("user_id", batch["user_id"])

    def logits(self, batch: Batch, encoded: torch.Tensor, encoded_mask: torch.Tensor) -> torch.Tensor:
        """Logits [B]: this domain's candidate attends over both encoded sequences [B, 2L, D]; its head."""
        interest = self.attention(self.backbone.candidate(batch), encoded, encoded_mask)
        logits, _ = self.tower(torch.cat([self.backbone(batch), interest], dim=-1))
        return logits


class DASL(nn.Module):
    """Per-domain base models with DASL's dual embedding and dual attention.

    Dual embedding: each domain keeps its own user embedding (its backbone's user table); an
    orthogonal mapping X (d x d, initialised orthogonal) ties them, and the auxiliary loss pulls
    ``X u_A`` towards ``u_B`` by cosine distance, over every row's user:
    ``aux_loss = alignment_weight * mean(1 - cos(X u_A, u_B)) + orthogonality_weight * ||X X^T - I||_F``
    (training mode only).

    Dual attention: every row carries the user's recent sequence in both domains
    (``seq_<source>_*``, ``seq_<target>_*``): as in the paper a row's cross-domain history is the
    *other* domain's sequence (the official code feeds the own-domain history twice). Each domain's
    GRU encodes the sequence of its own domain's events, embedded with that domain's tables; each
    domain's target attention, with that domain's candidate as query, reads both encoded sequences
    at once; each domain's head reads ``concat(E_d, attention_d)``. Each row is scored by its own
    domain.

    Alternating updates: the paper alternates a domain-A step and a domain-B step. On a mixed batch
    each row's BCE reaches only its own domain's head, so one step on a mixed batch is the sum of
    the A step and the B step taken from the same point (and the alignment loss joins it, where the
    paper takes a third step). A protocol that wants strict alternation serves single-domain
    batches in turn; the model needs nothing else (a batch without rows of a domain never runs that
    domain's head).

    ``init_from``: each domain's backbone and head from its production model, the head widened (its
    weights for the attention start at zero, so each domain starts as its production model
    exactly); GRUs, attentions and X fresh.

    Args:
        schema: the dataset's features.
        backbone: the sizes of both domain models.
        source: the source domain (A).
        target: the target domain (B).
        alignment_weight: weight of the cosine-distance loss, >= 0.
        orthogonality_weight: weight of ``||X X^T - I||_F``, >= 0.

    Example::

        model = DASL(schema, backbone, source="A", target="B").train()
        out = model(batch)  # {"logits": [B], "aux_loss": scalar}
    """

    def __init__(
        self,
        schema: Schema,
        backbone: BackboneConfig,
        source: str,
        target: str,
        alignment_weight: float = 1.0,
        orthogonality_weight: float = 1e-6,
    ) -> None:
        super().__init__()
        if alignment_weight < 0 or orthogonality_weight < 0:
            raise ValueError(
                f"DASL: alignment_weight ({alignment_weight}) and orthogonality_weight "
                f"({orthogonality_weight}) must be >= 0"
            )
        self.pair = DomainPair(schema, source, target)
        self.config = backbone
        self.alignment_weight = float(alignment_weight)
        self.orthogonality_weight = float(orthogonality_weight)
        self.source = DaslDomain(schema, backbone)
        self.target = DaslDomain(schema, backbone)
        user_dim = self.target.backbone.embeddings.dim("user_id")
        self.mapping = nn.Parameter(torch.empty(user_dim, user_dim))
        nn.init.orthogonal_(self.mapping)

    def domain_sequences(self) -> tuple[str, ...]:
        """``(source, target)``: every row needs the user's recent events in both domains."""
        return self.pair.names

    def alignment_distance(self, batch: Batch) -> torch.Tensor:
        """Cosine distance ``1 - cos(X u_A, u_B)`` of every row's user: [B]."""
        mapped = self.source.user(batch) @ self.mapping.T
        return 1.0 - F.cosine_similarity(mapped, self.target.user(batch), dim=-1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"logits": [B]}``, plus ``aux_loss`` (scalar) in training mode."""
        is_target = self.pair.target_rows(batch)
        source_seq, source_mask = self.source.encode(*domain_sequence(batch, self.pair.source, "DASL"))
        target_seq, target_mask = self.target.encode(*domain_sequence(batch, self.pair.target, "DASL"))
        encoded = torch.cat([source_seq, target_seq], dim=1)
        encoded_mask = torch.cat([source_mask, target_mask], dim=1)
        logits = own_domain_logits(
            is_target,
            lambda: self.source.logits(batch, encoded, encoded_mask),
            lambda: self.target.logits(batch, encoded, encoded_mask),
        )
        if not self.training:
            return {"logits": logits}
        distance = self.alignment_distance(batch).mean()
        aux = self.alignment_weight * distance + self.orthogonality_weight * orthogonality_gap(self.mapping)
        return {"logits": logits, "aux_loss": aux}

    def init_from(
        self, source_state: Mapping[str, torch.Tensor], target_state: Mapping[str, torch.Tensor]
    ) -> dict[str, list[str]]:
        """Each domain's backbone and head <- its production model (head widened); the rest fresh."""
        plan = {}
        parts: tuple[tuple[str, DaslDomain, Origin], ...] = (("source", self.source, "source"),
                                                             ("target", self.target, "target"))
        for name, part, origin in parts:
            plan.update(same_names(f"{name}.backbone.", part.backbone, origin, state_prefix="backbone."))
            plan.update(head_layers(f"{name}.tower.", part.tower, origin, widen_input=True))
        return reuse_parameters(self, plan, source_state, target_state)
