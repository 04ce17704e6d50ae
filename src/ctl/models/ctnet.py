"""``ctnet``: Continual Transfer Network (paper section 3.3)."""

from __future__ import annotations

import torch
from torch import nn

from ctl.data.batch import Batch, DomainView
from ctl.data.schema import Schema
from ctl.models.backbone import BackboneConfig
from ctl.models.base import BaseModel
from ctl.models.blocks import build_adapter


class CTNet(nn.Module):
    """A frozen source tower and a trainable target tower, joined by an adapter at every MLP layer.

    Both towers are ``BaseModel``s of the same architecture, so a base model's ``state_dict`` loads
    into either. The target tower's layers become
    ``z_t^{l+1} = LeakyReLU(BN(W_l z_t^l) + g_l(z_s^l))`` for l = 0..n-1, where ``z_s^0 = E_s`` is the
    source tower's MLP input; with adapter weights near zero CTNet starts as the target model.

    The source tower is frozen: no parameter requires grad, it stays in ``eval()`` (its BatchNorm
    statistics remain the source model's) whatever ``train()`` is called with, and it runs under
    ``torch.no_grad()``. It reads the same target row as the source model would
    (``DomainView``): features the source domain lacks, target-only ones included, are 0 for it.

    Args:
        schema: the dataset's features.
        backbone: the sizes of both towers.
        adapter: ``glu`` (``g(z) = U1 z * sigmoid(U2 z)``) or ``linear`` (``g(z) = U z``).
        adapter_init_std: std of the adapters' N(0, std) init.
        adapter_lr: None (the optimiser's learning rate) or the adapters' own learning rate. The
            adapters start with a fresh Adagrad state, whose first step moves every weight by
            about the learning rate whatever its gradient; at wide layers that is a large shock.
        adapter_rank: None (the paper's full-width adapters) or a rank r: each adapter's matrix
            is a product through r dimensions, which cuts the adapters' FLOPs (they are about
            twice the target MLP's at full width) at some cost in capacity.
        share_attention: the target tower uses the source tower's SIM/ETA output (paper 4.7) and
            its own SIM/ETA attention is frozen, unused.
        adapter_base_width: None (every adapter takes the same rate) or a width w: adapter l's rate
            is scaled by ``w / in_dim_l`` (its group's ``lr_scale``). Adagrad's early steps are
            about ``lr * sign(grad)`` per weight, so they move an adapter's output by about
            ``lr * sum_i |z_i|``, which grows with the input width; scaling the rate by 1/width
            keeps that step the same at every model size (as muP scales hidden layers' Adam rates),
            so a rate that suits adapters of width w suits every width.

    Example::

        net = CTNet(schema, backbone)
        net.target.load_state_dict(target_model.state_dict())
        net.source.load_state_dict(source_model.state_dict())
        logits = net(batch)  # [B]
    """

    def __init__(
        self,
        schema: Schema,
        backbone: BackboneConfig,
        adapter: str = "glu",
        adapter_init_std: float = 1e-6,
        share_attention: bool = False,
        adapter_rank: int | None = None,
        adapter_lr: float | None = None,
        adapter_base_width: int | None = None,
    ) -> None:
        super().__init__()
        self.config = backbone
        self.share_attention = share_attention
        if adapter_lr is not None and adapter_lr <= 0:
            raise ValueError(f"adapter_lr must be > 0 or null, got {adapter_lr}")
        self.adapter_lr = adapter_lr
        if adapter_base_width is not None and adapter_base_width < 1:
            raise ValueError(f"adapter_base_width must be >= 1 or null, got {adapter_base_width}")
        self.adapter_base_width = adapter_base_width
        self.source_view = DomainView(schema, schema.source)
        self.source = BaseModel(schema, backbone)
        self.target = BaseModel(schema, backbone)
        source_mlp = self.source.tower.mlp
        self.adapters = nn.ModuleList(
            build_adapter(adapter, in_dim, out_dim, adapter_init_std, adapter_rank)
            for in_dim, out_dim in zip(source_mlp.in_dims, self.target.tower.mlp.dims)
        )
        if share_attention:
            self.target.backbone.sim_attention.requires_grad_(False)
            self.target.backbone.eta_attention.requires_grad_(False)
        self.freeze_source()

    def freeze_source(self) -> None:
        """Stop the source tower's gradients and put it in eval mode (call again after replacing its weights)."""
        self.source.requires_grad_(False)
        self.source.eval()

    def train(self, mode: bool = True) -> CTNet:
        """Set the target tower and adapters to ``mode``; the source tower stays in eval mode."""
        super().train(mode)
        self.source.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimiser should update: the target tower's and the adapters'."""
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self) -> list[dict]:
        """The optimiser's groups: the target tower, then one per adapter when the adapters' rate is
        their own (``lr`` = ``adapter_lr`` if set, ``lr_scale`` = base width / input width if set)."""
        adapters = [p for p in self.adapters.parameters() if p.requires_grad]
        target = [p for p in self.target.parameters() if p.requires_grad]
        if self.adapter_lr is None and self.adapter_base_width is None:
            return [{"params": target + adapters}]
        if self.adapter_base_width is None:
            return [{"params": target}, {"params": adapters, "lr": self.adapter_lr}]
        groups = [{"params": target}]
        for adapter, in_dim in zip(self.adapters, self.source.tower.mlp.in_dims, strict=True):
            group: dict = {"params": [p for p in adapter.parameters() if p.requires_grad],
                           "lr_scale": self.adapter_base_width / in_dim}
            if self.adapter_lr is not None:
                group["lr"] = self.adapter_lr
            groups.append(group)
        return groups

    @torch.no_grad()
    def source_states(self, batch: Batch) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The source tower on the batch's source view: (``[z_s^0 = E_s, ..., z_s^{n-1}]``, the
        SIM/ETA output [B, 2 * attn_dim] the target tower shares, or None without ``share_attention``)."""
        source_batch = self.source_view(batch)
        shared = self.source.long_attention(source_batch) if self.share_attention else None
        # g_l reads z_s^l for l = 0..n-1: the source's last layer and logit are never run
        return self.source.tower.mlp.layer_inputs(self.source.features(source_batch, shared)), shared

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits [B] of the target tower."""
        source_inputs, shared = self.source_states(batch)
        adds = [adapter(z) for adapter, z in zip(self.adapters, source_inputs, strict=True)]
        logits, _ = self.target.head(self.target.features(batch, shared), adds)
        return logits
