"""Continue a synthetic world by k periods: ``ctl data generate data=... extend=k``.

Every part of the world draws from a stream keyed by (seed, part, period or cohort)
(:mod:`ctl.data.synthetic.streams`), so the world with ``n_transfer + k`` transfer periods is
the same world over the shorter one's periods, with k more after them: continuing a world *is*
generating the longer one (a full re-simulation takes seconds). What makes it a continuation is
the check that the two agree on every period the shorter one trained on, and the lineage the
longer one keeps (:mod:`ctl.data.lineage`), so tracks and runs of the shorter world extend
instead of retraining. The shorter world's test slice (its ``test_rows``) becomes a training
period of ``rows_per_period`` rows, drawn as a world generated at once draws it.
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ctl.data.dataset import read_meta
from ctl.data.lineage import check_prefix, lineage_after, read_lineage, write_lineage
from ctl.data.registry import ensure_dataset
from ctl.errors import CtlError


def extended_config(data_cfg: DictConfig, periods: int) -> DictConfig:
    """``data_cfg`` of the same world with ``periods`` more transfer periods."""
    if data_cfg.get("generator") is None:
        raise CtlError(f"extend={periods} continues a synthetic world, but data={data_cfg.name} has no generator; "
                       "append new logs to an imported dataset with `ctl data append DATASET ...`")
    if periods < 1:
        raise CtlError(f"extend={periods} must be >= 1 (the periods to add)")
    longer = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    assert isinstance(longer, DictConfig)  # a DictConfig's container is a dict
    longer.generator.n_transfer = int(longer.generator.n_transfer) + periods
    return longer


def continue_world(data_cfg: DictConfig, home: str | Path, periods: int, out: Path | None = None,
                   progress: bool = True) -> Path:
    """The world of ``data_cfg`` continued by ``periods`` periods, written to ``out`` (or the cache).

    The shorter world is found (or made) in the cache first; the longer one is checked to agree
    with it on every period before the shorter one's test slice and gets a ``lineage.json`` that
    names it. Returns the longer world's folder.
    """
    longer = extended_config(data_cfg, periods)
    parent = ensure_dataset(data_cfg, home, progress=progress)
    if out is None:
        child = ensure_dataset(longer, home, progress=progress)
    else:
        if out.exists():
            raise CtlError(f"out={out} already exists; choose a new folder")
        child = instantiate(longer.generator).generate(out, progress=progress)
    test_period = read_meta(parent)[1].test_period
    check_prefix(parent, child, test_period)
    write_lineage(child, lineage_after(parent, test_period) + read_lineage(child))
    return child
