"""Shared test data: a small random dataset that passes validation; the check of a run's test metrics;
the check for Lightning's chatter.

``make_random_dataset`` is a plain function so tests anywhere can call it
(``from conftest import make_random_dataset``); ``tiny_dataset_path`` is the fixture form.
``known_noise`` finds Lightning's known chatter in a command's output.
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ctl import quiet
from ctl.data.dataset import Dataset, write_dataset
from ctl.data.schema import Feature, Schema
from ctl.metrics import auc, gauc, logloss


def pytest_configure(config) -> None:
    # in-process runs as `ctl` runs them, so the warnings summary shows only what is worth reading
    quiet.install()


RANDOM_DOMAINS: tuple[str, ...] = ("A", "B", "C")
#: Timestamps per period: period p covers ts in [p * PERIOD_TICKS, (p+1) * PERIOD_TICKS).
PERIOD_TICKS = 1000


def random_schema(
    n_users: int, n_items: int, n_categories: int, n_sellers: int, short_len: int, long_len: int
) -> Schema:
    """Domains A (source), B, C; H=3, T=2; one bucket feature everywhere and one source-only feature."""
    every = RANDOM_DOMAINS
    features = (
        Feature("user_id", "categorical", n_users + 1, 8, every),
        Feature("item_id", "categorical", n_items + 1, 8, every),
        Feature("category_id", "categorical", n_categories + 1, 4, every),
        Feature("seller_id", "categorical", n_sellers + 1, 4, every),
        Feature("price_bucket", "bucket", 6, 4, every),
        Feature("source_only", "categorical", 5, 4, ("A",)),
    )
    return Schema(
        features=features,
        domains=RANDOM_DOMAINS,
        source="A",
        n_history=3,
        n_transfer=2,
        short_len=short_len,
        long_len=long_len,
        description="random test dataset",
    )


def random_columns(
    n_users: int = 50,
    n_items: int = 80,
    n_rows: int = 600,
    seed: int = 0,
    n_events: int = 1500,
    short_len: int = 4,
    long_len: int = 8,
) -> tuple[Schema, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Schema, row columns and history columns of a valid random dataset (rows in no particular order).

    Users click items in every domain (A most often); a row's ``hist_end`` counts its user's
    events strictly before the row's ``ts``; every (domain, period) cell has rows.
    """
    rng = np.random.default_rng(seed)
    n_categories, n_sellers = 7, 9
    schema = random_schema(n_users, n_items, n_categories, n_sellers, short_len, long_len)
    n_ticks = schema.n_periods * PERIOD_TICKS
    item_category = rng.integers(1, n_categories + 1, size=n_items + 1)
    item_seller = rng.integers(1, n_sellers + 1, size=n_items + 1)
    domain_share = np.array([0.5, 0.3, 0.2])

    event_user = rng.integers(1, n_users + 1, size=n_events)
    event_ts = rng.integers(0, n_ticks, size=n_events)
    order = np.lexsort((event_ts, event_user))
    event_user, event_ts = event_user[order], event_ts[order]
    event_item = rng.integers(1, n_items + 1, size=n_events)
    history = {
        "user_id": event_user,
        "item_id": event_item,
        "category_id": item_category[event_item],
        "domain": rng.choice(3, size=n_events, p=domain_share),
        "ts": event_ts,
    }

    # Cover every (domain, period) cell once, then draw the rest at random.
    cells = np.arange(3 * schema.n_periods)
    cell_domain = np.concatenate([cells % 3, rng.choice(3, size=n_rows - cells.size, p=domain_share)])
    cell_period = np.concatenate([cells // 3, rng.integers(0, schema.n_periods, size=n_rows - cells.size)])
    ts = cell_period * PERIOD_TICKS + rng.integers(0, PERIOD_TICKS, size=n_rows)
    user = rng.integers(1, n_users + 1, size=n_rows)
    item = rng.integers(1, n_items + 1, size=n_rows)
    # Events of user u occupy a contiguous run; those before ts are visible.
    user_start = np.searchsorted(event_user, user, side="left")
    hist_end = np.searchsorted(event_user * n_ticks + event_ts, user * n_ticks + ts, side="left") - user_start
    rows = {
        "user_id": user,
        "item_id": item,
        "category_id": item_category[item],
        "seller_id": item_seller[item],
        "price_bucket": rng.integers(1, 6, size=n_rows),
        "source_only": np.where(cell_domain == 0, rng.integers(1, 5, size=n_rows), 0),
        "domain": cell_domain,
        "period": cell_period,
        "ts": ts,
        "label": (rng.random(n_rows) < 0.3).astype(np.int64),
        "hist_end": hist_end,
    }
    return schema, rows, history


def make_random_dataset(
    tmp_path: Path,
    n_users: int = 50,
    n_items: int = 80,
    n_rows: int = 600,
    seed: int = 0,
    n_events: int = 1500,
    short_len: int = 4,
    long_len: int = 8,
    name: str = "random_dataset",
) -> Path:
    """Write the dataset of :func:`random_columns` under ``tmp_path / name`` and return its path."""
    schema, rows, history = random_columns(n_users, n_items, n_rows, seed, n_events, short_len, long_len)
    provenance = {"generator": "tests.conftest.make_random_dataset", "seed": seed}
    return write_dataset(tmp_path / name, schema, rows, history, provenance)


_GLOBAL_SEEDS = itertools.count(1000)


def scramble_global_generators() -> None:
    """Reseed Python's, numpy's and torch's global generators with a value never used before.

    Call it before each of two runs that must agree: they then agree through their own seeds,
    not through drawing from the same global state.
    """
    seed = next(_GLOBAL_SEEDS)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def assert_test_metrics_are_the_predictions(run_dir: Path, metrics: dict, dataset: Dataset) -> None:
    """A run's test metrics are those of the predictions it saved, one for every row of the target's test slice.

    AUC is compared when the slice holds both classes, GAUC when some user's rows do (else it is NaN).
    """
    saved = pq.read_table(run_dir / "predictions.parquet").to_pydict()
    test = metrics["test"]
    expected_rows = dataset.select([metrics["target"]], [test["period"]])
    np.testing.assert_array_equal(np.sort(saved["row"]), expected_rows)
    np.testing.assert_array_equal(saved["label"], dataset.rows["label"][saved["row"]])
    preds, labels, users = (np.asarray(saved[key]) for key in ("pred", "label", "user_id"))
    assert test["rows"] == expected_rows.size
    assert test["logloss"] == pytest.approx(logloss(preds, labels), abs=1e-4)
    if 0 < labels.sum() < labels.size:
        assert test["auc"] == pytest.approx(auc(preds, labels), abs=1e-6)
    both = [u for u in np.unique(users) if 0 < labels[users == u].sum() < (users == u).sum()]
    if both:
        assert test["gauc"] == pytest.approx(gauc(preds, labels, users), abs=1e-6)
    else:
        assert math.isnan(test["gauc"])


@pytest.fixture
def tiny_dataset_path(tmp_path: Path) -> Path:
    return make_random_dataset(tmp_path)


#: words of Lightning's known chatter, spelled independently of :data:`ctl.quiet.NOISE` so that a
#: pattern there that no longer matches its message is caught too
NOISE_WORDS: tuple[str, ...] = ("LeafSpec", "litlogger", "log_every_n_steps", "weights_only", "in eval mode",
                                "GPU available", "TPU available", "`Trainer", "sync_dist", "distributed_backend",
                                "Initializing distributed")


def known_noise(output: str) -> list[str]:
    """The entries of :data:`ctl.quiet.NOISE` and of :data:`NOISE_WORDS` found in a command's output."""
    import re

    from ctl.quiet import NOISE

    found = [noise.message for noise in NOISE if re.search(noise.message, output)]
    return found + [word for word in NOISE_WORDS if word in output]
