"""What ``ctl export`` and ``ctl score`` print around the work (their options: ctl.cli)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ctl.serve import DEFAULT_BATCH_ROWS


def run_export(run_dir: Path, out: Path, fmt: str = "torch_export", sign_key: Path | None = None) -> None:
    from ctl.serve.artifact import read_manifest
    from ctl.serve.export import export_run

    with Console(stderr=True).status(f"exporting {run_dir}", spinner="dots"):
        written = export_run(run_dir, out, fmt, sign_key)
    manifest = read_manifest(written)
    Console().print(f"artifact: {written} ({manifest['format']}: {manifest['method']} on domain {manifest['domain']}, "
                    f"{manifest['checkpoint']}, {len(manifest['inputs'])} inputs"
                    + (", signed" if sign_key is not None else "") + ")", highlight=False, soft_wrap=True)


def run_score(artifact: Path, requests: Path, out: Path, history: Path | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
              verify_key: Path | None = None) -> None:
    from ctl.serve.score import score_file

    with Console(stderr=True).status("scoring", spinner="dots") as status:
        report = score_file(artifact, requests, out, history, batch_rows, verify_key=verify_key,
                            progress=lambda done, total: status.update(f"scoring: {done:,} of {total:,} rows"))
    for line in report.lines():
        Console().print(line, highlight=False, soft_wrap=True)
