"""The MLP tower: Linear -> BatchNorm -> LeakyReLU layers exposing every layer's input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.01


class MLP(nn.Module):
    """Layers ``z^{l+1} = LeakyReLU(BN(W_l z^l) + a_l)``; ``a_l`` are optional pre-activation adds.

    The adds are where CTNet's adapters plug in: ``a_l = g_l(z_s^l)`` from the source tower.

    Args:
        in_dim: width of the input z^0.
        dims: widths of z^1 .. z^n.

    Example::

        mlp = MLP(in_dim=32, dims=(16, 8))
        out, hiddens = mlp(x)  # out [B, 8]; hiddens = [x [B, 32], z1 [B, 16], z2 [B, 8]]
    """

    def __init__(self, in_dim: int, dims: Sequence[int]) -> None:
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if in_dim < 1 or not dims or min(dims) < 1:
            raise ValueError(
                f"MLP needs in_dim >= 1 and at least one layer of width >= 1; got {in_dim}, {dims}"
            )
        self.in_dims: tuple[int, ...] = (in_dim, *dims[:-1])
        self.dims: tuple[int, ...] = dims
        # BatchNorm's shift makes a linear bias redundant
        self.linears = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in zip(self.in_dims, dims))
        self.norms = nn.ModuleList(nn.BatchNorm1d(o) for o in dims)

    @property
    def out_dim(self) -> int:
        return self.dims[-1]

    def forward(
        self, x: torch.Tensor, pre_activation_adds: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x [B, in_dim], adds [B, dims[l]] per layer or None -> (z^n [B, dims[-1]], [z^0 = x, z^1, ..., z^n])."""
        if x.dim() != 2 or x.shape[-1] != self.in_dims[0]:
            raise ValueError(f"MLP: input must be [B, {self.in_dims[0]}], got {tuple(x.shape)}")
        if pre_activation_adds is not None and len(pre_activation_adds) != len(self.dims):
            raise ValueError(
                f"MLP: {len(pre_activation_adds)} pre-activation adds for {len(self.dims)} layers"
            )
        hiddens = [x]
        for layer, (linear, norm) in enumerate(zip(self.linears, self.norms, strict=True)):
            h = norm(linear(x))
            if pre_activation_adds is not None:
                add = pre_activation_adds[layer]
                if add.shape != h.shape:
                    raise ValueError(
                        f"MLP: pre-activation add {layer} is {tuple(add.shape)}, "
                        f"layer {layer + 1} is {tuple(h.shape)}"
                    )
                h = h + add
            x = F.leaky_relu(h, LEAKY_SLOPE)
            hiddens.append(x)
        return x, hiddens

    def layer_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B, in_dim] -> [z^0 = x, ..., z^{n-1}], every layer's input, without running the last layer.

        What CTNet's adapters read from its frozen source tower, whose last layer feeds nothing.
        """
        if x.dim() != 2 or x.shape[-1] != self.in_dims[0]:
            raise ValueError(f"MLP: input must be [B, {self.in_dims[0]}], got {tuple(x.shape)}")
        inputs = [x]
        for linear, norm in zip(self.linears[:-1], self.norms[:-1], strict=True):
            inputs.append(F.leaky_relu(norm(linear(inputs[-1])), LEAKY_SLOPE))
        return inputs


class MlpHead(nn.Module):
    """MLP then a linear layer to one logit per row.

    Args:
        in_dim: width of the input E.
        dims: the MLP's layer widths.
    """

    def __init__(self, in_dim: int, dims: Sequence[int]) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, dims)
        self.logit = nn.Linear(self.mlp.out_dim, 1)

    def forward(
        self, x: torch.Tensor, pre_activation_adds: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x [B, in_dim] -> (logits float32 [B], the MLP's hiddens [z^0, ..., z^n])."""
        out, hiddens = self.mlp(x, pre_activation_adds)
        return self.logit(out).squeeze(-1).float(), hiddens
