"""Encoded records -> the dataset's rows, history and schema.

Order of the steps: leave out records at or after ``time.end`` (counted); records before
``time.start`` feed the behaviour history only (counted); cut the rest into periods and lay them
out; build the history (events or explicit lists); sample negatives for implicit feedback; set
every row's ``hist_end``; sort rows by ``(period, domain, ts)`` as the dataset stores them, with
each row's origin (input file, line, event, sampled or not) kept in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctl.data.importer.histories import sequence_history, sort_events, visible_counts
from ctl.data.importer.periods import cut_periods, layout
from ctl.data.importer.sampling import sample_negatives
from ctl.data.importer.spec import FeatureSpec, ImportSpec
from ctl.data.schema import Feature, Schema

#: Columns that say where a dataset row came from (``origin.parquet``).
ORIGIN_COLUMNS = ("input", "line", "event", "sampled")


@dataclass
class Assembled:
    """Everything ``write_dataset`` needs, plus each row's origin and what the import left out."""

    schema: Schema
    rows: dict[str, np.ndarray]
    history: dict[str, np.ndarray]
    origin: dict[str, np.ndarray]
    spans: tuple[str, ...]
    counts: dict[str, int]


def feature_vocab(feature: FeatureSpec, dense_size: int) -> int:
    """Embedding table size of a feature; ``dense_size`` is its id map's size (dense features)."""
    if feature.constant:
        return 2
    if feature.kind == "bucket":
        return len(feature.boundaries) + 2
    if feature.hash_buckets is not None:
        return feature.hash_buckets
    return feature.vocab if feature.vocab is not None else max(dense_size + 1, 2)


