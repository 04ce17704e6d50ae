"""Cut record times into consecutive periods ``0 .. P-1`` and lay them out as history, transfer, test.

Calendar periods (``month``, ``quarter``) follow UTC calendar boundaries, counted from the one
holding ``time.start`` (or the earliest record); a fixed length (``6d``) counts from ``time.start``
(or the earliest record's time); ``period_column`` takes each record's integer period, shifted so
the smallest is 0; file order (``periods: N``) cuts the records, in input order, into ``N`` chunks
of equal size. The last period is the test slice, the ``n_transfer`` before it the transfer
periods, and every earlier one is history.

The cut is a SQL expression over the ``records`` table (:func:`cut_periods`), evaluated where the
rows are built; only its scalars (the origin, the number of periods) are read here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import numpy as np

from ctl.data.importer.engine import one_row
from ctl.data.importer.schema_yaml import TimeConfig
from ctl.data.importer.spec import PERIOD_UNITS
from ctl.errors import CtlError


@dataclass(frozen=True)
class PeriodCut:
    """``expression``: SQL of a shown record's period (over ``records`` columns); ``spans[p]``: period p."""

    expression: str
    spans: tuple[str, ...]

    @property
    def n_periods(self) -> int:
        return len(self.spans)


#: 1970-01 counted in months since year 0
_EPOCH_MONTH = 1970 * 12


def _iso(seconds: int) -> str:
    return str(np.datetime64(int(seconds), "s")).replace("T", " ")


def _month(seconds: int) -> int:
    return int(np.datetime64(int(seconds), "s").astype("datetime64[M]").astype(np.int64))


def cut_periods(con: duckdb.DuckDBPyConnection, spec: TimeConfig, shown: str) -> PeriodCut:
    """The period of the ``records`` matching the SQL condition ``shown``, and every period's span."""
    n, low, high = one_row(con, f"SELECT count(*), min(ts), max(ts) FROM records WHERE {shown}")
    if n == 0:
        raise CtlError("no records remain to cut into periods (check time.start/time.end and the inputs)")
    if spec.period_column is not None:
        first, last = one_row(con, f"SELECT min(period_value), max(period_value) FROM records WHERE {shown}")
        return PeriodCut(f"(period_value - {first})",
                         tuple(f"{spec.period_column} = {p}" for p in range(first, last + 1)))
    if spec.periods is not None:
        if n < spec.periods:
            raise CtlError(f"time.periods={spec.periods} needs at least that many records, got {n}")
        # without start/end every kept record is shown and ts is its position 0..n-1 in the inputs
        edges = -(-np.arange(spec.periods + 1, dtype=np.int64) * n // spec.periods)  # first record of each chunk
        return PeriodCut(f"(ts * {spec.periods} // {n})",
                         tuple(f"records {edges[p] + 1} .. {edges[p + 1]} in file order" for p in range(spec.periods)))
    origin = low if spec.start is None else spec.start
    if spec.period in ("month", "quarter"):
        months = 1 if spec.period == "month" else 3
        # months since year 0 (never negative, so SQL's truncating // is a floor)
        first = (_month(origin) + _EPOCH_MONTH) // months
        count = (_month(high) + _EPOCH_MONTH) // months - first + 1
        expression = f"((year(epoch_ms(ts * 1000)) * 12 + month(epoch_ms(ts * 1000)) - 1) // {months} - {first})"
        return PeriodCut(expression, tuple(
            f"{np.datetime64((first + p) * months - _EPOCH_MONTH, 'M')}-01 .. "
            f"{np.datetime64((first + p + 1) * months - _EPOCH_MONTH, 'M')}-01" for p in range(count)))
    # _check_time gave exactly one of period, period_column and periods, and refused any other period
    assert spec.period is not None
    length = re.fullmatch(r"(\d+)\s*([a-z]+)", spec.period)
    assert length is not None
    amount, unit = length.groups()
    seconds = int(amount) * PERIOD_UNITS[unit]
    count = (high - origin) // seconds + 1
    return PeriodCut(f"((ts - {origin}) // {seconds})",
                     tuple(f"{_iso(origin + p * seconds)} .. {_iso(origin + (p + 1) * seconds)}" for p in range(count)))


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
