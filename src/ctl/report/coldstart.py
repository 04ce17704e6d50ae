"""Table 5: AUC/GAUC gains over base on the test rows of new vs old users and new vs old items.

A user or item is new when the target domain's rows before t0 never show it. Those rows come
from the dataset the run was trained on (``dataset_path`` in ``metrics.json``, checked against
its fingerprint); the predictions come from each run's ``predictions.parquet`` and base's of the
same seed. Nothing is re-run. On a synthetic world the oracle (the true click probabilities, see
:mod:`ctl.report.oracle`) gets its row on every slice too, and each method its share of base's
headroom there.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ctl.data.dataset import Dataset, load_dataset
from ctl.errors import CtlError
from ctl.methods import BASE
from ctl.metrics import COLD_START_SLICES, cold_start_gains, cold_start_slices
from ctl.report.oracle import fill_headroom
from ctl.report.records import record
from ctl.report.runs import Run
from ctl.report.significance import (
    Predictions,
    paired_predictions,
    read_predictions,
    reference_predictions_path,
)
from ctl.report.tables import QUALITY_METRICS, row_groups


@dataclass(frozen=True)
class KnownIds:
    """Ids of the users and items of the target domain's rows before t0."""

    users: np.ndarray
    items: np.ndarray


@functools.lru_cache(maxsize=8)
def _dataset(path: Path) -> Dataset:
    # validated when the run was trained; the fingerprint check below catches a changed dataset
    return load_dataset(path, validate=False)


def known_ids(run: Run) -> KnownIds:
    """The reference ids of ``run``'s target domain, from the dataset it was trained on."""
    if run.dataset_path is None:
        raise CtlError(f"{run.path}/metrics.json has no dataset_path; the cold-start table needs the dataset")
    if not (run.dataset_path / "meta.yaml").is_file():
        raise CtlError(f"the cold-start table needs the dataset of {run.path} at {run.dataset_path}, which is "
                       "missing; regenerate it (ctl data generate with the run's data config) or copy it there")
    dataset = _dataset(run.dataset_path)
    if dataset.fingerprint() != run.dataset:
        raise CtlError(f"the dataset at {run.dataset_path} (fingerprint {dataset.fingerprint()}) is not the one "
                       f"{run.path} was trained on ({run.dataset})")
    before = dataset.select(domains=[run.target], periods=range(dataset.schema.t0))
    return KnownIds(users=dataset.rows["user_id"][before], items=dataset.rows["item_id"][before])


def _gains(run: Run, model: Predictions, base_path: Path) -> dict[str, dict]:
    """``model``'s gains over base's predictions at ``base_path`` on every cold-start slice of ``run``'s target."""
    model, base_pred = paired_predictions(model, read_predictions(base_path),
                                          f"{run.label} on {run.target}, seed {run.seed}")
    known = known_ids(run)
    slices = cold_start_slices(model.user_id, model.item_id, known.users, known.items)
    return cold_start_gains(model.label, model.pred, base_pred, model.user_id, slices)


def _slice_records(head: Run, gains_by_seed: dict[int, dict[str, dict]]) -> list[dict]:
    first = gains_by_seed[min(gains_by_seed)]
    return [record("coldstart", head, name, metric,
                   {seed: gains[name][metric] for seed, gains in gains_by_seed.items()},
                   {seed: gains[name][f"base_{metric}"] for seed, gains in gains_by_seed.items()},
                   period=head.test.get("period"), rows=first[name]["rows"])
            for name in COLD_START_SLICES for metric in QUALITY_METRICS]


def coldstart_records(runs: Sequence[Run], oracle: Mapping[str, tuple] | None = None) -> list[dict]:
    """Per method (not base), target and slice of :data:`COLD_START_SLICES`: AUC/GAUC and gains.

    Each record's ``mean`` is the method's metric on the slice, ``base`` base's on the same rows,
    ``delta`` the gain (paired by seed), ``rows`` the slice's row count. ``oracle``: target ->
    (head, :class:`~ctl.report.oracle.OracleSlice`) adds the oracle's records (its value is the same
    for every seed, so ``std`` is None). Refuses runs without a method to compare with base.
    """
    groups = row_groups(runs)
    records = []
    base_paths: dict[str, dict[int, tuple[Run, Path]]] = {}
    for (label, target), group in groups.items():
        if label == BASE:
            continue
        base_runs = groups.get((BASE, target), [])
        gains_by_seed = {}
        for run in group:
            base_path = reference_predictions_path(run, base_runs)
            if run.predictions is None or base_path is None or not base_path.is_file():
                continue
            gains_by_seed[run.seed] = _gains(run, read_predictions(run.predictions), base_path)
            base_paths.setdefault(target, {}).setdefault(run.seed, (run, base_path))
        if gains_by_seed:
            records += _slice_records(group[0], gains_by_seed)
    for target, (head, slice_) in (oracle or {}).items():
        if target not in base_paths:
            continue
        truth = replace(slice_.rows, pred=slice_.prob)
        gains = {seed: _gains(run, truth, path) for seed, (run, path) in base_paths[target].items()}
        oracle_rows = _slice_records(head, gains)
        for rec in oracle_rows:
            rec["std"], rec["oracle"] = None, rec["mean"]
        records += oracle_rows
    fill_headroom(records)
    if not records:
        raise CtlError("the cold-start table needs runs of a method besides base with predictions.parquet, and "
                       "base's predictions of the same seed (a base run, or a transfer run's target track); "
                       "none of these runs has both")
    return records
