"""The ``ctl`` console script: one Typer application for every command.

Typer parses every command line, writes every ``--help`` and offers shell completion. The
config-driven commands (``train``, ``sweep``, ``data generate``, ``data import``) hand their trailing
arguments to Hydra as overrides, and their ``--help`` lists the config groups and top-level keys
with their defaults, read through Hydra's compose API. The other commands take paths and
``--options``; their bodies live beside the code they drive (``*/cli.py`` of each room).

The subcommand is kept in ``CTL_COMMAND`` so a process that Lightning's DDP launcher re-executes
with the remaining arguments still knows what it is running.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from ctl.methods import BASE
from ctl.report.cli import DEFAULT_BOOTSTRAP, DESCRIPTION, EPILOG, FORMATS, TABLES
from ctl.serve import DEFAULT_BATCH_ROWS

HELP = """Continual cross-domain CTR prediction: CTNet and the baselines of its paper.

train, sweep, data generate and data import take Hydra overrides (model=ctnet data.domain=C);
every other command takes paths and --options. `ctl COMMAND --help` lists each one's options."""

HYDRA_COMMAND = {"allow_extra_args": True, "ignore_unknown_options": True}
CONF = Path(__file__).parent / "conf"


def _verbatim(text: str) -> str:
    """Keep each paragraph's own line breaks in click's help (its marker for "do not rewrap")."""
    return "\n\n".join("\b\n" + paragraph for paragraph in text.split("\n\n"))


def _run(command: str) -> None:
    os.environ["CTL_COMMAND"] = command


class ConfigCommand(typer.core.TyperCommand):
    """A Hydra-driven command: its help ends with the config groups and keys, with their defaults."""

    config_name = "train"

    def format_epilog(self, ctx: Any, formatter: Any) -> None:  # Typer's vendored click types
        super().format_epilog(ctx, formatter)
        groups, keys = config_defaults(self.config_name)
        with formatter.section("Config groups (GROUP=CHOICE; the default first)"):
            formatter.write_dl([(group, " | ".join(options)) for group, options in groups])
        with formatter.section("Config keys (KEY=VALUE; shown with their defaults)"):
            formatter.write_dl(keys)
        formatter.write_paragraph()
        formatter.write_text("`--cfg job` prints the whole composed config; `--hydra-help` shows Hydra's own flags "
                             "(-m, --cfg, --resolve, --info, ...), which are passed through.")


def _config_command(config_name: str) -> type[ConfigCommand]:
    return type(f"{config_name.title()}Command", (ConfigCommand,), {"config_name": config_name})


