"""``ctl export``: a run's latest model as a serving artifact (:mod:`ctl.serve.artifact`).

The model is rebuilt by the protocol that trained the run
(:func:`ctl.training.protocol.rebuild_trained_model`), from the run's own ``config.yaml`` and the
weights of its last period (for CTNet, the frozen source tower of that period is part of them), in
eval mode, and traced on some of the dataset's test rows. The inputs of the graph are the batch
keys the model reads, found by running it once; the graph is checked to give the eager model's
probabilities on those rows before anything is written. Files go into a hidden
staging folder that is renamed to ``out`` once the manifest is written.
"""

from __future__ import annotations

import logging
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ctl.data.batch import Batch, DomainView
from ctl.data.batcher import BatchAssembler
from ctl.data.dataset import Dataset, load_dataset
from ctl.data.id_maps import ID_MAPS_DIR
from ctl.errors import CtlError, shorten
from ctl.io import (
    MANIFEST_FILE,
    atomic_write_json,
    atomic_write_text,
    fsync_path,
    manifest_entries,
    rename_into_place,
)
from ctl.received import field, mapping, read_json, read_yaml
from ctl.serve.artifact import (
    ARTIFACT_VERSION,
    FORMATS,
    MODEL_FILES,
    SCHEMA_FILE,
    SIGNATURE_FILE,
    Artifact,
    InputSpec,
    manifest_signature,
    read_key,
    require_onnxruntime,
    verify_signature,
)
from ctl.training.protocol import rebuild_trained_model
from ctl.training.protocols.common import FinishedRun

#: test rows the model is traced and checked on
TRACE_ROWS = 64
#: largest difference allowed between the exported graph's and the eager model's probabilities
EXPORT_TOLERANCE = 1e-5


class Probabilities(torch.nn.Module):
    """A ctl model as a graph of plain tensors: the inputs named by ``keys`` -> click probabilities [B].

    ``view``, if given, is applied to the batch first (the source model reads target rows as its
    own domain does: see :class:`ctl.data.batch.DomainView`).
    """

    def __init__(self, model: torch.nn.Module, keys: tuple[str, ...], view: DomainView | None = None) -> None:
        super().__init__()
        self.model = model
        self.keys = keys
        self.view = view

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.keys, inputs, strict=True))
        if self.view is not None:
            batch = self.view(batch)
        out = self.model(batch)
        logits = out["logits"] if isinstance(out, dict) else out
        return torch.sigmoid(logits).float()


class _KeyRecorder(dict):
    """A batch that notes which keys are read, in the order first read."""

    def __init__(self, batch: Batch) -> None:
        super().__init__(batch)
        self.read: list[str] = []

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.read:
            self.read.append(key)
        return super().__getitem__(key)

    def get(self, key: str, default=None):
        return self[key] if key in self else default  # noqa: SIM401 (dict.get would bypass the recording)


@dataclass
class RunModel:
    """A run's latest model, ready to trace: the eval-mode net and what the manifest says of it."""

    net: torch.nn.Module
    view: DomainView | None
    dataset: Dataset
    domain: str
    checkpoint: Path
    metrics: dict
    domain_sequences: tuple[str, ...]
    periods: tuple[int, ...] = ()


def read_run(run_dir: Path) -> tuple[FinishedRun, dict]:
    """The finished run in ``run_dir`` as its protocol reads it, and its ``metrics.json`` record, each field
    export reads checked (``config.yaml`` read as plain YAML: nothing in it is resolved or instantiated);
    refuses a malformed file in one line naming it and the field."""
    metrics_file, config_file = run_dir / "metrics.json", run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise CtlError(f"{run_dir} is not a folder; pass a run folder written by ctl train")
    if not metrics_file.is_file() or not config_file.is_file():
        raise CtlError(f"{run_dir} lacks metrics.json or config.yaml: not a finished run of ctl train")
    metrics = mapping(read_json(metrics_file, "export"), metrics_file)
    if metrics.get("kind") != "run":
        raise CtlError(f"{metrics_file} is not a run's record (\"kind\": \"run\"); pass a run folder, not a track "
                       "or sweep folder (export one job of a sweep: its own folder)")
    for key in ("method", "model", "target", "dataset", "dataset_path"):
        field(metrics, key, str, metrics_file)
    field(metrics, "source", (str, type(None)), metrics_file)
    field(metrics, "seed", int, metrics_file)
    periods = field(metrics, "periods", list, metrics_file)
    for i, row in enumerate(periods):
        field(mapping(row, metrics_file, f"periods[{i}]"), "period", int, f"{metrics_file}: periods[{i}]")
    tracks = mapping(metrics.get("tracks", {}), metrics_file, "tracks")
    run = FinishedRun(folder=run_dir, config=mapping(read_yaml(config_file, "export"), config_file),
                      periods=tuple(int(r["period"]) for r in periods),
                      tracks={name: path for name, path in tracks.items() if isinstance(path, str)})
    return run, metrics


