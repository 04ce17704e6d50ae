"""Data figures: how fast the synthetic world is generated and how fast the batcher feeds a model."""

from __future__ import annotations

import functools
import statistics
import time

from bench import Figure
from bench.workloads import (
    WARMUP_STEPS,
    BareLoop,
    build_net,
    first_batches,
    load_world,
    machine_load,
    period_rows,
    row_batcher,
    train_config,
)

#: the batcher must build batches at least this many times faster than the model trains on them
BATCHES_BUDGET = 10.0


def datagen(quick: bool) -> Figure:
    """Rows per second of simulating the synthetic world (``data=synthetic``; quick: ``synthetic_tiny``)."""
    from hydra.utils import instantiate

    cfg = train_config(f"data={'synthetic_tiny' if quick else 'synthetic'}")
    world = instantiate(cfg.data.generator)
    sizes: dict[str, int] = {}

    def measure() -> float:
        started = time.perf_counter()
        sample = world.simulate()
        seconds = time.perf_counter() - started
        sizes.update(rows=int(sample.rows["label"].shape[0]), events=int(sample.history["user_id"].shape[0]))
        return sizes["rows"] / seconds

    def describe(median: float) -> dict[str, object]:
        return {"world": cfg.data.name, **sizes, "load": machine_load()}

    return Figure(measure=measure, unit="rows/s", describe=describe)


@functools.lru_cache(maxsize=1)
def batch_source() -> tuple:
    """The paper world and the source rows of its first transfer period."""
    dataset = load_world("synthetic_paper")
    return dataset, period_rows(dataset, dataset.schema.source, [dataset.schema.t0])


def batches(quick: bool) -> Figure:
    """Batches/s of RowBatcher alone (paper world, B=512, L=10, M=64) over the paper base model's steps/s."""
    dataset, rows = batch_source()
    n_batches = 30 if quick else 100
    model_steps = 4 if quick else 8
    consumers = {size: BareLoop(build_net("base", size, dataset)) for size in ("paper", "small")}
    seen: dict[str, list[float]] = {"batcher_per_s": [], "paper_steps_per_s": [], "small_steps_per_s": []}

    def measure() -> float:
        batcher = row_batcher(dataset, rows)
        batcher.set_epoch(len(seen["batcher_per_s"]))  # a fresh permutation each repeat
        started = time.perf_counter()
        built = first_batches(batcher, n_batches)
        rate = n_batches / (time.perf_counter() - started)
        for size, loop in consumers.items():
            seconds, _ = loop.seconds(built[: model_steps + WARMUP_STEPS], WARMUP_STEPS)
            seen[f"{size}_steps_per_s"].append(model_steps / seconds)
        seen["batcher_per_s"].append(rate)
        return rate / seen["paper_steps_per_s"][-1]

    def describe(median: float) -> dict[str, object]:
        medians = {name: statistics.median(values) for name, values in seen.items()}
        return {
            "batch": "B=512, short L=10, long M=64, paper world source rows",
            "budget": BATCHES_BUDGET,
            "within_budget": median >= BATCHES_BUDGET,
            **{f"{name}_median": value for name, value in medians.items()},
            "ratio_vs_small_model": medians["batcher_per_s"] / medians["small_steps_per_s"],
            "load": machine_load(),
        }

    return Figure(measure=measure, unit="ratio", describe=describe)


FIGURES = {"datagen": datagen, "batches": batches}
