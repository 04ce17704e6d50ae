"""Which process of a distributed (DDP) run this is, and the few collectives the protocol needs.

Under ``trainer=ddp`` every rank runs the whole protocol (every track, every fit) in lockstep;
only rank zero writes artifacts (tracks, run folders), the others compute. A rank is known
before Lightning's first ``fit`` from the launcher's environment (``RANK`` from torchrun,
``SLURM_PROCID``, or Lightning's own ``NODE_RANK``/``LOCAL_RANK``), afterwards from the process
group.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torchmetrics.utilities.distributed import gather_all_tensors

#: environment variables that launchers set to a process's rank (global or per node)
RANK_VARIABLES: tuple[str, ...] = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_rank_zero() -> bool:
    """True in the process that writes artifacts (the only process of a plain run)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return all(int(os.environ.get(name, "0")) == 0 for name in RANK_VARIABLES)


def shutdown() -> None:
    """Close the process group, if any, before the interpreter exits: left to the exit's destructors,
    gloo's threads can abort the process (``terminate called without an active exception``) after a
    run that succeeded."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing to wait for outside a distributed run)."""
    if is_distributed():
        dist.barrier()


def scratch_run_dir(run_dir: Path) -> Path:
    """A private folder for a rank other than zero to write its copy of a run into.

    It reads the run's checkpoints through a link (so every rank resumes from the same one) while
    rank zero alone writes the real run folder.
    """
    scratch = Path(tempfile.mkdtemp(prefix=f"ctl-rank{os.environ.get('LOCAL_RANK', 'x')}-"))
    (scratch / "checkpoints").symlink_to(Path(run_dir).resolve() / "checkpoints", target_is_directory=True)
    return scratch


def gather_rows(parts: list[dict[str, torch.Tensor]], across_ranks: bool = True) -> list[dict[str, torch.Tensor]]:
    """Every rank's per-row tensors (e.g. test predictions), on CPU, ordered by their ``row`` key.

    Each rank passes its list of batch dicts (same keys, 1-d tensors); ranks may hold different
    numbers of rows, and a row served twice (padding) is kept once. Outside a distributed run, or
    with ``across_ranks=False`` (a rank that holds every row), the parts are only concatenated and
    ordered.
    """
    if not parts:
        raise ValueError("gather_rows: this rank holds no rows")
    local = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    if across_ranks and is_distributed():
        local = {key: torch.cat(gather_all_tensors(value)) for key, value in local.items()}
    local = {key: value.cpu() for key, value in local.items()}
    order = torch.argsort(local["row"], stable=True)
    rows = local["row"][order]
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    keep = order[first]
    return [{key: value[keep] for key, value in local.items()}]
