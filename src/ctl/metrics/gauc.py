"""Exact AUC, group AUC (GAUC) and log loss, vectorised over rows and users.

GAUC is the impression-weighted mean of per-user AUCs::

    GAUC = sum_u n_u * AUC_u / sum_u n_u

over the users whose rows hold both a click and a non-click; ``n_u`` counts all of the user's
rows (impressions). ``AUC_u`` is the Mann-Whitney statistic with ties counted as one half, i.e.
midranks. Single-class users carry no ranking information and are left out of both sums.

How it stays fast: one ``np.sort`` (not ``argsort``) of a packed ``uint64`` key per row,
``user (31 bits) | prediction code (32 bits) | label (1 bit)``. The sorted key alone yields
users, tie runs and labels, so no permutation is ever gathered. The prediction code is the
order-preserving bit pattern of a float32 prediction, or the dense rank of a float64 prediction
that float32 cannot hold exactly (one extra argsort).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import numpy as np
import torch
import torchmetrics
from torchmetrics.utilities import dim_zero_cat

ArrayLike = np.ndarray | torch.Tensor

_PRED_BITS = 32
_USER_SHIFT = np.uint64(_PRED_BITS + 1)
_MAX_USER_CODE = 2**31 - 1


@dataclass(frozen=True)
class PerUserAUC:
    """Per-user AUCs of the users holding both classes, ascending by user id.

    ``users``: (U,) the ids as given;
    ``impressions``: (U,) int64 rows per user; ``auc``: (U,) float64.
    """

    users: np.ndarray
    impressions: np.ndarray
    auc: np.ndarray


def _as_numpy(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        # numpy has no bfloat16; float32 holds every bfloat16/float16 value exactly
        if values.dtype in (torch.bfloat16, torch.float16):
            values = values.float()
        return values.numpy()
    array = np.asarray(values)
    if array.dtype == object:
        raise ValueError(f"{name} must be a numeric array, got dtype object")
    return array


@overload
def check_binary_inputs(
    preds: ArrayLike, labels: ArrayLike, users: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@overload
def check_binary_inputs(
    preds: ArrayLike, labels: ArrayLike, users: None = None
) -> tuple[np.ndarray, np.ndarray, None]: ...


def check_binary_inputs(
    preds: ArrayLike, labels: ArrayLike, users: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate and convert to numpy: preds (N,) numbers, not NaN; labels (N,) in {0, 1}.

    Returns ``(preds, labels as uint8, users)``; raises ``ValueError`` naming the problem.
    """
    named = {"preds": _as_numpy(preds, "preds"), "labels": _as_numpy(labels, "labels")}
    if users is not None:
        named["users"] = _as_numpy(users, "users")
    for name, array in named.items():
        if array.ndim != 1:
            raise ValueError(f"{name} must be 1-D (N,), got shape {array.shape}")
    lengths = {name: len(array) for name, array in named.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"preds, labels and users must have the same length, got {lengths}")
    if lengths["preds"] == 0:
        raise ValueError("metrics need at least one row, got empty preds and labels")

    preds_np = named["preds"]
    if not (np.issubdtype(preds_np.dtype, np.number) or preds_np.dtype == np.bool_):
        raise ValueError(f"preds must be numeric, got dtype {preds_np.dtype}")
    nan = np.flatnonzero(np.isnan(preds_np)) if preds_np.dtype.kind == "f" else np.empty(0)
    if len(nan):
        raise ValueError(f"preds must not be NaN: preds[{nan[0]}] is NaN")

    labels_np = named["labels"]
    if labels_np.dtype != np.bool_:
        if not np.issubdtype(labels_np.dtype, np.number):
            raise ValueError(f"labels must be numeric 0/1, got dtype {labels_np.dtype}")
        bad = np.flatnonzero((labels_np != 0) & (labels_np != 1))
        if len(bad):
            raise ValueError(f"labels must be 0 or 1: labels[{bad[0]}] = {labels_np[bad[0]]}")
    return preds_np, labels_np.astype(np.uint8), named.get("users")


