"""Trust boundaries: a run folder, an artifact or a schema from someone else runs no code and
writes nothing outside its folder; every malformed file is refused in one line.

Every attack leaves a marker file if it ran; each test first shows the attack is live (the
payload does create the marker when handed to the loader the attack aims at), then that ctl
refuses it and the marker never appears.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ctl.data.dataset import load_dataset
from ctl.data.importer import import_dataset, load_spec, parse_spec
from ctl.data.importer.errors import SpecError
from ctl.data.registry import load_for
from ctl.data.schema import ID_FEATURES, Feature, Schema
from ctl.data.synthetic.continuation import continue_world
from ctl.errors import CtlError
from ctl.io import inside
from ctl.report.cli import evaluate
from ctl.serve.artifact import Artifact
from ctl.serve.export import export_run
from ctl.serve.requests import requests_from_dataset
from ctl.serve.score import score_file
from ctl.training.callbacks import FIT_KEY
from ctl.training.continuation import continuation_of_run
from ctl.training.protocol import run_train
from test_importer import log_schema, make_log, write_csv, write_schema


class _Touch:
    """Unpickled, it creates the file it names: the proof that a loader ran the sender's code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def payload(marker: Path) -> bytes:
    return pickle.dumps(_Touch(marker))


def gadget(marker: Path) -> dict:
    """The config node that makes Hydra's instantiate unpickle ``payload(marker)``."""
    encoded = base64.b64encode(payload(marker)).decode()
    return {"_target_": "torch.load", "weights_only": False,
            "f": {"_target_": "io.BytesIO", "initial_bytes": {"_target_": "base64.b64decode", "s": encoded}}}


def make_cfg(home: Path, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=["data=synthetic_tiny", f"home={home}", "progress=false",
                                                       "print_table=false", *overrides])


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trust_home")


@pytest.fixture(scope="module")
def base_run(home, tmp_path_factory) -> Path:
    """A finished base run on the tiny world's domain B."""
    run_dir = tmp_path_factory.mktemp("trust_run")
    run_train(make_cfg(home, "model=base", "data.domain=B"), run_dir)
    return run_dir


def copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, symlinks=True)
    return to


def edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data))


def assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    for needle in needles:
        assert needle in message, (needle, message)


# --- 1. models are built from ctl's own classes only ---------------------------------------------------


def test_the_gadget_is_live_under_hydra(tmp_path) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(Exception):  # noqa: B017 (the payload is no tensor file: torch.load fails after running it)
        instantiate(OmegaConf.create(gadget(marker)))
    assert marker.exists()


PLACES = {
    "model.net": lambda cfg, g: cfg["model"].__setitem__("net", g),
    "model.net.backbone": lambda cfg, g: cfg["model"]["net"].__setitem__("backbone", g),
    "model.net.backbone.mlp_dims": lambda cfg, g: cfg["model"]["net"]["backbone"].__setitem__("mlp_dims", g),
    "model.net.extra[1]": lambda cfg, g: cfg["model"]["net"].__setitem__("extra", [1, g]),
    "model.net.backbone.deep.deeper": lambda cfg, g: cfg["model"]["net"]["backbone"].__setitem__(
        "deep", {"deeper": g}),
}


@pytest.mark.parametrize("key", list(PLACES))
def test_export_refuses_a_foreign_target_at_any_depth_of_config_yaml(base_run, tmp_path, key) -> None:
    marker = tmp_path / "marker"
    run = copy_run(base_run, tmp_path / "run")
    edit_yaml(run / "config.yaml", lambda cfg: PLACES[key](cfg, gadget(marker)))
    with pytest.raises(CtlError) as exc:
        export_run(run, tmp_path / "artifact")
    assert_one_line(exc, "config.yaml", key, "torch.load", "refused")
    assert not marker.exists() and not (tmp_path / "artifact").exists()


