"""Known third-party chatter, kept out of ``ctl``'s output one line at a time.

Each entry of :data:`NOISE` names one message (a regular expression matched from its start) and
the exact module that warns it or the exact logger that logs it; nothing else is filtered, so a
warning from anywhere else, or another message from the same module, still shows. Lightning
prints these on every ``fit`` and ``ctl`` runs one ``fit`` per track and per method, so they
would bury the progress and the tables.

:func:`install` is called by the console script (so DDP children, which re-execute it, get the
filters too) and by the Hydra task (so jobs that a launcher runs in other processes get them).
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Noise:
    """One known line: ``message`` (regex, from the message's start) from the warning module or logger ``source``."""

    kind: Literal["warning", "log"]
    source: str
    message: str


NOISE: tuple[Noise, ...] = (
    # torch deprecates LeafSpec; Lightning's own pytree helper still builds one on every fit and test
    Noise("warning", "pytorch_lightning.utilities._pytree", r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # a small period has fewer batches than the logging interval: nothing to act on, the metrics are per period
    Noise("warning", "pytorch_lightning.loops.fit_loop",
          r"The number of training batches \(\d+\) is smaller than the logging interval"),
    # CTNet's source tower (and any frozen tower) is kept in eval mode on purpose (BatchNorm statistics)
    Noise("warning", "pytorch_lightning.loops.fit_loop", r"Found \d+ module\(s\) in eval mode at the start of training"),
    # the period and stage metrics are logged after the torchmetrics states were synced across ranks
    Noise("warning", "pytorch_lightning.trainer.connectors.logger_connector.result",
          r"It is recommended to use `self\.log\('(?:(?:val|test)/\w+|period)', \.\.\., sync_dist=True\)`"),
    Noise("log", "pytorch_lightning.utilities.rank_zero", r"(?:GPU|TPU|HPU|IPU) available: "),
    Noise("log", "pytorch_lightning.utilities.rank_zero", r"💡 Tip: .*litlogger"),
    Noise("log", "pytorch_lightning.utilities.rank_zero", r"`Trainer\(\w+=[^)]*\)` was configured so "),
    Noise("log", "pytorch_lightning.utilities.rank_zero", r"`Trainer\.fit` stopped: `max_epochs=\d+` reached"),
    Noise("log", "pytorch_lightning.utilities.rank_zero", r"-+\ndistributed_backend=\w+\nAll distributed processes"),
    # a resume is announced by ctl itself ("resuming from <checkpoint>")
    Noise("log", "pytorch_lightning.utilities.rank_zero", r"Restoring states from the checkpoint path at "),
    Noise("log", "pytorch_lightning.utilities.rank_zero", r"Restored all states from the checkpoint at "),
    Noise("log", "pytorch_lightning.trainer.connectors.checkpoint_connector",
          r"`weights_only` was not set, defaulting to `False`"),
    Noise("log", "pytorch_lightning.accelerators.cuda", r"LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: "),
    Noise("log", "lightning_fabric.utilities.distributed", r"Initializing distributed: GLOBAL_RANK: "),
)


class _DropMessages(logging.Filter):
    """Drop the records of one logger whose message matches one of ``patterns`` from its start."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.match(record.getMessage()) is None


def _log_filters() -> dict[str, _DropMessages]:
    by_logger: dict[str, list[str]] = {}
    for noise in NOISE:
        if noise.kind == "log":
            by_logger.setdefault(noise.source, []).append(noise.message)
    return {name: _DropMessages(patterns) for name, patterns in by_logger.items()}


# built once, so that installing twice adds each filter once (Logger.addFilter skips a filter it holds)
_LOG_FILTERS = _log_filters()


def install() -> None:
    """Filter every entry of :data:`NOISE` in this process; safe to call again."""
    for noise in NOISE:
        if noise.kind == "warning":
            # filterwarnings drops an identical earlier filter, so a second call adds nothing
            warnings.filterwarnings("ignore", message=noise.message, module=re.escape(noise.source) + r"\Z")
    for name, log_filter in _LOG_FILTERS.items():
        logging.getLogger(name).addFilter(log_filter)
