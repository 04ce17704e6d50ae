"""``ctl export`` / ``ctl score``: artifacts of tiny runs score raw-id requests as the runs scored their test rows.

The reference is always the run's own ``predictions.parquet`` (the training-time model on the
test slice) or the eager model on a hand-changed batch; never the serving code's own helpers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from hydra import compose, initialize_config_module

from ctl.data.batcher import BatchAssembler
from ctl.data.dataset import load_dataset
from ctl.errors import CtlError
from ctl.serve import score as score_module
from ctl.serve.artifact import Artifact
from ctl.serve.export import export_run, load_run_model
from ctl.serve.requests import requests_from_dataset
from ctl.serve.score import score_file
from ctl.training.protocol import run_train

TOLERANCE = 1e-5
HAS_ONNX = all(_spec is not None for _spec in map(__import__("importlib.util").util.find_spec,
                                                  ("onnx", "onnxruntime", "onnxscript")))
FORMATS = ["torch_export",
           pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ONNX, reason="onnx, onnxruntime or onnxscript "
                                                                             "is not installed (pip install "
                                                                             "'ctl[serve]')"))]
CTL = [sys.executable, "-m", "ctl.cli"]


def make_cfg(home: Path, *overrides: str):
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=["data=synthetic_tiny", f"home={home}", "progress=false",
                                                       "print_table=false", *overrides])


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve_home")


@pytest.fixture(scope="module")
def runs(home, tmp_path_factory) -> dict[str, Path]:
    """A base, a CTNet and a joint (MiNet) run on the tiny world's domain B."""
    found = {}
    # MiNet's SIM and ETA keep 3 of the 8 long-sequence events: the top-k retrieval is in its graph
    sizes = {"minet": ("model.size.sim_k=3", "model.size.eta_k=3")}
    for model in ("base", "ctnet", "minet"):
        run_dir = tmp_path_factory.mktemp(f"run_{model}")
        run_train(make_cfg(home, f"model={model}", "data.domain=B", *sizes.get(model, ())), run_dir)
        found[model] = run_dir
    return found


