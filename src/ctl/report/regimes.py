"""The regime map: where continual transfer pays, over the cells of ``ctl sweep experiment=regimes``.

A *cell* is one world of the map: the runs of one dataset whose config names the levels of its
target knobs (``regime.volume``, ``regime.gap``, ``regime.drift``; set by ``conf/regime/``). Per
cell, target and method, on the test slice:

* the AUC/GAUC gain over base, the mean over seeds, with the 95% seed-aware interval of that mean
  (:func:`ctl.report.significance.seed_aware`: Student's t over the seeds' deltas with >= 2 seeds,
  the paired user bootstrap of the test slice only with one); a gain is *significant* where the
  interval excludes 0;
* the share of base's oracle headroom it captures and the rows the method trained on itself;
* its rank; the winner (rank 1, base included) carries its margin over the runner-up, and CTNet its
  margin over the best other method (the best of the methods outside the CTNet family, base
  included), each with the same kind of interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ctl.errors import CtlError
from ctl.methods import BASE, CTNET, is_ctnet_family
from ctl.report.oracle import OracleSlice, headroom_share
from ctl.report.records import record
from ctl.report.runs import Run, mean_test
from ctl.report.significance import seed_aware, seed_pairs
from ctl.report.tables import QUALITY_METRICS, TEST, row_groups

KNOBS: tuple[str, ...] = ("volume", "gap", "drift")
#: the levels of every knob, in the map's order (conf/regime/<knob>/<level>.yaml)
LEVELS: tuple[str, ...] = ("low", "mid", "high")


@dataclass(frozen=True)
class Cell:
    """A cell of the map: the level of each knob (:data:`KNOBS`)."""

    volume: str
    gap: str
    drift: str

    @property
    def code(self) -> str:
        """``lhm`` for volume low, gap high, drift mid: the cell's config name (``+regime=<code>``)."""
        return "".join(level[0] for level in self.levels)

    @property
    def levels(self) -> tuple[str, str, str]:
        return self.volume, self.gap, self.drift

    def sort_key(self) -> tuple:
        return tuple((LEVELS.index(v) if v in LEVELS else len(LEVELS), v) for v in self.levels)


def cell_of(runs: Sequence[Run]) -> Cell | None:
    """The cell the runs of one dataset name (None: none of them names one); refuses runs that disagree."""
    cells = {tuple(run.settings.get(f"regime.{k}") for k in KNOBS) for run in runs}
    named = {c for c in cells if any(v is not None for v in c)}
    if not named:
        return None
    if len(cells) > 1:
        raise CtlError(f"the runs of dataset {runs[0].dataset} name different regime cells "
                       f"({sorted(map(str, cells))}); one dataset is one cell of the map")
    (levels,) = named
    missing = [k for k, v in zip(KNOBS, levels) if v is None]
    if missing:
        raise CtlError(f"{runs[0].path}: regime.{missing[0]} is missing; a cell names all of {', '.join(KNOBS)}")
    return Cell(*(str(v) for v in levels))




def compare(group: Sequence[Run], reference: Sequence[Run], n_resamples: int, what: str) -> dict | None:
    """The seed-aware comparison of ``group`` with ``reference`` (:func:`ctl.report.significance.seed_aware`):
    per metric ``delta``, ``low``, ``high``, ``significant`` and what the interval ``covers``; plus
    ``seeds`` and ``resamples``. None without a pair."""
    versus = reference[0].label if reference else BASE
    pairs = seed_pairs(group, reference, what, versus)
    if not pairs:
        return None
    try:
        return seed_aware(pairs, n_resamples)
    except ValueError as exc:
        raise CtlError(f"{what}: {exc}") from exc


def cell_records(runs: Sequence[Run], cell: Cell, oracle: dict[str, tuple[Run, OracleSlice]],
                 n_resamples: int) -> list[dict]:
    """The regimes records of one cell (one dataset's runs): see the module's docstring."""
    groups = row_groups(runs)
    records = []
    for target in sorted({t for _, t in groups}):
        own = {label: g for (label, t), g in groups.items() if t == target}
        if BASE not in own:
            raise CtlError(f"cell {cell.code}, target {target}: no base run; the regimes table reads gains over "
                           "base (ctl sweep experiment=regimes runs model=base in every cell)")
        oracle_value = {m: oracle[target][1].metric(m) for m in QUALITY_METRICS} if target in oracle else {}
        records += _target_records(own, cell, target, oracle_value, n_resamples)
    return records


