"""Serving figure: latency of one user x N candidates and batch throughput, base vs CTNet, eager vs exported.

``serve`` scores requests of the ``synthetic_paper`` world's target domain B with three models at
the paper's sizes (``--quick``: the small sizes, whose SIM/ETA keep top-k of the long sequence):
``base``, ``ctnet`` and ``ctnet_shared`` (the towers share the SIM/ETA attention, the paper's
section 4.7), each run three ways: ``eager`` (the nn.Module under ``torch.inference_mode``),
``torch_export`` (the saved ExportedProgram, as ``ctl score`` runs it) and ``onnx`` (ONNX Runtime,
CPU provider; left out when ``ctl[serve]`` is not installed). Weights are untrained: latency does
not depend on them.

A request is one user (a test row's user and history) with N candidate items (N = 100, 500; the
items and their features of N test rows). Timed: the graph call on encoded tensors, after
:data:`WARMUP_CALLS` untimed calls; every round times each (model, runtime, N) once, in turns, so
a change of load hits all alike. p50/p99 pool every round of every repeat. Throughput: rows/s of
one call on :data:`BATCH_ROWS` test rows of many users.

The figure's value is CTNet-with-shared-attention's p50 over base's at N = 500 on the exported
graph: the paper says online response time is the same (ratio 1).
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import Figure
from bench.workloads import build_net, load_world, machine_load
from ctl.data.batch import Batch
from ctl.data.batcher import BatchAssembler, row_columns
from ctl.data.dataset import Dataset
from ctl.serve.artifact import OnnxRunner, TorchRunner
from ctl.serve.export import Probabilities, export_graph, graph_inputs

MODELS: dict[str, tuple[str, ...]] = {
    "base": ("base",),
    "ctnet": ("ctnet",),
    "ctnet_shared": ("ctnet", "model.net.share_attention=true"),
}
CANDIDATES = (100, 500)
BATCH_ROWS = 4096
WARMUP_CALLS = 10
DOMAIN = "B"
#: "the same response time" read as: CTNet-shared's p50 at most this multiple of base's
CLAIM_TOLERANCE = 1.10


@functools.lru_cache(maxsize=1)
def serve_world() -> Dataset:
    return load_world("synthetic_paper")


def one_user_request(dataset: Dataset, n: int) -> Batch:
    """One user (the first test row's, with its visible history) and the items of ``n`` test rows."""
    rows = dataset.select([DOMAIN], [dataset.schema.test_period])[:n]
    columns = {name: dataset.rows[name][rows].copy() for name in row_columns(dataset.schema)}
    columns["user_id"][:] = columns["user_id"][0]
    columns["hist_end"][:] = columns["hist_end"][0]
    return BatchAssembler(dataset.schema, dataset.history, columns, rows.copy(), ()).batch(torch.arange(n))


def test_rows_batch(dataset: Dataset, n: int) -> Batch:
    rows = dataset.select([DOMAIN], [dataset.schema.test_period])[:n]
    return BatchAssembler.from_dataset(dataset, rows, ()).batch(torch.arange(rows.size))


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def forward_mflop_per_row(wrapped: Probabilities, inputs: list[torch.Tensor]) -> float:
    """Matmul-like MFLOPs of one scoring call per row (``torch.utils.flop_counter``, as executed)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        wrapped(*inputs)
    return counter.get_total_flops() / inputs[0].shape[0] / 1e6


def runners(wrapped: Probabilities, batch: Batch, folder: Path, name: str) -> dict[str, Callable]:
    """The model's three ways to score a list of input tensors."""

    def eager(inputs: list[torch.Tensor]) -> np.ndarray:
        with torch.inference_mode():
            return wrapped(*inputs).numpy()

    found: dict[str, Callable] = {"eager": eager}
    export_graph(wrapped, batch, "torch_export", folder / f"{name}.pt2")
    found["torch_export"] = TorchRunner(folder / f"{name}.pt2")
    if onnx_available():
        export_graph(wrapped, batch, "onnx", folder / f"{name}.onnx")
        found["onnx"] = OnnxRunner(folder / f"{name}.onnx", list(wrapped.keys))
    return found


def serve(quick: bool) -> Figure:
    size = "small" if quick else "paper"
    calls = 30 if quick else 100
    dataset = serve_world()
    requests = {n: one_user_request(dataset, n) for n in CANDIDATES}
    many = test_rows_batch(dataset, BATCH_ROWS)
    folder = Path(tempfile.mkdtemp(prefix="ctl-serve-bench-"))
    cells: dict[tuple[str, str], Callable] = {}
    inputs: dict[tuple[str, int], list[torch.Tensor]] = {}
    mflop: dict[str, float] = {}
    for name, (model, *overrides) in MODELS.items():
        net = build_net(model, size, dataset, *overrides).eval()
        wrapped = graph_inputs(net, requests[CANDIDATES[0]])
        for runtime, run in runners(wrapped, requests[CANDIDATES[0]], folder, name).items():
            cells[name, runtime] = run
        for n, batch in [*requests.items(), (BATCH_ROWS, many)]:
            inputs[name, n] = [batch[k] for k in wrapped.keys]
        mflop[name] = round(forward_mflop_per_row(wrapped, inputs[name, CANDIDATES[-1]]), 3)
    for (name, _), run in cells.items():  # warm-up: first-call allocations, lazy initialisation
        for n in CANDIDATES:
            for _ in range(WARMUP_CALLS):
                run(inputs[name, n])
        run(inputs[name, BATCH_ROWS])
    seconds: dict[tuple[str, str, int], list[float]] = {(m, r, n): [] for (m, r) in cells for n in CANDIDATES}
    batch_seconds: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
    order = list(cells)

    def timed(run: Callable, tensors: list[torch.Tensor]) -> float:
        started = time.perf_counter()
        run(tensors)
        return time.perf_counter() - started

    def measure() -> float:
        for round_index in range(calls):
            for name, runtime in order if round_index % 2 == 0 else order[::-1]:
                for n in CANDIDATES:
                    seconds[name, runtime, n].append(timed(cells[name, runtime], inputs[name, n]))
        for name, runtime in order:
            batch_seconds[name, runtime].append(timed(cells[name, runtime], inputs[name, BATCH_ROWS]))
        return float(np.median(seconds["ctnet_shared", "torch_export", 500])
                     / np.median(seconds["base", "torch_export", 500]))

    def describe(median: float) -> dict[str, object]:
        table = {}
        for name, runtime in cells:
            row = {}
            for n in CANDIDATES:
                values = np.asarray(seconds[name, runtime, n]) * 1e3
                row[f"p50_ms_n{n}"] = round(float(np.percentile(values, 50)), 3)
                row[f"p99_ms_n{n}"] = round(float(np.percentile(values, 99)), 3)
            row["batch_rows_per_s"] = round(BATCH_ROWS * len(batch_seconds[name, runtime])
                                            / sum(batch_seconds[name, runtime]))
            table[f"{name}/{runtime}"] = row
        ratios = {}
        for name in ("ctnet", "ctnet_shared"):
            for runtime in {r for _, r in cells}:
                for n in CANDIDATES:
                    ratios[f"{name}/base {runtime} p50 n{n}"] = round(
                        table[f"{name}/{runtime}"][f"p50_ms_n{n}"] / table[f"base/{runtime}"][f"p50_ms_n{n}"], 3)
        return {"size": size, "dataset": "synthetic_paper", "domain": DOMAIN, "candidates": list(CANDIDATES),
                "timed_calls_per_cell": len(seconds["base", "eager", CANDIDATES[0]]), "warmup_calls": WARMUP_CALLS,
                "batch_rows": BATCH_ROWS, "onnx": onnx_available(), "load_average": machine_load(), "latency": table,
                "ratios": dict(sorted(ratios.items())), "forward_mflop_per_row": mflop,
                "claim": f"CTNet with shared SIM/ETA attention answers as fast as base (p50 ratio <= {CLAIM_TOLERANCE})",
                "claim_holds": bool(median <= CLAIM_TOLERANCE)}

    return Figure(measure=measure, unit="ratio", describe=describe)


FIGURES = {"serve": serve}
