"""``ctl eval``: read run and sweep directories, print the paper's tables (never re-trains).

``evaluate(paths, table_names, bootstrap)`` computes every requested table per dataset as records
(the JSON rows) and views (the printed tables); ``run_eval`` prints them for ``ctl eval`` (ctl.cli).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ctl.errors import CtlError
from ctl.methods import BASE
from ctl.report import render, tables, views
from ctl.report.runs import Run, by_dataset, find_runs

TABLES: tuple[str, ...] = ("overall", "periods", "finetune", "coldstart", "cost", "findings", "regimes", "aa",
                           "population")
FORMATS: tuple[str, ...] = ("table", "json", "csv", "markdown")
DEFAULT_BOOTSTRAP = 1000
#: ctl.data.dataset.ORACLE_FILE, spelled out: importing that module loads torch, which imported data never needs here
ORACLE_FILE = "oracle.parquet"

DESCRIPTION = """Read run folders and sweep folders (searched recursively for metrics.json) and print
the paper's tables: rows = methods, mean ± std over seeds, deltas vs the base row. Nothing is
re-trained; the cold-start table also reads the dataset each run names (dataset_path). On a
synthetic world every table gets an oracle row: the true click probabilities of the test rows."""

EPILOG = """tables:
  overall    Table 2: test AUC / GAUC per target domain, own training rows, significance vs base
  periods    Table 3: AUC / GAUC after each transfer period (continual vs transfer-once vs base)
  finetune   Table 4: fine-tuning runs by model.finetune_periods, beside base and CTNet
  coldstart  Table 5: gains over base on new vs old users and items of the target domain
  cost       training rows and seconds (own and total) beside AUC / GAUC gains
  findings   the paper's six findings (F1 also against the paper's baselines alone), each with a verdict (holds / does not hold / not shown /
             mixed / not measured), the numbers behind it and the rule used (ctl sweep experiment=paper)
  regimes    the regime map over the datasets (cells) of ctl sweep experiment=regimes: per cell,
             target and method the gain over base with its paired interval and oracle headroom
             share, the winner's margin over the runner-up, CTNet's over the best other method;
             --out also writes regimes_ctnet_vs_base.png and regimes_ctnet_vs_best_other.png
  aa         A/A calibration (ctl sweep experiment=aa): each test's false-positive rate at the nominal
             5% on runs of one method that differ only in seed or transfer_seed
  population CTNet over a population of worlds (ctl sweep experiment=world_population): per method
             and target the spread of the seed-aware gain over base, the cells above / below 0,
             and the worlds where CTNet loses, with their knobs
  all        every table the runs allow

examples:
  ctl eval multirun/2024-05-01/10-00-00
  ctl eval outputs/ --table periods --table coldstart
  ctl eval multirun/ --format json > results.json
  ctl eval multirun/ --table all --out report/     # CSV, Markdown and PNG files
  ctl eval multirun/ --versus ctnet                # every method paired against CTNet
  ctl eval multirun/regimes --table regimes --out map/   # the regime map and its heat maps

Runs of different datasets (metrics.json "dataset") are never mixed: each dataset gets its own
tables (the regimes table lays the datasets out as the cells of one map). See docs/eval.md for the
JSON schema and docs/regimes.md for the map."""


@dataclass
class Report:
    """Per table name: the records (JSON rows) and the views of every dataset; plus notes."""

    records: dict[str, list[dict]] = field(default_factory=dict)
    views: dict[str, list[views.View]] = field(default_factory=dict)
    by_dataset: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


Built = tuple[list[dict], list[views.View]]


@dataclass(frozen=True)
class Options:
    """How the tables are computed: ``bootstrap`` resamples (0 = no significance), paired ``versus`` which method."""

    bootstrap: int = DEFAULT_BOOTSTRAP
    versus: str = BASE


@dataclass(frozen=True)
class Runs:
    """The runs of one dataset and, on a synthetic world, the oracle per target
    (:func:`ctl.report.oracle.oracle_by_target`; empty otherwise)."""

    runs: Sequence[Run]
    oracle: dict = field(default_factory=dict)


def _with_oracle(table: str, records: list[dict], given: Runs) -> list[dict]:
    if not given.oracle:
        return records
    from ctl.report.oracle import add_oracle

    return add_oracle(table, records, given.oracle)


def _overall(given: Runs, options: Options) -> Built:
    significance = None
    if options.bootstrap > 0:
        # imported here: it loads torch (through ctl.metrics), which --help and --bootstrap 0 do not need
        from ctl.report.significance import significance_by_row

        significance = significance_by_row(given.runs, options.bootstrap, options.versus)
    records = _with_oracle("overall", tables.overall_records(given.runs, significance), given)
    shown = [views.overall_view(records)]
    if significance:
        shown.append(views.significance_view(records))
    return records, shown


def _periods(given: Runs, options: Options) -> Built:
    records = _with_oracle("periods", tables.period_records(given.runs), given)
    return records, views.period_views(records)


def _finetune(given: Runs, options: Options) -> Built:
    records = _with_oracle("finetune", tables.finetune_records(given.runs), given)
    return records, [views.finetune_view(records)]


def _coldstart(given: Runs, options: Options) -> Built:
    # imported here for the same reason as the significance module
    from ctl.report.coldstart import coldstart_records

    records = coldstart_records(given.runs, given.oracle)
    return records, views.coldstart_views(records)


def _serving_costs(runs: Sequence[Run]) -> dict[str, float | None]:
    """Row label -> MFLOPs per scored row of its exported graph (one run of the label), None where the
    run's model cannot be rebuilt here (its dataset gone, a hand-made folder): its cell reads '-'."""
    # imported here: the exporter pulls in torch.export, which a table without this column never needs
    from ctl.serve.flops import serving_mflop_per_row

    costs: dict[str, float | None] = {}
    for run in runs:
        if run.label in costs:
            continue
        try:
            costs[run.label] = serving_mflop_per_row(run.path)
        except Exception:  # noqa: BLE001 (best effort: a run that cannot be exported has no serving cost to show)
            costs[run.label] = None
    return costs


