"""The period loop of the synthetic world: impressions, clicks, behaviour histories.

Before period 0 every user present has a pre-history of behaviour events. Per period: user
interests random-walk, the category trend moves, every user logs the period's behaviour events
(:mod:`ctl.data.synthetic.behaviour`) and every domain draws its impressions (requests of
``items_per_request`` items for one user at one time). Clicks are drawn in ``chunks_per_period``
time slices; after each slice every user's *recent-behaviour summary* (an exponential moving
average, one step per event in time order, of the latents of the items of their events: behaviour
events and clicks, in any domain) absorbs that slice's events, so recent behaviour raises the click
probability of similar items later on, which a model can only see through the behaviour sequence.
The history is every behaviour event and every click.

The test slice keeps every row's true click probability (:attr:`WorldSample.click_prob`), read
off the logits the clicks were drawn from: no random draw is added, so every other column is the
same with or without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import cast

import numpy as np
from rich.progress import Progress

from ctl.data.synthetic.behaviour import BehaviourLog, Events
from ctl.data.synthetic.entities import Categories, ItemCohort, Sellers, UserCohort, stack_cohorts
from ctl.data.synthetic.parameters import WorldParameters
from ctl.data.synthetic.pools import CategoryPool
from ctl.data.synthetic.streams import stream

SECONDS_PER_HOUR = 3600
HOURS_PER_DAY = 24


@dataclass(frozen=True)
class WorldSample:
    """A generated world before it is written.

    ``rows``/``history``: the dataset columns (see :func:`ctl.data.dataset.write_dataset`), rows
    ordered by (period, domain, ts). ``item_launch [n_items + 1]``/``user_arrival [n_users + 1]``:
    launch/arrival period per id (:data:`~ctl.data.synthetic.entities.BEFORE_START` for the
    initial ones). With logits requested, ``oracle_logit [n_rows]`` is each row's true click
    logit without the click noise, and ``source_view_logit [n_rows]`` the logit the same
    impression would have under the source domain's click model (its weights, offsets and biases;
    no source-only feature); both None otherwise. ``click_prob [n_rows]`` is the true click
    probability of each row of the test slice (:func:`marginal_click_prob` of its logit), NaN on
    the rows of every other period.
    """

    rows: dict[str, np.ndarray]
    history: dict[str, np.ndarray]
    item_launch: np.ndarray
    user_arrival: np.ndarray
    oracle_logit: np.ndarray | None
    source_view_logit: np.ndarray | None
    click_prob: np.ndarray


def _bucketise(z: np.ndarray, n_buckets: int) -> np.ndarray:
    """Ids 1..n_buckets of standard-normal values ``z``, by equal-probability normal quantiles."""
    edges = np.array([NormalDist().inv_cdf(q / n_buckets) for q in range(1, n_buckets)])
    return np.searchsorted(edges, z, side="right").astype(np.int64) + 1


def _rowwise_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, D] x [N, D] -> [N]``."""
    return np.einsum("nd,nd->n", a, b)


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct values of sorted ``values [N]`` with the first index and length of each run
    (``np.unique``'s, without sorting again)."""
    first = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return values[first], first, np.diff(np.append(first, values.size))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


#: Gauss-Hermite nodes of :func:`marginal_click_prob`: within 1e-12 of the integral for noise std up to 1
_HERMITE_NODES = 32


def marginal_click_prob(logit: np.ndarray, noise_std: float) -> np.ndarray:
    """``E[sigmoid(logit + noise)]`` with ``noise ~ N(0, noise_std^2)``, per row. ``[N] -> [N]``

    The per-impression noise is independent of everything a model could know, so the click
    probability of a row given the whole state of the world is this average over it (Gauss-Hermite
    quadrature, no random draw). It is increasing in ``logit``: it ranks rows as the logit does.
    """
    logit = np.asarray(logit, dtype=np.float64)
    if noise_std == 0.0:
        return _sigmoid(logit)
    nodes, weights = np.polynomial.hermite.hermgauss(_HERMITE_NODES)
    # E f(x + s Z) = sum_i w_i f(x + s sqrt(2) t_i) / sqrt(pi) for the physicists' nodes t_i
    shifted = logit[:, None] + noise_std * np.sqrt(2.0) * nodes[None, :]
    return _sigmoid(shifted) @ weights / np.sqrt(np.pi)


@dataclass
class _Block:
    """The impressions of one domain in one period, sorted by ts. Arrays ``[N]``.

    The first group is the block's output; ``static_logit`` .. ``uniform`` are working arrays of
    the period, dropped by :meth:`finish`.
    """

    domain: int
    period: int
    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    hour: np.ndarray
    scene: np.ndarray
    label: np.ndarray
    hist_end: np.ndarray
    oracle_logit: np.ndarray | None
    source_view_logit: np.ndarray | None
    static_logit: np.ndarray | None
    source_static_logit: np.ndarray | None
    noise: np.ndarray | None
    uniform: np.ndarray | None

    def finish(self) -> None:
        self.static_logit = self.source_static_logit = self.noise = self.uniform = None


class Simulation:
    """Runs one world (:class:`~ctl.data.synthetic.world.SyntheticWorld`) from period 0 to its test slice."""

    def __init__(self, world: WorldParameters) -> None:
        self.world = w = world
        self.names = tuple(w.domains)
        self.specs = tuple(w.domains[name] for name in self.names)
        self.source = self.names.index(w.source)
        self.categories = Categories.draw(w.seed, w.n_categories, w.latent_dim, w.popularity_zipf)
        self.sellers = Sellers.draw(w.seed, w.n_sellers, w.seller_effect_scale, w.popularity_zipf)
        item_cohorts = [
            ItemCohort.draw(
                w.seed,
                cohort,
                w.n_items if cohort == 0 else w.new_items_per_period,
                self.categories,
                self.sellers,
                w.item_spread,
                w.item_popularity_scale,
                [s.item_share for s in self.specs],
                [s.item_bias_scale for s in self.specs],
                self.names,
            )
            for cohort in range(w.n_periods + 1)
        ]
        self.items = stack_cohorts(item_cohorts, {"in_domain": 1, "domain_bias": 1})
        user_cohorts = [
            UserCohort.draw(
                w.seed,
                cohort,
                w.n_users if cohort == 0 else w.new_users_per_period,
                self.categories,
                w.interests_per_user,
                w.dormant_interests_per_user,
                w.user_spread,
                w.activity_scale,
                w.activity_click_weight,
                w.user_bias_scale,
                [s.user_share for s in self.specs],
                [s.user_offset_scale for s in self.specs],
                self.names,
            )
            for cohort in range(w.n_periods + 1)
        ]
        self.users = stack_cohorts(user_cohorts, {"in_domain": 1, "offset": 1})
        self.scene_effect = np.concatenate(
            [[0.0], stream(w.seed, "scenes", 0).normal(0.0, w.scene_effect_scale, size=w.n_scenes)]
        )
        hour_phase = 2.0 * np.pi * (np.arange(HOURS_PER_DAY + 1) - 1) / HOURS_PER_DAY
        self.hour_effect = np.stack(
            [
                s.hour_amplitude * np.cos(hour_phase - 2.0 * np.pi * s.hour_peak / HOURS_PER_DAY)
                for s in self.specs
            ]
        )
        self.price_bucket = _bucketise(self.items.price, w.n_price_buckets)
        self.activity_bucket = _bucketise(self.users.activity_z, w.n_activity_buckets)
        # The moving state: drifting interests (and each domain's view of them, interest + offset),
        # recent-behaviour summaries, category trend, events so far per user (for hist_end).
        self.interest = self.users.latent.copy()
        self.domain_interest = self.users.offset + self.interest[None]
        self.recent = np.zeros_like(self.interest)
        self.trend = np.zeros(w.n_categories + 1)
        self.events_so_far = np.zeros(self.interest.shape[0], dtype=np.int64)
        self.behaviour = BehaviourLog(self)
        self.logged: list[Events] = []  # the behaviour events so far, pre-history first
        # Every ts lies in [-prehistory_seconds, span - prehistory_seconds): user * span +
        # prehistory_seconds + ts orders events by (user, ts).
        self.prehistory_seconds = np.int64(w.prehistory_periods * w.period_seconds)
        self.span = np.int64((w.prehistory_periods + w.n_periods) * w.period_seconds)

    # --- state updates ------------------------------------------------------------------------

    def _advance(self, period: int) -> None:
        """Move interests and the category trend into ``period``."""
        w = self.world
        rng = stream(w.seed, "trend", period)
        if period == 0:
            stationary = w.trend_scale / np.sqrt(1.0 - w.trend_persistence**2)
            self.trend[1:] = rng.normal(0.0, stationary, size=w.n_categories)
            return
        self.trend[1:] = w.trend_persistence * self.trend[1:] + rng.normal(0.0, w.trend_scale, w.n_categories)
        # Users who arrived before this period drift; their count does not depend on later periods.
        present = w.n_users + w.new_users_per_period * period
        step = stream(w.seed, "drift", period).normal(
            0.0, w.interest_drift / np.sqrt(w.latent_dim), size=(present, w.latent_dim)
        )
        self.interest[1 : present + 1] += step.astype(np.float32)
        self._age_domain_state(period, present, w.n_items + w.new_items_per_period * period)
        self.domain_interest = self.users.offset + self.interest[None]

    def _age_domain_state(self, period: int, users: int, items: int) -> None:
        """One AR(1) step of each domain's user offsets and item biases (``offset_persistence``),
        for the users and items that exist before ``period``; keeps their spread."""
        w = self.world
        for d, (name, spec) in enumerate(zip(self.names, self.specs, strict=True)):
            rho = spec.offset_persistence
            if rho == 1.0:
                continue
            rng = stream(w.seed, f"domain_drift/{name}", period)
            fresh = np.sqrt(1.0 - rho**2)
            offset = self.users.offset[d, 1 : users + 1]
            offset *= rho
            offset += (fresh * spec.user_offset_scale / np.sqrt(w.latent_dim)) * rng.normal(
                size=offset.shape
            ).astype(np.float32)
            bias = self.items.domain_bias[d, 1 : items + 1]
            bias *= rho
            bias += fresh * spec.item_bias_scale * rng.normal(size=bias.shape)

    def _absorb_events(self, user: np.ndarray, item: np.ndarray, ts: np.ndarray) -> None:
        """Fold events into their users' recent-behaviour summaries: an EMA that keeps
        ``recent_decay`` of itself per event, the events of a user taken in ts order."""
        decay = self.world.recent_decay
        if user.size == 0 or decay == 1.0:
            return
        order = np.argsort(user * self.span + (ts + self.prehistory_seconds), kind="stable")
        user = user[order]
        users, first, count = _runs(user)
        # Weight of each event in its user's new summary: (1 - decay) decay^(events after it); events
        # further back than the horizon weigh under 1e-9 and are left out.
        horizon = 1 if decay == 0.0 else int(np.ceil(np.log(1e-9) / np.log(decay)))
        after = np.repeat(first + count, count) - 1 - np.arange(user.size)
        kept = np.flatnonzero(after < horizon)  # each user's last min(count, horizon) events, in order
        weight = ((1.0 - decay) * decay ** np.arange(horizon)).astype(np.float32)[after[kept]]
        starts = np.concatenate([[0], np.cumsum(np.minimum(count, horizon))[:-1]])
        fresh = np.add.reduceat(self.items.latent[item[order[kept]]] * weight[:, None], starts, axis=0)
        keep = (decay**count).astype(np.float32)[:, None]
        self.recent[users] = keep * self.recent[users] + fresh

    def _count_visible_events(
        self, slices: list[tuple[_Block, int, int]], event_user: np.ndarray, event_ts: np.ndarray
    ) -> None:
        """Set ``hist_end`` of one time slice's rows: the user's events before the slice plus their
        events inside it strictly before the row's ts; then count the slice's events in."""
        keys = np.sort(event_user * self.span + event_ts)
        active_users, first, count = _runs(keys // self.span)
        first_in_slice = np.full(self.events_so_far.size, -1, dtype=np.int64)
        first_in_slice[active_users] = first
        for block, lo, hi in slices:
            user = block.user[lo:hi]
            hist_end = self.events_so_far[user]
            # Only rows of users with events in this slice need a search.
            start = first_in_slice[user]
            busy = np.flatnonzero(start >= 0)
            query = user[busy] * self.span + block.ts[lo:hi][busy]
            hist_end[busy] += np.searchsorted(keys, query, side="left") - start[busy]
            block.hist_end[lo:hi] = hist_end
        self.events_so_far[active_users] += count

    # --- impressions --------------------------------------------------------------------------

    def _pools(self, domain: int, period: int) -> tuple[CategoryPool | None, CategoryPool | None]:
        """(old, recent) item pools of ``domain`` in ``period``; None where a pool is empty."""
        launch = self.items.launch
        available = self.items.in_domain[domain] & (launch <= period)
        is_recent = launch > period - self.world.recent_periods
        pools = []
        for mask in (available & ~is_recent, available & is_recent):
            ids = np.flatnonzero(mask)
            pools.append(
                CategoryPool(
                    ids, self.items.category[ids], self.items.popularity[ids], self.world.n_categories
                )
                if ids.size
                else None
            )
        return pools[0], pools[1]

    def _draw_block(self, domain: int, period: int, n_rows: int, with_logits: bool, keep_oracle: bool) -> _Block:
        w = self.world
        spec, name = self.specs[domain], self.names[domain]
        rng = stream(w.seed, f"impressions/{name}", period)
        n_requests = n_rows // w.items_per_request

        eligible = np.flatnonzero(self.users.in_domain[domain] & (self.users.arrival <= period))
        if eligible.size == 0:
            raise ValueError(
                f"domain {name!r} has no users in period {period}; raise its user_share or n_users"
            )
        cum_activity = np.cumsum(self.users.activity[eligible])
        pick = np.searchsorted(cum_activity, rng.random(n_requests) * cum_activity[-1], side="right")
        request_user = eligible[np.minimum(pick, eligible.size - 1)]
        request_ts = period * w.period_seconds + rng.integers(0, w.period_seconds, size=n_requests)
        request_scene = (
            rng.integers(1, w.n_scenes + 1, size=n_requests)
            if domain == self.source
            else np.zeros(n_requests, np.int64)
        )
        order = np.argsort(request_ts, kind="stable")
        user = np.repeat(request_user[order], w.items_per_request)
        ts = np.repeat(request_ts[order], w.items_per_request)
        scene = np.repeat(request_scene[order], w.items_per_request)
        hour = (ts // SECONDS_PER_HOUR) % HOURS_PER_DAY + 1

        # Candidate retrieval: a category from the user's interests or from overall popularity,
        # then an item of it from the recent or the old pool.
        old_pool, recent_pool = self._pools(domain, period)
        if old_pool is None and recent_pool is None:
            raise ValueError(
                f"domain {name!r} has no items in period {period}; raise its item_share or n_items"
            )
        wants_recent = rng.random(n_rows) < spec.recent_item_share
        if recent_pool is None:
            wants_recent[:] = False
        elif old_pool is None:
            wants_recent[:] = True
        from_interest = rng.random(n_rows) < w.interest_share
        slot = (rng.random(n_rows)[:, None] >= self.users.interest_cum[user]).sum(axis=1)
        interest_category = self.users.interest[user, np.minimum(slot, w.interests_per_user - 1)]
        popular_category = self.categories.popularity.sample(rng.random(n_rows))
        category = np.where(from_interest, interest_category, popular_category)
        if w.dormant_interests_per_user:
            # Retrieval also surfaces long-term interests (its own stream: the draws above stay).
            dormant_rng = stream(w.seed, f"impressions/dormant/{name}", period)
            from_dormant = dormant_rng.random(n_rows) < w.dormant_impression_share
            pick = dormant_rng.integers(0, w.dormant_interests_per_user, size=n_rows)
            category = np.where(from_dormant, self.users.dormant[user, pick], category)
        item_uniform = rng.random(n_rows)
        item = np.empty(n_rows, dtype=np.int64)
        for pool, mask in ((recent_pool, wants_recent), (old_pool, ~wants_recent)):
            if mask.any():
                assert pool is not None  # a missing pool's rows were all sent to the other one above
                item[mask] = pool.sample(category[mask], item_uniform[mask])

        click_rng = stream(w.seed, f"clicks/{name}", period)
        return _Block(
            domain=domain,
            period=period,
            user=user,
            item=item,
            ts=ts,
            hour=hour,
            scene=scene,
            label=np.zeros(n_rows, dtype=np.int8),
            hist_end=np.zeros(n_rows, dtype=np.int32),
            oracle_logit=np.zeros(n_rows) if with_logits or keep_oracle else None,
            source_view_logit=np.zeros(n_rows) if with_logits else None,
            static_logit=self._static_logit(domain, user, item, hour, scene),
            source_static_logit=self._static_logit(self.source, user, item, hour, None)
            if with_logits
            else None,
            noise=click_rng.normal(0.0, w.click_noise, size=n_rows),
            uniform=click_rng.random(n_rows),
        )

    def _item_logit(self, domain: int) -> np.ndarray:
        """The item-only logit terms of ``domain`` this period, for every item. ``[n_items + 1]``"""
        spec, items = self.specs[domain], self.items
        return (
            spec.trend_weight * self.trend[items.category]
            + spec.quality_weight * items.quality
            + spec.price_weight * items.price
            + items.domain_bias[domain]
            + self.sellers.effect[items.seller]
        )

    def _static_logit(
        self, domain: int, user: np.ndarray, item: np.ndarray, hour: np.ndarray, scene: np.ndarray | None
    ) -> np.ndarray:
        """Every logit term of ``domain``'s click model except recent behaviour and noise. ``[N]``

        ``scene`` None leaves out the source-only feature's effect.
        """
        spec = self.specs[domain]
        # Item terms are summed per item first: one gather per row instead of five.
        logit = (
            spec.intercept
            + spec.affinity_weight * _rowwise_dot(self.domain_interest[domain][user], self.items.latent[item])
            + self._item_logit(domain)[item]
            + self.users.bias[user]
            + self.hour_effect[domain][hour]
        )
        if scene is not None and domain == self.source:
            logit += self.scene_effect[scene]
        if self.world.dormant_interests_per_user:
            dormant = (self.users.dormant[user] == self.items.category[item][:, None]).any(axis=1)
            logit += self.world.dormant_weight * dormant
        return logit

    def _click_slice(self, block: _Block, lo: int, hi: int) -> np.ndarray:
        """Draw the labels of ``block[lo:hi]`` under the current recent-behaviour summaries;
        returns the click mask ``[hi - lo]``."""
        static_logit, noise, uniform = block.static_logit, block.noise, block.uniform
        # drawn with the block and cleared by finish(), after its last slice
        assert static_logit is not None and noise is not None and uniform is not None
        user, item = block.user[lo:hi], block.item[lo:hi]
        recent_affinity = _rowwise_dot(self.recent[user], self.items.latent[item])
        logit = static_logit[lo:hi] + self.specs[block.domain].recent_weight * recent_affinity
        if block.oracle_logit is not None:
            block.oracle_logit[lo:hi] = logit
        if block.source_view_logit is not None:
            assert block.source_static_logit is not None  # drawn with source_view_logit (with_logits)
            block.source_view_logit[lo:hi] = (
                block.source_static_logit[lo:hi] + self.specs[self.source].recent_weight * recent_affinity
            )
        clicked = uniform[lo:hi] < _sigmoid(logit + noise[lo:hi])
        block.label[lo:hi] = clicked
        return clicked

    # --- the loop -----------------------------------------------------------------------------

    def _run_period(self, period: int, with_logits: bool) -> list[_Block]:
        w = self.world
        self._advance(period)
        is_test = period == w.n_periods - 1
        blocks = [
            self._draw_block(d, period, spec.test_rows if is_test else spec.rows_per_period, with_logits,
                             keep_oracle=is_test)
            for d, spec in enumerate(self.specs)
        ]
        behaviour = self.behaviour.period(period)
        self.logged.append(behaviour)
        edges = (
            period * w.period_seconds
            + (np.arange(w.chunks_per_period + 1) * w.period_seconds) // w.chunks_per_period
        )
        for chunk in range(w.chunks_per_period):
            logged = behaviour.between(int(edges[chunk]), int(edges[chunk + 1]))
            # The slice's events: its behaviour events and its clicks.
            slices, event_user, event_item, event_ts = [], [logged.user], [logged.item], [logged.ts]
            for block in blocks:
                lo, hi = (int(x) for x in np.searchsorted(block.ts, edges[chunk : chunk + 2], side="left"))
                clicked = self._click_slice(block, lo, hi)
                slices.append((block, lo, hi))
                event_user.append(block.user[lo:hi][clicked])
                event_item.append(block.item[lo:hi][clicked])
                event_ts.append(block.ts[lo:hi][clicked])
            user, ts = np.concatenate(event_user), np.concatenate(event_ts)
            self._count_visible_events(slices, user, ts)
            self._absorb_events(user, np.concatenate(event_item), ts)
        for block in blocks:
            block.finish()
        return blocks

    def run(self, progress: bool, with_logits: bool) -> WorldSample:
        blocks: list[_Block] = []
        before = self.behaviour.prehistory()
        self.logged.append(before)
        self.events_so_far += np.bincount(before.user, minlength=self.events_so_far.size)
        self._absorb_events(before.user, before.item, before.ts)
        with Progress(disable=not progress) as bar:
            task = bar.add_task("synthetic world: periods", total=self.world.n_periods)
            for period in range(self.world.n_periods):
                blocks.extend(self._run_period(period, with_logits))
                bar.advance(task)
        return self._assemble(blocks, with_logits)

    def _assemble(self, blocks: list[_Block], with_logits: bool) -> WorldSample:
        items = self.items

        def joined(field: str) -> np.ndarray:
            return np.concatenate([getattr(b, field) for b in blocks])

        user, item, ts, label = joined("user"), joined("item"), joined("ts"), joined("label")
        domain = np.concatenate([np.full(b.user.size, b.domain, dtype=np.int8) for b in blocks])
        period = np.concatenate([np.full(b.user.size, b.period, dtype=np.int16) for b in blocks])
        test_period = self.world.n_periods - 1
        click_prob = np.concatenate([
            # the test period's blocks keep their oracle logits (keep_oracle)
            marginal_click_prob(cast(np.ndarray, b.oracle_logit), self.world.click_noise)
            if b.period == test_period
            else np.full(b.user.size, np.nan)
            for b in blocks
        ])
        clicked = np.flatnonzero(label)
        logged = self.logged
        event_user = np.concatenate([e.user for e in logged] + [user[clicked]])
        event_ts = np.concatenate([e.ts for e in logged] + [ts[clicked]])
        # Stable: simultaneous events of a user keep their order (behaviour before clicks, the
        # clicks in the (period, domain, ts) order of the rows).
        events = np.argsort(event_user * self.span + (event_ts + self.prehistory_seconds), kind="stable")
        event_item = np.concatenate([e.item for e in logged] + [item[clicked]])[events]
        history = {
            "user_id": event_user[events],
            "item_id": event_item,
            "category_id": items.category[event_item],
            "domain": np.concatenate([e.domain for e in logged] + [domain[clicked]])[events],
            "ts": event_ts[events],
        }
        del event_user, event_ts
        rows = {
            "user_id": user,
            "item_id": item,
            "category_id": items.category[item],
            "seller_id": items.seller[item],
            "price_bucket": self.price_bucket[item],
            "activity_bucket": self.activity_bucket[user],
            "hour": joined("hour"),
            "scene_id": joined("scene"),
            "domain": domain,
            "period": period,
            "ts": ts,
            "label": label,
            "hist_end": joined("hist_end"),
        }
        return WorldSample(
            rows=rows,
            history=history,
            item_launch=items.launch,
            user_arrival=self.users.arrival,
            oracle_logit=joined("oracle_logit") if with_logits else None,
            source_view_logit=joined("source_view_logit") if with_logits else None,
            click_prob=click_prob,
        )
