"""``ctl serve``: the HTTP server answers as ``ctl score`` does, swaps artifacts under load, refuses bad input.

Servers run in-process on a loopback port (uvicorn in a thread) or, for SIGTERM, as a real
``ctl serve`` process. The reference for scores is ``ctl score`` on a request file of the same rows.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

uvicorn = pytest.importorskip("uvicorn", reason="ctl serve needs ctl[serve] (fastapi, uvicorn, prometheus_client)")
from fastapi.testclient import TestClient

from ctl.errors import CtlError
from ctl.serve.export import export_run
from ctl.serve.online.app import ServeLimits, create_app
from ctl.serve.online.metrics import ServeMetrics
from ctl.serve.online.state import LoadedModel, ModelSlot, load_model
from ctl.serve.online.watcher import Reloader, newest_artifact
from ctl.serve.requests import requests_from_dataset
from ctl.serve.score import score_file
from ctl.training.protocol import run_train
from test_serve import make_cfg

TOLERANCE = 1e-6
MODELS = ("base", "ctnet")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """Torch.export artifacts of a base and a CTNet run on the tiny world's domain B."""
    home = tmp_path_factory.mktemp("online_home")
    folder = tmp_path_factory.mktemp("online_artifacts")
    found = {}
    for model in MODELS:
        run_dir = tmp_path_factory.mktemp(f"online_run_{model}")
        run_train(make_cfg(home, f"model={model}", "data.domain=B"), run_dir)
        found[model] = export_run(run_dir, folder / model)
    return found


@pytest.fixture(scope="module")
def test_rows(artifacts) -> dict[str, np.ndarray]:
    """The first 40 test rows of domain B (the runs' predictions.parquet rows)."""
    manifest = loaded(artifacts["base"]).artifact.manifest
    rows = pq.read_table(Path(manifest["run"]) / "predictions.parquet").column("row").to_numpy()
    return {"dataset": manifest["dataset_path"], "rows": rows[:40]}


def online_requests(table: pa.Table) -> list[dict]:
    """Each row of a ``ctl score`` request table as an online request of one candidate, then the
    rows of each (user, hist_end) together as one request of several candidates."""
    rows = table.to_pylist()
    shared = ("row", "user_id", "domain", "hist_end", "history_item_id", "history_category_id", "history_domain")
    requests = []
    for row in rows:
        request = {"user_id": row["user_id"], "domain": row["domain"],
                   "candidates": [{k: v for k, v in row.items() if k not in shared}]}
        if "hist_end" in row:
            request["hist_end"] = row["hist_end"]
        requests.append(request)
    return requests


def expected_scores(artifact: Path, table: pa.Table, tmp_path: Path) -> np.ndarray:
    pq.write_table(table, tmp_path / "requests.parquet")
    report = score_file(artifact, tmp_path / "requests.parquet", tmp_path / "scores.parquet")
    return pq.read_table(report.out).column("pred").to_numpy()


@functools.cache
def loaded(artifact: Path) -> LoadedModel:
    """The loaded artifact, shared by the tests' servers (loading one takes seconds)."""
    return load_model(artifact)


def in_process(artifact: Path, root: Path | None = None, limits: ServeLimits | None = None,
               watch: float | None = None):
    slot, metrics = ModelSlot(loaded(artifact)), ServeMetrics()
    return create_app(slot, Reloader(root or artifact, slot, metrics), metrics, limits or ServeLimits(), watch)