def config_defaults(config_name: str) -> tuple[list[tuple[str, list[str]]], list[tuple[str, str]]]:
    """The config groups of ``config_name`` (each: its default choice first, then the others) and its
    top-level scalar keys with their default values, composed the way Hydra composes a run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        groups = []
        for group, choice in cfg.hydra.runtime.choices.items():
            if group.startswith("hydra") and group != "hydra/launcher":
                continue
            others = sorted(o for o in loader.get_group_options(group) if o != choice)
            groups.append((group, [f"{choice} (default)" if choice is not None else "null (default)", *others]))
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    group_roots = {group.split("/")[0] for group, _ in groups}
    keys: list[tuple[str, str]] = []
    for key, value in ((str(k), v) for k, v in plain.items()):
        if key in group_roots and isinstance(value, dict):
            # a group's own keys are listed by `--cfg job`; keep the ones the top-level config adds
            own = _own_keys(config_name, key)
            keys += [(f"{key}.{k}", _shown(v)) for k, v in value.items() if not isinstance(v, dict | list)
                     and k in own]
        elif not isinstance(value, dict | list):
            keys.append((key, _shown(value)))
    return sorted(groups), keys


def _shown(value: object) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _own_keys(config_name: str, group: str) -> set[str]:
    import yaml

    own = yaml.safe_load((CONF / f"{config_name}.yaml").read_text()).get(group) or {}
    return set(own) if isinstance(own, dict) else set()


app = typer.Typer(name="ctl", help=HELP, no_args_is_help=True, add_completion=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})
data_app = typer.Typer(help="Datasets: generate a synthetic world, import logs, append a period, validate, describe.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")

Overrides = Annotated[list[str] | None, typer.Argument(help="Hydra overrides (KEY=VALUE, GROUP=CHOICE), "
                                                             "and Hydra's flags", metavar="OVERRIDES",
                                                             show_default=False)]


@app.command(cls=_config_command("train"), context_settings=HYDRA_COMMAND)
def train(overrides: Overrides = None) -> None:
    """Train one method under the continual protocol (e.g. ctl train model=ctnet data.domain=C)."""
    _run("train")
    _hydra("train", overrides or [], multirun=False)


@app.command(cls=_config_command("train"), context_settings=HYDRA_COMMAND)
def sweep(overrides: Overrides = None) -> None:
    """Train several methods, seeds or settings in one Hydra multirun
    (e.g. ctl sweep model=base,ctnet seed=0,1,2 hydra/launcher=parallel)."""
    _run("sweep")
    _hydra("train", overrides or [], multirun=True)


Table = enum.Enum("Table", {name: name for name in (*TABLES, "all")}, type=str)  # type: ignore[misc]
Format = enum.Enum("Format", {name: name for name in FORMATS}, type=str)  # type: ignore[misc]
ExportFormat = enum.Enum("ExportFormat", {name: name for name in ("torch_export", "onnx")}, type=str)  # type: ignore[misc]
RICH_TABLES, TORCH_EXPORT = Format("table"), ExportFormat("torch_export")


@app.command("eval", help=DESCRIPTION, epilog=_verbatim(EPILOG))
def eval_(
    paths: Annotated[list[Path], typer.Argument(metavar="PATHS", help="run folders, sweep folders (searched recursively) or "
                                                     "metrics.json files", show_default=False)],
    table: Annotated[list[Table] | None, typer.Option(help="which table (repeatable); default overall",
                                                      show_default=False)] = None,
    format: Annotated[Format, typer.Option(help="stdout format: rich tables, json (the records, see docs/eval.md), "
                                                "csv (the records) or markdown")] = RICH_TABLES,
    out: Annotated[Path | None, typer.Option(help="also write <table>.csv, <table>.md and PNG figures into DIR",
                                             metavar="DIR", show_default=False)] = None,
    bootstrap: Annotated[int, typer.Option(help="paired user-bootstrap resamples for significance (0 = off)",
                                           min=0)] = DEFAULT_BOOTSTRAP,
    versus: Annotated[str, typer.Option(help="the method every other method is paired with, seed by seed "
                                             "(e.g. ctnet to ask whether a baseline really beats it)",
                                        metavar="METHOD")] = BASE,
) -> None:
    from ctl.report.cli import run_eval

    _run("eval")
    run_eval(paths, [t.value for t in table or []] or ["overall"], format.value, out, bootstrap, versus)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a run folder of ctl train (or one job's folder of a sweep)",
                                            show_default=False)],
    out: Annotated[Path, typer.Option(help="the new artifact folder (must not exist)", metavar="DIR",
                                      show_default=False)],
    format: Annotated[ExportFormat, typer.Option(help="torch_export: a torch.export program (model.pt2), needs "
                                                      "torch only; onnx: an ONNX graph for ONNX Runtime "
                                                      "(pip install 'ctl[serve]')")] = TORCH_EXPORT,
    sign_key: Annotated[Path | None, typer.Option(help="also write manifest.sig, the HMAC-SHA256 of the manifest "
                                                       "under the secret key in FILE (docs/security.md)",
                                                  metavar="FILE", show_default=False)] = None,
) -> None:
    """Write a run's latest model as a self-contained serving artifact: the graph (dynamic batch
    size), the dataset's schema and id maps, and manifest.json (method, periods, dataset fingerprint,
    the sha256 of every file). For CTNet the source tower of the run's last period is part of the
    graph. The run folder may come from someone else: its model is built from ctl's own classes only."""
    from ctl.serve.cli import run_export

    _run("export")
    run_export(run_dir, out, format.value, sign_key)


@app.command()
def score(
    artifact: Annotated[Path, typer.Argument(metavar="ARTIFACT", help="the folder ctl export wrote (refused if any file changed since)",
                                             show_default=False)],
    requests: Annotated[Path, typer.Argument(metavar="REQUESTS", help="Parquet or CSV, one row per user x candidate item, in raw ids",
                                             show_default=False)],
    out: Annotated[Path, typer.Option(help="the scores (.parquet or .csv)", metavar="FILE", show_default=False)],
    history: Annotated[Path | None, typer.Option(
        help="look histories up here (user_id, item_id, category_id, domain, ts in raw ids); default: the run's "
             "dataset", metavar="FILE", show_default=False)] = None,
    batch_rows: Annotated[int, typer.Option(help="request rows encoded and scored at a time", min=1)] = DEFAULT_BATCH_ROWS,
    verify_key: Annotated[Path | None, typer.Option(help="refuse the artifact unless its manifest.sig was made "
                                                         "with the key in FILE", metavar="FILE",
                                                    show_default=False)] = None,
) -> None:
    """Score raw-id requests with an artifact of ctl export; writes the request's columns plus `pred`.

    REQUESTS carries every feature the artifact's domain carries, in raw ids; an optional `domain`
    (the artifact's); the history either in the request (history_item_id, history_category_id,
    history_domain: lists, or space-separated text in CSV) or looked up by user_id, with `hist_end`
    (events visible) or `ts` (events before it are visible). Unknown raw ids are scored as the
    absent id and counted in the report; see docs/serving.md."""
    from ctl.serve.cli import run_score

    _run("score")
    run_score(artifact, requests, out, history, batch_rows, verify_key)


