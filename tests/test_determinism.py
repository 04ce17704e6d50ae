"""Same config and seed => the same dataset bytes, checkpoint tensors and metrics on CPU; another seed differs.

Everything runs with one torch thread: CPU results depend on the intra-op thread count in their
last digits (a resumed fit warns when that count changed), so bitwise equality is a promise for
a fixed count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from ctl.training.protocol import run_train

DATASET_FILES = ("meta.yaml", "rows.parquet", "history.parquet")
TIMINGS = {"wall_s", "cpu_s", "peak_rss_mb"}


def make_cfg(home: Path, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[
            "data=synthetic_tiny", f"home={home}", "progress=false", "print_table=false", "model=base",
            "data.domain=C", "data.batch_size=16", *overrides])


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_synthetic_world_is_the_same_bytes_for_a_seed(tmp_path) -> None:
    def generate(name: str, *overrides: str) -> Path:
        cfg = make_cfg(tmp_path, *overrides)
        return instantiate(cfg.data.generator).generate(tmp_path / name, progress=False)

    first, second, other = generate("first"), generate("second"), generate("other", "data.generator.seed=1")
    for name in DATASET_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs for the same seed"
    assert (first / "rows.parquet").read_bytes() != (other / "rows.parquet").read_bytes()
    assert (first / "history.parquet").read_bytes() != (other / "history.parquet").read_bytes()


def checkpoint_tensors(run: dict) -> dict[str, torch.Tensor]:
    """Every tensor of every period checkpoint of a run: weights, buffers and Adagrad state."""
    tensors = {}
    folder = Path(run["tracks"]["own"]) / "checkpoints"
    for path in sorted(folder.glob("period_*.ckpt")):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        tensors.update({f"{path.name}/{k}": v for k, v in checkpoint["state_dict"].items()})
        for index, state in checkpoint["optimizer_states"][0]["state"].items():
            tensors.update({f"{path.name}/optimizer/{index}/{k}": v for k, v in state.items()})
    return tensors


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The same config twice (separate caches, so each builds its own track) and once with seed 1."""
    out = {}
    for name, overrides in (("first", ()), ("second", ()), ("seed1", ("seed=1",))):
        home = tmp_path_factory.mktemp(f"home_{name}")
        run_dir = tmp_path_factory.mktemp(f"run_{name}")
        out[name] = run_dir, run_train(make_cfg(home, *overrides), run_dir)
    return out


def test_the_same_seed_gives_the_same_checkpoint_tensors_and_metrics(runs) -> None:
    (first_dir, first), (second_dir, second) = runs["first"], runs["second"]
    assert first["tracks"]["own"] != second["tracks"]["own"]  # two separate builds
    a, b = checkpoint_tensors(first), checkpoint_tensors(second)
    assert a.keys() == b.keys() and len(a) > 20
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), f"{name} differs between two runs of the same seed"
    same_paths = {"tracks", "dataset_path"}
    assert {k: v for k, v in without_timings(first).items() if k not in same_paths} == \
           {k: v for k, v in without_timings(second).items() if k not in same_paths}
    predictions = [pq.read_table(d / "predictions.parquet").to_pydict() for d in (first_dir, second_dir)]
    assert predictions[0] == predictions[1]
    assert json.loads((first_dir / "metrics.json").read_text()) == first


def test_another_seed_gives_other_weights_and_metrics(runs) -> None:
    first, other = runs["first"][1], runs["seed1"][1]
    a, b = checkpoint_tensors(first), checkpoint_tensors(other)
    final_weights = [name for name in a if name.startswith("period_5.ckpt/model.") and name.endswith(".weight")]
    assert len(final_weights) > 10
    assert [name for name in final_weights if torch.equal(a[name], b[name])] == []
    assert first["test"]["auc"] != other["test"]["auc"]
    assert [r["logloss"] for r in first["periods"]] != [r["logloss"] for r in other["periods"]]
