"""ETA retrieval (Chen et al. 2021): SimHash signatures, the k events nearest in Hamming distance."""

from __future__ import annotations

import torch
from torch import nn


class EtaRetrieval(nn.Module):
    """Keep the k real events whose SimHash signature is nearest the candidate's (ties: more recent first).

    A signature holds one bit per fixed random hyperplane (seeded, stored as a buffer so a checkpoint
    carries it): the sign of the embedding's projection on it. Hashing is not differentiable and runs
    without gradient; the caller attends over the picked events' embeddings with gradient.

    Args:
        k: events to keep (at most M are returned when the sequence is shorter).
        n_bits: signature length m.
        dim: width D of the hashed item embeddings.
        seed: seed of the hyperplanes.

    Example::

        eta = EtaRetrieval(k=8, n_bits=16, dim=8, seed=0)
        index, mask = eta(candidate_item_emb, long_item_emb, batch["long_mask"])  # [B, 8] each
    """

    hyperplanes: torch.Tensor

    def __init__(self, k: int, n_bits: int, dim: int, seed: int) -> None:
        super().__init__()
        if k < 1 or n_bits < 1 or dim < 1:
            raise ValueError(f"ETA k ({k}), n_bits ({n_bits}) and dim ({dim}) must all be >= 1")
        self.k = k
        self.n_bits = n_bits
        self.dim = dim
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("hyperplanes", torch.randn(dim, n_bits, generator=generator))

    def signature(self, embedding: torch.Tensor) -> torch.Tensor:
        """SimHash as ±1: embedding [..., D] -> [..., n_bits] (+1 where the projection is positive)."""
        projection = embedding @ self.hyperplanes.to(embedding.dtype)
        # 2 * [p > 0] - 1: the same ±1 as a where() with scalars, about 3x faster on CPU
        return (projection > 0).to(projection.dtype).mul_(2.0).sub_(1.0)

    def forward(
        self, candidate: torch.Tensor, events: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """candidate [B, D], events [B, M, D], mask bool [B, M] -> (index [B, K], mask [B, K]), K = min(k, M)."""
        if (
            candidate.dim() != 2
            or events.dim() != 3
            or candidate.shape[-1] != self.dim
            or events.shape[-1] != self.dim
            or events.shape[0] != candidate.shape[0]
            or mask.shape != events.shape[:2]
        ):
            raise ValueError(
                f"EtaRetrieval: expected candidate [B, {self.dim}], events [B, M, {self.dim}], "
                f"mask [B, M]; got {tuple(candidate.shape)}, {tuple(events.shape)}, {tuple(mask.shape)}"
            )
        length = events.shape[1]
        with torch.no_grad():
            query = self.signature(candidate.detach().float())
            keys = self.signature(events.detach().float())
            # for ±1 codes, agreement = n_bits - 2 * Hamming, exact in float32 for any sane n_bits
            agreement = torch.einsum("bn,bmn->bm", query, keys).round().long()
            position = torch.arange(length, device=events.device)
            # fewer differing bits first, then more recent; invalid events below every valid one
            score = torch.where(mask, (agreement + self.n_bits) * length + position, -1)
            top, index = score.topk(min(self.k, length), dim=1)
        return index, top >= 0
