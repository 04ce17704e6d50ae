"""Cut record times into consecutive periods ``0 .. P-1`` and lay them out as history, transfer, test.

Calendar periods (``month``, ``quarter``) follow UTC calendar boundaries, counted from the one
holding ``time.start`` (or the earliest record); a fixed length (``6d``) counts from ``time.start``
(or the earliest record's time); ``period_column`` takes each record's integer period, shifted so
the smallest is 0; file order (``periods: N``) cuts the records, in input order, into ``N`` chunks
of equal size. The last period is the test slice, the ``n_transfer`` before it the transfer
periods, and every earlier one is history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctl.data.importer.spec import TimeSpec
from ctl.errors import CtlError


@dataclass(frozen=True)
class PeriodCut:
    """Each record's period ``[n]`` and a readable span of every period (``spans[p]``)."""

    period: np.ndarray
    spans: tuple[str, ...]

    @property
    def n_periods(self) -> int:
        return len(self.spans)


def _iso(seconds: int) -> str:
    return str(np.datetime64(int(seconds), "s")).replace("T", " ")


def _calendar(ts: np.ndarray, origin: int, months_per_period: int) -> PeriodCut:
    index = ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) // months_per_period
    first = np.datetime64(int(origin), "s").astype("datetime64[M]").astype(np.int64) // months_per_period
    period = index - first
    spans = tuple(
        f"{np.datetime64(int((first + p) * months_per_period), 'M')}-01 .. "
        f"{np.datetime64(int((first + p + 1) * months_per_period), 'M')}-01"
        for p in range(int(period.max()) + 1)
    )
    return PeriodCut(period, spans)


def _fixed(ts: np.ndarray, origin: int, seconds: int) -> PeriodCut:
    period = (ts - origin) // seconds
    spans = tuple(f"{_iso(origin + p * seconds)} .. {_iso(origin + (p + 1) * seconds)}"
                  for p in range(int(period.max()) + 1))
    return PeriodCut(period, spans)


def cut_periods(spec: TimeSpec, ts: np.ndarray, period_values: np.ndarray | None) -> PeriodCut:
    """Periods of the records with times ``ts`` (int64 seconds, or positions in file order) ``[n]``.

    ``period_values`` (int64 ``[n]``) is required with ``spec.period_column``. Records before
    ``spec.start`` must already be left out.
    """
    if ts.shape[0] == 0:
        raise CtlError("no records remain to cut into periods (check time.start/time.end and the inputs)")
    if spec.period_column is not None:
        low = int(period_values.min())
        period = period_values - low
        return PeriodCut(period, tuple(f"{spec.period_column} = {low + p}" for p in range(int(period.max()) + 1)))
    if spec.periods is not None:
        n = ts.shape[0]
        if n < spec.periods:
            raise CtlError(f"time.periods={spec.periods} needs at least that many records, got {n}")
        period = np.arange(n, dtype=np.int64) * spec.periods // n
        first = np.searchsorted(period, np.arange(spec.periods + 1))
        return PeriodCut(period, tuple(f"records {first[p] + 1} .. {first[p + 1]} in file order"
                                       for p in range(spec.periods)))
    origin = int(ts.min()) if spec.start is None else spec.start
    if spec.period == "month":
        return _calendar(ts, origin, 1)
    if spec.period == "quarter":
        return _calendar(ts, origin, 3)
    return _fixed(ts, origin, spec.period_seconds)


def layout(cut: PeriodCut, n_transfer: int, counts: np.ndarray) -> int:
    """The number of history periods ``H = P - T - 1``; refuses too few periods and empty ones.

    ``counts`` ``[P]`` holds the rows of every period.
    """
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        p = int(empty[0])
        raise CtlError(f"period {p} ({cut.spans[p]}) has no records; a continual dataset needs rows in every "
                       "period: choose a longer period or a later time.start")
    n_history = cut.n_periods - n_transfer - 1
    if n_history < 1:
        raise CtlError(f"the records span {cut.n_periods} period(s) ({cut.spans[0]} to {cut.spans[-1]}); "
                       f"time.n_transfer={n_transfer} needs at least {n_transfer + 2}: 1 history, "
                       f"{n_transfer} transfer and 1 test period")
    return n_history
