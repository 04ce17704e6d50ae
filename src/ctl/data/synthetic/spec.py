"""How one domain of the synthetic world differs from the others: traffic, catalogue, click drivers."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class DomainSpec:
    """Traffic and click model of one domain.

    The click logit of user ``u`` seeing item ``i`` in this domain at hour ``h`` is::

        intercept + affinity_weight * <interest_u + offset_u, latent_i>
                  + recent_weight * <recent_u, latent_i> + trend_weight * trend[category_i]
                  + quality_weight * quality_i + price_weight * price_i + bias_i
                  + hour_amplitude * cos(2 pi (h - hour_peak) / 24) + (shared user and seller terms)

    where ``offset_u`` (std ``user_offset_scale``) and ``bias_i`` (std ``item_bias_scale``) belong
    to this domain only. Different weights across domains make the click drivers differ; the
    offsets and biases make users and items behave differently while staying shared.

    Args:
        rows_per_period: impressions in each history and transfer period.
        test_rows: impressions in the test slice (period ``H+T``); larger than a training period
            so that the test GAUC is stable.
        user_share: fraction of the users who visit this domain at all.
        item_share: fraction of the catalogue (old and new items alike) this domain can show.
        recent_item_share: fraction of impressions on items launched in the last
            ``recent_periods`` periods (the rest go to older items).
        offset_persistence: how much of its user offsets and item biases this domain keeps from
            one period to the next (an AR(1) step ``x <- rho x + sqrt(1 - rho^2) eps`` that keeps
            their spread): 1 never changes them; below 1 old logs of the domain age, so a model
            trained on all of them gains little over one trained on the recent ones.
    """

    rows_per_period: int
    test_rows: int
    user_share: float
    item_share: float
    recent_item_share: float
    intercept: float
    affinity_weight: float
    recent_weight: float
    quality_weight: float
    trend_weight: float
    price_weight: float
    user_offset_scale: float
    item_bias_scale: float
    hour_amplitude: float
    hour_peak: float
    offset_persistence: float = 1.0

    def __post_init__(self) -> None:
        for name in ("rows_per_period", "test_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"DomainSpec.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("user_share", "item_share"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"DomainSpec.{name} must lie in (0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.recent_item_share <= 1.0:
            raise ValueError(f"DomainSpec.recent_item_share must lie in [0, 1], got {self.recent_item_share}")
        for name in ("user_offset_scale", "item_bias_scale", "hour_amplitude"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"DomainSpec.{name} must be >= 0, got {getattr(self, name)}")

        if not 0.0 <= self.offset_persistence <= 1.0:
            raise ValueError(
                f"DomainSpec.offset_persistence must lie in [0, 1], got {self.offset_persistence}"
            )

    def to_dict(self) -> dict:
        """Plain values, for provenance. ``offset_persistence`` only when it moves anything, so
        worlds made before it existed keep their provenance and fingerprint."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.offset_persistence == 1.0:
            del values["offset_persistence"]
        return values
