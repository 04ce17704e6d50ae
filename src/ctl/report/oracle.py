"""The oracle: the true click probabilities of a synthetic world's test slice, scored like a model.

The synthetic generator keeps each test row's true click probability in the dataset's
``oracle.parquet`` (:mod:`ctl.data.dataset`). Scored on the same rows as the methods, it gives
the ceiling no model of that world can beat on average, and with it the *headroom* of base,
``oracle − base``, and each method's share of it::

    headroom share = (method − base) / (oracle − base)

(undefined where ``oracle − base <= 0``). Datasets without the file (imported ones) simply get no
oracle row. Nothing is re-run: the probabilities are joined to a run's predictions by ``row``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ctl.data.dataset import DatasetError, load_click_prob, read_fingerprint
from ctl.methods import BASE
from ctl.metrics import auc, gauc, logloss
from ctl.report.runs import Run
from ctl.report.significance import Predictions, read_predictions
from ctl.report.tables import row_groups

ORACLE = "oracle"


class NoOracle(Exception):
    """Why runs get no oracle row (shown as a note)."""


@dataclass(frozen=True)
class OracleSlice:
    """The oracle on one target's test rows: ``prob`` (N,) aligned with ``rows`` (a run's predictions)."""

    rows: Predictions
    prob: np.ndarray

    def metric(self, name: str) -> float | None:
        """``auc``, ``gauc`` or ``logloss`` of the true probabilities on these rows (None if undefined)."""
        try:
            if name == "auc":
                return auc(self.prob, self.rows.label)
            if name == "gauc":
                return gauc(self.prob, self.rows.label, self.rows.user_id)
            return logloss(self.prob, self.rows.label)
        except ValueError:  # a slice with one class, or no user holding both
            return None


@functools.lru_cache(maxsize=8)
def _click_prob(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    return load_click_prob(path)


def oracle_probabilities(dataset_path: Path | None, fingerprint: str, row: np.ndarray) -> np.ndarray:
    """True click probabilities of the dataset rows ``row`` (ascending, int), from ``oracle.parquet``.

    Raises :class:`NoOracle` (its message says why) when the dataset is not named, missing, not the
    one of ``fingerprint``, keeps no probabilities, or lacks some of the rows.
    """
    if dataset_path is None:
        raise NoOracle("the runs name no dataset_path")
    if not (dataset_path / "meta.yaml").is_file():
        raise NoOracle(f"the dataset {dataset_path} is missing")
    try:
        if read_fingerprint(dataset_path) != fingerprint:
            raise NoOracle(f"the dataset at {dataset_path} is not the one the runs were trained on ({fingerprint})")
        stored = _click_prob(dataset_path)
    except DatasetError as exc:
        raise NoOracle(f"the dataset's oracle.parquet is refused ({exc})") from exc
    if stored is None:
        raise NoOracle(f"the dataset {dataset_path} keeps no true click probabilities (imported data has none; a "
                       "synthetic world generated before ctl kept them gets them from `ctl data generate` with its "
                       "data config)")
    known, prob = stored
    at = np.minimum(np.searchsorted(known, row), len(known) - 1)
    missing = known[at] != row
    if missing.any():
        raise NoOracle(f"the dataset's oracle.parquet lacks row {row[np.argmax(missing)]} of the test slice")
    return prob[at]


def oracle_slice(run: Run, predictions: Predictions) -> OracleSlice:
    """The oracle on the rows of ``predictions`` (one of ``run``'s): raises :class:`NoOracle`."""
    return OracleSlice(predictions, oracle_probabilities(run.dataset_path, run.dataset, predictions.row))


def headroom_share(delta: float | None, base: float | None, oracle: float | None) -> float | None:
    """``delta / (oracle − base)``: the share of base's headroom a gain of ``delta`` covers; None
    where a term is missing or base already reaches the oracle."""
    if delta is None or base is None or oracle is None or oracle - base <= 0:
        return None
    return delta / (oracle - base)


def _rows_of(group: Sequence[Run]) -> tuple[Run, Predictions] | None:
    for run in group:
        path = run.predictions or (run.base_track_predictions if run.label != BASE else None)
        if path is not None and path.is_file():
            return run, read_predictions(path)
    return None


def oracle_by_target(runs: Sequence[Run]) -> tuple[dict[str, tuple[Run, OracleSlice]], str | None]:
    """Per target of ``runs`` (one dataset): a head run naming the oracle row and the oracle on the
    test rows; plus why a target has none (None when every target with predictions has one)."""
    found: dict[str, tuple[Run, OracleSlice]] = {}
    reasons = []
    by_target: dict[str, list[Run]] = {}
    for (label, target), group in row_groups(runs).items():
        # base first: its rows are the ones every delta is paired with
        by_target.setdefault(target, [])
        by_target[target] = group + by_target[target] if label == BASE else by_target[target] + group
    for target, group in by_target.items():
        located = _rows_of(group)
        if located is None:
            continue
        run, predictions = located
        try:
            found[target] = (oracle_head(run), oracle_slice(run, predictions))
        except NoOracle as exc:
            reasons.append(str(exc))
    return found, (reasons[0] if reasons else None)


def oracle_head(run: Run) -> Run:
    """A pseudo-run that names the oracle row in records (dataset, source, target of ``run``)."""
    return replace(run, label=ORACLE, method=ORACLE, model=ORACLE, finetune_periods=None, settings={},
                   from_baseline=False)


def _base_by_seed(records: Sequence[dict], target: str, slice_name: str, metric: str) -> dict[int, float]:
    base = next((r for r in records if r["model"] == BASE and r["target"] == target and r["slice"] == slice_name
                 and r["metric"] == metric), None)
    return dict(zip(base["seeds"], base["values"])) if base else {}


def oracle_record(table: str, head: Run, slice_name: str, metric: str, value: float | None,
                  base_by_seed: dict[int, float], seeds: Sequence[int], *, period: int | None = None,
                  eval_period: int | None = None, rows: int | None = None) -> dict:
    """The oracle's record: ``value`` for every seed of the row (one slice, so no spread: ``std``
    None), its ``delta`` the headroom over base paired by seed."""
    from ctl.report.records import record

    rec = record(table, head, slice_name, metric, {s: value for s in seeds}, base_by_seed, period=period,
                 eval_period=eval_period, rows=rows)
    rec["std"] = None
    rec["oracle"] = value
    return rec


def fill_headroom(records: list[dict]) -> list[dict]:
    """Set ``oracle`` and ``headroom_share`` of every AUC/GAUC record whose (target, slice, metric)
    has an oracle record."""
    oracle = {(r["target"], r["slice"], r["metric"]): r["mean"] for r in records if r["model"] == ORACLE}
    for rec in records:
        key = (rec["target"], rec["slice"], rec["metric"])
        if rec["model"] == ORACLE or key not in oracle or rec["metric"] not in ("auc", "gauc"):
            continue
        rec["oracle"] = oracle[key]
        if rec["model"] != BASE:
            rec["headroom_share"] = headroom_share(rec["delta"], rec["base"], oracle[key])
    return records


def add_oracle(table: str, records: list[dict], oracle: dict[str, tuple[Run, OracleSlice]]) -> list[dict]:
    """``records`` of ``table`` (overall, periods, finetune or cost) with an oracle record per target
    and metric on the test slice, and the ``oracle``/``headroom_share`` keys filled."""
    metrics = ("auc", "gauc", "logloss") if table == "overall" else ("auc", "gauc")
    added = []
    for target, (head, slice_) in oracle.items():
        own = [r for r in records if r["target"] == target]
        if not own:
            continue
        test_period = head.test.get("period")
        if table == "periods":
            # the section evaluated on the test slice: the last transfer period's, or a `test` row
            on_test = next((r for r in own if r["eval_period"] == test_period or r["slice"] == "test"), None)
            if on_test is None:
                continue
            slice_name, keys = on_test["slice"], {"period": on_test["period"], "eval_period": on_test["eval_period"]}
        else:
            slice_name, keys = "test", {"period": test_period}
        seeds = sorted({s for r in own for s in r["seeds"]})
        for metric in metrics:
            added.append(oracle_record(table, head, slice_name, metric, slice_.metric(metric),
                                       _base_by_seed(own, target, slice_name, metric), seeds,
                                       rows=len(slice_.rows.row), **keys))
    return fill_headroom(records + added)
