"""Lifelong-history figure: training rows/s of the base model as users' histories grow, SIM by index vs by scan.

``lifelong`` trains the base model at the paper's sizes (``--quick``: the small sizes) on users whose
visible histories hold exactly L events, L in :data:`HISTORY_LENGTHS`, with ETA scanning all L
(``long_len = L``). Two ways to find SIM's events:

* ``index``: the shipped model; the batch carries the k most recent events of the candidate's
  category, found by two binary searches in the per-category index
  (:meth:`ctl.data.history.UserHistory.gather_category_last`);
* ``scan``: the same model reading the whole history as its window (``long_window = L``), which
  scans every event's category per row.

Timed: assembling each batch from the history (the data side) plus the training step (forward,
BCE, backward, Adagrad), in turns over the cells so a change of load hits all alike. Rows and
users are drawn at random; weights start untrained (speed does not depend on them). The figure's
value is the rows/s at the longest history over the rows/s at 64, with the index. History memory
is reported in bytes per event: every tensor :class:`~ctl.data.history.UserHistory` holds,
the per-category index included.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench import Figure
from bench.workloads import BareLoop, machine_load, train_config
from ctl.data.batcher import BatchAssembler
from ctl.data.history import UserHistory
from ctl.data.schema import Feature, Schema
from ctl.models import build_model

HISTORY_LENGTHS = (64, 1000, 3000, 10000)
#: events held in all (users x L): the same memory at every length
EVENTS = 2_000_000
ROWS = 2048
BATCH = 512
#: "at 10,000 events, at least half the rows/s at 64"
BUDGET = 0.5
DOMAINS = ("A", "B", "C")
N_ITEMS, N_CATEGORIES, N_USERS_VOCAB = 200_000, 1_000, 100_000


def lifelong_schema(length: int) -> Schema:
    """The synthetic_paper world's features at its vocabulary sizes, with ETA's window ``length``."""
    everywhere = DOMAINS
    features = (
        Feature("user_id", "categorical", N_USERS_VOCAB, 16, everywhere),
        Feature("item_id", "categorical", N_ITEMS, 16, everywhere),
        Feature("category_id", "categorical", N_CATEGORIES, 16, everywhere),
        Feature("seller_id", "categorical", 20_000, 16, everywhere),
        Feature("price_bucket", "bucket", 11, 8, everywhere),
        Feature("hour", "categorical", 25, 8, everywhere),
    )
    return Schema(features=features, domains=DOMAINS, source="A", n_history=1, n_transfer=1, short_len=10,
                  long_len=length, sim_len=64)


def synthetic_history(length: int, rng: np.random.Generator) -> tuple[UserHistory, int]:
    """Users with ``length`` events each (a few favourite categories, as real histories have)."""
    users = max(EVENTS // length, 1)
    n = users * length
    favourite = rng.integers(1, N_CATEGORIES, (users, 8))
    category = np.where(rng.random(n) < 0.7, favourite[np.repeat(np.arange(users), length), rng.integers(0, 8, n)],
                        rng.integers(1, N_CATEGORIES, n))
    columns = {"user_id": np.repeat(np.arange(users), length), "item_id": rng.integers(1, N_ITEMS, n),
               "category_id": category, "domain": rng.integers(0, len(DOMAINS), n),
               "ts": np.tile(np.arange(length), users)}
    return UserHistory.from_columns(columns, n_users=N_USERS_VOCAB, n_domains=len(DOMAINS)), users


def history_bytes_per_event(history: UserHistory) -> float:
    """Bytes of every tensor the history holds (its category index included), per event."""
    history.category_keys  # noqa: B018 (built on first use; counted here)
    held = [history.user_offsets, history._item, history._category, history._domain, history.ts,
            history.domain_order, history.domain_start, history.domain_cum, history.category_keys]
    return sum(t.numel() * t.element_size() for t in held) / max(history.n_events, 1)


def rows_of(schema: Schema, history: UserHistory, users: int, rng: np.random.Generator) -> BatchAssembler:
    """``ROWS`` training rows of random users, each seeing the whole of its history."""
    columns: dict[str, np.ndarray] = {}
    for feature in schema.features:
        columns[feature.name] = rng.integers(1, feature.vocab, ROWS)
    columns["user_id"] = rng.integers(0, users, ROWS)
    # candidates of the users' favourite categories half the time, so SIM finds events
    own = history.category.numpy()[history.user_offsets.numpy()[columns["user_id"]]]
    columns["category_id"] = np.where(rng.random(ROWS) < 0.5, own, columns["category_id"])
    columns.update(label=rng.integers(0, 2, ROWS), domain=np.ones(ROWS, dtype=np.int64),
                   period=np.zeros(ROWS, dtype=np.int64), hist_end=history.counts().numpy()[columns["user_id"]])
    return BatchAssembler(schema, history, columns, np.arange(ROWS), ())


class Cell:
    """One (history length, SIM way) pair: its assembler and training loop."""

    def __init__(self, size: str, length: int, way: str, assembler: BatchAssembler, schema: Schema) -> None:
        overrides = (f"model.size.long_window={length}",) if way == "scan" else ()
        torch.manual_seed(0)
        cfg = train_config("model=base", f"model/size={size}", *overrides)
        self.loop = BareLoop(build_model(cfg.model.net, schema).train())
        self.assembler = assembler
        self.rows = 0
        self.seconds = 0.0

    def run(self, batches: int) -> None:
        started = time.perf_counter()
        for start in range(0, batches * BATCH, BATCH):
            positions = torch.arange(start, start + BATCH) % ROWS
            self.loop.step(self.assembler.batch(positions))
        self.seconds += time.perf_counter() - started
        self.rows += batches * BATCH


def lifelong(quick: bool) -> Figure:
    size = "small" if quick else "paper"
    lengths = (HISTORY_LENGTHS[0], HISTORY_LENGTHS[1]) if quick else HISTORY_LENGTHS
    rng = np.random.default_rng(0)
    cells: dict[tuple[int, str], Cell] = {}
    memory: dict[int, float] = {}
    for length in lengths:
        schema = lifelong_schema(length)
        history, users = synthetic_history(length, rng)
        memory[length] = round(history_bytes_per_event(history), 1)
        assembler = rows_of(schema, history, users, rng)
        for way in ("index", "scan"):
            cells[length, way] = Cell(size, length, way, assembler, schema)
            cells[length, way].run(1)  # warm-up
            cells[length, way].rows = 0
            cells[length, way].seconds = 0.0
    order = list(cells)
    batches = 2 if quick else 4

    def measure() -> float:
        for round_index in range(2):
            for key in order if round_index % 2 == 0 else order[::-1]:
                cells[key].run(batches)
        rate = {key: cell.rows / cell.seconds for key, cell in cells.items()}
        return rate[lengths[-1], "index"] / rate[lengths[0], "index"]

    def describe(median: float) -> dict[str, object]:
        rates = {f"{way} L={length}": round(cell.rows / cell.seconds, 1) for (length, way), cell in cells.items()}
        return {"size": size, "batch": BATCH, "lengths": list(lengths), "rows_per_s": rates,
                "history_bytes_per_event": memory,
                "budget": f"rows/s at L={lengths[-1]} >= {BUDGET} x rows/s at L={lengths[0]} (index)",
                "budget_met": bool(median >= BUDGET), "load_average": machine_load()}

    return Figure(measure=measure, unit="ratio", describe=describe, max_repeats=1)


FIGURES = {"lifelong": lifelong}