def _target_records(own: dict[str, list[Run]], cell: Cell, target: str, oracle_value: dict[str, float | None],
                    n_resamples: int) -> list[dict]:
    regime = {**dict(zip(KNOBS, cell.levels)), "cell": cell.code}
    base = own[BASE]
    compared: dict[tuple[str, str], dict | None] = {}

    def versus(label: str, other: str) -> dict | None:
        # each pair bootstraps once, for both metrics
        if (label, other) not in compared:
            compared[(label, other)] = compare(own[label], own[other], n_resamples,
                                               f"{label} vs {other} on {target}, cell {cell.code}")
        return compared[(label, other)]

    records = []
    for metric in QUALITY_METRICS:
        ranked = sorted(own, key=lambda label: -mean_test(own[label], metric))
        others = [label for label in ranked if not is_ctnet_family(label)]
        for label, group in own.items():
            rec = record("regimes", group[0], TEST, metric, {r.seed: r.test.get(metric) for r in group},
                         {r.seed: r.test.get(metric) for r in base} if label != BASE else None,
                         period=group[0].test.get("period"), rows=group[0].test.get("rows"))
            comparison = versus(label, BASE) if label != BASE else None
            rec["significance"] = None if comparison is None else {
                "versus": BASE, "seeds": comparison["seeds"], "resamples": comparison["resamples"],
                "alpha": comparison["alpha"], "covers": comparison["covers"], **comparison[metric]}
            rec["oracle"] = oracle_value.get(metric)
            if label != BASE:
                rec["headroom_share"] = headroom_share(rec["delta"], rec["base"], rec["oracle"])
            rec["regime"] = regime
            rec["rank"] = ranked.index(label) + 1
            if rec["rank"] == 1 and len(ranked) > 1:
                rec["runner_up"] = _margin(versus(label, ranked[1]), ranked[1], metric)
            if label == CTNET and others:
                rec["best_other"] = _margin(versus(label, others[0]), others[0], metric)
            records.append(rec)
    for label, group in own.items():
        rec = record("regimes", group[0], TEST, "own_rows", {r.seed: r.cost.own_rows for r in group})
        rec["regime"] = regime
        records.append(rec)
    return records


def _margin(comparison: dict | None, other_label: str, metric: str) -> dict:
    """A :func:`compare` result on ``metric``, named by the ``model`` compared with."""
    if comparison is None:
        return {"model": other_label, "delta": None, "low": None, "high": None, "significant": None}
    return {"model": other_label, "covers": comparison["covers"], **comparison[metric]}


def regimes_records(datasets: Sequence[tuple[Sequence[Run], dict]], n_resamples: int) -> list[dict]:
    """The regimes table over several datasets (cells): ``datasets`` = (runs, oracle by target) each.

    Refuses runs of which no dataset names a cell, and two datasets naming the same cell.
    """
    if n_resamples < 1:
        raise CtlError("the regimes table needs significance: --bootstrap must be >= 1")
    cells: dict[Cell, list[dict]] = {}
    for runs, oracle in datasets:
        cell = cell_of(runs)
        if cell is None:
            continue
        if cell in cells:
            raise CtlError(f"two datasets are cell {cell.code} of the map (the second: {runs[0].dataset}); "
                           "evaluate one regimes sweep at a time")
        cells[cell] = cell_records(runs, cell, oracle, n_resamples)
    if not cells:
        raise CtlError("the regimes table needs the runs of `ctl sweep experiment=regimes` (or of "
                       "`ctl train +regime=<cell>`): none of these runs names a regime cell (regime.volume, "
                       "regime.gap, regime.drift in its config.yaml)")
    return [rec for cell in sorted(cells, key=Cell.sort_key) for rec in cells[cell]]
