"""Serving figure: latency of one user x N candidates and batch throughput, base vs CTNet, eager vs exported.

``serve`` scores requests with three models at the paper's sizes (``--quick``: the small sizes):
``base``, ``ctnet`` and ``ctnet_shared`` (the towers share the SIM/ETA attention, the paper's
section 4.7), each run three ways: ``eager`` (the nn.Module under ``torch.inference_mode``),
``torch_export`` (the saved ExportedProgram, as ``ctl score`` runs it) and ``onnx`` (ONNX Runtime,
CPU provider; left out when ``ctl[serve]`` is not installed). The methods since the paper
(:data:`ADDED`: STAR, PEPNet, low-rank transfer, knowledge plug-in, source distillation) run as
``torch_export`` only, beside base, for their serving cost. Weights are untrained: latency does not
depend on them.

A request is one user with a lifelong history of L events (L = 1,000 and 10,000: ETA scans all of
them, SIM searches them through the per-category index) and N candidate items (N = 100, 500), on
the features and vocabularies of :mod:`bench.figures_lifelong`. Timed: the graph call on encoded
tensors (the batch is assembled once, as a server's request parsing would be), after
:data:`WARMUP_CALLS` untimed calls; every round times each (model, runtime, L, N) once, in turns,
so a change of load hits all alike. p50/p99 pool every round of every repeat. Throughput: rows/s
of one call on :data:`BATCH_ROWS` rows of many users at each L.

The figure's value is CTNet-with-shared-attention's p50 over base's at L = 10,000, N = 500 on the
exported graph: the paper says online response time is the same (ratio 1).
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
from bench.figures_lifelong import lifelong_schema, rows_of, synthetic_history
from bench.workloads import machine_load, train_config
from ctl.data.batch import Batch
from ctl.data.batcher import BatchAssembler
from ctl.models import build_model
from ctl.serve.artifact import OnnxRunner, TorchRunner
from ctl.serve.export import Probabilities, export_graph, graph_inputs
from ctl.training.protocols.common import build_transfer_model

MODELS: dict[str, tuple[str, ...]] = {
    "base": ("base",),
    "ctnet": ("ctnet",),
    "ctnet_shared": ("ctnet", "model.net.share_attention=true"),
}
#: the methods since the paper: exported graph only (the runtime ``ctl score`` and ``ctl serve`` use)
ADDED: dict[str, tuple[str, ...]] = {name: (name,) for name in ("star", "pepnet", "lowrank", "plugin", "distill")}
#: joint models: built for a (source, target) pair, each row scored by its domain's head
JOINT = ("star", "pepnet")
CANDIDATES = (100, 500)
HISTORY_LENGTHS = (1000, 10000)
BATCH_ROWS = 1024
WARMUP_CALLS = 5
#: the target domain the cross-domain models are built for (the lifelong schema's first non-source domain)
TARGET = "B"
#: "the same response time" read as: CTNet-shared's p50 at most this multiple of base's
CLAIM_TOLERANCE = 1.25


@functools.lru_cache(maxsize=2)
def lifelong_rows(length: int) -> BatchAssembler:
    """Rows of users with ``length`` events each (:mod:`bench.figures_lifelong`)."""
    rng = np.random.default_rng(length)
    history, users = synthetic_history(length, rng)
    return rows_of(lifelong_schema(length), history, users, rng)


def one_user_request(assembler: BatchAssembler, n: int) -> Batch:
    """One user (the first row's, seeing its whole history) and the candidates of the first ``n`` rows."""
    columns = {name: column[:n].numpy().copy() for name, column in assembler.columns.items() if name != "row"}
    columns["user_id"][:] = columns["user_id"][0]
    columns["hist_end"] = np.full(n, int(assembler.hist_end[0]))
    return BatchAssembler(assembler.schema, assembler.history, columns, np.arange(n), ()).batch(torch.arange(n))


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


def runners(wrapped: Probabilities, batch: Batch, folder: Path, name: str, exported_only: bool = False
            ) -> dict[str, Callable]:
    """The model's three ways to score a list of input tensors (the exported graph only if ``exported_only``)."""

    def eager(inputs: list[torch.Tensor]) -> np.ndarray:
        with torch.inference_mode():
            return wrapped(*inputs).numpy()

    found: dict[str, Callable] = {} if exported_only else {"eager": eager}
    export_graph(wrapped, batch, "torch_export", folder / f"{name}.pt2")
    found["torch_export"] = TorchRunner(folder / f"{name}.pt2")
    if onnx_available() and not exported_only:
        export_graph(wrapped, batch, "onnx", folder / f"{name}.onnx")
        found["onnx"] = OnnxRunner(folder / f"{name}.onnx", list(wrapped.keys))
    return found


def serve(quick: bool) -> Figure:
    size = "small" if quick else "paper"
    calls = 10 if quick else 30
    lengths = HISTORY_LENGTHS[:1] if quick else HISTORY_LENGTHS
    folder = Path(tempfile.mkdtemp(prefix="ctl-serve-bench-"))
    # a cell is (model, runtime, L); its inputs are keyed (model, L, N) with N = BATCH_ROWS for throughput
    cells: dict[tuple[str, str, int], Callable] = {}
    inputs: dict[tuple[str, int, int], list[torch.Tensor]] = {}
    mflop: dict[str, float] = {}
    for length in lengths:
        assembler = lifelong_rows(length)
        requests = {n: one_user_request(assembler, n) for n in CANDIDATES}
        many = assembler.batch(torch.arange(BATCH_ROWS))
        for name, (model, *overrides) in {**MODELS, **ADDED}.items():
            torch.manual_seed(0)
            cfg = train_config(f"model={model}", f"model/size={size}", *overrides)
            net = (build_transfer_model(cfg.model.net, assembler.schema, assembler.schema.source, TARGET)
                   if name in JOINT else build_model(cfg.model.net, assembler.schema)).eval()
            wrapped = graph_inputs(net, requests[CANDIDATES[0]])
            for runtime, run in runners(wrapped, requests[CANDIDATES[0]], folder, f"{name}-{length}",
                                        exported_only=name in ADDED).items():
                cells[name, runtime, length] = run
            for n, batch in [*requests.items(), (BATCH_ROWS, many)]:
                inputs[name, length, n] = [batch[k] for k in wrapped.keys]
            mflop[f"{name} L={length}"] = round(forward_mflop_per_row(wrapped, inputs[name, length, CANDIDATES[-1]]), 3)
    for (name, _, length), run in cells.items():  # warm-up: first-call allocations, lazy initialisation
        for n in CANDIDATES:
            for _ in range(WARMUP_CALLS):
                run(inputs[name, length, n])
        run(inputs[name, length, BATCH_ROWS])
    seconds: dict[tuple[str, str, int, int], list[float]] = {(*cell, n): [] for cell in cells for n in CANDIDATES}
    batch_seconds: dict[tuple[str, str, int], list[float]] = {cell: [] for cell in cells}
    order = list(cells)
    longest = lengths[-1]

    def timed(run: Callable, tensors: list[torch.Tensor]) -> float:
        started = time.perf_counter()
        run(tensors)
        return time.perf_counter() - started

    def measure() -> float:
        for round_index in range(calls):
            for cell in order if round_index % 2 == 0 else order[::-1]:
                name, _, length = cell
                for n in CANDIDATES:
                    seconds[(*cell, n)].append(timed(cells[cell], inputs[name, length, n]))
        for cell in order:
            name, _, length = cell
            batch_seconds[cell].append(timed(cells[cell], inputs[name, length, BATCH_ROWS]))
        return float(np.median(seconds["ctnet_shared", "torch_export", longest, 500])
                     / np.median(seconds["base", "torch_export", longest, 500]))

    def describe(median: float) -> dict[str, object]:
        table = {}
        for cell in cells:
            name, runtime, length = cell
            row = {}
            for n in CANDIDATES:
                values = np.asarray(seconds[(*cell, n)]) * 1e3
                row[f"p50_ms_n{n}"] = round(float(np.percentile(values, 50)), 3)
                row[f"p99_ms_n{n}"] = round(float(np.percentile(values, 99)), 3)
            row["batch_rows_per_s"] = round(BATCH_ROWS * len(batch_seconds[cell]) / sum(batch_seconds[cell]))
            table[f"{name}/{runtime}/L{length}"] = row
        ratios = {}
        for name, runtime, length in cells:
            if name == "base":
                continue
            for n in CANDIDATES:
                for stat in ("p50", "p99"):
                    ratios[f"{name}/base {runtime} L{length} {stat} n{n}"] = round(
                        table[f"{name}/{runtime}/L{length}"][f"{stat}_ms_n{n}"]
                        / table[f"base/{runtime}/L{length}"][f"{stat}_ms_n{n}"], 3)
        return {"size": size, "history_lengths": list(lengths), "candidates": list(CANDIDATES),
                "timed_calls_per_cell": len(seconds[(*order[0], CANDIDATES[0])]), "warmup_calls": WARMUP_CALLS,
                "batch_rows": BATCH_ROWS, "onnx": onnx_available(), "load_average": machine_load(), "latency": table,
                "ratios": dict(sorted(ratios.items())), "forward_mflop_per_row": mflop,
                "claim": f"CTNet with shared SIM/ETA attention answers as fast as base at L={longest}, N=500 "
                         f"(p50 ratio <= {CLAIM_TOLERANCE})",
                "claim_holds": bool(median <= CLAIM_TOLERANCE)}

    return Figure(measure=measure, unit="ratio", describe=describe)


FIGURES = {"serve": serve}
