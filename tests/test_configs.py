"""Every YAML file under ``ctl/conf`` composes, and every model config trains one period.

The files come from a glob, so a new config is tested as soon as it exists: :func:`compositions`
says how each group's files are composed, and a file in a folder it does not know fails the test
until it is told. Data presets that import public data sets (``amazon_food_kitchen``, ``douban``,
``taobao_tiny``) and the ``synthetic``/``synthetic_paper`` worlds are composed, not trained here:
the first need files that may be absent (``tests/test_public_data.py`` trains them where they
are), the others take minutes. Trainer presets for DDP and GPUs are composed only as well
(``tests/test_ddp.py`` runs DDP).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import itertools
import math
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra._internal.utils import _locate
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

import ctl.conf
from ctl.data.importer import schema_from
from ctl.errors import CtlError
from ctl.methods import method_label
from ctl.training.checkpoints import read_checkpoint
from ctl.training.protocol import run_train
from ctl.training.task import TASK_KEY, CTRTask

CONF = Path(ctl.conf.__file__).parent
YAML_FILES = sorted(p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
#: groups chosen in `ctl train` (`<group>=<name>`)
TRAIN_GROUPS = ("model", "model/size", "trainer", "logger", "optim", "callbacks")
#: configs that need a Hydra plugin outside ctl's dependencies
PLUGINS = {"hydra/launcher/slurm.yaml": "hydra_plugins.hydra_submitit_launcher"}
#: swept keys that change neither a config's structure nor a run's method label
NEUTRAL_SWEEP_KEYS = ("seed", "data.domain")


def compositions(path: str) -> list[tuple[str, list[str]]]:
    """How the file ``path`` (relative to ``conf/``) is composed: (primary config, overrides) pairs."""
    group, name = path.rsplit("/", 1)[0] if "/" in path else "", Path(path).stem
    if not group and name in ("train", "generate", "import"):
        return [(name, [])]
    if group in TRAIN_GROUPS:
        return [("train", [f"{group}={name}"])]
    if group == "data":
        return [(primary, [f"data={name}"]) for primary in ("train", "generate", "import")]
    if group == "experiment":
        return [("train", [f"experiment={name}"])]
    if group == "hydra/launcher":
        return [("train", [f"hydra/launcher={name}"])]
    if group == "schemas":
        return [("import", [f"+schemas@schema={name}"])]
    if group == "regime" or group.startswith("regime/"):
        return [("train", [f"+{group}={name}"])]
    raise AssertionError(f"conf/{path}: tests/test_configs.py does not know how to compose the group "
                         f"{group or '(top level)'!r}; teach compositions() where its files go")


def compose_config(primary: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(primary, overrides=overrides, return_hydra_config=hydra)


def targets(node: object) -> list[str]:
    """Every ``_target_`` in a plain config tree."""
    if isinstance(node, dict):
        own = [node["_target_"]] if "_target_" in node else []
        return own + [t for value in node.values() for t in targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in targets(value)]
    return []


@pytest.mark.parametrize("path", YAML_FILES)
def test_every_config_file_composes(path: str) -> None:
    plugin = PLUGINS.get(path)
    if plugin and importlib.util.find_spec(plugin) is None:
        pytest.skip(f"{plugin} is not installed (an optional dependency)")
    for primary, overrides in compositions(path):
        cfg = compose_config(primary, overrides, hydra=path.startswith("hydra/"))
        if path.startswith("hydra/"):
            _locate(OmegaConf.to_container(cfg.hydra.launcher, resolve=True)["_target_"])
        job = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
        for target in targets(job):
            _locate(target)
        if path.startswith("schemas/"):
            schema_from(cfg.schema, f"conf/{path}")


def test_a_file_in_an_unknown_folder_is_not_left_untested() -> None:
    with pytest.raises(AssertionError, match=r"conf/widgets/new\.yaml: .* does not know how to compose the group "
                                             r"'widgets'"):
        compositions("widgets/new.yaml")


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The overrides of the jobs that ``ctl sweep experiment=<experiment>`` runs, one list per job.

    Keys that are config groups or model settings are crossed as Hydra's sweeper crosses them;
    each value of the :data:`NEUTRAL_SWEEP_KEYS` appears in at least one job (crossing them too
    would compose the same structure again for every seed).
    """
    params = compose_config("train", [f"experiment={experiment}"], hydra=True).hydra.sweeper.params
    parser = OverridesParser.create()
    crossed, cycled = [], []
    for key, value in params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        swept = override.sweep_string_iterator() if override.is_sweep_override() else [override.get_value_element_as_str()]
        values = [f"{key}={v}" for v in swept]
        (cycled if key in NEUTRAL_SWEEP_KEYS else crossed).append(values)
    jobs = [list(job) for job in itertools.product(*crossed)]
    n = max([len(jobs), *(len(values) for values in cycled)])
    return [[f"experiment={experiment}", *jobs[i % len(jobs)], *(v[i % len(v)] for v in cycled)] for i in range(n)]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_job_of_an_experiment_composes_into_the_methods_it_documents(experiment: str) -> None:
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    documented = re.search(r"^# methods \(ctl\.methods\.method_label\): (.+(?:\n#   .+)*)$", text, re.MULTILINE)
    assert documented, f"conf/experiment/{experiment}.yaml lists no '# methods (ctl.methods.method_label): ...'"
    labels = {method_label(compose_config("train", overrides)) for overrides in sweep_jobs(experiment)}
    assert labels == {m.strip(" #\n") for m in documented.group(1).split(",")}


