"""DeLong's test and the paired user bootstrap against hand-computed and naive references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ctl.metrics import (
    auc,
    delong_test,
    gauc,
    paired_bootstrap,
    paired_bootstrap_mean,
    pooled_paired_bootstrap,
    resample_seeds,
    seed_t_interval,
    two_level_bootstrap,
)
from ctl.metrics.significance import _rank_rows, _weighted_auc, structural_components

# 3 positives then 3 negatives
HAND_LABELS = np.array([1, 1, 1, 0, 0, 0])
HAND_A = np.array([0.9, 0.6, 0.4, 0.7, 0.4, 0.2])
HAND_B = np.array([0.8, 0.5, 0.3, 0.5, 0.6, 0.1])


def test_delong_hand_example() -> None:
    positive = HAND_LABELS.astype(bool)
    # A: 0.9 beats all; 0.6 beats 0.4, 0.2; 0.4 ties 0.4 and beats 0.2 -> V10 = 1, 2/3, 1/2
    #    0.7 is beaten by 0.9; 0.4 by 0.9, 0.6 and tied by 0.4; 0.2 by all -> V01 = 1/3, 5/6, 1
    v10_a, v01_a = structural_components(positive, HAND_A)
    np.testing.assert_allclose(v10_a, [1, 2 / 3, 1 / 2], atol=1e-15)
    np.testing.assert_allclose(v01_a, [1 / 3, 5 / 6, 1], atol=1e-15)
    # B: V10 = 1, (1/2 + 0 + 1)/3 = 1/2, 1/3; V01 = (1 + 1/2)/3 = 1/2, 1/3, 1
    v10_b, v01_b = structural_components(positive, HAND_B)
    np.testing.assert_allclose(v10_b, [1, 1 / 2, 1 / 3], atol=1e-15)
    np.testing.assert_allclose(v01_b, [1 / 2, 1 / 3, 1], atol=1e-15)

    # AUC_A = 13/18, AUC_B = 11/18, delta = 1/9
    # V10_A - V10_B = 0, 1/6, 1/6: mean 1/9, sample variance (1/81 + 2/324) / 2 = 1/108
    # V01_A - V01_B = -1/6, 1/2, 0: mean 1/9, sample variance (25 + 49 + 4)/324 / 2 = 13/108
    # var = (1/108)/3 + (13/108)/3 = 7/162; z = (1/9) / sqrt(7/162) = sqrt(2/7) = 0.5345
    # p = erfc(z / sqrt 2) = erfc(sqrt(1/7)) = 0.59298
    result = delong_test(HAND_LABELS, HAND_A, HAND_B)
    assert result["auc_a"] == pytest.approx(13 / 18, abs=1e-15)
    assert result["auc_b"] == pytest.approx(11 / 18, abs=1e-15)
    assert result["delta"] == pytest.approx(1 / 9, abs=1e-15)
    assert result["var"] == pytest.approx(7 / 162, abs=1e-15)
    assert result["z"] == pytest.approx(0.5345224838248488, abs=1e-12)
    assert result["p_value"] == pytest.approx(0.5929800980174267, abs=1e-12)


def naive_delong(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray) -> tuple[float, float]:
    """The textbook O(P*N) form: psi kernel matrices and the 2x2 covariances S10, S01."""
    positive = labels.astype(bool)
    components = []
    for preds in (preds_a, preds_b):
        x, y = preds[positive][:, None], preds[~positive][None, :]
        psi = (x > y) + 0.5 * (x == y)
        components.append((psi.mean(axis=1), psi.mean(axis=0)))
    v10 = np.stack([c[0] for c in components])
    v01 = np.stack([c[1] for c in components])
    s10, s01 = np.cov(v10), np.cov(v01)
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / v10.shape[1] + (
        s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]
    ) / v01.shape[1]
    return float(v10[0].mean() - v10[1].mean()), float(var)


def test_delong_matches_naive_form_on_random_data() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(700) < 0.35).astype(np.int64)
    preds_a = np.round(labels * 0.3 + rng.random(700), 2)
    preds_b = np.round(labels * 0.2 + rng.random(700), 1)
    delta, var = naive_delong(labels, preds_a, preds_b)
    result = delong_test(labels, preds_a, preds_b)
    assert result["delta"] == pytest.approx(delta, abs=1e-12)
    assert result["var"] == pytest.approx(var, rel=1e-10)
    assert result["auc_a"] == pytest.approx(auc(preds_a, labels), abs=1e-12)
    assert result["z"] == pytest.approx(delta / math.sqrt(var), rel=1e-10)
    assert result["p_value"] == pytest.approx(math.erfc(abs(delta) / math.sqrt(2 * var)), rel=1e-10)


def test_delong_identical_models() -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random(100) < 0.5).astype(np.int64)
    preds = rng.random(100)
    result = delong_test(labels, preds, preds.copy())
    assert (result["delta"], result["var"], result["z"], result["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_delong_refuses_too_few_of_a_class() -> None:
    with pytest.raises(ValueError, match=">= 2 positives and >= 2 negatives, got 1 and 3"):
        delong_test(np.array([1, 0, 0, 0]), np.arange(4.0), np.arange(4.0))


def clicks_by_user(n_users: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """labels, a stronger model A, a weaker model B, users; about 8 rows per user."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, size=8 * n_users)
    labels = (rng.random(len(users)) < 0.3).astype(np.int64)
    preds_a = np.round(labels * 0.5 + rng.random(len(users)), 2)
    preds_b = np.round(labels * 0.4 + rng.random(len(users)), 2)
    return labels, preds_a, preds_b, users


