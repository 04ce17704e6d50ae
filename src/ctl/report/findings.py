"""The paper's six findings (F1 twice: with and without the methods since the paper) as verdicts on run folders (``ctl eval --table findings``).

Each finding is checked on one or more *parts* (a target domain, a metric, a slice of test rows),
each part a comparison ``X − Y`` of two methods. For a part, every seed where both methods have
test predictions gives the point delta ``Δ_s`` on the rows the two share (paired by ``row``) and
its 95% paired user-bootstrap interval ``[low_s, high_s]``, which covers the test slice only
(:func:`ctl.report.significance.compare_paired`, the resamples of ``ctl eval``'s significance table).
The verdict rests on the part's *interval*: with ``n >= 2`` seeds the seed-aware interval of the mean
of ``Δ_s`` (:func:`ctl.report.significance.seed_aware`: Student's t over the ``Δ_s``, which counts the
training noise); with one seed that seed's test-slice interval:

* **holds**: the interval lies above 0;
* **does not hold**: the interval lies below 0: the evidence against a claim is held to the
  standard of the evidence for it;
* **not shown**: the interval holds 0: the runs show neither, e.g. a difference of −0.0002, or a
  gain significant on the test slice in every seed whose seeds disagree by as much;
* **not measured**: no seed to pair (a method the part needs is missing, or the metric is undefined
  on its rows).

A finding's verdict combines its parts: *not measured* if none is measured; *holds* (*does not
hold*, *not shown*) if every measured part holds (does not hold, is not shown); *mixed* otherwise
(its parts disagree). The parts:

* **F1** CTNet above every baseline: per target and metric, ``ctnet −`` the best other method by
  mean test value (CTNet's own variants aside), the methods published since the paper
  (:data:`ctl.methods.ADDED_METHODS`) included. Needs a baseline besides base.
* **F1p** CTNet above every baseline of the paper: F1 with the methods since the paper left out,
  the paper's own claim; its rule names the methods it leaves out.
* **F2** fine-tuning all parameters on little data below base: per target and metric,
  ``base − ft_all`` (``ft_all`` fine-tuned from t0 on, ``model.finetune_periods=0``).
* **F3** continual above transfer once, the gap growing: per target and metric, ``ctnet −
  ctnet_once`` on the test slice, and the least-squares slope of the mean (over seeds) gap on the
  slice after each transfer period (``ctl eval --table periods``) against the period. The part holds
  if the test comparison holds and the slope is > 0; takes the test comparison's verdict when that
  does not hold or is not shown; mixed otherwise (a test gain whose gap does not grow, also with a
  single transfer period, where no slope exists).
* **F4** GLU above linear adapters: per target and metric, ``ctnet − ctnet_linear``.
* **F5** a larger gain on C than on B: per metric, ``D_s = (ctnet − base on C) − (ctnet − base on
  B)``. The two test slices are independent, so ``D_s``'s test-slice interval is ``D_s ± 1.96
  √(se_C² + se_B²)``, each ``se`` read off its bootstrap interval as ``(high − low) / (2 · 1.96)``;
  over >= 2 seeds the part's interval is Student's t over the ``D_s``.
* **F6** gains on new users and new items: per target, metric and slice (new users, new items of
  :mod:`ctl.report.coldstart`), ``ctnet − base`` on the slice's rows.

Runs are matched by row label (``ctnet``, ``ctnet_once``, ``ctnet_linear``, ``ft_all``, ``base``):
a run labelled with a setting (``ctnet[...]``) is not one of them. ``ctl sweep experiment=paper``
runs every method the table needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ctl.errors import CtlError
from ctl.methods import ADDED_METHODS, BASE, CTNET, is_ctnet_family, method_rank
from ctl.metrics import cold_start_slices, seed_t_interval
from ctl.report.coldstart import known_ids
from ctl.report.records import RECORD_KEYS
from ctl.report.runs import Run, mean_test
from ctl.report.significance import (
    ALPHA,
    SEEDS_AND_USERS,
    T_OVER_SEEDS,
    TEST_SLICE_ONLY,
    USER_BOOTSTRAP,
    compare_paired,
    interval,
    paired_predictions,
    read_predictions,
    reference_predictions_path,
    seed_aware,
)
from ctl.report.tables import QUALITY_METRICS, TEST, row_groups

HOLDS, DOES_NOT_HOLD, NOT_SHOWN, MIXED, NOT_MEASURED = "holds", "does not hold", "not shown", "mixed", "not measured"
#: every verdict, in the order a summary counts them
VERDICTS: tuple[str, ...] = (HOLDS, DOES_NOT_HOLD, NOT_SHOWN, MIXED, NOT_MEASURED)
ONCE, LINEAR, FINETUNE = "ctnet_once", "ctnet_linear", "ft_all"
#: the two targets of F5, the sparser one first
SPARSE, DENSE = "C", "B"
#: the cold-start slices of F6
NEW_SLICES: tuple[str, ...] = ("new users", "new items")
#: the normal quantile of a 95% two-sided interval
Z95 = 1.959963984540054

FINDINGS: tuple[tuple[str, str, str], ...] = (
    ("F1", "CTNet above every baseline",
     ("per target and metric: ctnet − the best other method by mean test value (CTNet variants aside; "
      f"the methods since the paper, {', '.join(ADDED_METHODS)}, included; needs a baseline besides base)")),
    ("F1p", "CTNet above every baseline of the paper",
     (f"as F1 without the methods added beyond the paper ({', '.join(ADDED_METHODS)}): ctnet − the best of "
      "the paper's baselines by mean test value")),
    ("F2", "fine-tuning all parameters on little data (ft_all from t0) below base",
     "per target and metric: base − ft_all"),
    ("F3", "continual transfer (ctnet) above transfer once (ctnet_once), the gap growing over periods",
     ("per target and metric: ctnet − ctnet_once on the test slice, and the slope of the gap over the transfer "
      "periods > 0")),
    ("F4", "GLU adapters (ctnet) above linear adapters (ctnet_linear)",
     "per target and metric: ctnet − ctnet_linear"),
    ("F5", "a larger gain over base on C than on B",
     "per metric: (ctnet − base on C) − (ctnet − base on B), interval ±1.96·√(se_C² + se_B²) per seed"),
    ("F6", "gains over base on new users and new items",
     "per target, metric and slice (new users, new items): ctnet − base on the slice's rows"),
)
GENERIC_RULE = ("holds: the 95% interval of the mean Δ lies above 0; does not hold: below 0; not shown: it holds "
                "0; not measured: a method it needs is missing. The interval: over >= 2 seeds Student's t over the "
                "seeds' Δ (training noise counted); with one seed its paired user bootstrap (test slice only). A "
                "finding holds (does not hold, is not shown) when every measured part does, mixed otherwise")


@dataclass(frozen=True)
class SeedDelta:
    """One seed's point delta and its 95% interval."""

    seed: int
    delta: float
    low: float
    high: float


