"""Is a method better than base on the test slice? Paired tests on the saved predictions.

For each run of a method, its ``predictions.parquet`` is joined by ``row`` with base's of the same
seed and target: the ``base`` run's, or else the target base track's that the run recorded
(``tracks.target``). On the joined rows: a paired bootstrap over users
(:func:`ctl.metrics.paired_bootstrap`) gives 95% intervals of the AUC and GAUC deltas, and
DeLong's test (:func:`ctl.metrics.delong_test`) a p-value for the AUC delta. Those intervals cover
the test slice only: they say whether this training of the method beats this training of base.

A claim over >= 2 seeds rests on a *seed-aware* interval of the mean delta over seeds
(:func:`seed_aware`), which counts the training noise too: Student's t over the per-seed deltas
(the default, :data:`SEED_TEST`), beside the two-level (seeds x users) bootstrap. The A/A
calibration (``ctl eval --table aa``, docs/eval.md) measured both: with 3 seeds the bootstrap of
the seeds is too narrow, the t-interval holds its level. A delta is called significant only where
its interval excludes 0.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ctl.errors import CtlError
from ctl.methods import BASE
from ctl.metrics import delong_test, paired_bootstrap, seed_t_interval, two_level_bootstrap
from ctl.report.runs import Run
from ctl.report.tables import QUALITY_METRICS, row_groups

PREDICTION_COLUMNS: tuple[str, ...] = ("row", "user_id", "item_id", "label", "pred")
ALPHA = 0.05
# one fixed stream: every method is judged on the same user resamples
BOOTSTRAP_SEED = 0
#: what an interval covers: the training noise and the test rows' (>= 2 seeds), or the test rows' alone
SEEDS_AND_USERS, TEST_SLICE_ONLY = "training seeds and test users", "test slice only"
#: the seed-aware tests; SEED_TEST is the one verdicts rest on
T_OVER_SEEDS, TWO_LEVEL, USER_BOOTSTRAP = "t over seeds", "two-level bootstrap", "paired user bootstrap"
SEED_TEST = T_OVER_SEEDS


@dataclass(frozen=True)
class Predictions:
    """A run's test predictions, ascending by dataset ``row``; every array (N,)."""

    row: np.ndarray
    user_id: np.ndarray
    item_id: np.ndarray
    label: np.ndarray
    pred: np.ndarray


def _sorted_predictions(path: Path, columns: dict[str, np.ndarray]) -> Predictions:
    order = np.argsort(columns["row"], kind="stable")
    columns = {c: v[order] for c, v in columns.items()}
    repeated = np.flatnonzero(columns["row"][1:] == columns["row"][:-1])
    if len(repeated):
        raise CtlError(f"{path} holds row {columns['row'][repeated[0]]} twice; each row must be predicted once")
    return Predictions(**columns)


