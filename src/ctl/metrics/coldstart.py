"""Cold-start slices of a test set: rows of new vs old users and new vs old items (paper Table 5).

A user (item) is *new* when it does not occur in the reference rows, which for Table 5 are the
target domain's rows before the first transfer period ``t0``; every other test row is *old*.
:func:`cold_start_slices` gives one boolean mask (N,) per slice, :func:`slice_metrics` AUC and
GAUC on one slice, :func:`cold_start_gains` a model's gains over a reference model on every slice.

Example::

    known = target_rows_before_t0
    slices = cold_start_slices(test["user_id"], test["item_id"], known["user_id"], known["item_id"])
    gains = cold_start_gains(test["label"], test["pred"], base["pred"], test["user_id"], slices)
    gains["new users"]["auc_gain"]
"""

from __future__ import annotations

import numpy as np

from ctl.metrics.gauc import ArrayLike, auc, check_binary_inputs, gauc

#: Slice names in the order of the paper's Table 5.
COLD_START_SLICES: tuple[str, ...] = ("new users", "old users", "new items", "old items")


def unseen(ids: np.ndarray, known_ids: np.ndarray) -> np.ndarray:
    """(N,) bool: ``ids[i]`` does not occur in ``known_ids`` (any length, duplicates allowed)."""
    ids_np, known_np = np.asarray(ids), np.asarray(known_ids)
    if ids_np.ndim != 1 or known_np.ndim != 1:
        raise ValueError(f"ids and known_ids must be 1-D, got shapes {ids_np.shape} and {known_np.shape}")
    return np.isin(ids_np, np.unique(known_np), invert=True)


def cold_start_slices(
    users: np.ndarray, items: np.ndarray, known_users: np.ndarray, known_items: np.ndarray
) -> dict[str, np.ndarray]:
    """One (N,) bool mask per name of :data:`COLD_START_SLICES`.

    users, items: (N,) ids of the test rows; known_users, known_items: ids of the reference rows
    (the target domain before t0). "new users" and "old users" partition the rows, and so do the
    two item slices.
    """
    users_np, items_np = np.asarray(users), np.asarray(items)
    if users_np.shape != items_np.shape:
        raise ValueError(f"users and items must have the same shape, got {users_np.shape} and {items_np.shape}")
    new_users = unseen(users_np, known_users)
    new_items = unseen(items_np, known_items)
    return {"new users": new_users, "old users": ~new_users, "new items": new_items, "old items": ~new_items}


def slice_metrics(labels: ArrayLike, preds: ArrayLike, users: ArrayLike, mask: np.ndarray) -> dict:
    """AUC and GAUC of the rows where ``mask`` (N,) holds; None where a metric is undefined.

    Returns ``rows``, ``positives``, ``auc`` and ``gauc``: a slice without both labels has no AUC,
    a slice where no user holds both labels has no GAUC.
    """
    preds_np, labels_np, users_np = check_binary_inputs(preds, labels, users)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != labels_np.shape:
        raise ValueError(f"mask must be a bool array of shape {labels_np.shape}, got {mask.dtype} {mask.shape}")
    labels_in, preds_in, users_in = labels_np[mask], preds_np[mask], users_np[mask]
    positives = int(labels_in.sum())
    result: dict[str, int | float | None] = {"rows": int(mask.sum()), "positives": positives, "auc": None,
                                             "gauc": None}
    if 0 < positives < len(labels_in):
        result["auc"] = auc(preds_in, labels_in)
        try:
            result["gauc"] = gauc(preds_in, labels_in, users_in)
        except ValueError:  # no user of the slice holds both labels
            result["gauc"] = None
    return result


def _gain(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference


def cold_start_gains(
    labels: ArrayLike,
    preds: ArrayLike,
    reference_preds: ArrayLike,
    users: ArrayLike,
    slices: dict[str, np.ndarray],
) -> dict[str, dict]:
    """Per slice: ``rows``, ``positives``, ``auc``, ``gauc`` of ``preds``, the reference model's
    ``base_auc``/``base_gauc`` and the gains ``auc_gain``/``gauc_gain`` (None where undefined).

    labels, preds, reference_preds, users: (N,) aligned on the same test rows.
    """
    gains = {}
    for name, mask in slices.items():
        model = slice_metrics(labels, preds, users, mask)
        reference = slice_metrics(labels, reference_preds, users, mask)
        gains[name] = {
            **model,
            "base_auc": reference["auc"],
            "base_gauc": reference["gauc"],
            "auc_gain": _gain(model["auc"], reference["auc"]),
            "gauc_gain": _gain(model["gauc"], reference["gauc"]),
        }
    return gains