def test_a_hydra_key_or_an_unknown_class_in_config_yaml_is_refused(base_run, tmp_path) -> None:
    run = copy_run(base_run, tmp_path / "run")
    edit_yaml(run / "config.yaml", lambda cfg: cfg["model"]["net"].__setitem__("_partial_", True))
    with pytest.raises(CtlError) as exc:
        export_run(run, tmp_path / "artifact")
    assert_one_line(exc, "model.net._partial_", "refused")
    edit_yaml(run / "config.yaml", lambda cfg: cfg["model"]["net"].pop("_partial_"))
    edit_yaml(run / "config.yaml", lambda cfg: cfg["model"]["net"].__setitem__("_target_", "builtins.exec"))
    with pytest.raises(CtlError) as exc:
        export_run(run, tmp_path / "artifact")
    assert_one_line(exc, "model.net._target_", "'builtins.exec'", "not one of ctl's model classes")


def test_the_untouched_run_still_exports(base_run, tmp_path) -> None:
    out = export_run(base_run, tmp_path / "artifact")
    assert (out / "manifest.json").is_file()


# --- 2. artifacts load without unpickling, every file vouched for -------------------------------------


def _touch_and_return(path: str, original: bytes) -> object:
    """The silent payload: runs (creates the marker) and returns what the file held, so scores do not change."""
    open(path, "w").close()
    return torch.load(io.BytesIO(original), weights_only=True)


class _Silent:
    def __init__(self, path: Path, original: bytes) -> None:
        self.path, self.original = str(path), original

    def __reduce__(self):
        return (_touch_and_return, (self.path, self.original))


def rewrite_archive(file: Path, changes: dict) -> None:
    """Replace members of the zip ``file`` whose name ends with a key of ``changes`` (bytes, or a function of the old bytes)."""
    old = file.read_bytes()
    with zipfile.ZipFile(io.BytesIO(old)) as zin, zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, new in changes.items():
                if info.filename.endswith(suffix):
                    data = new(data) if callable(new) else new
            zout.writestr(info.filename, data)