@contextmanager
def loopback_server(app) -> Iterator[str]:
    """``app`` on uvicorn in a thread on a free loopback port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def candidate(item: int) -> dict:
    return {"item_id": item, "category_id": 1 + item % 5, "seller_id": 1, "price_bucket": 2, "activity_bucket": 1,
            "hour": 12}


GOOD = {"user_id": 3, "domain": "B", "candidates": [candidate(i) for i in range(1, 21)]}


# --- equality with ctl score ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_score_answers_as_ctl_score_with_looked_up_and_recent_histories(artifacts, test_rows, model,
                                                                        tmp_path) -> None:
    table = requests_from_dataset(test_rows["dataset"], test_rows["rows"], with_history=False)
    expected = expected_scores(artifacts[model], table, tmp_path)
    with TestClient(in_process(artifacts[model])) as client:
        # one candidate a request, the history looked up by hist_end
        got = []
        for request in online_requests(table):
            answer = client.post("/score", json=request)
            assert answer.status_code == 200, answer.text
            got.extend(answer.json()["probabilities"])
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
        # every candidate of a request at once: the rows of one user who sees the same history
        by_view: dict[tuple, list[int]] = {}
        for i, request in enumerate(online_requests(table)):
            by_view.setdefault((request["user_id"], request["hist_end"]), []).append(i)
        requests = online_requests(table)
        for (user, hist_end), members in by_view.items():
            body = {"user_id": user, "hist_end": hist_end, "candidates": [requests[i]["candidates"][0] for i in members]}
            answer = client.post("/score", json=body).json()
            np.testing.assert_allclose(answer["probabilities"], expected[members], atol=TOLERANCE, rtol=0)
        # the last 3 visible events sent as recent events on top of the history before them
        with_history = requests_from_dataset(test_rows["dataset"], test_rows["rows"], with_history=True)
        for i, row in enumerate(with_history.to_pylist()):
            recent = min(3, len(row["history_item_id"]))
            events = [{"item_id": item, "category_id": category, "domain": domain} for item, category, domain in
                      zip(row["history_item_id"], row["history_category_id"], row["history_domain"], strict=True)]
            body = {**requests[i], "hist_end": requests[i]["hist_end"] - recent, "recent_events": events[-recent:]}
            if recent:
                answer = client.post("/score", json=body).json()
                assert abs(answer["probabilities"][0] - expected[i]) <= TOLERANCE, (i, answer)
        answer = client.post("/score", json=requests[0]).json()
    assert answer["method"] == model and answer["period"] == 5 and len(answer["fingerprint"]) == 16
    assert answer["unknown_ids"] == 0


def test_unknown_ids_are_counted_and_scored_as_absent(artifacts) -> None:
    with TestClient(in_process(artifacts["base"])) as client:
        body = {**GOOD, "user_id": 10**9, "recent_events": [{"item_id": -5, "category_id": 2, "domain": "A"}]}
        answer = client.post("/score", json=body).json()
        absent = client.post("/score", json={**GOOD, "user_id": 0,
                                             "recent_events": [{"item_id": 0, "category_id": 2,
                                                                "domain": "A"}]}).json()
    assert answer["unknown"] == {"user_id": 20, "recent_item_id": 1} and answer["unknown_ids"] == 21
    assert answer["probabilities"] == absent["probabilities"]


# --- bad input and overload --------------------------------------------------------------------------


BAD_REQUESTS = [
    ("not JSON", b"user_id=3", 422, "body"),
    ("not UTF-8", b'{"user_id": "\xff\xfe", "candidates": []}', 422, "body"),
    ("a list", b"[1, 2]", 422, "body"),
    ("missing user_id", {"candidates": [candidate(1)]}, 422, "user_id"),
    ("missing candidates", {"user_id": 3}, 422, "candidates"),
    ("no candidates", {"user_id": 3, "candidates": []}, 422, "candidates"),
    ("float id", {**GOOD, "user_id": 3.5}, 422, "user_id"),
    ("bool id", {**GOOD, "candidates": [{**candidate(1), "item_id": True}]}, 422, "candidates[0].item_id"),
    ("list id", {**GOOD, "candidates": [candidate(1), {**candidate(2), "hour": [1]}]}, 422, "candidates[1].hour"),
    ("missing feature", {**GOOD, "candidates": [candidate(1), {"item_id": 2}]}, 422, "candidates[1].category_id"),
    ("unknown feature", {**GOOD, "candidates": [{**candidate(1), "colour": 2}]}, 422, "colour"),
    ("feature twice", {**GOOD, "features": {"hour": 3}}, 422, "candidates[0].hour"),
    ("unknown field", {**GOOD, "user": 3}, 422, "user"),
    ("unknown domain", {**GOOD, "domain": "Z"}, 422, "domain"),
    ("other domain", {**GOOD, "domain": "A"}, 422, "domain"),
    ("unknown event domain", {**GOOD, "recent_events": [{"item_id": 1, "category_id": 1, "domain": "Q"}]}, 422,
     "domain"),
    ("negative hist_end", {**GOOD, "hist_end": -1}, 422, "hist_end"),
    ("hist_end past the history", {**GOOD, "hist_end": 10**6}, 422, "hist_end"),
    ("too many candidates", {**GOOD, "candidates": [candidate(1)] * 51}, 422, "candidates"),
    ("100k candidates", {**GOOD, "candidates": [candidate(1)] * 100_000}, 413, "body"),
]


def test_each_bad_request_gets_a_4xx_naming_its_field_and_the_server_stays_up(artifacts) -> None:
    limits = ServeLimits(max_candidates=50, max_body_bytes=2**20)
    with TestClient(in_process(artifacts["base"], limits=limits)) as client:
        for name, body, status, field in BAD_REQUESTS:
            kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
            answer = client.post("/score", **kwargs)
            assert answer.status_code == status, (name, answer.text)
            problems = answer.json()["problems"]
            assert problems[0]["field"] == field and problems[0]["problem"], (name, problems)
            assert client.post("/score", json=GOOD).status_code == 200, name
        metrics = client.get("/metrics").text
    assert 'ctl_serve_errors_total{kind="bad_request"} 19.0' in metrics
    assert 'ctl_serve_errors_total{kind="too_large"} 1.0' in metrics
    assert 'ctl_serve_requests_total{code="200",route="/score"} 20.0' in metrics


class HeldBody:
    """A request body sent in two parts, the second once :meth:`release` is called."""

    def __init__(self, body: bytes) -> None:
        self.body, self.released = body, threading.Event()

    def __iter__(self):
        yield self.body[:10]
        self.released.wait(timeout=30)
        yield self.body[10:]

    def release(self) -> None:
        self.released.set()


def send_held(url: str, held: HeldBody, answers: list) -> threading.Thread:
    def send() -> None:
        answers.append(httpx.post(f"{url}/score", content=held, timeout=60))

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def wait_in_flight(url: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/readyz").json()["in_flight"] != count:
        assert time.monotonic() < deadline, "the held request was never admitted"
        time.sleep(0.01)


def test_past_max_in_flight_the_server_answers_503_at_once(artifacts) -> None:
    import json

    app = in_process(artifacts["base"], limits=ServeLimits(max_in_flight=2))
    with loopback_server(app) as url:
        held = [HeldBody(json.dumps(GOOD).encode()) for _ in range(2)]
        answers: list = []
        threads = [send_held(url, h, answers) for h in held]
        wait_in_flight(url, 2)
        started = time.perf_counter()
        refused = httpx.post(f"{url}/score", json=GOOD)
        assert refused.status_code == 503 and time.perf_counter() - started < 5
        assert refused.headers["retry-after"] == "1" and "2 requests in flight" in refused.json()["error"]
        for h in held:
            h.release()
        for thread in threads:
            thread.join()
        assert [a.status_code for a in answers] == [200, 200]
        assert httpx.post(f"{url}/score", json=GOOD).status_code == 200
        assert 'ctl_serve_errors_total{kind="overloaded"} 1.0' in httpx.get(f"{url}/metrics").text


# --- hot swap ------------------------------------------------------------------------------------------


def publish(artifact: Path, root: Path, name: str) -> Path:
    """Copy ``artifact`` into ``root`` as ``name``, renamed into place once complete (as ctl export does)."""
    staging = root / f".{name}.staging"
    shutil.copytree(artifact, staging)
    return staging.rename(root / name)


def test_a_swap_under_concurrent_requests_loses_none_and_mixes_no_models(artifacts, tmp_path, caplog) -> None:
    root = tmp_path / "published"
    root.mkdir()
    publish(artifacts["base"], root, "period-0001")
    expected = {}
    for model in MODELS:
        with TestClient(in_process(artifacts[model])) as client:
            answer = client.post("/score", json=GOOD).json()
            expected[answer["fingerprint"]] = answer["probabilities"]
    assert len(expected) == 2
    app = in_process(root / "period-0001", root=root, watch=0.05, limits=ServeLimits(score_threads=2))
    answers: list = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                answers.append(client.post(f"{url}/score", json=GOOD, timeout=60))

    with loopback_server(app) as url:
        clients = [threading.Thread(target=client_loop) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        publish(artifacts["ctnet"], root, "period-0002")  # the watcher swaps it in
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/readyz").json()["method"] != "ctnet":
            assert time.monotonic() < deadline, "the watcher never swapped the new artifact in"
            time.sleep(0.05)
        before_bad = len(answers)
        # a corrupt artifact: refused with one log line naming the file; the CTNet keeps serving
        broken = publish(artifacts["base"], root, "period-0003")
        with caplog.at_level(logging.ERROR, logger="ctl.serve"):
            (broken / "model.pt2").write_bytes((broken / "model.pt2").read_bytes()[:1000])
            reload = httpx.post(f"{url}/admin/reload")
            time.sleep(0.3)  # the watcher also sees it: still one line
        while len(answers) < before_bad + 20:
            time.sleep(0.05)
        stop.set()
        for thread in clients:
            thread.join()
        ready = httpx.get(f"{url}/readyz").json()
        metrics = httpx.get(f"{url}/metrics").text
    assert reload.status_code == 409 and "model.pt2" in reload.json()["error"]
    assert ready["method"] == "ctnet" and ready["artifact"].endswith("period-0002")
    refusals = [r.getMessage() for r in caplog.records if r.name == "ctl.serve" and r.levelno == logging.ERROR]
    assert len(refusals) == 1 and "period-0003" in refusals[0] and "model.pt2" in refusals[0], refusals
    assert all(a.status_code == 200 for a in answers), {a.status_code for a in answers}
    seen = [a.json() for a in answers]
    assert {s["fingerprint"] for s in seen} == set(expected)
    for answer in seen:  # each answer is wholly one model's
        assert answer["probabilities"] == expected[answer["fingerprint"]]
    assert 'ctl_serve_reloads_total{outcome="swapped"} 1.0' in metrics
    assert 'ctl_serve_reloads_total{outcome="refused"} 1.0' in metrics
    assert 'period-0002",fingerprint=' in metrics and "period-0001" not in metrics


def test_reload_is_refused_to_clients_off_loopback(artifacts) -> None:
    with TestClient(in_process(artifacts["base"]), client=("203.0.113.7", 5000)) as client:
        answer = client.post("/admin/reload")
    assert answer.status_code == 403 and "203.0.113.7" in answer.json()["error"]


def test_the_newest_published_artifact_is_the_visible_folder_whose_name_sorts_last(tmp_path) -> None:
    for name in ("period-0009", "period-0010", ".period-0011.export-1a2b", "period-0002"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("not an artifact")
    assert newest_artifact(tmp_path) == tmp_path / "period-0010"
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    (tmp_path / "period-9999").symlink_to(outside, target_is_directory=True)  # a link out of the folder
    assert newest_artifact(tmp_path) == tmp_path / "period-0010"
    (tmp_path / "period-0010" / "manifest.json").write_text("{}")
    assert newest_artifact(tmp_path / "period-0010") == tmp_path / "period-0010"  # an artifact itself
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CtlError, match=r"empty holds no manifest.json and no artifact folder: publish one with "
                                       r"ctl export RUN_DIR --out .*empty/<name>"):
        newest_artifact(empty)


# --- the command ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_finishes_the_request_in_flight_then_exits(artifacts, tmp_path) -> None:
    import json

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "ctl.cli", "serve", str(artifacts["ctnet"]), "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ctl serve never became ready"
            time.sleep(0.1)
        held, answers = HeldBody(json.dumps(GOOD).encode()), []
        thread = send_held(url, held, answers)
        wait_in_flight(url, 1)
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.poll() is None, "the server exited with a request in flight"
        held.release()
        thread.join()
        output = server.communicate(timeout=60)[0]
    finally:
        if server.poll() is None:
            server.kill()
    assert answers[0].status_code == 200 and len(answers[0].json()["probabilities"]) == 20
    # uvicorn ends by raising the signal again once the requests are answered: killed by SIGTERM, as asked
    assert server.returncode == -signal.SIGTERM, output
    assert "Waiting for connections to close" in output and "Finished server process" in output


def test_serve_refuses_a_changed_artifact_at_start_in_one_line(artifacts, tmp_path) -> None:
    broken = publish(artifacts["base"], tmp_path, "broken")
    (broken / "schema.json").write_text("{}")
    result = subprocess.run([sys.executable, "-m", "ctl.cli", "serve", str(broken)], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: artifact") and "schema.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
