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
  size and sha256 of every other file. An artifact whose files differ from it, or that holds a
  file it does not list, is refused;
* ``manifest.sig`` (optional, ``ctl export ... --sign-key FILE``): the HMAC-SHA256 of
  ``manifest.json`` under a shared key; ``ctl score ... --verify-key FILE`` refuses an artifact
  without it or whose manifest it does not match.

An artifact may come from someone else: nothing in it is unpickled (:mod:`ctl.serve.pt2` loads
the program), no name in it leaves its folder, and every field is checked before use
(``docs/security.md``). Loading needs torch (and onnxruntime for ``onnx``) and this package's
data schema only.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ctl.data.id_maps import raw_values
from ctl.data.schema import NAME_PATTERN, Schema
from ctl.errors import CtlError, cut, shorten
from ctl.io import MANIFEST_FILE, manifest_problem
from ctl.received import field, mapping, read_json
from ctl.serve.pt2 import load_program

FORMATS: tuple[str, ...] = ("torch_export", "onnx")
MODEL_FILES: dict[str, str] = {"torch_export": "model.pt2", "onnx": "model.onnx"}
SCHEMA_FILE = "schema.json"
SIGNATURE_FILE = "manifest.sig"
#: what a signature file starts with (the algorithm), before the hex digest
SIGNATURE_PREFIX = "hmac-sha256:"
#: the shortest signing key accepted, in bytes
MIN_KEY_BYTES = 16
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
    def from_dict(cls, d: object, where: str = "inputs") -> InputSpec:
        """An input of a manifest's ``inputs``; ``where`` names it (``manifest.json: inputs[0]``) in refusals."""
        d = mapping(d, where)
        name, dtype = field(d, "name", str, where), field(d, "dtype", str, where)
        if dtype not in INPUT_DTYPES:
            raise CtlError(f"{where}: dtype {shorten(dtype)} is not one of {', '.join(INPUT_DTYPES)}")
        shape = field(d, "shape", list, where)
        if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n >= -1 for n in shape):
            raise CtlError(f"{where}: shape must be a list of sizes (-1: the batch), got {shorten(shape)}")
        return cls(name=name, dtype=dtype, shape=tuple(shape))


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
        self.module = load_program(path).module()

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
    def load(cls, path: Path | str, verify_key: Path | str | None = None) -> Artifact:
        """Verify ``path`` against its manifest (and its signature, given ``verify_key``) and load it;
        refuses a changed, unsigned or foreign folder in one line."""
        path = Path(path).expanduser()
        if verify_key is not None:
            verify_signature(path, read_key(Path(verify_key).expanduser(), "verify_key"))
        manifest = read_manifest(path)
        problem = manifest_problem(path, every_file=True, unlisted=(SIGNATURE_FILE,))
        if problem is not None:
            raise CtlError(f"artifact {path} was changed after export: {problem}; export it again (ctl export)")
        model_name = MODEL_FILES[manifest["format"]]
        unlisted = [name for name in (model_name, SCHEMA_FILE) if name not in manifest["files"]]
        if unlisted:
            raise CtlError(f"{path / MANIFEST_FILE}: files does not list {unlisted[0]}; not an artifact of ctl export")
        schema = read_schema(path / SCHEMA_FILE)
        unknown = [d for d in (manifest["domain"], *manifest["domain_sequences"]) if d not in schema.domains]
        if unknown:
            raise CtlError(f"{path / MANIFEST_FILE}: domain {shorten(unknown[0])} is not one of the schema's "
                           f"{list(schema.domains)}")
        inputs = tuple(InputSpec.from_dict(d, f"{path / MANIFEST_FILE}: inputs[{i}]")
                       for i, d in enumerate(manifest["inputs"]))
        model_file = path / model_name
        if manifest["format"] == "onnx":
            runner: TorchRunner | OnnxRunner = OnnxRunner(model_file, [spec.name for spec in inputs])
        else:
            runner = TorchRunner(model_file)
        return cls(path=path, manifest=manifest, schema=schema, inputs=inputs, runner=runner)

    def id_map(self, feature: str) -> pa.Array | None:
        """Raw text of the ids 1..n of a dense feature (``raw[id - 1]``), or None if it has no id map."""
        return raw_values(self.path, feature)

    def score(self, inputs: list[torch.Tensor]) -> np.ndarray:
        """Click probabilities float32 ``[B]`` of the graph's input tensors (in :attr:`inputs` order)."""
        for spec, tensor in zip(self.inputs, inputs, strict=True):
            if str(tensor.dtype).removeprefix("torch.") != spec.dtype or tensor.shape[1:] != spec.shape[1:]:
                raise CtlError(f"input {spec.name!r} is {tensor.dtype!s} {tuple(tensor.shape)}; the artifact "
                               f"takes {spec.dtype} {spec.shape} (-1: any batch size)")
        return np.asarray(self.runner(inputs), dtype=np.float32)


