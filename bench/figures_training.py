"""Training figures: model FLOP utilisation, Lightning's overhead, CTNet's cost, scaling with rows.

Every figure runs the paper-sized models on batches of the ``synthetic_paper`` world (B = 512,
L = 10, M = 64) except ``scaling``, which trains the demo's model on the default world.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
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
    interleaved,
    load_world,
    machine_load,
    matmul_work,
    period_rows,
    row_batcher,
    train_optimizer,
    training_flops_per_row,
)
from ctl.data.batch import Batch
from ctl.data.datamodule import ContinualDataModule
from ctl.data.dataset import Dataset
from ctl.training.task import CTRTask

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
    """A model's bare training loop (warmed up) and the FLOPs of one of its training rows."""

    loop: BareLoop
    flops_per_row: float


#: CTNet's cheap variant: rank-64 adapters and the source tower's SIM/ETA attention shared
CHEAP_CTNET = ("model.net.adapter_rank=64", "model.net.share_attention=true")


@functools.lru_cache(maxsize=4)
def timed_models(size: str, steps: int) -> tuple[list[Batch], TimedModel, TimedModel]:
    """Base and CTNet at ``size``, and ``steps`` batches of source rows of the paper world to time them on."""
    batches = paper_batches(steps)
    return batches, timed_model(batches, "base", size), timed_model(batches, "ctnet", size)


@functools.lru_cache(maxsize=2)
def paper_batches(steps: int) -> list[Batch]:
    """The first ``steps`` training batches of the paper world's source rows of period t0."""
    dataset = paper_world()
    rows = period_rows(dataset, dataset.schema.source, [dataset.schema.t0])
    return first_batches(row_batcher(dataset, rows), steps)


def timed_model(batches: list[Batch], model: str, size: str, *overrides: str) -> TimedModel:
    """``model=<model> model/size=<size> <overrides>``'s bare loop, warmed up on ``batches``."""
    net = build_net(model, size, paper_world(), *overrides)
    loop = BareLoop(net)
    loop.train(batches[:WARMUP_STEPS])
    return TimedModel(loop, training_flops_per_row(net, batches[0]))


def mfu(quick: bool) -> Figure:
    """Base model FLOP utilisation (paper sizes): rows/s x FLOPs per row / fp32 GEMM FLOP/s, measured in turns."""
    batches, base, ctnet = timed_models("paper", 4)
    rounds = 2 if quick else 4
    matmul = matmul_work()
    seen: dict[str, list[float]] = {"base_rows_per_s": [], "ctnet_rows_per_s": [], "ctnet_mfu": [],
                                    "matmul_gflops": []}

    def measure() -> float:
        rates = interleaved({"matmul": matmul, "base": lambda: base.loop.train(batches),
                             "ctnet": lambda: ctnet.loop.train(batches)}, rounds)
        seen["base_rows_per_s"].append(rates["base"])
        seen["ctnet_rows_per_s"].append(rates["ctnet"])
        seen["ctnet_mfu"].append(rates["ctnet"] * ctnet.flops_per_row / rates["matmul"])
        seen["matmul_gflops"].append(rates["matmul"] / 1e9)
        return rates["base"] * base.flops_per_row / rates["matmul"]

    def describe(median: float) -> dict[str, object]:
        return {
            "model": "base, model/size=paper, B=512",
            "budget": MFU_BUDGET,
            "within_budget": median >= MFU_BUDGET,
            "base_mflop_per_row": base.flops_per_row / 1e6,
            "ctnet_mflop_per_row": ctnet.flops_per_row / 1e6,
            **{f"{name}_median": statistics.median(values) for name, values in seen.items()},
            "timed_steps": rounds * len(batches),
            "load": machine_load(),
        }

    return Figure(measure=measure, unit="fraction", describe=describe)


