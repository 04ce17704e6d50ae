"""Serving cost of a run's model: the FLOPs per scored row of its exported graph.

The graph is the one ``ctl export`` writes (:mod:`ctl.serve.export`), traced on the run's first
test rows and run once under ``torch.utils.flop_counter``, which counts every matrix product the
graph executes (2 FLOPs a multiply-add; lookups, top-k and elementwise work are not counted). A
joint model's graph runs both domains' heads on every row (it cannot branch on data), so its
count is what serving it costs, not what its evaluation ran.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ctl.serve.export import graph_inputs, load_run_model, trace_batch


def serving_mflop_per_row(run_dir: Path) -> float:
    """Millions of FLOPs per row of one scoring call of the run's exported graph."""
    run = load_run_model(Path(run_dir))
    batch = trace_batch(run)
    wrapped = graph_inputs(run.net, batch, run.view)
    args = tuple(batch[k] for k in wrapped.keys)
    program = torch.export.export(wrapped, args)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        program.module()(*args)
    return counter.get_total_flops() / int(args[0].shape[0]) / 1e6
