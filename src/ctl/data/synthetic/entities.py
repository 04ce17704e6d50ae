"""The static side of the synthetic world: categories, sellers, items and users.

Arrays are indexed by id, so row 0 (the "absent" id) is a dummy entry that is never sampled.
Items and users come in cohorts: cohort 0 is the catalogue / user base that exists before period
0, cohort ``p + 1`` is what launches / arrives in period ``p``. Each cohort (and each domain's view
of it) draws from its own stream, so the ids and attributes of early cohorts do not depend on how
many periods follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ctl.data.synthetic.pools import Urn
from ctl.data.synthetic.streams import stream

#: Launch period of the initial catalogue (and arrival period of the initial users): long before 0.
BEFORE_START = -(1 << 20)
#: Share of an item's (standardised) log price explained by its category.
PRICE_CATEGORY_SHARE = 0.6
#: Integer popularity weights (urn copies) of the least popular category / seller / average item.
POPULARITY_UNITS = 4


def _zipf_urn(n: int, exponent: float, rng: np.random.Generator) -> Urn:
    """Ids 1..n with Zipf popularity ``(n / rank)**exponent`` (in units), ranks in random order."""
    ranks = rng.permutation(n) + 1
    weights = np.rint(POPULARITY_UNITS * (n / ranks) ** exponent).astype(np.int64)
    return Urn(np.arange(1, n + 1), weights)


@dataclass(frozen=True)
class Categories:
    """``centroid [K+1, D]`` (items sit near it), ``popularity`` (an urn of ids 1..K),
    ``price_level [K+1]``."""

    centroid: np.ndarray
    popularity: Urn
    price_level: np.ndarray

    @classmethod
    def draw(cls, seed: int, n_categories: int, latent_dim: int, popularity_zipf: float) -> Categories:
        rng = stream(seed, "categories", 0)
        centroid = rng.normal(0.0, 1.0 / np.sqrt(latent_dim), size=(n_categories + 1, latent_dim))
        centroid[0] = 0.0
        popularity = _zipf_urn(n_categories, popularity_zipf, rng)
        price_level = np.concatenate([[0.0], rng.normal(size=n_categories)])
        return cls(centroid=centroid, popularity=popularity, price_level=price_level)


@dataclass(frozen=True)
class Sellers:
    """``effect [S+1]`` (a seller's logit shift, shared by domains) and ``popularity`` (urn of 1..S)."""

    effect: np.ndarray
    popularity: Urn

    @classmethod
    def draw(cls, seed: int, n_sellers: int, effect_scale: float, popularity_zipf: float) -> Sellers:
        rng = stream(seed, "sellers", 0)
        effect = np.concatenate([[0.0], rng.normal(0.0, effect_scale, size=n_sellers)])
        return cls(effect=effect, popularity=_zipf_urn(n_sellers, popularity_zipf, rng))


@dataclass(frozen=True)
class ItemCohort:
    """Items launched together. Shared attributes ``[N]`` / ``[N, D]``; per-domain ``[n_domains, N]``."""

    category: np.ndarray
    seller: np.ndarray
    latent: np.ndarray
    quality: np.ndarray
    popularity: np.ndarray
    price: np.ndarray
    launch: np.ndarray
    in_domain: np.ndarray
    domain_bias: np.ndarray

    @classmethod
    def draw(
        cls,
        seed: int,
        cohort: int,
        count: int,
        categories: Categories,
        sellers: Sellers,
        item_spread: float,
        popularity_scale: float,
        item_shares: Sequence[float],
        bias_scales: Sequence[float],
        domain_names: Sequence[str],
    ) -> ItemCohort:
        rng = stream(seed, "items", cohort)
        latent_dim = categories.centroid.shape[1]
        category = categories.popularity.sample(rng.random(count))
        seller = sellers.popularity.sample(rng.random(count))
        latent = categories.centroid[category] + rng.normal(
            0.0, item_spread / np.sqrt(latent_dim), (count, latent_dim)
        )
        # float32 latents: the per-row gathers and dot products are memory-bound.
        latent = latent.astype(np.float32)
        quality = rng.normal(size=count)
        popularity = np.maximum(
            1, np.rint(POPULARITY_UNITS * rng.lognormal(0.0, popularity_scale, size=count))
        )
        popularity = popularity.astype(np.int64)
        price = np.sqrt(PRICE_CATEGORY_SHARE) * categories.price_level[category] + np.sqrt(
            1.0 - PRICE_CATEGORY_SHARE
        ) * rng.normal(size=count)
        in_domain = np.empty((len(domain_names), count), dtype=bool)
        domain_bias = np.empty((len(domain_names), count))
        for d, name in enumerate(domain_names):
            domain_rng = stream(seed, f"items/{name}", cohort)
            in_domain[d] = domain_rng.random(count) < item_shares[d]
            domain_bias[d] = domain_rng.normal(0.0, bias_scales[d], size=count)
        launch = np.full(count, BEFORE_START if cohort == 0 else cohort - 1, dtype=np.int64)
        return cls(category, seller, latent, quality, popularity, price, launch, in_domain, domain_bias)


def _dormant_categories(
    interest: np.ndarray, categories: Categories, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` categories per user ``[N, count]``, uniformly (niche categories as often as popular
    ones: a popular category would fill every user's recent events anyway), distinct from each
    other and from the user's ``interest [N, k]`` where the vocabulary allows (else the first
    draws are kept)."""
    n_users, n_categories = interest.shape[0], categories.price_level.shape[0] - 1
    tries = 4 * count + interest.shape[1]
    drawn = rng.integers(1, n_categories + 1, size=(n_users, tries))
    repeated = (drawn[:, :, None] == drawn[:, None, :]) & np.tri(tries, k=-1, dtype=bool)[None]
    usable = ~repeated.any(axis=2) & ~(drawn[:, :, None] == interest[:, None, :]).any(axis=2)
    first_usable = np.argsort(~usable, axis=1, kind="stable")[:, :count]
    return np.take_along_axis(drawn, first_usable, axis=1)


@dataclass(frozen=True)
class UserCohort:
    """Users arriving together. ``interest``/``interest_cum`` ``[N, k]`` (categories and cumulative
    mixing weights), ``dormant [N, k_d]`` (long-term interest categories, see
    :mod:`ctl.data.synthetic.behaviour`), ``latent [N, D]``, ``activity``/``activity_z``/``bias
    [N]``; per domain ``in_domain [n_domains, N]`` and ``offset [n_domains, N, D]``."""

    interest: np.ndarray
    interest_cum: np.ndarray
    dormant: np.ndarray
    latent: np.ndarray
    activity: np.ndarray
    activity_z: np.ndarray
    bias: np.ndarray
    arrival: np.ndarray
    in_domain: np.ndarray
    offset: np.ndarray

    @classmethod
    def draw(
        cls,
        seed: int,
        cohort: int,
        count: int,
        categories: Categories,
        interests_per_user: int,
        dormant_interests_per_user: int,
        user_spread: float,
        activity_scale: float,
        activity_click_weight: float,
        user_bias_scale: float,
        user_shares: Sequence[float],
        offset_scales: Sequence[float],
        domain_names: Sequence[str],
    ) -> UserCohort:
        rng = stream(seed, "users", cohort)
        latent_dim = categories.centroid.shape[1]
        interest = categories.popularity.sample(rng.random(count * interests_per_user)).reshape(
            count, interests_per_user
        )
        mix = rng.dirichlet(np.ones(interests_per_user), size=count)
        latent = np.einsum("uk,ukd->ud", mix, categories.centroid[interest]) + rng.normal(
            0.0, user_spread / np.sqrt(latent_dim), (count, latent_dim)
        )
        latent = latent.astype(np.float32)
        activity_z = rng.normal(size=count)
        bias = activity_click_weight * activity_z + rng.normal(0.0, user_bias_scale, size=count)
        in_domain = np.empty((len(domain_names), count), dtype=bool)
        offset = np.empty((len(domain_names), count, latent_dim), dtype=np.float32)
        for d, name in enumerate(domain_names):
            domain_rng = stream(seed, f"users/{name}", cohort)
            in_domain[d] = domain_rng.random(count) < user_shares[d]
            offset[d] = domain_rng.normal(0.0, offset_scales[d] / np.sqrt(latent_dim), (count, latent_dim))
        arrival = np.full(count, BEFORE_START if cohort == 0 else cohort - 1, dtype=np.int64)
        # Its own stream: the long-term interests leave every other draw of the cohort as it was.
        dormant = _dormant_categories(
            interest, categories, dormant_interests_per_user, stream(seed, "users/dormant", cohort)
        )
        return cls(
            interest=interest,
            interest_cum=np.cumsum(mix, axis=1),
            dormant=dormant,
            latent=latent,
            activity=np.exp(activity_scale * activity_z),
            activity_z=activity_z,
            bias=bias,
            arrival=arrival,
            in_domain=in_domain,
            offset=offset,
        )


Cohort = TypeVar("Cohort", ItemCohort, UserCohort)


def stack_cohorts(cohorts: Sequence[Cohort], axis_of: dict[str, int]) -> Cohort:
    """Concatenate cohorts field by field along each field's entity axis, with a dummy id-0 entry
    (zeros: in no domain, so never sampled) in front; entity ``i`` of the result has id ``i``.
    ``axis_of`` names the fields whose entity axis is not 0."""
    first = cohorts[0]
    stacked = {}
    for name in first.__dataclass_fields__:
        axis = axis_of.get(name, 0)
        parts = [getattr(c, name) for c in cohorts]
        pad_shape = list(parts[0].shape)
        pad_shape[axis] = 1
        stacked[name] = np.concatenate([np.zeros(pad_shape, dtype=parts[0].dtype)] + parts, axis=axis)
    return type(first)(**stacked)
