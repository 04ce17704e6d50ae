"""Every user's lifelong behaviour log: the browse and click events beyond the impressions that
become rows.

A user of activity ``a`` makes ``Poisson(events_per_period * a**event_activity_exponent)``
behaviour events a period, from their arrival on; users present before period 0 also carry a
pre-history of ``prehistory_periods`` periods (negative ts). The count is heavier-tailed than the
activity that picks the users of impressions (exponent > 1): the most active users log tens of
thousands of events while the median user logs a few dozen. Each event happens in one of the
domains the user visits, chosen by the domains' traffic (``rows_per_period``), at a uniform time
in its period.

An event's category is one of the user's *dormant* (long-term) interests with probability
``dormant_past_share`` in the pre-history and ``dormant_recur_share`` (small) during the periods;
otherwise one of their current interests (``interest_share``) or a category by popularity, as
impressions are drawn. Its item is drawn by popularity among the items of that category the domain
shows at the time (the initial catalogue in the pre-history). So a dormant interest fills the old
history and recurs rarely: the last few dozen events seldom hold it, a search of the user's older
events by category finds it. The click model rewards it (``dormant_weight``, see
:class:`~ctl.data.synthetic.world.SyntheticWorld`).

Every period's events draw from their own stream (``behaviour``, period), the pre-history from
``prehistory``: the log does not depend on the impressions, the clicks or the number of periods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ctl.data.synthetic.entities import BEFORE_START, Categories, ItemCohort, UserCohort
from ctl.data.synthetic.parameters import WorldParameters
from ctl.data.synthetic.pools import CategoryPool
from ctl.data.synthetic.spec import DomainSpec
from ctl.data.synthetic.streams import stream


@dataclass(frozen=True)
class Events:
    """Behaviour events sorted by ``ts``: ``user``, ``item``, ``domain``, ``ts``, all ``[N]``."""

    user: np.ndarray
    item: np.ndarray
    domain: np.ndarray
    ts: np.ndarray

    def between(self, start: int, stop: int) -> Events:
        """The events with ``start <= ts < stop``."""
        lo, hi = np.searchsorted(self.ts, [start, stop], side="left")
        return Events(self.user[lo:hi], self.item[lo:hi], self.domain[lo:hi], self.ts[lo:hi])


class SimulationState(Protocol):
    """What the behaviour log reads of its running :class:`~ctl.data.synthetic.simulation.Simulation`."""

    world: WorldParameters
    names: tuple[str, ...]
    specs: tuple[DomainSpec, ...]
    categories: Categories
    users: UserCohort
    items: ItemCohort


class BehaviourLog:
    """Draws the pre-history and each period's behaviour events of a running simulation."""

    def __init__(self, sim: SimulationState) -> None:
        self.sim = sim
        w = sim.world
        users = sim.users
        # Integer weights: an event's domain is one the user visits, exactly.
        traffic = np.array([spec.rows_per_period for spec in sim.specs], dtype=np.int64)
        self.domain_cum = np.cumsum(traffic[:, None] * users.in_domain, axis=0)  # [n_domains, n_users + 1]
        # Events a period of every user (0 for the dummy id 0 and for users in no domain).
        visits = self.domain_cum[-1] > 0
        self.rate = np.where(visits, w.events_per_period * users.activity**w.event_activity_exponent, 0.0)

    def prehistory(self) -> Events:
        """The events of the ``prehistory_periods`` periods before period 0, of the users present then."""
        w = self.world
        length = w.prehistory_periods * w.period_seconds
        present = self.sim.users.arrival == BEFORE_START
        rng = stream(w.seed, "prehistory", 0)
        return self._draw(rng, present, w.prehistory_periods, -length, length, w.dormant_past_share, -1)

    def period(self, period: int) -> Events:
        """The events of ``period``, of the users who have arrived by then."""
        w = self.world
        present = self.sim.users.arrival <= period
        rng = stream(w.seed, "behaviour", period)
        return self._draw(rng, present, 1, period * w.period_seconds, w.period_seconds, w.dormant_recur_share,
                          period)

    @property
    def world(self) -> WorldParameters:
        return self.sim.world

    def _draw(self, rng: np.random.Generator, present: np.ndarray, periods: int, start: int, length: int,
              dormant_share: float, catalogue_period: int) -> Events:
        w, users = self.world, self.sim.users
        counts = rng.poisson(self.rate * periods * present)
        user = np.repeat(np.arange(counts.size), counts)
        n = user.size
        cum = self.domain_cum[:, user]
        slot = (rng.random(n) * cum[-1]).astype(np.int64)
        domain = (slot[None, :] >= cum).sum(axis=0).astype(np.int8)
        del cum
        # Category: dormant interest, current interest, or popularity (the impressions' mix).
        kind = rng.random(n)
        slot = (rng.random(n)[:, None] >= users.interest_cum[user]).sum(axis=1)
        category = users.interest[user, np.minimum(slot, w.interests_per_user - 1)]
        popular = kind >= dormant_share + (1.0 - dormant_share) * w.interest_share
        category[popular] = self.sim.categories.popularity.sample(rng.random(int(popular.sum())))
        if w.dormant_interests_per_user:
            dormant = kind < dormant_share
            pick = rng.integers(0, w.dormant_interests_per_user, size=int(dormant.sum()))
            category[dormant] = users.dormant[user[dormant], pick]
        item = np.empty(n, dtype=np.int64)
        item_uniform = rng.random(n)
        for d in range(len(self.sim.specs)):
            mine = domain == d
            if mine.any():
                item[mine] = self._pool(d, catalogue_period).sample(category[mine], item_uniform[mine])
        ts = start + rng.integers(0, length, size=n)
        order = np.argsort(ts, kind="stable")
        return Events(user[order], item[order], domain[order], ts[order])

    def _pool(self, domain: int, period: int) -> CategoryPool:
        """Every item ``domain`` shows in ``period`` (-1: the catalogue before period 0), by popularity."""
        items = self.sim.items
        ids = np.flatnonzero(items.in_domain[domain] & (items.launch <= period))
        if ids.size == 0:
            name = self.sim.names[domain]
            raise ValueError(f"domain {name!r} has no items in period {period}; raise its item_share or n_items")
        return CategoryPool(ids, items.category[ids], items.popularity[ids], self.world.n_categories)
