"""The rows of ``ctl eval --format json``: one record per (table, model, target, slice, metric).

Every record has every key of :data:`RECORD_KEYS` (None where it does not apply), so the shape
is the same for every table; ``docs/eval.md`` documents each key. Means are over seeds, ``std``
is the sample standard deviation (ddof=1; None for one seed), and deltas vs base are paired by
seed: ``delta`` is the mean of ``value(seed) - base(seed)`` over the seeds both have. On a
synthetic dataset ``oracle`` is the true click probabilities' value of the same metric and slice,
and ``headroom_share`` = ``delta / (oracle - base)``. Records of the ``findings`` table use
``finding``, ``verdict``, ``rule`` and ``evidence`` (see :mod:`ctl.report.findings`); those of the
``regimes`` table ``regime``, ``rank``, ``runner_up`` and ``best_other`` (see :mod:`ctl.report.regimes`);
those of the ``aa`` table ``aa`` (:mod:`ctl.report.aa`), of the ``population`` table ``population``
(:mod:`ctl.report.population`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ctl.report.runs import Run

RECORD_KEYS: tuple[str, ...] = (
    "table", "dataset", "dataset_name", "model", "method", "source", "target", "slice", "period",
    "eval_period", "finetune_periods", "metric", "mean", "std", "n", "seeds", "values", "base",
    "delta", "delta_std", "delta_n", "rows", "significance", "oracle", "headroom_share", "finding", "verdict",
    "rule", "evidence", "regime", "rank", "runner_up", "best_other", "aa", "population",
)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; None below two values)."""
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def record(
    table: str,
    head: Run,
    slice_name: str,
    metric: str,
    by_seed: Mapping[int, float | None],
    base_by_seed: Mapping[int, float | None] | None = None,
    period: int | None = None,
    eval_period: int | None = None,
    rows: int | None = None,
    significance: dict | None = None,
) -> dict:
    """One record of ``metric`` over seeds; ``head`` (any run of the row) names the row.

    ``by_seed``/``base_by_seed``: seed -> value (None = undefined, left out); ``period``,
    ``eval_period``, ``rows`` and ``significance`` fill the keys of the same names.
    """
    defined = {s: v for s, v in by_seed.items() if v is not None}
    seeds = sorted(defined)
    values = [float(defined[s]) for s in seeds]
    mean, std = mean_std(values)
    base_defined = {s: v for s, v in (base_by_seed or {}).items() if v is not None}
    paired = [s for s in seeds if s in base_defined]
    deltas = [float(defined[s]) - float(base_defined[s]) for s in paired]
    delta, delta_std = mean_std(deltas)
    base_mean, _ = mean_std([float(base_defined[s]) for s in paired])
    row = dict.fromkeys(RECORD_KEYS)
    row.update(
        table=table, dataset=head.dataset, dataset_name=head.dataset_name, model=head.label, method=head.method,
        source=head.source, target=head.target, slice=slice_name, finetune_periods=head.finetune_periods,
        metric=metric, mean=mean, std=std, n=len(values), seeds=seeds, values=values, base=base_mean,
        delta=delta, delta_std=delta_std, delta_n=len(deltas), period=period, eval_period=eval_period, rows=rows,
        significance=significance,
    )
    return row
