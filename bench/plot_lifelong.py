"""Plot the ``lifelong`` figure of ``bench/results.json``: training rows/s against history length, index vs scan.

``python bench/plot_lifelong.py [results.json] [out.png]`` (defaults: ``bench/results.json``,
``docs/img/lifelong_rows_per_s.png``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BENCH_DIR = Path(__file__).resolve().parent


def main(results: Path, out: Path) -> None:
    figures = json.loads(results.read_text())
    found = [f for f in figures if f.get("figure") == "lifelong" and "rows_per_s" in f]
    if not found:
        raise SystemExit(f"{results} holds no lifelong figure: run python bench/run.py lifelong first")
    figure = found[-1]
    rates, lengths = figure["rows_per_s"], figure["lengths"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for way, style in (("index", "o-"), ("scan", "s--")):
        ax.plot(lengths, [rates[f"{way} L={n}"] for n in lengths], style, label=f"SIM by {way}")
    ax.set_xscale("log")
    ax.set_xlabel("visible history events per user (L; ETA scans all)")
    ax.set_ylabel("training rows/s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"base, {figure['size']} sizes, {figure['threads']} thread(s)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]) if args else BENCH_DIR / "results.json",
         Path(args[1]) if len(args) > 1 else BENCH_DIR.parent / "docs" / "img" / "lifelong_rows_per_s.png")