def _cost(given: Runs, options: Options) -> Built:
    records = _with_oracle("cost", tables.cost_records(given.runs, _serving_costs(given.runs)), given)
    return records, [views.cost_view(records)]


def _findings(given: Runs, options: Options) -> Built:
    # imported here for the same reason as the significance module
    from ctl.report.findings import findings_records

    records = findings_records(given.runs, options.bootstrap)
    return records, [views.findings_view(records)]


def _aa(given: Runs, options: Options) -> Built:
    # imported here for the same reason as the significance module
    from ctl.report.aa import aa_records

    records = aa_records(given.runs, options.bootstrap)
    return records, views.aa_views(records)


BUILDERS: dict[str, Callable[[Runs, Options], Built]] = {
    "overall": _overall, "periods": _periods, "finetune": _finetune, "coldstart": _coldstart, "cost": _cost,
    "findings": _findings, "aa": _aa,
}


def _oracle_of(runs: Sequence[Run]) -> tuple[dict, str | None]:
    """The oracle per target of one dataset's runs, and why a synthetic dataset has none."""
    keeps = any(run.dataset_path is not None and (run.dataset_path / ORACLE_FILE).is_file() for run in runs)
    generated = any(any(k.startswith("data.generator") for k in run.settings) for run in runs)
    if not keeps and not generated:
        return {}, None  # imported data: no oracle to speak of, and no torch import for it
    from ctl.report.oracle import oracle_by_target

    return oracle_by_target(runs)


def evaluate(paths: Sequence[Path], table_names: Sequence[str], bootstrap: int = DEFAULT_BOOTSTRAP,
             versus: str = BASE) -> Report:
    """Every table of ``table_names`` ("all" = each one the runs allow) for the runs under ``paths``.

    A table asked for by name that no dataset's runs allow is refused (``CtlError``); with
    "all" it is skipped with a note. ``bootstrap``: resamples for the significance columns of
    ``overall`` (0 = none); ``versus``: the method every row is paired with there (default base).
    """
    if bootstrap < 0:
        raise CtlError(f"--bootstrap must be >= 0 (0 turns significance off), got {bootstrap}")
    wanted = list(TABLES) if "all" in table_names else list(dict.fromkeys(table_names))
    found = find_runs([Path(p) for p in paths])
    report = Report(notes=list(found.notes))
    groups = by_dataset(found.runs)
    if len(groups) > 1:
        report.notes.append(f"these runs come from {len(groups)} datasets ({', '.join(groups)}); "
                            "each dataset gets its own tables")
    given = {}
    for dataset, runs in groups.items():
        oracle, reason = _oracle_of(runs)
        given[dataset] = Runs(runs, oracle)
        if reason:
            report.notes.append(f"no oracle row{'' if len(groups) == 1 else f' for dataset {dataset}'}: {reason}")
    for table in wanted:
        if table in SPANNING:
            SPANNING[table].add(table, report, given, bootstrap, "all" not in table_names)
            continue
        refusals = []
        for dataset in groups:
            try:
                records, shown = BUILDERS[table](given[dataset], Options(bootstrap, versus))
            except CtlError as exc:
                refusals.append(str(exc) if len(groups) == 1 else f"dataset {dataset}: {exc}")
                continue
            report.records.setdefault(table, []).extend(records)
            report.views.setdefault(table, []).extend(shown)
            report.by_dataset.setdefault(table, {})[dataset] = records
        if not refusals:
            continue
        if table not in report.records and "all" not in table_names:
            raise CtlError(refusals[0])
        report.notes.extend(f"no {table} table{'' if len(groups) == 1 else ' for one dataset'}: {r}"
                            for r in refusals)
    return report