def read_manifest(path: Path) -> dict:
    """The manifest of the artifact folder ``path``, every field checked; refuses a folder that is none."""
    file = path / MANIFEST_FILE
    if not path.is_dir():
        raise CtlError(f"{path} is not a folder; pass the folder ctl export wrote")
    if not file.is_file():
        raise CtlError(f"{path} has no {MANIFEST_FILE}: not an artifact written by ctl export (or it never finished)")
    manifest = read_json(file, "the artifact")
    if not isinstance(manifest, dict) or manifest.get("kind") != "ctl-artifact":
        raise CtlError(f"{file} is not the manifest of a ctl artifact (no \"kind\": \"ctl-artifact\")")
    if manifest.get("version") != ARTIFACT_VERSION:
        raise CtlError(f"{file} has artifact version {shorten(manifest.get('version'))}; this ctl reads version "
                       f"{ARTIFACT_VERSION}: export the run again with this ctl")
    if manifest.get("format") not in FORMATS:
        raise CtlError(f"{file}: format {shorten(manifest.get('format'))} is not one of {', '.join(FORMATS)}")
    for key in ("domain", "method", "checkpoint", "dataset", "dataset_path"):
        field(manifest, key, str, file)
    field(manifest, "files", dict, file)
    field(manifest, "inputs", list, file)
    sequences = field(manifest, "domain_sequences", list, file)
    if not all(isinstance(name, str) for name in sequences):
        raise CtlError(f"{file}: domain_sequences must be a list of domain names, got {shorten(sequences)}")
    return manifest


def read_schema(file: Path):
    """The dataset schema an artifact carries (``schema.json``)."""
    data = mapping(read_json(file, "the artifact"), file)
    for i, feature in enumerate(field(data, "features", list, file)):
        where = f"{file}: features[{i}]"
        feature = mapping(feature, file, f"features[{i}]")
        if not NAME_PATTERN.fullmatch(str(field(feature, "name", str, where))):
            raise CtlError(f"{where}: name {shorten(feature['name'])} must be letters, digits and _")
        for key, kind in (("kind", str), ("vocab", int), ("dim", int), ("domains", list)):
            field(feature, key, kind, where)
    for key, kind in (("domains", list), ("source", str), ("n_history", int), ("n_transfer", int)):
        field(data, key, kind, file)
    optional: tuple[tuple[str, type | tuple[type, ...]], ...] = (
        ("short_len", int), ("long_len", int), ("description", str), ("extra", (dict, type(None))))
    for key, kinds in optional:
        if key in data:
            field(data, key, kinds, file)
    try:
        return Schema.from_dict(data)
    except KeyError as exc:
        raise CtlError(f"{file}: {exc.args[0]} is missing") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CtlError(f"{file} is not a dataset schema ({cut(str(exc))})") from None


# --- signatures ---------------------------------------------------------------------------------


def read_key(file: Path, option: str) -> bytes:
    """The signing key in ``file`` (its bytes, surrounding whitespace dropped)."""
    if not file.is_file():
        raise CtlError(f"{option}={file} does not exist; make a key with: head -c 32 /dev/urandom | base64 > {file}")
    key = file.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise CtlError(f"{option}={file} holds {len(key)} bytes; a key needs at least {MIN_KEY_BYTES}")
    return key


def manifest_signature(folder: Path, key: bytes) -> str:
    """The signature line of ``folder``'s manifest under ``key``."""
    digest = hmac.new(key, (folder / MANIFEST_FILE).read_bytes(), "sha256").hexdigest()
    return f"{SIGNATURE_PREFIX}{digest}"


def verify_signature(folder: Path, key: bytes) -> None:
    """Refuse ``folder`` unless its ``manifest.sig`` is the signature of its manifest under ``key``."""
    signature = folder / SIGNATURE_FILE
    if not (folder / MANIFEST_FILE).is_file():
        raise CtlError(f"{folder} has no {MANIFEST_FILE}: not an artifact written by ctl export")
    if not signature.is_file():
        raise CtlError(f"artifact {folder} is not signed (no {SIGNATURE_FILE}) and --verify-key  asks for a signed one; "
                       "export it with --sign-key FILE")
    found = signature.read_bytes().strip()
    if not hmac.compare_digest(found, manifest_signature(folder, key).encode()):
        raise CtlError(f"artifact {folder}: {SIGNATURE_FILE} does not match its {MANIFEST_FILE} under verify_key "
                       "(changed after signing, or signed with another key); refused")
