"""PNG figures of the tables (matplotlib, Agg backend: no display needed).

* :func:`plot_overall`: Table 2 as grouped bars per method and target, error bars = std over seeds;
* :func:`plot_periods`: Table 3 as AUC/GAUC lines over periods, one line per method;
* :func:`plot_cost_gain`: AUC/GAUC gain over base against the rows each method trained on (log
  scale), the paper's "incremental data only" claim as a measurement;
* :func:`plot_forest`: Table 2 as each method's difference to the ``--versus`` method per target and
  metric, with its 95% interval over seeds and the seeds as dots, sorted by the mean;
* :func:`plot_regimes`: the regime map as heat maps of CTNet's gain per cell.
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


def seed_interval(deltas: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the seeds' differences and its 95% t interval (0 wide for one seed).

    The interval counts the seed-to-seed spread of training, the larger noise on ctl's worlds; each
    seed's test-slice bootstrap interval counts only the users of the slice.
    """
    from scipy.stats import t

    values = np.asarray(deltas, dtype=np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, mean, mean
    half = float(t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return mean, mean - half, mean + half


def forest_rows(records: Sequence[dict], target: str, metric: str) -> list[tuple[str, list[float], float, float, float]]:
    """The rows of one forest panel, sorted by the mean: (method, seeds' differences, mean, low, high)."""
    rows = []
    for rec in records:
        per_seed = (rec.get("significance") or {}).get("per_seed")
        if rec["target"] == target and rec["metric"] == metric and per_seed:
            deltas = [s["delta"] for s in per_seed]
            rows.append((rec["model"], deltas, *seed_interval(deltas)))
    return sorted(rows, key=lambda r: (r[2], method_rank(r[0])))


def plot_forest(records: Sequence[dict], path: Path) -> Path | None:
    """Forest plot of Table 2: per target (columns) and metric (rows), each method's test difference to
    the method its rows were paired with (``ctl eval --versus``), mean over seeds with its 95% interval
    (:func:`seed_interval`) and each seed's paired difference as a dot, methods sorted by the mean.
    None when no record carries paired differences (``--bootstrap 0``)."""
    paired = [r for r in records if r["metric"] in dict(METRICS) and r.get("significance")
              and r["significance"].get("per_seed")]
    if not paired:
        return None
    versus = paired[0]["significance"]["versus"]
    targets = sorted({r["target"] for r in paired})
    most = max(len([r for r in paired if r["target"] == t and r["metric"] == m]) for t in targets for m, _ in METRICS)
    figure, axes = plt.subplots(2, len(targets), figsize=(5.5 * len(targets), 1.2 + 0.32 * most * 2), squeeze=False)
    for col, target in enumerate(targets):
        for row, (metric, name) in enumerate(METRICS):
            ax = axes[row, col]
            rows = forest_rows(paired, target, metric)
            for y, (label, deltas, mean, low, high) in enumerate(rows):
                colour = "C2" if low > 0 else "C3" if high < 0 else "C0"
                ax.plot([low, high], [y, y], color=colour, linewidth=2)
                ax.plot([mean], [y], marker="D", color=colour)
                ax.scatter(deltas, [y] * len(deltas), s=12, color="black", alpha=0.6, zorder=3)
            ax.axvline(0.0, color="grey", linewidth=0.8)
            ax.set_yticks(range(len(rows)), [r[0] for r in rows])
            ax.set_ylim(-0.7, len(rows) - 0.3)
            ax.set_xlabel(f"test {name} − {versus}")
            ax.set_title(f"{paired[0]['source']} -> {target}: {name}")
            ax.grid(axis="x", alpha=0.3)
    figure.suptitle(f"Difference to {versus}: mean over seeds (diamond), 95% t interval over seeds (line: green above "
                    "0, red below), seeds (dots)", fontsize="small")
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


def _regime_value(rec: dict | None, comparison: str) -> dict | None:
    """``rec``'s comparison to plot: its gain over base (``base``) or its margin over the best other method."""
    if rec is None:
        return None
    return rec["significance"] if comparison == "base" else rec["best_other"]


def plot_regimes(records: Sequence[dict], path: Path, comparison: str) -> Path:
    """The regime map as heat maps: CTNet's test AUC gain over base (``comparison="base"``) or over the
    best other method (``"best_other"``) per cell, volume across and gap up, one panel per target
    (columns) and drift level (rows). Each cell reads the AUC and GAUC differences; a hatched cell's AUC
    interval includes 0 ("ns" marks a GAUC interval that does)."""
    from ctl.report.regimes import CTNET, LEVELS

    ctnet = [r for r in records if r["model"] == CTNET and r["metric"] in ("auc", "gauc")]
    targets = sorted({r["target"] for r in ctnet})
    drifts = [d for d in LEVELS if any(r["regime"]["drift"] == d for r in ctnet)]
    index = {(r["target"], r["metric"], *(r["regime"][k] for k in ("volume", "gap", "drift"))): r for r in ctnet}
    deltas = [v["delta"] for r in ctnet if r["metric"] == "auc" and (v := _regime_value(r, comparison))
              and v.get("delta") is not None]
    # a few large cells must not wash out the rest: the scale saturates at the 75th percentile of |difference|
    limit = max(float(np.quantile(np.abs(deltas), 0.75)) if deltas else 0.0, 1e-4)
    figure, axes = plt.subplots(len(drifts), len(targets), figsize=(4.8 * len(targets) + 1.2, 4.0 * len(drifts) + 0.6),
                                squeeze=False, layout="constrained")
    image = None
    for row, drift in enumerate(drifts):
        for col, target in enumerate(targets):
            ax = axes[row, col]
            grid = np.full((len(LEVELS), len(LEVELS)), np.nan)
            for gi, gap in enumerate(LEVELS):
                for vi, volume in enumerate(LEVELS):
                    auc_rec = index.get((target, "auc", volume, gap, drift))
                    auc_value = _regime_value(auc_rec, comparison)
                    if not auc_value or auc_value.get("delta") is None:
                        ax.text(vi, gi, "not run", ha="center", va="center", fontsize="x-small", color="grey")
                        continue
                    grid[gi, vi] = auc_value["delta"]
                    gauc_value = _regime_value(index.get((target, "gauc", volume, gap, drift)), comparison) or {}
                    lines = [f"AUC {auc_value['delta']:+.4f}"]
                    if gauc_value.get("delta") is not None:
                        lines.append(f"GAUC {gauc_value['delta']:+.4f}{'' if gauc_value['significant'] else ' ns'}")
                    if comparison != "base":
                        lines.append(f"vs {auc_value['model']}")
                    ax.text(vi, gi, "\n".join(lines), ha="center", va="center", fontsize="x-small",
                            fontweight="bold" if auc_value["significant"] else "normal",
                            color="white" if abs(auc_value["delta"]) > 0.7 * limit else "black")
                    if not auc_value["significant"]:
                        ax.add_patch(plt.Rectangle((vi - 0.5, gi - 0.5), 1, 1, fill=False, hatch="//",
                                                   edgecolor="grey", linewidth=0))
            image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, origin="lower")
            ax.set_xticks(range(len(LEVELS)), LEVELS)
            ax.set_yticks(range(len(LEVELS)), LEVELS)
            ax.set_xlabel("target data volume")
            ax.set_ylabel("domain gap")
            ax.set_title(f"{ctnet[0]['source']} -> {target}, drift {drift}", fontsize="medium")
    versus = "base" if comparison == "base" else "the best other method"
    figure.suptitle(f"CTNet − {versus} on the test slice\nAUC (colour) and GAUC; hatched: AUC interval includes 0",
                    fontsize="medium")
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.6, extend="both", label="AUC difference (saturates)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
