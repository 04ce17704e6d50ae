"""Bad inputs are refused in one line that says what, where and how to fix it; nothing trains on them.

Datasets are corrupted copies of a valid random dataset (loaded with ``load_dataset``); configs
run through ``run_train`` or the ``ctl`` entry point in this process; checkpoints are written by
hand. Every case asserts its message.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pytorch_lightning as pl
import torch
import yaml
from hydra import compose, initialize_config_module

import ctl.conf
from conftest import make_random_dataset, random_columns
from ctl import cli
from ctl.data.dataset import DatasetError, load_dataset, write_dataset
from ctl.errors import CtlError
from ctl.io import atomic_write_json, check_writable, write_manifest
from ctl.methods import method_label
from ctl.models.backbone import BackboneConfig
from ctl.models.base import BaseModel
from ctl.training.callbacks import FIT_KEY
from ctl.training.checkpoints import (
    AtomicCheckpointIO,
    load_model_state,
    optimizer_state_by_name,
    read_checkpoint,
    resume_point,
)
from ctl.training.fitting import make_datamodule
from ctl.training.protocol import run_train
from ctl.training.task import CTRTask
from ctl.training.tracks import Track

ROW = 7  # the row each value corruption touches


def make_cfg(home: Path, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[
            "data=synthetic_tiny", f"home={home}", "progress=false", "print_table=false", *overrides])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- malformed datasets -------------------------------------------------------------------------


def edit_table(file: str, change: Callable[[pa.Table], pa.Table]) -> Callable[[Path], None]:
    def corrupt(folder: Path) -> None:
        pq.write_table(change(pq.read_table(folder / file)), folder / file)

    return corrupt


def replace_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, pa.array(values))


def set_value(file: str, column: str, value, row: int = ROW) -> Callable[[Path], None]:
    def change(table: pa.Table) -> pa.Table:
        values = table.column(column).to_numpy().astype(np.int64)
        values[row] = value
        return replace_column(table, column, values)

    return edit_table(file, change)


def as_type(file: str, column: str, convert: Callable[[np.ndarray], object]) -> Callable[[Path], None]:
    return edit_table(file, lambda t: replace_column(t, column, convert(t.column(column).to_numpy().copy())))


def with_float(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def convert(values: np.ndarray) -> np.ndarray:
        values = values.astype(np.float64)
        values[ROW] = value
        return values

    return convert


def with_uint64_max(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.uint64)
    values[ROW] = np.iinfo(np.uint64).max
    return values


def edit_meta(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Apply ``change`` to the parsed meta.yaml in place (its return value is ignored) and write it back."""

    def corrupt(folder: Path) -> None:
        meta = yaml.safe_load((folder / "meta.yaml").read_text())
        change(meta)
        (folder / "meta.yaml").write_text(yaml.safe_dump(meta))

    return corrupt


def write_text(file: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / file).write_text(text)