def test_weighted_auc_equals_auc_of_duplicated_rows() -> None:
    labels, preds, _, users = clicks_by_user(30, seed=2)
    multiplicity = np.random.default_rng(3).integers(0, 3, size=(30, 4)).astype(np.float64)
    rows = _rank_rows(preds, labels.astype(bool), users)
    resampled = _weighted_auc(rows, multiplicity)
    for k in range(4):
        copies = multiplicity[users, k].astype(np.int64)
        expected = auc(np.repeat(preds, copies), np.repeat(labels, copies))
        assert resampled[k] == pytest.approx(expected, abs=1e-12)


def test_bootstrap_interval_holds_the_point_delta() -> None:
    labels, preds_a, preds_b, users = clicks_by_user(300, seed=4)
    result = paired_bootstrap(labels, preds_a, preds_b, users, n_resamples=300, seed=0)
    assert result["auc"]["delta"] == pytest.approx(auc(preds_a, labels) - auc(preds_b, labels), abs=1e-12)
    assert result["gauc"]["delta"] == pytest.approx(
        gauc(preds_a, labels, users) - gauc(preds_b, labels, users), abs=1e-12
    )
    for metric in ("auc", "gauc"):
        assert result[metric]["low"] < result[metric]["delta"] < result[metric]["high"]
        assert result[metric]["resamples"] == 300


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    labels, preds_a, preds_b, users = clicks_by_user(100, seed=5)
    first = paired_bootstrap(labels, preds_a, preds_b, users, n_resamples=100, seed=7)
    assert paired_bootstrap(labels, preds_a, preds_b, users, n_resamples=100, seed=7) == first
    assert paired_bootstrap(labels, preds_a, preds_b, users, n_resamples=100, seed=8) != first


def test_bootstrap_interval_shrinks_with_more_users() -> None:
    widths = []
    for n_users in (100, 2000):
        labels, preds_a, preds_b, users = clicks_by_user(n_users, seed=6)
        result = paired_bootstrap(labels, preds_a, preds_b, users, n_resamples=200, seed=0)
        widths.append({m: result[m]["high"] - result[m]["low"] for m in ("auc", "gauc")})
    # 20x the users: the width should fall about sqrt(20) = 4.5x
    for metric in ("auc", "gauc"):
        assert widths[1][metric] < widths[0][metric] / 2.5


