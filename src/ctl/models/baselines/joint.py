"""What the joint (two-domain) baselines share: the domain pair, per-domain towers, own-head logits.

A joint model reads batches that mix source and target rows (``batch["domain"]``) and gives each
row the logit of *its own* domain's head, so a row's loss has exactly zero gradient through the
other domain's head. Every head runs on every row of the batch (when the batch holds any row of
its domain): a mixed batch may hold only a handful of target rows (A is about 60x B), too few for
the BatchNorm statistics of a head that would only see its own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ctl.data.batch import SEQUENCE_FIELDS, Batch, domain_sequence_prefix
from ctl.data.schema import Schema
from ctl.models.backbone import require_batch_keys
from ctl.models.blocks import MLP


class DomainPair:
    """The source and target domains of a joint model, resolved to indices of ``Schema.domains``.

    Args:
        schema: the dataset's domains.
        source: name of the source domain (e.g. ``"A"``).
        target: name of the target domain (e.g. ``"B"``).
    """

    def __init__(self, schema: Schema, source: str, target: str) -> None:
        self.source_index = schema.domain_index(source)
        self.target_index = schema.domain_index(target)
        if source == target:
            raise ValueError(f"source and target must be two different domains, got {source!r} twice")
        self.source = source
        self.target = target

    @property
    def names(self) -> tuple[str, str]:
        """``(source, target)``."""
        return (self.source, self.target)

    def target_rows(self, batch: Batch) -> torch.Tensor:
        """bool [B], True on target rows; raise ValueError on a row of any third domain."""
        require_batch_keys(batch, ("domain",), "DomainPair")
        domain = batch["domain"]
        other = (domain != self.source_index) & (domain != self.target_index)
        # an exported graph cannot branch on data; its requests are checked for their domain before it runs
        if not torch.compiler.is_exporting() and bool(other.any()):
            first = int(domain[other][0])
            raise ValueError(
                f"a {self.source}->{self.target} joint model takes rows of those two domains only; "
                f"the batch holds a row of domain index {first}"
            )
        return domain == self.target_index


def own_domain_logits(
    is_target: torch.Tensor,
    source_logits: Callable[[], torch.Tensor],
    target_logits: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """Each row's logit from its own domain's head: [B].

    A head runs only when the batch holds a row of its domain (evaluation on target rows never
    runs the source head). ``torch.where`` passes a row's gradient to its own head only.

    Args:
        is_target: bool [B].
        source_logits: computes the source head's logits [B] for every row.
        target_logits: computes the target head's logits [B] for every row.
    """
    if torch.compiler.is_exporting():  # no branch on data in a graph: both heads, each row its own
        return torch.where(is_target, target_logits(), source_logits())
    has_target = bool(is_target.any())
    has_source = not bool(is_target.all())
    if not has_source:
        return target_logits()
    if not has_target:
        return source_logits()
    return torch.where(is_target, target_logits(), source_logits())


class DomainTower(nn.Module):
    """One domain's upper MLP layers (possibly none) and its logit layer.

    Args:
        in_dim: width of the input.
        dims: widths of the MLP layers; empty for a logit layer alone.

    Example::

        tower = DomainTower(in_dim=16, dims=(8,))
        logits = tower(x)  # [B, 16] -> [B]
    """

    def __init__(self, in_dim: int, dims: Sequence[int]) -> None:
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if in_dim < 1:
            raise ValueError(f"DomainTower: in_dim must be >= 1, got {in_dim}")
        self.mlp = MLP(in_dim, dims) if dims else None
        self.logit = nn.Linear(dims[-1] if dims else in_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_dim] -> logits float32 [B]."""
        if self.mlp is not None:
            x, _ = self.mlp(x)
        return self.logit(x).squeeze(-1).float()


def orthogonality_gap(mapping: torch.Tensor) -> torch.Tensor:
    """``||X X^T - I||_F`` of a square matrix X: 0 exactly when X is orthogonal."""
    identity = torch.eye(mapping.shape[0], dtype=mapping.dtype, device=mapping.device)
    return torch.linalg.matrix_norm(mapping @ mapping.T - identity)


def domain_sequence(batch: Batch, domain: str, who: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The user's last L events in ``domain``: (item [B, L], category [B, L], mask bool [B, L])."""
    prefix = domain_sequence_prefix(domain)
    keys = [f"{prefix}_{field}" for field in (*SEQUENCE_FIELDS, "mask")]
    require_batch_keys(batch, keys, who)
    return batch[keys[0]], batch[keys[1]], batch[keys[2]]
