"""Every method of ``ctl.methods`` exports with torch.export and its artifact reproduces the run's test predictions.

Each method trains once on the tiny world's domain B (the production tracks shared through one
home), is exported through the protocol registry that trained it, and scores its test rows as
raw-id requests with their histories. The reference is the run's own ``predictions.parquet``,
written by the training-time model; never the serving code's own helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_module

from ctl.errors import CtlError
from ctl.methods import ADDED_METHODS, BASE, METHOD_ORDER
from ctl.serve.dataset_requests import requests_from_dataset
from ctl.serve.export import export_run
from ctl.serve.score import score_file
from ctl.training.protocol import run_train

TOLERANCE = 1e-5
#: MiNet's SIM and ETA keep 3 of the tiny world's 8 long-sequence events: the top-k retrieval is in its graph
SIZES: dict[str, tuple[str, ...]] = {"minet": ("model.size.sim_k=3", "model.size.eta_k=3")}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export_all_home")


def train(home: Path, method: str, run_dir: Path) -> Path:
    with initialize_config_module(config_module="ctl.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=synthetic_tiny", f"home={home}", "progress=false",
                                                      "print_table=false", f"model={method}", "data.domain=B",
                                                      *SIZES.get(method, ())])
    run_train(cfg, run_dir)
    return run_dir


def test_the_methods_are_base_the_papers_fifteen_and_the_added_five() -> None:
    # the reference (base), the paper's fifteen other rows of Table 2, then the five added since
    assert METHOD_ORDER[0] == BASE and METHOD_ORDER[-len(ADDED_METHODS):] == ADDED_METHODS
    assert len(set(METHOD_ORDER)) == len(METHOD_ORDER) == 1 + 15 + 5


@pytest.mark.parametrize("method", METHOD_ORDER)
def test_every_method_exports_and_reproduces_its_test_predictions(home, method, tmp_path) -> None:
    run_dir = train(home, method, tmp_path / "run")
    artifact = export_run(run_dir, tmp_path / "artifact", "torch_export")
    expected = pq.read_table(run_dir / "predictions.parquet")
    rows = expected.column("row").to_numpy()
    dataset_path = json.loads((run_dir / "metrics.json").read_text())["dataset_path"]
    requests = tmp_path / "requests.parquet"
    pq.write_table(requests_from_dataset(dataset_path, rows, with_history=True), requests)
    report = score_file(artifact, requests, tmp_path / "scores.parquet")
    scores = pq.read_table(report.out)
    np.testing.assert_array_equal(scores.column("row").to_numpy(), rows)
    np.testing.assert_allclose(scores.column("pred").to_numpy(), expected.column("pred").to_numpy(),
                               atol=TOLERANCE, rtol=0)
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["method"] == method and manifest["domain"] == "B"
    assert rows.size > 0 and not np.allclose(expected.column("pred").to_numpy(), 0.5)


def test_a_run_of_an_unknown_protocol_is_refused_naming_its_config(home, tmp_path) -> None:
    run_dir = train(home, "base", tmp_path / "run")
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("protocol: track", "protocol: pickle"))
    with pytest.raises(CtlError, match=r"config\.yaml: model\.protocol='pickle' is unknown; expected one of track, "):
        export_run(run_dir, tmp_path / "artifact")
    assert not (tmp_path / "artifact").exists()