def test_bootstrap_identical_models_give_zero_width() -> None:
    labels, preds, _, users = clicks_by_user(150, seed=8)
    result = paired_bootstrap(labels, preds, preds.copy(), users, n_resamples=100, seed=0)
    for metric in ("auc", "gauc"):
        assert (result[metric]["delta"], result[metric]["low"], result[metric]["high"]) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("n_resamples", "alpha", "message"),
    [(0, 0.05, "n_resamples must be >= 1, got 0"), (10, 1.0, r"alpha must lie in \(0, 1\), got 1.0")],
)
def test_bootstrap_refuses_bad_settings(n_resamples: int, alpha: float, message: str) -> None:
    labels, preds_a, preds_b, users = clicks_by_user(10, seed=9)
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(labels, preds_a, preds_b, users, n_resamples=n_resamples, alpha=alpha)


def test_bootstrap_of_the_seeds_mean_resamples_the_same_users_for_every_seed() -> None:
    labels, preds_a, preds_b, users = clicks_by_user(200, seed=9)
    single = paired_bootstrap(labels, preds_a, preds_b, users, n_resamples=200, seed=0)
    # two identical seeds: the mean is the one seed, interval and all
    assert paired_bootstrap_mean([(labels, preds_a, preds_b, users)] * 2, n_resamples=200, seed=0) == single
    # a second seed that ties exactly (delta 0 in every resample) halves every resampled delta, so the
    # interval of the mean is exactly half the first seed's: it could not be if the seeds drew different users
    halved = paired_bootstrap_mean([(labels, preds_a, preds_b, users), (labels, preds_b, preds_b, users)],
                                   n_resamples=200, seed=0)
    for metric in ("auc", "gauc"):
        for key in ("delta", "low", "high"):
            assert halved[metric][key] == pytest.approx(single[metric][key] / 2, abs=1e-12)


def test_bootstrap_of_the_seeds_mean_refuses_seeds_scored_on_other_users() -> None:
    labels, preds_a, preds_b, users = clicks_by_user(50, seed=10)
    with pytest.raises(ValueError, match="scored on different users"):
        paired_bootstrap_mean([(labels, preds_a, preds_b, users), (labels, preds_a, preds_b, users + 1000)],
                              n_resamples=20)
    with pytest.raises(ValueError, match="at least one pair"):
        paired_bootstrap_mean([], n_resamples=20)


def test_the_pooled_bootstrap_of_one_slice_is_the_paired_bootstrap() -> None:
    labels, preds_a, preds_b, users = clicks_by_user(200, seed=11)
    single = paired_bootstrap(labels, preds_a, preds_b, users, n_resamples=200, seed=0)
    assert pooled_paired_bootstrap([(labels, preds_a, preds_b, users)], n_resamples=200, seed=0) == single
    # slices over the same users draw the same users: the mean over seeds of paired_bootstrap_mean
    twice = [(labels, preds_a, preds_b, users), (labels, preds_b, preds_b, users)]
    assert pooled_paired_bootstrap(twice, n_resamples=200, seed=0) == paired_bootstrap_mean(twice, n_resamples=200)


def test_the_pooled_bootstrap_draws_a_user_once_for_every_slice_it_is_in() -> None:
    first = clicks_by_user(150, seed=12)
    second = clicks_by_user(150, seed=13)
    shifted = (*second[:3], second[3] + 1000)  # the same rows, held by other users
    # the point is the mean of the slices' deltas, whoever holds them
    deltas = [paired_bootstrap(*s, n_resamples=1)["auc"]["delta"] for s in (first, second)]
    for slices in ([first, second], [first, shifted]):
        pooled = pooled_paired_bootstrap(slices, n_resamples=300, seed=0)
        assert pooled["auc"]["delta"] == pytest.approx(sum(deltas) / 2, abs=1e-12)
        assert pooled["auc"]["low"] < pooled["auc"]["delta"] < pooled["auc"]["high"]
    # the same slice twice is one slice (its users drawn once for both), never a narrower interval
    assert pooled_paired_bootstrap([first, first], n_resamples=300, seed=0) == \
        pooled_paired_bootstrap([first], n_resamples=300, seed=0)
    # a user held in both slices moves both deltas together; the same rows held by other users in the
    # second slice move independently of the first, so the pooled interval is narrower
    shared = pooled_paired_bootstrap([first, first], n_resamples=300, seed=0)
    apart = pooled_paired_bootstrap([first, (*first[:3], first[3] + 1000)], n_resamples=300, seed=0)
    assert apart["auc"]["high"] - apart["auc"]["low"] < shared["auc"]["high"] - shared["auc"]["low"]
    with pytest.raises(ValueError, match="at least one slice"):
        pooled_paired_bootstrap([], n_resamples=20)


