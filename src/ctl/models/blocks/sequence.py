"""A one-layer transformer encoder for the short behaviour sequence (paper 3.1, after BST)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctl.models.blocks.attention import attendable_mask, check_events
from ctl.models.blocks.embeddings import EMBEDDING_INIT_STD


class SequenceEncoder(nn.Module):
    """Self-attention + feed-forward, each with a residual and LayerNorm (post-norm), over L events.

    Padding events are masked out as keys and their outputs are zero; a row of padding only stays
    finite. Positions are learned and right-aligned (the most recent event, at L-1, always gets the
    last position embedding), as sequences in a batch are.

    Args:
        dim: event width D (input and output).
        num_heads: attention heads; must divide ``dim``.
        ff_dim: hidden width of the feed-forward part.
        max_len: longest sequence the position embeddings cover.

    Example::

        enc = SequenceEncoder(dim=16, num_heads=2, ff_dim=64, max_len=10)
        out = enc(events, mask)  # [B, L, 16], [B, L] -> [B, L, 16]
    """

    def __init__(self, dim: int, num_heads: int, ff_dim: int, max_len: int) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(
                f"the sequence width ({dim}) must be a positive multiple of num_heads ({num_heads})"
            )
        if ff_dim < 1 or max_len < 1:
            raise ValueError(f"ff_dim ({ff_dim}) and max_len ({max_len}) must be >= 1")
        self.dim = dim
        self.num_heads = num_heads
        self.max_len = max_len
        self.position = nn.Parameter(torch.randn(max_len, dim) * EMBEDDING_INIT_STD)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, ff_dim)
        self.ff_out = nn.Linear(ff_dim, dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, events: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """events [B, L, D], mask bool [B, L] (True = real event) -> [B, L, D], zero on padding."""
        check_events(events, mask, self.dim, "SequenceEncoder")
        batch, length = mask.shape
        if length > self.max_len:
            raise ValueError(f"SequenceEncoder: sequence length {length} exceeds max_len {self.max_len}")
        heads, head_dim = self.num_heads, self.dim // self.num_heads
        x = events + self.position[self.max_len - length :]
        attend, _ = attendable_mask(mask)
        q, k, v = self.qkv(x).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend[:, None, None, :]
        )  # [B, h, L, hd]
        attended = attended.transpose(1, 2).reshape(batch, length, self.dim)
        x = self.attn_norm(x + self.attn_out(attended))
        x = self.ff_norm(x + self.ff_out(F.relu(self.ff_in(x))))
        return x * mask[..., None].to(x.dtype)