def _read_columns(path: Path, wanted: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CtlError(f"{path} is missing; the run's {what} are needed here")
    names = pq.read_schema(path).names
    missing = [c for c in wanted if c not in names]
    if missing:
        raise CtlError(f"{path} lacks the columns {missing} (expected {list(wanted)})")
    table = pq.read_table(path, columns=list(wanted))
    return {c: table.column(c).to_numpy() for c in wanted}


def load_predictions(path: Path) -> Predictions:
    """Read a ``predictions.parquet``; refuses missing columns and repeated rows."""
    return _sorted_predictions(path, _read_columns(path, PREDICTION_COLUMNS, "test predictions"))


@functools.lru_cache(maxsize=256)
def read_predictions(path: Path) -> Predictions:
    """:func:`load_predictions`, once per process (``ctl eval`` pairs one file with many)."""
    return load_predictions(path)


def load_val_predictions(path: Path) -> dict[int, Predictions]:
    """Read a ``val_predictions.parquet``: trained-through period -> the predictions of its validation slice."""
    columns = _read_columns(path, ("period", *PREDICTION_COLUMNS), "validation predictions")
    period = columns.pop("period")
    return {int(p): _sorted_predictions(path, {c: v[period == p] for c, v in columns.items()})
            for p in np.unique(period)}


def paired_predictions(model: Predictions, reference: Predictions, what: str,
                       reference_name: str = BASE) -> tuple[Predictions, np.ndarray]:
    """The model's rows that the reference also predicted, and the reference's predictions on them (aligned).

    Refuses predictions that disagree on a shared row's label (not the same test slice).
    """
    shared, in_model, in_ref = np.intersect1d(model.row, reference.row, assume_unique=True, return_indices=True)
    if len(shared) == 0:
        raise CtlError(f"{what}: no test row in common with {reference_name}'s predictions")
    disagree = np.flatnonzero(model.label[in_model] != reference.label[in_ref])
    if len(disagree):
        raise CtlError(f"{what}: row {shared[disagree[0]]} has label {model.label[in_model][disagree[0]]} here and "
                       f"{reference.label[in_ref][disagree[0]]} in {reference_name}'s predictions; "
                       "not the same test slice")
    kept = Predictions(**{c: getattr(model, c)[in_model] for c in PREDICTION_COLUMNS})
    return kept, reference.pred[in_ref]


def reference_predictions_path(run: Run, reference_runs: Sequence[Run], versus: str = BASE) -> Path | None:
    """The reference's predictions for ``run``: its row of the same seed; for base, else the run's target track."""
    for reference in reference_runs:
        if reference.seed == run.seed and reference.predictions is not None:
            return reference.predictions
    return run.base_track_predictions if versus == BASE else None


def compare_paired(labels: np.ndarray, preds: np.ndarray, reference: np.ndarray, users: np.ndarray,
                   n_resamples: int) -> dict:
    """Bootstrap intervals (AUC, GAUC) and DeLong's test (AUC) of ``preds`` minus ``reference`` on the same rows.

    labels, preds, reference, users: (N,). Returns ``rows`` and, per metric, ``delta``, ``low``,
    ``high`` and ``significant`` (the interval excludes 0); AUC also DeLong's ``p_value`` and ``z``.
    Raises ``ValueError`` where a metric is undefined on the rows (e.g. no user holds both labels).
    """
    boot = paired_bootstrap(labels, preds, reference, users, n_resamples=n_resamples, seed=BOOTSTRAP_SEED,
                            alpha=ALPHA)
    delong = delong_test(labels, preds, reference)
    result: dict = {"rows": len(labels)}
    for metric in QUALITY_METRICS:
        result[metric] = interval(boot[metric]["delta"], boot[metric]["low"], boot[metric]["high"])
    result["auc"].update(p_value=delong["p_value"], z=delong["z"])
    return result


def interval(delta: float, low: float, high: float) -> dict:
    """``delta``, ``low``, ``high`` and ``significant`` (the interval excludes 0)."""
    return {"delta": delta, "low": low, "high": high, "significant": bool(low > 0 or high < 0)}


def seed_aware(pairs: Sequence[tuple], n_resamples: int) -> dict:
    """The interval of the mean delta over seeds that a claim rests on, per metric (AUC, GAUC).

    ``pairs``: (labels, preds, reference preds, users) per seed, rows paired by id. With >= 2 seeds:
    :data:`SEED_TEST`'s interval (``covers`` :data:`SEEDS_AND_USERS`), both seed-aware tests kept
    under their names (``t``, ``two_level``); with one seed: its paired user bootstrap (``covers``
    :data:`TEST_SLICE_ONLY`). Each metric also holds the seeds' point deltas (``per_seed``).
    """
    boot = two_level_bootstrap(pairs, n_resamples=n_resamples, seed=BOOTSTRAP_SEED, alpha=ALPHA)
    several = len(pairs) >= 2
    result: dict = {"seeds": len(pairs), "resamples": n_resamples, "alpha": ALPHA,
                    "covers": SEEDS_AND_USERS if several else TEST_SLICE_ONLY}
    for metric in QUALITY_METRICS:
        b = boot[metric]
        two_level = interval(b["delta"], b["low"], b["high"])
        if not several:
            result[metric] = {**two_level, "test": USER_BOOTSTRAP, "per_seed": b["per_seed"]}
            continue
        t = seed_t_interval(b["per_seed"], ALPHA)
        by_test = {T_OVER_SEEDS: interval(t["delta"], t["low"], t["high"]), TWO_LEVEL: two_level}
        result[metric] = {**by_test[SEED_TEST], "test": SEED_TEST, "t": by_test[T_OVER_SEEDS],
                          "two_level": two_level, "per_seed": b["per_seed"]}
    return result


def seed_pairs(group: Sequence[Run], reference: Sequence[Run], what: str, versus: str = BASE) -> list[tuple]:
    """(labels, preds, reference preds, users) per seed of ``group`` that ``reference`` also has, rows
    paired by id, in seed order; ``what`` names the comparison in refusals."""
    pairs = []
    for run in sorted(group, key=lambda r: r.seed):
        ref_path = reference_predictions_path(run, reference, versus)
        if run.predictions is None or ref_path is None or not ref_path.is_file():
            continue
        rows, ref_pred = paired_predictions(read_predictions(run.predictions), read_predictions(ref_path),
                                            f"{what}, seed {run.seed}", versus)
        pairs.append((rows.label, rows.pred, ref_pred, rows.user_id))
    return pairs


def compare_run(run: Run, reference_path: Path, n_resamples: int, versus: str = BASE) -> dict:
    """Bootstrap intervals (AUC, GAUC) and DeLong's test (AUC) of ``run`` minus the reference, one seed."""
    what = f"{run.label} on {run.target}, seed {run.seed}"
    if run.predictions is None:
        raise CtlError(f"{run.path} has no predictions.parquet; significance needs the run's test predictions")
    model, reference = paired_predictions(read_predictions(run.predictions), read_predictions(reference_path),
                                          what, versus)
    return {"seed": run.seed, **compare_paired(model.label, model.pred, reference, model.user_id, n_resamples)}


def significance_by_row(runs: Sequence[Run], n_resamples: int, versus: str = BASE) -> dict[tuple[str, str], dict]:
    """(label, target) -> {"auc": summary, "gauc": summary} for every row but ``versus``'s.

    Each row is paired, seed by seed, with the ``versus`` row (default: base) of the same target.
    A summary: ``versus``, ``resamples``, ``alpha``, ``seed_aware`` (:func:`seed_aware`'s interval of
    the metric, with its ``covers``), ``significant_seeds`` (how many seeds' test-slice intervals
    exclude 0), ``tested_seeds`` and ``per_seed`` (each seed's test-slice ``delta``, ``low``,
    ``high``, ``significant``, for AUC also DeLong's ``p_value`` and ``z``). Runs with no
    reference predictions to pair with are left out of ``per_seed``.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    groups = row_groups(runs)
    labels = sorted({label for label, _ in groups})
    if versus not in labels:
        raise CtlError(f"--versus {versus}: no run of that method here; the methods are: {', '.join(labels)}")
    summaries: dict[tuple[str, str], dict] = {}
    for (label, target), group in groups.items():
        if label == versus:
            continue
        reference_runs = groups.get((versus, target), [])
        compared = []
        for run in group:
            reference_path = reference_predictions_path(run, reference_runs, versus)
            if reference_path is not None and reference_path.is_file() and run.predictions is not None:
                compared.append(compare_run(run, reference_path, n_resamples, versus))
        if not compared:
            continue
        aware = seed_aware(seed_pairs(group, reference_runs, f"{label} on {target}", versus), n_resamples)
        summaries[(label, target)] = {
            metric: {
                "versus": versus,
                "resamples": n_resamples,
                "alpha": ALPHA,
                "seed_aware": {"seeds": aware["seeds"], "covers": aware["covers"], **aware[metric]},
                "tested_seeds": len(compared),
                "significant_seeds": sum(c[metric]["significant"] for c in compared),
                "per_seed": [{"seed": c["seed"], "rows": c["rows"], **c[metric]} for c in compared],
            }
            for metric in ("auc", "gauc")
        }
    return summaries
