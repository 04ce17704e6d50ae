"""``minet``: Mixed Interest Network (Ouyang et al. 2020) for cross-domain CTR prediction."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import Backbone, BackboneConfig
from ctl.models.baselines.joint import DomainPair, domain_sequence, own_domain_logits
from ctl.models.baselines.reuse import head_layers, reuse_parameters, same_names
from ctl.models.blocks import MlpHead, attendable_mask

#: ceiling of an interest weight's exponent: exp(15) ~ 3e6 keeps a diverging weight finite in float32
MAX_INTEREST_EXPONENT = 15.0


class ItemLevelAttention(nn.Module):
    """MiNet's item-level attention: a softmax over the user's behaviours, given the candidate and the user.

    The score of behaviour ``b_i`` is ``v^T ReLU(W [b_i, q, u, b_i * q] + c)`` for candidate ``q``
    and user ``u``; the weights are a softmax over the real behaviours (0 on padding) and the
    interest is ``sum_i a_i b_i``. A user without behaviours gets a zero interest.

    Args:
        event_dim: width D of a behaviour and of the candidate.
        user_dim: width of the user embedding.
        hidden_dim: width of the scoring MLP's hidden layer.

    Example::

        attention = ItemLevelAttention(event_dim=8, user_dim=4, hidden_dim=16)
        interest = attention(events, candidate, user, mask)  # [B, L, 8], [B, 8], [B, 4], [B, L] -> [B, 8]
    """

    def __init__(self, event_dim: int, user_dim: int, hidden_dim: int) -> None:
        super().__init__()
        if min(event_dim, user_dim, hidden_dim) < 1:
            raise ValueError(
                f"ItemLevelAttention: event_dim ({event_dim}), user_dim ({user_dim}) and "
                f"hidden_dim ({hidden_dim}) must be >= 1"
            )
        self.event_dim = event_dim
        self.score = nn.Sequential(
            nn.Linear(3 * event_dim + user_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1)
        )

    def weights(
        self, events: torch.Tensor, candidate: torch.Tensor, user: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """events [B, L, D], candidate [B, D], user [B, Du], mask bool [B, L] -> weights [B, L].

        Each row's weights sum to 1 over its real behaviours, or are all 0 when it has none.
        """
        if events.dim() != 3 or events.shape[-1] != self.event_dim or mask.shape != events.shape[:2]:
            raise ValueError(
                f"ItemLevelAttention: expected events [B, L, {self.event_dim}] and mask [B, L]; got "
                f"{tuple(events.shape)} and {tuple(mask.shape)}"
            )
        query = candidate[:, None, :].expand_as(events)
        person = user[:, None, :].expand(-1, events.shape[1], -1)
        scores = self.score(torch.cat([events, query, person, events * query], dim=-1)).squeeze(-1)
        attend, has_event = attendable_mask(mask)
        weights = torch.softmax(scores.masked_fill(~attend, float("-inf")), dim=-1)
        return weights * has_event[:, None].to(weights.dtype)

    def forward(
        self, events: torch.Tensor, candidate: torch.Tensor, user: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Interest ``sum_i a_i b_i``: [B, D]."""
        return torch.einsum("bl,bld->bd", self.weights(events, candidate, user, mask), events)


