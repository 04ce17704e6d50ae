"""The knobs of the synthetic world, checked: what the simulation reads and the dataset's provenance records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING
from typing import Any

from ctl.data.synthetic.spec import DomainSpec


def default_domains() -> dict[str, DomainSpec]:
    """A (source), B, C as in ``conf/data/synthetic.yaml``: well-trained targets, a real domain gap, C newer and sparser."""
    return {
        "A": DomainSpec(
            rows_per_period=60_000,
            test_rows=12_000,
            user_share=1.0,
            item_share=1.0,
            recent_item_share=0.1,
            intercept=-3.5,
            affinity_weight=1.5,
            recent_weight=0.8,
            quality_weight=0.5,
            trend_weight=1.0,
            price_weight=-0.1,
            user_offset_scale=0.0,
            item_bias_scale=0.3,
            hour_amplitude=0.2,
            hour_peak=20.0,
        ),
        "B": DomainSpec(
            rows_per_period=6_144,
            test_rows=48_000,
            user_share=0.2,
            item_share=0.4,
            recent_item_share=0.02,
            intercept=-3.2,
            affinity_weight=1.4,
            recent_weight=0.5,
            quality_weight=0.0,
            trend_weight=0.8,
            price_weight=0.2,
            user_offset_scale=1.2,
            item_bias_scale=0.8,
            hour_amplitude=0.2,
            hour_peak=12.0,
            offset_persistence=0.95,
        ),
        "C": DomainSpec(
            rows_per_period=2_040,
            test_rows=24_000,
            user_share=0.15,
            item_share=0.4,
            recent_item_share=0.4,
            intercept=-3.7,
            affinity_weight=1.4,
            recent_weight=1.1,
            quality_weight=0.2,
            trend_weight=1.2,
            price_weight=0.5,
            user_offset_scale=1.3,
            item_bias_scale=0.8,
            hour_amplitude=0.3,
            hour_peak=22.0,
            offset_persistence=0.95,
        ),
    }


def _as_domain_spec(name: str, spec: DomainSpec | Mapping[str, Any]) -> DomainSpec:
    if isinstance(spec, DomainSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"SyntheticWorld: domains.{name} must be a DomainSpec or a mapping, got {type(spec).__name__}"
        )
    expected = set(DomainSpec.__dataclass_fields__)
    optional = {name for name, f in DomainSpec.__dataclass_fields__.items() if f.default is not MISSING}
    unknown, missing = sorted(set(spec) - expected), sorted(expected - optional - set(spec))
    if unknown or missing:
        raise ValueError(
            f"SyntheticWorld: domains.{name} has unknown keys {unknown} and lacks keys {missing}"
        )
    return DomainSpec(**{key: spec[key] for key in expected & set(spec)})


class WorldParameters:
    """Every knob of a :class:`~ctl.data.synthetic.world.SyntheticWorld` (whose docstring says what
    each one does), checked on construction, and the sizes they imply."""

    def __init__(
        self,
        seed: int = 0,
        n_history: int = 24,
        n_transfer: int = 5,
        domains: Mapping[str, DomainSpec | Mapping[str, Any]] | None = None,
        source: str = "A",
        n_users: int = 12_000,
        new_users_per_period: int = 200,
        n_items: int = 8_000,
        new_items_per_period: int = 300,
        n_categories: int = 100,
        n_sellers: int = 1_000,
        latent_dim: int = 16,
        interests_per_user: int = 3,
        interest_share: float = 0.6,
        dormant_interests_per_user: int = 2,
        dormant_past_share: float = 0.3,
        dormant_recur_share: float = 0.002,
        dormant_impression_share: float = 0.1,
        dormant_weight: float = 0.8,
        events_per_period: float = 2.2,
        event_activity_exponent: float = 1.5,
        prehistory_periods: int = 30,
        user_spread: float = 0.5,
        item_spread: float = 0.6,
        item_popularity_scale: float = 1.0,
        popularity_zipf: float = 0.8,
        activity_scale: float = 1.0,
        activity_click_weight: float = 0.15,
        user_bias_scale: float = 0.3,
        seller_effect_scale: float = 0.2,
        interest_drift: float = 0.1,
        trend_persistence: float = 0.7,
        trend_scale: float = 0.3,
        recent_decay: float = 0.7,
        recent_periods: int = 2,
        items_per_request: int = 6,
        chunks_per_period: int = 6,
        click_noise: float = 0.3,
        n_scenes: int = 8,
        scene_effect_scale: float = 0.3,
        n_price_buckets: int = 10,
        n_activity_buckets: int = 10,
        period_seconds: int = 6 * 86_400,
        short_len: int = 10,
        long_len: int = 256,
        id_embedding_dim: int = 16,
        side_embedding_dim: int = 8,
    ) -> None:
        self.seed = int(seed)
        self.n_history = int(n_history)
        self.n_transfer = int(n_transfer)
        given = default_domains() if domains is None else domains
        self.domains: dict[str, DomainSpec] = {
            str(name): _as_domain_spec(str(name), spec) for name, spec in given.items()
        }
        self.source = str(source)
        self.n_users = int(n_users)
        self.new_users_per_period = int(new_users_per_period)
        self.n_items = int(n_items)
        self.new_items_per_period = int(new_items_per_period)
        self.n_categories = int(n_categories)
        self.n_sellers = int(n_sellers)
        self.latent_dim = int(latent_dim)
        self.interests_per_user = int(interests_per_user)
        self.interest_share = float(interest_share)
        self.dormant_interests_per_user = int(dormant_interests_per_user)
        self.dormant_past_share = float(dormant_past_share)
        self.dormant_recur_share = float(dormant_recur_share)
        self.dormant_impression_share = float(dormant_impression_share)
        self.dormant_weight = float(dormant_weight)
        self.events_per_period = float(events_per_period)
        self.event_activity_exponent = float(event_activity_exponent)
        self.prehistory_periods = int(prehistory_periods)
        self.user_spread = float(user_spread)
        self.item_spread = float(item_spread)
        self.item_popularity_scale = float(item_popularity_scale)
        self.popularity_zipf = float(popularity_zipf)
        self.activity_scale = float(activity_scale)
        self.activity_click_weight = float(activity_click_weight)
        self.user_bias_scale = float(user_bias_scale)
        self.seller_effect_scale = float(seller_effect_scale)
        self.interest_drift = float(interest_drift)
        self.trend_persistence = float(trend_persistence)
        self.trend_scale = float(trend_scale)
        self.recent_decay = float(recent_decay)
        self.recent_periods = int(recent_periods)
        self.items_per_request = int(items_per_request)
        self.chunks_per_period = int(chunks_per_period)
        self.click_noise = float(click_noise)
        self.n_scenes = int(n_scenes)
        self.scene_effect_scale = float(scene_effect_scale)
        self.n_price_buckets = int(n_price_buckets)
        self.n_activity_buckets = int(n_activity_buckets)
        self.period_seconds = int(period_seconds)
        self.short_len = int(short_len)
        self.long_len = int(long_len)
        self.id_embedding_dim = int(id_embedding_dim)
        self.side_embedding_dim = int(side_embedding_dim)
        self._check()

    def _check(self) -> None:
        if self.seed < 0:
            raise ValueError(f"SyntheticWorld: seed must be >= 0, got {self.seed}")
        if self.source not in self.domains:
            raise ValueError(
                f"SyntheticWorld: source {self.source!r} is not one of the domains {list(self.domains)}"
            )
        if len(self.domains) < 2:
            raise ValueError(
                f"SyntheticWorld: need a source and at least one target domain, got {list(self.domains)}"
            )
        at_least = {
            "n_history": 1,
            "n_transfer": 1,
            "n_users": 1,
            "n_items": 1,
            "new_users_per_period": 0,
            "new_items_per_period": 1,
            "n_categories": 1,
            "n_sellers": 1,
            "latent_dim": 1,
            "interests_per_user": 1,
            "dormant_interests_per_user": 0,
            "prehistory_periods": 0,
            "recent_periods": 1,
            "items_per_request": 1,
            "chunks_per_period": 1,
            "n_scenes": 1,
            "n_price_buckets": 2,
            "n_activity_buckets": 2,
            "period_seconds": 1,
            "short_len": 1,
            "long_len": 1,
            "id_embedding_dim": 1,
            "side_embedding_dim": 1,
        }
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"SyntheticWorld: {name} must be >= {low}, got {getattr(self, name)}")
        for name in ("interest_share", "recent_decay", "dormant_past_share", "dormant_recur_share",
                     "dormant_impression_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SyntheticWorld: {name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.trend_persistence < 1.0:
            raise ValueError(
                f"SyntheticWorld: trend_persistence must lie in [0, 1), got {self.trend_persistence}"
            )
        nonnegative = (
            "user_spread",
            "item_spread",
            "item_popularity_scale",
            "popularity_zipf",
            "activity_scale",
            "user_bias_scale",
            "seller_effect_scale",
            "interest_drift",
            "trend_scale",
            "click_noise",
            "scene_effect_scale",
            "events_per_period",
            "event_activity_exponent",
        )
        for name in nonnegative:
            if getattr(self, name) < 0.0:
                raise ValueError(f"SyntheticWorld: {name} must be >= 0, got {getattr(self, name)}")
        for name, spec in self.domains.items():
            for field in ("rows_per_period", "test_rows"):
                value = getattr(spec, field)
                if value % self.items_per_request:
                    raise ValueError(
                        f"SyntheticWorld: domains.{name}.{field}={value} is not a multiple of "
                        f"items_per_request={self.items_per_request}"
                    )

    # --- layout --------------------------------------------------------------------------------

    @property
    def n_periods(self) -> int:
        """History + transfer periods + the test slice."""
        return self.n_history + self.n_transfer + 1

    @property
    def total_users(self) -> int:
        """Users ever present (the user_id vocabulary is this + 1)."""
        return self.n_users + self.new_users_per_period * self.n_periods

    @property
    def total_items(self) -> int:
        """Items ever launched (the item_id vocabulary is this + 1)."""
        return self.n_items + self.new_items_per_period * self.n_periods

    def config(self) -> dict:
        """Every knob as plain values (the dataset's provenance)."""
        knobs = {name: value for name, value in vars(self).items() if name != "domains"}
        knobs["domains"] = {name: spec.to_dict() for name, spec in self.domains.items()}
        return knobs
