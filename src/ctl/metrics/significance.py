"""Is model A better than model B on the same rows? DeLong's test and a paired user bootstrap.

* :func:`delong_test`: DeLong, DeLong & Clarke-Pearson (1988), the asymptotic test for two
  correlated AUCs, with the structural components computed from midranks (no O(P*N) matrix).
* :func:`paired_bootstrap`: percentile intervals of the AUC and GAUC deltas when whole users are
  resampled with replacement, which respects the within-user correlation that DeLong ignores.
* :func:`pooled_paired_bootstrap`: the same for the mean delta over several slices (e.g. the
  validation slices of the transfer periods), a user drawn once for all the slices it has rows in.

Those count the noise of the test rows only: they ask whether *this* training of A beats *this*
training of B. Whether training A again beats training B again is a question over training seeds:

* :func:`seed_t_interval`: Student's t-interval of the mean of per-seed paired deltas;
* :func:`two_level_bootstrap`: a bootstrap that resamples the seeds, then the test users, for
  the mean delta over seeds (the seeds' user resamples shared, as the seeds share the test rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctl.metrics.gauc import ArrayLike, auc, check_binary_inputs, gauc_per_user

# float64 cells per (resamples x rows) block of the bootstrap: ~32 MB per temporary
_BLOCK_CELLS = 4_000_000


def _midranks(values: np.ndarray) -> np.ndarray:
    """(N,) float64 1-based ranks of ``values``; tied values share the mean of their positions."""
    order = np.argsort(values)
    sorted_values = values[order]
    n = len(values)
    bounds = np.append(np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1]))), n)
    # a tie run over sorted positions [s, e) holds ranks s+1 .. e, whose mean is (s + e + 1) / 2
    run_rank = (bounds[:-1] + bounds[1:] + 1) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, np.diff(bounds))
    return ranks


def structural_components(positive: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's V10 (P,) and V01 (N,) for boolean labels ``positive`` (P+N,) and scores ``preds``.

    V10[i]: share of negatives that positive i outranks (ties 1/2); V01[j]: share of positives
    that outrank negative j. Both average to the AUC.
    """
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    all_ranks = _midranks(preds)
    # a positive's rank among all rows minus its rank among positives = negatives below it (+ ties/2)
    v10 = (all_ranks[positive] - _midranks(preds[positive])) / n_neg
    v01 = 1.0 - (all_ranks[~positive] - _midranks(preds[~positive])) / n_pos
    return v10, v01


