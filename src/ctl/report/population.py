"""CTNet over a population of worlds (``ctl eval --table population``).

Reads the runs of ``ctl sweep experiment=world_population``: each dataset is one world, named by
``world`` in its runs' ``config.yaml`` (:mod:`ctl.data.synthetic.population`). Per world, target,
method and metric, a *cell*: the mean over seeds of ``method − base`` on the test slice with its
seed-aware 95% interval (:func:`ctl.report.significance.seed_aware`: Student's t over the seeds'
paired deltas with >= 2 seeds; the test slice's paired user bootstrap with one). The views give,
per method, target and metric, the distribution of the cells' deltas over the worlds (median, 10th
and 90th percentiles), how many cells lie above / below 0, and CTNet's cells below 0 with the
world's drawn knobs.
"""

from __future__ import annotations

from collections.abc import Sequence

from ctl.data.synthetic.population import TARGET_RANGES, WORLD_RANGES
from ctl.errors import CtlError
from ctl.methods import BASE
from ctl.report.records import record
from ctl.report.regimes import compare
from ctl.report.runs import Run
from ctl.report.tables import QUALITY_METRICS, TEST, row_groups


def world_of(runs: Sequence[Run]) -> int | None:
    """The world index the runs of one dataset name (None: none names one); refuses runs that disagree."""
    named = {run.settings.get("world") for run in runs}
    if named == {None}:
        return None
    if len(named) > 1:
        raise CtlError(f"the runs of dataset {runs[0].dataset} name different worlds ({sorted(map(str, named))}); "
                       "one dataset is one world of the population")
    world = next(iter(named))
    assert world is not None  # the one name is not None: {None} returned above
    return int(world)


def world_knobs(run: Run, target: str) -> dict[str, object]:
    """The drawn knobs of a run's world that concern ``target`` (its own and the world-level ones)."""
    knobs = {name: run.settings.get(f"data.generator.domains.{target}.{name}") for name in TARGET_RANGES}
    knobs.update({name: run.settings.get(f"data.generator.{name}") for name in WORLD_RANGES})
    knobs["seed"] = run.settings.get("data.generator.seed")
    return knobs


def world_records(runs: Sequence[Run], world: int, n_resamples: int) -> list[dict]:
    """One world's cells: a record per target, method (base aside) and metric."""
    groups = row_groups(runs)
    records = []
    for target in sorted({t for _, t in groups}):
        own = {label: g for (label, t), g in groups.items() if t == target}
        if BASE not in own:
            raise CtlError(f"world {world}, target {target}: no base run; the population table reads gains over "
                           "base (experiment=world_population runs model=base in every world)")
        for label, group in own.items():
            if label == BASE:
                continue
            comparison = compare(group, own[BASE], n_resamples, f"{label} vs base on {target}, world {world}")
            for metric in QUALITY_METRICS:
                rec = record("population", group[0], TEST, metric, {r.seed: r.test.get(metric) for r in group},
                             {r.seed: r.test.get(metric) for r in own[BASE]}, period=group[0].test.get("period"),
                             rows=group[0].test.get("rows"))
                rec["population"] = {"world": world, "knobs": world_knobs(group[0], target),
                                     **({} if comparison is None else
                                        {"seeds": comparison["seeds"], "covers": comparison["covers"],
                                         **{k: comparison[metric][k] for k in ("delta", "low", "high", "significant")}})}
                records.append(rec)
    return records


def population_records(datasets: Sequence[Sequence[Run]], n_resamples: int) -> list[dict]:
    """The population table over several datasets (worlds), in world order.

    Refuses runs of which no dataset names a world, and two datasets naming the same world.
    """
    if n_resamples < 1:
        raise CtlError("the population table needs significance: --bootstrap must be >= 1")
    worlds: dict[int, list[dict]] = {}
    for runs in datasets:
        world = world_of(runs)
        if world is None:
            continue
        if world in worlds:
            raise CtlError(f"two datasets are world {world} of the population (the second: {runs[0].dataset}); "
                           "evaluate one population sweep at a time")
        worlds[world] = world_records(runs, world, n_resamples)
    if not worlds:
        raise CtlError("the population table needs the runs of `ctl sweep experiment=world_population` (or of "
                       "`ctl train world=<i>`): none of these runs names a world (world in its config.yaml)")
    return [rec for world in sorted(worlds) for rec in worlds[world]]