def rule_verdict(claim: dict | None) -> str:
    """The verdict of one part from its interval (:func:`part_interval`; None: nothing measured)."""
    if claim is None:
        return NOT_MEASURED
    if claim["low"] > 0:
        return HOLDS
    if claim["high"] < 0:
        return DOES_NOT_HOLD
    return NOT_SHOWN


def part_interval(deltas: Sequence[SeedDelta], aware: dict | None = None) -> dict | None:
    """The interval a part's verdict rests on: ``aware`` (a :func:`ctl.report.significance.seed_aware`
    metric entry, with ``covers``) where given; else, over >= 2 seeds, Student's t over the seeds'
    deltas; with one seed, that seed's test-slice interval. None without a seed."""
    if aware is not None:
        return aware
    if not deltas:
        return None
    if len(deltas) == 1:
        (d,) = deltas
        return {**interval(d.delta, d.low, d.high), "test": USER_BOOTSTRAP, "covers": TEST_SLICE_ONLY}
    t = seed_t_interval([d.delta for d in deltas], ALPHA)
    return {**interval(t["delta"], t["low"], t["high"]), "test": T_OVER_SEEDS, "covers": SEEDS_AND_USERS}


def combine(verdicts: Sequence[str]) -> str:
    """A finding's verdict from its parts': the verdict of measured parts that all agree, else mixed."""
    measured = {v for v in verdicts if v != NOT_MEASURED}
    if not measured:
        return NOT_MEASURED
    return measured.pop() if len(measured) == 1 else MIXED


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ``ys`` on ``xs``; None with fewer than two distinct ``xs``."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    dx = x - x.mean()
    return float(dx @ (y - y.mean()) / (dx @ dx))


