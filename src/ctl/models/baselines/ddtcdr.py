"""``ddtcdr``: Deep Dual Transfer Cross-Domain Recommendation (Li & Tuzhilin 2020) on the base models."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import BackboneConfig, require_batch_keys
from ctl.models.base import BaseModel
from ctl.models.baselines.joint import DomainPair, orthogonality_gap
from ctl.models.baselines.reuse import reuse_parameters, same_names


class DDTCDR(nn.Module):
    """A base model per domain, joined by a latent orthogonal mapping X of the user embeddings.

    X (d x d, initialised orthogonal) maps a source user embedding into the target's space,
    ``X u_A``, and X^T maps back, ``X^T u_B``. Each domain's head is trained on two inputs of the
    row's own domain d:
      * own: its backbone's E_d, which holds the user's own embedding u_d;
      * cross: the same E_d with u_d replaced by the other domain's embedding of the same user,
        mapped (``X u_A`` on a target row, ``X^T u_B`` on a source row), through the same head.
    The loss of a row is ``(1 - alpha) BCE(own) + alpha BCE(cross)``, plus
    ``lambda ||X X^T - I||_F`` per batch. The cross term keeps its gradient, which reaches X and the
    other domain's user table (the official code detaches it, which leaves X trained by the
    orthogonality term alone; we do not copy that).

    Outputs: ``logits`` are the own logits (the prediction, as the official code evaluates); in
    training mode ``aux_loss = alpha / (1 - alpha) * mean BCE(cross) + lambda ||X X^T - I||_F``, so
    the task's ``mean BCE(logits) + aux_loss`` is ``[(1 - alpha) own + alpha cross] / (1 - alpha)
    + lambda ||...||``: the objective above up to the constant factor 1 / (1 - alpha) on its BCE
    part (1.03 at the default alpha). Both passes of a head run in training mode, so its BatchNorm
    running statistics average the own and the cross inputs, which differ in the user slot only.

    ``init_from``: each domain's model from its production model, X fresh.

    Args:
        schema: the dataset's features.
        backbone: the sizes of both domain models.
        source: the source domain (A).
        target: the target domain (B).
        cross_weight: alpha, in [0, 1).
        orthogonality_weight: lambda, >= 0.

    Example::

        model = DDTCDR(schema, backbone, source="A", target="B").train()
        out = model(batch)  # {"logits": [B], "aux_loss": scalar}
    """

    def __init__(
        self,
        schema: Schema,
        backbone: BackboneConfig,
        source: str,
        target: str,
        cross_weight: float = 0.03,
        orthogonality_weight: float = 1e-6,
    ) -> None:
        super().__init__()
        if not 0.0 <= cross_weight < 1.0:
            raise ValueError(f"DDTCDR: cross_weight (alpha) must lie in [0, 1), got {cross_weight}")
        if orthogonality_weight < 0:
            raise ValueError(f"DDTCDR: orthogonality_weight must be >= 0, got {orthogonality_weight}")
        self.pair = DomainPair(schema, source, target)
        self.config = backbone
        self.cross_weight = float(cross_weight)
        self.orthogonality_weight = float(orthogonality_weight)
        self.target_model = BaseModel(schema, backbone)
        self.source_model = BaseModel(schema, backbone)
        embeddings = self.target_model.backbone.embeddings
        user_dim = embeddings.dim("user_id")
        names = embeddings.feature_names
        # E starts with the feature embeddings in schema order
        self.user_slot = slice(
            sum(embeddings.dim(name) for name in names[: names.index("user_id")]),
            sum(embeddings.dim(name) for name in names[: names.index("user_id") + 1]),
        )
        self.mapping = nn.Parameter(torch.empty(user_dim, user_dim))
        nn.init.orthogonal_(self.mapping)

    def domain_sequences(self) -> tuple[str, ...]:
        """No per-domain sequences: each domain model reads the row's own short and long sequences."""
        return ()

    def _with_user(self, e: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """E [B, D_in] with its user embedding replaced by user [B, d]."""
        return torch.cat([e[:, : self.user_slot.start], user, e[:, self.user_slot.stop :]], dim=-1)

    def _domain_logits(
        self, model: BaseModel, batch: Batch, other_user: Callable[[], torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One domain's (own logits [B], cross logits [B] or None) for every row of the batch."""
        e = model.features(batch)
        own, _ = model.head(e)
        if other_user is None:
            return own, None
        cross, _ = model.head(self._with_user(e, other_user()))
        return own, cross

    def own_and_cross_logits(
        self, batch: Batch, with_cross: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(own [B], cross [B] or None), each row through its own domain's head (see the class doc)."""
        is_target = self.pair.target_rows(batch)
        users = batch["user_id"]

        def mapped_source_user() -> torch.Tensor:  # X u_A, into the target's space
            return self.source_model.backbone.embeddings.lookup("user_id", users) @ self.mapping.T

        def mapped_target_user() -> torch.Tensor:  # X^T u_B, into the source's space
            return self.target_model.backbone.embeddings.lookup("user_id", users) @ self.mapping

        source = target = None
        exporting = torch.compiler.is_exporting()  # no branch on data in a graph: both heads, each row its own
        if exporting or not bool(is_target.all()):
            source = self._domain_logits(self.source_model, batch, mapped_target_user if with_cross else None)
        if exporting or bool(is_target.any()):
            target = self._domain_logits(self.target_model, batch, mapped_source_user if with_cross else None)
        if source is None or target is None:
            return target if source is None else source
        own = torch.where(is_target, target[0], source[0])
        if not with_cross:
            return own, None
        return own, torch.where(is_target, target[1], source[1])

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"logits": own [B]}``, plus ``aux_loss`` (scalar) in training mode."""
        own, cross = self.own_and_cross_logits(batch, with_cross=self.training)
        if cross is None:
            return {"logits": own}
        require_batch_keys(batch, ("label",), "DDTCDR")
        cross_loss = F.binary_cross_entropy_with_logits(cross, batch["label"].to(cross.dtype))
        aux = self.cross_weight / (
            1.0 - self.cross_weight
        ) * cross_loss + self.orthogonality_weight * orthogonality_gap(self.mapping)
        return {"logits": own, "aux_loss": aux}

    def init_from(
        self, source_state: Mapping[str, torch.Tensor], target_state: Mapping[str, torch.Tensor]
    ) -> dict[str, list[str]]:
        """Each domain model <- its production model; X fresh (orthogonal)."""
        plan = same_names("source_model.", self.source_model, "source")
        plan.update(same_names("target_model.", self.target_model, "target"))
        return reuse_parameters(self, plan, source_state, target_state)
