"""``ctl export`` and ``ctl score``: positional paths plus ``key=value`` options."""

from __future__ import annotations

from pathlib import Path

from ctl.errors import CtlError, cut, shorten

EXPORT_USAGE = """usage: ctl export RUN_DIR out=DIR [format=torch_export|onnx] [sign_key=FILE]

Write a run's latest model as a self-contained serving artifact: the graph (dynamic batch size),
the dataset's schema and id maps, and manifest.json (method, periods, dataset fingerprint, the
sha256 of every file). For CTNet the source tower of the run's last period is part of the graph.

  RUN_DIR               a run folder of ctl train (or one job's folder of a sweep)
  out=DIR               the new artifact folder (must not exist)
  format=torch_export   torch.export program (model.pt2), the default; needs torch only
  format=onnx           ONNX graph (model.onnx) for ONNX Runtime: pip install 'ctl[serve]'
  sign_key=FILE         also write manifest.sig, the HMAC-SHA256 of the manifest under the secret
                        key in FILE (ctl score ... verify_key=FILE checks it; docs/security.md)

The run folder may come from someone else: its model is built from ctl's own classes only.
"""

SCORE_USAGE = """usage: ctl score ARTIFACT REQUESTS out=FILE [history=FILE] [batch_rows=N] [verify_key=FILE]

Score raw-id requests (Parquet or CSV, one row per user x candidate item) with an artifact of
ctl export; writes the request's columns plus `pred` (Parquet or CSV, by out's suffix).

  ARTIFACT        the folder ctl export wrote (refused if any file changed since)
  REQUESTS        every feature the artifact's domain carries, in raw ids (id-mapped features as the
                  importer read them; other features as ids); optional `domain` (the artifact's);
                  the history either in the request (history_item_id, history_category_id,
                  history_domain: lists, or space-separated text in CSV) or looked up by user_id,
                  with `hist_end` (events visible) or `ts` (events before it are visible)
  out=FILE        the scores (.parquet or .csv)
  history=FILE    look histories up here (user_id, item_id, category_id, domain, ts in raw ids);
                  default: the run's dataset
  batch_rows=N    request rows encoded and scored at a time (default 65536)
  verify_key=FILE refuse the artifact unless its manifest.sig was made with the key in FILE

Unknown raw ids are scored as the absent id and counted in the report; see docs/serving.md.
"""


def parse_options(argv: list[str], positional: int, keys: tuple[str, ...], usage: str) -> tuple[list[str], dict]:
    """``positional`` leading paths and ``key=value`` options among ``keys``; refuses anything else."""
    paths, options = [], {}
    for arg in argv:
        if "=" in arg:
            key, value = arg.split("=", 1)
            if key not in keys:
                raise CtlError(f"unknown option {cut(key)}=; expected {', '.join(k + '=' for k in keys)}")
            options[key] = value
        else:
            paths.append(arg)
    if len(paths) != positional:
        first_line = usage.splitlines()[0].removeprefix("usage: ")
        raise CtlError(f"expected {positional} path(s), got {len(paths)} ({cut(' '.join(paths)) or 'none'}): {first_line}")
    return paths, options


def export_main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(EXPORT_USAGE)
        return
    from rich.console import Console

    from ctl.serve.export import export_run

    (run_dir,), options = parse_options(argv, 1, ("out", "format", "sign_key"), EXPORT_USAGE)
    if "out" not in options:
        raise CtlError("out=DIR is required: the folder to write the artifact to")
    console = Console(stderr=True)
    with console.status(f"exporting {run_dir}", spinner="dots"):
        out = export_run(Path(run_dir), Path(options["out"]), options.get("format", "torch_export"),
                         options.get("sign_key"))
    from ctl.serve.artifact import read_manifest

    manifest = read_manifest(out)
    Console().print(f"artifact: {out} ({manifest['format']}: {manifest['method']} on domain {manifest['domain']}, "
                    f"{manifest['checkpoint']}, {len(manifest['inputs'])} inputs"
                    + (", signed" if "sign_key" in options else "") + ")", highlight=False, soft_wrap=True)


def score_main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(SCORE_USAGE)
        return
    from rich.console import Console

    from ctl.serve.score import DEFAULT_BATCH_ROWS, score_file

    (artifact, requests), options = parse_options(argv, 2, ("out", "history", "batch_rows", "verify_key"),
                                                  SCORE_USAGE)
    if "out" not in options:
        raise CtlError("out=FILE is required: where to write the scores (.parquet or .csv)")
    try:
        batch_rows = int(options.get("batch_rows", DEFAULT_BATCH_ROWS))
    except ValueError:
        raise CtlError(f"batch_rows={shorten(options['batch_rows'])} is not an integer") from None
    console = Console(stderr=True)
    with console.status("scoring", spinner="dots") as status:
        report = score_file(artifact, requests, options["out"], options.get("history"), batch_rows,
                            verify_key=options.get("verify_key"), progress=lambda done, total: status.update(f"scoring: {done:,} of {total:,} rows"))
    for line in report.lines():
        Console().print(line, highlight=False, soft_wrap=True)
