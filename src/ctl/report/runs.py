"""Find the runs under run and sweep folders and read each one into a :class:`Run`.

A run folder holds ``metrics.json`` with ``"kind": "run"`` (written by ``ctl train``, or by each
job of ``ctl sweep``), ``config.yaml`` and ``predictions.parquet``. Folders are searched
recursively; hidden folders (``.hydra``, ``.submitit``) and links (a run's ``checkpoints``) are
not followed. Track folders (``"kind": "track"``) are cached models, not runs, and are skipped.

Transfer methods record their target base track (``baseline`` in ``metrics.json``): where no
``base`` run of the same dataset, target and seed was found, that record stands in for it, so
one CTNet run already compares against its base.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ctl.errors import CtlError, shorten
from ctl.methods import BASE, method_rank
from ctl.received import field, mapping, read_json, read_yaml
from ctl.run_files import baseline_copy

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
PREDICTIONS_FILE = "predictions.parquet"

# config keys that say where or how verbosely a run ran, not what it computed
_NEUTRAL_KEYS = ("seed", "home", "progress", "print_table", "resume", "logger", "data.domain")
_REQUIRED_KEYS = ("model", "method", "target", "seed", "dataset", "periods", "test", "cost")


@dataclass(frozen=True)
class Cost:
    """Training cost of a run.

    ``own_*``: what the method trained itself (its own fit, or its own track for a track method);
    ``total_*``: everything trained to produce the run, the shared tracks it needed included.
    """

    own_rows: int
    own_wall_s: float
    own_cpu_s: float
    total_rows: int
    total_wall_s: float
    total_cpu_s: float


@dataclass(frozen=True)
class Run:
    """One run's record as the tables need it.

    ``label`` is the row name (the method, plus the settings that set it apart from other runs of
    the same method, if any); ``settings`` the run's flattened config without neutral keys;
    ``base_track`` the target base track a transfer run recorded, ``base_track_predictions`` its
    test predictions;
    ``from_baseline`` marks a base row read from another run's ``baseline`` record.
    """

    path: Path
    label: str
    method: str
    model: str
    source: str
    target: str
    seed: int
    dataset: str
    dataset_name: str | None
    dataset_path: Path | None
    periods: tuple[dict, ...]
    test: dict
    cost: Cost
    predictions: Path | None
    base_track: str | None
    base_track_predictions: Path | None
    finetune_periods: str | None
    settings: dict
    from_baseline: bool = False


@dataclass(frozen=True)
class RunSet:
    """The runs found, and notes on what was skipped or stood in for a missing run."""

    runs: tuple[Run, ...]
    notes: tuple[str, ...]


def baseline_file(run_dir: Path, target_track: str | None, name: str) -> Path | None:
    """The target base track's file ``name`` for the run in ``run_dir``: the run's own copy if it has
    one, else the track's (which may be gone); None for a run without a target track."""
    own = baseline_copy(run_dir, name)
    if own.is_file():
        return own
    return Path(target_track) / name if target_track else None


def _metrics_files(root: Path) -> Iterable[Path]:
    if root.is_file():
        if root.name != METRICS_FILE:
            raise CtlError(f"{root} is a file; pass a run folder, a sweep folder or a {METRICS_FILE}")
        yield root
        return
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        if METRICS_FILE in files:
            yield Path(folder) / METRICS_FILE


def _read_json(path: Path) -> object:
    return read_json(path, "ctl eval")


def _flatten(tree: object, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in flat.items()}


def _settings(run_dir: Path) -> dict:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    config = read_yaml(path, "ctl eval")
    config = {} if config is None else mapping(config, path)
    return {k: v for k, v in _flatten(config).items()
            if not any(k == n or k.startswith(f"{n}.") for n in _NEUTRAL_KEYS)}


def _cost_part(part: dict) -> tuple[int, float, float]:
    return int(part["train_rows"]), float(part["wall_s"]), float(part["cpu_s"])


def _cost(metrics: dict, model: str, target: str) -> Cost:
    cost = metrics["cost"]
    tracks = cost.get("tracks") or {}
    own = cost.get("own") or tracks.get(f"{model}-{target}") or cost
    return Cost(*_cost_part(own), *_cost_part(cost))


def _finetune_periods(metrics: dict, settings: dict) -> str | None:
    value = settings.get("model.finetune_periods", metrics.get("finetune_periods"))
    return None if value is None else str(value)


#: metrics a period row or test row may hold, each a number or null
_METRICS = ("auc", "gauc", "logloss")