def _pred_codes(preds: np.ndarray) -> np.ndarray:
    """(N,) uint64 codes < 2**32 with the same order and the same ties as ``preds``."""
    if preds.dtype != np.float32:
        as_float32 = preds.astype(np.float32)
        if np.array_equal(as_float32, preds):
            preds = as_float32
        else:
            order = np.argsort(preds)
            sorted_preds = preds[order]
            dense_rank = np.empty(len(preds), dtype=np.uint64)
            dense_rank[order] = np.concatenate(
                ([0], np.cumsum(sorted_preds[1:] != sorted_preds[:-1], dtype=np.uint64))
            )
            return dense_rank
    # -0.0 + 0.0 is +0.0, so the two zeros (equal values) get one code
    bits = (preds + np.float32(0.0)).view(np.int32)
    # IEEE order as unsigned integers: flip every bit of a negative, only the sign bit of the
    # rest; the arithmetic shift spreads the sign bit into an all-ones or all-zeros mask
    flip = bits >> 31
    flip |= np.int32(-(2**31))
    bits ^= flip
    return bits.view(np.uint32).astype(np.uint64)


def _user_codes(users: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(N,) uint64 user codes <= 2**31-1, plus the id of each code when ids were remapped."""
    if np.issubdtype(users.dtype, np.integer):
        low, high = users.min(), users.max()
        if low >= 0 and high <= _MAX_USER_CODE:
            return users.astype(np.uint64), None
    ids, codes = np.unique(users, return_inverse=True)
    if len(ids) > _MAX_USER_CODE + 1:
        raise ValueError(f"at most 2**31 distinct users are supported, got {len(ids)}")
    return codes.astype(np.uint64), ids


@dataclass(frozen=True)
class _GroupCounts:
    """Per group (user) sums: ``code`` (G,), ``rows``, ``positives``, ``twice_u`` (2x Mann-Whitney U)."""

    code: np.ndarray
    rows: np.ndarray
    positives: np.ndarray
    twice_u: np.ndarray


def _group_counts(preds: np.ndarray, labels: np.ndarray, user_codes: np.ndarray) -> _GroupCounts:
    """Sums per user; ``user_codes`` (N,) uint64 is consumed (it becomes the sort key)."""
    # one packed key per row; sorting it groups users, orders predictions within a user, and
    # puts a tie run's negatives (label bit 0) before its positives. In-place operations keep
    # fresh allocations, whose page faults cost as much as the arithmetic at 10M rows, low.
    key = user_codes
    key <<= _USER_SHIFT
    pred_codes = _pred_codes(preds)
    pred_codes <<= np.uint64(1)
    key |= pred_codes
    del pred_codes
    key |= labels
    key.sort()
    n = len(key)

    changed_bits = key[1:] ^ key[:-1]
    # starts_run[i]: sorted row i opens a (user, prediction) tie run; the extra slot closes the last
    starts_run = np.empty(n + 1, dtype=bool)
    starts_run[0] = starts_run[n] = True
    np.greater(changed_bits, 1, out=starts_run[1:n])
    starts_user = starts_run.copy()
    np.greater_equal(changed_bits, np.uint64(1) << _USER_SHIFT, out=starts_user[1:n])
    del changed_bits
    run_bounds = np.flatnonzero(starts_run)
    user_bounds = np.flatnonzero(starts_user)
    user_first_run = np.flatnonzero(starts_user[run_bounds[:-1]])

    # pos_before[i]: positives among sorted rows [0, i)
    pos_before = np.empty(n + 1, dtype=np.int64)
    pos_before[0] = 0
    np.bitwise_and(key, np.uint64(1), out=pos_before[1:].view(np.uint64))
    np.cumsum(pos_before[1:], out=pos_before[1:])

    boundary_pos = pos_before[run_bounds]
    run_pos = np.diff(boundary_pos)
    boundary_neg = np.subtract(run_bounds, boundary_pos, out=boundary_pos)
    # a positive of run r beats the user's negatives below r and ties with r's own negatives
    # (1/2 each); twice its share of U is (negatives before r - before the user) + (negatives
    # through the end of r - before the user), which needs only the cumulative counts
    run_score = boundary_neg[:-1] + boundary_neg[1:]
    run_score *= run_pos
    user_pos_before = pos_before[user_bounds]
    user_rows = np.diff(user_bounds)
    user_pos = np.diff(user_pos_before)
    user_neg_before = user_bounds[:-1] - user_pos_before[:-1]
    twice_u = np.add.reduceat(run_score, user_first_run) - 2 * user_neg_before * user_pos
    return _GroupCounts(
        code=key[user_bounds[:-1]] >> _USER_SHIFT,
        rows=user_rows,
        positives=user_pos,
        twice_u=twice_u,
    )


def gauc_per_user(preds: ArrayLike, labels: ArrayLike, users: ArrayLike) -> PerUserAUC:
    """AUC of each user holding both classes. preds, labels, users: (N,)."""
    preds_np, labels_np, users_np = check_binary_inputs(preds, labels, users)
    codes, ids = _user_codes(users_np)
    counts = _group_counts(preds_np, labels_np, codes)
    negatives = counts.rows - counts.positives
    both = (counts.positives > 0) & (negatives > 0)
    auc_values = counts.twice_u[both] / (2.0 * counts.positives[both] * negatives[both])
    user_codes = counts.code[both]
    user_ids = ids[user_codes.astype(np.int64)] if ids is not None else user_codes.astype(users_np.dtype)
    return PerUserAUC(users=user_ids, impressions=counts.rows[both], auc=auc_values)


def gauc(preds: ArrayLike, labels: ArrayLike, users: ArrayLike) -> float:
    """Impression-weighted group AUC; preds, labels, users: (N,) arrays or tensors.

    ``sum_u n_u AUC_u / sum_u n_u`` over users with both classes (n_u = all rows of user u),
    ties averaged (midranks). Raises ``ValueError`` when no user holds both classes.
    """
    per_user = gauc_per_user(preds, labels, users)
    if len(per_user.users) == 0:
        raise ValueError("GAUC is undefined: no user has both a positive and a negative label")
    weights = per_user.impressions.astype(np.float64)
    return float(np.dot(weights, per_user.auc) / weights.sum())


def auc(preds: ArrayLike, labels: ArrayLike) -> float:
    """Exact ROC AUC with ties counted as one half (midranks); preds, labels: (N,)."""
    preds_np, labels_np, _ = check_binary_inputs(preds, labels)
    counts = _group_counts(preds_np, labels_np, np.zeros(len(preds_np), dtype=np.uint64))
    positives = int(counts.positives[0])
    negatives = int(counts.rows[0]) - positives
    if positives == 0 or negatives == 0:
        raise ValueError(f"AUC is undefined with {positives} positive and {negatives} negative labels")
    return float(counts.twice_u[0] / (2.0 * positives * negatives))


def logloss(preds: ArrayLike, labels: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``preds`` (N,), clipped to [eps, 1 - eps]."""
    preds_np, labels_np, _ = check_binary_inputs(preds, labels)
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
    if preds_np.min() < 0 or preds_np.max() > 1:
        raise ValueError(
            f"logloss takes probabilities in [0, 1], got preds in [{preds_np.min()}, {preds_np.max()}]"
        )
    probs = np.clip(preds_np.astype(np.float64), eps, 1.0 - eps)
    clicked = labels_np.astype(bool)
    return float(-(np.log(probs[clicked]).sum() + np.log1p(-probs[~clicked]).sum()) / len(probs))


class GAUC(torchmetrics.Metric):
    """Impression-weighted group AUC accumulated over batches.

    ``GAUC = sum_u n_u AUC_u / sum_u n_u`` over users whose rows hold both labels, where n_u is
    the number of the user's rows (impressions) and AUC_u uses midranks for tied predictions.
    States are lists concatenated across processes, so a user's rows may be split over batches
    and ranks. ``compute`` returns a float64 scalar tensor.

    Example::

        metric = GAUC()
        metric.update(torch.sigmoid(logits), batch["label"], batch["user_id"])
        metric.compute()
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    # states added by add_state: lists of batches here (compute may also meet them concatenated)
    preds: list[torch.Tensor]
    labels: list[torch.Tensor]
    users: list[torch.Tensor]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("users", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, labels: torch.Tensor, users: torch.Tensor) -> None:
        """preds: (B,) or (B, 1) scores; labels: (B,) 0/1; users: (B,) integer ids."""
        preds, labels, users = preds.reshape(-1), labels.reshape(-1), users.reshape(-1)
        if not len(preds) == len(labels) == len(users):
            raise ValueError(
                f"GAUC.update needs equal lengths, got preds {len(preds)}, labels {len(labels)}, "
                f"users {len(users)}"
            )
        self.preds.append(preds.detach())
        self.labels.append(labels.detach())
        self.users.append(users.detach())

    def compute(self) -> torch.Tensor:
        # a list before a distributed sync, one concatenated tensor after it
        if len(self.preds) == 0:
            raise ValueError("GAUC.compute called before any update")
        value = gauc(dim_zero_cat(self.preds), dim_zero_cat(self.labels), dim_zero_cat(self.users))
        return torch.tensor(value, dtype=torch.float64)
