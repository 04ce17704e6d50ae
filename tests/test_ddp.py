"""DDP on CPU (gloo): two processes on half batches train and score like one process on the whole batch.

The two-process fit runs this file as a script (Lightning's DDP launcher re-executes it for rank
1); the model has no BatchNorm, whose per-rank batch statistics would legitimately differ, so
the distributed run must match the single process up to float summation order: every row
trained once per epoch, gradients averaged, metrics synced, test predictions gathered.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script by the DDP launcher

from conftest import known_noise, make_random_dataset
from ctl.data.batch import Batch
from ctl.data.datamodule import ContinualDataModule
from ctl.data.dataset import Dataset, load_dataset
from ctl.models.blocks import FeatureEmbeddings

PER_RANK_BATCH = 16
WORLD_SIZE = 2
DDP_SECONDS = 120


class LogisticCtr(nn.Module):
    """Feature embeddings -> one linear logit (no BatchNorm)."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__()
        self.embeddings = FeatureEmbeddings(dataset.schema, embed_dim=4)
        self.logit = nn.Linear(self.embeddings.out_dim, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.logit(self.embeddings(batch)).squeeze(-1)


def even_periods(dataset: Dataset) -> list[int]:
    """Periods whose domain-A training slice has an even size: two ranks then need no padding row."""
    return [p for p in range(dataset.schema.test_period) if dataset.select(["A"], [p]).size % 2 == 0][:3]


def fit(dataset_path: Path, devices: int, batch_size: int) -> dict:
    """Train LogisticCtr on domain A over ``even_periods``; rank zero returns what the run measured."""
    import pytorch_lightning as pl

    from ctl.training.task import CTRTask

    dataset = load_dataset(dataset_path)
    pl.seed_everything(0, verbose=False)
    datamodule = ContinualDataModule(dataset, ["A"], even_periods(dataset), "A", batch_size=batch_size,
                                     eval_batch_size=64, seed=3)
    task = CTRTask(LogisticCtr(dataset), functools.partial(torch.optim.Adagrad, lr=0.1),
                   datamodule.period_of_epoch, dataset.schema.test_period)
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        max_epochs=len(datamodule.periods), reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(task, datamodule=datamodule)
    trainer.test(task, datamodule=datamodule, verbose=False)
    predictions = {k: torch.cat([p[k] for p in task.test_predictions]).tolist() for k in ("row", "pred")}
    return {"world_size": trainer.world_size, "periods": task.period_results, "test": task.test_result,
            "predictions": predictions, "rank": trainer.global_rank}


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory) -> Path:
    return make_random_dataset(tmp_path_factory.mktemp("ddp"), n_rows=900, n_events=2000)


@pytest.fixture(scope="module")
def two_processes(dataset_path: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp_out") / "rank0.json"
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK")}
    subprocess.run([sys.executable, __file__, str(dataset_path), str(out)], check=True, env=env,
                   timeout=DDP_SECONDS, cwd=Path(__file__).parent)
    return json.loads(out.read_text())


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(dataset_path, two_processes) -> None:
    single = fit(dataset_path, devices=1, batch_size=WORLD_SIZE * PER_RANK_BATCH)
    assert two_processes["world_size"] == WORLD_SIZE and two_processes["rank"] == 0
    dataset = load_dataset(dataset_path)
    assert len(single["periods"]) == len(two_processes["periods"]) == len(even_periods(dataset)) >= 2
    for ours, reference in zip(two_processes["periods"], single["periods"], strict=True):
        assert ours["period"] == reference["period"]
        # every training row once over both ranks, every validation row once
        assert ours["train_rows"] == reference["train_rows"] == dataset.select(["A"], [ours["period"]]).size
        assert ours["rows"] == reference["rows"] == dataset.select(["A"], [ours["period"] + 1]).size
        for metric in ("auc", "gauc", "logloss"):
            assert ours[metric] == pytest.approx(reference[metric], abs=1e-5), (ours["period"], metric)
    for metric in ("auc", "gauc", "logloss"):
        assert two_processes["test"][metric] == pytest.approx(single["test"][metric], abs=1e-5), metric
    # the test predictions of both ranks, gathered: every test row once, in row order
    test_rows = dataset.select(["A"], [dataset.schema.test_period])
    assert two_processes["predictions"]["row"] == test_rows.tolist() == single["predictions"]["row"]
    np.testing.assert_allclose(two_processes["predictions"]["pred"], single["predictions"]["pred"], atol=1e-5)
    # and training did move the model: the logloss is not the one of the untrained logit
    assert single["test"]["logloss"] != pytest.approx(two_processes["periods"][0]["logloss"], abs=1e-6)


def test_ctl_train_with_trainer_ddp_relaunches_itself_and_writes_one_run(tmp_path: Path) -> None:
    """The console script under Lightning's DDP launcher: rank 1 re-executes `ctl <overrides>`."""
    import pyarrow.parquet as pq

    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "CTL_COMMAND")}
    run_dir = tmp_path / "run"
    ctl = Path(sys.executable).with_name("ctl")
    proc = subprocess.run([str(ctl), "train", "model=base", "data=synthetic_tiny", "trainer=ddp", "progress=false",
                           "print_table=false", f"home={tmp_path / 'home'}", f"hydra.run.dir={run_dir}"],
                          check=True, env=env, timeout=DDP_SECONDS, cwd=tmp_path, capture_output=True, text=True)
    # the relaunched rank goes through the same entry point, so Lightning's chatter stays out of its output too
    assert known_noise(proc.stdout + proc.stderr) == [], proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    dataset = load_dataset(next((tmp_path / "home" / "datasets").glob("synthetic_tiny-*")))
    for record in metrics["periods"]:  # both ranks' rows counted once
        assert record["train_rows"] == dataset.select(["B"], [record["period"]]).size
    test_rows = dataset.select(["B"], [dataset.schema.test_period])
    assert metrics["test"]["rows"] == test_rows.size
    predictions = pq.read_table(run_dir / "predictions.parquet").column("row").to_numpy()
    np.testing.assert_array_equal(predictions, test_rows)


