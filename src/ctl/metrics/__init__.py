"""Evaluation metrics: exact AUC, impression-weighted GAUC, log loss, and paired significance.

Training logs AUC with torchmetrics' ``BinaryAUROC`` (re-exported here); keep its default
``thresholds=None``, which is exact with midranks for ties and equals :func:`auc`. A binned
``thresholds=k`` is an approximation and must not be reported as AUC. GAUC has no torchmetrics
counterpart: :class:`GAUC` is ours, with the weighting stated on it.
"""

from torchmetrics.classification import BinaryAUROC

from ctl.metrics.coldstart import COLD_START_SLICES, cold_start_gains, cold_start_slices, slice_metrics
from ctl.metrics.gauc import GAUC, PerUserAUC, auc, gauc, gauc_per_user, logloss
from ctl.metrics.significance import (
    delong_test,
    paired_bootstrap,
    paired_bootstrap_mean,
    pooled_paired_bootstrap,
    resample_seeds,
    seed_t_interval,
    two_level_bootstrap,
)

__all__ = [
    "COLD_START_SLICES",
    "GAUC",
    "BinaryAUROC",
    "PerUserAUC",
    "auc",
    "cold_start_gains",
    "cold_start_slices",
    "delong_test",
    "gauc",
    "gauc_per_user",
    "logloss",
    "paired_bootstrap",
    "paired_bootstrap_mean",
    "pooled_paired_bootstrap",
    "resample_seeds",
    "seed_t_interval",
    "slice_metrics",
    "two_level_bootstrap",
]
