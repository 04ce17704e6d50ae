"""The records of the paper's tables, computed from the runs of one dataset (never re-trained).

* ``overall`` (Table 2): test AUC, GAUC and log loss of every method per target domain;
* ``periods`` (Table 3): AUC/GAUC on the slice after each transfer period;
* ``finetune`` (Table 4): ``ft_all`` runs by how many periods before t0 they started, beside base
  and CTNet, with the rows each trained on;
* ``cost``: the training cost of every method beside its test AUC/GAUC and gains over base.

The cold-start table reads predictions and the dataset: see :mod:`ctl.report.coldstart`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ctl.errors import CtlError
from ctl.methods import BASE, method_rank
from ctl.report.records import record
from ctl.report.runs import Run

QUALITY_METRICS: tuple[str, ...] = ("auc", "gauc")
#: the cost table's serving cost: MFLOPs per scored row of the method's exported graph (ctl.serve.flops)
SERVING_METRIC = "serving_mflop"
COST_METRICS: tuple[str, ...] = ("own_rows", "own_wall_s", "own_cpu_s", "total_rows", "total_wall_s", "total_cpu_s")
TEST = "test"
#: The method of Table 4: pre-train & fine-tune (all parameters)
FINETUNE_MODEL = "ft_all"


def row_groups(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (row label, target), in table order (methods as in the paper, then targets)."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in sorted(runs, key=lambda r: (method_rank(r.label), r.target, r.seed)):
        groups.setdefault((run.label, run.target), []).append(run)
    return groups


def _test_values(group: Sequence[Run], metric: str) -> dict[int, float | None]:
    return {run.seed: run.test.get(metric) for run in group}


def _base_group(groups: Mapping[tuple[str, str], list[Run]], target: str) -> list[Run]:
    return groups.get((BASE, target), [])


def overall_records(runs: Sequence[Run], significance: Mapping[tuple[str, str], dict] | None = None) -> list[dict]:
    """Table 2: per method and target, test ``auc``, ``gauc``, ``logloss`` and ``own_rows`` over seeds.

    ``significance``: (label, target) -> {"auc": ..., "gauc": ...} summaries to attach.
    """
    groups = row_groups(runs)
    records = []
    for (label, target), group in groups.items():
        base = _base_group(groups, target)
        for metric in (*QUALITY_METRICS, "logloss"):
            sig = (significance or {}).get((label, target), {}).get(metric)
            records.append(record("overall", group[0], TEST, metric, _test_values(group, metric),
                                  _test_values(base, metric) if label != BASE else None,
                                  period=group[0].test.get("period"), rows=group[0].test.get("rows"),
                                  significance=sig))
        records.append(record("overall", group[0], TEST, "own_rows", {r.seed: r.cost.own_rows for r in group}))
    return records


def _period_values(group: Sequence[Run], period: int, metric: str) -> dict[int, float | None]:
    values = {}
    for run in group:
        row = next((r for r in run.periods if r["period"] == period), None)
        if row is not None:
            values[run.seed] = row.get(metric)
    return values


def period_records(runs: Sequence[Run]) -> list[dict]:
    """Table 3: per method, target and transfer period, AUC/GAUC on the next slice.

    The periods are those the transfer methods were trained on (all of base's when only base
    runs are given); gains are over base on the same slice and seed. A ``test`` slice row is
    added only for a method none of whose periods was validated on the test slice.
    """
    groups = row_groups(runs)
    records = []
    for (label, target), group in groups.items():
        transfer = sorted({r["period"] for (lab, tgt), g in groups.items() if lab != BASE and tgt == target
                           for run in g for r in run.periods})
        periods = transfer or sorted({r["period"] for run in group for r in run.periods})
        base = _base_group(groups, target) if label != BASE else []
        for period in periods:
            if not any(r["period"] == period for run in group for r in run.periods):
                continue
            eval_period = next(r["eval_period"] for run in group for r in run.periods if r["period"] == period)
            for metric in QUALITY_METRICS:
                records.append(record("periods", group[0], f"period {period}", metric,
                                      _period_values(group, period, metric), _period_values(base, period, metric),
                                      period=period, eval_period=eval_period))
        # the last transfer period is usually validated on the test slice itself: no second row for it
        if any(r["eval_period"] == run.test.get("period") for run in group for r in run.periods):
            continue
        for metric in QUALITY_METRICS:
            records.append(record("periods", group[0], TEST, metric, _test_values(group, metric),
                                  _test_values(base, metric) if base else None, period=group[0].test.get("period"),
                                  rows=group[0].test.get("rows")))
    return records


def _finetune_key(run: Run) -> tuple[bool, int]:
    # 0, 1, 2, ... then "all": more fine-tuning data further down
    k = str(run.finetune_periods)
    return (k == "all", int(k) if k.isdigit() else 0)


def finetune_records(runs: Sequence[Run]) -> list[dict]:
    """Table 4: ``ft_all`` runs by ``model.finetune_periods`` (0, 1, ..., all), between base and CTNet.

    Refuses runs without any ``ft_all`` run.
    """
    tuned = [r for r in runs if r.model == FINETUNE_MODEL and r.finetune_periods is not None]
    if not tuned:
        raise CtlError(f"the fine-tuning table needs runs of model={FINETUNE_MODEL} (e.g. ctl sweep experiment=table4); "
                       f"found {sorted({r.label for r in runs})}")
    groups = row_groups(runs)
    records = []
    ordered = sorted(row_groups(tuned).items(), key=lambda item: (_finetune_key(item[1][0]), item[0][1]))
    chosen = [(key, g) for key, g in groups.items() if key[0] == BASE]
    chosen += ordered
    chosen += [(key, g) for key, g in groups.items() if key[0] == "ctnet"]
    for (label, target), group in chosen:
        base = _base_group(groups, target) if label != BASE else []
        for metric in QUALITY_METRICS:
            records.append(record("finetune", group[0], TEST, metric, _test_values(group, metric),
                                  _test_values(base, metric) if base else None, period=group[0].test.get("period")))
        records.append(record("finetune", group[0], TEST, "own_rows", {r.seed: r.cost.own_rows for r in group}))
    return records


def _cost_values(group: Sequence[Run], metric: str) -> dict[int, float]:
    return {run.seed: getattr(run.cost, metric) for run in group}


def cost_records(runs: Sequence[Run], serving: Mapping[str, float | None] | None = None) -> list[dict]:
    """Per method and target: the training cost (own and total) beside test AUC/GAUC and gains, and
    ``serving_mflop`` from ``serving`` (row label -> MFLOPs per scored row of its exported graph)
    where it is known, with base's as the reference."""
    groups = row_groups(runs)
    serving = serving or {}
    records = []
    for (label, target), group in groups.items():
        base = _base_group(groups, target) if label != BASE else []
        for metric in QUALITY_METRICS:
            records.append(record("cost", group[0], TEST, metric, _test_values(group, metric),
                                  _test_values(base, metric) if base else None))
        for metric in COST_METRICS:
            records.append(record("cost", group[0], TEST, metric,
                                  _cost_values(group, metric)))
        if serving.get(label) is not None:
            base_flops = serving.get(BASE)
            records.append(record("cost", group[0], TEST, SERVING_METRIC, {run.seed: serving[label] for run in group},
                                  {run.seed: base_flops for run in group} if base_flops is not None else None))
    return records
