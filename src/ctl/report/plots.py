"""PNG figures of the tables (matplotlib, Agg backend: no display needed).

* :func:`plot_overall`: Table 2 as grouped bars per method and target, error bars = std over seeds;
* :func:`plot_periods`: Table 3 as AUC/GAUC lines over periods, one line per method;
* :func:`plot_cost_gain`: AUC/GAUC gain over base against the rows each method trained on (log
  scale), the paper's "incremental data only" claim as a measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

# no display: choose the file-only backend before pyplot is imported
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ctl.methods import BASE, method_rank

METRICS = (("auc", "AUC"), ("gauc", "GAUC"))


def _labels(records: Sequence[dict]) -> list[str]:
    return sorted({r["model"] for r in records}, key=method_rank)


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_overall(records: Sequence[dict], path: Path) -> Path:
    """Bars of test AUC and GAUC (mean, std error bars) per method, one colour per target."""
    labels = _labels(records)
    targets = sorted({r["target"] for r in records})
    index = {(r["model"], r["target"], r["metric"]): r for r in records}
    figure, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.7 * len(labels) * len(targets)), 7), squeeze=False)
    width = 0.8 / len(targets)
    x = np.arange(len(labels))
    for ax, (metric, name) in zip(axes[:, 0], METRICS):
        lows = []
        for k, target in enumerate(targets):
            recs = [index.get((label, target, metric)) for label in labels]
            means = np.array([r["mean"] if r and r["mean"] is not None else np.nan for r in recs])
            stds = np.array([r["std"] if r and r["std"] is not None else 0.0 for r in recs])
            ax.bar(x + (k - (len(targets) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
                   label=f"{records[0]['source']} -> {target}")
            lows.append(np.nanmin(means - stds))
        # AUC differences are small: start the axis just below the lowest bar, not at 0
        ax.set_ylim(bottom=max(0.0, min(lows) - 0.02))
        ax.set_ylabel(f"test {name}")
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.legend(fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title(f"Table 2 — {records[0]['dataset_name'] or 'dataset'} {records[0]['dataset']}")
    return _save(figure, path)


def plot_periods(records: Sequence[dict], path: Path) -> Path:
    """AUC and GAUC (rows) per target (columns) over the evaluated slices, one line per method."""
    targets = sorted({r["target"] for r in records})
    figure, axes = plt.subplots(2, len(targets), figsize=(5.5 * len(targets), 7), squeeze=False)
    for col, target in enumerate(targets):
        own = [r for r in records if r["target"] == target]
        for row, (metric, name) in enumerate(METRICS):
            ax = axes[row, col]
            for label in _labels(own):
                points = sorted((r["eval_period"] if r["slice"] != "test" else r["period"], r["mean"], r["std"] or 0.0)
                                for r in own if r["model"] == label and r["metric"] == metric and r["mean"] is not None)
                if points:
                    xs, means, stds = zip(*points)
                    ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("period evaluated on (the last: the test slice)")
            ax.set_ylabel(name)
            ax.set_title(f"{own[0]['source']} -> {target}: {name} per period")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    return _save(figure, path)


def plot_cost_gain(records: Sequence[dict], path: Path) -> Path:
    """Gain over base (mean ± std over seeds) against own training rows (log x), per method and target."""
    index = {(r["model"], r["target"], r["metric"]): r for r in records}
    targets = sorted({r["target"] for r in records})
    markers = "osD^v<>"
    figure, axes = plt.subplots(1, 2, figsize=(12, 5), squeeze=False)
    for ax, (metric, name) in zip(axes[0], METRICS):
        for k, target in enumerate(targets):
            for label in _labels(records):
                quality, rows = index.get((label, target, metric)), index.get((label, target, "own_rows"))
                if quality is None or rows is None or not rows["mean"]:
                    continue
                gain = 0.0 if label == BASE else quality["delta"]
                if gain is None:
                    continue
                spread = 0.0 if label == BASE else (quality["delta_std"] or 0.0)
                ax.errorbar(rows["mean"], gain, yerr=spread, marker=markers[k % len(markers)], capsize=3,
                            color=f"C{_labels(records).index(label) % 10}")
                ax.annotate(f"{label} ({target})", (rows["mean"], gain), fontsize="x-small",
                            xytext=(4, 3), textcoords="offset points")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("rows trained on by the method itself (log scale)")
        ax.set_ylabel(f"test {name} gain over base")
        ax.set_title(f"{name} gain vs training cost")
        ax.grid(alpha=0.3, which="both")
    return _save(figure, path)
