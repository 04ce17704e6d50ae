"""Checked records -> the dataset's ``rows``, ``history`` and ``origin`` Parquet files, in SQL.

Order of the steps: leave out records at or after ``time.end`` (counted); records before
``time.start`` feed the behaviour history only (counted); cut the rest into periods and lay them
out; number the dense features and encode every record (``encoded``); build the history (events
or explicit lists) and every row's ``hist_end``; sample negatives for implicit feedback (their item
attributes as of the positive's time, :mod:`ctl.data.importer.asof`); sort rows
by ``(period, domain, ts)`` as the dataset stores them (ties: records in input order, then their
negatives), with each row's origin (input file, line, event, sampled or not) in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from ctl.data.importer.asof import create_item_values, item_value, item_values_joins
from ctl.data.importer.engine import one_row
from ctl.data.importer.histories import HISTORY_ORDER, build_history
from ctl.data.importer.idmaps import map_table
from ctl.data.importer.periods import cut_periods, layout
from ctl.data.importer.records import staged_name
from ctl.data.importer.sampling import sample_negatives
from ctl.data.importer.spec import FeatureSpec, ImportSpec
from ctl.data.layout import ROW_GROUP_SIZE
from ctl.data.schema import Feature, Schema


@dataclass
class Assembled:
    """What the import wrote (``rows``, ``history``, ``origin`` files) and what it left out."""

    schema: Schema
    n_rows: int
    n_events: int
    rows_per_domain: dict[str, int]
    spans: tuple[str, ...]
    counts: dict[str, int]


def feature_vocab(feature: FeatureSpec, dense_size: int) -> int:
    """Embedding table size of a feature; ``dense_size`` is its id map's size (dense features)."""
    if feature.constant:
        return 2
    if feature.kind == "bucket":
        assert feature.boundaries is not None  # parse_spec refuses a bucket feature without boundaries
        return len(feature.boundaries) + 2
    if feature.hash_buckets is not None:
        return feature.hash_buckets
    return feature.vocab if feature.vocab is not None else max(dense_size + 1, 2)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _copy(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    target = str(path).replace("'", "''")
    con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP_SIZE})")


def _encode(con: duckdb.DuckDBPyConnection, spec: ImportSpec, period: str, shown: str, kept: str,
            place: list[str]) -> None:
    """``encoded``: every ``kept`` record with its ids (dense and hashed from the maps), its period
    (-1: history only) and the ``place`` columns (input, line, event) where they are stored."""
    selected = ["r.seq", *(f"r.{c}" for c in place), "r.domain", "r.label", "r.ts",
                f"CASE WHEN {shown} THEN {period} ELSE -1 END::INTEGER AS period"]
    joins = []
    for i, feature in enumerate(spec.features):
        if feature.mapped:
            selected.append(f"coalesce(m{i}.id, 0)::INTEGER AS {staged_name(i)}")
            joins.append(f"LEFT JOIN {map_table(i)} m{i} ON m{i}.raw = r.{staged_name(i)}")
        else:
            selected.append(f"r.{staged_name(i)}::INTEGER AS {staged_name(i)}")
    if spec.sequences.column is not None:
        selected += ["r.seq_count", "r.seq_key"]
    con.execute(f"CREATE TABLE encoded AS SELECT {', '.join(selected)} FROM records r {' '.join(joins)} WHERE {kept}")


def _negative_rows(con: duckdb.DuckDBPyConnection, spec: ImportSpec, column: dict[str, str], places: str) -> str:
    """SELECT of the sampled negatives' rows: the positive's row, its own item and item attributes."""
    attributes = [i for i, f in enumerate(spec.features) if f.of == "item" and f.name != "item_id"]
    if attributes:  # each item's values as of the positive's time, never from a later record
        create_item_values(con, column["item_id"], [staged_name(i) for i in attributes], "item_attributes")
    names = spec.domains.names
    selected = []
    for i, feature in enumerate(spec.features):
        if feature.name == "item_id":
            selected.append(f"d.item_id AS {staged_name(i)}")
        elif i in attributes:
            carriers = ", ".join(str(names.index(d)) for d in feature.domains)
            selected.append(f"CASE WHEN e.domain IN ({carriers}) THEN coalesce({item_value(staged_name(i), 'a')}, 0) "
                            f"ELSE 0 END AS {staged_name(i)}")
        else:
            selected.append(f"e.{staged_name(i)}")
    join = item_values_joins("item_attributes", "d.item_id", "e.ts", "a") if attributes else ""
    return (f"SELECT {', '.join(selected)}, e.domain, e.period, e.ts, 0 AS label, v.hist_end, {places}"
            f"TRUE AS sampled, e.seq, d.j FROM drawn d JOIN encoded e ON e.seq = d.seq "
            f"JOIN visible v ON v.seq = d.seq {join}")


