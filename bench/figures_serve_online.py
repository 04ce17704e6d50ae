"""Online serving figure: ``ctl serve`` under a real load generator, and a soak with a swap every minute.

``serve_online`` trains a base and a CTNet run on the tiny world's domain B (and a second CTNet,
seed 1, for the swaps), exports them, and for each model starts ``ctl serve`` (one process, one
scoring thread, one torch thread) on a loopback port. Locust (headless, closed loop: each user
posts its next request as soon as the last is answered) then posts one user's request of
:data:`CANDIDATES` candidates, its history looked up in the dataset, at each concurrency of
:data:`CONCURRENCY` for ``SERVE_ONLINE_POINT_SECONDS`` seconds (default 20; ``--quick`` 5):
p50/p99 latency and requests/s.

The soak (``SERVE_ONLINE_SOAK_SECONDS``, default 60; ``--quick`` 30) runs CTNet in ``--watch``
mode under :data:`SOAK_USERS` users while a new artifact is published into the watched folder
every ``SERVE_ONLINE_SWAP_SECONDS`` (default 20; ``--quick`` 10), alternating the two CTNets:
failed requests, swaps done and the server's RSS at the start and end. The 10-minute soak with a
swap a minute: ``SERVE_ONLINE_SOAK_SECONDS=600 SERVE_ONLINE_SWAP_SECONDS=60``.

In-process reference: the same request scored without HTTP (encoding + graph call, and the graph
call alone), the median of :data:`IN_PROCESS_CALLS`. Locust runs on the same machine as the
server, so both share its cores; the figure says the load average.

The figure's value is CTNet's requests/s at concurrency 8.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from bench import Figure
from bench.workloads import machine_load, train_config

CANDIDATES = 100
CONCURRENCY = (1, 8, 32)
SOAK_USERS = 8
IN_PROCESS_CALLS = 50
BENCH_DIR = Path(__file__).resolve().parent


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _artifacts(folder: Path) -> dict[str, Path]:
    """Artifacts of base, CTNet and a second CTNet (seed 1) on the tiny world's domain B."""
    from ctl.serve.export import export_run
    from ctl.training.protocol import run_train

    found = {}
    for name, overrides in {"base": ("model=base",), "ctnet": ("model=ctnet",),
                            "ctnet_seed1": ("model=ctnet", "seed=1")}.items():
        run_dir = folder / f"run-{name}"
        run_dir.mkdir()
        run_train(train_config("data=synthetic_tiny", "data.domain=B", "print_table=false", *overrides), run_dir)
        found[name] = export_run(run_dir, folder / name)
    return found


def _request_body(artifact: Path, file: Path) -> dict:
    """One user (the first test row's) and the items of the first CANDIDATES test rows, in raw ids."""
    from ctl.serve.requests import requests_from_dataset

    manifest = json.loads((artifact / "manifest.json").read_text())
    rows = pq.read_table(Path(manifest["run"]) / "predictions.parquet").column("row").to_numpy()[:CANDIDATES]
    table = requests_from_dataset(manifest["dataset_path"], rows, with_history=False).to_pylist()
    shared = ("row", "user_id", "domain", "hist_end")
    body = {"user_id": table[0]["user_id"], "domain": table[0]["domain"],
            "candidates": [{k: v for k, v in row.items() if k not in shared} for row in table]}
    file.write_text(json.dumps(body))
    return body


class Server:
    """``ctl serve`` as a subprocess on a free loopback port."""

    def __init__(self, artifact_dir: Path, log: Path, *options: str) -> None:
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "ctl.cli", "serve", str(artifact_dir), "--port",
                                         str(self.port), *options], stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ctl serve exited ({self.process.returncode}); see {log}")
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ctl serve never became ready; see {log}")
            time.sleep(0.2)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def metric(self, line_start: str) -> float:
        import httpx

        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def locust(url: str, users: int, seconds: float, body: Path, prefix: Path) -> dict[str, float]:
    """Run locust headless against ``url``; p50/p99 (ms), requests/s and counts of its aggregate row."""
    subprocess.run([sys.executable, "-m", "locust", "-f", str(BENCH_DIR / "locust_serve.py"), "--headless",
                    "-u", str(users), "-r", str(users), "-t", f"{int(seconds)}s", "--host", url, "--csv", str(prefix),
                    "--only-summary", "--stop-timeout", "30", "--loglevel", "WARNING"],
                   env={**os.environ, "SERVE_ONLINE_BODY": str(body)}, check=False, capture_output=True)
    import csv

    with open(f"{prefix}_stats.csv") as file:
        row = next(r for r in csv.DictReader(file) if r["Name"] == "Aggregated")
    return {"p50_ms": float(row["50%"]), "p99_ms": float(row["99%"]), "req_per_s": round(float(row["Requests/s"]), 1),
            "requests": int(row["Request Count"]), "failed": int(row["Failure Count"])}


