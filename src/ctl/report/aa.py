"""A/A calibration (``ctl eval --table aa``): how often each test of ``ctl eval`` calls noise a difference.

The runs of ``ctl sweep experiment=aa`` train one method several times where only randomness
differs, so no difference between two of them is real and every interval that excludes 0 is a
false positive. Per method, target and metric, each test's false-positive rate at the nominal 5%:

* the per-seed tests, on every pair of runs of the method (rows paired by id): the paired user
  bootstrap (:func:`ctl.metrics.paired_bootstrap`) and, for AUC, DeLong's test
  (:func:`ctl.metrics.delong_test`). The pairs come in two kinds: *transfer only* (the same
  ``seed``, so the same production tracks, another ``transfer_seed``: only the transfer periods'
  batch order and adapter init differ) and *seed* (another ``seed``, the same ``transfer_seed``:
  everything trained differs); pairs that differ in both are left out, as they repeat the others;
* the seed-aware tests (:func:`ctl.report.significance.seed_aware`): for every two transfer seeds
  ``a`` and ``b`` and every set of >= 2 seeds both have, the runs of ``a`` against those of ``b``
  over those seeds, paired by seed: Student's t over the seeds' deltas and the two-level (seeds x
  users) bootstrap; the kind of pair names how many seeds (``2 seeds``, ``3 seeds``).

Base rows (read from the transfer runs' ``baseline`` records) give seed pairs of base itself.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import numpy as np

from ctl.errors import CtlError
from ctl.methods import method_rank
from ctl.report.records import RECORD_KEYS
from ctl.report.runs import Run
from ctl.report.significance import (
    ALPHA,
    T_OVER_SEEDS,
    TWO_LEVEL,
    USER_BOOTSTRAP,
    compare_paired,
    paired_predictions,
    read_predictions,
    seed_aware,
)
from ctl.report.tables import QUALITY_METRICS

DELONG = "DeLong"
TRANSFER_ONLY, SEED = "transfer only", "seed"
#: the tests in the order the table shows them, with the kind of pairs each is run on
PER_SEED_TESTS: tuple[str, ...] = (USER_BOOTSTRAP, DELONG)
SEED_AWARE_TESTS: tuple[str, ...] = (T_OVER_SEEDS, TWO_LEVEL)


def transfer_seed(run: Run) -> int | None:
    value = run.settings.get("transfer_seed")
    return None if value is None else int(value)


def _replicates(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (method, target) that differ in ``seed`` and ``transfer_seed`` alone."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        # a key at null is the key left out (runs of older configs lack it)
        rest = json.dumps({k: v for k, v in run.settings.items() if k != "transfer_seed" and v is not None},
                          sort_keys=True, default=str)
        groups.setdefault((run.method, run.target, rest), []).append(run)
    named: dict[tuple[str, str], list[Run]] = {}
    for (method, target, _), group in sorted(groups.items(), key=lambda item: (method_rank(item[0][0]), item[0][1:])):
        if (method, target) in named:
            raise CtlError(f"the runs of {method} on {target} differ in settings besides seed and transfer_seed "
                           f"(e.g. {group[0].path}); an A/A compares runs where only randomness differs")
        named[(method, target)] = sorted(group, key=lambda r: (r.seed, transfer_seed(r) if transfer_seed(r) is not None
                                                                else -1))
    return named


def _pair_outcomes(group: Sequence[Run], n_resamples: int) -> list[dict]:
    """Per pair of runs that differ in seed or in transfer seed (not both): its kind, and per metric the
    delta and whether each per-seed test called it."""
    outcomes = []
    for a, b in itertools.combinations(group, 2):
        if a.predictions is None or b.predictions is None or (a.seed != b.seed and transfer_seed(a) != transfer_seed(b)):
            continue
        what = f"{a.method} on {a.target}, seed {a.seed}/{b.seed}, transfer seed {transfer_seed(a)}/{transfer_seed(b)}"
        rows, other = paired_predictions(read_predictions(a.predictions), read_predictions(b.predictions), what,
                                         "its replicate")
        result = compare_paired(rows.label, rows.pred, other, rows.user_id, n_resamples)
        outcome: dict[str, object] = {"kind": TRANSFER_ONLY if a.seed == b.seed else SEED}
        for metric in QUALITY_METRICS:
            called = {USER_BOOTSTRAP: result[metric]["significant"]}
            if metric == "auc":
                called[DELONG] = result["auc"]["p_value"] < ALPHA
            outcome[metric] = {"delta": result[metric]["delta"], "called": called}
        outcomes.append(outcome)
    return outcomes


def _seed_aware_outcomes(group: Sequence[Run], n_resamples: int) -> list[dict]:
    """Per two transfer seeds and set of >= 2 seeds both have: per metric the mean delta and what each
    seed-aware test called."""
    by_transfer: dict[int, dict[int, Run]] = {}
    for run in group:
        if (transfer := transfer_seed(run)) is not None and run.predictions is not None:
            by_transfer.setdefault(transfer, {})[run.seed] = run
    outcomes = []
    for a, b in itertools.combinations(sorted(by_transfer), 2):
        shared = sorted(set(by_transfer[a]) & set(by_transfer[b]))
        # every set of >= 2 shared seeds: a claim may rest on any of them
        for seeds in (c for k in range(2, len(shared) + 1) for c in itertools.combinations(shared, k)):
            outcomes.append(_seed_aware_outcome(by_transfer[a], by_transfer[b], seeds, n_resamples))
    return outcomes


def _seed_aware_outcome(first_runs: dict[int, Run], second_runs: dict[int, Run], seeds: Sequence[int],
                        n_resamples: int) -> dict:
    """One seed-aware A/A test: the runs of one transfer seed against another's over ``seeds``, paired by seed."""
    pairs = []
    for seed in seeds:
        first, second = first_runs[seed], second_runs[seed]
        rows, other = paired_predictions(read_predictions(first.predictions), read_predictions(second.predictions),
                                         f"{first.method} on {first.target}, seed {seed}", "its replicate")
        pairs.append((rows.label, rows.pred, other, rows.user_id))
    aware = seed_aware(pairs, n_resamples)
    return {"kind": f"{len(seeds)} seeds", **{
        m: {"delta": aware[m]["delta"], "called": {T_OVER_SEEDS: aware[m]["t"]["significant"],
                                                    TWO_LEVEL: aware[m]["two_level"]["significant"]}}
        for m in QUALITY_METRICS}}