def _keep_records(records: dict[str, np.ndarray], items: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    """Keep the records where ``keep`` (in place) and return their sequence items."""
    if items is not None:
        items = items[np.repeat(keep, records["seq_count"])]
    for name in list(records):
        records[name] = records[name][keep]
    return items


def _item_table(item: np.ndarray, values: np.ndarray, n_items: int) -> np.ndarray:
    """``[n_items]``: each item's value on its last record (0 for items without records)."""
    table = np.zeros(n_items, dtype=values.dtype)
    _, first_from_end = np.unique(item[::-1], return_index=True)
    last = item.shape[0] - 1 - first_from_end
    table[item[last]] = values[last]
    return table


def _zero_off_domains(spec: ImportSpec, rows: dict[str, np.ndarray]) -> None:
    names = spec.domains.names
    for feature in spec.features:
        carriers = [names.index(d) for d in feature.domains]
        rows[feature.name][~np.isin(rows["domain"], carriers)] = 0


def _append_negatives(spec: ImportSpec, rows: dict[str, np.ndarray], origin: dict[str, np.ndarray],
                      seen: np.ndarray, item_tables: dict[str, np.ndarray], n_items: int, n_periods: int,
                      counts: dict[str, int]) -> None:
    """Append sampled negatives to ``rows`` and ``origin`` (in place)."""
    cell = rows["domain"].astype(np.int64) * n_periods + rows["period"]
    drawn = sample_negatives(rows["user_id"].astype(np.int64), rows["item_id"].astype(np.int64), cell, seen,
                             n_items, spec.label.negatives, spec.label.seed)
    negative = {name: values[drawn.positive] for name, values in rows.items()}
    negative["item_id"] = drawn.item.astype(rows["item_id"].dtype)
    negative["label"] = np.zeros(drawn.item.shape[0], dtype=rows["label"].dtype)
    for name, table in item_tables.items():
        negative[name] = table[drawn.item]
    _zero_off_domains(spec, negative)
    negative_origin = {name: values[drawn.positive] for name, values in origin.items()}
    negative_origin["sampled"] = np.ones(drawn.item.shape[0], dtype=bool)
    counts["negatives"] = int(drawn.item.shape[0])
    counts["negatives_unavailable"] = drawn.unavailable
    for target, extra in ((rows, negative), (origin, negative_origin)):
        for name in list(target):
            target[name] = np.concatenate([target[name], extra.pop(name)])


def assemble(
    spec: ImportSpec, records: dict[str, np.ndarray], items: np.ndarray | None, dense_sizes: dict[str, int]
) -> Assembled:
    """Build the dataset from encoded ``records`` (every column ``[n]``) and sequence ``items``.

    ``records`` is consumed (emptied): its columns move into the rows, so the import never holds
    the records and the rows side by side. ``dense_sizes`` holds the id-map size of every dense
    feature. Row features come out as int64, the dtype ``write_dataset`` keeps without a copy.
    """
    counts: dict[str, int] = {}
    time = spec.time
    if time.end is not None:
        late = records["ts"] >= time.end
        counts["after_end"] = int(late.sum())
        items = _keep_records(records, items, ~late)
    early = records["ts"] < time.start if time.start is not None else np.zeros(records["ts"].shape[0], bool)
    counts["history_only"] = int(early.sum())
    shown = ~early

    def pick(values: np.ndarray) -> np.ndarray:
        return values[shown] if early.any() else values  # no copy when every record is shown

    cut = cut_periods(time, pick(records["ts"]), pick(records["period_value"]) if "period_value" in records else None)
    n_periods = cut.n_periods
    n_history = layout(cut, time.n_transfer, np.bincount(cut.period, minlength=n_periods))
    vocab = {f.name: feature_vocab(f, dense_sizes.get(f.name, 0)) for f in spec.features}
    n_items = vocab["item_id"]

    # what needs every record (history-only ones too), before the records move into the rows
    user, item, domain = records["user_id"], records["item_id"], records["domain"].astype(np.int64)
    if spec.sequences.column is not None:
        category = _item_table(item, records["category_id"], n_items)
        history, list_end = sequence_history(user, records["ts"], domain, records["seq_count"], records["seq_key"],
                                             items, category)
    else:
        event = slice(None) if spec.implicit or spec.sequences.events == "all" else records["label"] == 1
        history = sort_events(user[event], item[event], records["category_id"][event], domain[event],
                              records["ts"][event])
        list_end = np.full(user.shape[0], -1, dtype=np.int64)
    item_tables, seen = {}, None
    if spec.implicit:
        item_tables = {f.name: _item_table(item, records[f.name], n_items)
                       for f in spec.features if f.of == "item" and f.name != "item_id"}
        seen = np.unique(user.astype(np.int64) * n_items + item)
    del user, item, domain

    rows = {f.name: pick(records.pop(f.name)) for f in spec.features}
    rows.update(domain=pick(records.pop("domain")), period=cut.period, ts=pick(records.pop("ts")),
                label=pick(records.pop("label")), hist_end=pick(list_end))
    origin = {name: pick(records.pop(name)) for name in ("input", "line", "event")}
    origin["sampled"] = np.zeros(origin["line"].shape[0], dtype=bool)
    records.clear()
    if spec.implicit:
        _append_negatives(spec, rows, origin, seen, item_tables, n_items, n_periods, counts)
    unset = rows["hist_end"] < 0
    rows["hist_end"][unset] = visible_counts(history, rows["user_id"][unset], rows["ts"][unset])

    order = np.lexsort((rows["ts"], rows["domain"], rows["period"]))
    for target in (rows, origin):
        for name in list(target):  # one column at a time: the unsorted one is freed as it is replaced
            target[name] = target[name][order]
    for feature in spec.features:
        rows[feature.name] = rows[feature.name].astype(np.int64)
    schema = Schema(
        features=tuple(Feature(f.name, f.kind, vocab[f.name], f.dim, f.domains) for f in spec.features),
        domains=spec.domains.names,
        source=spec.domains.source,
        n_history=n_history,
        n_transfer=time.n_transfer,
        short_len=spec.sequences.short_len,
        long_len=spec.sequences.long_len,
        description=spec.description,
    )
    return Assembled(schema, rows, history, origin, cut.spans, counts)
