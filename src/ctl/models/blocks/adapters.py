"""CTNet's adapters: map a source-tower hidden state to an add on the target tower's layer (paper eq. 4-5)."""

from __future__ import annotations

import torch
from torch import nn

ADAPTER_KINDS: tuple[str, ...] = ("glu", "linear")


def _check_dims(in_dim: int, out_dim: int, init_std: float) -> None:
    if in_dim < 1 or out_dim < 1:
        raise ValueError(f"adapter dims must be >= 1, got in_dim={in_dim}, out_dim={out_dim}")
    if init_std < 0:
        raise ValueError(f"adapter init_std must be >= 0, got {init_std}")


class GluAdapter(nn.Module):
    """``g(z) = (U1 z) * sigmoid(U2 z)``, no bias; U ~ N(0, init_std) so g starts near zero.

    Args:
        in_dim: width of the source hidden state z_s^l.
        out_dim: width of the target layer l+1.
        init_std: std of U1 and U2 (small, e.g. 1e-6: CTNet then starts as the target model).
    """

    def __init__(self, in_dim: int, out_dim: int, init_std: float) -> None:
        super().__init__()
        _check_dims(in_dim, out_dim, init_std)
        self.out_dim = out_dim
        # U1 and U2 stacked, one matmul
        self.proj = nn.Linear(in_dim, 2 * out_dim, bias=False)
        nn.init.normal_(self.proj.weight, 0.0, init_std)

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
    """

    def __init__(self, in_dim: int, out_dim: int, init_std: float) -> None:
        super().__init__()
        _check_dims(in_dim, out_dim, init_std)
        self.proj = nn.Linear(in_dim, out_dim, bias=False)
        nn.init.normal_(self.proj.weight, 0.0, init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, in_dim] -> [B, out_dim]."""
        return self.proj(z)


def build_adapter(kind: str, in_dim: int, out_dim: int, init_std: float) -> nn.Module:
    """An adapter by name: ``glu`` (GluAdapter) or ``linear`` (LinearAdapter)."""
    if kind == "glu":
        return GluAdapter(in_dim, out_dim, init_std)
    if kind == "linear":
        return LinearAdapter(in_dim, out_dim, init_std)
    raise ValueError(f"unknown adapter {kind!r}; choose one of {ADAPTER_KINDS}")