def ctl_under_ddp(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``ctl <args> trainer=ddp`` (two gloo ranks); a run past DDP_SECONDS fails the test, and its whole
    process group (the relaunched rank too) is killed rather than left to block the suite."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "CTL_COMMAND")}
    ctl = Path(sys.executable).with_name("ctl")
    proc = subprocess.Popen([str(ctl), *args, "trainer=ddp"], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=DDP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"ctl {' '.join(args)} trainer=ddp made no end in {DDP_SECONDS} s (a rank waits on a collective)")
    assert proc.returncode == 0, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_continuation_under_ddp_equals_a_ddp_fit_over_all_periods(tmp_path: Path) -> None:
    """continue_from= under two ranks: every rank validates the last period again (no rank waits on a
    collective the others never call), then trains the new period only, and ends where a fit of
    the same two ranks over the whole grown world from the start ends (as one process does)."""
    from ctl.data.synthetic.continuation import continue_world
    from test_continuation import SMALL, assert_close, comparable, make_cfg

    def train(home: Path, n_transfer: int, run: str, *extra: str) -> dict:
        ctl_under_ddp(["train", "model=ctnet", "data=synthetic_tiny", "progress=false", "print_table=false",
                       f"home={home}", f"data.generator.n_transfer={n_transfer}", *SMALL,
                       f"hydra.run.dir={tmp_path / run}", *extra], tmp_path)
        return json.loads((tmp_path / run / "metrics.json").read_text())

    home = tmp_path / "home"
    train(home, 2, "short")
    continue_world(make_cfg(home, 2).data, home, 1, progress=False)
    continued = train(home, 3, "continued", f"continue_from={tmp_path / 'short'}")
    full = train(tmp_path / "scratch", 3, "full")
    assert [r["period"] for r in continued["periods"]] == [4, 5, 6]
    assert continued["cost"]["own"]["continued_from"]["last_period"] == 5
    assert continued["cost"]["own"]["train_rows"] == 60  # domain B's period 6, over both ranks
    assert_close(comparable(continued), comparable(full))


def test_evaluation_shards_serve_every_row_exactly_once(dataset_path: Path) -> None:
    from ctl.data.batcher import BatchAssembler, RowBatcher

    dataset = load_dataset(dataset_path)
    rows = dataset.select(["B"], [4])
    assembler = BatchAssembler.from_dataset(dataset, rows, ())
    shards = [torch.cat([b["row"] for b in RowBatcher.from_assembler(
        assembler, 8, shuffle=False, seed=0, rank=rank, world_size=3, equal_shards=False)]).numpy()
        for rank in range(3)]
    assert max(s.size for s in shards) - min(s.size for s in shards) <= 1
    served = np.concatenate(shards)
    assert served.size == rows.size and np.array_equal(np.sort(served), rows)


def test_gathered_rows_are_ordered_and_a_padding_repeat_is_kept_once() -> None:
    from ctl.training.distributed import gather_rows

    parts = [{"row": torch.tensor([7, 2]), "pred": torch.tensor([0.7, 0.2])},
             {"row": torch.tensor([5, 7]), "pred": torch.tensor([0.5, 0.7])}]
    (gathered,) = gather_rows(parts)
    assert gathered["row"].tolist() == [2, 5, 7]
    assert gathered["pred"].tolist() == pytest.approx([0.2, 0.5, 0.7])
    with pytest.raises(ValueError, match="holds no rows"):
        gather_rows([])


if __name__ == "__main__":
    result = fit(Path(sys.argv[1]), devices=WORLD_SIZE, batch_size=PER_RANK_BATCH)
    if result["rank"] == 0:
        Path(sys.argv[2]).write_text(json.dumps(result))
    from ctl.training.distributed import shutdown

    shutdown()