def rehash(folder: Path, name: str) -> None:
    """Record ``name``'s new size and sha256 in the manifest, as an attacker who controls the folder would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / name).read_bytes()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def unlist(folder: Path, name: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"][name]
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _use_pickle(marker: Path):
    def edit(config: bytes) -> bytes:
        entries = json.loads(config)
        first = next(iter(entries["config"].values()))
        first["use_pickle"] = True
        return json.dumps(entries).encode()
    return edit


def _pickled_weight(marker: Path) -> dict:
    return {"model_weights_config.json": _use_pickle(marker), "data/weights/weight_0": payload(marker)}


CRAFTED = {
    # a sample_inputs pickle torch's safe load refuses, so torch retries it unsafely; hash recomputed
    "sample_inputs": lambda art, marker: (
        rewrite_archive(art / "model.pt2", {"data/sample_inputs/model.pt": payload(marker)}), rehash(art, "model.pt2")),
    # a weight marked use_pickle, which torch always unpickles; hash recomputed
    "use_pickle": lambda art, marker: (
        rewrite_archive(art / "model.pt2", _pickled_weight(marker)), rehash(art, "model.pt2")),
    # the malicious sample_inputs with the model's manifest entry deleted (an unlisted file was never checked)
    "deleted_entry": lambda art, marker: (
        rewrite_archive(art / "model.pt2", {"data/sample_inputs/model.pt": payload(marker)}), unlist(art, "model.pt2")),
    # the silent variant: the payload returns the original sample inputs, so the scores stay the same
    "silent": lambda art, marker: (
        rewrite_archive(art / "model.pt2", {"data/sample_inputs/model.pt":
                                            lambda old: pickle.dumps(_Silent(marker, old))}),
        rehash(art, "model.pt2")),
}


@pytest.fixture(scope="module")
def artifact(base_run, tmp_path_factory) -> Path:
    return export_run(base_run, tmp_path_factory.mktemp("trust_artifact") / "artifact")


def copy_artifact(artifact: Path, to: Path) -> Path:
    shutil.copytree(artifact, to)
    return to


@pytest.mark.parametrize("attack", list(CRAFTED))
def test_a_crafted_artifact_is_refused_without_running_its_code(artifact, tmp_path, attack) -> None:
    marker = tmp_path / "marker"
    crafted = copy_artifact(artifact, tmp_path / "crafted")
    CRAFTED[attack](crafted, marker)
    try:  # the attack is live: torch's own loader runs it
        torch.export.load(str(crafted / "model.pt2"))
    except Exception:  # noqa: BLE001, S110 (the non-silent payloads break the load after running)
        pass
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CtlError) as exc:
        Artifact.load(crafted)
    assert_one_line(exc, "model.pt2")
    assert not marker.exists()


@pytest.mark.parametrize(("entry", "needle"), [("../../../etc/hostname", "leaves the folder"),
                                               ("/etc/hostname", "leaves the folder"),
                                               ("id_maps/../../x", "leaves the folder")])
def test_a_manifest_entry_outside_the_folder_is_refused_unread(artifact, tmp_path, entry, needle) -> None:
    crafted = copy_artifact(artifact, tmp_path / "crafted")
    manifest = json.loads((crafted / "manifest.json").read_text())
    manifest["files"][entry] = {"bytes": 1, "sha256": "0" * 64}
    (crafted / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CtlError) as exc:
        Artifact.load(crafted)
    assert_one_line(exc, needle)
    assert "bytes" not in str(exc.value)  # nothing of the outside file (its size) shows


def test_an_unlisted_file_or_a_link_in_the_artifact_is_refused(artifact, tmp_path) -> None:
    crafted = copy_artifact(artifact, tmp_path / "extra")
    (crafted / "notes.txt").write_text("hello")
    with pytest.raises(CtlError) as exc:
        Artifact.load(crafted)
    assert_one_line(exc, "'notes.txt' is not listed")
    linked = copy_artifact(artifact, tmp_path / "linked")
    (linked / "schema.json").unlink()
    (linked / "schema.json").symlink_to(artifact / "schema.json")
    with pytest.raises(CtlError) as exc:
        Artifact.load(linked)
    assert_one_line(exc, "schema.json", "link")


def test_a_signed_artifact_is_verified_and_a_tampered_or_unsigned_one_refused(base_run, artifact, tmp_path) -> None:
    key, other = tmp_path / "key", tmp_path / "other"
    key.write_text("k" * 32 + "\n")
    other.write_text("o" * 32)
    signed = export_run(base_run, tmp_path / "signed", sign_key=key)
    line = (signed / "manifest.sig").read_text().strip()
    expected = hmac.new(b"k" * 32, (signed / "manifest.json").read_bytes(), "sha256").hexdigest()
    assert line == f"hmac-sha256:{expected}"
    assert Artifact.load(signed, verify_key=key).domain == "B"
    with pytest.raises(CtlError) as exc:
        Artifact.load(signed, verify_key=other)
    assert_one_line(exc, "does not match")
    with pytest.raises(CtlError) as exc:
        Artifact.load(artifact, verify_key=key)
    assert_one_line(exc, "is not signed")
    tampered = copy_artifact(signed, tmp_path / "tampered")
    marker = tmp_path / "marker"
    CRAFTED["silent"](tampered, marker)
    with pytest.raises(CtlError) as exc:
        Artifact.load(tampered, verify_key=key)
    assert_one_line(exc, "does not match")
    assert not marker.exists()
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(CtlError) as exc:
        export_run(base_run, tmp_path / "never", sign_key=short)
    assert_one_line(exc, "at least 16")
    assert not (tmp_path / "never").exists()


# --- 3. names cannot escape their folder; 4. no interpolation from user files -----------------------


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "x.parquet", "/tmp/x", "1st"])
def test_a_feature_name_that_is_no_identifier_is_refused_at_schema_load(tmp_path, name) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    schema = log_schema()
    schema["features"][4]["name"] = name if name != "../../x" else f"../../{victim.name}/x"
    source = write_csv(tmp_path / "log.csv", make_log(60))
    out = tmp_path / "sub" / "out"
    with pytest.raises(SpecError) as exc:
        import_dataset(load_spec(write_schema(tmp_path / "s.yaml", schema)), [source], out)
    assert_one_line(exc, "s.yaml: features[4].name: must be letters, digits and _")
    assert not list(victim.iterdir()) and not out.exists()


def test_a_received_schema_with_an_escaping_name_is_refused() -> None:
    good = {"name": "x", "kind": "categorical", "vocab": 3, "dim": 2, "domains": ["A"]}
    with pytest.raises(ValueError, match="feature name '../x' must be letters"):
        Feature(**{**good, "name": "../x", "domains": ("A",)})
    with pytest.raises(ValueError, match="domain name '../B' must be letters"):
        Schema(features=tuple(Feature(n, "categorical", 3, 2, ("A",)) for n in ID_FEATURES),
               domains=("A", "../B"), source="A", n_history=1, n_transfer=1)
    with pytest.raises(CtlError, match="outside"):
        inside(Path("/tmp/folder"), "../x.parquet", "the id map")


def test_a_dataset_name_that_is_no_file_name_is_refused(tmp_path) -> None:
    with pytest.raises(SpecError, match=r"test schema: name: must be letters"):
        parse_spec(log_schema(name="../../etc"), "test schema")


def test_interpolations_in_a_schema_are_kept_as_text(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CTL_TRUST_SECRET", "hunter2")
    text = "${oc.env:CTL_TRUST_SECRET} and \\${x}"
    spec = load_spec(write_schema(tmp_path / "s.yaml", log_schema(description=text)))
    assert spec.description == text
    out = import_dataset(spec, [write_csv(tmp_path / "log.csv", make_log(200))], tmp_path / "out").path
    meta = (out / "meta.yaml").read_text()
    assert "hunter2" not in meta
    assert yaml.safe_load(meta)["schema"]["description"] == text
    # a dataset's provenance.schema (read again by ctl data append) goes through the same parser
    provenance = yaml.safe_load(meta)["provenance"]["schema"]
    assert parse_spec(provenance, "meta.yaml provenance.schema").description == text


def test_interpolations_in_a_run_config_are_never_resolved(base_run, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CTL_TRUST_SECRET", "hunter2")
    run = copy_run(base_run, tmp_path / "run")
    edit_yaml(run / "config.yaml", lambda cfg: cfg["model"]["net"].__setitem__("backbone", "${oc.env:CTL_TRUST_SECRET}"))
    with pytest.raises(CtlError) as exc:
        export_run(run, tmp_path / "artifact")
    assert "hunter2" not in str(exc.value)


# --- 5. one short line for every malformed input --------------------------------------------------------


def test_a_long_request_value_is_cut_in_the_message(artifact, tmp_path) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    requests = requests_from_dataset(manifest["dataset_path"], np.arange(4), with_history=True)
    requests = requests.set_column(requests.column_names.index("domain"), "domain",
                                   pa.array(["x" * 10**6] * 4, pa.string()))
    pq.write_table(requests, tmp_path / "requests.parquet")
    with pytest.raises(CtlError) as exc:
        score_file(artifact, tmp_path / "requests.parquet", tmp_path / "scores.parquet")
    assert_one_line(exc, "'xxxx", "(1,000,002 characters)")
    assert len(str(exc.value)) < 600


def test_csv_labels_true_and_false_are_read_as_the_docs_say(tmp_path) -> None:
    records = make_log(200)
    for record in records:
        record["label"] = {"0": "false", "1": "True"}[record["label"]]
    out = import_dataset(parse_spec(log_schema(), "s"), [write_csv(tmp_path / "log.csv", records)], tmp_path / "out")
    labels = pq.read_table(out.path / "rows.parquet").column("label").to_numpy()
    expected = load_dataset(import_dataset(parse_spec(log_schema(), "s"), [write_csv(tmp_path / "n.csv", make_log(200))],
                                           tmp_path / "numeric").path)
    np.testing.assert_array_equal(labels, pq.read_table(expected.path / "rows.parquet").column("label").to_numpy())
    assert set(labels.tolist()) == {0, 1}


def _set(data: object, key: str, value: object) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        data = data[int(part)] if isinstance(data, list) else data[part]
    if isinstance(data, list):
        data[int(parts[-1])] = value
    else:
        data[parts[-1]] = value


def _rewrite(file: Path, key: str, value: object) -> None:
    if file.suffix == ".json":
        data = json.loads(file.read_text())
        _set(data, key, value)
        file.write_text(json.dumps(data))
    elif file.suffix == ".yaml":
        data = yaml.safe_load(file.read_text())
        _set(data, key, value)
        file.write_text(yaml.safe_dump(data))
    else:  # a checkpoint: a torch file of plain data
        data = torch.load(file, weights_only=True)
        _set(data, key, value)
        torch.save(data, file)


#: what each file is replaced by: deleted, cut in half, or another JSON/YAML value
WHOLE = {"deleted": None, "truncated": "half", "list": b"[]", "mapping": b"{}", "string": b'"a string"'}


def _whole(file: Path, how: str) -> None:
    if WHOLE[how] is None:
        file.unlink()
    elif WHOLE[how] == "half":
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
    else:
        file.write_bytes(WHOLE[how])


def _cases(files: dict[str, list[tuple[str, object]]]) -> list:
    """(file, mutation) pairs: every file replaced as in WHOLE, and each listed field given a wrong type."""
    cases = [(file, how) for file in files for how in WHOLE]
    cases += [(file, (key, value)) for file, fields in files.items() for key, value in fields]
    return [pytest.param(file, how, id=f"{file}:{how if isinstance(how, str) else how[0]}={how if isinstance(how, str) else json.dumps(how[1])}") for file, how in cases]


METRICS_FIELDS = [("dataset", 5), ("dataset_path", []), ("target", {}), ("method", None), ("periods", "x"),
                  ("periods", ["x"]), ("periods.0.period", "x"), ("seed", "x"), ("seed", True), ("model", 1.5)]
CONFIG_FIELDS = [("model", []), ("model.protocol", 5), ("model.net", "x"), ("model.net._target_", 5),
                 ("model.net.backbone", 5), ("model.net.backbone.embed_dim", "x"), ("model.net.backbone.mlp_dims", "x")]
CHECKPOINT_FIELDS = [("state_dict", "x"), ("state_dict", {"model.x": "not a tensor"}), ("state_dict", [])]


def _mutate(folder: Path, file: str, how) -> Path:
    path = folder / file
    if path.parent.is_symlink():  # a base run's checkpoints are its track's: change a copy
        target = path.parent.resolve()
        path.parent.unlink()
        shutil.copytree(target, path.parent)
    if isinstance(how, str):
        _whole(path, how)
    else:
        _rewrite(path, *how)
    return path


def assert_refused_in_one_line(call, file: str, how) -> None:
    try:
        call()
    except CtlError as exc:
        message = str(exc)
    else:
        pytest.fail(f"{file} {how}: accepted")
    assert "\n" not in message and len(message) < 700, message
    assert Path(file).name in message, message
    if not isinstance(how, str):
        assert how[0].split(".")[0] in message, message


def _latest(run: Path) -> str:
    names = sorted((run / "checkpoints").glob("period_*.ckpt"), key=lambda p: int(p.stem.split("_")[1]))
    return f"checkpoints/{names[-1].name}"


@pytest.mark.parametrize(("file", "how"), _cases({"metrics.json": METRICS_FIELDS, "config.yaml": CONFIG_FIELDS,
                                                  "checkpoint": CHECKPOINT_FIELDS}))
def test_export_refuses_every_malformed_run_file_in_one_line(base_run, tmp_path, file, how) -> None:
    run = copy_run(base_run, tmp_path / "run")
    name = _latest(run) if file == "checkpoint" else file
    _mutate(run, name, how)
    assert_refused_in_one_line(lambda: export_run(run, tmp_path / "artifact"), name, how)
    assert not (tmp_path / "artifact").exists()


MANIFEST_FIELDS = [("format", 5), ("inputs", "x"), ("inputs.0", 5), ("inputs.0.dtype", "int8"), ("inputs.0.shape", "x"),
                   ("inputs.0.name", None), ("domain", 5), ("domain", "Z"), ("domain_sequences", 5),
                   ("domain_sequences", [1]), ("files", []), ("files", {"schema.json": "x"}), ("version", "1"),
                   ("dataset_path", 5), ("method", [])]
SCHEMA_FIELDS = [("features", "x"), ("features.0", 5), ("features.0.vocab", "x"), ("features.0.name", "../x"),
                 ("domains", 5), ("n_history", "x"), ("source", "nowhere")]


@pytest.fixture(scope="module")
def requests_file(artifact, tmp_path_factory) -> Path:
    manifest = json.loads((artifact / "manifest.json").read_text())
    path = tmp_path_factory.mktemp("trust_requests") / "requests.parquet"
    dataset = load_dataset(manifest["dataset_path"], validate=False)
    rows = dataset.select([manifest["domain"]], [dataset.schema.test_period])[:8]
    pq.write_table(requests_from_dataset(manifest["dataset_path"], rows, with_history=True), path)
    score_file(artifact, path, path.with_name("scores.parquet"))  # the untouched artifact scores them
    return path


@pytest.mark.parametrize(("file", "how"), _cases({"manifest.json": MANIFEST_FIELDS, "schema.json": SCHEMA_FIELDS,
                                                  "model.pt2": []}))
def test_score_refuses_every_malformed_artifact_file_in_one_line(artifact, requests_file, tmp_path, file, how) -> None:
    crafted = copy_artifact(artifact, tmp_path / "crafted")
    _mutate(crafted, file, how)
    if file != "manifest.json" and (crafted / file).exists():
        rehash(crafted, file)  # the silent variant: only the content itself can refuse it
    assert_refused_in_one_line(lambda: score_file(crafted, requests_file, tmp_path / "scores.parquet"), file, how)
    assert not (tmp_path / "scores.parquet").exists()


EVAL_METRICS_FIELDS = [*METRICS_FIELDS, ("test", "x"), ("test.auc", "x"), ("cost", "x"), ("cost.wall_s", "x"),
                       ("periods.0.auc", "x"), ("tracks", "x")]


@pytest.mark.parametrize(("file", "how"), [c for c in _cases({"metrics.json": EVAL_METRICS_FIELDS, "config.yaml": []})
                                           if c.values[1] != "deleted" and c.values[:2] != ("config.yaml", "mapping")])
def test_eval_refuses_every_malformed_run_file_in_one_line(base_run, tmp_path, file, how) -> None:
    run = copy_run(base_run, tmp_path / "run")
    _mutate(run, file, how)
    if file == "metrics.json" and how in ("list", "mapping", "string"):
        # no run record at all: the folder holds no run, said in one line
        assert_refused_in_one_line(lambda: evaluate([run], ["overall"]), "metrics.json", how)
        return
    assert_refused_in_one_line(lambda: evaluate([run], ["overall"]), file, how)


def test_eval_reads_a_run_without_config_settings(base_run, tmp_path) -> None:
    run = copy_run(base_run, tmp_path / "run")
    (run / "config.yaml").write_text("{}")
    assert evaluate([run], ["overall"]).records["overall"]


@pytest.fixture(scope="module")
def grown(home, base_run):
    """The tiny world continued by one period, and the config of a run that continues ``base_run`` on it."""
    continue_world(make_cfg(home, "model=base", "data.domain=B").data, home, 1, progress=False)

    def config(run: Path):
        cfg = make_cfg(home, "model=base", "data.domain=B", "data.generator.n_transfer=3", f"continue_from={run}")
        return cfg, load_for(cfg.data, cfg.home, progress=False)
    return config


@pytest.mark.parametrize(("file", "how"), _cases({"metrics.json": [("dataset", 5), ("dataset", None)],
                                                  "checkpoint": [*CHECKPOINT_FIELDS, (FIT_KEY, "x"),
                                                                 (f"{FIT_KEY}.identity", []),
                                                                 (f"{FIT_KEY}.identity.config", "x")]}))
def test_continue_from_refuses_every_malformed_run_file_in_one_line(base_run, grown, tmp_path, file, how) -> None:
    run = copy_run(base_run, tmp_path / "run")
    cfg, dataset = grown(run)
    assert continuation_of_run(cfg, dataset, tmp_path / "new").last_period == 5  # the untouched run continues
    name = _latest(run) if file == "checkpoint" else file
    _mutate(run, name, how)
    assert_refused_in_one_line(lambda: continuation_of_run(cfg, dataset, tmp_path / "new"), name, how)