class InterestLevelAttention(nn.Module):
    """MiNet's interest-level attention: one unnormalised weight per interest.

    Weight k is ``exp(g_k^T ReLU(V_k x + b_k) + c_k)`` with ``x = [q, u, a_source, a_target]``: every
    weight sees the candidate and all three interests. The weights are not normalised, so the
    total strength of the interests can grow or shrink per row.

    Args:
        in_dim: width of x.
        hidden_dim: width of each weight's hidden layer.
        n_interests: how many weights.
    """

    def __init__(self, in_dim: int, hidden_dim: int, n_interests: int) -> None:
        super().__init__()
        if min(in_dim, hidden_dim, n_interests) < 1:
            raise ValueError(
                f"InterestLevelAttention: in_dim ({in_dim}), hidden_dim ({hidden_dim}) and "
                f"n_interests ({n_interests}) must be >= 1"
            )
        self.in_dim = in_dim
        self.scores = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))
            for _ in range(n_interests)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_dim] -> positive weights [B, n_interests]."""
        if x.dim() != 2 or x.shape[-1] != self.in_dim:
            raise ValueError(f"InterestLevelAttention: x must be [B, {self.in_dim}], got {tuple(x.shape)}")
        exponents = torch.cat([score(x) for score in self.scores], dim=-1)
        return torch.exp(exponents.clamp(max=MAX_INTEREST_EXPONENT))


class MiNet(nn.Module):
    """The shared backbone plus MiNet's three user interests; a prediction head per domain.

    Interests of a row's user, for a candidate ``q`` (item + category embedding):
      * long-term: the user embedding ``u`` (the shared user table);
      * short-term source: item-level attention over the user's recent *source* clicks
        (``seq_<source>_*``), each behaviour first mapped by the transfer matrix ``M``;
      * short-term target: item-level attention over the recent *target* clicks (``seq_<target>_*``).
    Interest-level attention weighs them: ``[w_u u, w_s a_s, w_t a_t]``; each domain's head reads
    ``concat(E, weighted interests)``, E being the backbone's output (which holds ``q``).
    Everything but the heads is shared by the domains, and every row (source or target) reads both
    sequences. The loss is ``BCE_target + source_weight * BCE_source``, through ``row_weight``.

    ``M`` starts as the identity: both domains' behaviours are embedded by the same shared tables.
    ``init_from``: the backbone comes from the target model, each head from its domain's model
    widened (the weights for the interests start at zero, so the target head starts as the target
    model exactly), the attentions start fresh.

    Args:
        schema: the dataset's features.
        backbone: the sizes (``attn_dim`` is the attention MLPs' hidden width).
        source: the source domain.
        target: the target domain.
        source_weight: gamma, the weight of a source row's loss relative to a target row's.

    Example::

        model = MiNet(schema, backbone, source="A", target="B")
        out = model(batch)  # {"logits": [B], "row_weight": [B]}
    """

    def __init__(
        self, schema: Schema, backbone: BackboneConfig, source: str, target: str, source_weight: float = 1.0
    ) -> None:
        super().__init__()
        if source_weight < 0:
            raise ValueError(f"MiNet: source_weight must be >= 0, got {source_weight}")
        self.pair = DomainPair(schema, source, target)
        self.config = backbone
        self.source_weight = float(source_weight)
        self.backbone = Backbone(schema, backbone)
        event_dim = self.backbone.embeddings.seq_dim
        user_dim = self.backbone.embeddings.dim("user_id")
        self.transfer = nn.Linear(event_dim, event_dim, bias=False)
        with torch.no_grad():
            self.transfer.weight.copy_(torch.eye(event_dim))
        self.source_attention = ItemLevelAttention(event_dim, user_dim, backbone.attn_dim)
        self.target_attention = ItemLevelAttention(event_dim, user_dim, backbone.attn_dim)
        interest_dim = user_dim + 2 * event_dim
        self.interest_attention = InterestLevelAttention(event_dim + interest_dim, backbone.attn_dim, 3)
        self.source_head = MlpHead(self.backbone.out_dim + interest_dim, backbone.mlp_dims)
        self.target_head = MlpHead(self.backbone.out_dim + interest_dim, backbone.mlp_dims)

    def domain_sequences(self) -> tuple[str, ...]:
        """``(source, target)``: every row needs the user's recent clicks in both domains."""
        return self.pair.names

    def interests(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(interest weights [B, 3] for user, source, target; weighted interests [B, Du + 2 D])."""
        embeddings = self.backbone.embeddings
        candidate = self.backbone.candidate(batch)
        user = embeddings.lookup("user_id", batch["user_id"])
        item, category, mask = domain_sequence(batch, self.pair.source, "MiNet")
        source_events = self.transfer(embeddings.embed_sequence(item, category))
        source_interest = self.source_attention(source_events, candidate, user, mask)
        item, category, mask = domain_sequence(batch, self.pair.target, "MiNet")
        target_events = embeddings.embed_sequence(item, category)
        target_interest = self.target_attention(target_events, candidate, user, mask)
        weights = self.interest_attention(
            torch.cat([candidate, user, source_interest, target_interest], dim=-1)
        )
        weighted = torch.cat(
            [weights[:, 0:1] * user, weights[:, 1:2] * source_interest, weights[:, 2:3] * target_interest],
            dim=-1,
        )
        return weights, weighted

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"logits": [B], "row_weight": [B]}`` (1 on target rows, ``source_weight`` on source rows)."""
        is_target = self.pair.target_rows(batch)
        _, weighted = self.interests(batch)
        x = torch.cat([self.backbone(batch), weighted], dim=-1)
        logits = own_domain_logits(is_target, lambda: self.source_head(x)[0], lambda: self.target_head(x)[0])
        row_weight = torch.where(is_target, 1.0, self.source_weight).to(logits.dtype)
        return {"logits": logits, "row_weight": row_weight}

    def init_from(
        self, source_state: Mapping[str, torch.Tensor], target_state: Mapping[str, torch.Tensor]
    ) -> dict[str, list[str]]:
        """Backbone <- target; each head <- its domain's model, widened; attentions and M fresh."""
        plan = same_names("backbone.", self.backbone, "target", state_prefix="backbone.")
        plan.update(head_layers("source_head.", self.source_head, "source", widen_input=True))
        plan.update(head_layers("target_head.", self.target_head, "target", widen_input=True))
        return reuse_parameters(self, plan, source_state, target_state)
