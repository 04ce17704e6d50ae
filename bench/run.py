"""Run benchmark figures: ``python bench/run.py [--quick] [--repeats N] [names...]``.

Figures come from every ``bench/figures_*.py`` module (its ``FIGURES`` dict). Each selected
figure is set up once, repeated, and reported as one JSON object per line::

    {"figure": ..., "median": ..., "min": ..., "max": ..., "unit": ..., "repeats": n,
     "threads": torch.get_num_threads(), "quick": ..., <the figure's extra fields>}

All objects of the run are also written to ``bench/results.json``. A figure that raises is
reported with its error and makes the run exit with status 1; the other figures still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# run as a script, the repository root is not on sys.path; figure modules import `bench.*`
sys.path.insert(0, str(BENCH_DIR.parent))

import torch

from bench import Figure
from ctl import quiet

FigureFactory = Callable[[bool], Figure]
RESERVED_FIELDS = ("figure", "median", "min", "max", "unit", "repeats", "threads", "quick")
DEFAULT_REPEATS = 5
QUICK_REPEATS = 3


def discover_figures() -> dict[str, FigureFactory]:
    """Every figure of every ``bench/figures_*.py``, by name; refuses duplicate names."""
    figures: dict[str, FigureFactory] = {}
    owner: dict[str, str] = {}
    for path in sorted(BENCH_DIR.glob("figures_*.py")):
        module = importlib.import_module(f"bench.{path.stem}")
        found = getattr(module, "FIGURES", None)
        if not isinstance(found, dict):
            raise TypeError(
                f"{path.name} must define FIGURES: dict[str, callable], got {type(found).__name__}"
            )
        for name, factory in found.items():
            if name in figures:
                raise ValueError(f"figure {name!r} is defined by both {owner[name]} and {path.name}")
            figures[name] = factory
            owner[name] = path.name
    return figures


def measure_figure(name: str, factory: FigureFactory, quick: bool, repeats: int) -> dict[str, object]:
    """Set the figure up, call its ``measure`` ``repeats`` times, summarise."""
    figure = factory(quick)
    if figure.max_repeats is not None:
        repeats = min(repeats, figure.max_repeats)
    values = [float(figure.measure()) for _ in range(repeats)]
    median = statistics.median(values)
    result: dict[str, object] = {
        "figure": name,
        "median": median,
        "min": min(values),
        "max": max(values),
        "unit": figure.unit,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "quick": quick,
    }
    extra = figure.describe(median)
    clashes = sorted(set(extra) & set(RESERVED_FIELDS))
    if clashes:
        raise ValueError(f"figure {name!r} returns extra fields that clash with the report's: {clashes}")
    result.update(extra)
    return result


def write_results(results: list[dict[str, object]], path: Path) -> None:
    """Write to a temporary name, then rename: a crash never leaves half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run ctl benchmark figures.")
    parser.add_argument("names", nargs="*", help="figures to run (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"smaller sizes, {QUICK_REPEATS} repeats")
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"repeats per figure (default {DEFAULT_REPEATS})"
    )
    parser.add_argument("--list", action="store_true", help="print the figure names and exit")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json")
    args = parser.parse_args(argv)
    quiet.install()  # the same filter of known third-party chatter as `ctl`

    figures = discover_figures()
    if args.list:
        print("\n".join(sorted(figures)))
        return 0
    unknown = [name for name in args.names if name not in figures]
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; known: {sorted(figures)}")
    repeats = args.repeats if args.repeats is not None else (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    if repeats < 1:
        parser.error(f"--repeats must be >= 1, got {repeats}")

    results: list[dict[str, object]] = []
    failed = False
    for name in args.names or sorted(figures):
        try:
            result = measure_figure(name, figures[name], args.quick, repeats)
        except Exception as exc:  # noqa: BLE001 -- one broken figure must not hide the others' numbers
            traceback.print_exc()
            result = {"figure": name, "error": f"{type(exc).__name__}: {exc}"}
            failed = True
        print(json.dumps(result), flush=True)
        results.append(result)
    write_results(results, args.output)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
