"""SIM (hard) retrieval (Pi et al. 2020): the most recent long-sequence events of the candidate's category."""

from __future__ import annotations

import torch
from torch import nn


def gather_events(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick events per row: values [B, M] (or [B, M, D]), index [B, K] -> [B, K] (or [B, K, D])."""
    if values.dim() == 3:
        index = index[..., None].expand(-1, -1, values.shape[-1])
    return torch.gather(values, 1, index)


class SimHardRetrieval(nn.Module):
    """Keep the k most recent events whose category equals the candidate's.

    Sequences are right-aligned (more recent = larger position), so "most recent" is "largest
    position": every matching event scores its position, every other -1, and ``topk`` picks.
    The result is ordered most recent first; slots without a match have mask False.

    Args:
        k: events to keep (at most M are returned when the sequence is shorter).

    Example::

        sim = SimHardRetrieval(k=8)
        index, mask = sim(batch["category_id"], batch["long_category"], batch["long_mask"])  # [B, 8] each
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"SIM k must be >= 1, got {k}")
        self.k = k

    def matches(self, candidate_category: torch.Tensor, category: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The events SIM may keep, every one of them: real events of the candidate's category, bool [B, M]."""
        if (
            category.dim() != 2
            or candidate_category.shape != category.shape[:1]
            or mask.shape != category.shape
        ):
            raise ValueError(
                f"SimHardRetrieval: expected candidate [B], category [B, M], mask [B, M]; got "
                f"{tuple(candidate_category.shape)}, {tuple(category.shape)}, {tuple(mask.shape)}"
            )
        return (category == candidate_category[:, None]) & mask

    def forward(
        self, candidate_category: torch.Tensor, category: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """candidate_category [B], category [B, M], mask bool [B, M] -> (index [B, K], mask [B, K]), K = min(k, M)."""
        match = self.matches(candidate_category, category, mask)
        length = category.shape[1]
        position = torch.arange(length, device=category.device).expand_as(category)
        score = torch.where(match, position, -1)
        top, index = score.topk(min(self.k, length), dim=1)
        return index, top >= 0
