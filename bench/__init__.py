"""Throughput and scaling benchmarks; ``bench/run.py`` discovers ``bench/figures_*.py``.

A figure module exposes ``FIGURES: dict[str, Callable[[bool], Figure]]``: each factory takes
``quick`` (smaller sizes), does its untimed set-up and returns a :class:`Figure`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def no_extra(median: float) -> dict[str, object]:
    """The default :attr:`Figure.describe`: nothing beyond the timing statistics."""
    return {}


@dataclass(frozen=True)
class Figure:
    """One benchmark figure, set up and ready to repeat.

    ``measure`` does the work once and returns its value in ``unit`` (seconds, samples/s, ...);
    the harness calls it ``repeats`` times. ``describe`` receives the median and returns extra
    fields for the report (sizes, ratios to a reference, budgets).
    """

    measure: Callable[[], float]
    unit: str
    describe: Callable[[float], dict[str, object]] = no_extra
    #: at most this many repeats (a sweep of minutes runs once); None = as many as the run asks
    max_repeats: int | None = None