def load_run_model(run_dir: Path) -> RunModel:
    """The latest model of the run in ``run_dir``, rebuilt by the protocol that trained it, in eval mode.

    The run folder may come from someone else: its model is built from ctl's own classes only
    (:mod:`ctl.models.registry`), its checkpoint read as tensors only.
    """
    run, metrics = read_run(run_dir)
    dataset_path = Path(metrics["dataset_path"])
    if not (dataset_path / "meta.yaml").is_file():
        raise CtlError(f"the run's dataset {dataset_path} (metrics.json dataset_path) is gone; the artifact "
                       "needs its schema, id maps and test rows: regenerate or import it there")
    dataset = load_dataset(dataset_path, validate=False)
    if dataset.fingerprint() != metrics["dataset"]:
        raise CtlError(f"the dataset at {dataset_path} (fingerprint {dataset.fingerprint()}) is not the one the "
                       f"run trained on ({shorten(metrics['dataset'])}); it was replaced after the run")
    domain = metrics["target"]
    model = rebuild_trained_model(run, dataset.schema, domain)
    sequences = getattr(model.net, "domain_sequences", None)
    loaded = RunModel(net=model.net, view=model.view, dataset=dataset, domain=domain, checkpoint=model.checkpoint,
                      metrics=metrics, domain_sequences=tuple(sequences()) if callable(sequences) else (),
                      periods=run.periods)
    for other in model.domains:
        if other != domain:
            run_head(loaded, other)
    return loaded


def run_head(run: RunModel, domain: str) -> None:
    """Score some test rows of ``domain`` with the eager model, once.

    The graph of a model with a head per domain runs every head on every row (no branch on data),
    while the eager model on the run's rows runs its domain's head alone: the other heads' caches
    (ETA's item codes, :mod:`ctl.models.blocks.eta`), which a graph reads as they stand, are filled
    from the trained weights here.
    """
    with torch.no_grad():
        run.net(_test_batch(run, domain))


def trace_batch(run: RunModel, n_rows: int = TRACE_ROWS) -> Batch:
    """A batch of the first ``n_rows`` test rows of the run's domain (all domains' rows if it has none)."""
    return _test_batch(run, run.domain, n_rows)


def _test_batch(run: RunModel, domain: str, n_rows: int = TRACE_ROWS) -> Batch:
    dataset = run.dataset
    rows = dataset.select([domain], [dataset.schema.test_period])
    if rows.size == 0:
        rows = np.arange(dataset.n_rows)
    rows = rows[:n_rows]
    return BatchAssembler.from_dataset(dataset, rows, run.domain_sequences).batch(torch.arange(rows.size))


def graph_inputs(net: torch.nn.Module, batch: Batch, view: DomainView | None = None) -> Probabilities:
    """``net`` (in eval mode) wrapped to take exactly the batch keys it reads, checked against the whole batch."""
    recorder = _KeyRecorder(view(batch) if view is not None else batch)
    with torch.no_grad():
        out = net(recorder)
        expected = torch.sigmoid(out["logits"] if isinstance(out, dict) else out).float()
        wrapped = Probabilities(net, tuple(recorder.read), view)
        got = wrapped(*(batch[k] for k in wrapped.keys))
    if not torch.equal(got, expected):
        raise CtlError(f"{type(net).__name__} reads batch keys beyond those it was seen to read (through a "
                       "copy of the batch?): its inputs cannot be found by running it, so it cannot be exported")
    return wrapped


def export_graph(wrapped: Probabilities, batch: Batch, fmt: str, file: Path) -> None:
    """Write ``wrapped`` as a graph of ``fmt`` to ``file``, traced on ``batch``, its first dimension dynamic."""
    args = tuple(batch[k] for k in wrapped.keys)
    try:
        (_export_onnx if fmt == "onnx" else _export_torch)(wrapped, args, file)
    except CtlError:
        raise
    except Exception as exc:  # the exporter has many error types: name the model and the first line
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CtlError(f"{type(wrapped.model).__name__} cannot be exported as {fmt} ({type(exc).__name__}: "
                       f"{first.strip()}); CTL_DEBUG=1 shows the exporter's whole report") from exc


