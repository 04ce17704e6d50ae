"""The ``ctl`` console script: ``train | sweep | eval | data | export | score | serve``.

``train``, ``sweep`` and ``data generate`` are Hydra apps (configs ship in ``ctl/conf``); ``eval``,
``data validate`` and ``data describe`` read paths and take plain flags; ``export`` and ``score``
take paths and ``key=value`` options, without Hydra. The subcommand is kept in
``CTL_COMMAND`` so a process that Lightning's DDP launcher re-executes with the remaining
arguments still knows what it is running.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

USAGE = """usage: ctl <command> [args]

Continual cross-domain CTR prediction: CTNet and the baselines of its paper.

commands:
  train      train one method under the continual protocol (Hydra overrides, e.g. model=ctnet data.domain=C)
  sweep      train several methods/seeds in one multirun (e.g. model=base,ctnet seed=0,1,2)
  eval       read run or sweep directories and print the paper's tables (never re-trains)
  data       generate | import | append | validate | describe datasets
  export     write a run's latest model as a serving artifact (torch.export or ONNX)
  score      score raw-id requests with an artifact
  serve      answer scoring requests over HTTP, swapping in newly published artifacts

`ctl <command> --help` shows each command's options; train/sweep accept Hydra's --cfg job, -m, ...
"""

DATA_USAGE = """usage: ctl data <generate|import|append|validate|describe> ...

  generate [overrides]   write a synthetic world (e.g. data=synthetic_tiny) into the cache;
                         extend=k continues it by k periods
  import [overrides]     convert Parquet/CSV logs with a schema YAML into a dataset
  append DATASET inputs=[...]   add new logs to an imported dataset as its next period(s)
  validate PATH          check a dataset folder; one clear message on the first problem
  describe PATH          per-domain/per-period counts, CTR, users, items, new-item share
"""

COMMANDS = ("train", "sweep", "eval", "data", "export", "score", "serve")


def _fail(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    from ctl import quiet

    quiet.install()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = os.environ.get("CTL_COMMAND") if _is_relaunch(argv) else None
    if command is None:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(USAGE)
            return
        command, argv = argv[0], argv[1:]
    if command not in COMMANDS:
        _fail(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    os.environ["CTL_COMMAND"] = command
    _run_command(command, argv)


def _is_relaunch(argv: list[str]) -> bool:
    # A DDP child is started as `ctl <hydra overrides>`: its first argument is no subcommand.
    return "CTL_COMMAND" in os.environ and (not argv or argv[0] not in COMMANDS)


def _run_command(command: str, argv: list[str]) -> None:
    from ctl import errors

    with errors.friendly():
        if command == "train":
            _hydra("train", argv, multirun=False)
        elif command == "sweep":
            _hydra("train", argv, multirun=True)
        elif command == "eval":
            from ctl.report.cli import eval_main

            eval_main(argv)
        elif command in ("export", "score"):
            from ctl.serve.cli import export_main, score_main

            (export_main if command == "export" else score_main)(argv)
        elif command == "serve":
            _serve(argv)
        else:
            _data(argv)


def _data(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(DATA_USAGE)
        return
    sub, rest = argv[0], argv[1:]
    if sub == "generate":
        _hydra("generate", rest, multirun=False)
    elif sub == "import":
        _hydra("import", rest, multirun=False)
    elif sub == "append":
        from ctl.data.append import append_main

        append_main(rest)
    elif sub in ("validate", "describe"):
        from ctl.data.cli import describe_main, validate_main

        (validate_main if sub == "validate" else describe_main)(rest)
    else:
        _fail(f"unknown data command {sub!r}; expected generate, import, append, validate or describe")


def _serve(argv: list[str]) -> None:
    import argparse
    import inspect

    from ctl.serve.online.cli import serve_command

    doc = inspect.getdoc(serve_command) or ""
    parser = argparse.ArgumentParser(prog="ctl serve", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact_dir", type=Path, metavar="ARTIFACT_DIR")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--watch", action="store_true", help="check the folder for new artifacts")
    parser.add_argument("--poll-seconds", type=float, default=5.0)
    parser.add_argument("--verify-key", type=Path, help="refuse artifacts not signed with the key in this file")
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--score-threads", type=int, default=1)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--max-candidates", type=int, default=10_000)
    parser.add_argument("--max-body-bytes", type=int, default=4 * 2**20)
    parser.add_argument("--max-connections", type=int, default=1024)
    serve_command(**vars(parser.parse_args(argv)))


def _hydra(config_name: str, argv: list[str], multirun: bool) -> None:
    import hydra

    from ctl import app, errors

    task = {"train": app.train_task, "generate": app.generate_task, "import": app.import_task}[config_name]
    output_key = ("hydra.sweep.dir" if multirun else "hydra.run.dir") if config_name == "train" else None
    errors.check_overrides(argv, Path(app.__file__).parent / "conf", output_key)
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
