"""Models: plain ``nn.Module``s mapping a batch to logits; blocks live in ``ctl.models.blocks``."""

from __future__ import annotations

from typing import cast

import torch
from omegaconf import DictConfig

from ctl.data.schema import Schema


def build_model(net: DictConfig | dict, schema: Schema, key: str = "model.net") -> torch.nn.Module:
    """Build a ``net`` config (``_target_`` + args) for ``schema``, from ctl's own classes only
    (:mod:`ctl.models.registry`); ``key`` names the config in refusals."""
    from ctl.models.registry import build_from_config

    # The registry's classes that take a schema are all modules (BackboneConfig takes none: refused).
    return cast(torch.nn.Module, build_from_config(net, key, schema=schema))
