"""CTNet's adapters: map a source-tower hidden state to an add on the target tower's layer (paper eq. 4-5)."""

from __future__ import annotations

import torch
from torch import nn

ADAPTER_KINDS: tuple[str, ...] = ("glu", "linear")


def _check_dims(in_dim: int, out_dim: int, init_std: float, rank: int | None) -> None:
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"adapter dims must be >= 1, got in_dim={in_dim}, out_dim={out_dim}")
    if init_std < 0:
        raise ValueError(f"adapter init_std must be >= 0, got {init_std}")
    if rank is not None and rank < 1:
        raise ValueError(f"adapter rank must be >= 1 or null (full rank), got {rank}")


def _projection(in_dim: int, out_dim: int, init_std: float, rank: int | None) -> nn.Module:
    """``z -> U z`` with U [out_dim, in_dim] ~ N(0, init_std), or its rank-``rank`` factorisation.

    The factorisation ``U = B A`` runs ``in_dim * rank + rank * out_dim`` multiply-adds per row
    instead of ``in_dim * out_dim``. A ~ N(0, 1/sqrt(in_dim)) keeps ``A z`` at the scale of z and
    B ~ N(0, init_std) keeps the product near zero, so the adapter still starts as no adapter;
    B's first gradients are then of the usual size. A rank of at least min(in_dim, out_dim)
    restricts nothing: the full matrix is used.
    """
    if rank is None or rank >= min(in_dim, out_dim):
        full = nn.Linear(in_dim, out_dim, bias=False)
        nn.init.normal_(full.weight, 0.0, init_std)
        return full
    down = nn.Linear(in_dim, rank, bias=False)
    up = nn.Linear(rank, out_dim, bias=False)
    nn.init.normal_(down.weight, 0.0, in_dim**-0.5)
    nn.init.normal_(up.weight, 0.0, init_std)
    return nn.Sequential(down, up)


class GluAdapter(nn.Module):
    """``g(z) = (U1 z) * sigmoid(U2 z)``, no bias; U ~ N(0, init_std) so g starts near zero.

    Args:
        in_dim: width of the source hidden state z_s^l.
        out_dim: width of the target layer l+1.
        init_std: std of U1 and U2 (small, e.g. 1e-6: CTNet then starts as the target model).
        rank: None (the paper's full U1, U2) or the rank of ``[U1; U2] = B A`` (one A shared
            by both halves): fewer FLOPs for a cheaper CTNet.
    """

    def __init__(self, in_dim: int, out_dim: int, init_std: float, rank: int | None = None) -> None:
        super().__init__()
        _check_dims(in_dim, out_dim, init_std, rank)
        self.out_dim = out_dim
        # U1 and U2 stacked, one matmul
        self.proj = _projection(in_dim, 2 * out_dim, init_std, rank)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, in_dim] -> [B, out_dim]."""
        value, gate = self.proj(z).split(self.out_dim, dim=-1)
        return value * torch.sigmoid(gate)


class LinearAdapter(nn.Module):
    """``g(z) = U z``, no bias; U ~ N(0, init_std) (CTNet w/o GLU).

    Args:
        in_dim: width of the source hidden state z_s^l.
        out_dim: width of the target layer l+1.
        init_std: std of U.
        rank: None (full U) or the rank of ``U = B A``.
    """

    def __init__(self, in_dim: int, out_dim: int, init_std: float, rank: int | None = None) -> None:
        super().__init__()
        _check_dims(in_dim, out_dim, init_std, rank)
        self.proj = _projection(in_dim, out_dim, init_std, rank)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, in_dim] -> [B, out_dim]."""
        return self.proj(z)


def build_adapter(kind: str, in_dim: int, out_dim: int, init_std: float, rank: int | None = None) -> nn.Module:
    """An adapter by name: ``glu`` (GluAdapter) or ``linear`` (LinearAdapter), full or low rank."""
    if kind == "glu":
        return GluAdapter(in_dim, out_dim, init_std, rank)
    if kind == "linear":
        return LinearAdapter(in_dim, out_dim, init_std, rank)
    raise ValueError(f"unknown adapter {kind!r}; choose one of {ADAPTER_KINDS}")
