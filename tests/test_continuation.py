"""Continual operation: a world continued by a period, tracks and runs continued on it, equal to
training on the whole world from the start (metrics and checkpoints), at the cost of the new rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from hydra import compose, initialize_config_module

from ctl.data.lineage import read_lineage
from ctl.data.registry import ensure_dataset
from ctl.data.synthetic.continuation import continue_world
from ctl.errors import CtlError
from ctl.models.base import BaseModel
from ctl.models.blocks.embeddings import GrowingEmbedding, grow_table
from ctl.training.checkpoints import load_checkpoint, load_model_state
from ctl.training.protocol import run_train

SMALL = ("data.batch_size=16", "data.generator.domains.A.rows_per_period=150",
         "data.generator.domains.A.test_rows=150")
TIMINGS = {"wall_s", "cpu_s", "peak_rss_mb"}


def make_cfg(home: Path, n_transfer: int, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[
            "data=synthetic_tiny", f"home={home}", "progress=false", "print_table=false",
            f"data.generator.n_transfer={n_transfer}", *SMALL, *overrides])


def comparable(metrics: dict) -> dict:
    """A run's metrics without timings, costs and paths (they differ between two homes)."""
    drop = TIMINGS | {"cost", "tracks", "dataset_path", "inherited"}
    if isinstance(metrics, dict):
        return {k: comparable(v) for k, v in metrics.items() if k not in drop}
    if isinstance(metrics, list):
        return [comparable(v) for v in metrics]
    return metrics


def assert_close(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-6), where
    else:
        assert a == b, where


