"""The small hand-made schema and backbone the model tests build their random batches on."""

from __future__ import annotations

import dataclasses

from ctl.data.schema import Feature, Schema
from ctl.models.backbone import BackboneConfig

DOMAINS = ("A", "B", "C")
SHORT_LEN = 5
LONG_LEN = 12
SIM_LEN = 4


def make_schema() -> Schema:
    features = (
        Feature("user_id", "categorical", 30, 4, DOMAINS),
        Feature("item_id", "categorical", 25, 4, DOMAINS),
        Feature("category_id", "categorical", 4, 4, DOMAINS),
        Feature("seller_id", "categorical", 10, 4, DOMAINS),
        Feature("price_bucket", "bucket", 6, 4, DOMAINS),
        Feature("a_only", "categorical", 5, 4, ("A",)),
    )
    return Schema(
        features=features,
        domains=DOMAINS,
        source="A",
        n_history=2,
        n_transfer=2,
        short_len=SHORT_LEN,
        long_len=LONG_LEN,
        sim_len=SIM_LEN,
    )


def small_backbone(**changes: object) -> BackboneConfig:
    config = BackboneConfig(
        embed_dim=4, mlp_dims=(16, 8), num_heads=2, attn_dim=8, sim_k=3, eta_k=3, eta_bits=8, eta_seed=0
    )
    return dataclasses.replace(config, **changes)
