"""Records laid out for reading: :class:`View` tables of cells that the rich and Markdown writers
render alike. Quality cells read ``mean ± std (delta vs base)``; the best mean of each quality
column (of each section, where a table has sections) is bold. On a synthetic world the ``oracle``
row (the true click probabilities) comes last, its delta being base's headroom; it is never bold.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ctl.methods import BASE, method_rank

#: the row of the true click probabilities (:mod:`ctl.report.oracle`); kept here so views need no torch
ORACLE = "oracle"


@dataclass(frozen=True)
class Cell:
    """One table cell: ``text``, an optional signed ``delta`` shown after it, ``bold`` for the best;
    ``style`` a rich style for the terminal only (e.g. a verdict's colour)."""

    text: str
    delta: float | None = None
    bold: bool = False
    style: str = ""


@dataclass
class View:
    """A titled table: ``headers`` (C,), ``rows`` of C cells; ``sections`` = row indices that open a section;
    ``text_columns`` the columns aligned left (the others, numbers, right). A cell's text may hold
    line breaks (``\n``)."""

    title: str
    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    sections: list[int] = field(default_factory=list)
    caption: str = ""
    text_columns: tuple[int, ...] = (0,)


#: what the seed-aware intervals are, in a caption (ctl.report.significance.seed_aware)
SEED_AWARE_WORDS = ("with >= 2 seeds Student's t over the seeds' paired deltas, which counts the training noise; "
                    "with one seed the paired user bootstrap of the test slice only, which does not")
HIGHER_IS_BETTER = {"auc": True, "gauc": True, "logloss": False}
METRIC_NAMES = {"auc": "AUC", "gauc": "GAUC", "logloss": "LogLoss"}


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row_rank(rec: dict) -> tuple:
    """Rows in the paper's order of methods, the oracle last."""
    return (rec["model"] == ORACLE, method_rank(rec["model"]))


def _seeds_cell(rec: dict | None) -> Cell:
    return Cell("-" if rec is None or rec["model"] == ORACLE else str(rec["n"]))


def _share_text(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def quality_cell(rec: dict | None) -> Cell:
    if rec is None or rec["mean"] is None:
        return Cell("-")
    text = _number(rec["mean"]) + (f" ± {rec['std']:.4f}" if rec["std"] is not None else "")
    return Cell(text, delta=rec["delta"] if rec["model"] != BASE else None)


def count_cell(value: float | None) -> Cell:
    return Cell("-" if value is None else f"{value:,.0f}")


def seconds_cell(value: float | None) -> Cell:
    return Cell("-" if value is None else f"{value:,.1f}")


def _embolden_best(view: View, columns: Sequence[int], metrics: Sequence[str], values: list[list[float | None]]) -> None:
    """Bold the best value of each of ``columns`` within each section; ``values`` parallel to rows."""
    bounds = sorted({0, *view.sections, len(view.rows)})
    for start, end in itertools.pairwise(bounds):
        for j, (column, metric) in enumerate(zip(columns, metrics)):
            candidates = [(value, i) for i in range(start, end) if (value := values[i][j]) is not None]
            if len(candidates) < 2:
                continue
            pick = max if HIGHER_IS_BETTER[metric] else min
            best = pick(v for v, _ in candidates)
            for v, i in candidates:
                if v == best:
                    cell = view.rows[i][column]
                    view.rows[i][column] = Cell(cell.text, cell.delta, bold=True, style=cell.style)


def dataset_title(records: Sequence[dict]) -> str:
    head = records[0]
    return f"{head['dataset_name'] or 'dataset'} {head['dataset']}"


def _index(records: Sequence[dict], *keys: str) -> dict[tuple, dict]:
    return {tuple(r[k] for k in keys): r for r in records}


def _labels(records: Sequence[dict], order: Callable[[dict], Any] | None = None) -> list[str]:
    seen: dict[str, dict] = {}
    for rec in records:
        seen.setdefault(rec["model"], rec)
    key = order or _row_rank
    return [label for label, _ in sorted(seen.items(), key=lambda item: key(item[1]))]


def _targets(records: Sequence[dict]) -> list[str]:
    return sorted({r["target"] for r in records})


def _seeds_text(counts: dict[str, int]) -> str:
    if not counts:
        return "-"
    if len(set(counts.values())) == 1:
        return str(next(iter(counts.values())))
    return " · ".join(f"{t} {n}" for t, n in counts.items())


def _significance_text(sig_by_metric: dict[str, dict | None]) -> str:
    """Per metric the seed-aware interval of the mean Δ (``*`` where it excludes 0), then what it covers."""
    shown = {m: s["seed_aware"] for m, s in sig_by_metric.items() if s is not None and s.get("seed_aware")}
    if not shown:
        return "-"
    lines = [f"{METRIC_NAMES[m]} {interval_text(a)}" for m, a in shown.items()]
    first = next(iter(shown.values()))
    return "\n".join([*lines, f"({first['covers']}, {first['seeds']} seed{'s' if first['seeds'] > 1 else ''})"])


def _own_rows_cell(index: dict[tuple, dict], label: str, targets: Sequence[str]) -> Cell:
    """Mean own training rows of a row: one number, or one per target where they differ."""
    own = {t: index[(label, t, "own_rows")]["mean"] for t in targets if (label, t, "own_rows") in index}
    if len(set(own.values())) <= 1:
        return count_cell(next(iter(own.values()), None))
    return Cell(" · ".join(f"{t} {v:,.0f}" for t, v in own.items()))


def _versus(records: Sequence[dict]) -> str:
    """The method the significance of ``records`` was paired with."""
    return next((r["significance"].get("versus", BASE) for r in records if r["significance"]), BASE)


def overall_view(records: Sequence[dict]) -> View:
    """Table 2: rows = methods; per target AUC and GAUC; own training rows; significance counts."""
    index = _index(records, "model", "target", "metric")
    targets = _targets(records)
    with_sig = any(r["significance"] for r in records)
    with_oracle = [t for t in targets if (ORACLE, t, "auc") in index]
    versus = _versus(records)
    headers = ["method", "seeds"] + [f"{t} {METRIC_NAMES[m]}" for t in targets for m in ("auc", "gauc")]
    headers.append("own rows")
    headers += [f"{t} headroom" for t in with_oracle]
    if with_sig:
        headers += [f"{t} Δ vs {versus} [95%]" for t in targets]
    head = records[0]
    view = View(title=f"Table 2 — test AUC / GAUC, mean ± std over seeds (Δ vs base) — {dataset_title(records)}, "
                      f"source {head['source']}", headers=headers)
    values = []
    for label in _labels(records):
        is_oracle = label == ORACLE
        if is_oracle:
            view.sections.append(len(view.rows))
        cells = [Cell(label)]
        counts = {t: index[(label, t, "auc")]["n"] for t in targets if (label, t, "auc") in index}
        cells.append(Cell("-" if is_oracle else _seeds_text(counts)))
        row_values = []
        for t in targets:
            for m in ("auc", "gauc"):
                rec = index.get((label, t, m))
                cells.append(quality_cell(rec))
                row_values.append(rec["mean"] if rec and not is_oracle else None)
        cells.append(Cell("-") if is_oracle else _own_rows_cell(index, label, targets))
        for t in with_oracle:
            shares = [(index.get((label, t, m)) or {}).get("headroom_share") for m in ("auc", "gauc")]
            cells.append(Cell("-" if all(x is None for x in shares) else
                              f"AUC {_share_text(shares[0])} · GAUC {_share_text(shares[1])}"))
        if with_sig:
            for t in targets:
                cells.append(Cell(_significance_text({m: (index.get((label, t, m)) or {}).get("significance")
                                                      for m in ("auc", "gauc")})))
        view.rows.append(cells)
        values.append(row_values)
    _embolden_best(view, range(2, 2 + 2 * len(targets)), ["auc", "gauc"] * len(targets), values)
    view.caption = ("own rows: rows the method trained on itself (mean over seeds, per target where they differ); "
                    f"Δ vs {versus} [95%]: the mean over seeds of the paired delta and its interval ({SEED_AWARE_WORDS}), "
                    "* where it excludes 0; each seed's test-slice interval is in the significance table")
    if with_oracle:
        view.caption += ("; oracle: the world's true click probabilities on the test rows, its Δ the base→oracle "
                         "headroom; headroom: each method's share of it, (method − base) / (oracle − base)")
    return view


def significance_view(records: Sequence[dict]) -> View:
    """Per method, target and seed: deltas vs base (or the chosen method) with their 95% intervals and DeLong's p."""
    versus = _versus(records)
    view = View(title=f"Significance vs {versus} per seed, test slice only — {dataset_title(records)}",
                headers=["method", "target", "seed", "rows", "ΔAUC", "95% interval", "DeLong p", "ΔGAUC",
                         "95% interval", "verdict"])
    index = _index(records, "model", "target", "metric")
    for label in _labels(records):
        for t in _targets(records):
            auc_sig = (index.get((label, t, "auc")) or {}).get("significance")
            gauc_sig = (index.get((label, t, "gauc")) or {}).get("significance")
            if not auc_sig:
                continue
            # a row's significance covers AUC and GAUC alike (significance.significance_by_row)
            for a, g in zip(auc_sig["per_seed"], cast(dict, gauc_sig)["per_seed"]):
                verdict = [f"{name} {'higher' if s['delta'] > 0 else 'lower'}"
                           for name, s in (("AUC", a), ("GAUC", g)) if s["significant"]]
                view.rows.append([
                    Cell(label), Cell(t), Cell(str(a["seed"])), count_cell(a["rows"]),
                    Cell("", delta=a["delta"]), Cell(f"[{a['low']:+.4f}, {a['high']:+.4f}]"),
                    Cell(f"{a['p_value']:.3g}"), Cell("", delta=g["delta"]),
                    Cell(f"[{g['low']:+.4f}, {g['high']:+.4f}]"),
                    Cell("significant: " + ", ".join(verdict) if verdict else "not significant"),
                ])
    resamples = next((r["significance"]["resamples"] for r in records if r["significance"]), 0)
    view.caption = (f"paired bootstrap over users ({resamples} resamples, rows paired by id with {versus} of the "
                    "same seed); significant only where the interval excludes 0. These intervals cover the test "
                    "slice only: whether this training of the method beats this training of "
                    f"{versus}, not whether training it again would (the training noise; see the seed-aware "
                    "interval above and ctl eval --table aa)")
    return view


def period_views(records: Sequence[dict]) -> list[View]:
    """Table 3, one view per target: per transfer period then the test slice, each method's AUC/GAUC (gain)."""
    views = []
    for target in _targets(records):
        own = [r for r in records if r["target"] == target]
        index = _index(own, "model", "slice", "metric")
        slices = sorted({(r["period"] if r["slice"] != "test" else float("inf"), r["slice"]) for r in own})
        view = View(title=f"Table 3 — AUC / GAUC on the slice after each period, gain over base in brackets — "
                          f"{dataset_title(records)}, {own[0]['source']} -> {target}",
                    headers=["trained through", "evaluated on", "method", "seeds", "AUC", "GAUC"])
        values = []
        for _, slice_name in slices:
            view.sections.append(len(view.rows))
            for label in _labels(own):
                auc_rec, gauc_rec = index.get((label, slice_name, "auc")), index.get((label, slice_name, "gauc"))
                if auc_rec is None:
                    continue
                trained = f"period {auc_rec['period']}" if slice_name != "test" else "all periods"
                evaluated = (f"period {auc_rec['eval_period']}" if slice_name != "test"
                             else f"test (period {auc_rec['period']})")
                view.rows.append([Cell(trained), Cell(evaluated), Cell(label), _seeds_cell(auc_rec),
                                  quality_cell(auc_rec), quality_cell(gauc_rec)])
                shown = label != ORACLE
                values.append([auc_rec["mean"] if shown else None, gauc_rec["mean"] if gauc_rec and shown else None])
        _embolden_best(view, [4, 5], ["auc", "gauc"], values)
        if any(r["model"] == ORACLE for r in own):
            view.caption = ("oracle: the world's true click probabilities, kept for the test slice only; its gain "
                            "is base's headroom there")
        views.append(view)
    return views


def finetune_view(records: Sequence[dict]) -> View:
    """Table 4: base, fine-tuning by data size, CTNet; AUC/GAUC per target and the rows trained on."""
    index = _index(records, "model", "target", "metric")
    targets = _targets(records)
    view = View(title=f"Table 4 — pre-train & fine-tune by fine-tuning data (periods before t0) — "
                      f"{dataset_title(records)}",
                headers=["method", "fine-tuned from", "seeds"]
                + [f"{t} {METRIC_NAMES[m]}" for t in targets for m in ("auc", "gauc")] + ["own rows"])
    order = {label: i for i, label in enumerate(dict.fromkeys(r["model"] for r in records))}
    values = []
    for label in _labels(records, order=lambda rec: order[rec["model"]]):
        first = next(r for r in records if r["model"] == label)
        k = first["finetune_periods"]
        start = "-" if k is None else ("all target history" if k == "all" else f"t0 - {k}" if k != "0" else "t0")
        counts = {t: index[(label, t, "auc")]["n"] for t in targets if (label, t, "auc") in index}
        is_oracle = label == ORACLE
        cells = [Cell(label), Cell(start), Cell("-" if is_oracle else _seeds_text(counts))]
        row_values = []
        for t in targets:
            for m in ("auc", "gauc"):
                rec = index.get((label, t, m))
                cells.append(quality_cell(rec))
                row_values.append(rec["mean"] if rec and not is_oracle else None)
        cells.append(Cell("-") if is_oracle else _own_rows_cell(index, label, targets))
        view.rows.append(cells)
        values.append(row_values)
    _embolden_best(view, range(3, 3 + 2 * len(targets)), ["auc", "gauc"] * len(targets), values)
    return view


def coldstart_views(records: Sequence[dict]) -> list[View]:
    """Table 5, one view per target: per method and slice, AUC/GAUC beside base's and the gains."""
    views = []
    for target in _targets(records):
        own = [r for r in records if r["target"] == target]
        index = _index(own, "model", "slice", "metric")
        view = View(title=f"Table 5 — cold start: gains over base on new/old users and items (new = not in "
                          f"{target}'s rows before t0) — {dataset_title(records)}, {own[0]['source']} -> {target}",
                    headers=["method", "slice", "rows", "seeds", "AUC", "base AUC", "AUC gain", "GAUC", "base GAUC",
                             "GAUC gain"])
        slices = list(dict.fromkeys(r["slice"] for r in own))
        for label in _labels(own):
            view.sections.append(len(view.rows))
            for name in slices:
                a, g = index.get((label, name, "auc")), index.get((label, name, "gauc"))
                if a is None:
                    continue
                g = cast(dict, g)  # a slice's records hold every quality metric (coldstart_records)
                view.rows.append([
                    Cell(label), Cell(name), count_cell(a["rows"]), _seeds_cell(a),
                    Cell(_number(a["mean"])), Cell(_number(a["base"])), Cell("-" if a["delta"] is None else "",
                                                                            delta=a["delta"]),
                    Cell(_number(g["mean"])), Cell(_number(g["base"])), Cell("-" if g["delta"] is None else "",
                                                                            delta=g["delta"]),
                ])
        view.caption = ("gains are paired by seed on the same rows; AUCs of different slices rank different "
                        "users/items and are not comparable with each other")
        if any(r["model"] == ORACLE for r in own):
            view.caption += "; oracle: the world's true click probabilities, its gain base's headroom on the slice"
        views.append(view)
    return views


def _serving_cell(rec: dict | None) -> Cell:
    """MFLOPs per scored row of the exported graph, and its multiple of base's."""
    if rec is None or rec["mean"] is None:
        return Cell("-")
    ratio = f" ({rec['mean'] / rec['base']:.2f}× base)" if rec["base"] else ""
    return Cell(f"{rec['mean']:.3f}{ratio}")


def cost_view(records: Sequence[dict]) -> View:
    """Training cost beside quality: own and total rows/seconds, test AUC/GAUC with gains over base."""
    index = _index(records, "model", "target", "metric")
    view = View(title=f"Cost beside quality (means over seeds) — {dataset_title(records)}",
                headers=["method", "target", "seeds", "own rows", "own wall s", "own CPU s", "total rows",
                         "total wall s", "total CPU s", "serving MFLOP/row", "AUC", "GAUC"])
    values: list[list[float | None]] = []
    for t in _targets(records):
        view.sections.append(len(view.rows))
        for label in _labels(records):
            if (label, t, "auc") not in index:
                continue

            def mean(metric: str, label: str = label, t: str = t) -> float | None:
                rec = index.get((label, t, metric))
                return None if rec is None else rec["mean"]

            if label == ORACLE:
                view.rows.append([Cell(label), Cell(t), Cell("-"), *[Cell("-")] * 7,
                                  quality_cell(index[(label, t, "auc")]), quality_cell(index[(label, t, "gauc")])])
                values.append([None, None])
                continue
            view.rows.append([
                Cell(label), Cell(t), Cell(str(index[(label, t, "auc")]["n"])),
                count_cell(mean("own_rows")), seconds_cell(mean("own_wall_s")), seconds_cell(mean("own_cpu_s")),
                count_cell(mean("total_rows")), seconds_cell(mean("total_wall_s")), seconds_cell(mean("total_cpu_s")),
                _serving_cell(index.get((label, t, "serving_mflop"))),
                quality_cell(index[(label, t, "auc")]), quality_cell(index[(label, t, "gauc")]),
            ])
            values.append([mean("auc"), mean("gauc")])
    _embolden_best(view, [10, 11], ["auc", "gauc"], values)
    view.caption = ("own: what the method trained itself (a track method: its own track); total: everything "
                    "trained to produce the run, shared production tracks included; serving: MFLOPs per scored row "
                    "of the exported graph (matrix products)")
    return view


VERDICT_STYLES = {"holds": "bold green", "does not hold": "bold red", "not shown": "cyan", "mixed": "yellow",
                  "not measured": "dim"}


def part_text(part: dict) -> str:
    """One part of a finding in words: what was compared, the mean delta, the seeds' intervals, the verdict."""
    where = " ".join(x for x in (part["target"], None if part["slice"] == "test" else part["slice"],
                                 METRIC_NAMES[part["metric"]]) if x)
    if part["mean"] is None:
        return f"{where} {part['compared']}: {part['verdict']}" + (f" ({part['note']})" if part["note"] else "")
    n = part["seeds"]
    claim = part.get("interval")
    bounds = "" if not claim else f" [{claim['low']:+.4f}, {claim['high']:+.4f}] {claim['covers']}"
    text = (f"{where} {part['compared']} {part['mean']:+.4f}{bounds} (per seed, test slice only: {part['above']}/{n} "
            f"above 0, {part['below']}/{n} below)")
    if "slope" in part:
        text += ", gap slope " + ("-" if part["slope"] is None else f"{part['slope']:+.4f}/period")
    return f"{text} → {part['verdict']}"


def evidence_text(evidence: Sequence[dict] | None, separator: str = "; ") -> str:
    """The numbers behind a finding, one part after another."""
    return separator.join(part_text(p) for p in evidence or ())


def findings_view(records: Sequence[dict]) -> View:
    """The paper's findings: one row per finding with its verdict, the numbers behind it and its rule."""
    from ctl.report.findings import GENERIC_RULE

    view = View(title=f"The paper's findings on these runs — {dataset_title(records)}",
                headers=["finding", "verdict", ("numbers: mean Δ over seeds [95% interval, what it covers] (seeds whose "
                                                "test-slice interval lies above / below 0)"), "rule"],
                text_columns=(0, 1, 2, 3))
    for rec in records:
        view.rows.append([Cell(rec["finding"]), Cell(rec["verdict"], style=VERDICT_STYLES.get(rec["verdict"], "")),
                          Cell(evidence_text(rec["evidence"], "\n")), Cell(rec["rule"])])
    view.caption = (f"Δ per seed on rows paired by id; the interval of the mean: {SEED_AWARE_WORDS}; "
                    f"{GENERIC_RULE}")
    return view


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def interval_text(part: dict | None) -> str:
    """``+0.0041 [+0.0028, +0.0055]`` of a comparison (``delta``, ``low``, ``high``), ``*`` when significant."""
    if not part or part.get("delta") is None:
        return "-"
    star = "*" if part["significant"] else ""
    return f"{_signed(part['delta'])}{star} [{_signed(part['low'])}, {_signed(part['high'])}]"


def _gain_cell(rec: dict | None) -> Cell:
    if rec is None or rec["significance"] is None:
        return Cell("-")
    share = "" if rec["headroom_share"] is None else f" ({_share_text(rec['headroom_share'])})"
    sig = rec["significance"]
    style = "green" if sig["significant"] and sig["delta"] > 0 else "red" if sig["significant"] else ""
    return Cell(f"{_signed(sig['delta'])}{'*' if sig['significant'] else ''}{share}\n"
                f"[{_signed(sig['low'])}, {_signed(sig['high'])}]", style=style)


def regimes_views(records: Sequence[dict]) -> list[View]:
    """The regime map: per target and metric, a row per cell with each method's gain over base (and its
    interval and oracle headroom share), the winner's margin over the runner-up and CTNet's over the
    best other method; then the rows each method trained on, per cell."""
    from ctl.report.regimes import CTNET

    quality = [r for r in records if r["metric"] in ("auc", "gauc")]
    labels = [label for label in _labels(quality) if label != BASE]
    cells = list(dict.fromkeys(r["regime"]["cell"] for r in records))
    index = {(r["regime"]["cell"], r["model"], r["target"], r["metric"]): r for r in records}
    shown = []
    for target in _targets(records):
        for metric in ("auc", "gauc"):
            name = METRIC_NAMES[metric]
            view = View(title=f"Regime map — {records[0]['source']} -> {target}: test {name} gain over base",
                        headers=["cell", "volume", "gap", "drift", f"base {name}", "oracle headroom",
                                 *labels, "winner: margin over runner-up", "ctnet − best other"],
                        text_columns=(0, 1, 2, 3))
            for cell in cells:
                base = index.get((cell, BASE, target, metric))
                if base is None:
                    continue
                winner = next((r for (c, _, t, m), r in index.items()
                               if c == cell and t == target and m == metric and r["rank"] == 1), None)
                ctnet = index.get((cell, CTNET, target, metric))
                headroom = None if base["oracle"] is None else base["oracle"] - base["mean"]
                view.rows.append([
                    Cell(cell), *(Cell(base["regime"][k]) for k in ("volume", "gap", "drift")),
                    Cell(_number(base["mean"])), Cell(_number(headroom)),
                    *(_gain_cell(index.get((cell, label, target, metric))) for label in labels),
                    Cell("-" if winner is None else f"{winner['model']}\n" + (
                        f"vs {winner['runner_up']['model']} {interval_text(winner['runner_up'])}"
                        if winner["runner_up"] else "")),
                    Cell("-" if ctnet is None or not ctnet["best_other"] else
                         f"vs {ctnet['best_other']['model']}\n{interval_text(ctnet['best_other'])}"),
                ])
            view.caption = ("gain = mean over seeds of (method − base) on the test slice, (share of base's oracle "
                            f"headroom); [95% interval of that mean: {SEED_AWARE_WORDS}]; * = the interval excludes "
                            "0. Winner = best mean, base included; best other = the best method outside the CTNet "
                            "family, base included.")
            shown.append(view)
    rows = View(title="Regime map — rows each method trained on itself (mean over seeds)",
                headers=["cell", "target", *_labels(records)], text_columns=(0, 1))
    for cell in cells:
        for target in _targets(records):
            own = [index.get((cell, label, target, "own_rows")) for label in _labels(records)]
            if any(own):
                rows.rows.append([Cell(cell), Cell(target), *(count_cell(r["mean"] if r else None) for r in own)])
    shown.append(rows)
    return shown


def aa_views(records: Sequence[dict]) -> list[View]:
    """The A/A calibration: per method and target, each test's false-positive rate at the nominal 5%."""
    from ctl.report.aa import PER_SEED_TESTS

    view = View(title=f"A/A calibration — false positives at the nominal 5% — {dataset_title(records)}",
                headers=["method", "target", "test", "pairs", "AUC: called / tests", "GAUC: called / tests",
                         "sd of A/A ΔAUC", "sd of A/A ΔGAUC"], text_columns=(0, 1, 2, 3))
    index = {(r["model"], r["target"], r["aa"]["test"], r["aa"]["pairs"], r["metric"]): r for r in records}
    keys = list(dict.fromkeys((r["model"], r["target"], r["aa"]["test"], r["aa"]["pairs"]) for r in records))
    for model, target, test, pairs in keys:
        cells = [Cell(model), Cell(target), Cell(test if test in PER_SEED_TESTS else f"{test} (seed-aware)"),
                 Cell(pairs)]
        found = [index.get((model, target, test, pairs, m)) for m in ("auc", "gauc")]
        for rec in found:
            if rec is None:
                cells.append(Cell("-"))
                continue
            aa = rec["aa"]
            style = "red" if aa["rate"] > 2 * aa["nominal"] else ""
            cells.append(Cell(f"{aa['rate']:.0%} ({aa['false_positives']}/{aa['tests']})", style=style))
        cells += [Cell("-" if rec is None or rec["aa"]["delta_sd"] is None else f"{rec['aa']['delta_sd']:.4f}")
                  for rec in found]
        view.rows.append(cells)
    view.caption = ("every run of a method here differs from the others only in randomness, so every test that calls "
                    "a difference is wrong; pairs: transfer only = the same seed (shared production tracks), another "
                    "transfer_seed; seed = another seed; k seeds = two transfer seeds compared over k seeds, paired "
                    "by seed. Per-seed tests cover the test slice only; the seed-aware ones count the training noise")
    return [view]


def _quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of ``values``, linear between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def population_views(records: Sequence[dict]) -> list[View]:
    """Per method, target and metric the spread over worlds of the seed-aware gain over base, the cells
    above / below 0; then CTNet's cells below 0 on average, with their worlds' knobs."""
    from ctl.report.regimes import CTNET

    cells = [r for r in records if r["population"].get("delta") is not None]
    worlds = sorted({r["population"]["world"] for r in records})
    summary = View(title=f"Population of {len(worlds)} worlds — test gain over base per (world, target) cell",
                   headers=["method", "target", "metric", "worlds", "median Δ", "p10 Δ", "p90 Δ", "cells above 0",
                            "cells below 0"], text_columns=(0, 1, 2))
    keys = list(dict.fromkeys((r["model"], r["target"], r["metric"]) for r in cells))
    for model, target, metric in sorted(keys, key=lambda k: (_row_rank({"model": k[0]}), k[1], k[2])):
        own = [r["population"] for r in cells if (r["model"], r["target"], r["metric"]) == (model, target, metric)]
        deltas = [p["delta"] for p in own]
        above, below = sum(p["low"] > 0 for p in own), sum(p["high"] < 0 for p in own)
        summary.rows.append([Cell(model), Cell(target), Cell(METRIC_NAMES[metric]), Cell(str(len(own))),
                             Cell(f"{_quantile(deltas, 0.5):+.4f}"), Cell(f"{_quantile(deltas, 0.1):+.4f}"),
                             Cell(f"{_quantile(deltas, 0.9):+.4f}"), Cell(str(above), style="green" if above else ""),
                             Cell(str(below), style="red" if below else "")])
    seeds = sorted({r["population"]["seeds"] for r in cells})
    summary.caption = (f"Δ of a cell: the mean over its seeds ({'/'.join(map(str, seeds))}) of method − base on the test "
                       f"slice; above / below 0: the cell's 95% interval ({SEED_AWARE_WORDS}) lies above / below 0")
    losing = View(title="CTNet's cells below base on average, with their worlds' knobs",
                  headers=["world", "target", "ΔAUC [95%]", "ΔGAUC [95%]", "knobs"], text_columns=(0, 1, 4))
    by_cell = {(r["population"]["world"], r["target"], r["metric"]): r for r in cells if r["model"] == CTNET}
    for world, target in sorted({(w, t) for w, t, _ in by_cell}):
        auc_rec, gauc_rec = by_cell.get((world, target, "auc")), by_cell.get((world, target, "gauc"))
        if not any(rec is not None and rec["population"]["delta"] < 0 for rec in (auc_rec, gauc_rec)):
            continue
        knobs = cast(dict, auc_rec or gauc_rec)["population"]["knobs"]  # one of them is below base (above)
        losing.rows.append([Cell(str(world)), Cell(target),
                            *(Cell("-" if rec is None else interval_text(rec["population"]),
                                   style="red" if rec is not None and rec["population"]["high"] < 0 else "")
                              for rec in (auc_rec, gauc_rec)),
                            Cell(", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in knobs.items()))])
    losing.caption = "* = the interval excludes 0 (red: below base beyond the training and test noise)"
    return [summary, losing]