TARGET_KNOBS = ("rows_per_period", "user_share", "user_offset_scale", "item_bias_scale", "quality_weight",
                "price_weight", "offset_persistence")


def _target_knobs(cfg: DictConfig) -> dict:
    domains = OmegaConf.to_container(cfg.data.generator.domains, resolve=True)
    return {(d, k): domains[d].get(k, 1.0 if k == "offset_persistence" else None) for d in ("B", "C") for k in TARGET_KNOBS}


@pytest.mark.parametrize(("cell", "world"), [("hhh", "synthetic"), ("lll", "synthetic_sparse")])
def test_the_regime_maps_corners_are_the_calibrated_and_the_sparse_worlds_targets(cell: str, world: str) -> None:
    mapped = compose_config("train", [f"+regime={cell}"])
    assert _target_knobs(mapped) == _target_knobs(compose_config("train", [f"data={world}"]))
    # the map moves the targets only: source, test slices and everything else stay the default world's
    default = OmegaConf.to_container(compose_config("train", []).data.generator, resolve=True)
    moved = OmegaConf.to_container(mapped.data.generator, resolve=True)
    for domain in ("B", "C"):
        for knob in TARGET_KNOBS:
            default["domains"][domain].pop(knob, None)
            moved["domains"][domain].pop(knob, None)
    assert moved == default
    assert OmegaConf.to_container(mapped.regime) == dict(zip(("volume", "gap", "drift"), [
        {"l": "low", "m": "mid", "h": "high"}[c] for c in cell]))


def test_the_regime_maps_centre_is_halfway_between_its_corners_on_every_knob_but_volume() -> None:
    low, mid, high = (_target_knobs(compose_config("train", [f"+regime={c}"])) for c in ("lll", "mmm", "hhh"))
    for key in low:
        if key[1] == "rows_per_period":  # volume's mid level halves the calibrated rows (whole batches)
            assert mid[key] == high[key] // 2
        else:
            assert mid[key] == pytest.approx((low[key] + high[key]) / 2), key


# --- every model config trains one transfer period ------------------------------------------------
#: the tiny world cut to one history and one transfer period: tracks of 2 periods, runs of 1
ONE_PERIOD = ("data=synthetic_tiny", "data.generator.n_history=1", "data.generator.n_transfer=1")


