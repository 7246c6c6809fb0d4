"""Plots of runs (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedgossip.reports.records import by_round, node_records


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(records: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Test accuracy per round: every node thin, the mean bold, the min-max band shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    nodes = node_records(records)
    for node in sorted({r["node"] for r in nodes}):
        mine = sorted((r["round"], r["test_accuracy"]) for r in nodes if r["node"] == node)
        ax.plot(*zip(*mine, strict=True), color="0.75", linewidth=0.8)
    groups = by_round(nodes)
    rounds = list(groups)
    accs = [[x["test_accuracy"] for x in g] for g in groups.values()]
    if rounds:
        ax.fill_between(rounds, [min(a) for a in accs], [max(a) for a in accs], alpha=0.2, label="min-max")
        ax.plot(rounds, [float(np.mean(a)) for a in accs], linewidth=2.2, label="mean over nodes")
    server = sorted((r["round"], r["test_accuracy"]) for r in records if r.get("node") == "server")
    if server:
        ax.plot(*zip(*server, strict=True), "k--", linewidth=1.5, label="global model (server)")
    ax.set(xlabel="round", ylabel="test accuracy", title=title, ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_comparison(runs: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Mean test accuracy of several runs against rounds (left) and wall-clock seconds (right)."""
    plt = _pyplot()
    fig, (by_r, by_t) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for label, records in runs.items():
        groups = by_round(records)
        if not groups:
            continue
        mean = [float(np.mean([x["test_accuracy"] for x in g])) for g in groups.values()]
        seconds = [max(x["time_s"] for x in g) for g in groups.values()]
        by_r.plot(list(groups), mean, label=label, linewidth=1.8)
        by_t.plot(seconds, mean, label=label, linewidth=1.8)
    by_r.set(xlabel="round", ylabel="mean test accuracy over nodes", ylim=(0, 1))
    by_t.set(xlabel="seconds since launch (process start-up included)", xlim=(0, None))
    for ax in (by_r, by_t):
        ax.grid(alpha=0.3)
    by_t.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