def part(target: str | None, metric: str, compared: str, deltas: Sequence[SeedDelta], slice_name: str = TEST,
         note: str | None = None, verdict: str | None = None, aware: dict | None = None, **extra: object) -> dict:
    """One part's evidence: the comparison, its per-seed deltas, the interval its verdict rests on
    (:func:`part_interval`, ``aware`` where the seeds' predictions gave one) and its verdict."""
    n = len(deltas)
    claim = part_interval(deltas, aware)
    return {
        "target": target, "slice": slice_name, "metric": metric, "compared": compared,
        "mean": math.fsum(d.delta for d in deltas) / n if n else None, "seeds": n,
        "interval": None if claim is None else {k: claim[k] for k in ("delta", "low", "high", "test", "covers")},
        "above": sum(d.low > 0 for d in deltas), "below": sum(d.high < 0 for d in deltas),
        "per_seed": [{"seed": d.seed, "delta": d.delta, "low": d.low, "high": d.high} for d in deltas],
        **extra, "verdict": verdict or rule_verdict(claim), "note": note,
    }


class Comparisons:
    """Paired per-seed deltas between two methods' test predictions, computed once each."""

    def __init__(self, runs: Sequence[Run], n_resamples: int) -> None:
        self.groups = row_groups(runs)
        self.n_resamples = n_resamples
        self._cache: dict[tuple, tuple[dict[str, list[SeedDelta]], str | None, dict | None]] = {}

    def labels(self, target: str) -> list[str]:
        return [label for label, t in self.groups if t == target]

    def targets(self) -> list[str]:
        return sorted({t for _, t in self.groups})

    def has(self, label: str, target: str) -> bool:
        return (label, target) in self.groups

    def deltas(self, x: str, y: str, target: str, slice_name: str = TEST) -> tuple[dict[str, list[SeedDelta]], str | None]:
        """metric -> the seeds' deltas of ``x − y`` on ``target``'s ``slice_name`` rows; and a note
        on what could not be measured (None if nothing was left out)."""
        found, note, _ = self._evidence(x, y, target, slice_name)
        return found, note

    def aware(self, x: str, y: str, target: str, metric: str, slice_name: str = TEST) -> dict | None:
        """The seed-aware interval of ``x − y`` on ``metric`` (:func:`ctl.report.significance.seed_aware`),
        with what it ``covers``; None without a paired seed."""
        whole = self._evidence(x, y, target, slice_name)[2]
        return None if whole is None else {"covers": whole["covers"], **whole[metric]}

    def _evidence(self, x: str, y: str, target: str, slice_name: str) -> tuple[dict[str, list[SeedDelta]], str | None,
                                                                               dict | None]:
        key = (x, y, target, slice_name)
        if key not in self._cache:
            self._cache[key] = self._compute(x, y, target, slice_name)
        return self._cache[key]

    def _compute(self, x: str, y: str, target: str, slice_name: str) -> tuple[dict[str, list[SeedDelta]], str | None,
                                                                              dict | None]:
        found: dict[str, list[SeedDelta]] = {m: [] for m in QUALITY_METRICS}
        if not self.has(x, target) or not self.has(y, target):
            missing = [label for label in (x, y) if not self.has(label, target)]
            return found, f"no {' or '.join(missing)} runs on {target}", None
        problems = []
        pairs = []
        for run in self.groups[(x, target)]:
            path = reference_predictions_path(run, self.groups[(y, target)], versus=y)
            if run.predictions is None or path is None or not path.is_file():
                continue
            try:
                model, reference = paired_predictions(read_predictions(run.predictions), read_predictions(path),
                                                      f"{x} on {target}, seed {run.seed}", y)
                keep = self._mask(run, model.user_id, model.item_id, slice_name)
                pair = (model.label[keep], model.pred[keep], reference[keep], model.user_id[keep])
                result = compare_paired(*pair, self.n_resamples)
            except (ValueError, CtlError) as exc:
                problems.append(f"seed {run.seed}: {str(exc).strip()}")
                continue
            pairs.append(pair)
            for metric in QUALITY_METRICS:
                r = result[metric]
                found[metric].append(SeedDelta(run.seed, r["delta"], r["low"], r["high"]))
        note = None
        if problems:
            note = "; ".join(problems)
        elif not found["auc"]:
            note = f"no seed where {x} and {y} both have test predictions on {target}"
        return found, note, seed_aware(pairs, self.n_resamples) if pairs else None

    @staticmethod
    def _mask(run: Run, users: np.ndarray, items: np.ndarray, slice_name: str) -> np.ndarray:
        if slice_name == TEST:
            return np.ones(len(users), dtype=bool)
        known = known_ids(run)
        return cold_start_slices(users, items, known.users, known.items)[slice_name]


