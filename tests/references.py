"""Reference values computed outside ctl: sklearn's AUC, and GAUC as a loop over users of sklearn AUCs."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def reference_gauc(preds: np.ndarray, labels: np.ndarray, users: np.ndarray) -> float:
    """A loop over users: impression-weighted sklearn AUCs of the users holding both labels."""
    weighted_sum, weight = 0.0, 0
    for user in np.unique(users):
        mine = users == user
        if labels[mine].min() == labels[mine].max():
            continue
        weighted_sum += mine.sum() * roc_auc_score(labels[mine], preds[mine])
        weight += mine.sum()
    return weighted_sum / weight


def reference_metric(metric: str, preds: np.ndarray, labels: np.ndarray, users: np.ndarray) -> float:
    """``auc`` (sklearn) or ``gauc`` (:func:`reference_gauc`) of one run's rows."""
    return float(roc_auc_score(labels, preds)) if metric == "auc" else reference_gauc(preds, labels, users)
