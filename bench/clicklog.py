"""A generated click log at any size, and one import of it measured in a fresh process.

``write_clicklog(folder, n_rows)`` writes ``clicks-<n>.csv`` and ``clicks-<n>.parquet`` (the same
records) and the schema YAML that imports them: 3 scenes (domains), 7 features (dense users,
items, categories, sellers and cities, a hashed device, a price bucket), 0/1 clicks (CTR 5%),
Unix-second times over 8 days cut into 1-day periods (5 history, 2 transfer, 1 test). Users and
items grow with the log (one user per 25 rows, one item per 250), so the id maps grow as real
ones do. File names carry :data:`VERSION`: a changed generator writes new files.

``python bench/clicklog.py SCHEMA INPUT OUT [THREADS] [MEMORY]`` imports INPUT into OUT and prints
one JSON line: rows, seconds, CPU seconds (user + system, all threads), peak RSS (``ru_maxrss``
of this process, DuckDB included).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq
import yaml

VERSION = 2
CHUNK_ROWS = 1_000_000
START = 1_709_251_200  # 2024-03-01 00:00:00 UTC
DAYS = 8
SCENES = ("home", "search", "video")

SCHEMA = {
    "name": "clicklog",
    "description": "generated click log (bench/clicklog.py)",
    "domains": {"column": "scene", "values": {"home": "Home", "search": "Search", "video": "Video"}, "source": "Home"},
    "label": {"column": "clicked"},
    "time": {"column": "time", "format": "unix", "period": "1d", "start": START, "n_transfer": 2},
    "sequences": {"short_len": 10, "long_len": 64},
    "features": [
        {"name": "user_id", "column": "user", "dim": 16},
        {"name": "item_id", "column": "item", "dim": 16},
        {"name": "category_id", "column": "category", "dim": 8},
        {"name": "seller_id", "column": "shop", "dim": 8},
        {"name": "price", "column": "price", "kind": "bucket", "boundaries": [5, 10, 20, 50, 100], "of": "item",
         "dim": 4},
        {"name": "city", "column": "city", "domains": ["Home", "Search"], "dim": 4},
        {"name": "device", "column": "device", "hash_buckets": 4096, "dim": 4},
    ],
}


def _chunk(rng: np.random.Generator, n: int, n_users: int, n_items: int, first: int, total: int) -> pa.Table:
    """``n`` records; time grows with the position in the log (``first`` of ``total``)."""
    item = rng.zipf(1.3, n) % n_items
    position = np.arange(first, first + n, dtype=np.int64)
    ts = np.minimum(START + position * (DAYS * 86_400) // total + rng.integers(0, 60, n), START + DAYS * 86_400 - 1)
    price = np.round((item % 997) * 0.15 + 1, 2)

    def text(prefix: str, values: np.ndarray) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pc.cast(pa.array(values), pa.string()), "")

    city = rng.integers(0, 300, n)
    return pa.table({
        "user": text("u", rng.integers(0, n_users, n)),
        "item": text("i", item),
        "category": text("c", item % 1000),
        "shop": text("s", item % 20_000),
        "scene": pa.array(np.array(SCENES)[rng.choice(3, n, p=[0.6, 0.3, 0.1])]),
        "clicked": pa.array((rng.random(n) < 0.05).astype(np.int8)),
        "time": pa.array(ts),
        "price": pa.array(price),
        "city": pc.if_else(pa.array(city == 0), pa.scalar(None, pa.string()), text("city", city)),
        "device": text("d", rng.integers(0, 50_000, n)),
    })


def write_clicklog(folder: Path, n_rows: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """``(schema, csv, parquet)`` of a log of ``n_rows`` records in ``folder`` (reused when there)."""
    folder.mkdir(parents=True, exist_ok=True)
    schema = folder / "clicklog.yaml"
    schema.write_text(yaml.safe_dump(SCHEMA, sort_keys=False))
    csv_path, parquet_path = (folder / f"clicks-{n_rows}-v{VERSION}.csv", folder / f"clicks-{n_rows}-v{VERSION}.parquet")
    if csv_path.is_file() and parquet_path.is_file():
        return schema, csv_path, parquet_path
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n_rows // 25, 100), max(n_rows // 250, 100)
    partial_csv, partial_parquet = csv_path.with_suffix(".csv.partial"), parquet_path.with_suffix(".parquet.partial")
    csv_writer = parquet_writer = None
    for first in range(0, n_rows, CHUNK_ROWS):
        table = _chunk(rng, min(CHUNK_ROWS, n_rows - first), n_users, n_items, first, n_rows)
        if csv_writer is None:
            csv_writer = pv.CSVWriter(partial_csv, table.schema, write_options=pv.WriteOptions(quoting_style="none"))
            parquet_writer = pq.ParquetWriter(partial_parquet, table.schema)
        csv_writer.write_table(table)
        parquet_writer.write_table(table, row_group_size=CHUNK_ROWS)
    csv_writer.close()
    parquet_writer.close()
    partial_csv.rename(csv_path)
    partial_parquet.rename(parquet_path)
    return schema, csv_path, parquet_path


def main(argv: list[str]) -> None:
    from ctl.data.importer import import_dataset, load_spec

    schema, source, out = argv[:3]
    threads = int(argv[3]) if len(argv) > 3 else None
    memory = argv[4] if len(argv) > 4 else "2GB"
    started = time.perf_counter()
    report = import_dataset(load_spec(schema), [Path(source)], Path(out), threads=threads, memory_limit=memory)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rows": report.counts["records"], "seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024,
                      "cpu_seconds": usage.ru_utime + usage.ru_stime,
                      "dataset_rows": report.n_rows, "events": report.n_events}))


if __name__ == "__main__":
    main(sys.argv[1:])
