"""Rich tables of one run: per-period and test AUC/GAUC beside the base model's.

Under the table of a transfer run (``ctl train``'s last words, e.g. ``make demo``), lines that say
whether the run really beats its base, computed on the predictions the run folder keeps:

* the test slice: the paired user-bootstrap 95% intervals of ΔAUC and ΔGAUC and DeLong's p for
  ΔAUC (:func:`ctl.report.significance.compare_paired`, the numbers of ``ctl eval``);
* what that interval covers (the test slice only) and how far retraining moves the comparison, as
  the A/A calibration of the world measured it (:mod:`ctl.report.aa_noise`);
* on a synthetic world, the oracle (the true click probabilities) and the share of base's
  headroom the run covers (:mod:`ctl.report.oracle`);
* a warning where the validation slices after the transfer periods, taken together, put the
  method below base: the mean over the slices of ΔAUC (or ΔGAUC) has its 95% paired user-bootstrap
  interval entirely below 0, users resampled once across the slices
  (:func:`ctl.metrics.pooled_paired_bootstrap`). One slice of five below 0 on its own is what
  chance gives a method level with base, and says nothing; the pooled interval below 0 says the
  method is worse than the model it would replace, beyond the noise.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: bootstrap resamples of the lines under a run's table (as ``ctl eval``'s default)
RESAMPLES = 1000


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _delta(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return ""
    d = a - b
    colour = "green" if d > 0 else "red" if d < 0 else "white"
    return f"[{colour}]{d:+.4f}[/{colour}]"


def run_table(metrics: dict) -> Table:
    """Rows = validated periods then the test slice; columns = AUC/GAUC (and base's with deltas)."""
    method = metrics["method"]
    base = metrics.get("baseline")
    title = f"{method}: {metrics['source']} -> {metrics['target']} (seed {metrics['seed']})"
    table = Table(title=title)
    table.add_column("period", no_wrap=True)
    table.add_column("rows", justify="right")
    if base:
        for col in ("base AUC", "base GAUC"):  # the target track continued over the same periods
            table.add_column(col, justify="right", min_width=6)
    table.add_column(f"{method}\nAUC", justify="right", style="bold", min_width=7)
    table.add_column(f"{method}\nGAUC", justify="right", style="bold", min_width=7)
    if base:
        table.add_column("ΔAUC", justify="right", min_width=7)
        table.add_column("ΔGAUC", justify="right", min_width=7)
    base_by_period = {r["period"]: r for r in (base or {}).get("periods", [])}

    def add(label: str, row: dict, ref: dict | None) -> None:
        cells = [label, str(row.get("rows", ""))]
        if base:
            cells += [_fmt((ref or {}).get("auc")), _fmt((ref or {}).get("gauc"))]
        cells += [_fmt(row.get("auc")), _fmt(row.get("gauc"))]
        if base:
            cells += [_delta(row.get("auc"), (ref or {}).get("auc")), _delta(row.get("gauc"), (ref or {}).get("gauc"))]
        table.add_row(*cells)

    for row in metrics["periods"]:
        add(f"{row['period']} → {row['eval_period']}", row, base_by_period.get(row["period"]))
    table.add_section()
    add(f"test ({metrics['test'].get('period')})", metrics["test"], (base or {}).get("test"))
    cost = metrics.get("cost", {})
    if cost:
        table.caption = (f"trained on {cost['train_rows']:,} rows in all (tracks included), "
                         f"{cost['wall_s']:.1f} s wall, {cost['cpu_s']:.1f} s CPU")
    return table


def _interval(result: dict) -> str:
    return f"{result['delta']:+.4f} [{result['low']:+.4f}, {result['high']:+.4f}]"


def _verdict(result: dict) -> str:
    above = [name for name, m in (("AUC", "auc"), ("GAUC", "gauc")) if result[m]["low"] > 0]
    below = [name for name, m in (("AUC", "auc"), ("GAUC", "gauc")) if result[m]["high"] < 0]
    if above and below:
        return f"significant: {above[0]} above base, {below[0]} below"
    if above or below:
        return f"significantly {'above' if above else 'below'} base ({' and '.join(above or below)})"
    return "not significant (both intervals contain 0)"


def _baseline_file(run_dir: Path, metrics: dict, name: str) -> Path | None:
    """The target base track's ``name`` file, if it exists (:func:`ctl.report.runs.baseline_file`)."""
    from ctl.report.runs import baseline_file

    path = baseline_file(run_dir, (metrics.get("tracks") or {}).get("target"), name)
    return path if path is not None and path.is_file() else None


def _test_lines(metrics: dict, run_dir: Path, n_resamples: int) -> list[Text]:
    from ctl.metrics import auc, gauc
    from ctl.report.aa_noise import noise_text
    from ctl.report.oracle import NoOracle, headroom_share, oracle_probabilities
    from ctl.report.significance import compare_paired, load_predictions, paired_predictions

    base_path = _baseline_file(run_dir, metrics, "predictions.parquet")
    if base_path is None or not (run_dir / "predictions.parquet").is_file():
        return []
    method = metrics["method"]
    model, base = paired_predictions(load_predictions(run_dir / "predictions.parquet"), load_predictions(base_path),
                                     f"{method} on {metrics['target']}")
    result = compare_paired(model.label, model.pred, base, model.user_id, n_resamples)
    lines = [Text(f"test: {method} − base  ΔAUC {_interval(result['auc'])} (DeLong p {result['auc']['p_value']:.2g})  "
                  f"ΔGAUC {_interval(result['gauc'])}  → {_verdict(result)}", style="bold")]
    lines.append(Text(noise_text(method, metrics["dataset"], metrics["target"]), style="dim"))
    dataset_path = metrics.get("dataset_path")
    try:
        truth = oracle_probabilities(Path(dataset_path) if dataset_path else None, metrics["dataset"], model.row)
    except NoOracle:
        return lines
    scores = {"AUC": lambda p: auc(p, model.label), "GAUC": lambda p: gauc(p, model.label, model.user_id)}
    oracle, shares = {}, []
    for name, score in scores.items():
        oracle[name], own, reference = score(truth), score(model.pred), score(base)
        share = headroom_share(own - reference, reference, oracle[name])
        shares.append(f"{'-' if share is None else f'{share:.0%}'} ({name})")
    lines.append(Text(f"oracle (true click probabilities): AUC {oracle['AUC']:.4f}  GAUC {oracle['GAUC']:.4f}  → "
                      f"{method} covers {' / '.join(shares)} of base's headroom"))
    return lines


def _validation_lines(metrics: dict, run_dir: Path, n_resamples: int) -> list[Text]:
    """The warning when the validated periods together put the method below base (the module docstring)."""
    from ctl.metrics import auc, gauc, pooled_paired_bootstrap
    from ctl.report.significance import ALPHA, BOOTSTRAP_SEED, load_val_predictions, paired_predictions

    own = run_dir / "val_predictions.parquet"
    if not own.is_file():
        return []
    base_path = _baseline_file(run_dir, metrics, "val_predictions.parquet")
    if base_path is None:
        return [Text("validation not paired with base: its track keeps no validation predictions (built before "
                     "ctl kept them)", style="dim")]
    method, model_by_period, base_by_period = metrics["method"], load_val_predictions(own), load_val_predictions(base_path)
    slices, periods = [], []
    for row in metrics["periods"]:
        period = row["period"]
        if period not in model_by_period or period not in base_by_period:
            continue
        model, base = paired_predictions(model_by_period[period], base_by_period[period],
                                         f"{method} validated after period {period}")
        try:  # a slice too small for a metric (one class, no user with both): nothing to say about it
            auc(model.pred, model.label), gauc(model.pred, model.label, model.user_id)
        except ValueError:
            continue
        slices.append((model.label, model.pred, base, model.user_id))
        periods.append(row["eval_period"])
    if not slices:
        return []
    pooled = pooled_paired_bootstrap(slices, n_resamples, seed=BOOTSTRAP_SEED, alpha=ALPHA)
    below = [f"Δ{name} {_interval(pooled[m])}" for name, m in (("AUC", "auc"), ("GAUC", "gauc"))
             if pooled[m]["high"] < 0]
    if not below:
        return []
    where = f"slice {periods[0]}" if len(periods) == 1 else f"{len(periods)} slices {periods[0]}–{periods[-1]}"
    return [Text(f"warning: on validation {method} is below base beyond the noise — mean over its validated "
                 f"{where}: {', '.join(below)} (95% paired user-bootstrap interval entirely below 0). On this data "
                 "it does worse than the model it would replace.", style="bold red")]


def comparison_lines(metrics: dict, run_dir: Path, n_resamples: int = RESAMPLES) -> list[Text]:
    """The lines under a transfer run's table (see the module docstring); none for a run without base."""
    from ctl.errors import CtlError

    if not metrics.get("baseline"):
        return []
    try:
        return _test_lines(metrics, run_dir, n_resamples) + _validation_lines(metrics, run_dir, n_resamples)
    except (CtlError, ValueError, OSError) as exc:
        return [Text(f"no paired comparison with base: {str(exc).strip()}", style="dim")]


def print_run(metrics: dict, console: Console | None = None, run_dir: Path | None = None) -> None:
    """The run's table; with its folder ``run_dir``, the paired comparison with base under it."""
    console = console or Console()
    console.print(run_table(metrics))
    if run_dir is not None:
        for line in comparison_lines(metrics, Path(run_dir)):
            console.print(line)
