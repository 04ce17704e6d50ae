"""Writers: :class:`View` tables to rich and Markdown; records to JSON and CSV (long format)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ctl.report.records import RECORD_KEYS
from ctl.report.views import Cell, View, evidence_text

#: CSV columns: every record key, lists joined by ";", significance spread over five columns, a
#: finding's evidence in words.
CSV_COLUMNS: tuple[str, ...] = tuple(k for k in RECORD_KEYS if k != "significance") + (
    "sig_versus", "sig_resamples", "sig_tested_seeds", "sig_significant_seeds", "sig_intervals", "sig_seed_aware",
)


def _rich_cell(cell: Cell) -> Text:
    text = Text(cell.text, style=" ".join(s for s in ("bold" if cell.bold else "", cell.style) if s))
    if cell.delta is not None:
        colour = "green" if cell.delta > 0 else "red" if cell.delta < 0 else "white"
        delta = f"{cell.delta:+.4f}"
        text.append(f" ({delta})" if cell.text else delta, style=colour)
    return text


def rich_table(view: View) -> Table:
    table = Table(title=view.title, caption=view.caption or None, title_justify="left")
    for i, header in enumerate(view.headers):
        table.add_column(header, justify="left" if i in view.text_columns else "right", overflow="fold")
    for i, row in enumerate(view.rows):
        if i in view.sections and i > 0:
            table.add_section()
        table.add_row(*(_rich_cell(c) for c in row))
    return table


def print_views(views: Sequence[View], console: Console) -> None:
    for view in views:
        console.print(rich_table(view))


def _markdown_cell(cell: Cell) -> str:
    text = f"**{cell.text}**" if cell.bold and cell.text else cell.text
    if cell.delta is not None:
        text = f"{text} ({cell.delta:+.4f})" if text else f"{cell.delta:+.4f}"
    return text.replace("|", "\\|").replace("\n", "<br>") or " "


def markdown(views: Sequence[View]) -> str:
    """GitHub-flavoured Markdown: one ``###`` heading and pipe table per view; best values in bold."""
    parts = []
    for view in views:
        lines = [f"### {view.title}", "", "| " + " | ".join(view.headers) + " |",
                 "|" + "|".join(":---" if i in view.text_columns else "---:" for i in range(len(view.headers))) + "|"]
        lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in view.rows]
        if view.caption:
            lines += ["", f"_{view.caption}_"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def records_json(records: Sequence[dict]) -> str:
    return json.dumps(list(records), indent=2) + "\n"


def _csv_row(rec: dict) -> dict:
    row = {k: rec[k] for k in RECORD_KEYS if k != "significance"}
    row["seeds"] = ";".join(str(s) for s in rec["seeds"])
    row["values"] = ";".join(repr(v) for v in rec["values"])
    row["evidence"] = evidence_text(rec["evidence"]) if rec["evidence"] else None
    for key in ("regime", "runner_up", "best_other"):
        if rec[key]:
            row[key] = ";".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in rec[key].items())
    sig = rec["significance"]
    if sig and "tested_seeds" in sig:
        aware = sig.get("seed_aware")
        row.update(sig_versus=sig["versus"], sig_resamples=sig["resamples"], sig_tested_seeds=sig["tested_seeds"],
                   sig_significant_seeds=sig["significant_seeds"],
                   sig_intervals=";".join(f"{s['seed']}:[{s['low']!r},{s['high']!r}]" for s in sig["per_seed"]),
                   sig_seed_aware=_seed_aware_text(aware) if aware else None)
    elif sig:  # the regimes table: one interval, that of the seeds' mean
        row.update(sig_versus=sig["versus"], sig_resamples=sig["resamples"], sig_tested_seeds=sig["seeds"],
                   sig_seed_aware=_seed_aware_text(sig))
    return row


def _seed_aware_text(claim: dict) -> str:
    """``mean:[low,high]`` of a seed-aware interval and what it covers."""
    return f"mean:[{claim['low']!r},{claim['high']!r}] {claim['covers']}"


def records_csv(records: Sequence[dict]) -> str:
    """One CSV line per record, columns :data:`CSV_COLUMNS`; empty where a value is None."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow(_csv_row(rec))
    return buffer.getvalue()