def _check_rows(metrics_path: Path, key: str, rows: object) -> None:
    if not isinstance(rows, list):
        raise CtlError(f"{metrics_path}: {key} must be a list, got {shorten(rows)}")
    for i, row in enumerate(rows):
        _check_row(metrics_path, f"{key}[{i}]", row)
        field(row, "period", int, f"{metrics_path}: {key}[{i}]")


def _check_row(metrics_path: Path, key: str, row: object) -> None:
    row = mapping(row, metrics_path, key)
    for name in ("period", "eval_period", "rows"):
        if name in row:
            field(row, name, (int, type(None)), f"{metrics_path}: {key}")
    for name in _METRICS:
        if name in row:
            field(row, name, (float, type(None)), f"{metrics_path}: {key}")


def check_record(metrics_path: Path, metrics: dict) -> None:
    """Refuse, naming the field, a run record whose fields the tables read have another type."""
    missing = [k for k in _REQUIRED_KEYS if k not in metrics]
    if missing:
        raise CtlError(f"{metrics_path} lacks {missing}: not a metrics.json written by ctl train")
    for key in ("model", "method", "target", "dataset"):
        field(metrics, key, str, metrics_path)
    field(metrics, "seed", int, metrics_path)
    for key in ("source", "dataset_path"):
        if key in metrics:
            field(metrics, key, (str, type(None)), metrics_path)
    _check_rows(metrics_path, "periods", metrics["periods"])
    _check_row(metrics_path, "test", metrics["test"])
    cost = field(metrics, "cost", dict, metrics_path)
    parts = {"cost": cost, "cost.own": cost.get("own") or {"train_rows": 0, "wall_s": 0, "cpu_s": 0}}
    tracks = field(metrics, "cost.tracks", (dict, type(None)), metrics_path) if "tracks" in cost else None
    parts.update({f"cost.tracks.{name}": part for name, part in (tracks or {}).items()})
    for where, part in parts.items():
        part = mapping(part, metrics_path, where)
        for name in ("train_rows", "wall_s", "cpu_s"):
            field(part, name, float, f"{metrics_path}: {where}")
    for key in ("tracks", "baseline"):
        if metrics.get(key) is not None:
            mapping(metrics[key], metrics_path, key)
    if metrics.get("tracks"):
        for name in ("source", "target"):
            if name in metrics["tracks"]:
                field(metrics, f"tracks.{name}", (str, type(None)), metrics_path)
    if metrics.get("baseline"):
        _check_row(metrics_path, "baseline.test", field(metrics, "baseline.test", dict, metrics_path))
        if "periods" in metrics["baseline"]:
            _check_rows(metrics_path, "baseline.periods", metrics["baseline"]["periods"])


def read_run(metrics_path: Path, metrics: dict) -> Run:
    """A :class:`Run` from one run's ``metrics.json`` content; refuses a record missing a key or
    holding a wrong-typed field, naming it."""
    check_record(metrics_path, metrics)
    run_dir = metrics_path.parent
    settings = _settings(run_dir)
    target, model = str(metrics["target"]), str(metrics["model"])
    predictions = run_dir / PREDICTIONS_FILE
    target_track = (metrics.get("tracks") or {}).get("target")
    base_track_predictions = baseline_file(run_dir, target_track, PREDICTIONS_FILE)
    dataset_path = metrics.get("dataset_path")
    return Run(
        path=run_dir,
        label=str(metrics["method"]),
        method=str(metrics["method"]),
        model=model,
        source=str(metrics.get("source", "")),
        target=target,
        seed=int(metrics["seed"]),
        dataset=str(metrics["dataset"]),
        dataset_name=settings.get("data.name"),
        dataset_path=Path(dataset_path) if dataset_path else None,
        periods=tuple(metrics["periods"]),
        test=dict(metrics["test"]),
        cost=_cost(metrics, model, target),
        predictions=predictions if predictions.is_file() else None,
        base_track=str(target_track) if target_track else None,
        base_track_predictions=base_track_predictions,
        finetune_periods=_finetune_periods(metrics, settings),
        settings=settings,
    )


