"""Attention of a candidate item over a user's behaviour events."""

from __future__ import annotations

import torch
from torch import nn


def check_events(keys: torch.Tensor, mask: torch.Tensor, key_dim: int, who: str) -> None:
    """Raise ValueError unless keys is [B, L, key_dim] and mask is a bool [B, L]."""
    if keys.dim() != 3 or keys.shape[-1] != key_dim:
        raise ValueError(f"{who}: keys must be [B, L, {key_dim}], got {tuple(keys.shape)}")
    if mask.dtype != torch.bool or mask.shape != keys.shape[:2]:
        raise ValueError(
            f"{who}: mask must be a bool [B, L] = {tuple(keys.shape[:2])}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )


def attendable_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Key mask that softmax can use, and which rows hold any event.

    A row whose events are all padding would give a softmax over nothing (NaN); such rows attend to
    their padding instead, and the caller zeroes their output with ``has_event``.

    Args:
        mask: bool [B, L], True for real events.

    Returns:
        (attend [B, L] bool, has_event [B] bool)
    """
    has_event = mask.any(dim=1)
    return mask | ~has_event[:, None], has_event


class TargetAttention(nn.Module):
    """Multi-head attention with the candidate item as the query and behaviour events as keys/values.

    Rows without any real event return zeros.

    With one query per row the key and value projections are folded into the query side, which
    gives the same result as projecting every event: a head's scores are
    ``q_h . (W_k,h e + b_k,h) = (W_k,h^T q_h) . e + q_h . b_k,h`` and its output is
    ``W_v,h (sum_l a_l e_l) + b_v,h`` (the weights sum to 1). The work per event drops from a
    ``Dk x 2 hidden_dim`` projection to one dot product per head, which is most of the base
    model's attention cost with SIM/ETA over 64 events.

    Args:
        query_dim: width Dq of the candidate embedding.
        key_dim: width Dk of an event embedding.
        num_heads: attention heads; must divide ``hidden_dim``.
        hidden_dim: width of the projected queries/keys/values and of the output.

    Example::

        ta = TargetAttention(query_dim=16, key_dim=16, num_heads=2, hidden_dim=32)
        out = ta(candidate, events, mask)  # [B, 16], [B, L, 16], [B, L] -> [B, 32]
    """

    def __init__(self, query_dim: int, key_dim: int, num_heads: int, hidden_dim: int) -> None:
        super().__init__()
        if num_heads < 1 or hidden_dim % num_heads != 0:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be a positive multiple of num_heads ({num_heads})"
            )
        self.query_dim = query_dim
        self.key_dim = key_dim
        self.num_heads = num_heads
        self.out_dim = hidden_dim
        self.query = nn.Linear(query_dim, hidden_dim)
        # keys and values in one Linear: output feature (kv, head, j) is row kv * hidden + head * hd + j
        self.key_value = nn.Linear(key_dim, 2 * hidden_dim)
        self.output = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """query [B, Dq], keys [B, L, Dk], mask bool [B, L] (True = real event) -> [B, hidden_dim]."""
        if query.dim() != 2 or query.shape[-1] != self.query_dim:
            raise ValueError(
                f"TargetAttention: query must be [B, {self.query_dim}], got {tuple(query.shape)}"
            )
        check_events(keys, mask, self.key_dim, "TargetAttention")
        if keys.shape[0] != query.shape[0]:
            raise ValueError(f"TargetAttention: query has {query.shape[0]} rows, keys {keys.shape[0]}")
        batch = query.shape[0]
        heads, head_dim = self.num_heads, self.out_dim // self.num_heads
        attend, has_event = attendable_mask(mask)
        key_weight, value_weight = self.key_value.weight.view(2, heads, head_dim, self.key_dim).unbind(0)
        key_bias, value_bias = self.key_value.bias.view(2, heads, head_dim).unbind(0)
        q = self.query(query).view(batch, heads, head_dim) * head_dim**-0.5
        q_events = torch.einsum("bhd,hdk->bhk", q, key_weight)  # [B, h, Dk]
        # q . b_k is one constant per head: it cancels in the softmax but keeps b_k in the graph
        q_bias = (q * key_bias).sum(-1, keepdim=True)  # [B, h, 1]
        scores = torch.baddbmm(q_bias, q_events, keys.transpose(1, 2))  # [B, h, L]
        scores = scores.masked_fill(~attend[:, None, :], float("-inf"))
        pooled = torch.bmm(torch.softmax(scores, dim=-1), keys)  # [B, h, Dk]
        mixed = torch.einsum("bhk,hdk->bhd", pooled, value_weight) + value_bias
        out = self.output(mixed.reshape(batch, self.out_dim))
        return out * has_event[:, None].to(out.dtype)


class DinAttention(nn.Module):
    """DIN's activation unit (Zhou et al. 2018): an unnormalised weight per event, then a weighted sum.

    The weight of event e_i for candidate e_t is ``MLP([e_i, e_t, e_i - e_t, e_i * e_t])``; weights
    are *not* softmaxed (DIN keeps the intensity of the user's interest), padding events weigh 0.

    Args:
        dim: width D of events and candidate.
        hidden_dim: width of the activation unit's hidden layer.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        if dim < 1 or hidden_dim < 1:
            raise ValueError(f"dim ({dim}) and hidden_dim ({hidden_dim}) must be >= 1")
        self.dim = dim
        self.out_dim = dim
        self.unit = nn.Sequential(nn.Linear(4 * dim, hidden_dim), nn.PReLU(), nn.Linear(hidden_dim, 1))

    def weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """query [B, D], keys [B, L, D], mask bool [B, L] -> weights [B, L], 0 on padding."""
        if query.dim() != 2 or query.shape[-1] != self.dim:
            raise ValueError(f"DinAttention: query must be [B, {self.dim}], got {tuple(query.shape)}")
        check_events(keys, mask, self.dim, "DinAttention")
        target = query[:, None, :].expand_as(keys)
        pairs = torch.cat([keys, target, keys - target, keys * target], dim=-1)
        return self.unit(pairs).squeeze(-1) * mask.to(keys.dtype)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """query [B, D], keys [B, L, D], mask bool [B, L] -> interest [B, D]."""
        return torch.einsum("bl,bld->bd", self.weights(query, keys, mask), keys)
