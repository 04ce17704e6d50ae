"""``lowrank``: low-rank transfer of the frozen source model, in the spirit of MLoRA (Yang et al., RecSys 2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctl.data.batch import Batch
from ctl.data.schema import Schema
from ctl.models.backbone import BackboneConfig
from ctl.models.blocks.mlp import LEAKY_SLOPE
from ctl.models.recent.frozen import FrozenSourceModel


class LowRankDelta(nn.Module):
    """``x -> B A x``, a rank-``rank`` change ``B A`` [out, in] of a frozen layer's weight.

    A ~ N(0, 1/sqrt(in_dim)) keeps ``A x`` at the scale of x; B starts at zero, so the adapted
    layer starts as the frozen one and B's first gradients are of the usual size (LoRA's init).

    Args:
        in_dim: the frozen layer's input width.
        out_dim: its output width.
        rank: the rank r of the change (at most min(in_dim, out_dim)).
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_dim, out_dim):
            raise ValueError(f"LowRankDelta: rank must lie in 1 .. {min(in_dim, out_dim)} (the layer is "
                             f"{out_dim} x {in_dim}), got {rank}")
        self.down = nn.Parameter(torch.randn(rank, in_dim) * in_dim**-0.5)
        self.up = nn.Parameter(torch.zeros(out_dim, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_dim] -> (B A) x [B, out_dim]."""
        return F.linear(F.linear(x, self.down), self.up)


class LowRankTransfer(FrozenSourceModel):
    """The latest source model, frozen, with a low-rank change on every MLP weight, trained on the target.

    Layer l is ``z^{l+1} = LeakyReLU(BN_s((W_s^l + B_l A_l) z^l))`` over the source model's
    features ``E_s`` of the target row, then the source model's logit layer: only ``A_l, B_l``
    are trained. The source model under them is refreshed every period; the changes carry over.

    Args:
        schema: the dataset's features.
        backbone: the sizes (the source model's).
        rank: the rank of every change (capped at each layer's smaller side).
    """

    def __init__(self, schema: Schema, backbone: BackboneConfig, rank: int = 8) -> None:
        super().__init__(schema, backbone)
        mlp = self.source.tower.mlp
        self.deltas = nn.ModuleList(LowRankDelta(i, o, min(rank, i, o)) for i, o in zip(mlp.in_dims, mlp.dims))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits [B]."""
        source = self.source
        with torch.no_grad():
            z = source.features(self.source_view(batch))
        mlp = source.tower.mlp
        for linear, norm, delta in zip(mlp.linears, mlp.norms, self.deltas, strict=True):
            z = F.leaky_relu(norm(linear(z) + delta(z)), LEAKY_SLOPE)
        return source.tower.logit(z).squeeze(-1).float()
