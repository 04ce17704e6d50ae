"""A serving artifact on disk, and loading it: the exported graph, its inputs, schema and id maps.

An artifact folder holds

* ``model.pt2`` (``format: torch_export``, a ``torch.export`` ExportedProgram) or ``model.onnx``
  (``format: onnx``, run with ONNX Runtime): a graph that maps the model's input tensors, each
  with a dynamic first (batch) dimension, to click probabilities float32 ``[B]``;
* ``schema.json``: the dataset's feature schema (:meth:`ctl.data.schema.Schema.to_dict`);
* ``id_maps/<feature>.parquet`` (imported datasets): ``id`` and ``raw`` of every dense feature,
  as the importer wrote them, so raw ids of requests map to the ids the model was trained on;
* ``manifest.json``, written last: the format, the run's method, domains, periods, dataset
  fingerprint and path, the graph's inputs (name, dtype, shape with -1 for the batch), and the
  size and sha256 of every other file. An artifact whose files differ from it is refused.

Loading needs torch (and onnxruntime for ``onnx``) and this package's data schema only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ctl.data.schema import Schema
from ctl.errors import CtlError
from ctl.io import MANIFEST_FILE, manifest_problem

FORMATS: tuple[str, ...] = ("torch_export", "onnx")
MODEL_FILES: dict[str, str] = {"torch_export": "model.pt2", "onnx": "model.onnx"}
SCHEMA_FILE = "schema.json"
ID_MAPS_DIR = "id_maps"
#: the manifest's layout version; a reader refuses another
ARTIFACT_VERSION = 1
#: numpy dtype of every input dtype the graphs take
INPUT_DTYPES: dict[str, np.dtype] = {"int64": np.dtype(np.int64), "bool": np.dtype(np.bool_),
                                     "float32": np.dtype(np.float32)}
SERVE_EXTRA_HINT = "pip install 'ctl[serve]' (onnx, onnxruntime, onnxscript)"


@dataclass(frozen=True)
class InputSpec:
    """One input tensor of the graph: its batch key, dtype and shape (-1: the batch dimension)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def as_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        return cls(name=str(d["name"]), dtype=str(d["dtype"]), shape=tuple(int(n) for n in d["shape"]))


def require_onnxruntime(what: str):
    """The ``onnxruntime`` module, or a one-line refusal saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise CtlError(f"{what} needs ONNX Runtime, which is not installed: {SERVE_EXTRA_HINT}") from None
    return onnxruntime


class TorchRunner:
    """Runs a saved ``torch.export`` program."""

    def __init__(self, path: Path) -> None:
        self.module = torch.export.load(str(path)).module()

    def __call__(self, inputs: list[torch.Tensor]) -> np.ndarray:
        with torch.inference_mode():
            return self.module(*inputs).numpy()


class OnnxRunner:
    """Runs an ONNX graph on ONNX Runtime's CPU provider with torch's thread count."""

    def __init__(self, path: Path, names: list[str]) -> None:
        ort = require_onnxruntime(f"the ONNX artifact {path.parent}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = names

    def __call__(self, inputs: list[torch.Tensor]) -> np.ndarray:
        feed = {name: tensor.numpy() for name, tensor in zip(self.names, inputs, strict=True)}
        return self.session.run(None, feed)[0]


@dataclass
class Artifact:
    """A loaded, verified artifact. ``score(inputs)`` returns click probabilities float32 ``[B]``.

    Example::

        artifact = Artifact.load("serving/ctnet-B")
        probabilities = artifact.score([batch[spec.name] for spec in artifact.inputs])
    """

    path: Path
    manifest: dict
    schema: Schema
    inputs: tuple[InputSpec, ...]
    runner: TorchRunner | OnnxRunner

    @property
    def format(self) -> str:
        return str(self.manifest["format"])

    @property
    def domain(self) -> str:
        """The domain whose rows the model scores (a run's target)."""
        return str(self.manifest["domain"])

    @property
    def domain_sequences(self) -> tuple[str, ...]:
        """Domains whose own sequences (``seq_<domain>_*``) the graph reads (joint models)."""
        return tuple(self.manifest.get("domain_sequences", ()))

    @classmethod
    def load(cls, path: Path | str) -> Artifact:
        """Verify ``path`` against its manifest and load it; refuses a changed or foreign folder in one line."""
        path = Path(path).expanduser()
        manifest = read_manifest(path)
        problem = manifest_problem(path)
        if problem is not None:
            raise CtlError(f"artifact {path} was changed after export: {problem}; export it again (ctl export)")
        schema = Schema.from_dict(json.loads((path / SCHEMA_FILE).read_text()))
        inputs = tuple(InputSpec.from_dict(d) for d in manifest["inputs"])
        model_file = path / MODEL_FILES[manifest["format"]]
        if manifest["format"] == "onnx":
            runner: TorchRunner | OnnxRunner = OnnxRunner(model_file, [spec.name for spec in inputs])
        else:
            runner = TorchRunner(model_file)
        return cls(path=path, manifest=manifest, schema=schema, inputs=inputs, runner=runner)

    def id_map(self, feature: str) -> pa.Array | None:
        """Raw text of the ids 1..n of a dense feature (``raw[id - 1]``), or None if it has no id map."""
        file = self.path / ID_MAPS_DIR / f"{feature}.parquet"
        if not file.is_file():
            return None
        table = pq.read_table(file).sort_by("id")
        ids = table.column("id").to_numpy()
        if not np.array_equal(ids, np.arange(1, len(ids) + 1)):
            raise CtlError(f"{file}: ids must run 1..{len(ids)} without gaps, as the importer writes them")
        return table.column("raw").combine_chunks().cast(pa.string())

    def score(self, inputs: list[torch.Tensor]) -> np.ndarray:
        """Click probabilities float32 ``[B]`` of the graph's input tensors (in :attr:`inputs` order)."""
        for spec, tensor in zip(self.inputs, inputs, strict=True):
            if str(tensor.dtype).removeprefix("torch.") != spec.dtype or tensor.shape[1:] != spec.shape[1:]:
                raise CtlError(f"input {spec.name!r} is {tensor.dtype!s} {tuple(tensor.shape)}; the artifact "
                               f"takes {spec.dtype} {spec.shape} (-1: any batch size)")
        return np.asarray(self.runner(inputs), dtype=np.float32)


def read_manifest(path: Path) -> dict:
    """The manifest of the artifact folder ``path``; refuses a folder that is none."""
    file = path / MANIFEST_FILE
    if not path.is_dir():
        raise CtlError(f"{path} is not a folder; pass the folder ctl export wrote")
    if not file.is_file():
        raise CtlError(f"{path} has no {MANIFEST_FILE}: not an artifact written by ctl export (or it never finished)")
    try:
        manifest = json.loads(file.read_text())
    except ValueError as exc:
        raise CtlError(f"{file} is not valid JSON ({exc}); export the run again") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "ctl-artifact":
        raise CtlError(f"{file} is not the manifest of a ctl artifact (no \"kind\": \"ctl-artifact\")")
    if manifest.get("version") != ARTIFACT_VERSION:
        raise CtlError(f"{file} has artifact version {manifest.get('version')}; this ctl reads version "
                       f"{ARTIFACT_VERSION}: export the run again with this ctl")
    if manifest.get("format") not in FORMATS:
        raise CtlError(f"{file}: format {manifest.get('format')!r} is not one of {', '.join(FORMATS)}")
    return manifest
