"""Training figures: model FLOP utilisation, Lightning's overhead, CTNet's cost, scaling with rows.

Every figure runs the paper-sized models on batches of the ``synthetic_paper`` world (B = 512,
L = 10, M = 64) except ``scaling``, which trains the demo's model on the default world.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

from bench import Figure
from bench.workloads import (
    BATCH_SIZE,
    WARMUP_STEPS,
    BareLoop,
    build_net,
    ctl_home,
    first_batches,
    load_world,
    machine_load,
    matmul_flops_per_second,
    period_rows,
    row_batcher,
    training_flops_per_row,
)
from ctl.data.batch import Batch
from ctl.data.datamodule import ContinualDataModule
from ctl.data.dataset import Dataset
from ctl.training.task import CTRTask
from ctl.training.task import adagrad as adagrad_factory

MFU_BUDGET = 0.40
PIPELINE_BUDGET = 0.95
CTNET_BUDGET = 1.35
#: scaling trains on 1, 2 and 4 periods of the source domain's rows
SCALES = (1, 2, 4)


@functools.lru_cache(maxsize=1)
def paper_world() -> Dataset:
    return load_world("synthetic_paper")


@dataclass
class TimedModel:
    """A model, its bare loop and the FLOPs of one of its training rows."""

    name: str
    loop: BareLoop
    flops_per_row: float

    def rows_per_second(self, batches: list[Batch]) -> float:
        seconds, rows = self.loop.seconds(batches, WARMUP_STEPS)
        return rows / seconds


@functools.lru_cache(maxsize=4)
def timed_models(size: str, steps: int) -> tuple[list[Batch], TimedModel, TimedModel]:
    """Base and CTNet at ``size`` on ``steps`` + warm-up batches of source rows of the paper world."""
    dataset = paper_world()
    rows = period_rows(dataset, dataset.schema.source, [dataset.schema.t0])
    batches = first_batches(row_batcher(dataset, rows), steps + WARMUP_STEPS)
    models = []
    for name in ("base", "ctnet"):
        net = build_net(name, size, dataset)
        models.append(TimedModel(name, BareLoop(net), training_flops_per_row(net, batches[0])))
    return batches, models[0], models[1]


def mfu(quick: bool) -> Figure:
    """Base model FLOP utilisation (paper sizes): rows/s x FLOPs per row / GEMM FLOP/s of the same repeat."""
    batches, base, ctnet = timed_models("paper", 8 if quick else 20)
    seen: dict[str, list[float]] = {"base_rows_per_s": [], "ctnet_rows_per_s": [], "ctnet_mfu": [],
                                    "matmul_gflops": []}

    def measure() -> float:
        rate = matmul_flops_per_second()
        base_speed = base.rows_per_second(batches)
        ctnet_speed = ctnet.rows_per_second(batches)
        rate = max(rate, matmul_flops_per_second())  # after as well: the quieter moment is the peak
        seen["base_rows_per_s"].append(base_speed)
        seen["ctnet_rows_per_s"].append(ctnet_speed)
        seen["ctnet_mfu"].append(ctnet_speed * ctnet.flops_per_row / rate)
        seen["matmul_gflops"].append(rate / 1e9)
        return base_speed * base.flops_per_row / rate

    def describe(median: float) -> dict[str, object]:
        return {
            "model": "base, model/size=paper, B=512",
            "budget": MFU_BUDGET,
            "within_budget": median >= MFU_BUDGET,
            "base_mflop_per_row": base.flops_per_row / 1e6,
            "ctnet_mflop_per_row": ctnet.flops_per_row / 1e6,
            **{f"{name}_median": statistics.median(values) for name, values in seen.items()},
            "load": machine_load(),
        }

    return Figure(measure=measure, unit="fraction", describe=describe)


def ctnet_vs_base(quick: bool) -> Figure:
    """CTNet's training time per row over the base model's, paper sizes (the small sizes as an extra)."""
    steps = 8 if quick else 20
    batches, base, ctnet = timed_models("paper", steps)
    small_batches, small_base, small_ctnet = timed_models("small", 4 * steps)
    small_ratios: list[float] = []

    def measure() -> float:
        base_speed = base.rows_per_second(batches)
        ratio = base_speed / ctnet.rows_per_second(batches)
        small_ratios.append(small_base.rows_per_second(small_batches) / small_ctnet.rows_per_second(small_batches))
        return ratio

    def describe(median: float) -> dict[str, object]:
        return {
            "model": "ctnet / base, model/size=paper, B=512",
            "budget": CTNET_BUDGET,
            "within_budget": median <= CTNET_BUDGET,
            "flop_ratio": ctnet.flops_per_row / base.flops_per_row,
            "small_size_ratio_median": statistics.median(small_ratios),
            "small_size_flop_ratio": small_ctnet.flops_per_row / small_base.flops_per_row,
            "load": machine_load(),
        }

    return Figure(measure=measure, unit="ratio", describe=describe)


class StepClock(pl.Callback):
    """Times the training batches after the first ``warmup`` (batch fetch included)."""

    def __init__(self, warmup: int, last: int) -> None:
        self.warmup = warmup
        self.last = last
        self.started = 0.0
        self.seconds = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup - 1:
            self.started = time.perf_counter()
        elif batch_idx == self.last:
            self.seconds = time.perf_counter() - self.started


def lightning_trainer(log_dir: Path, callbacks: list[pl.Callback], limit_batches: int | None) -> pl.Trainer:
    """The Trainer ``ctl train`` builds (trainer=cpu, CSV logger), one epoch, no validation, no UI."""
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        log_every_n_steps=50,
        max_epochs=1,
        limit_train_batches=limit_batches,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=CSVLogger(save_dir=str(log_dir), name="logs", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def pipeline_vs_bare(quick: bool) -> Figure:
    """Rows/s of CTRTask + ContinualDataModule (RowBatcher) + Trainer over a bare loop on the same batches."""
    dataset = paper_world()
    schema = dataset.schema
    steps = 12 if quick else 40
    warmup = WARMUP_STEPS + 2  # Lightning's first steps also build its loop state
    model = build_net("base", "paper", dataset)
    bare = BareLoop(model)
    log_dir = Path(tempfile.mkdtemp(prefix="ctl-bench-"))
    seen: dict[str, list[float]] = {"bare_rows_per_s": [], "pipeline_rows_per_s": []}

    def datamodule() -> ContinualDataModule:
        return ContinualDataModule(dataset, [schema.source], [schema.t0], schema.source, batch_size=BATCH_SIZE)

    def bare_speed() -> float:
        # outside a trainer a datamodule serves epoch 0 of rank 0: the batches the pipeline trains on
        batches = iter(datamodule().train_dataloader())
        seconds, rows = bare.seconds((next(batches) for _ in range(steps)), warmup)
        return rows / seconds

    def pipeline_speed() -> float:
        data = datamodule()
        task = CTRTask(model, adagrad_factory(lr=0.01), data.period_of_epoch, schema.test_period)
        clock = StepClock(warmup, steps - 1)
        trainer = lightning_trainer(log_dir, [clock], steps)
        trainer.fit(task, datamodule=data)
        return (steps - warmup) * BATCH_SIZE / clock.seconds

    def measure() -> float:
        # alternate which loop runs first, so neither always gets the quieter moment
        first_bare = len(seen["bare_rows_per_s"]) % 2 == 0
        speeds = [bare_speed(), pipeline_speed()] if first_bare else [pipeline_speed(), bare_speed()][::-1]
        seen["bare_rows_per_s"].append(speeds[0])
        seen["pipeline_rows_per_s"].append(speeds[1])
        return speeds[1] / speeds[0]

    def describe(median: float) -> dict[str, object]:
        return {
            "model": "base, model/size=paper, B=512",
            "timed_steps": steps - warmup,
            "budget": PIPELINE_BUDGET,
            "within_budget": median >= PIPELINE_BUDGET,
            **{f"{name}_median": statistics.median(values) for name, values in seen.items()},
            "load": machine_load(),
        }

    return Figure(measure=measure, unit="ratio", describe=describe)


def run_demo(home: Path) -> dict[str, object]:
    """One ``ctl train model=ctnet`` (the demo) in a child process on the cached default world.

    The child gets a fresh home whose ``datasets`` is the shared cache: it trains both tracks and
    CTNet, as on a fresh checkout, minus the data generation (see the ``datagen`` figure).
    """
    load_world("synthetic")  # generated into the shared cache if missing
    fresh = Path(tempfile.mkdtemp(prefix="ctl-bench-demo-"))
    (fresh / "home").mkdir()
    os.symlink(ctl_home() / "datasets", fresh / "home" / "datasets", target_is_directory=True)
    ctl = Path(sys.executable).with_name("ctl")
    started = time.perf_counter()
    subprocess.run(
        [str(ctl), "train", "model=ctnet", f"home={fresh / 'home'}", "progress=false", "print_table=false",
         f"hydra.run.dir={fresh / 'run'}"],
        check=True, stdout=subprocess.DEVNULL, env={**os.environ, "CTL_HOME": str(fresh / "home")},
    )
    wall = time.perf_counter() - started
    metrics = json.loads((fresh / "run" / "metrics.json").read_text())
    return {
        "demo_command": "ctl train model=ctnet (default world cached)",
        "demo_wall_s": round(wall, 1),
        "demo_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "demo_test_auc": metrics["test"]["auc"],
        "demo_test_gauc": metrics["test"]["gauc"],
    }


def scaling(quick: bool) -> Figure:
    """Seconds of one Lightning epoch of the demo's base model over 1x, 2x, 4x a period's source rows.

    The figure's value is the 1x time; the 2x and 4x times and the demo's wall time and peak RSS
    (one run, without ``--quick``) are extras.
    """
    dataset = load_world("synthetic")
    schema = dataset.schema
    first = schema.t0 - max(SCALES)
    rows = {k: period_rows(dataset, schema.source, range(first, first + k)) for k in SCALES}
    if quick:
        rows = {k: r[: len(r) // 8] for k, r in rows.items()}
    model = build_net("base", "small", dataset)
    log_dir = Path(tempfile.mkdtemp(prefix="ctl-bench-"))
    seconds: dict[int, list[float]] = {k: [] for k in SCALES}

    def epoch_seconds(selected: np.ndarray) -> float:
        task = CTRTask(model, adagrad_factory(lr=0.01), lambda epoch: schema.t0, schema.test_period)
        batcher = row_batcher(dataset, selected)
        trainer = lightning_trainer(log_dir, [], None)
        started = time.perf_counter()
        trainer.fit(task, train_dataloaders=batcher)
        return time.perf_counter() - started

    def measure() -> float:
        for k in SCALES:
            seconds[k].append(epoch_seconds(rows[k]))
        return seconds[1][-1]

    demo = {} if quick else run_demo(ctl_home())

    def describe(median: float) -> dict[str, object]:
        medians = {k: statistics.median(v) for k, v in seconds.items()}
        return {
            "model": "base, model/size=small (the demo's), source rows of the default world, B=512",
            **{f"rows_{k}x": int(rows[k].size) for k in SCALES},
            **{f"seconds_{k}x_median": medians[k] for k in SCALES},
            **{f"ratio_{k}x": medians[k] / medians[1] for k in SCALES[1:]},
            **demo,
            "load": machine_load(),
        }

    return Figure(measure=measure, unit="s", describe=describe)


FIGURES = {
    "mfu": mfu,
    "ctnet_vs_base": ctnet_vs_base,
    "pipeline_vs_bare": pipeline_vs_bare,
    "scaling": scaling,
}
