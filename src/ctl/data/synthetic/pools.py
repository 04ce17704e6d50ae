"""Drawing ids by integer weight, overall or within a category, with arithmetic only.

Weights are integers ("copies"), so a weighted draw is a uniform draw from an urn that holds id
``i`` ``weight[i]`` times: one multiply and one gather per draw, where an inverse-CDF draw would
binary-search every row.
"""

from __future__ import annotations

import numpy as np


def _check_weights(name: str, ids: np.ndarray, weights: np.ndarray) -> None:
    if ids.size == 0:
        raise ValueError(f"{name}: the pool is empty")
    if ids.shape != weights.shape:
        raise ValueError(f"{name}: ids {ids.shape} and weights {weights.shape} must have one shape")
    if weights.dtype.kind not in "iu" or weights.min() < 1:
        raise ValueError(
            f"{name}: weights must be integers >= 1, got dtype {weights.dtype}, min {weights.min()}"
        )


class Urn:
    """Draws ``ids`` with probability proportional to their integer ``weights`` (both ``[N]``)."""

    def __init__(self, ids: np.ndarray, weights: np.ndarray) -> None:
        _check_weights("Urn", ids, weights)
        self.slots = np.repeat(ids, weights)

    def sample(self, uniforms: np.ndarray) -> np.ndarray:
        """Ids ``[B]`` from ``uniforms [B]`` in [0, 1)."""
        # min(): a uniform just below 1 can round the product up to the size.
        return self.slots[np.minimum((uniforms * self.slots.size).astype(np.int64), self.slots.size - 1)]


class CategoryPool:
    """Items drawn as "an item of category c, by popularity", vectorised.

    The urn is sorted by category, so category ``c`` owns the slot range ``start[c] .. end[c]``;
    a category without items in the pool falls back to the whole pool.

    Args:
        items: int ``[N]`` item ids (N >= 1).
        categories: int ``[N]`` their categories, in ``[0, n_categories]``.
        popularity: int ``[N]`` weights >= 1.
        n_categories: largest category id.
    """

    def __init__(
        self, items: np.ndarray, categories: np.ndarray, popularity: np.ndarray, n_categories: int
    ) -> None:
        _check_weights("CategoryPool", items, popularity)
        if categories.shape != items.shape:
            raise ValueError(
                f"CategoryPool: items {items.shape} and categories {categories.shape} must have one shape"
            )
        order = np.lexsort((items, categories))
        self.slots = np.repeat(items[order], popularity[order])
        slot_category = np.repeat(categories[order], popularity[order])
        every = np.arange(n_categories + 1)
        self.start = np.searchsorted(slot_category, every, side="left")
        self.end = np.searchsorted(slot_category, every, side="right")
        empty = self.end == self.start
        self.start[empty] = 0
        self.end[empty] = self.slots.size

    def sample(self, categories: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """Item ids ``[B]``, one per requested category ``[B]``, using ``uniforms [B]`` in [0, 1)."""
        start = self.start[categories]
        width = self.end[categories] - start
        return self.slots[start + np.minimum((uniforms * width).astype(np.int64), width - 1)]
