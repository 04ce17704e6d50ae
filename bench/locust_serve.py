"""Locust users for the ``serve_online`` figure: each posts one prepared request to ``POST /score`` in a loop.

The body is read from the JSON file named by ``SERVE_ONLINE_BODY``; an answer counts as failed
unless it is 200 with one probability per candidate. No wait between requests: the number of
users is the concurrency.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from locust import HttpUser, constant, task

BODY = Path(os.environ["SERVE_ONLINE_BODY"]).read_bytes()
CANDIDATES = len(json.loads(BODY)["candidates"])


class ScoringClient(HttpUser):
    wait_time = constant(0)

    @task
    def score(self) -> None:
        with self.client.post("/score", data=BODY, headers={"content-type": "application/json"},
                              catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"status {answer.status_code}: {answer.text[:200]}")
            elif len(answer.json()["probabilities"]) != CANDIDATES:
                answer.failure("wrong number of probabilities")
