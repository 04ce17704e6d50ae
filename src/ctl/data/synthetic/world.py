"""The built-in synthetic continual cross-domain world: its knobs, its schema, and `generate`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ctl.data.dataset import ROWS_FILE, add_click_prob, write_dataset
from ctl.data.schema import Feature, Schema
from ctl.data.synthetic.parameters import WorldParameters
from ctl.data.synthetic.simulation import HOURS_PER_DAY, Simulation, WorldSample
from ctl.data.synthetic.version import GENERATOR_VERSION

#: the columns that must agree before a re-simulated world's click probabilities join a stored dataset
_IDENTITY_COLUMNS = ("user_id", "item_id", "domain", "period", "ts", "label")

log = logging.getLogger(__name__)


class SyntheticWorld(WorldParameters):
    """Users, items and three domains that drift over ``H + T + 1`` periods; clicks from mechanisms.

    Users (each interested in a few categories) and items (near their category's centroid, with a
    seller, a quality and a price) are shared by every domain; each domain adds its own per-user
    latent offset, per-item bias and click-driver weights (:class:`DomainSpec`). Interests
    random-walk between periods, a category trend moves (AR(1)), new items launch and new users
    arrive every period. A click is ``Bernoulli(sigmoid(logit + noise))`` with the logit of
    :class:`DomainSpec` plus the user's affinity to their own recent behaviour and a bonus for
    items of one of their dormant (long-term) interest categories. The behaviour history is every
    user's lifelong log across domains (:mod:`ctl.data.synthetic.behaviour`): a pre-history before
    period 0 and behaviour events during the periods (browses and clicks that are not rows), then
    the clicks of the rows; the rows are a small sample of it. Only the source domain carries
    ``scene_id``.

    The long-term signal: each user has ``dormant_interests_per_user`` categories outside their
    current interests that made up ``dormant_past_share`` of their pre-history and recur in only
    ``dormant_recur_share`` of their later events, so they seldom appear among the last few dozen
    events; retrieval shows them in ``dormant_impression_share`` of the impressions and the click
    logit adds ``dormant_weight`` for an item of such a category (every domain alike). Only the
    user's older events of that category reveal it, as the SIM and UBR4CTR papers describe
    lifelong interests (periodic or long-ago interests that a short recent window misses).

    Every part draws from its own seeded stream (:mod:`ctl.data.synthetic.streams`), so the same
    arguments give byte-identical datasets and changing one part's size leaves the others' draws.

    Args:
        seed: world seed (>= 0).
        n_history, n_transfer: ``H`` history and ``T`` transfer periods; the test slice is ``H+T``.
        domains: name -> :class:`DomainSpec` (or a mapping of its fields, as a YAML config gives
            it), in domain-index order; None for :func:`default_domains`.
        source: the source domain's name.
        n_users, n_items: users and catalogue items that exist before period 0.
        new_users_per_period, new_items_per_period: arrivals and launches in every period.
        n_categories, n_sellers: vocabulary of the two grouping ids.
        latent_dim: dimension D of user and item latents.
        interests_per_user: categories mixed into a user's interest.
        interest_share: fraction of impressions (and of behaviour events) from the user's
            interest categories (the rest follow category popularity).
        dormant_interests_per_user: long-term interest categories of a user, distinct from their
            current interests where the vocabulary allows; 0 turns the long-term signal off.
        dormant_past_share, dormant_recur_share: fraction of a user's behaviour events in their
            dormant categories before period 0 and during the periods.
        dormant_impression_share: fraction of impressions retrieved from the dormant categories.
        dormant_weight: click logit added for an item of one of the user's dormant categories.
        events_per_period: behaviour events a period of a user of activity 1 (the median).
        event_activity_exponent: a user's events scale as ``activity ** event_activity_exponent``
            (above 1: heavier-tailed than their share of requests).
        prehistory_periods: periods of behaviour logged before period 0 by the users present then.
        user_spread, item_spread: norm of a user's (item's) deviation from its categories' mix
            (category centroid); centroids have norm about 1.
        item_popularity_scale: sigma of the log-normal item popularity (impression share).
        popularity_zipf: Zipf exponent of category and seller popularity.
        activity_scale: sigma of the log-normal user activity (share of requests).
        activity_click_weight: logit per standard deviation of log activity (active users click more).
        user_bias_scale, seller_effect_scale: std of the shared per-user and per-seller logit shifts.
        interest_drift: norm of a user's interest step between periods.
        trend_persistence, trend_scale: AR(1) coefficient and innovation std of the category trend.
        recent_decay: weight the recent-behaviour summary keeps per new event (behaviour or click).
        recent_periods: items launched in the last this-many periods count as recent.
        items_per_request: impressions shown together (one user, one ts); every domain's
            ``rows_per_period`` and ``test_rows`` must be a multiple of it.
        chunks_per_period: time slices per period after which recent-behaviour summaries update.
        click_noise: std of the per-impression logit noise (unobservable).
        n_scenes, scene_effect_scale: values and effect std of the source-only ``scene_id``.
        n_price_buckets, n_activity_buckets: buckets of the two bucketised numericals.
        period_seconds: length of a period (ts is in seconds from the start of period 0).
        short_len, long_len: schema sequence lengths: L, the last events in the row's domain; M,
            the last events across domains that a window (ETA) scans. No cap: SIM searches the
            whole visible history whatever M is.
        id_embedding_dim, side_embedding_dim: schema embedding dims of the id features and of the rest.

    Example::

        world = SyntheticWorld(seed=0, n_history=4, n_transfer=2)
        path = world.generate(Path("/tmp/world"), progress=False)
    """

    def schema(self) -> Schema:
        """The dataset's features: ids, two bucketised numericals, the hour, the source-only scene."""
        every = tuple(self.domains)
        ids, side = self.id_embedding_dim, self.side_embedding_dim
        features = (
            Feature("user_id", "categorical", self.total_users + 1, ids, every),
            Feature("item_id", "categorical", self.total_items + 1, ids, every),
            Feature("category_id", "categorical", self.n_categories + 1, ids, every),
            Feature("seller_id", "categorical", self.n_sellers + 1, ids, every),
            Feature("price_bucket", "bucket", self.n_price_buckets + 1, side, every),
            Feature("activity_bucket", "bucket", self.n_activity_buckets + 1, side, every),
            Feature("hour", "categorical", HOURS_PER_DAY + 1, side, every),
            Feature("scene_id", "categorical", self.n_scenes + 1, side, (self.source,)),
        )
        return Schema(
            features=features,
            domains=every,
            source=self.source,
            n_history=self.n_history,
            n_transfer=self.n_transfer,
            short_len=self.short_len,
            long_len=self.long_len,
            description=(
                f"synthetic continual cross-domain world (seed {self.seed}): source {self.source}, "
                f"targets {[d for d in every if d != self.source]}"
            ),
            extra={"period_seconds": self.period_seconds},
        )

    # --- generation ----------------------------------------------------------------------------

    def simulate(self, progress: bool = False, with_logits: bool = False) -> WorldSample:
        """Run the world and return its columns unwritten; ``with_logits`` adds the true click
        logits (for sanity checks of the world itself)."""
        return Simulation(self).run(progress=progress, with_logits=with_logits)

    def generate(self, out_dir: Path, progress: bool = True) -> Path:
        """Write the dataset folder ``out_dir`` (which must not exist yet) and return it.

        Besides the rows and histories it holds ``oracle.parquet``: the true click probability of
        every row of the test slice (see :mod:`ctl.data.dataset`).
        """
        sample = self.simulate(progress=progress)
        provenance = {
            "generator": f"{type(self).__module__}.{type(self).__qualname__}",
            "version": GENERATOR_VERSION,
            "config": self.config(),
        }
        return write_dataset(Path(out_dir), self.schema(), sample.rows, sample.history, provenance,
                             click_prob=sample.click_prob)

    def add_oracle(self, path: Path, progress: bool = False) -> bool:
        """Give the dataset ``path``, generated by this world before datasets kept their test
        slice's click probabilities, its ``oracle.parquet``; True if written.

        The world is simulated again (generation is deterministic) and the probabilities are
        written only if the stored rows are exactly the simulated ones; otherwise (a dataset of
        another generator version) nothing is written and False returned.
        """
        sample = self.simulate(progress=progress)
        stored = pq.read_table(Path(path) / ROWS_FILE, columns=list(_IDENTITY_COLUMNS))
        same = stored.num_rows == sample.rows["label"].shape[0] and all(
            np.array_equal(stored.column(name).to_numpy(), sample.rows[name]) for name in _IDENTITY_COLUMNS
        )
        if not same:
            log.warning("%s: its rows are not the ones this world generates (another generator version?); "
                        "it gets no oracle.parquet", path)
            return False
        add_click_prob(path, sample.click_prob)
        return True