def _pairwise(cmp: Comparisons, x: str, y: str, slice_name: str = TEST) -> list[dict]:
    parts = []
    for target in cmp.targets():
        by_metric, note = cmp.deltas(x, y, target, slice_name)
        for metric in QUALITY_METRICS:
            parts.append(part(target, metric, f"{x} − {y}", by_metric[metric], slice_name, note,
                              aware=cmp.aware(x, y, target, metric, slice_name)))
    return parts


def _is_added(label: str) -> bool:
    """Whether a row label is a method published since the paper (or a variant of one)."""
    return any(label == m or label.startswith(f"{m}_") for m in ADDED_METHODS)


def _f1(cmp: Comparisons, paper_only: bool = False) -> list[dict]:
    parts = []
    for target in cmp.targets():
        others = [label for label in cmp.labels(target)
                  if not is_ctnet_family(label) and not (paper_only and _is_added(label))]
        for metric in QUALITY_METRICS:
            if not cmp.has(CTNET, target) or not [label for label in others if label != BASE]:
                what = "no ctnet runs" if not cmp.has(CTNET, target) else "no baseline besides base"
                parts.append(part(target, metric, "ctnet − best other", [], note=f"{what} on {target}"))
                continue
            means = {label: mean_test(cmp.groups[(label, target)], metric) for label in others}
            best = max(sorted(others, key=method_rank), key=means.__getitem__)
            by_metric, note = cmp.deltas(CTNET, best, target)
            parts.append(part(target, metric, f"ctnet − {best}", by_metric[metric], note=note,
                              aware=cmp.aware(CTNET, best, target, metric), best_other=best, baselines=len(others)))
    return parts


def _f3(cmp: Comparisons) -> list[dict]:
    parts = []
    for target in cmp.targets():
        by_metric, note = cmp.deltas(CTNET, ONCE, target)
        for metric in QUALITY_METRICS:
            aware = cmp.aware(CTNET, ONCE, target, metric)
            test_verdict = rule_verdict(part_interval(by_metric[metric], aware))
            periods, gaps = _period_gaps(cmp, target, metric)
            growth = slope(periods, gaps)
            if test_verdict != HOLDS:
                verdict = test_verdict
            else:
                verdict = HOLDS if growth is not None and growth > 0 else MIXED
            parts.append(part(target, metric, "ctnet − ctnet_once", by_metric[metric], note=note, verdict=verdict,
                              aware=aware,
                              test_verdict=test_verdict, slope=growth,
                              period_gaps=[{"period": p, "gap": g} for p, g in zip(periods, gaps)]))
    return parts