def delong_test(labels: ArrayLike, preds_a: ArrayLike, preds_b: ArrayLike) -> dict[str, float]:
    """DeLong's paired test of AUC(A) = AUC(B) on the same rows; labels, preds_*: (N,).

    Returns ``auc_a``, ``auc_b``, ``delta`` (A - B), ``var`` (variance of the delta), ``z`` and the
    two-sided ``p_value``. Identical predictions give var 0, z 0 and p 1.
    """
    scores_a, labels_np, _ = check_binary_inputs(preds_a, labels)
    scores_b, _, _ = check_binary_inputs(preds_b, labels)
    positive = labels_np.astype(bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos < 2 or n_neg < 2:
        raise ValueError(f"DeLong's test needs >= 2 positives and >= 2 negatives, got {n_pos} and {n_neg}")

    v10_a, v01_a = structural_components(positive, scores_a)
    v10_b, v01_b = structural_components(positive, scores_b)
    auc_a, auc_b = float(v10_a.mean()), float(v10_b.mean())
    # var(A - B) = var(V10_a - V10_b)/P + var(V01_a - V01_b)/N, the usual S10/S01 covariance form
    var = float(np.var(v10_a - v10_b, ddof=1) / n_pos + np.var(v01_a - v01_b, ddof=1) / n_neg)
    delta = auc_a - auc_b
    if var > 0:
        z = delta / math.sqrt(var)
    else:
        z = 0.0 if delta == 0 else math.copysign(math.inf, delta)
    p_value = math.erfc(abs(z) / math.sqrt(2.0))
    return {"auc_a": auc_a, "auc_b": auc_b, "delta": delta, "var": var, "z": z, "p_value": p_value}


@dataclass(frozen=True)
class _RankedRows:
    """One model's rows split by label, for weighted AUCs under many user resamples.

    ``neg_user`` (N,) users of the negatives in ascending score order; ``pos_user`` (P,) users of
    the positives; ``below`` / ``not_above`` (P,) how many negatives score strictly below / at
    most each positive.
    """

    neg_user: np.ndarray
    pos_user: np.ndarray
    below: np.ndarray
    not_above: np.ndarray


def _rank_rows(scores: np.ndarray, positive: np.ndarray, user: np.ndarray) -> _RankedRows:
    order = np.argsort(scores[~positive])
    neg_scores = scores[~positive][order]
    pos_scores = scores[positive]
    return _RankedRows(
        neg_user=user[~positive][order],
        pos_user=user[positive],
        below=np.searchsorted(neg_scores, pos_scores, side="left"),
        not_above=np.searchsorted(neg_scores, pos_scores, side="right"),
    )


def _weighted_auc(rows: _RankedRows, multiplicity: np.ndarray) -> np.ndarray:
    """AUC of each resample (K,), a row weighing as many times as its user was drawn.

    multiplicity: (U, K) draws per user and resample. NaN where a resample lacks a class.
    """
    n_resamples = multiplicity.shape[1]
    # neg_weight_below[j]: (K,) drawn weight of the j lowest-scoring negatives
    neg_weight_below = np.zeros((len(rows.neg_user) + 1, n_resamples))
    np.cumsum(multiplicity[rows.neg_user], axis=0, out=neg_weight_below[1:])
    pos_weight = multiplicity[rows.pos_user]
    # a positive beats the negatives below it and ties with the equal ones (1/2 each), so twice
    # its share is the weight strictly below plus the weight at most its score
    beaten_twice = neg_weight_below[rows.below] + neg_weight_below[rows.not_above]
    twice_u = np.einsum("pk,pk->k", pos_weight, beaten_twice)
    pairs = pos_weight.sum(axis=0) * neg_weight_below[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, twice_u / (2.0 * pairs), np.nan)


def _interval(point: float, resampled: np.ndarray, alpha: float, metric: str) -> dict[str, float]:
    defined = resampled[np.isfinite(resampled)]
    if len(defined) == 0:
        raise ValueError(f"{metric} is undefined in every bootstrap resample; too few users")
    low, high = np.quantile(defined, [alpha / 2.0, 1.0 - alpha / 2.0])
    return {"delta": point, "low": float(low), "high": float(high), "resamples": len(defined)}


def paired_bootstrap(
    labels: ArrayLike,
    preds_a: ArrayLike,
    preds_b: ArrayLike,
    users: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap of AUC(A) - AUC(B) and GAUC(A) - GAUC(B), resampling users.

    labels, preds_a, preds_b, users: (N,). Each resample draws as many users as there are, with
    replacement, and keeps all rows of each drawn user (as often as drawn); both models see the
    same resample. Returns ``{"auc": {...}, "gauc": {...}}``, each with the point ``delta``, the
    ``1 - alpha`` interval ``low``/``high`` and the number of ``resamples`` where the metric
    was defined.
    """
    return paired_bootstrap_mean([(labels, preds_a, preds_b, users)], n_resamples, seed, alpha)


def paired_bootstrap_mean(
    pairs: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, dict[str, float]]:
    """:func:`paired_bootstrap` of the mean delta over several pairs scored on the same users.

    ``pairs``: (labels, preds_a, preds_b, users) each, e.g. one per training seed of two methods on
    one test slice. Every resample draws the same users for every pair, so the interval is that of
    the seeds' mean delta under resampling of the test users. Refuses pairs over different users.
    """
    if not pairs:
        raise ValueError("paired_bootstrap_mean needs at least one pair")
    _check_resampling(n_resamples, alpha)
    draws = [_bootstrap_deltas(*pair, n_resamples=n_resamples, seed=seed) for pair in pairs]
    if any(not np.array_equal(d[0], draws[0][0]) for d in draws[1:]):
        raise ValueError("paired_bootstrap_mean: the pairs are scored on different users")
    return _mean_intervals(draws, alpha)


def seed_t_interval(deltas: Sequence[float], alpha: float = 0.05) -> dict[str, float]:
    """Student's ``1 - alpha`` t-interval of the mean of ``deltas`` (one paired delta per training seed).

    ``mean ± t_{1-alpha/2, n-1} · sd / √n`` (sd with ddof=1): what a new training of both methods
    would give on average, the seeds' spread standing for the training noise. Returns ``delta``
    (the mean), ``low``, ``high`` and ``seeds``. Refuses fewer than two deltas and non-finite ones.
    """
    values = np.asarray(deltas, dtype=np.float64)
    if len(values) < 2:
        raise ValueError(f"a t-interval over seeds needs >= 2 seeds, got {len(values)}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"a t-interval over seeds needs finite deltas, got {values.tolist()}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    from scipy.stats import t  # loaded only where a claim spans seeds

    mean = float(values.mean())
    half = float(t.ppf(1.0 - alpha / 2.0, len(values) - 1)) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return {"delta": mean, "low": mean - half, "high": mean + half, "seeds": len(values)}


def resample_seeds(per_seed: np.ndarray, seed: int) -> np.ndarray:
    """Resample (K,) the seeds of ``per_seed`` (S, K): resample k's value is the mean of column k over S
    seeds drawn with replacement (NaN where a drawn seed's value is)."""
    n_seeds, n_resamples = per_seed.shape
    drawn = np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_seeds, n_resamples))
    return per_seed[drawn, np.arange(n_resamples)].mean(axis=0)


def two_level_bootstrap(
    pairs: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, dict]:
    """Percentile interval of the mean over seeds of the AUC and GAUC deltas, resampling seeds and users.

    ``pairs``: (labels, preds_a, preds_b, users) per training seed, e.g. two methods of the same seed
    on one test slice. Resample k draws the users once for every seed (the seeds share the test rows),
    then S seeds with replacement (:func:`resample_seeds`), and averages the drawn seeds' deltas under
    those users: both the training noise (the seeds' spread) and the test rows' noise are in the
    interval. Returns, per metric, ``delta`` (the mean of the seeds' deltas), ``low``, ``high``,
    ``resamples`` and ``per_seed`` (each seed's point delta, in the order of ``pairs``).
    """
    if not pairs:
        raise ValueError("two_level_bootstrap needs at least one pair")
    _check_resampling(n_resamples, alpha)
    population = np.unique(np.concatenate([np.asarray(p[3]).reshape(-1) for p in pairs]))
    draws = [_bootstrap_deltas(*p, n_resamples=n_resamples, seed=seed, population=population) for p in pairs]
    result = {}
    for metric, point, resampled in (("auc", 1, 3), ("gauc", 2, 4)):
        per_seed = [float(d[point]) for d in draws]
        values = resample_seeds(np.stack([d[resampled] for d in draws]), seed)
        result[metric] = {**_interval(float(np.mean(per_seed)), values, alpha, metric.upper()), "per_seed": per_seed}
    return result


def pooled_paired_bootstrap(
    slices: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, dict[str, float]]:
    """:func:`paired_bootstrap` of the mean delta over ``slices`` that may hold different users.

    ``slices``: (labels, preds_a, preds_b, users) each, e.g. the validation slice after each
    transfer period. The point is the mean over slices of each slice's AUC (GAUC) delta; each
    resample draws users with replacement from every user of any slice, and a drawn user weighs as
    often as drawn in every slice where it has rows: a user seen in several slices is one unit, so
    the interval keeps the correlation between its slices. With one slice, :func:`paired_bootstrap`.
    """
    if not slices:
        raise ValueError("pooled_paired_bootstrap needs at least one slice")
    _check_resampling(n_resamples, alpha)
    population = np.unique(np.concatenate([np.asarray(s[3]).reshape(-1) for s in slices]))
    draws = [_bootstrap_deltas(*s, n_resamples=n_resamples, seed=seed, population=population) for s in slices]
    return _mean_intervals(draws, alpha)


def _check_resampling(n_resamples: int, alpha: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def _mean_intervals(draws: list[tuple], alpha: float) -> dict[str, dict[str, float]]:
    """The intervals of the mean over ``draws`` (each :func:`_bootstrap_deltas`' result) of the AUC and GAUC deltas."""
    # a resample where some draw's GAUC is undefined stays NaN in the mean and is left out of the interval
    return {
        "auc": _interval(float(np.mean([d[1] for d in draws])), np.mean([d[3] for d in draws], axis=0), alpha, "AUC"),
        "gauc": _interval(float(np.mean([d[2] for d in draws])), np.mean([d[4] for d in draws], axis=0), alpha,
                          "GAUC"),
    }


def _bootstrap_deltas(
    labels: ArrayLike, preds_a: ArrayLike, preds_b: ArrayLike, users: ArrayLike, n_resamples: int, seed: int,
    population: np.ndarray | None = None,
) -> tuple[np.ndarray, float, float, np.ndarray, np.ndarray]:
    """The users (sorted, unique), the point AUC and GAUC deltas and their ``n_resamples`` resampled values.

    Resamples draw from ``population`` (sorted unique user ids holding ``users``; default: ``users``
    themselves), so slices drawn with the same population and seed draw the same users."""
    scores_a, labels_np, users_np = check_binary_inputs(preds_a, labels, users)
    scores_b, _, _ = check_binary_inputs(preds_b, labels)

    if population is None:
        unique_users, user = np.unique(users_np, return_inverse=True)
        n_users = int(user.max()) + 1
    else:
        unique_users, user, n_users = population, np.searchsorted(population, users_np), len(population)
    positive = labels_np.astype(bool)

    per_user_a = gauc_per_user(scores_a, labels_np, user)
    per_user_b = gauc_per_user(scores_b, labels_np, user)
    if len(per_user_a.users) == 0:
        raise ValueError("GAUC is undefined: no user has both a positive and a negative label")
    impressions = per_user_a.impressions.astype(np.float64)
    # duplicating a user leaves its AUC unchanged, so a resample's GAUC delta is a
    # multiplicity-weighted mean of these per-user deltas
    weighted_delta = impressions * (per_user_a.auc - per_user_b.auc)
    point_gauc = float(weighted_delta.sum() / impressions.sum())
    point_auc = auc(scores_a, labels_np) - auc(scores_b, labels_np)

    rows_a = _rank_rows(scores_a, positive, user)
    rows_b = _rank_rows(scores_b, positive, user)
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, _BLOCK_CELLS // max(len(user), n_users)))
    auc_deltas = np.empty(n_resamples)
    gauc_deltas = np.empty(n_resamples)
    for first in range(0, n_resamples, block):
        k = min(block, n_resamples - first)
        draws = rng.integers(0, n_users, size=(k, n_users))
        # multiplicity[u, r]: how often resample r drew user u
        cells = draws * k + np.arange(k)[:, None]
        multiplicity = (
            np.bincount(cells.ravel(), minlength=n_users * k).reshape(n_users, k).astype(np.float64)
        )

        auc_deltas[first : first + k] = _weighted_auc(rows_a, multiplicity) - _weighted_auc(
            rows_b, multiplicity
        )
        drawn_valid = multiplicity[per_user_a.users]
        weight = impressions @ drawn_valid
        with np.errstate(invalid="ignore", divide="ignore"):
            gauc_deltas[first : first + k] = np.where(
                weight > 0, (weighted_delta @ drawn_valid) / weight, np.nan
            )

    return unique_users, point_auc, point_gauc, auc_deltas, gauc_deltas
