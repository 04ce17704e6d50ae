"""Metric figures: exact GAUC at production scale against a per-user Python loop."""

from __future__ import annotations

import itertools
import time

import numpy as np

from bench import Figure
from ctl.metrics import auc, gauc

FULL_ROWS, FULL_USERS = 10_000_000, 1_000_000
QUICK_ROWS, QUICK_USERS = 1_000_000, 100_000
LOOP_ROWS = 100_000
GAUC_BUDGET_SECONDS = 3.0


def random_clicks(n_rows: int, n_users: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 predictions on a 1e-3 grid (many ties), 30% clicks, uniform users."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, size=n_rows)
    preds = np.round(rng.random(n_rows), 3).astype(np.float32)
    labels = (rng.random(n_rows) < 0.3).astype(np.int64)
    return preds, labels, users


def per_user_loop_gauc(preds: np.ndarray, labels: np.ndarray, users: np.ndarray) -> float:
    """The straightforward implementation: group rows by user, one ``auc`` call per user."""
    order = np.argsort(users, kind="stable")
    _, starts = np.unique(users[order], return_index=True)
    weighted_sum, weight = 0.0, 0
    for first, end in itertools.pairwise([*starts, len(order)]):
        rows = order[first:end]
        user_labels = labels[rows]
        if user_labels.min() == user_labels.max():
            continue
        weighted_sum += len(rows) * auc(preds[rows], user_labels)
        weight += len(rows)
    return weighted_sum / weight


def gauc_10m(quick: bool) -> Figure:
    """Seconds for GAUC over 10M rows / 1M users (quick: 1M / 100k), with the loop's extrapolation."""
    n_rows, n_users = (QUICK_ROWS, QUICK_USERS) if quick else (FULL_ROWS, FULL_USERS)
    preds, labels, users = random_clicks(n_rows, n_users, seed=0)

    # the loop runs on the users with the lowest ids: same rows per user as the full set
    subset = users < n_users * LOOP_ROWS // n_rows
    started = time.perf_counter()
    loop_value = per_user_loop_gauc(preds[subset], labels[subset], users[subset])
    loop_seconds = time.perf_counter() - started
    loop_rows = int(subset.sum())
    loop_extrapolated = loop_seconds * n_rows / loop_rows
    subset_gap = abs(loop_value - gauc(preds[subset], labels[subset], users[subset]))

    def measure() -> float:
        started = time.perf_counter()
        gauc(preds, labels, users)
        return time.perf_counter() - started

    def describe(median: float) -> dict[str, object]:
        return {
            "rows": n_rows,
            "users": n_users,
            "budget_seconds": GAUC_BUDGET_SECONDS,
            "loop_rows": loop_rows,
            "loop_seconds": loop_seconds,
            "loop_seconds_extrapolated": loop_extrapolated,
            "speedup_vs_loop": loop_extrapolated / median,
            "loop_abs_diff": subset_gap,
        }

    return Figure(measure=measure, unit="s", describe=describe)


FIGURES = {"gauc_10m": gauc_10m}