def _period_gaps(cmp: Comparisons, target: str, metric: str) -> tuple[list[int], list[float]]:
    """Per transfer period: the mean over seeds of (ctnet − ctnet_once) on the slice after it."""
    if not cmp.has(CTNET, target) or not cmp.has(ONCE, target):
        return [], []
    def by_seed(label: str) -> dict[int, dict[int, float]]:
        return {run.seed: {r["period"]: value for r in run.periods if (value := r.get(metric)) is not None}
                for run in cmp.groups[(label, target)]}

    continual, once = by_seed(CTNET), by_seed(ONCE)
    periods, gaps = [], []
    for period in sorted({p for values in continual.values() for p in values}):
        diffs = [continual[s][period] - once[s][period] for s in continual
                 if s in once and period in continual[s] and period in once[s]]
        diffs = [d for d in diffs if not math.isnan(d)]
        if diffs:
            periods.append(period)
            gaps.append(math.fsum(diffs) / len(diffs))
    return periods, gaps


def _f5(cmp: Comparisons) -> list[dict]:
    parts = []
    sparse, sparse_note = cmp.deltas(CTNET, BASE, SPARSE)
    dense, dense_note = cmp.deltas(CTNET, BASE, DENSE)
    for metric in QUALITY_METRICS:
        on_dense = {d.seed: d for d in dense[metric]}
        deltas = []
        for c in sparse[metric]:
            b = on_dense.get(c.seed)
            if b is None:
                continue
            difference = c.delta - b.delta
            spread = Z95 * math.hypot((c.high - c.low) / (2 * Z95), (b.high - b.low) / (2 * Z95))
            deltas.append(SeedDelta(c.seed, difference, difference - spread, difference + spread))
        note = "; ".join(n for n in (sparse_note, dense_note) if n) or None
        parts.append(part(f"{SPARSE} vs {DENSE}", metric, f"(ctnet − base on {SPARSE}) − (ctnet − base on {DENSE})",
                          deltas, note=note))
    return parts


def _f6(cmp: Comparisons) -> list[dict]:
    return [p for slice_name in NEW_SLICES for p in _pairwise(cmp, CTNET, BASE, slice_name)]


CHECKS: dict[str, tuple[str, Callable[[Comparisons], list[dict]]]] = {
    "F1": (CTNET, _f1),
    "F1p": (CTNET, lambda cmp: _f1(cmp, paper_only=True)),
    "F2": (BASE, lambda cmp: _pairwise(cmp, BASE, FINETUNE)),
    "F3": (CTNET, _f3),
    "F4": (CTNET, lambda cmp: _pairwise(cmp, CTNET, LINEAR)),
    "F5": (CTNET, _f5),
    "F6": (CTNET, _f6),
}


def findings_records(runs: Sequence[Run], n_resamples: int) -> list[dict]:
    """Seven records, one per finding (:data:`FINDINGS`), for the runs of one dataset.

    Each has ``finding``, ``verdict``, ``rule`` and ``evidence`` (its parts, see :func:`part`);
    ``model`` names the method the finding is about, ``target`` the targets its parts cover,
    ``seeds`` the seeds they paired. Refuses ``n_resamples < 1``: the verdicts rest on intervals.
    """
    if n_resamples < 1:
        raise CtlError("the findings table needs --bootstrap N > 0: its verdicts rest on paired bootstrap intervals")
    cmp = Comparisons(runs, n_resamples)
    head = runs[0]
    records = []
    for key, claim, rule in FINDINGS:
        subject, check = CHECKS[key]
        parts = check(cmp)
        seeds = sorted({s["seed"] for p in parts for s in p["per_seed"]})
        targets = sorted({p["target"] for p in parts if p["verdict"] != NOT_MEASURED})
        rec = dict.fromkeys(RECORD_KEYS)
        rec.update(table="findings", dataset=head.dataset, dataset_name=head.dataset_name, model=subject,
                   method=subject, source=head.source, target=",".join(targets) or None, n=len(seeds), seeds=seeds,
                   values=[], finding=f"{key} {claim}", verdict=combine([p["verdict"] for p in parts]), rule=rule,
                   evidence=parts)
        records.append(rec)
    return records