@pytest.fixture(scope="module")
def artifacts(runs, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Artifacts of every run, built on first use."""
    folder = tmp_path_factory.mktemp("artifacts")

    class Lazy(dict):
        def __missing__(self, key: tuple[str, str]) -> Path:
            model, fmt = key
            self[key] = export_run(runs[model], folder / f"{model}-{fmt}", fmt)
            return self[key]

    return Lazy()


def predictions(run_dir: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(run_dir / "predictions.parquet")
    return {name: np.array(table.column(name).to_numpy()) for name in table.column_names}


def write_requests(table: pa.Table, path: Path) -> Path:
    """Parquet as it is; CSV with each history list as space-separated text."""
    if path.suffix == ".csv":
        for name in [n for n in table.column_names if n.startswith("history_")]:
            text = [" ".join(str(v) for v in values) for values in table.column(name).to_pylist()]
            table = table.set_column(table.column_names.index(name), name, pa.array(text, pa.string()))
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def read_scores(path: Path) -> pa.Table:
    return pacsv.read_csv(path) if path.suffix == ".csv" else pq.read_table(path)


def dataset_of(run_dir: Path) -> str:
    return json.loads((run_dir / "metrics.json").read_text())["dataset_path"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", ["base", "ctnet", "minet"])
def test_scores_of_raw_id_requests_equal_the_runs_test_predictions(runs, artifacts, model, fmt, tmp_path) -> None:
    run_dir = runs[model]
    expected = predictions(run_dir)
    requests = write_requests(requests_from_dataset(dataset_of(run_dir), expected["row"], with_history=True),
                              tmp_path / "requests.parquet")
    report = score_file(artifacts[model, fmt], requests, tmp_path / "scores.parquet")
    scores = pq.read_table(report.out)
    np.testing.assert_array_equal(scores.column("row").to_numpy(), expected["row"])
    np.testing.assert_allclose(scores.column("pred").to_numpy(), expected["pred"], atol=TOLERANCE, rtol=0)
    assert report.rows == expected["row"].size and report.history == "in the request"
    assert not any(report.unknown.values())
    manifest = json.loads((artifacts[model, fmt] / "manifest.json").read_text())
    trained = list(range(6)) if model == "base" else [4, 5]  # base: its track, from period 0
    assert manifest["method"] == model and manifest["domain"] == "B" and manifest["periods"] == trained
    assert manifest["checkpoint"] == "period_5.ckpt"
    if model == "minet":  # a joint model reads per-domain sequences: they are among its inputs
        assert any(spec["name"].startswith("seq_") for spec in manifest["inputs"])


def test_histories_looked_up_in_the_dataset_or_a_history_file(runs, artifacts, tmp_path) -> None:
    run_dir = runs["ctnet"]
    expected = predictions(run_dir)
    dataset = load_dataset(dataset_of(run_dir))
    artifact = Artifact.load(artifacts["ctnet", "torch_export"])
    lookup = requests_from_dataset(dataset.path, expected["row"], with_history=False)
    for suffix in (".parquet", ".csv"):
        report = score_file(artifact, write_requests(lookup, tmp_path / f"lookup{suffix}"), tmp_path / f"s{suffix}")
        assert report.history.startswith("looked up in the dataset")
        np.testing.assert_allclose(read_scores(report.out).column("pred").to_numpy(), expected["pred"],
                                   atol=TOLERANCE, rtol=0)

    # a history file in raw ids, and `ts` instead of hist_end: events strictly before ts are visible
    history = dataset.history
    users = np.repeat(np.arange(history.n_users), history.counts().numpy())
    names = np.array(dataset.schema.domains)
    pq.write_table(pa.table({"user_id": users, "item_id": history.item.numpy(), "category_id": history.category.numpy(),
                             "domain": names[history.domain.numpy()], "ts": history.ts.numpy()}),
                   tmp_path / "history.parquet")
    rows = expected["row"]
    ts = dataset.rows["ts"][rows].astype(np.int64)
    by_ts = lookup.drop(["hist_end"]).append_column("ts", pa.array(ts))
    report = score_file(artifact, write_requests(by_ts, tmp_path / "by_ts.parquet"), tmp_path / "by_ts_scores.parquet",
                        history=tmp_path / "history.parquet")
    assert report.history == f"looked up in {tmp_path / 'history.parquet'}"
    # the reference: each row's events before its ts, counted by hand, as hist_end of the dataset's batch
    user_of_row = dataset.rows["user_id"][rows]
    before = np.array([int(np.sum(history.ts.numpy()[users == u] < t)) for u, t in zip(user_of_row, ts, strict=True)])
    columns = {name: values[rows] for name, values in dataset.rows.items()}
    columns["hist_end"] = before
    assembler = BatchAssembler(dataset.schema, history, columns, rows, ())
    batch = assembler.batch(torch.arange(rows.size))
    reference = artifact.score([batch[spec.name] for spec in artifact.inputs])
    np.testing.assert_allclose(pq.read_table(report.out).column("pred").to_numpy(), reference, atol=TOLERANCE, rtol=0)


@pytest.fixture(scope="module")
def mapped_run(home, tmp_path_factory, runs) -> Path:
    """A base run on a copy of the tiny world that has id maps, as an imported dataset does:
    every user, item and category has a raw text id, in an order unlike the ids."""
    source = Path(dataset_of(runs["base"]))
    copy = tmp_path_factory.mktemp("mapped") / "dataset"
    shutil.copytree(source, copy)
    schema = load_dataset(copy, validate=False).schema
    (copy / "id_maps").mkdir()
    for feature, prefix in (("user_id", "user-"), ("item_id", "item/"), ("category_id", "0")):
        n = schema.feature(feature).vocab - 1
        ids = np.arange(1, n + 1)
        raw = np.array([f"{prefix}{(i * 7919) % 100003:05d}" for i in ids], dtype=object)
        pq.write_table(pa.table({"id": ids[::-1].copy(), "raw": raw[::-1].copy()}), copy / "id_maps" / f"{feature}.parquet")
    run_dir = tmp_path_factory.mktemp("run_mapped")
    run_train(make_cfg(home, "model=base", "data.domain=B", f"+data.path={copy}"), run_dir)
    return run_dir


def test_id_maps_translate_raw_ids_and_unknown_ids_score_as_absent(mapped_run, tmp_path) -> None:
    expected = predictions(mapped_run)
    artifact_dir = export_run(mapped_run, tmp_path / "artifact")
    assert sorted(p.name for p in (artifact_dir / "id_maps").iterdir()) == [
        "category_id.parquet", "item_id.parquet", "user_id.parquet"]
    requests = requests_from_dataset(dataset_of(mapped_run), expected["row"], with_history=True)
    assert requests.column("user_id").to_pylist()[0].startswith("user-")
    for suffix in (".parquet", ".csv"):  # the CSV keeps category ids' leading zeros: read as text
        report = score_file(artifact_dir, write_requests(requests, tmp_path / f"r{suffix}"), tmp_path / f"s{suffix}")
        assert not any(report.unknown.values())
        np.testing.assert_allclose(read_scores(report.out).column("pred").to_numpy(), expected["pred"],
                                   atol=TOLERANCE, rtol=0)

    # three users nobody knows: counted, and scored as the model scores the absent user id 0
    users = requests.column("user_id").to_pylist()
    strangers = [0, 5, 9]
    for i in strangers:
        users[i] = f"stranger-{i}"
    changed = requests.set_column(requests.column_names.index("user_id"), "user_id", pa.array(users))
    report = score_file(artifact_dir, write_requests(changed, tmp_path / "strangers.parquet"), tmp_path / "x.parquet")
    assert report.unknown["user_id"] == 3
    assert "user_id 3 of" in "\n".join(report.lines())
    run = load_run_model(mapped_run)
    rows = expected["row"]
    batch = BatchAssembler.from_dataset(run.dataset, rows, ()).batch(torch.arange(rows.size))
    batch["user_id"][strangers] = 0
    with torch.no_grad():
        reference = torch.sigmoid(run.net(batch)).numpy()
    got = pq.read_table(report.out).column("pred").to_numpy()
    np.testing.assert_allclose(got, reference, atol=TOLERANCE, rtol=0)
    # the strangers' scores moved (a tiny world's user rows are near their small init: a small move)
    assert np.abs(got[strangers] - expected["pred"][strangers]).max() > 1e-6


def test_a_changed_artifact_file_is_refused(artifacts, tmp_path) -> None:
    folder = tmp_path / "artifact"
    shutil.copytree(artifacts["base", "torch_export"], folder)
    Artifact.load(folder)
    schema = folder / "schema.json"
    schema.write_text(schema.read_text().replace('"dim": 8', '"dim": 9', 1))
    with pytest.raises(CtlError, match=r"changed after export: schema.json .*sha256|changed after export: schema.json "
                                       r"has \d+ bytes"):
        Artifact.load(folder)
    model = folder / "model.pt2"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    shutil.copy(artifacts["base", "torch_export"] / "schema.json", schema)
    with pytest.raises(CtlError, match=r"changed after export: model.pt2 differs from the file the manifest recorded "
                                       r"\(sha256 mismatch\)"):
        Artifact.load(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(CtlError, match="has no manifest.json"):
        Artifact.load(folder)


def test_bad_requests_are_refused_in_one_line(runs, artifacts, tmp_path) -> None:
    run_dir = runs["base"]
    rows = predictions(run_dir)["row"]
    good = requests_from_dataset(dataset_of(run_dir), rows, with_history=True)
    artifact = Artifact.load(artifacts["base", "torch_export"])

    def refused(table: pa.Table, pattern: str, suffix: str = ".parquet") -> None:
        path = write_requests(table, tmp_path / f"bad{suffix}")
        with pytest.raises(CtlError, match=pattern) as caught:
            score_file(artifact, path, tmp_path / "out.parquet")
        assert "\n" not in str(caught.value)
        assert not (tmp_path / "out.parquet").exists()

    refused(good.drop(["seller_id"]), r"bad.parquet: column 'seller_id' is missing; a request gives every feature")
    refused(good.drop(["history_domain"]), r"column 'history_domain' is missing; a history in the request needs all")
    prices = good.column("price_bucket").to_numpy().astype(np.float64) + 0.5
    refused(good.set_column(good.column_names.index("price_bucket"), "price_bucket", pa.array(prices)),
            r"column 'price_bucket' has type double; feature 'price_bucket' has no id map, so its values are ids")
    items = [str(v) for v in good.column("item_id").to_pylist()]
    items[6] = "shoe"
    refused(good.set_column(good.column_names.index("item_id"), "item_id", pa.array(items)),
            r"bad.csv: column 'item_id', row 7: 'shoe' is not an integer", suffix=".csv")
    domains = good.column("domain").to_pylist()
    domains[2] = "C"
    refused(good.set_column(good.column_names.index("domain"), "domain", pa.array(domains)),
            r"column 'domain', row 3: 'C', but the artifact scores domain B's rows")
    users = good.column("user_id").to_pylist()
    users[4] = None
    refused(good.set_column(good.column_names.index("user_id"), "user_id", pa.array(users, pa.int64())),
            r"column 'user_id', row 5: empty")
    history = good.column("history_domain").to_pylist()
    first = next(i for i, events in enumerate(history) if events)
    history[first] = ["Z", *history[first][1:]]
    refused(good.set_column(good.column_names.index("history_domain"), "history_domain",
                            pa.array(history, pa.list_(pa.string()))),
            rf"column 'history_domain', row {first + 1}: 'Z' is not one of the domains")
    with pytest.raises(CtlError, match=r"expected a .parquet or .csv file"):
        score_file(artifact, write_requests(good, tmp_path / "ok.parquet"), tmp_path / "out.json")

    # without an id map, an id outside the vocabulary is unknown: counted, scored as the absent id 0
    items = good.column("item_id").to_numpy().copy()
    items[[1, 2]] = [10**9, -4]
    outside = good.set_column(good.column_names.index("item_id"), "item_id", pa.array(items))
    report = score_file(artifact, write_requests(outside, tmp_path / "outside.parquet"), tmp_path / "o.parquet")
    assert report.unknown["item_id"] == 2 and "item_id 2 of 180 values" in "\n".join(report.lines())
    items[[1, 2]] = 0
    absent = good.set_column(good.column_names.index("item_id"), "item_id", pa.array(items))
    reference = score_file(artifact, write_requests(absent, tmp_path / "absent.parquet"), tmp_path / "a.parquet")
    assert reference.unknown["item_id"] == 0
    np.testing.assert_array_equal(pq.read_table(report.out).column("pred").to_numpy(),
                                  pq.read_table(reference.out).column("pred").to_numpy())


def test_export_refusals(runs, tmp_path, monkeypatch) -> None:
    with pytest.raises(CtlError, match="format='pt' is unknown"):
        export_run(runs["base"], tmp_path / "a", "pt")
    (tmp_path / "taken").mkdir()
    with pytest.raises(CtlError, match="already exists"):
        export_run(runs["base"], tmp_path / "taken")
    with pytest.raises(CtlError, match="lacks metrics.json or config.yaml"):
        export_run(tmp_path / "taken", tmp_path / "b")
    def fails(*args, **kwargs):
        raise RuntimeError("Could not guard on data-dependent expression\n(the exporter's long report)")

    with monkeypatch.context() as patch:
        patch.setattr(torch.export, "export", fails)
        with pytest.raises(CtlError, match=r"^BaseModel cannot be exported as torch_export \(RuntimeError: Could not "
                                           r"guard on data-dependent expression\); CTL_DEBUG=1 shows"):
            export_run(runs["base"], tmp_path / "d")
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.export-*"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the serve extra were not installed
    with pytest.raises(CtlError, match=r"needs ONNX Runtime, which is not installed: pip install 'ctl\[serve\]'"):
        export_run(runs["base"], tmp_path / "c", "onnx")
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.export-*"))


def test_loading_an_artifact_needs_no_hydra_and_no_training_code(artifacts) -> None:
    folder = artifacts["ctnet", "torch_export"]
    code = ("import sys; from ctl.serve.score import score_file; from ctl.serve.artifact import Artifact; "
            f"Artifact.load({str(folder)!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf', 'pytorch_lightning') "
            "or m.startswith(('ctl.training', 'ctl.models'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_ctl_export_and_score_commands_reproduce_the_demo_predictions(runs, tmp_path) -> None:
    env = dict(os.environ, COLUMNS="200")
    env.pop("CTL_COMMAND", None)

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CTL, *args], capture_output=True, text=True, env=env, timeout=300, check=False)

    run_dir = runs["ctnet"]
    done = ctl("export", str(run_dir), "--out", str(tmp_path / 'artifact'))
    assert done.returncode == 0, done.stderr
    assert "torch_export: ctnet on domain B, period_5.ckpt" in done.stdout
    expected = predictions(run_dir)
    requests = write_requests(requests_from_dataset(dataset_of(run_dir), expected["row"], with_history=True),
                              tmp_path / "requests.csv")
    done = ctl("score", str(tmp_path / "artifact"), str(requests), "--out", str(tmp_path / 'scores.csv'))
    assert done.returncode == 0, done.stderr
    assert f"scored {expected['row'].size} request rows" in done.stdout and "unknown ids: none" in done.stdout
    scores = pacsv.read_csv(tmp_path / "scores.csv")
    np.testing.assert_allclose(scores.column("pred").to_numpy(), expected["pred"], atol=TOLERANCE, rtol=0)
    assert "history_item_id" not in scores.column_names and "row" in scores.column_names

    refused = ctl("score", str(tmp_path / "artifact"), str(requests), "--out", "x.parquet", "--batch", "4")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: No such option: --batch (Possible options: --batch-rows) (see ctl score --help)"]
    assert not Path("x.parquet").exists()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_scoring_block_by_block_writes_the_bytes_of_one_block(runs, artifacts, tmp_path, suffix, monkeypatch) -> None:
    # graph calls of 50 rows: blocks of 37 rows straddle them, as 65,536-row blocks would 4,096-row calls
    monkeypatch.setattr(score_module, "SCORE_CALL_ROWS", 50)
    run_dir = runs["ctnet"]
    expected = predictions(run_dir)
    dataset = load_dataset(dataset_of(run_dir))
    artifact = Artifact.load(artifacts["ctnet", "torch_export"])
    rows = expected["row"]
    # by ts, so every block searches the history's keys; a request file of several Parquet row groups
    lookup = requests_from_dataset(dataset.path, rows, with_history=False).drop(["hist_end"])
    lookup = lookup.append_column("ts", pa.array(dataset.rows["ts"][rows].astype(np.int64)))
    path = tmp_path / f"requests{suffix}"
    if suffix == ".parquet":
        pq.write_table(lookup, path, row_group_size=50)
    else:
        write_requests(lookup, path)
    assert rows.size > 3 * 50
    whole = score_file(artifact, path, tmp_path / f"whole{suffix}", batch_rows=rows.size + 1)
    seen = []
    blocks = score_file(artifact, path, tmp_path / f"blocks{suffix}", batch_rows=37,
                        progress=lambda done, total: seen.append(done))
    assert blocks.out.read_bytes() == whole.out.read_bytes()
    assert seen == [*range(37, rows.size, 37), rows.size]
    assert blocks.rows == whole.rows == rows.size
    assert read_scores(blocks.out).column("row").to_pylist() == rows.tolist()


def test_a_refusal_in_a_later_block_names_the_file_row(runs, artifacts, tmp_path) -> None:
    run_dir = runs["base"]
    rows = predictions(run_dir)["row"][:20]
    table = requests_from_dataset(dataset_of(run_dir), rows, with_history=False)
    hist_end = table.column("hist_end").to_numpy().copy()
    hist_end[13] = -1  # file row 14, in the third block of 5 rows
    path = write_requests(table.set_column(table.column_names.index("hist_end"), "hist_end", pa.array(hist_end)),
                          tmp_path / "requests.parquet")
    with pytest.raises(CtlError, match=r"requests.parquet: column 'hist_end', row 14: -1 events visible"):
        score_file(artifacts["base", "torch_export"], path, tmp_path / "out.parquet", batch_rows=5)
    assert not (tmp_path / "out.parquet").exists()
