"""Rich tables of one run: per-period and test AUC/GAUC beside the base model's."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


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


def print_run(metrics: dict, console: Console | None = None) -> None:
    (console or Console()).print(run_table(metrics))