def _record(head: Run, metric: str, test: str, kind: str, outcomes: Sequence[dict]) -> dict:
    called = [o[metric]["called"][test] for o in outcomes]
    deltas = [o[metric]["delta"] for o in outcomes]
    rec = dict.fromkeys(RECORD_KEYS)
    rec.update(table="aa", dataset=head.dataset, dataset_name=head.dataset_name, model=head.method,
               method=head.method, source=head.source, target=head.target, slice="test", metric=metric,
               mean=sum(called) / len(called), n=len(called), values=deltas, seeds=[],
               aa={"test": test, "pairs": kind, "tests": len(called), "false_positives": sum(called),
                   "rate": sum(called) / len(called), "nominal": ALPHA,
                   "delta_sd": float(np.std(deltas, ddof=1)) if len(deltas) > 1 else None})
    return rec


def aa_records(runs: Sequence[Run], n_resamples: int) -> list[dict]:
    """The aa table of one dataset's runs: a record per method, target, metric, test and kind of pair.

    A record's ``mean`` is the false-positive rate, ``n`` the tests, ``values`` the deltas tested and
    ``aa`` holds ``test``, ``pairs``, ``tests``, ``false_positives``, ``rate``, ``nominal`` and
    ``delta_sd`` (the spread of the A/A deltas). Refuses ``n_resamples < 1`` and runs without a pair.
    """
    if n_resamples < 1:
        raise CtlError("the aa table needs --bootstrap N > 0: it measures the bootstrap's false positives")
    records = []
    for group in _replicates(runs).values():
        per_seed = _pair_outcomes(group, n_resamples)
        aware = _seed_aware_outcomes(group, n_resamples)
        for metric in QUALITY_METRICS:
            for test in PER_SEED_TESTS:
                for kind in (TRANSFER_ONLY, SEED):
                    of_kind = [o for o in per_seed if o["kind"] == kind and test in o[metric]["called"]]
                    if of_kind:
                        records.append(_record(group[0], metric, test, kind, of_kind))
            for test in SEED_AWARE_TESTS:
                for kind in sorted({o["kind"] for o in aware}):
                    records.append(_record(group[0], metric, test, kind, [o for o in aware if o["kind"] == kind]))
    if not records:
        raise CtlError("the aa table needs several runs of one method that differ only in seed or transfer_seed "
                       "(ctl sweep experiment=aa); these runs hold no such pair")
    return records
