"""What a dataset holds, per domain and period: rows, CTR, users, items and the share of new items;
per target domain, the measurable knobs of the regime map (:func:`regime_knobs`); how long the
behaviour histories are (:func:`history_lengths`).

An item is *new* in period ``p`` when its first row (any domain) is in period ``p`` or ``p - 1``;
by that definition every item of periods 0 and 1 is new.
"""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from ctl.data.dataset import Dataset

#: An item counts as new while its first appearance is at most this many periods back.
NEW_ITEM_PERIODS = 2


def _split_name(ds: Dataset, period: int) -> str:
    schema = ds.schema
    if period < schema.t0:
        return "history"
    if period < schema.test_period:
        return "transfer"
    return "test"


def _distinct_per_cell(cell: np.ndarray, ids: np.ndarray, n_cells: int) -> np.ndarray:
    """Number of distinct ``ids`` in each cell, int64 ``[n_cells]``."""
    stride = int(ids.max()) + 1
    pairs = np.unique(cell * stride + ids)
    return np.bincount(pairs // stride, minlength=n_cells)


def describe_dataset(ds: Dataset) -> list[dict]:
    """One record per (domain, period), every pair of the layout included (``rows`` may be 0).

    Keys: ``domain``, ``period``, ``split`` (history/transfer/test), ``rows``, ``clicks``, ``ctr``
    (None without rows), ``users``, ``items``, ``new_item_share`` (None without rows).
    """
    schema = ds.schema
    rows = ds.rows
    n_periods = schema.n_periods
    domain = rows["domain"].astype(np.int64)
    period = rows["period"].astype(np.int64)
    item = rows["item_id"]
    cell = domain * n_periods + period
    n_cells = len(schema.domains) * n_periods

    first_period = np.full(schema.feature("item_id").vocab, n_periods, dtype=np.int64)
    np.minimum.at(first_period, item, period)
    is_new = first_period[item] > period - NEW_ITEM_PERIODS

    counts = np.bincount(cell, minlength=n_cells)
    clicks = np.bincount(cell, weights=rows["label"], minlength=n_cells)
    new = np.bincount(cell, weights=is_new, minlength=n_cells)
    users = _distinct_per_cell(cell, rows["user_id"], n_cells)
    items = _distinct_per_cell(cell, item, n_cells)

    records = []
    for d, name in enumerate(schema.domains):
        for p in range(n_periods):
            c = d * n_periods + p
            n = int(counts[c])
            records.append(
                {
                    "domain": name,
                    "period": p,
                    "split": _split_name(ds, p),
                    "rows": n,
                    "clicks": int(clicks[c]),
                    "ctr": float(clicks[c] / n) if n else None,
                    "users": int(users[c]),
                    "items": int(items[c]),
                    "new_item_share": float(new[c] / n) if n else None,
                }
            )
    return records


def describe_domains(ds: Dataset) -> list[dict]:
    """One record per domain: ``domain``, ``role``, ``rows``, ``ctr``, ``users``, ``items``, ``events``."""
    schema = ds.schema
    rows = ds.rows
    n_domains = len(schema.domains)
    domain = rows["domain"].astype(np.int64)
    counts = np.bincount(domain, minlength=n_domains)
    clicks = np.bincount(domain, weights=rows["label"], minlength=n_domains)
    users = _distinct_per_cell(domain, rows["user_id"], n_domains)
    items = _distinct_per_cell(domain, rows["item_id"], n_domains)
    events = np.bincount(ds.history.domain.numpy(), minlength=n_domains)
    return [
        {
            "domain": name,
            "role": "source" if name == schema.source else "target",
            "rows": int(counts[d]),
            "ctr": float(clicks[d] / counts[d]) if counts[d] else None,
            "users": int(users[d]),
            "items": int(items[d]),
            "events": int(events[d]),
        }
        for d, name in enumerate(schema.domains)
    ]


def regime_knobs(ds: Dataset, records: list[dict] | None = None) -> list[dict]:
    """The measurable knobs of the regime map (docs/regimes.md), one record per target domain.

    Over the history and transfer periods that have rows: ``rows_per_period`` and ``users_per_period``
    (means), ``rows_per_user`` (their ratio: the data volume per entity), ``source_ratio`` (the source's
    rows a period over the target's); ``test_new_item_share``: the share of the test period's rows
    on new items. ``records``: :func:`describe_dataset`'s, if already computed.
    """
    records = records if records is not None else describe_dataset(ds)
    schema = ds.schema

    def trained(domain: str) -> list[dict]:
        return [r for r in records if r["domain"] == domain and r["split"] != "test" and r["rows"]]

    source = trained(schema.source)
    source_rows = float(np.mean([r["rows"] for r in source])) if source else None
    knobs = []
    for name in schema.domains:
        if name == schema.source:
            continue
        own = trained(name)
        test = [r for r in records if r["domain"] == name and r["split"] == "test" and r["rows"]]
        rows = float(np.mean([r["rows"] for r in own])) if own else None
        users = float(np.mean([r["users"] for r in own])) if own else None
        knobs.append({
            "domain": name,
            "rows_per_period": rows,
            "users_per_period": users,
            "rows_per_user": rows / users if rows and users else None,
            "source_ratio": source_rows / rows if source_rows and rows else None,
            "test_new_item_share": test[0]["new_item_share"] if test else None,
        })
    return knobs


def _spread(values: np.ndarray) -> dict:
    """``mean``, ``p50``, ``p99``, ``max`` of ``values`` (None each when empty)."""
    if values.size == 0:
        return {"mean": None, "p50": None, "p99": None, "max": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p99": float(p99), "max": int(values.max())}


def history_lengths(ds: Dataset) -> list[dict]:
    """How long the behaviour histories are: one record for every domain together (``scope``
    ``all``), then one per domain.

    Keys: ``scope``, ``events``, ``users`` (users with at least one event in scope), ``per_user``
    (:func:`_spread` of their events in scope), ``rows`` (rows of the scope's domain) and
    ``visible`` (:func:`_spread` of the events, of every domain, each of those rows sees:
    ``hist_end``); ``test_rows`` and ``visible_test``: the same over the rows of the test period.
    """
    schema, rows, history = ds.schema, ds.rows, ds.history
    user = np.repeat(np.arange(history.n_users), history.counts().numpy())
    event_domain = history.domain.numpy()
    row_domain = rows["domain"].astype(np.int64)
    test = rows["period"] == schema.test_period
    scopes = [("all", None)] + [(name, d) for d, name in enumerate(schema.domains)]
    records = []
    for scope, d in scopes:
        mine = np.ones(user.size, dtype=bool) if d is None else event_domain == d
        per_user = np.bincount(user[mine], minlength=history.n_users)
        on = np.ones(row_domain.size, dtype=bool) if d is None else row_domain == d
        records.append({
            "scope": scope,
            "events": int(mine.sum()),
            "users": int((per_user > 0).sum()),
            "per_user": _spread(per_user[per_user > 0]),
            "rows": int(on.sum()),
            "visible": _spread(rows["hist_end"][on]),
            "test_rows": int((on & test).sum()),
            "visible_test": _spread(rows["hist_end"][on & test]),
        })
    return records


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_description(ds: Dataset, console: Console) -> None:
    """Render the per-(domain, period) table and the per-domain summary."""
    schema = ds.schema
    console.print(
        f"[bold]{ds.path}[/bold]  fingerprint {ds.fingerprint()}  rows {ds.n_rows:,}  "
        f"history events {ds.history.n_events:,}  periods: history 0..{schema.t0 - 1}, "
        f"transfer {schema.t0}..{schema.test_period - 1}, test {schema.test_period}",
        highlight=False,
    )
    table = Table(title="Rows per domain and period")
    for header in ("domain", "period", "split", "rows", "CTR", "users", "items", "new items"):
        table.add_column(header, justify="left" if header in ("domain", "split") else "right")
    records = describe_dataset(ds)
    for record in records:
        table.add_row(
            record["domain"],
            str(record["period"]),
            record["split"],
            f"{record['rows']:,}",
            _ratio(record["ctr"]),
            f"{record['users']:,}",
            f"{record['items']:,}",
            _ratio(record["new_item_share"]),
        )
    console.print(table)
    summary = Table(title="Per domain")
    for header in ("domain", "role", "rows", "CTR", "users", "items", "history events"):
        summary.add_column(header, justify="left" if header in ("domain", "role") else "right")
    for record in describe_domains(ds):
        summary.add_row(
            record["domain"],
            record["role"],
            f"{record['rows']:,}",
            _ratio(record["ctr"]),
            f"{record['users']:,}",
            f"{record['items']:,}",
            f"{record['events']:,}",
        )
    console.print(summary)
    knobs = Table(title="Target knobs of the regime map (docs/regimes.md): means over the training periods")
    for header in ("domain", "rows a period", "users a period", "rows per user", "source rows ÷ target rows",
                   "new items (test)"):
        knobs.add_column(header, justify="left" if header == "domain" else "right")
    for record in regime_knobs(ds, records):
        knobs.add_row(record["domain"], *(("-" if record[k] is None else f"{record[k]:,.1f}") for k in (
            "rows_per_period", "users_per_period", "rows_per_user", "source_ratio")),
            _ratio(record["test_new_item_share"]))
    console.print(knobs)
    lengths = Table(title="History lengths: events per user (in the domain; n users) and events of every domain "
                          "each row of the domain sees (n rows)")
    for header in ("scope", "of", "n", "mean", "p50", "p99", "max"):
        lengths.add_column(header, justify="left" if header in ("scope", "of") else "right")
    for record in history_lengths(ds):
        for what, key, n in (("events per user", "per_user", record["users"]),
                             ("visible per row", "visible", record["rows"]),
                             ("visible per test row", "visible_test", record["test_rows"])):
            spread = record[key]
            cells = [_number(spread[k]) for k in ("mean", "p50", "p99", "max")]
            lengths.add_row(record["scope"], what, f"{n:,}", *cells)
    console.print(lengths)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"