def _export_torch(wrapped: Probabilities, args: tuple[torch.Tensor, ...], file: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(wrapped, args, dynamic_shapes=(tuple({0: batch} for _ in args),))
    torch.export.save(program, str(file))


def _export_onnx(wrapped: Probabilities, args: tuple[torch.Tensor, ...], file: Path) -> None:
    require_onnxruntime("--format onnx")
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's translation library)
    except ImportError:
        raise CtlError("--format onnx needs onnx and onnxscript, which are not installed: "
                       "pip install 'ctl[serve]'") from None
    batch = torch.export.Dim("batch", min=1)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    # the exporter's chatter (optional torchvision ops, its renaming of the one batch axis) says nothing
    # about this graph; real problems raise
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapped, args, dynamic_shapes=(tuple({0: batch} for _ in args),),
                                        input_names=list(wrapped.keys), output_names=["probability"], dynamo=True,
                                        verbose=False)
    finally:
        exporter_log.setLevel(level)
    if program is None:  # the dynamo exporter always returns its program; None is the legacy one's
        raise CtlError(f"torch.onnx.export returned no program for {file}")
    program.save(str(file))


def export_run(run_dir: Path | str, out: Path | str, fmt: str = "torch_export",
               sign_key: Path | str | None = None) -> Path:
    """Write the artifact of the run in ``run_dir`` to the new folder ``out``; returns ``out``.

    With ``sign_key`` (a file holding a secret key), ``manifest.sig`` holds the HMAC-SHA256 of the
    manifest under that key, which ``ctl score ... --verify-key `` checks.

    Raises:
        CtlError: an unknown format, an existing ``out``, a folder that is no finished run, a run
            whose dataset is gone or replaced, or a graph whose probabilities differ from the
            eager model's by more than :data:`EXPORT_TOLERANCE`.
    """
    run_dir, out = Path(run_dir).expanduser(), Path(out).expanduser()
    if fmt not in FORMATS:
        raise CtlError(f"format={fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    if out.exists():
        raise CtlError(f"out={out} already exists; choose a new folder")
    key = read_key(Path(sign_key).expanduser(), "sign_key") if sign_key is not None else None
    run = load_run_model(run_dir)
    batch = trace_batch(run)
    wrapped = graph_inputs(run.net, batch, run.view)
    args = tuple(batch[k] for k in wrapped.keys)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        export_graph(wrapped, batch, fmt, staging / MODEL_FILES[fmt])
        atomic_write_json(staging / SCHEMA_FILE, run.dataset.schema.to_dict())
        maps = run.dataset.path / ID_MAPS_DIR
        if maps.is_dir():
            # the id maps only: the manifest lists every file, and a reader refuses any it does not list
            shutil.copytree(maps, staging / ID_MAPS_DIR, ignore=shutil.ignore_patterns(".*"))
        metrics = run.metrics
        inputs = [InputSpec(k, str(batch[k].dtype).removeprefix("torch."), (-1, *batch[k].shape[1:]))
                  for k in wrapped.keys]
        manifest = {
            "kind": "ctl-artifact",
            "version": ARTIFACT_VERSION,
            "format": fmt,
            "method": metrics["method"],
            "model": metrics["model"],
            "source": metrics.get("source"),
            "domain": run.domain,
            "seed": metrics["seed"],
            "periods": list(run.periods),
            "checkpoint": run.checkpoint.name,
            "test_period": run.dataset.schema.test_period,
            "dataset": metrics["dataset"],
            "dataset_path": str(run.dataset.path),
            "run": str(run_dir.resolve()),
            "domain_sequences": list(run.domain_sequences),
            "inputs": [spec.as_dict() for spec in inputs],
            "torch": torch.__version__,
            "files": manifest_entries(staging),
        }
        atomic_write_json(staging / MANIFEST_FILE, manifest)
        if key is not None:
            atomic_write_text(staging / SIGNATURE_FILE, manifest_signature(staging, key) + "\n")
        _check_artifact(staging, wrapped, args, key)
        fsync_path(staging)
        rename_into_place(staging, out, "another export")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_artifact(folder: Path, wrapped: Probabilities, args: tuple[torch.Tensor, ...],
                    key: bytes | None = None) -> None:
    """Refuse an artifact whose graph, loaded back as ``ctl score`` loads it, disagrees with the eager
    model on the traced rows."""
    with torch.no_grad():
        expected = wrapped(*args).numpy()
    if key is not None:
        verify_signature(folder, key)
    got = Artifact.load(folder).score(list(args))
    worst = float(np.max(np.abs(got - expected)))
    if not worst <= EXPORT_TOLERANCE:
        raise CtlError(f"the exported graph's probabilities differ from the model's by up to {worst:.3g} "
                       f"(> {EXPORT_TOLERANCE}) on the dataset's test rows; the artifact was not written")