def ctnet_vs_base(quick: bool) -> Figure:
    """CTNet's training time per row over the base model's, paper sizes.

    Extras: the small sizes, and CTNet's cheap variant (rank-64 adapters, shared SIM/ETA attention)
    at the paper sizes.
    """
    rounds = 2 if quick else 4
    batches, base, ctnet = timed_models("paper", 4)
    cheap = timed_model(batches, "ctnet", "paper", *CHEAP_CTNET)
    small_batches, small_base, small_ctnet = timed_models("small", 16)
    extra: dict[str, list[float]] = {"small_size_ratio": [], "cheap_ratio": []}

    def measure() -> float:
        rates = interleaved({"base": lambda: base.loop.train(batches), "ctnet": lambda: ctnet.loop.train(batches),
                             "cheap": lambda: cheap.loop.train(batches),
                             "small_base": lambda: small_base.loop.train(small_batches),
                             "small_ctnet": lambda: small_ctnet.loop.train(small_batches)}, rounds)
        extra["small_size_ratio"].append(rates["small_base"] / rates["small_ctnet"])
        extra["cheap_ratio"].append(rates["base"] / rates["cheap"])
        return rates["base"] / rates["ctnet"]

    def describe(median: float) -> dict[str, object]:
        cheap_median = statistics.median(extra["cheap_ratio"])
        return {
            "model": "ctnet / base, model/size=paper, B=512",
            "budget": CTNET_BUDGET,
            "within_budget": median <= CTNET_BUDGET,
            "flop_ratio": ctnet.flops_per_row / base.flops_per_row,
            "small_size_ratio_median": statistics.median(extra["small_size_ratio"]),
            "small_size_flop_ratio": small_ctnet.flops_per_row / small_base.flops_per_row,
            "cheap_model": " ".join(CHEAP_CTNET),
            "cheap_ratio_median": cheap_median,
            "cheap_ratio_min": min(extra["cheap_ratio"]),
            "cheap_ratio_max": max(extra["cheap_ratio"]),
            "cheap_within_budget": cheap_median <= CTNET_BUDGET,
            "cheap_flop_ratio": cheap.flops_per_row / base.flops_per_row,
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
    steps = 10 if quick else 16
    rounds = 2 if quick else 4
    warmup = WARMUP_STEPS  # Lightning's first steps also build its loop state
    model = build_net("base", "paper", dataset)
    bare = BareLoop(model)
    log_dir = Path(tempfile.mkdtemp(prefix="ctl-bench-"))
    seen: dict[str, list[float]] = {"bare_rows_per_s": [], "pipeline_rows_per_s": []}

    def datamodule() -> ContinualDataModule:
        return ContinualDataModule(dataset, [schema.source], [schema.t0], schema.source, batch_size=BATCH_SIZE)

    def bare_run() -> tuple[int, float]:
        # outside a trainer a datamodule serves epoch 0 of rank 0: the batches the pipeline trains on
        batches = iter(datamodule().train_dataloader())
        bare.train(next(batches) for _ in range(warmup))
        started = time.perf_counter()
        rows = bare.train(next(batches) for _ in range(steps - warmup))
        return rows, time.perf_counter() - started

    def pipeline_run() -> tuple[int, float]:
        data = datamodule()
        task = CTRTask(model, train_optimizer(), data.period_of_epoch, schema.test_period)
        clock = StepClock(warmup, steps - 1)
        trainer = lightning_trainer(log_dir, [clock], steps)
        trainer.fit(task, datamodule=data)
        return (steps - warmup) * BATCH_SIZE, clock.seconds

    def measure() -> float:
        # in turns, the order reversed every round, so a change of load hits both loops alike
        rows = {"bare": 0.0, "pipeline": 0.0}
        seconds = {"bare": 0.0, "pipeline": 0.0}
        for round_index in range(rounds):
            for name in ("bare", "pipeline") if round_index % 2 == 0 else ("pipeline", "bare"):
                done, spent = bare_run() if name == "bare" else pipeline_run()
                rows[name] += done
                seconds[name] += spent
        speeds = {name: rows[name] / seconds[name] for name in rows}
        seen["bare_rows_per_s"].append(speeds["bare"])
        seen["pipeline_rows_per_s"].append(speeds["pipeline"])
        return speeds["pipeline"] / speeds["bare"]

    def describe(median: float) -> dict[str, object]:
        return {
            "model": "base, model/size=paper, B=512",
            "timed_steps": rounds * (steps - warmup),
            "budget": PIPELINE_BUDGET,
            "within_budget": median >= PIPELINE_BUDGET,
            **{f"{name}_median": statistics.median(values) for name, values in seen.items()},
            "load": machine_load(),
        }

    return Figure(measure=measure, unit="ratio", describe=describe)


def run_demo(home: Path) -> dict[str, object]:
    """One ``ctl train model=ctnet`` (the demo) in a child process on the cached default world.

    The child gets a fresh home whose ``datasets`` is the shared cache: it trains both tracks and
    CTNet, as on a fresh checkout, minus the data generation (see the ``datagen`` figure). Its peak
    RSS comes from ``/usr/bin/time`` (the child alone; ``RUSAGE_CHILDREN`` would also count the
    moment the child was a fork of this large process) and from the run's own records.
    """
    load_world("synthetic")  # generated into the shared cache if missing
    fresh = Path(tempfile.mkdtemp(prefix="ctl-bench-demo-"))
    (fresh / "home").mkdir()
    os.symlink(ctl_home() / "datasets", fresh / "home" / "datasets", target_is_directory=True)
    command = [str(Path(sys.executable).with_name("ctl")), "train", "model=ctnet", f"home={fresh / 'home'}",
               "progress=false", "print_table=false", f"hydra.run.dir={fresh / 'run'}"]
    timer = shutil.which("time") or "/usr/bin/time"
    if Path(timer).is_file():
        command = [timer, "-f", "%M", "-o", str(fresh / "max_rss_kb"), *command]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "CTL_HOME": str(fresh / "home")})
    wall = time.perf_counter() - started
    metrics = json.loads((fresh / "run" / "metrics.json").read_text())
    cost = metrics["cost"]
    recorded = [part.get("peak_rss_mb", 0.0) for part in [cost.get("own") or {}, *cost.get("tracks", {}).values()]]
    measured = (fresh / "max_rss_kb").read_text().split()[-1] if (fresh / "max_rss_kb").is_file() else None
    return {
        "demo_command": "ctl train model=ctnet (default world cached, tracks trained)",
        "demo_wall_s": round(wall, 1),
        "demo_peak_rss_mb": round(int(measured) / 1024, 1) if measured else None,
        "demo_peak_rss_mb_recorded_by_the_run": max(recorded),
        "demo_test_auc": metrics["test"]["auc"],
        "demo_test_gauc": metrics["test"]["gauc"],
        "demo_baseline_test_auc": metrics.get("baseline", {}).get("test", {}).get("auc"),
        "demo_baseline_test_gauc": metrics.get("baseline", {}).get("test", {}).get("gauc"),
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
        task = CTRTask(model, train_optimizer(), lambda epoch: schema.t0, schema.test_period)
        batcher = row_batcher(dataset, selected)
        trainer = lightning_trainer(log_dir, [], None)
        started = time.perf_counter()
        trainer.fit(task, train_dataloaders=batcher)
        return time.perf_counter() - started

    epoch_seconds(rows[1][: 8 * BATCH_SIZE])  # untimed: the process's first fit pays one-off costs

    def measure() -> float:
        order = SCALES if len(seconds[1]) % 2 == 0 else SCALES[::-1]
        for k in order:
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


def step_ms(quick: bool) -> Figure:
    """Milliseconds per training step (B = 512) of the paper-sized base model; the small one as an extra.

    The plain step time, for comparing process settings such as ``OMP_WAIT_POLICY`` or the
    thread count: run it once per setting.
    """
    paper = paper_batches(4)
    small = paper_batches(16)
    base, small_base = timed_model(paper, "base", "paper"), timed_model(small, "base", "small")
    small_ms: list[float] = []

    def measure() -> float:
        started = time.perf_counter()
        small_base.loop.train(small)
        small_ms.append((time.perf_counter() - started) * 1000 / len(small))
        started = time.perf_counter()
        base.loop.train(paper)
        return (time.perf_counter() - started) * 1000 / len(paper)

    def describe(median: float) -> dict[str, object]:
        return {"model": "base, model/size=paper, B=512", "small_size_ms_median": statistics.median(small_ms),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"), "load": machine_load()}

    return Figure(measure=measure, unit="ms", describe=describe)


FIGURES = {
    "step_ms": step_ms,
    "mfu": mfu,
    "ctnet_vs_base": ctnet_vs_base,
    "pipeline_vs_bare": pipeline_vs_bare,
    "scaling": scaling,
}