def truncate(file: str) -> Callable[[Path], None]:
    def corrupt(folder: Path) -> None:
        data = (folder / file).read_bytes()
        (folder / file).write_bytes(data[: len(data) // 2])

    return corrupt


def remove(file: str) -> Callable[[Path], None]:
    return lambda folder: (folder / file).unlink()


def feature(name: str, key: str, value) -> Callable[[dict], None]:
    def change(meta: dict) -> None:
        next(f for f in meta["schema"]["features"] if f["name"] == name)[key] = value

    return change


def first_row(folder: Path, condition: Callable[[dict[str, np.ndarray]], np.ndarray]) -> int:
    rows = pq.read_table(folder / "rows.parquet").to_pydict()
    return int(np.argmax(condition({k: np.asarray(v) for k, v in rows.items()})))


def source_only_on_b(folder: Path) -> None:
    row = first_row(folder, lambda r: r["domain"] == 1)
    set_value("rows.parquet", "source_only", 3, row)(folder)


def user_events(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per user: how many history events, and the ts of the last one."""
    history = pq.read_table(folder / "history.parquet").to_pydict()
    users, ts = np.asarray(history["user_id"]), np.asarray(history["ts"])
    counts = np.bincount(users, minlength=users.max() + 2)
    last = np.full(counts.shape, -1)
    last[users] = ts  # sorted by (user, ts): the last write per user is its latest event
    return counts, last


def hist_end_beyond_events(folder: Path) -> None:
    counts, _ = user_events(folder)
    users = pq.read_table(folder / "rows.parquet").column("user_id").to_numpy()
    set_value("rows.parquet", "hist_end", int(counts[users[ROW]]) + 1)(folder)


def hist_end_leaks_the_future(folder: Path) -> None:
    counts, last = user_events(folder)
    row = first_row(folder, lambda r: (r["hist_end"] < counts[r["user_id"]]) & (last[r["user_id"]] >= r["ts"]))
    users = pq.read_table(folder / "rows.parquet").column("user_id").to_numpy()
    set_value("rows.parquet", "hist_end", int(counts[users[row]]), row)(folder)


def history_ts_backwards(folder: Path) -> None:
    table = pq.read_table(folder / "history.parquet")
    users, ts = table.column("user_id").to_numpy(), table.column("ts").to_numpy().copy()
    i = int(np.argmax((users[1:] == users[:-1]) & (ts[1:] > ts[:-1])))
    ts[i], ts[i + 1] = ts[i + 1], ts[i]
    pq.write_table(replace_column(table, "ts", ts), folder / "history.parquet")


def no_rows(folder: Path) -> None:
    table = pq.read_table(folder / "rows.parquet")
    pq.write_table(table.slice(0, 0), folder / "rows.parquet")
    edit_meta(lambda m: m.update(n_rows=0))(folder)


DATASETS = {
    "meta-missing": (remove("meta.yaml"), r"^meta\.yaml: missing from the dataset folder "),
    "meta-not-yaml": (write_text("meta.yaml", "schema: [a"), r"^meta\.yaml: not valid YAML"),
    "meta-not-a-mapping": (write_text("meta.yaml", "- 1\n- 2\n"), r"^meta\.yaml: must be a mapping"),
    "meta-key-missing": (edit_meta(lambda m: m.pop("n_rows")), r"^meta\.yaml: key 'n_rows' is missing"),
    "format-version": (edit_meta(lambda m: m.update(format_version=99)),
                       r"^meta\.yaml: format_version 99 is not the supported 1"),
    "source-domain-unknown": (edit_meta(lambda m: m["schema"].update(source="Z")),
                              r"^meta\.yaml: invalid schema: schema: source domain 'Z' is not one of"),
    "id-feature-missing": (edit_meta(lambda m: m["schema"].update(
        features=[f for f in m["schema"]["features"] if f["name"] != "seller_id"])),
        r"^meta\.yaml: invalid schema: schema: the id feature 'seller_id' is missing"),
    "vocab-too-small": (edit_meta(feature("price_bucket", "vocab", 1)),
                        r"^meta\.yaml: invalid schema: feature 'price_bucket': vocab must be >= 2 \(id 0 is 'absent'\), got 1"),
    "feature-kind-unknown": (edit_meta(feature("price_bucket", "kind", "text")),
                             r"^meta\.yaml: invalid schema: feature 'price_bucket': kind must be one of"),
    "n-rows-mismatch": (edit_meta(lambda m: m.update(n_rows=m["n_rows"] + 1)),
                        r"^meta\.yaml: n_rows is 601 but rows\.parquet has 600 rows"),
    "n-events-mismatch": (edit_meta(lambda m: m.update(n_events=5)),
                          r"^meta\.yaml: n_events is 5 but history\.parquet has 1500 rows"),
    "rows-missing": (remove("rows.parquet"), r"^rows\.parquet: missing from the dataset folder "),
    "rows-truncated": (truncate("rows.parquet"), r"^rows\.parquet: not a readable Parquet file"),
    "history-not-parquet": (write_text("history.parquet", "user_id,ts\n1,2\n"),
                            r"^history\.parquet: not a readable Parquet file"),
    "label-dropped": (edit_table("rows.parquet", lambda t: t.drop_columns(["label"])),
                      r"^rows\.parquet: column 'label': missing \(the file has \["),
    "history-ts-dropped": (edit_table("history.parquet", lambda t: t.drop_columns(["ts"])),
                           r"^history\.parquet: column 'ts': missing"),
    "label-not-binary": (set_value("rows.parquet", "label", 2), rf"^rows\.parquet: column 'label', row {ROW}: value 2 is not 0/1"),
    "label-null": (as_type("rows.parquet", "label", lambda v: [None if i == ROW else int(x) for i, x in enumerate(v)]),
                   rf"^rows\.parquet: column 'label', row {ROW}: value null is missing"),
    "period-outside-layout": (set_value("rows.parquet", "period", 99),
                              rf"^rows\.parquet: column 'period', row {ROW}: value 99 is outside the period layout \[0, 6\)"),
    "domain-unknown": (set_value("rows.parquet", "domain", 7),
                       rf"^rows\.parquet: column 'domain', row {ROW}: value 7 is outside the domains \['A', 'B', 'C'\]"),
    "item-beyond-vocabulary": (set_value("rows.parquet", "item_id", 81),
                               (rf"^rows\.parquet: column 'item_id', row {ROW}: value 81 is outside feature 'item_id''s "
                               r"vocabulary \[0, 81\)")),
    "negative-user": (set_value("rows.parquet", "user_id", -1),
                      rf"^rows\.parquet: column 'user_id', row {ROW}: value -1 is outside feature 'user_id''s vocabulary"),
    "source-only-feature-on-target": (source_only_on_b,
                                      (r"^rows\.parquet: column 'source_only', row \d+: value 3 on domain 'B', which the "
                                      r"schema says lacks feature 'source_only'")),
    "fractional-float": (as_type("rows.parquet", "price_bucket", with_float(1.5)),
                         rf"^rows\.parquet: column 'price_bucket', row {ROW}: value 1\.5 is not an integer"),
    "nan": (as_type("rows.parquet", "price_bucket", with_float(math.nan)),
            rf"^rows\.parquet: column 'price_bucket', row {ROW}: value nan is NaN"),
    "strings": (as_type("rows.parquet", "item_id", lambda v: [str(x) for x in v]),
                r"^rows\.parquet: column 'item_id': dtype string is not an integer type"),
    "uint64-overflow": (as_type("rows.parquet", "ts", with_uint64_max),
                        rf"^rows\.parquet: column 'ts', row {ROW}: value 18446744073709551615 does not fit in int64"),
    "hist-end-beyond-events": (hist_end_beyond_events,
                               (rf"^rows\.parquet: column 'hist_end', row {ROW}: value \d+ exceeds the \d+ history events "
                               r"of user \d+")),
    "hist-end-leaks-the-future": (hist_end_leaks_the_future,
                                  (r"^rows\.parquet: column 'hist_end', row \d+: value \d+ makes visible a history event "
                                  r"at ts \d+, not before the impression's ts \d+")),
    "history-users-unsorted": (edit_table("history.parquet", lambda t: t.take(np.arange(t.num_rows)[::-1])),
                               (r"^history\.parquet: column 'user_id', row \d+: value \d+ breaks the \(user_id, ts\) "
                                r"order: it follows a larger user_id")),
    "history-ts-unsorted": (history_ts_backwards,
                            (r"^history\.parquet: column 'ts', row \d+: value \d+ breaks the \(user_id, ts\) order: it "
                            r"follows a later ts of the same user")),
    "history-domain-unknown": (set_value("history.parquet", "domain", 9),
                               rf"^history\.parquet: column 'domain', row {ROW}: value 9 is outside the domains"),
    "history-item-beyond-vocabulary": (set_value("history.parquet", "item_id", 500),
                                       rf"^history\.parquet: column 'item_id', row {ROW}: value 500 is outside"),
    "no-rows": (no_rows, r"^rows\.parquet: the dataset has no rows"),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_random_dataset(tmp_path_factory.mktemp("pristine"))


@pytest.mark.parametrize("case", list(DATASETS))
def test_a_malformed_dataset_is_refused_naming_file_and_place(case, pristine, tmp_path) -> None:
    corrupt, message = DATASETS[case]
    folder = tmp_path / "dataset"
    shutil.copytree(pristine, folder)
    corrupt(folder)
    with pytest.raises(DatasetError, match=message):
        load_dataset(folder)


def test_the_pristine_dataset_loads(pristine) -> None:
    assert load_dataset(pristine).n_rows == 600  # so every refusal above is the corruption's doing


# --- bad configs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def empty_period_dataset(tmp_path_factory) -> Path:
    """A valid dataset whose domain B has no rows in period 2."""
    schema, rows, history = random_columns()
    keep = ~((rows["domain"] == 1) & (rows["period"] == 2))
    rows = {k: v[keep] for k, v in rows.items()}
    return write_dataset(tmp_path_factory.mktemp("empty") / "dataset", schema, rows, history, {"test": "empty period"})


CONFIGS = {
    "unknown-domain": (("model=base", "data.domain=Z"), r"^unknown domain 'Z'; this dataset has \['A', 'B', 'C'\]"),
    "target-is-source": (("model=ctnet", "data.domain=A"),
                         (r"^data\.domain=A is the source domain; CTNet transfers from A to a target domain: use one of "
                         r"\['B', 'C'\]")),
    "unknown-protocol": (("model=base", "model.protocol=magic"), r"^model\.protocol='magic' is unknown; expected one of "),
    "unknown-optimizer": (("model=base", "data.domain=C", "optim._target_=torch.optim.Nope"),
                          r"^optim \(torch\.optim\.Nope\) cannot be built: Error locating target 'torch\.optim\.Nope'"),
    "optimizer-argument-of-another-class": (("model=base", "data.domain=C", "optim._target_=torch.optim.Adam"),
                                            (r"^optim \(torch\.optim\.Adam\) cannot be built: .*unexpected keyword "
                                             r"argument 'initial_accumulator_value'.*~optim\.<key>$")),
    "trainer-sets-a-protocol-argument": (("model=base", "data.domain=C", "+trainer.max_epochs=3"),
                                         r"^trainer\.max_epochs is set by ctl for every fit \(epoch k = period k"),
    "callback-that-is-no-callback": (("model=base", "data.domain=C", "+callbacks.clock._target_=time.monotonic"),
                                     r"^callbacks\.clock builds a float, not a Lightning Callback$"),
    "model-does-not-fit-schema": (("model=base", "data.domain=C", "model.size.embed_dim=null", "model.size.num_heads=5",
                                   "model.size.attn_dim=10"),
                                  (r"^model base does not fit the schema of the dataset .*synthetic_tiny-\w+ \(Backbone: "
                                  r"the event width \(item dim \+ category dim = \d+\) must be a multiple of num_heads "
                                  r"\(5\)\); change model\.size or the dataset's meta\.yaml$")),
    "negative-checkpoint-interval": (("model=base", "data.domain=C", "checkpoint_every_n_steps=-1"),
                                     r"^checkpoint_every_n_steps=-1 must be >= 0"),
    "finetune-period-outside-history": (("model=ft_all", "model.finetune_periods=99"), r"finetune_periods=99"),
    "dataset-path-missing": (("model=base", "+data.path=/nonexistent/ctl-dataset"),
                             r"^dataset folder /nonexistent/ctl-dataset does not exist \(data\.path\); make one with"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_a_bad_config_is_refused_before_training(case, home, tmp_path) -> None:
    overrides, message = CONFIGS[case]
    with pytest.raises((CtlError, ValueError), match=message) as refused:
        run_train(make_cfg(home, *overrides), tmp_path / "run")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_empty_period_is_refused_naming_the_slice(home, empty_period_dataset, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"the validation slice \(domains \['B'\], period 2\) of .*dataset has no rows"):
        run_train(make_cfg(home, "model=base", "data.domain=B", f"+data.path={empty_period_dataset}"), tmp_path)


def test_a_period_outside_the_layout_is_refused(pristine, tmp_path) -> None:
    dataset = load_dataset(pristine)
    cfg = make_cfg(tmp_path)
    with pytest.raises(ValueError, match=r"periods \[9\] are outside the trainable layout \[0, 4\] \(period 5 is the test"):
        make_datamodule(cfg, dataset, ["B"], [3, 9], eval_domain="B", seed=0)
    (tmp_path / "track" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CtlError, match=r"has no checkpoint for period 99 \(period_99\.ckpt is missing\); delete the "
                                       r"folder so the track is rebuilt"):
        Track(tmp_path / "track", "base-B").checkpoint(99)


#: every model the package ships a config for: the list an unknown model's refusal must give
MODEL_CONFIGS = sorted(p.stem for p in (Path(ctl.conf.__file__).parent / "model").glob("*.yaml"))

CLI = {
    "unknown-model": (["train", "model=foo"], (r"unknown model 'foo' \(in model=foo\); the known ones are: "
                                               + re.escape(", ".join(MODEL_CONFIGS)) + "$")),
    "unknown-model-in-a-sweep": (["sweep", "model=base,ctnt"], r"unknown model 'ctnt' \(in model=base,ctnt\)"),
    "unknown-data": (["train", "data=nope"], r"unknown data 'nope' \(in data=nope\); the known ones are: .*synthetic_tiny"),
    "unknown-size": (["train", "model/size=huge"], (r"unknown model/size 'huge' \(in model/size=huge\); the known ones "
                                                   r"are: paper, small")),
    "unknown-callbacks-in-a-list": (["train", "callbacks=[lr_monitor,early_stop]"],
                                    (r"unknown callbacks 'early_stop' \(in callbacks=\[lr_monitor,early_stop\]\); the "
                                     r"known ones are: lr_monitor, none$")),
    "unknown-optim": (["train", "optim=sgd"], r"unknown optim 'sgd' \(in optim=sgd\); the known ones are: adagrad, adam$"),
    "unwritable-run-folder": (["train", "hydra.run.dir=/proc/ctl-run"],
                              r"the output folder \(hydra\.run\.dir\) /proc/ctl-run is not writable"),
}


@pytest.mark.parametrize("case", list(CLI))
def test_the_cli_refuses_in_one_line_without_a_traceback(case, capsys, monkeypatch) -> None:
    argv, message = CLI[case]
    monkeypatch.setenv("CTL_COMMAND", "")  # restored (removed) after the test; main sets it
    monkeypatch.delenv("CTL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.search(message, " ".join(err.split())), err
    monkeypatch.setenv("CTL_DEBUG", "1")  # the traceback instead, for debugging
    with pytest.raises(CtlError, match=message):
        cli.main(argv)


def test_the_models_an_unknown_model_refusal_lists_are_the_ones_that_compose(home) -> None:
    assert {"base", "source", "din", "ctnet", "ctnet_linear"} <= set(MODEL_CONFIGS)
    for name in MODEL_CONFIGS:
        cfg = make_cfg(home, f"model={name}")
        # a model file is a method of its own: its label is its name (ctnet_once is ctnet, refresh off)
        assert method_label(cfg) == name and "_target_" in cfg.model.net, name


def test_the_cli_prints_a_multi_line_parser_report_in_one_line(pristine, tmp_path, capsys, monkeypatch) -> None:
    folder = tmp_path / "dataset"
    shutil.copytree(pristine, folder)
    (folder / "meta.yaml").write_text("schema: [a")
    monkeypatch.setenv("CTL_COMMAND", "")
    monkeypatch.delenv("CTL_DEBUG", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["data", "validate", str(folder)])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: meta.yaml: not valid YAML (while parsing a flow sequence in \"<unicode string>\"")


# --- checkpoints ---------------------------------------------------------------------------------


def small_backbone(**changes) -> BackboneConfig:
    sizes = {"embed_dim": 8, "mlp_dims": (16, 8), "num_heads": 2, "attn_dim": 8, "sim_k": 2, "eta_k": 2,
             "eta_bits": 4, "eta_seed": 0}
    return BackboneConfig(**{**sizes, **changes})


def save_model(model: torch.nn.Module, path: Path, **extra) -> Path:
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, **extra}, path)
    return path


def test_a_checkpoint_of_another_size_or_layout_is_refused_naming_the_parameter(pristine, tmp_path) -> None:
    schema = load_dataset(pristine).schema
    model = BaseModel(schema, small_backbone())
    wider = save_model(BaseModel(schema, small_backbone(mlp_dims=(32, 8))), tmp_path / "wider.ckpt")
    with pytest.raises(CtlError, match=r"^the model \(.*wider\.ckpt\) does not fit: parameter '[\w.]+' has shape "
                                       r"\(32, \d+\) in the checkpoint but \(16, \d+\) in the model; was it trained with "
                                       r"another model size or dataset schema\?$"):
        load_model_state(model, wider, what="the model")
    deeper = save_model(BaseModel(schema, small_backbone(mlp_dims=(16, 8, 4))), tmp_path / "deeper.ckpt")
    with pytest.raises(CtlError, match=r"does not fit: unexpected '[\w.]+' \(0 missing, \d+ unexpected tensors\)"):
        load_model_state(model, deeper, what="the model")
    shallower = save_model(BaseModel(schema, small_backbone(mlp_dims=(16,))), tmp_path / "shallower.ckpt")
    with pytest.raises(CtlError, match=r"does not fit: missing '[\w.]+' \(\d+ missing, 0 unexpected tensors\)"):
        load_model_state(model, shallower, what="the model")


def test_an_unreadable_or_missing_checkpoint_is_refused(tmp_path) -> None:
    (tmp_path / "cut.ckpt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    with pytest.raises(CtlError, match=r"^checkpoint .*cut\.ckpt cannot be read \(\w+: .*\); delete it so the track "
                                       r"is rebuilt$"):
        read_checkpoint(tmp_path / "cut.ckpt")
    with pytest.raises(CtlError, match=r"^checkpoint .*gone\.ckpt does not exist; rebuild the track it belongs to$"):
        read_checkpoint(tmp_path / "gone.ckpt")


def test_resume_true_refuses_foreign_and_damaged_checkpoints(pristine, tmp_path) -> None:
    model = BaseModel(load_dataset(pristine).schema, small_backbone())
    foreign = save_model(model, tmp_path / "foreign.ckpt")
    with pytest.raises(CtlError, match=r"^cannot resume from .*foreign\.ckpt: it records no fit identity \(not written by "
                                       r"ctl\); rerun with the same overrides, or choose a new hydra\.run\.dir"):
        resume_point(foreign, {"config": {}}, model, FIT_KEY, strict=True)
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(foreign.read_bytes()[:100])
    with pytest.raises(CtlError, match=r"^cannot resume from .*damaged\.ckpt: it cannot be read"):
        resume_point(damaged, {"config": {}}, model, FIT_KEY, strict=True)
    other = save_model(model, tmp_path / "other.ckpt", **{FIT_KEY: {"identity": {"config": {"seed": 1}}}})
    with pytest.raises(CtlError, match=r"it was written by another configuration \(config\.seed: 1 in the checkpoint, 2 "
                                       r"now\)"):
        resume_point(other, {"config": {"seed": 2}}, model, FIT_KEY, strict=True)
    # without resume=true a stale checkpoint of another fit is put aside and the fit starts over
    assert resume_point(other, {"config": {"seed": 2}}, model, FIT_KEY, strict=False) is None
    assert not other.exists()
    # but a file whose fit cannot be told is refused, and kept, either way
    for path, why in ((foreign, r"records no fit identity \(not written by ctl\)"), (damaged, r"cannot be read")):
        before = path.read_bytes()
        with pytest.raises(CtlError, match=rf"^{path} is in the way of this fit and {why}.*: it is not the checkpoint of "
                                           r"a ctl fit, so it is not replaced; move it away"):
            resume_point(path, {"config": {}}, model, FIT_KEY, strict=False)
        assert path.read_bytes() == before


class WritesAMarker:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def save_code_running_checkpoint(model: torch.nn.Module, path: Path, marker: Path) -> Path:
    """A checkpoint with the right weights and an object whose unpickling creates ``marker``."""
    return save_model(model, path, extra=WritesAMarker(marker))


UNSAFE = r"holds objects other than tensors and plain data \(first found: exec\) and will not be loaded"


def test_a_checkpoint_that_would_run_code_is_refused_by_every_reader(pristine, tmp_path) -> None:
    model = BaseModel(load_dataset(pristine).schema, small_backbone())
    marker = tmp_path / "marker"
    path = save_code_running_checkpoint(model, tmp_path / "last.ckpt", marker)
    readers = {
        "track": lambda: load_model_state(model, path, what="the model"),
        "resume": lambda: resume_point(path, {"config": {}}, model, FIT_KEY, strict=False),
        "resume=true": lambda: resume_point(path, {"config": {}}, model, FIT_KEY, strict=True),
        "lightning": lambda: AtomicCheckpointIO().load_checkpoint(path),
    }
    for reader, read in readers.items():
        with pytest.raises(CtlError, match=rf"^checkpoint {re.escape(str(path))} {UNSAFE}"):
            read()
        assert not marker.exists(), reader
    assert path.exists()  # not taken for a stale checkpoint and removed: the user sees it and decides
    torch.load(path, weights_only=False)  # the file is what it claims: an unrestricted load runs its code
    assert marker.exists()


def test_optimizer_state_is_mapped_by_name_only_when_the_counts_agree(pristine) -> None:
    model = BaseModel(load_dataset(pristine).schema, small_backbone())
    names = [name for name, _ in model.named_parameters()]
    optimizer = torch.optim.Adagrad(list(model.parameters()), lr=0.1)
    checkpoint = {"optimizer_states": [optimizer.state_dict()]}
    by_name = optimizer_state_by_name(checkpoint, names, "period_3.ckpt")
    assert list(by_name) == names
    assert all(by_name[n]["sum"].shape == p.shape for n, p in model.named_parameters())
    with pytest.raises(CtlError, match=rf"^the optimiser state in period_3\.ckpt holds {len(names)} parameters but the "
                                       rf"model it goes to has {len(names) - 1}; was it trained with another model\?$"):
        optimizer_state_by_name(checkpoint, names[1:], "period_3.ckpt")
    assert optimizer_state_by_name({}, names, "period_3.ckpt") == {}


def run_sizes(cfg, **changes) -> BackboneConfig:
    """The run's backbone sizes with ``changes``."""
    sizes = {k: v for k, v in cfg.model.size.items() if k != "_target_"}
    return BackboneConfig(**{**sizes, **changes})


@pytest.fixture(scope="module")
def tracks_home(tmp_path_factory) -> Path:
    """A cache holding the base tracks of A and B (the production models CTNet starts from)."""
    home = tmp_path_factory.mktemp("tracks_home")
    for domain in ("A", "B"):
        run_train(make_cfg(home, "model=base", f"data.domain={domain}"), tmp_path_factory.mktemp(f"run_{domain}"))
    return home


def test_a_source_checkpoint_that_does_not_fit_the_source_tower_is_refused(tracks_home, tmp_path) -> None:
    cfg = make_cfg(tracks_home, "model=ctnet", "data.domain=B")
    source = next((tracks_home / "tracks").glob("base-A-*"))
    # a foreign but intact track: its period-4 model has another MLP width, its manifest is consistent
    schema = load_dataset(next((tracks_home / "datasets").glob("synthetic_tiny-*"))).schema
    foreign = BaseModel(schema, run_sizes(cfg, mlp_dims=(32, 16)))
    save_model(foreign, source / "checkpoints" / "period_4.ckpt")
    write_manifest(source, skip=("logs",))
    with pytest.raises(CtlError, match=r"^the source model of period 4 \(.*base-A-\w+/checkpoints/period_4\.ckpt\) does "
                                       r"not fit: parameter '(tower\.mlp\.[\w.]+)' has shape \(32, \d+\) in the "
                                       r"checkpoint but \(128, \d+\) in the model"):
        run_train(cfg, tmp_path)
    assert not (tmp_path / "checkpoints" / "period_4.ckpt").exists()


def test_a_run_refuses_a_track_or_resume_checkpoint_that_would_run_code(tracks_home, tmp_path) -> None:
    cfg = make_cfg(tracks_home, "model=ctnet", "data.domain=B")
    marker = tmp_path / "marker"
    schema = load_dataset(next((tracks_home / "datasets").glob("synthetic_tiny-*"))).schema
    # a last.ckpt in the run folder, read before anything trains
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    resume = save_code_running_checkpoint(BaseModel(schema, run_sizes(cfg)), run_dir / "checkpoints" / "last.ckpt",
                                          marker)
    with pytest.raises(CtlError, match=rf"^checkpoint {re.escape(str(resume))} {UNSAFE}"):
        run_train(cfg, run_dir)
    assert not marker.exists()
    # the target track's production model, in a track whose manifest verifies
    target = next((tracks_home / "tracks").glob("base-B-*"))
    production = target / "checkpoints" / f"period_{schema.t0 - 1}.ckpt"
    original = production.read_bytes()
    try:
        save_code_running_checkpoint(BaseModel(schema, run_sizes(cfg)), production, marker)
        write_manifest(target, skip=("logs",))
        with pytest.raises(CtlError, match=rf"^checkpoint {re.escape(str(production))} {UNSAFE}"):
            run_train(cfg, tmp_path / "other_run")
        assert not marker.exists()
    finally:  # the module's other tests use this track
        production.write_bytes(original)
        write_manifest(target, skip=("logs",))


# --- diverging losses ----------------------------------------------------------------------------


def test_a_diverging_loss_stops_the_run_naming_period_and_step(home, tmp_path) -> None:
    cfg = make_cfg(home, "model=base", "data.domain=C", "data.batch_size=8", "optim.lr=1e30",
                   "checkpoint_every_n_steps=1")
    with pytest.raises(CtlError, match=r"^the training loss became (nan|inf) in period 0 at its batch \d+ \(global step "
                                       r"\d+\); lower optim\.lr or check the data of that period$"):
        run_train(cfg, tmp_path)
    # a checkpoint every step, but none of a diverged model
    saved = list((home / "tracks").glob(".base-C-*.building/checkpoints/*.ckpt"))
    assert saved
    for path in saved:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path.name


class PoisonedModel(torch.nn.Module):
    """Logits from one embedding; the ``poison_at``-th training forward (1-based) returns NaN."""

    def __init__(self, poison_at: int) -> None:
        super().__init__()
        self.items = torch.nn.Embedding(100, 1)
        self.poison_at = poison_at
        self.calls = 0

    def forward(self, batch: dict) -> torch.Tensor:
        logits = self.items(batch["item_id"].clamp(max=99)).squeeze(-1)
        if self.training:
            self.calls += 1
            if self.calls == self.poison_at:
                return logits * math.nan
        return logits


def test_a_poisoned_batch_is_reported_at_its_exact_step(pristine, tmp_path) -> None:
    dataset = load_dataset(pristine)
    datamodule = make_datamodule(make_cfg(tmp_path, "data.batch_size=8"), dataset, ["A"], [0, 1], "A", seed=0)
    first_period = len(datamodule.dataset.select(["A"], [0])) // 8 + 1  # batches of period 0 (last one partial)
    poison_at = first_period + 3  # period 1, its batch 2 (0-based)
    task = CTRTask(PoisonedModel(poison_at), functools.partial(torch.optim.Adagrad, lr=0.01), datamodule.period_of_epoch, test_period=5)
    trainer = pl.Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    with pytest.raises(CtlError, match=rf"^the training loss became nan in period 1 at its batch 2 \(global step "
                                       rf"{poison_at}\)"):
        trainer.fit(task, datamodule=datamodule)


# --- output folders --------------------------------------------------------------------------------


def in_child_as_nobody(action: Callable[[], None]) -> str:
    """Run ``action`` in a forked child without root's rights; return the message it was refused with."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        message = "not refused"
        try:
            os.setgid(65534)
            os.setuid(65534)
            action()
        except Exception as exc:  # noqa: BLE001 (sent back to the parent)
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write, message.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    return message


@pytest.fixture
def read_only_folder():
    base = Path(tempfile.mkdtemp(prefix="ctl-ro-"))
    base.chmod(0o755)
    folder = base / "read-only"
    folder.mkdir(mode=0o555)
    folder.chmod(0o555)
    yield folder
    shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="drops root's rights to make a folder read-only for real")
def test_a_read_only_run_folder_is_refused_up_front(home, read_only_folder) -> None:
    cfg = make_cfg(home, "model=base", "data.domain=C")
    message = in_child_as_nobody(lambda: run_train(cfg, read_only_folder / "run"))
    assert message == (f"CtlError: the run folder (hydra.run.dir) {read_only_folder / 'run'} is not writable "
                       "(permission denied); choose another folder or fix it")
    message = in_child_as_nobody(lambda: atomic_write_json(read_only_folder / "metrics.json", {}))
    assert message.startswith(f"CtlError: cannot write {read_only_folder / 'metrics.json'}: permission denied; ")
    assert list(read_only_folder.iterdir()) == []


def test_a_full_disk_is_refused_up_front_and_when_a_write_fails(home, tmp_path, monkeypatch) -> None:
    fresh = tmp_path / "home"
    shutil.copytree(home / "datasets", fresh / "datasets")
    # a disk with 4 KiB free: the track's fit refuses before training
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9 - 4096, free=4096))
    with pytest.raises(CtlError, match=r"^saving the checkpoints of track base-C needs about [\d.]+ MiB in .* but only "
                                       r"0\.0 MiB are free; free space or choose another folder$"):
        run_train(make_cfg(fresh, "model=base", "data.domain=C"), tmp_path / "run")
    monkeypatch.undo()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(CtlError, match=r"^cannot write .*metrics\.json: no space left on the device; free space or "
                                       r"choose a writable folder"):
        atomic_write_json(tmp_path / "metrics.json", {"auc": 0.5})
    monkeypatch.undo()
    assert list(tmp_path.glob("*metrics.json*")) == []
    check_writable(tmp_path / "fine", "a folder")  # and a writable one passes