def in_process_ms(artifact: Path, body: dict) -> dict[str, float]:
    """Median ms of the request scored in this process: encoding + graph call, and the graph call alone."""
    from ctl.serve.online.schema import REQUEST, request_tables, score_request_model
    from ctl.serve.online.scoring import score_one
    from ctl.serve.online.state import load_model
    from ctl.serve.score import score_encoded

    model = load_model(artifact)
    request = score_request_model(10_000, 10_000).model_validate(body)
    table, recent = request_tables(request, model.encoder.required_features(),
                                   tuple(f.name for f in model.artifact.schema.features))
    encoded = model.encoder.encode(table, REQUEST, recent)
    timings: dict[str, list[float]] = {"request_ms": [], "graph_ms": []}
    for _ in range(IN_PROCESS_CALLS):
        started = time.perf_counter()
        score_one(model, request)
        middle = time.perf_counter()
        score_encoded(model.artifact, encoded)
        timings["request_ms"].append(middle - started)
        timings["graph_ms"].append(time.perf_counter() - middle)
    return {name: round(float(np.median(values)) * 1e3, 2) for name, values in timings.items()}


def soak(artifacts: dict[str, Path], folder: Path, body: Path, seconds: float, every: float) -> dict[str, object]:
    """CTNet in watch mode under load while the two CTNets are published in turns every ``every`` seconds."""
    root = folder / "published"
    root.mkdir()
    turns = [artifacts["ctnet"], artifacts["ctnet_seed1"]]

    def publish(index: int) -> None:
        staging = root / f".period-{index:04d}.staging"
        shutil.copytree(turns[index % 2], staging)
        staging.rename(root / f"period-{index:04d}")
        for old in sorted(p for p in root.iterdir() if not p.name.startswith("."))[:-2]:
            shutil.rmtree(old)

    publish(0)
    server = Server(root, folder / "soak-server.log", "--watch", "--poll-seconds", "1")
    stop, published, rss_before_swaps = threading.Event(), [0], []

    def swapper() -> None:
        # every `every` seconds while the load runs, none in its last half interval (its swap would land after it)
        started = time.monotonic()
        while not stop.wait(every) and time.monotonic() - started <= seconds - every / 2:
            rss_before_swaps.append(server.rss_mb())
            published[0] += 1
            publish(published[0])

    try:
        # a short warm-up so the first RSS reading is of a server that has answered requests
        locust(server.url, SOAK_USERS, 5, body, folder / "soak-warmup")
        rss_start = server.rss_mb()
        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        result = locust(server.url, SOAK_USERS, seconds, body, folder / "soak")
        stop.set()
        thread.join()
        time.sleep(3)
        rss_end = server.rss_mb()
        swapped = server.metric('ctl_serve_reloads_total{outcome="swapped"}')
        refused = server.metric('ctl_serve_reloads_total{outcome="refused"}')
    finally:
        server.stop()
    return {"seconds": seconds, "users": SOAK_USERS, "swap_every_s": every, "published": published[0],
            "swapped": int(swapped), "refused": int(refused), "requests": result["requests"],
            "failed": result["failed"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_before_each_swap_mb": rss_before_swaps,
            "rss_change": round(rss_end / rss_start - 1, 3) if rss_start else None}


def serve_online(quick: bool) -> Figure:
    point = _seconds("SERVE_ONLINE_POINT_SECONDS", 5 if quick else 20)
    soak_seconds = _seconds("SERVE_ONLINE_SOAK_SECONDS", 30 if quick else 60)
    every = _seconds("SERVE_ONLINE_SWAP_SECONDS", 10 if quick else 20)
    folder = Path(tempfile.mkdtemp(prefix="ctl-serve-online-"))
    artifacts = _artifacts(folder)
    body_file = folder / "request.json"
    body = _request_body(artifacts["base"], body_file)
    results: dict[str, object] = {}

    def measure() -> float:
        table = {}
        for name in ("base", "ctnet"):
            server = Server(artifacts[name], folder / f"{name}-server.log")
            try:
                for users in CONCURRENCY:
                    table[f"{name} c={users}"] = locust(server.url, users, point, body_file,
                                                        folder / f"{name}-{users}")
            finally:
                server.stop()
            table[f"{name} in-process"] = in_process_ms(artifacts[name], body)
        results["table"] = table
        results["soak"] = soak(artifacts, folder, body_file, soak_seconds, every)
        return float(table["ctnet c=8"]["req_per_s"])

    def describe(median: float) -> dict[str, object]:
        return {"candidates": CANDIDATES, "seconds_per_point": point,
                "server": "ctl serve: 1 uvicorn process, 1 scoring thread, 1 torch thread; locust on the same machine",
                "world": "synthetic_tiny domain B, histories looked up in the dataset", "torch_threads": 1,
                "load_average": machine_load(), **results}

    torch.set_num_threads(1)
    return Figure(measure=measure, unit="req/s", describe=describe, max_repeats=1)


FIGURES = {"serve_online": serve_online}
