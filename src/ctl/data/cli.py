"""What ``ctl data validate | describe | append`` print around the work (their options: ctl.cli)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console


def run_validate(path: Path) -> None:
    from ctl.data.dataset import load_dataset

    ds = load_dataset(path, validate=True)
    Console().print(f"[green]ok[/green]: {path}: {ds.n_rows:,} rows, "
                    f"{len(ds.history.item):,} history events, domains {list(ds.schema.domains)} "
                    f"(source {ds.schema.source}), {ds.schema.n_periods} periods")


def run_describe(path: Path) -> None:
    from ctl.data.dataset import load_dataset
    from ctl.data.describe import print_description

    print_description(load_dataset(path, validate=True), Console())


def run_append(dataset: Path, inputs: Sequence[Path], progress: bool = True) -> None:
    from ctl.data.append import append_logs

    report = append_logs(dataset, inputs, log=Console(stderr=True).print if progress else None)
    Console().print(f"appended {report.new_rows:,} rows as period(s) {', '.join(map(str, report.periods))} "
                    f"({'; '.join(report.spans)}); {report.n_rows:,} rows in all; the test slice is now period "
                    f"{report.periods[-1]}\ndataset: {report.path}", highlight=False)
