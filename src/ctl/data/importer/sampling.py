"""Negative sampling for implicit feedback: unclicked items of the same domain and period.

Each positive gets ``per_positive`` items drawn uniformly (with replacement) from the distinct
items of its cell (its domain and period), redrawing any item the user has a positive event with.
A draw that still hits one of the user's items after :data:`MAX_ROUNDS` rounds (the user has
touched most of a tiny pool) is left out and counted, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ROUNDS = 32


@dataclass(frozen=True)
class Negatives:
    """Sampled negatives: the positive each copies its row from, its item ``[m]``, and draws given up."""

    positive: np.ndarray
    item: np.ndarray
    unavailable: int


def _contains(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    index = np.searchsorted(sorted_keys, queries)
    index = np.minimum(index, sorted_keys.shape[0] - 1)
    return sorted_keys[index] == queries


def sample_negatives(
    user: np.ndarray,
    item: np.ndarray,
    cell: np.ndarray,
    seen: np.ndarray,
    n_items: int,
    per_positive: int,
    seed: int,
) -> Negatives:
    """Draw negatives for positives with ``user``, ``item``, ``cell`` (int64 ``[n]``).

    Args:
        seen: sorted unique ``user * n_items + item`` keys of every positive event (any period):
            items a user has touched are never their negatives.
        n_items: the item vocabulary (every item id is below it).
        per_positive: negatives per positive.
        seed: the generator seed; the same inputs and seed give the same negatives.
    """
    if not (user.shape == item.shape == cell.shape):
        raise ValueError(f"sample_negatives: user {user.shape}, item {item.shape} and cell {cell.shape} differ")
    rng = np.random.default_rng(seed)
    pool = np.unique(cell * n_items + item)
    pool_cell, pool_item = pool // n_items, pool % n_items
    n_cells = int(cell.max()) + 1
    cell_start = np.searchsorted(pool_cell, np.arange(n_cells))
    cell_size = np.bincount(pool_cell, minlength=n_cells)
    owner = np.repeat(np.arange(user.shape[0], dtype=np.int64), per_positive)
    chosen = np.zeros(owner.shape[0], dtype=np.int64)
    pending = np.arange(owner.shape[0], dtype=np.int64)
    for _ in range(MAX_ROUNDS):
        cells = cell[owner[pending]]
        pick = cell_start[cells] + (rng.random(pending.shape[0]) * cell_size[cells]).astype(np.int64)
        chosen[pending] = pool_item[pick]
        pending = pending[_contains(seen, user[owner[pending]] * n_items + chosen[pending])]
        if pending.size == 0:
            break
    keep = np.ones(owner.shape[0], dtype=bool)
    keep[pending] = False
    return Negatives(owner[keep], chosen[keep], int(pending.size))