@pytest.fixture(scope="module")
def train_cfg(tmp_path_factory):
    """cfg(*overrides): a `ctl train` config on the one-period world, sharing one cache (world and tracks)."""
    home = tmp_path_factory.mktemp("home")

    def cfg(*overrides: str) -> DictConfig:
        return compose_config("train", [*ONE_PERIOD, f"home={home}", "progress=false", "print_table=false",
                                        *overrides])

    return cfg


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_trains_one_period(model: str, train_cfg, tmp_path) -> None:
    cfg = train_cfg(f"model={model}")
    metrics = run_train(cfg, tmp_path)
    assert metrics["model"] == cfg.model.name and metrics["method"] == method_label(cfg) == model
    # a track method reports its whole track, every other method the transfer period
    trained = [0, 1] if cfg.model.protocol == "track" else [1]
    assert [row["period"] for row in metrics["periods"]] == trained and metrics["test"]["period"] == 2
    for row in [*metrics["periods"], metrics["test"]]:
        assert all(math.isfinite(row[key]) for key in ("auc", "gauc", "logloss")), row


def test_optimiser_trainer_and_callbacks_are_swapped_from_the_command_line(train_cfg, tmp_path) -> None:
    # one rate for both adapters (no per-width scaling), so the groups are the tower's and the adapters'
    cfg = train_cfg("model=ctnet", "optim=adam", "optim.lr=0.002", "model.net.adapter_lr=0.0005",
                    "model.net.adapter_base_width=null", "callbacks=lr_monitor", "trainer.log_every_n_steps=1")
    metrics = run_train(cfg, tmp_path)
    adagrad = run_train(train_cfg("model=ctnet"), tmp_path / "adagrad")
    # tracks are keyed by the optimiser: the production models were trained with Adam too ...
    assert metrics["tracks"]["target"] != adagrad["tracks"]["target"]
    production = read_checkpoint(Path(metrics["tracks"]["target"]) / "checkpoints" / "period_0.ckpt")
    assert production[TASK_KEY]["optimizer"] == "torch.optim.adam.Adam"
    # ... so CTNet's target tower continues their Adam state, with the adapters in their own lr group
    assert re.search(r"weights and Adam state: [1-9]\d* tensors", metrics["inherited"]["target_tower"])
    own = read_checkpoint(tmp_path / "checkpoints" / "period_1.ckpt")
    assert own[TASK_KEY]["optimizer"] == "torch.optim.adam.Adam"
    assert [g["lr"] for g in own["optimizer_states"][0]["param_groups"]] == [0.002, 0.0005]
    assert {"exp_avg", "exp_avg_sq"} <= set(next(iter(own["optimizer_states"][0]["state"].values())))
    with open(tmp_path / "logs" / "metrics.csv") as fh:
        assert any(column.startswith("lr-Adam") for column in csv.DictReader(fh).fieldnames)


def test_an_optimiser_state_is_continued_only_by_the_class_that_wrote_it() -> None:
    task = CTRTask(torch.nn.Linear(3, 1), functools.partial(torch.optim.Adam, lr=0.01), lambda epoch: epoch, 2)
    weight = task.model.weight
    task.inherit_optimizer_state({weight: {"step": torch.tensor(3.0), "sum": torch.ones_like(weight)}},
                                 {"tracks/base-B/checkpoints/period_3.ckpt": {TASK_KEY: {
                                     "optimizer": "torch.optim.adagrad.Adagrad"}}})
    with pytest.raises(CtlError, match=r"^the optimiser state to continue \(tracks/base-B/checkpoints/period_3\.ckpt\) "
                                       r"was written by torch\.optim\.adagrad\.Adagrad, not by this run's "
                                       r"torch\.optim\.adam\.Adam: one optimiser cannot continue another's state"):
        task.configure_optimizers()
    task.optimizer_factory = functools.partial(torch.optim.Adagrad, lr=0.01)
    optimizer = task.configure_optimizers()
    assert torch.equal(optimizer.state[weight]["sum"], torch.ones_like(weight))
