"""GAUC, AUC and log loss against plain references and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics.classification import BinaryAUROC

from ctl.metrics import GAUC, auc, gauc, gauc_per_user, logloss
from references import reference_gauc


def random_rows(n_rows: int, n_users: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions on a coarse grid (many ties), ~10% single-row users, one all-negative user."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, size=n_rows)
    preds = np.round(rng.random(n_rows), 1)
    labels = (rng.random(n_rows) < 0.3).astype(np.int64)
    labels[users == 0] = 0
    users[: n_rows // 10] = np.arange(n_users, n_users + n_rows // 10)
    return preds, labels, users


# user 1: positives 0.35, 0.8 vs negatives 0.1, 0.4 -> 3 of 4 pairs won -> 0.75 (4 rows)
# user 2: positive 0.5 vs negatives 0.5 (tie, 1/2), 0.7 (lost) -> 0.5 / 2 = 0.25 (3 rows)
# user 3: two positives, single class -> left out
# GAUC = (4 * 0.75 + 3 * 0.25) / 7 = 15 / 28
TINY_PREDS = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.5, 0.7, 0.3, 0.9])
TINY_LABELS = np.array([0, 0, 1, 1, 1, 0, 0, 1, 1])
TINY_USERS = np.array([1, 1, 1, 1, 2, 2, 2, 3, 3])
# pooled AUC: positives 0.35, 0.8, 0.5, 0.3, 0.9 beat 1 + 4 + 2.5 + 1 + 4 = 12.5 of 5 * 4 pairs
TINY_AUC = 12.5 / 20


def test_gauc_tiny_case_by_hand() -> None:
    assert gauc(TINY_PREDS, TINY_LABELS, TINY_USERS) == pytest.approx(15 / 28, abs=1e-15)
    per_user = gauc_per_user(TINY_PREDS, TINY_LABELS, TINY_USERS)
    np.testing.assert_array_equal(per_user.users, [1, 2])
    np.testing.assert_array_equal(per_user.impressions, [4, 3])
    np.testing.assert_allclose(per_user.auc, [0.75, 0.25], rtol=0, atol=1e-15)


def test_auc_tiny_case_by_hand() -> None:
    assert auc(TINY_PREDS, TINY_LABELS) == pytest.approx(TINY_AUC, abs=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gauc_matches_per_user_reference(dtype: type) -> None:
    preds, labels, users = random_rows(1500, 120, seed=1)
    preds = preds.astype(dtype)
    assert gauc(preds, labels, users) == pytest.approx(reference_gauc(preds, labels, users), abs=1e-9)


def test_gauc_float64_scores_that_float32_cannot_hold() -> None:
    # values 1e-12 apart collapse in float32; the dense-rank path must keep them apart
    rng = np.random.default_rng(2)
    users = rng.integers(0, 40, size=2000)
    preds = 0.5 + rng.integers(0, 5, size=2000) * 1e-12
    labels = (rng.random(2000) < 0.5).astype(np.int64)
    assert not np.array_equal(preds.astype(np.float32), preds)
    assert gauc(preds, labels, users) == pytest.approx(reference_gauc(preds, labels, users), abs=1e-9)
    assert auc(preds, labels) == pytest.approx(roc_auc_score(labels, preds), abs=1e-12)


def test_signed_logits_and_both_zeros() -> None:
    # logits straddle zero; -0.0 and +0.0 are the same score and must tie
    preds = np.array([-3.0, -0.0, 0.0, 2.0, -1.5, 7.0], dtype=np.float32)
    labels = np.array([0, 1, 0, 1, 1, 0])
    assert auc(preds, labels) == pytest.approx(roc_auc_score(labels, preds), abs=1e-15)
    assert auc(np.array([-0.0, 0.0]), np.array([1, 0])) == 0.5


def test_user_ids_outside_the_packed_range_are_remapped() -> None:
    preds, labels, users = random_rows(1000, 60, seed=3)
    expected = reference_gauc(preds, labels, users)
    for remapped in (users - 50, users * 2**40, users.astype(str)):
        assert gauc(preds, labels, remapped) == pytest.approx(expected, abs=1e-9)
    per_user = gauc_per_user(preds, labels, users * 2**40)
    assert per_user.users.dtype == np.int64
    assert set(per_user.users // 2**40) <= set(users)


def test_numpy_and_torch_inputs_agree() -> None:
    preds, labels, users = random_rows(2000, 150, seed=4)
    expected = gauc(preds, labels, users)
    as_tensors = torch.from_numpy(preds), torch.from_numpy(labels).float(), torch.from_numpy(users)
    assert gauc(*as_tensors) == expected
    assert auc(as_tensors[0], as_tensors[1]) == auc(preds, labels)
    # half precision holds the 0.1 grid only approximately, but its ties and order are the same
    half = torch.from_numpy(preds).to(torch.bfloat16)
    assert gauc(half, labels, users) == pytest.approx(expected, abs=1e-9)


def test_metric_over_several_updates_equals_functional() -> None:
    preds, labels, users = random_rows(3000, 200, seed=5)
    metric = GAUC()
    for chunk in np.array_split(np.arange(3000), 7):
        metric.update(
            torch.from_numpy(preds[chunk]).reshape(-1, 1),
            torch.from_numpy(labels[chunk]).float(),
            torch.from_numpy(users[chunk]),
        )
    value = metric.compute()
    assert value.dtype == torch.float64
    assert value.item() == gauc(preds, labels, users)


def test_metric_after_a_distributed_sync() -> None:
    # two ranks holding the same rows: every user's rows doubled leaves every AUC_u unchanged
    preds, labels, users = random_rows(500, 40, seed=7)
    metric = GAUC()
    for chunk in np.array_split(np.arange(500), 3):
        metric.update(
            torch.from_numpy(preds[chunk]), torch.from_numpy(labels[chunk]), torch.from_numpy(users[chunk])
        )
    metric.sync(
        dist_sync_fn=lambda tensor, group=None: [tensor, tensor.clone()],
        distributed_available=lambda: True,
    )
    assert isinstance(metric.users, torch.Tensor) and len(metric.users) == 1000
    # the class attribute is the bare compute, without the wrapper that would sync again
    assert GAUC.compute(metric).item() == pytest.approx(gauc(preds, labels, users), abs=1e-12)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric GAUC was called before")
def test_metric_refuses_compute_without_rows() -> None:
    with pytest.raises(ValueError, match="before any update"):
        GAUC().compute()


def test_metric_update_refuses_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="preds 3, labels 2, users 3"):
        GAUC().update(torch.rand(3), torch.ones(2), torch.arange(3))


def test_auc_equals_torchmetrics_binary_auroc() -> None:
    preds, labels, _ = random_rows(5000, 100, seed=6)
    expected = BinaryAUROC()(torch.from_numpy(preds), torch.from_numpy(labels)).item()
    assert auc(preds, labels) == pytest.approx(expected, abs=1e-6)
    assert auc(preds, labels) == pytest.approx(roc_auc_score(labels, preds), abs=1e-12)


def test_logloss_by_hand() -> None:
    # -(ln 0.9 + ln 0.8 + ln 0.4) / 3
    assert logloss(np.array([0.9, 0.2, 0.6]), np.array([1, 0, 0])) == pytest.approx(
        0.414931599615397, abs=1e-12
    )
    # a certain miss costs -ln(eps), not infinity
    assert logloss(np.array([0.0]), np.array([1])) == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_logloss_refuses_scores_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        logloss(np.array([0.5, 1.5]), np.array([0, 1]))


@pytest.mark.parametrize(
    ("preds", "labels", "users", "message"),
    [
        ([0.1, 0.2, 0.3], [0, 1], [1, 1, 1], r"same length, got \{'preds': 3, 'labels': 2, 'users': 3\}"),
        ([0.1, 0.2], [0, 1], [1, 1, 2], r"'users': 3"),
        ([0.1, 0.2, 0.3], [0, 2, 1], [1, 1, 1], r"labels must be 0 or 1: labels\[1\] = 2"),
        ([0.1, 0.2], [0.0, 0.5], [1, 1], r"labels\[1\] = 0.5"),
        ([], [], [], "at least one row"),
        ([0.1, float("nan")], [0, 1], [1, 1], r"preds\[1\] is NaN"),
        ([[0.1, 0.2]], [[0, 1]], [[1, 1]], r"preds must be 1-D"),
        ([0.1, 0.2], [1, 1], [1, 2], "no user has both"),
    ],
)
def test_gauc_refusals(preds: list, labels: list, users: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gauc(np.array(preds), np.array(labels), np.array(users))


def test_auc_refuses_a_single_class() -> None:
    with pytest.raises(ValueError, match="2 positive and 0 negative"):
        auc(np.array([0.1, 0.2]), np.array([1, 1]))