def _serve_defaults() -> dict[str, Any]:
    """``serve_command``'s defaults, so its signature stays the one place they are written."""
    import inspect

    from ctl.serve.online.cli import serve_command

    return {name: p.default for name, p in inspect.signature(serve_command).parameters.items()}


SERVE = _serve_defaults()


@app.command()
def serve(
    artifact_dir: Annotated[Path, typer.Argument(metavar="ARTIFACT_DIR", help="an artifact folder, or a folder of "
                                                 "published artifacts (the sub-folder that sorts last is served)",
                                                 show_default=False)],
    host: Annotated[str, typer.Option(help="the address to listen on")] = SERVE["host"],
    port: Annotated[int, typer.Option(help="the port to listen on")] = SERVE["port"],
    watch: Annotated[bool, typer.Option(help="check ARTIFACT_DIR for newer artifacts every --poll-seconds")]
        = SERVE["watch"],
    poll_seconds: Annotated[float, typer.Option(help="seconds between two checks with --watch")]
        = SERVE["poll_seconds"],
    verify_key: Annotated[Path | None, typer.Option(help="refuse artifacts not signed with the key in FILE",
                                                    metavar="FILE", show_default=False)] = None,
    max_in_flight: Annotated[int, typer.Option(help="admitted requests at most; past them 503 at once")]
        = SERVE["max_in_flight"],
    score_threads: Annotated[int, typer.Option(help="requests scored at a time")] = SERVE["score_threads"],
    torch_threads: Annotated[int, typer.Option(help="torch threads of each scoring")] = SERVE["torch_threads"],
    max_candidates: Annotated[int, typer.Option(help="candidates of one request at most (413 past it)")]
        = SERVE["max_candidates"],
    max_body_bytes: Annotated[int, typer.Option(help="bytes of one request body at most (413 past it)")]
        = SERVE["max_body_bytes"],
    max_connections: Annotated[int, typer.Option(help="open connections at most (503 past it)")]
        = SERVE["max_connections"],
) -> None:
    """Answer scoring requests over HTTP with an artifact of ctl export, swapping in newer ones.

    POST /score, GET /healthz, GET /readyz, GET /metrics, POST /admin/reload (loopback clients only).
    A new artifact is verified and loaded off the request path, then swapped in between requests;
    one that does not verify is refused in one log line and the current one keeps serving. SIGTERM
    finishes the requests in flight, then exits. See docs/serving.md."""
    from ctl.serve.online.cli import serve_command

    _run("serve")
    serve_command(artifact_dir, host, port, watch, poll_seconds, verify_key, max_in_flight, score_threads,
                  torch_threads, max_candidates, max_body_bytes, max_connections)


@data_app.command("generate", cls=_config_command("generate"), context_settings=HYDRA_COMMAND)
def data_generate(overrides: Overrides = None) -> None:
    """Write a synthetic world into the cache (e.g. data=synthetic_tiny); extend=k continues it by k periods."""
    _run("data")
    _hydra("generate", overrides or [], multirun=False)


@data_app.command("import", cls=_config_command("import"), context_settings=HYDRA_COMMAND)
def data_import(overrides: Overrides = None) -> None:
    """Convert Parquet/CSV logs with a schema YAML into a dataset (docs/data.md)."""
    _run("data")
    _hydra("import", overrides or [], multirun=False)