def _regimes_records(given: dict[str, Runs], bootstrap: int) -> list[dict]:
    """One cell per dataset of the regime map."""
    # imported here: it loads torch (through ctl.metrics), which --help and --bootstrap 0 do not need
    from ctl.report.regimes import regimes_records

    return regimes_records([(g.runs, g.oracle) for g in given.values()], bootstrap)


def _population_records(given: dict[str, Runs], bootstrap: int) -> list[dict]:
    """One world per dataset of the population."""
    from ctl.report.population import population_records

    return population_records([g.runs for g in given.values()], bootstrap)


@dataclass(frozen=True)
class Spanning:
    """A table built once over every dataset given: its records, how they are shown, its ``by_dataset`` key."""

    records: Callable[[dict[str, Runs], int], list[dict]]
    shown: Callable[[list[dict]], list[views.View]]
    key: str

    def add(self, table: str, report: Report, given: dict[str, Runs], bootstrap: int, explicit: bool) -> None:
        try:
            records = self.records(given, bootstrap)
        except CtlError as exc:
            if explicit:
                raise
            report.notes.append(f"no {table} table: {exc}")
            return
        report.records[table] = records
        report.views[table] = self.shown(records)
        report.by_dataset[table] = {self.key: records}


#: the tables that span datasets (regimes: one cell per dataset; population: one world per dataset)
SPANNING: dict[str, Spanning] = {
    "regimes": Spanning(_regimes_records, views.regimes_views, "map"),
    "population": Spanning(_population_records, views.population_views, "worlds"),
}


def all_views(report: Report) -> list[views.View]:
    return [v for table in report.views for v in report.views[table]]


def all_records(report: Report) -> list[dict]:
    return [r for table in report.records for r in report.records[table]]


def write_files(report: Report, out: Path) -> list[Path]:
    """``<table>.csv`` and ``<table>.md`` per table, and the PNG figures of the tables shown."""
    from ctl.io import atomic_write_text
    from ctl.report import plots

    written = []
    for table, records in report.records.items():
        written.append(atomic_write_text(out / f"{table}.csv", render.records_csv(records)))
        written.append(atomic_write_text(out / f"{table}.md", render.markdown(report.views[table])))
    several = max((len(d) for d in report.by_dataset.values()), default=0) > 1
    for table, datasets in report.by_dataset.items():
        for dataset, records in datasets.items():
            if table in SPANNING:
                continue
            suffix = f"-{dataset}" if several else ""
            if table == "overall":
                written.append(plots.plot_overall(records, out / f"table2{suffix}.png"))
                forest = plots.plot_forest(records, out / f"forest{suffix}.png")
                if forest is not None:
                    written.append(forest)
            if table in ("overall", "cost"):
                written.append(plots.plot_cost_gain(records, out / f"cost_gain{suffix}.png"))
            if table == "periods":
                written.append(plots.plot_periods(records, out / f"periods{suffix}.png"))
    if "regimes" in report.records:
        for comparison, name in (("base", "base"), ("best_other", "best_other")):
            written.append(plots.plot_regimes(report.records["regimes"], out / f"regimes_ctnet_vs_{name}.png",
                                              comparison))
    return list(dict.fromkeys(written))


def run_eval(paths: Sequence[Path], table_names: Sequence[str], fmt: str = "table", out: Path | None = None,
             bootstrap: int = DEFAULT_BOOTSTRAP, versus: str = BASE) -> None:
    """``ctl eval``: compute the tables, print them in ``fmt``, and write their files into ``out``."""
    report = evaluate(list(paths), list(table_names), bootstrap, versus)
    err = Console(stderr=True)
    for note in report.notes:
        err.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    if fmt == "table":
        render.print_views(all_views(report), Console())
    elif fmt == "markdown":
        sys.stdout.write(render.markdown(all_views(report)))
    elif fmt == "json":
        sys.stdout.write(render.records_json(all_records(report)))
    else:
        sys.stdout.write(render.records_csv(all_records(report)))
    if out:
        for path in write_files(report, out):
            err.print(f"wrote {path}", highlight=False)