def test_the_seed_t_interval_is_students_on_a_hand_example() -> None:
    # mean 0.02, sd 0.01 over 3 seeds; t_{0.975, 2} = 4.302652729911275
    result = seed_t_interval([0.01, 0.02, 0.03])
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert result == pytest.approx({"delta": 0.02, "low": 0.02 - half, "high": 0.02 + half, "seeds": 3}, abs=1e-12)
    # the same as scipy's own interval of a mean, at another level and seed count
    from scipy import stats

    deltas = [0.004, -0.001, 0.0065, 0.002, 0.0]
    low, high = stats.t.interval(0.9, len(deltas) - 1, loc=np.mean(deltas), scale=stats.sem(deltas))
    result = seed_t_interval(deltas, alpha=0.1)
    assert (result["low"], result["high"]) == pytest.approx((low, high), abs=1e-12)


@pytest.mark.parametrize(("deltas", "message"), [([0.01], ">= 2 seeds"), ([0.01, float("nan")], "finite")])
def test_the_seed_t_interval_refuses_what_it_cannot_measure(deltas: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seed_t_interval(deltas)


def test_resampling_the_seeds_averages_a_multiset_of_each_resample_column() -> None:
    per_seed = np.array([[1.0, 10.0, 100.0, 1000.0], [2.0, 20.0, 200.0, 2000.0], [4.0, 40.0, 400.0, 4000.0]])
    means = resample_seeds(per_seed, seed=3)
    for k, value in enumerate(means):
        # every mean of 3 of column k's values drawn with replacement
        possible = {round(sum(c) / 3, 9) for c in itertools.combinations_with_replacement(per_seed[:, k], 3)}
        assert round(value, 9) in possible
    # over many resamples, all of them: the seeds are drawn, not kept
    many = resample_seeds(np.tile(per_seed[:, :1], (1, 2000)), seed=0)
    assert set(np.round(many, 9)) == {round(sum(c) / 3, 9)
                                      for c in itertools.combinations_with_replacement([1.0, 2.0, 4.0], 3)}


def test_the_two_level_bootstrap_of_identical_seeds_is_the_user_bootstrap() -> None:
    labels, preds_a, preds_b, users = clicks_by_user(200, seed=14)
    single = paired_bootstrap(labels, preds_a, preds_b, users, n_resamples=200, seed=0)
    both = two_level_bootstrap([(labels, preds_a, preds_b, users)] * 3, n_resamples=200, seed=0)
    for metric in ("auc", "gauc"):
        assert both[metric]["per_seed"] == [single[metric]["delta"]] * 3
        for key in ("delta", "low", "high"):
            assert both[metric][key] == pytest.approx(single[metric][key], abs=1e-12)


def test_the_two_level_bootstrap_counts_the_seeds_spread() -> None:
    labels, preds_a, preds_b, users = clicks_by_user(200, seed=15)
    # seed 2 ties exactly, seed 1 gains: the seeds disagree, which the users-only interval of their
    # mean ignores and the two-level interval holds
    pairs = [(labels, preds_a, preds_b, users), (labels, preds_b, preds_b, users)]
    users_only = paired_bootstrap_mean(pairs, n_resamples=500, seed=0)
    both = two_level_bootstrap(pairs, n_resamples=500, seed=0)
    assert both["auc"]["per_seed"][1] == 0.0
    assert both["auc"]["delta"] == pytest.approx(users_only["auc"]["delta"], abs=1e-12)
    assert both["auc"]["high"] - both["auc"]["low"] > 1.5 * (users_only["auc"]["high"] - users_only["auc"]["low"])
    # a resample drawing seed 2 twice is 0: the lower end reaches it
    assert both["auc"]["low"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least one pair"):
        two_level_bootstrap([], n_resamples=20)