def _label_variants(runs: list[Run]) -> list[Run]:
    """Give runs of one method that differ in config (besides seed) labels that say how."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.method, run.target), []).append(run)
    labelled = []
    for group in groups.values():
        keys = sorted({k for run in group for k in run.settings})
        varying = [k for k in keys if len({json.dumps(run.settings.get(k), sort_keys=True) for run in group}) > 1]
        for run in group:
            if varying:
                detail = ",".join(f"{k}={run.settings.get(k)}" for k in varying)
                run = replace(run, label=f"{run.method}[{detail}]")
            labelled.append(run)
    return labelled


def _drop_duplicates(runs: list[Run], notes: list[str]) -> list[Run]:
    kept: dict[tuple, Run] = {}
    for run in sorted(runs, key=lambda r: str(r.path)):
        key = (run.dataset, run.label, run.target, run.seed)
        if key in kept:
            notes.append(f"ignoring {run.path}: same dataset, method {run.label}, target {run.target} and seed "
                         f"{run.seed} as {kept[key].path}")
            continue
        kept[key] = run
    return list(kept.values())


def _baseline_runs(runs: list[Run], metrics_by_path: dict[Path, dict], notes: list[str]) -> list[Run]:
    """Base rows from transfer runs' ``baseline`` records, where no base run covers their seed."""
    covered = {(r.dataset, r.target, r.seed) for r in runs if r.label == BASE}
    added: dict[tuple, Run] = {}
    for run in sorted(runs, key=lambda r: str(r.path)):
        baseline = metrics_by_path[run.path].get("baseline")
        key = (run.dataset, run.target, run.seed)
        if not baseline or key in covered:
            continue
        if key in added:
            if added[key].base_track != run.base_track:
                notes.append(f"{run.path} and {added[key].path} recorded different base tracks for target "
                             f"{run.target}, seed {run.seed}; base is read from the latter's")
            continue
        tracks = metrics_by_path[run.path]["cost"].get("tracks") or {}
        track_cost = tracks.get(f"{BASE}-{run.target}")
        cost = Cost(*_cost_part(track_cost), *_cost_part(track_cost)) if track_cost else Cost(0, 0.0, 0.0, 0, 0.0, 0.0)
        predictions = run.base_track_predictions
        added[key] = replace(
            run, label=BASE, method=BASE, model=BASE, periods=tuple(baseline.get("periods", ())),
            test=dict(baseline["test"]), cost=cost,
            predictions=predictions if predictions is not None and predictions.is_file() else None,
            finetune_periods=None, settings={}, from_baseline=True,
        )
    return list(added.values())


def _nothing_found(paths: Sequence[Path], foreign: list[Path], tracks: int) -> CtlError:
    where = ", ".join(str(p) for p in paths)
    found = ""
    if tracks:
        found += f"; found {tracks} track folder(s) (\"kind\": \"track\": cached models, not runs)"
    if foreign:
        found += f"; found {len(foreign)} other metrics.json (e.g. {foreign[0]})"
    return CtlError(f"no runs under {where}: expected run folders holding {METRICS_FILE} with \"kind\": \"run\" "
                    f"(written by ctl train or ctl sweep){found}")


def find_runs(paths: Sequence[Path]) -> RunSet:
    """Every run under ``paths`` (run folders, sweep folders, or metrics.json files).

    Refuses (``CtlError``) a path that does not exist and paths that hold no run at all.
    """
    metrics_by_path: dict[Path, dict] = {}
    foreign: list[Path] = []
    tracks = 0
    for root in paths:
        if not root.exists():
            raise CtlError(f"{root} does not exist; pass run or sweep folders (outputs/..., multirun/...)")
        for metrics_path in _metrics_files(root):
            content = _read_json(metrics_path)
            metrics = content if isinstance(content, dict) else {}
            kind = metrics.get("kind")
            if kind == "run":
                metrics_by_path[metrics_path.parent] = metrics
            elif kind == "track":
                tracks += 1
            else:
                foreign.append(metrics_path)
    if not metrics_by_path:
        raise _nothing_found(paths, foreign, tracks)
    notes: list[str] = []
    runs = [read_run(path / METRICS_FILE, metrics) for path, metrics in metrics_by_path.items()]
    runs = _drop_duplicates(_label_variants(runs), notes)
    runs += _baseline_runs(runs, metrics_by_path, notes)
    runs.sort(key=lambda r: (r.dataset, method_rank(r.label), r.target, r.seed))
    return RunSet(runs=tuple(runs), notes=tuple(notes))


def by_dataset(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by dataset fingerprint: runs of different datasets are never compared."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.dataset, []).append(run)
    return groups


def mean_test(group: Sequence[Run], metric: str) -> float:
    """The mean over a group's runs (its seeds) of their test ``metric``, the runs without it aside;
    -inf when none has it, so that such a group ranks last."""
    values = [run.test[metric] for run in group if run.test.get(metric) is not None]
    return math.fsum(values) / len(values) if values else -math.inf