def assert_same_checkpoint(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert set(ca["state_dict"]) == set(cb["state_dict"])
    for key, tensor in ca["state_dict"].items():
        assert torch.equal(tensor, cb["state_dict"][key]), f"{a.name}: {key}"
    sa, sb = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
    assert set(sa) == set(sb)
    for index, state in sa.items():
        for key, value in state.items():
            assert torch.equal(value, sb[index][key]), f"{a.name}: optimiser state {index}.{key}"


# --- the world and the tables ---------------------------------------------------------------------


AGEING = ("+data.generator.domains.B.offset_persistence=0.9", "+data.generator.domains.C.offset_persistence=0.8")


@pytest.mark.parametrize("world", [(), AGEING], ids=["still targets", "ageing targets"])
def test_continuing_a_world_equals_generating_it_at_once(tmp_path, world) -> None:
    short = make_cfg(tmp_path / "home", 2, *world)
    continued = continue_world(short.data, short.home, 1, progress=False)
    at_once = ensure_dataset(make_cfg(tmp_path / "other", 3, *world).data, tmp_path / "other", progress=False)
    for name in ("meta.yaml", "rows.parquet", "history.parquet", "oracle.parquet"):
        assert (continued / name).read_bytes() == (at_once / name).read_bytes(), name
    parent = ensure_dataset(short.data, short.home, progress=False)
    (ancestor,) = read_lineage(continued)
    assert ancestor.test_period == 6 and pq.read_metadata(parent / "rows.parquet").num_rows > 0
    # the shorter world's test slice became a training period of the longer world
    periods = pq.read_table(continued / "rows.parquet", columns=["period"]).column("period").to_numpy()
    assert periods.max() == 7


def test_a_grown_table_has_the_rows_a_larger_table_starts_with() -> None:
    torch.manual_seed(3)
    small = GrowingEmbedding(10, 4)
    torch.manual_seed(3)
    large = GrowingEmbedding(5000, 4)
    assert int(small.init_seed) == int(large.init_seed)
    assert torch.equal(grow_table(small.weight.detach(), int(small.init_seed), 5000), large.weight.detach())
    assert torch.equal(large.weight[0], torch.zeros(4))
    assert float(large.weight.detach()[1:].std()) == pytest.approx(0.01, rel=0.05)
    with pytest.raises(ValueError, match="cannot shrink"):
        grow_table(large.weight.detach(), 0, 10)


def test_a_smaller_vocabulary_checkpoint_loads_into_the_larger_model(tmp_path) -> None:
    from ctl.data.synthetic import SyntheticWorld
    from hand_made import small_backbone

    def model(n_transfer: int) -> BaseModel:
        torch.manual_seed(0)
        return BaseModel(SyntheticWorld(seed=0, n_history=4, n_transfer=n_transfer, n_users=30, n_items=40,
                                        n_categories=5, n_sellers=6).schema(), small_backbone())

    small, large, fresh = model(2), model(3), model(3)
    # every parameter but the tables is initialised alike, whatever the vocabulary
    for name, tensor in large.state_dict().items():
        if "embeddings.tables" not in name:
            assert torch.equal(tensor, small.state_dict()[name]), name
    torch.save({"state_dict": {f"model.{k}": v for k, v in small.state_dict().items()}}, tmp_path / "small.ckpt")
    load_model_state(large, tmp_path / "small.ckpt", what="the small model")
    for name, tensor in large.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name


# --- tracks and runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run of this module on one thread, as the killed-and-resumed run must fork with: runs are
    compared to 1e-6, and on the lifelong worlds a run on 2 threads ends ~4e-4 AUC from the same
    run on 1 (floating-point sums whose order follows the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def continued(tmp_path_factory):
    """CTNet and base trained on the world with one transfer period fewer, then continued on the
    world continued by one period; and both trained on the longer world from the start elsewhere."""
    root = tmp_path_factory.mktemp("continual")
    home, scratch = root / "home", root / "scratch"
    short = {m: run_train(make_cfg(home, 2, f"model={m}"), root / f"short-{m}") for m in ("ctnet", "base")}
    continue_world(make_cfg(home, 2).data, home, 1, progress=False)
    runs = {}
    for model in ("ctnet", "base"):
        cont = run_train(make_cfg(home, 3, f"model={model}", f"continue_from={root / f'short-{model}'}"),
                         root / f"cont-{model}")
        full = run_train(make_cfg(scratch, 3, f"model={model}"), root / f"full-{model}")
        runs[model] = (cont, full)
    return root, short, runs


@pytest.mark.parametrize("model", ["ctnet", "base"])
def test_a_continued_run_equals_a_run_on_the_whole_data(continued, model) -> None:
    root, _short, runs = continued
    cont, full = runs[model]
    assert [r["period"] for r in cont["periods"]] == [r["period"] for r in full["periods"]]
    assert_close(comparable(cont), comparable(full))
    final = "period_6.ckpt"
    assert_same_checkpoint(root / f"cont-{model}" / "checkpoints" / final, root / f"full-{model}" / "checkpoints" / final)


def test_continued_tracks_equal_tracks_trained_from_the_start(continued) -> None:
    _root, _, runs = continued
    cont, full = runs["ctnet"]
    for role in ("source", "target"):
        for period in (4, 5, 6):  # the copied (grown) earlier periods and the new one
            name = f"period_{period}.ckpt"
            assert_same_checkpoint(Path(cont["tracks"][role]) / "checkpoints" / name,
                                   Path(full["tracks"][role]) / "checkpoints" / name)


def test_the_continued_step_trains_only_the_new_periods_rows(continued) -> None:
    _root, _short, runs = continued
    cont, full = runs["ctnet"]
    new_rows = next(r["train_rows"] for r in full["periods"] if r["period"] == 6)
    assert cont["cost"]["own"]["train_rows"] == new_rows == 60
    assert cont["cost"]["own"]["continued_from"]["last_period"] == 5
    # the source track continued on A's new period only, the target track on B's
    tracks = cont["cost"]["tracks"]
    assert tracks["base-A"]["train_rows"] == 150 and tracks["base-B"]["train_rows"] == 60
    assert full["cost"]["train_rows"] == 1650 and cont["cost"]["train_rows"] == 270


def test_continuing_is_refused_with_another_config_or_an_unrelated_dataset(continued, tmp_path) -> None:
    root, _, _ = continued
    with pytest.raises(CtlError, match=r"another configuration \(optim.lr"):
        run_train(make_cfg(root / "home", 3, "model=ctnet", "optim.lr=0.5",
                           f"continue_from={root / 'short-ctnet'}"), tmp_path / "a")
    with pytest.raises(CtlError, match="not an earlier version"):
        run_train(make_cfg(root / "home", 3, "model=ctnet", "data.generator.seed=1",
                           f"continue_from={root / 'short-ctnet'}"), tmp_path / "b")
    with pytest.raises(CtlError, match="no metrics.json there"):
        run_train(make_cfg(root / "home", 3, "model=ctnet", f"continue_from={tmp_path}"), tmp_path / "c")
    metrics = json.loads((root / "cont-ctnet" / "metrics.json").read_text())
    assert metrics["periods"][-1]["period"] == 6


def test_a_run_grows_in_its_own_folder_and_ctl_eval_shows_every_period(continued, capsys) -> None:
    import shutil

    from ctl.cli import main as ctl_main

    root, _, runs = continued
    folder = root / "growing"
    shutil.copytree(root / "short-ctnet", folder)
    first_logs = (folder / "logs" / "metrics.csv").read_text()
    grown = run_train(make_cfg(root / "home", 3, "model=ctnet", f"continue_from={folder}"), folder)
    assert_close(comparable(grown), comparable(runs["ctnet"][1]))
    # the first fit's step logs survive; the continued fit logs beside them
    assert (folder / "logs" / "metrics.csv").read_text() == first_logs
    second = (folder / "logs" / "fit-2" / "metrics.csv").read_text().splitlines()
    assert second[0] == first_logs.splitlines()[0] and len(second) > 1
    capsys.readouterr()
    ctl_main(["eval", str(folder), "--table", "periods", "--format", "json", "--bootstrap", "0"])
    records = json.loads(capsys.readouterr().out)
    slices = {(r["slice"], r["metric"]): r["mean"] for r in records if r["method"] == "ctnet"}
    assert {s for s, _ in slices} >= {"period 4", "period 5", "period 6"}
    assert slices[("period 6", "auc")] == pytest.approx(next(r for r in grown["periods"] if r["period"] == 6)["auc"])


def test_a_continuation_killed_midway_resumes_to_the_same_end(continued, tmp_path) -> None:
    from test_resume import killed_run

    root, _, runs = continued
    cfg = make_cfg(root / "home", 3, "model=ctnet", f"continue_from={root / 'short-ctnet'}",
                   "checkpoint_every_n_steps=2")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a forked child must not inherit a started OpenMP pool
    try:
        assert killed_run(cfg, tmp_path / "run", "train-batch#3") == -9
        resumed = run_train(cfg, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    assert_close(comparable(resumed), comparable(runs["ctnet"][1]))
    assert resumed["cost"]["own"]["train_rows"] == 60


def test_a_base_run_refuses_to_continue_a_run_of_an_unrelated_dataset(continued, tmp_path) -> None:
    root, _, _ = continued
    with pytest.raises(CtlError, match="not an earlier version"):
        run_train(make_cfg(root / "home", 3, "model=base", "data.generator.seed=1",
                           f"continue_from={root / 'short-base'}"), tmp_path / "a")


def test_a_run_that_skipped_a_period_continues_over_both_new_ones(continued, tmp_path) -> None:
    root, _, _ = continued
    home = root / "home"
    longer = continue_world(make_cfg(home, 3).data, home, 1, progress=False)  # periods 0..8, test 8
    assert [a.test_period for a in read_lineage(longer)] == [7, 6]
    cont = run_train(make_cfg(home, 4, "model=ctnet", f"continue_from={root / 'short-ctnet'}"), tmp_path / "cont")
    full = run_train(make_cfg(tmp_path / "scratch", 4, "model=ctnet"), tmp_path / "full")
    assert_close(comparable(cont), comparable(full))
    assert_same_checkpoint(tmp_path / "cont" / "checkpoints" / "period_7.ckpt",
                           tmp_path / "full" / "checkpoints" / "period_7.ckpt")
    assert cont["cost"]["own"]["train_rows"] == 2 * 60  # periods 6 and 7 of B
    # the tracks extended from the nearest earlier version's (periods 0..6), one new period each
    assert cont["cost"]["tracks"]["base-A"]["train_rows"] == 150


@pytest.mark.parametrize("foreign", ["another fit", "unreadable"])
def test_a_foreign_last_checkpoint_is_refused_and_kept(continued, tmp_path, foreign) -> None:
    """A folder holding the unfinished fit of another configuration (or a file no one can read): the
    continuation names it and leaves it as it was instead of writing its own last.ckpt there."""
    import shutil

    root, _, _ = continued
    folder = tmp_path / "run"
    shutil.copytree(root / "short-ctnet", folder)
    last = folder / "checkpoints" / "last.ckpt"
    if foreign == "another fit":
        shutil.copyfile(root / "cont-base" / "checkpoints" / "period_6.ckpt", last)
    else:
        last.write_bytes((root / "cont-base" / "checkpoints" / "period_6.ckpt").read_bytes()[:100])  # cut short
    before = last.read_bytes()
    pattern = (r"last\.ckpt holds the unfinished fit of another configuration" if foreign == "another fit"
               else r"^checkpoint .*last\.ckpt cannot be read")
    with pytest.raises(CtlError, match=pattern) as refused:
        run_train(make_cfg(root / "home", 3, "model=ctnet", f"continue_from={folder}"), folder)
    assert str(last) in str(refused.value) and "\n" not in str(refused.value)
    assert last.read_bytes() == before


def test_a_checkpoint_of_another_model_is_refused_naming_it(continued, tmp_path) -> None:
    import shutil

    root, _, _ = continued
    earlier = tmp_path / "earlier"
    shutil.copytree(root / "short-ctnet", earlier)
    checkpoint_path = earlier / "checkpoints" / "period_5.ckpt"
    checkpoint = load_checkpoint(checkpoint_path)
    checkpoint["optimizer_states"][0]["param_groups"][0]["params"].pop()  # one parameter fewer than CTNet has
    torch.save(checkpoint, checkpoint_path)
    with pytest.raises(CtlError, match=r"period_5\.ckpt: its optimiser state holds \d+ parameters but this model") \
            as refused:
        run_train(make_cfg(root / "home", 3, "model=ctnet", f"continue_from={earlier}"), tmp_path / "run")
    assert str(checkpoint_path) in str(refused.value)
