"""Import figures: a generated click log of growing size imported in bounded memory.

``import_scale`` imports ``bench/clicklog.py``'s log at 10M and 50M rows (quick: 1M and 2M),
from CSV and from Parquet, each in a fresh process with DuckDB on 2 threads and its default memory
limit, and reports every import's peak RSS and rows/s. The value is the rows/s of the largest CSV
import. Time grows with the rows; memory must not (limits: :data:`RSS_LIMIT_BYTES`, :data:`ROWS_PER_S_TARGET`). The logs
are generated once into ``$CTL_HOME/bench/clicklog``; the largest CSV import's dataset is kept
there (``dataset-<rows>-v<version>``) for the bounded-memory training check of ``docs/data.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench import Figure
from bench.clicklog import VERSION, write_clicklog
from bench.workloads import ctl_home, machine_load
from ctl.data.importer.engine import DEFAULT_MEMORY_LIMIT

SIZES = (10_000_000, 50_000_000)
QUICK_SIZES = (1_000_000, 2_000_000)
DUCKDB_THREADS = 2
#: what ``ctl data import`` uses: the 50M import's largest working sets (the sort of the rows, the join
#: of their ``hist_end``) fit in it, and the process stays under RSS_LIMIT_BYTES
MEMORY_LIMIT = DEFAULT_MEMORY_LIMIT
RSS_LIMIT_BYTES = 3 * 2**30
ROWS_PER_S_TARGET = 500_000


def _import(schema: Path, source: Path, out: Path) -> dict[str, object]:
    shutil.rmtree(out, ignore_errors=True)
    worker = Path(__file__).with_name("clicklog.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(worker), str(schema), str(source), str(out), str(DUCKDB_THREADS),
                           MEMORY_LIMIT], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"importing {source} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def import_scale(quick: bool) -> Figure:
    """Rows/s of importing the largest CSV log; every import's peak RSS and rows/s in the report."""
    folder = ctl_home() / "bench" / "clicklog"
    sizes = QUICK_SIZES if quick else SIZES
    logs = {n: write_clicklog(folder, n) for n in sizes}
    imports: list[dict[str, object]] = []

    def measure() -> float:
        imports.clear()
        for n in sizes:
            schema, csv_path, parquet_path = logs[n]
            # Parquet first: the dataset kept (the largest CSV import's) is written last, beside no other
            for kind, source in (("parquet", parquet_path), ("csv", csv_path)):
                out = folder / (f"dataset-{n}-v{VERSION}" if kind == "csv" else f"dataset-{n}-v{VERSION}-{kind}")
                result = _import(schema, source, out)
                if not (kind == "csv" and n == sizes[-1]):
                    shutil.rmtree(out)
                imports.append({"rows": n, "format": kind, "input_bytes": source.stat().st_size,
                                "seconds": round(result["seconds"], 1),
                                "rows_per_s": round(n / result["seconds"]),
                                "cpu_seconds": round(result.get("cpu_seconds", float("nan")), 1),
                                "peak_rss_mib": round(result["peak_rss_bytes"] / 2**20),
                                "dataset_rows": result["dataset_rows"], "events": result["events"]})
        return next(i["rows_per_s"] for i in imports if i["rows"] == sizes[-1] and i["format"] == "csv")

    def describe(median: float) -> dict[str, object]:
        largest = [i for i in imports if i["rows"] == sizes[-1]]
        return {
            "imports": imports,
            "duckdb_threads": DUCKDB_THREADS,
            "memory_limit": MEMORY_LIMIT,
            "rss_limit_mib": RSS_LIMIT_BYTES // 2**20,
            "rows_per_s_target": ROWS_PER_S_TARGET,
            "within_rss_limit": all(i["peak_rss_mib"] * 2**20 <= RSS_LIMIT_BYTES for i in largest),
            "within_rows_per_s_target": all(i["rows_per_s"] >= ROWS_PER_S_TARGET for i in largest),
            "load": machine_load(),
        }

    return Figure(measure=measure, unit="rows/s", describe=describe, max_repeats=1)


FIGURES = {"import_scale": import_scale}