def assemble(con: duckdb.DuckDBPyConnection, spec: ImportSpec, dense_sizes: dict[str, int], folder: Path,
             places: tuple[str, str, str] | None, log=None) -> Assembled:
    """Write ``rows.parquet``, ``history.parquet`` and ``origin.parquet`` of the ``records`` into
    ``folder``; ``dense_sizes`` holds the id-map size of every dense feature, ``places`` the SQL of a
    record's input, line and event from its ``seq`` (None: ``records`` stores them)."""
    place = [] if places else ["input", "line", "event"]
    carried = "".join(f"e.{c}, " for c in place)
    say = log or (lambda message: None)
    counts: dict[str, int] = {}
    time = spec.time
    if time.end is not None:
        counts["after_end"] = one_row(con, "SELECT count(*) FROM records WHERE ts >= ?", [time.end])[0]
    kept = "TRUE" if time.end is None else f"ts < {int(time.end)}"
    shown = "TRUE" if time.start is None else f"ts >= {int(time.start)}"
    counts["history_only"] = one_row(con, f"SELECT count(*) FROM records WHERE {kept} AND NOT ({shown})")[0]
    cut = cut_periods(con, time, f"{kept} AND {shown}")
    say(f"numbering ids and cutting {cut.n_periods} periods")
    _encode(con, spec, cut.expression, shown, kept, place)
    con.execute("DROP VIEW records")  # spilled tables take disk: each goes when no step needs it
    con.execute("DROP TABLE checked")
    per_period = con.execute("SELECT period, count(*) FROM encoded WHERE period >= 0 GROUP BY period").fetchall()
    period_counts = np.zeros(cut.n_periods, dtype=np.int64)
    for p, n in per_period:
        period_counts[p] = n
    n_history = layout(cut, time.n_transfer, period_counts)
    vocab = {f.name: feature_vocab(f, dense_sizes.get(f.name, 0)) for f in spec.features}
    column = {f.name: staged_name(i) for i, f in enumerate(spec.features)}
    item_map = map_table(spec.features.index(spec.feature("item_id")))

    say("building the behaviour history")
    build_history(con, spec, column, item_map)
    features = ", ".join(staged_name(i) for i in range(len(spec.features)))
    parts = [(f"SELECT {features}, e.domain, e.period, e.ts, e.label, v.hist_end, {carried}"
              "FALSE AS sampled, e.seq, -1 AS j FROM encoded e JOIN visible v ON v.seq = e.seq WHERE e.period >= 0")]
    if spec.implicit:
        say("sampling negatives")
        assert spec.label.negatives is not None  # parse_spec refuses a label with neither column nor negatives
        counts["negatives"], counts["negatives_unavailable"] = sample_negatives(
            con, column["user_id"], column["item_id"], spec.label.negatives, spec.label.seed, spec.label.exclude)
        parts.append(_negative_rows(con, spec, column, carried))
    say("sorting and writing the rows")
    rows = " UNION ALL ".join(parts)
    # ties: records in input order, then the negatives in the order of their positives
    order = "period, domain, ts, sampled, seq, j" if spec.implicit else "period, domain, ts, seq"
    row_columns = [f"{staged_name(i)}::INTEGER AS {_quoted(f.name)}" for i, f in enumerate(spec.features)]
    row_columns += ["domain::TINYINT AS domain", "period::SMALLINT AS period", "ts::BIGINT AS ts",
                    "label::TINYINT AS label", "hist_end::INTEGER AS hist_end"]
    # sorted once for both files: a scan of the sorted table keeps its order
    # a place that follows from seq is computed as origin.parquet is written: the sort carries seq alone
    origin_columns = [*place, "sampled"] if place else ["seq", "sampled"]
    con.execute(f"CREATE TABLE ordered AS SELECT {', '.join(row_columns + origin_columns)} FROM ({rows}) "
                f"ORDER BY {order}")
    for table in ("encoded", "visible", "drawn", "seen", "pending", "candidate", "item_attributes_at",
                  "item_attributes_first"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    names = [f"{_quoted(f.name)}::BIGINT AS {_quoted(f.name)}" for f in spec.features]
    names += ["domain", "period", "ts", "label", "hist_end"]
    _copy(con, f"SELECT {', '.join(names)} FROM ordered", folder / "rows.parquet")
    input_, line, event = places or ("input", "line", "event")
    _copy(con, f"SELECT ({input_})::SMALLINT AS input, ({line})::BIGINT AS line, ({event})::INTEGER AS event, sampled "
               "FROM ordered", folder / "origin.parquet")
    per_domain = dict(con.execute("SELECT domain, count(*) FROM ordered GROUP BY domain").fetchall())
    con.execute("DROP TABLE ordered")
    _copy(con, "SELECT user_id::BIGINT AS user_id, item_id::BIGINT AS item_id, category_id::BIGINT AS category_id, "
               f"domain::TINYINT AS domain, ts::BIGINT AS ts FROM history ORDER BY {HISTORY_ORDER}",
          folder / "history.parquet")
    schema = Schema(
        features=tuple(Feature(f.name, f.kind, vocab[f.name], f.dim, f.domains) for f in spec.features),
        domains=spec.domains.names,
        source=spec.domains.source,
        n_history=n_history,
        n_transfer=time.n_transfer,
        short_len=spec.sequences.short_len,
        long_len=spec.sequences.long_len,
        sim_len=spec.sequences.sim_len,
        description=spec.description,
    )
    return Assembled(
        schema=schema,
        n_rows=sum(per_domain.values()),
        n_events=one_row(con, "SELECT count(*) FROM history")[0],
        rows_per_domain={name: int(per_domain.get(i, 0)) for i, name in enumerate(spec.domains.names)},
        spans=cut.spans,
        counts=counts,
    )
