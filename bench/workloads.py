"""What the training and data figures run on: the built-in worlds, the configured models, timed loops.

Datasets come from the registry's cache (``$CTL_HOME``, default ``~/.cache/ctl``), so a second
``make bench`` reuses them. Models are composed from the shipped configs (``model=<name>
model/size=<size>``), exactly as ``ctl train`` builds them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from ctl.data.batch import Batch
from ctl.data.batcher import RowBatcher
from ctl.data.dataset import Dataset
from ctl.data.registry import load_for
from ctl.models import build_model
from ctl.training.fitting import optimizer_from
from ctl.training.task import OptimizerFactory

BATCH_SIZE = 512
#: untimed steps before a timed loop (first-call allocations, lazy initialisation)
WARMUP_STEPS = 3
#: the square GEMM whose rate is the denominator of model FLOP utilisation
MATMUL_SIZE = 1024


def ctl_home() -> Path:
    """The cache the figures share with ``ctl`` itself."""
    return Path(os.environ.get("CTL_HOME", "~/.cache/ctl")).expanduser()


def train_config(*overrides: str) -> DictConfig:
    """``ctl train``'s composed config with ``overrides`` (e.g. ``model=base``, ``model/size=paper``)."""
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[f"home={ctl_home()}", "progress=false", *overrides])


def load_world(data: str) -> Dataset:
    """The dataset of the ``data=<data>`` preset, generated into the cache on first use."""
    cfg = train_config(f"data={data}")
    return load_for(cfg.data, cfg.home, progress=False)


def build_net(model: str, size: str, dataset: Dataset, *overrides: str, seed: int = 0) -> torch.nn.Module:
    """The ``model=<model> model/size=<size> <overrides>`` network for ``dataset``'s schema, in train mode."""
    torch.manual_seed(seed)
    cfg = train_config(f"model={model}", f"model/size={size}", *overrides)
    return build_model(cfg.model.net, dataset.schema).train()


def period_rows(dataset: Dataset, domain: str, periods: Sequence[int]) -> np.ndarray:
    """Row indices of ``domain`` in ``periods``."""
    return dataset.select([domain], list(periods))


def row_batcher(dataset: Dataset, rows: np.ndarray, batch_size: int = BATCH_SIZE) -> RowBatcher:
    """The training batcher of ``rows`` (shuffled, seed 0, epoch 0): every loop sees the same batches."""
    batcher = RowBatcher(dataset, rows, batch_size=batch_size, shuffle=True, seed=0, drop_last=True)
    batcher.set_epoch(0)
    return batcher


def first_batches(batcher: RowBatcher, n: int) -> list[Batch]:
    """The first ``n`` batches of ``batcher``, materialised (the model-only loops iterate these)."""
    if n > len(batcher):
        raise ValueError(f"need {n} batches, the batcher has {len(batcher)}")
    batches = []
    for batch in batcher:
        batches.append(batch)
        if len(batches) == n:
            return batches
    return batches


def train_optimizer() -> OptimizerFactory:
    """The optimiser ``ctl train`` uses (the default ``optim`` config), as a factory of parameter groups."""
    return optimizer_from(train_config())


def adagrad(model: torch.nn.Module) -> torch.optim.Optimizer:
    """:func:`train_optimizer` over the trainable parameters of ``model``."""
    return train_optimizer()([{"params": [p for p in model.parameters() if p.requires_grad]}])


class BareLoop:
    """The plain PyTorch training step: forward, BCE on the logits, backward, Adagrad."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.optimizer = adagrad(model)

    def step(self, batch: Batch) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(self.model(batch), batch["label"])
        loss.backward()
        self.optimizer.step()
        return loss

    def train(self, batches: Iterable[Batch]) -> int:
        """One step per batch; returns the rows trained on."""
        rows = 0
        for batch in batches:
            self.step(batch)
            rows += int(batch["label"].shape[0])
        return rows


def interleaved(work: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Units per second of each piece of ``work`` (a call returns the units it did), measured in turns.

    Every round runs each piece once, the order reversed every other round, so a change of load on
    a shared machine hits every piece alike; the rate is total units over total seconds.
    """
    seconds = dict.fromkeys(work, 0.0)
    units = dict.fromkeys(work, 0.0)
    names = list(work)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            units[name] += work[name]()
            seconds[name] += time.perf_counter() - started
    return {name: units[name] / seconds[name] for name in names}


def training_flops_per_row(model: torch.nn.Module, batch: Batch) -> float:
    """FLOPs of one training step (forward and backward matmuls, as executed) per row of ``batch``.

    Counted by ``torch.utils.flop_counter`` from the shapes of every matmul-like op the step runs
    (mm, addmm, bmm, baddbmm, attention kernels); elementwise work, lookups and the optimiser count
    zero, as usual for model FLOP utilisation.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        F.binary_cross_entropy_with_logits(model(batch), batch["label"]).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / int(batch["label"].shape[0])


def matmul_work(calls: int = 10) -> Callable[[], float]:
    """``calls`` fp32 GEMMs of ``MATMUL_SIZE`` squared (the process's threads); the work returns its FLOPs.

    Its rate is the denominator of model FLOP utilisation, measured in turns with the model.
    """
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    out = torch.empty(MATMUL_SIZE, MATMUL_SIZE)
    torch.mm(a, b, out=out)

    def work() -> float:
        for _ in range(calls):
            torch.mm(a, b, out=out)
        return 2.0 * MATMUL_SIZE**3 * calls

    return work


def machine_load() -> list[float]:
    """1, 5 and 15 minute load averages (the figures are only comparable on a quiet machine)."""
    return [round(x, 2) for x in os.getloadavg()]
