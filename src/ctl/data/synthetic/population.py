"""A population of synthetic worlds around one world: the target domains' knobs drawn by world index.

``world=<i>`` (``ctl train``, ``experiment=world_population``) replaces the world of ``data`` by
world ``i`` of its population: :func:`draw_world` draws, from a stream seeded by ``i`` alone, each
target domain's knobs from the ranges of :data:`TARGET_RANGES` around the configured value, the
world-level knobs of :data:`WORLD_RANGES`, and the generator's seed. The source domain keeps its
description (only the generator seed moves its draws), so the population asks how CTNet fares
over the targets it may meet, not over other sources.

A range is ``(kind, low, high)``: ``scale`` multiplies the configured value by a factor drawn
log-uniformly from [low, high]; ``shift`` adds a uniform draw from [low, high]; ``uniform``
replaces the value by a uniform draw from [low, high]. Counts are rounded (rows to whole requests of ``items_per_request``); shares are clipped to
their valid range.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import cast

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from ctl.errors import CtlError

#: per target domain: the knob, how it is drawn, and its range (module docstring)
TARGET_RANGES: dict[str, tuple[str, float, float]] = {
    # volume: a quarter to 1.4 times the rows of a period
    "rows_per_period": ("scale", 0.25, 1.4),
    # offsets and biases: how far the target's users and items are from the source's
    "user_offset_scale": ("scale", 0.5, 1.5),
    "item_bias_scale": ("scale", 0.5, 1.5),
    # their persistence a period: from still (1) to a half-life of ~4 periods (0.85)
    "offset_persistence": ("uniform", 0.85, 1.0),
    # click-driver weights
    "affinity_weight": ("scale", 0.7, 1.4),
    "recent_weight": ("scale", 0.6, 1.6),
    "trend_weight": ("scale", 0.6, 1.6),
    "quality_weight": ("shift", -0.4, 0.4),
    "price_weight": ("shift", -0.4, 0.4),
    # how new the items a target shows are
    "recent_item_share": ("scale", 0.5, 1.5),
}
#: world-level knobs (they move the source domain too)
WORLD_RANGES: dict[str, tuple[str, float, float]] = {
    "interest_drift": ("uniform", 0.03, 0.25),
    "n_categories": ("scale", 0.5, 1.5),
}
_COUNTS = ("rows_per_period", "n_categories")
_SHARES = ("recent_item_share", "offset_persistence")
#: the generator seed of world i: far from the seeds the named worlds use
SEED_BASE = 10_000


def _draw(rng: np.random.Generator, kind: str, low: float, high: float, value: float) -> float:
    if kind == "scale":
        return value * math.exp(rng.uniform(math.log(low), math.log(high)))
    if kind == "shift":
        return value + rng.uniform(low, high)
    return float(rng.uniform(low, high))


def _fit(name: str, value: float, unit: int = 1) -> float | int:
    if name in _COUNTS:
        # rows come in whole requests of ``unit`` impressions
        return max(unit, unit * round(value / unit))
    if name in _SHARES:
        return float(min(1.0, max(0.0, value)))
    return round(float(value), 6)


def draw_world(generator: Mapping, source: str, index: int) -> dict:
    """World ``index`` of the population around ``generator`` (a ``data.generator`` mapping whose
    domains include ``source``): the overrides of its knobs (``seed``, world-level knobs, and per target
    domain under ``domains``). The same index always draws the same world."""
    if index < 0:
        raise CtlError(f"world={index}: a world index is >= 0")
    domains = generator.get("domains") or {}
    if source not in domains:
        raise CtlError(f"world={index}: data.generator.domains has no source domain {source}")
    request = int(generator.get("items_per_request", 1))
    rng = np.random.default_rng([SEED_BASE, index])
    drawn: dict = {"seed": SEED_BASE + index, "domains": {}}
    for name, (kind, low, high) in WORLD_RANGES.items():
        drawn[name] = _fit(name, _draw(rng, kind, low, high, float(generator.get(name, 0.0))))
    for domain in sorted(d for d in domains if d != source):
        spec = domains[domain]
        drawn["domains"][domain] = {
            name: _fit(name, _draw(rng, kind, low, high, float(spec.get(name, 1.0 if name == "offset_persistence"
                                                                         else 0.0))), request)
            for name, (kind, low, high) in TARGET_RANGES.items()}
    return drawn


def knobs_of(drawn: Mapping) -> dict[str, float | int]:
    """The drawn knobs flat (``B.rows_per_period``, ``interest_drift``, ...), for a table."""
    flat = {k: v for k, v in drawn.items() if k != "domains"}
    for domain, knobs in drawn.get("domains", {}).items():
        flat.update({f"{domain}.{k}": v for k, v in knobs.items()})
    return flat


def with_world(cfg: DictConfig) -> DictConfig:
    """``cfg`` (a composed ``train`` config) with its ``data.generator`` replaced by world ``cfg.world`` of
    its population; ``cfg`` itself where ``world`` is null. Refuses ``world`` on imported data."""
    index = cfg.get("world")
    if index is None:
        return cfg
    generator = cfg.data.get("generator")
    if generator is None:
        raise CtlError(f"world={index}: data={cfg.data.get('name')} has no generator; a population of worlds "
                       "is drawn around a synthetic world (data=synthetic, ...)")
    plain = cast(dict, OmegaConf.to_container(generator, resolve=True))  # a generator config is a mapping
    drawn = copy.deepcopy(cfg)
    with open_dict(drawn):  # a drawn knob may be one the world's config leaves at its default
        drawn.data.generator = OmegaConf.merge(drawn.data.generator,
                                               draw_world(plain, str(plain["source"]), int(index)))
    return drawn