@data_app.command("append")
def data_append(
    dataset: Annotated[Path, typer.Argument(metavar="DATASET", help="an imported dataset folder", show_default=False)],
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUTS", help="the new log files (same schema as the import), any paths",
                                                 show_default=False)],
    root: Annotated[Path | None, typer.Option(help="relative INPUTS are read from DIR", metavar="DIR",
                                              show_default=False)] = None,
    progress: Annotated[bool, typer.Option(help="print each step")] = True,
) -> None:
    """Append the records of new log files to an imported dataset as its next period(s): the last one
    is the new test slice, the one before (the earlier test slice) becomes trainable. Ids already given
    keep their ids, new users/items/categories get new ones, and histories extend. Refused with one
    line: records in a period the dataset already has, inputs of another schema, an input appended
    before, logs that add no period. Atomic: a killed append leaves DATASET as it was. Tracks and runs
    then extend with ctl train ... continue_from=RUN_DIR (docs/operations.md)."""
    from ctl.data.cli import run_append

    _run("data")
    run_append(dataset, [root / p if root is not None and not p.is_absolute() else p for p in inputs], progress)


@data_app.command("validate")
def data_validate(path: Annotated[Path, typer.Argument(metavar="PATH", help="a dataset folder (meta.yaml + rows.parquet + "
                                                            "history.parquet)", show_default=False)]) -> None:
    """Check every column of a dataset; report the first problem with its file, column and row."""
    from ctl.data.cli import run_validate

    _run("data")
    run_validate(path)


@data_app.command("describe")
def data_describe(path: Annotated[Path, typer.Argument(metavar="PATH", help="a dataset folder", show_default=False)]) -> None:
    """Per-domain and per-period counts, CTR, users, items, new items; history lengths."""
    from ctl.data.cli import run_describe

    _run("data")
    run_describe(path)


def _fail(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    from ctl import errors, quiet

    quiet.install()
    argv = list(sys.argv[1:] if argv is None else argv)
    with errors.friendly():
        if _is_relaunch(argv):
            command = os.environ["CTL_COMMAND"]
            _hydra("train", argv, multirun=command == "sweep")
            return
        try:
            code = typer.main.get_command(app).main(args=argv, prog_name="ctl", standalone_mode=False)
        except typer.TyperException as exc:  # a usage error of Typer's parser
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                print(ctx.get_help())
                return
            _fail(f"{' '.join(exc.format_message().split())} (see {ctx.command_path if ctx else 'ctl'} --help)")
        except typer.Abort:
            raise SystemExit(130) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)


#: what a command line of ctl starts with, except a DDP child's
FIRST_WORDS = ("train", "sweep", "eval", "export", "score", "serve", "data", "-h", "--help", "--install-completion",
               "--show-completion")


def _is_relaunch(argv: list[str]) -> bool:
    # A DDP child is started as `ctl <hydra overrides>`: its first argument is no subcommand.
    return os.environ.get("CTL_COMMAND") in ("train", "sweep") and (not argv or argv[0] not in FIRST_WORDS)


def _hydra(config_name: str, argv: list[str], multirun: bool) -> None:
    import hydra

    from ctl import app as tasks
    from ctl.overrides import check_overrides

    task = {"train": tasks.train_task, "generate": tasks.generate_task, "import": tasks.import_task}[config_name]
    output_key = ("hydra.sweep.dir" if multirun else "hydra.run.dir") if config_name == "train" else None
    check_overrides(argv, CONF, output_key)
    if multirun and "-m" not in argv and "--multirun" not in argv:
        argv = ["--multirun", *argv]
    entry = hydra.main(version_base="1.3", config_path="conf", config_name=config_name)(task)
    saved = sys.argv
    # keep the script's own path first: Lightning's DDP launcher re-executes it with these arguments
    sys.argv = [saved[0], *argv]
    try:
        entry()
    finally:
        sys.argv = saved
    if multirun and config_name == "train":
        _report_failed_jobs()


def _report_failed_jobs() -> None:
    from rich.console import Console
    from rich.markup import escape

    from ctl.sweep_jobs import SweepFolder, failed_jobs

    if SweepFolder.last is None:  # e.g. --cfg job: nothing ran
        return
    failed = failed_jobs(SweepFolder.last)
    if not failed:
        return
    console = Console(stderr=True)
    jobs = sum(1 for p in SweepFolder.last.iterdir() if p.is_dir())
    console.print(f"[red]error:[/red] {len(failed)} of {jobs} jobs of the sweep {escape(str(SweepFolder.last))} "
                  "failed (traceback in each one's error.txt):", highlight=False, soft_wrap=True)
    for job in failed:
        console.print(f"  {escape(job.run_dir.name)}: {escape(job.message)}", highlight=False, soft_wrap=True)
    raise SystemExit(1)


if __name__ == "__main__":
    main()
