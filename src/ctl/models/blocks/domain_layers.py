"""Layers with one set of parameters per domain: STAR's partitioned normalisation and star-topology
linear layer, and PEPNet's gate unit.

The domain of a call is an index into the model's domain pair (0 = source, 1 = target): a joint
model runs a domain's path over every row of a batch and keeps each row's own domain's logit
(:func:`ctl.models.baselines.joint.own_domain_logits`).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

#: the gate unit's output range is (0, GATE_SCALE): 1 (no change) sits in its middle (PEPNet's gamma = 2)
GATE_SCALE = 2.0


class PartitionedNorm(nn.Module):
    """``PN(x; d) = (gamma * gamma_d) * (x - mu_d) / sqrt(var_d + eps) + (beta + beta_d)`` (STAR, eq. 4).

    Each domain keeps its own statistics and affine pair in ``domains[d]`` (a ``BatchNorm1d``, so a
    production model's BatchNorm loads into it by name); ``gamma`` and ``beta`` are shared. In
    training, domain d's statistics come from the rows ``rows`` marks (the batch's rows of that
    domain) and update its running statistics; with fewer than two such rows, and in evaluation,
    the running statistics are used.

    Args:
        dim: the normalised width.
        n_domains: how many domains.
    """

    def __init__(self, dim: int, n_domains: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.domains = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(n_domains))

    def forward(self, x: torch.Tensor, domain: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, dim] normalised as domain ``domain``; ``rows`` bool [B]: the rows its statistics come from."""
        norm = cast(nn.BatchNorm1d, self.domains[domain])
        # built with BatchNorm1d's defaults: running statistics kept (and counted), a momentum of 0.1
        assert norm.running_mean is not None and norm.running_var is not None
        assert norm.momentum is not None and norm.num_batches_tracked is not None
        mean, var = norm.running_mean, norm.running_var
        if self.training and rows is not None:
            n = int(rows.sum())
            if n >= 2:
                weight = rows.to(x.dtype).unsqueeze(-1)
                mean = (x * weight).sum(0) / n
                var = ((x - mean) ** 2 * weight).sum(0) / n
                with torch.no_grad():
                    momentum = norm.momentum
                    norm.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                    norm.running_var.mul_(1 - momentum).add_(momentum * var.detach() * n / (n - 1))
                    norm.num_batches_tracked.add_(1)
        normalised = (x - mean) / torch.sqrt(var + norm.eps)
        return self.gamma * norm.weight * normalised + self.beta + norm.bias


class StarLinear(nn.Module):
    """STAR's star-topology layer: ``y = (W_shared * W_d) x + (b_shared + b_d)`` (eq. 1-2, ``*`` elementwise).

    ``W_shared`` starts at ones, so domain d's layer starts as its own weight ``W_d`` (a production
    model's layer loads into it); ``W_d`` starts as ``nn.Linear``'s default.

    Args:
        in_dim: input width.
        out_dim: output width.
        n_domains: how many domains.
        bias: with the biases (the logit layer); without, where a normalisation's shift follows.
    """

    def __init__(self, in_dim: int, out_dim: int, n_domains: int, bias: bool) -> None:
        super().__init__()
        self.shared_weight = nn.Parameter(torch.ones(out_dim, in_dim))
        self.domain_weights = nn.ParameterList(
            nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone()) for _ in range(n_domains))
        self.shared_bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        self.domain_biases = nn.ParameterList(nn.Parameter(torch.zeros(out_dim)) for _ in range(n_domains)) \
            if bias else None

    def forward(self, x: torch.Tensor, domain: int) -> torch.Tensor:
        """x [B, in_dim] -> [B, out_dim] through domain ``domain``'s layer."""
        bias = None
        if self.shared_bias is not None:
            assert self.domain_biases is not None  # made together with shared_bias (bias=True)
            bias = self.shared_bias + self.domain_biases[domain]
        return F.linear(x, self.shared_weight * self.domain_weights[domain], bias)


class GateNU(nn.Module):
    """PEPNet's gate unit: ``delta(x) = 2 * sigmoid(W2 ReLU(W1 x + b1) + b2)``, in (0, 2).

    W2 and b2 start at zero, so every gate starts at exactly 1: the gated model starts as the
    model without gates.

    Args:
        in_dim: width of the gate's input.
        hidden: width of its hidden layer.
        out_dim: width of the gate (of what it scales).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        if min(in_dim, hidden, out_dim) < 1:
            raise ValueError(f"GateNU: widths must be >= 1, got in {in_dim}, hidden {hidden}, out {out_dim}")
        self.hidden = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_dim] -> gate [B, out_dim] in (0, 2)."""
        return GATE_SCALE * torch.sigmoid(self.out(F.relu(self.hidden(x))))
