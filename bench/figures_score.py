"""Scoring figure: ``ctl score``'s ``score_file`` on a file of 1M raw-id request rows.

``score_file`` scores a tiny-world base run's artifact (torch.export) on its test rows repeated to
:data:`SCORE_ROWS` rows (``--quick``: 100k), histories looked up in the run's dataset by
``hist_end``. Each repeat scores the file in a fresh process, which reports its rows/s (the report's
own seconds: reading, encoding, scoring and writing) and its peak RSS. The requests are read and
the scores written ``batch_rows`` at a time, so peak RSS must not grow with the file: it is
measured on a quarter of the file too, and held to :data:`RSS_BOUND_MB`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import Figure
from bench.workloads import machine_load, train_config
from ctl.serve.dataset_requests import requests_from_dataset
from ctl.serve.export import export_run
from ctl.training.protocol import run_train

SCORE_ROWS = 1_000_000
QUICK_ROWS = 100_000
#: the bound on the scoring process's peak RSS, whatever the file's rows (torch alone takes ~400 MB)
RSS_BOUND_MB = 1500
#: what the child process runs: score the file, print its figures
SCORE_CHILD = """
import json, resource, sys
from ctl.serve.score import score_file
report = score_file(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"rows": report.rows, "seconds": report.seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def request_file(dataset_path: str, rows: np.ndarray, n: int, path: Path) -> Path:
    """The requests of ``rows`` repeated to ``n`` rows, as Parquet."""
    once = requests_from_dataset(dataset_path, rows, with_history=False)
    table = pa.concat_tables([once] * (n // once.num_rows + 1)).slice(0, n)
    pq.write_table(table, path, row_group_size=65536)
    return path


def score_in_a_process(artifact: Path, requests: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", SCORE_CHILD, str(artifact), str(requests), str(out)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def score_file_figure(quick: bool) -> Figure:
    n = QUICK_ROWS if quick else SCORE_ROWS
    folder = Path(tempfile.mkdtemp(prefix="ctl-score-bench-"))
    cfg = train_config("data=synthetic_tiny", "model=base", "data.domain=B", "print_table=false")
    run_train(cfg, folder / "run")
    artifact = export_run(folder / "run", folder / "artifact", "torch_export")
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    rows = pq.read_table(folder / "run" / "predictions.parquet", columns=["row"]).column("row").to_numpy()
    requests = request_file(metrics["dataset_path"], rows, n, folder / "requests.parquet")
    quarter = score_in_a_process(artifact, request_file(metrics["dataset_path"], rows, n // 4,
                                                        folder / "quarter.parquet"), folder / "quarter_scores.parquet")
    runs: list[dict] = []

    def measure() -> float:
        runs.append(score_in_a_process(artifact, requests, folder / "scores.parquet"))
        return runs[-1]["rows"] / runs[-1]["seconds"]

    def describe(median: float) -> dict[str, object]:
        peak = max(run["peak_rss_mb"] for run in runs)
        return {"request_rows": n, "peak_rss_mb": round(peak), f"peak_rss_mb_at_{n // 4}_rows": round(quarter["peak_rss_mb"]),
                "rss_bound_mb": RSS_BOUND_MB, "rss_within_bound": bool(peak <= RSS_BOUND_MB),
                "history": "looked up in the dataset by hist_end", "load_average": machine_load()}

    return Figure(measure=measure, unit="rows/s", describe=describe)


FIGURES = {"score_file": score_file_figure}
