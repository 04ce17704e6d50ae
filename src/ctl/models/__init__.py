"""Models: plain ``nn.Module``s mapping a batch to logits; blocks live in ``ctl.models.blocks``."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ctl.data.schema import Schema


def build_model(net: DictConfig, schema: Schema) -> torch.nn.Module:
    """Instantiate a ``net`` config (``_target_`` + args) for ``schema``.

    The schema is passed as the object itself: handing it to Hydra as a kwarg would turn it into
    a config node.
    """
    from hydra.utils import instantiate

    return instantiate(net, _partial_=True)(schema=schema)
