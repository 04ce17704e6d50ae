"""Data figures: how fast the synthetic world is generated and how fast the batcher feeds a model."""

from __future__ import annotations

import functools
import statistics
import time

from bench import Figure
from bench.workloads import (
    BATCH_SIZE,
    WARMUP_STEPS,
    BareLoop,
    build_net,
    first_batches,
    interleaved,
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
    chunk = 10
    model_steps = 2
    rounds = 2 if quick else 4
    batcher = row_batcher(dataset, rows)
    stream = iter(())
    consumers = {}
    for size in ("paper", "small"):
        consumers[size] = BareLoop(build_net("base", size, dataset))
        consumers[size].train(first_batches(batcher, WARMUP_STEPS))
    fed = first_batches(batcher, model_steps)
    seen: dict[str, list[float]] = {"batcher_per_s": [], "paper_steps_per_s": [], "small_steps_per_s": []}

    def build_chunk() -> float:
        nonlocal stream
        built = 0
        while built < chunk:
            if next(stream, None) is None:  # a new epoch: a new permutation
                batcher.set_epoch(batcher.epoch + 1)
                stream = iter(batcher)
                continue
            built += 1
        return built

    def measure() -> float:
        rates = interleaved({"batcher": build_chunk,
                             "paper": lambda: consumers["paper"].train(fed) / BATCH_SIZE,
                             "small": lambda: consumers["small"].train(fed) / BATCH_SIZE}, rounds)
        seen["batcher_per_s"].append(rates["batcher"])
        seen["paper_steps_per_s"].append(rates["paper"])
        seen["small_steps_per_s"].append(rates["small"])
        return rates["batcher"] / rates["paper"]

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
