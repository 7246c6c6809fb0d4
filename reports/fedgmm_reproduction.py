"""The write-up of `fedgossip reproduce fedgmm`: every method's mean and worst node's final local
accuracy (mean +- std over seeds), FedGMM's new nodes before and after the E-step-only adaptation
and their novelty AUROC, the cost per round against FedAvg, a bar figure, and the paper's claims
beside the measured ordering."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedgossip.reports.groups import Group, Stat
from fedgossip.reports.local_accuracy import MEAN, MIN
from fedgossip.reports.plots import _pyplot, _save
from fedgossip.reports.summary import read_summary
from fedgossip.reports.tables import markdown_pipe_table, stat_text

CLAIMS = (
    "The paper (Table: synthetic, 30 clients, 3 components, d = 32; and rotated images) reports FedGMM's "
    "mean accuracy of the personalised models above Local, FedAvg, FedAvg + local adaptation, FedProx and "
    "FedEM under covariate shift, and new clients adapted by the E-step alone near the training clients "
    "(its exact numbers are not in this repository's reference notes; compare with the paper's table)."
)


def _unseen(group: Group, key: str) -> Stat:
    """A figure of the runs' `fedgmm_unseen` summaries (FedGMM runs with unseen nodes only)."""
    values = []
    for run in group.runs:
        unseen = (read_summary(run.path) or {}).get("fedgmm_unseen")
        values.append(None if unseen is None else unseen[key])
    return Stat.of(values)


def _per_round(group: Group) -> Stat:
    """Seconds per round (wall time over rounds completed) over the seeds."""
    return Stat.of(
        (r.figures.get("wall_time_s") or 0) / r.figures["rounds_completed"]
        for r in group.runs
        if r.figures.get("rounds_completed")
    )


def _bytes_per_round(group: Group) -> Stat:
    """Bytes sent per node and round over the seeds."""
    return Stat.of(
        r.figures["bytes_sent"] / (r.figures["nodes"] * r.figures["rounds_completed"])
        for r in group.runs
        if r.figures.get("rounds_completed") and r.figures.get("nodes")
    )


def fedgmm_writer(plan: dict[str, Any], groups: Sequence[Group], docs: Path) -> tuple[list[str], list[Path]]:
    """The measured section and its figure (DOCS/NAME-local.png)."""
    stem = plan["name"] if plan["setting"] == "default" else f"{plan['name']}-{plan['setting']}"
    header = ["method", "seeds", "mean local acc", "worst local acc", "s / round", "bytes / node / round"]
    cells, unseen = [], []
    for group in groups:
        seeds = len(group.runs)
        cells.append(
            [
                group.label,
                str(seeds),
                stat_text(group.stat(MEAN).to_dict(), seeds, ".3f"),
                stat_text(group.stat(MIN).to_dict(), seeds, ".3f"),
                stat_text(_per_round(group).to_dict(), seeds, ".2f"),
                stat_text(_bytes_per_round(group).to_dict(), seeds, ",.0f"),
            ]
        )
        before = _unseen(group, "accuracy_before")
        if before.mean is not None:
            unseen.append(
                [
                    group.label,
                    stat_text(before.to_dict(), seeds, ".3f"),
                    stat_text(_unseen(group, "accuracy_after_e_step").to_dict(), seeds, ".3f"),
                    stat_text(_unseen(group, "novelty_auroc").to_dict(), seeds, ".3f"),
                ]
            )
    figure = _plot(groups, docs / f"{stem}-local.png")
    ranked = _ranking(groups)
    body = [
        "## Measured",
        "",
        "Final local accuracy: each node's accuracy on its own test split (task.eval), mean and worst "
        "node, mean ± std over seeds; cost from the runs' wall time and bytes sent.",
        "",
        markdown_pipe_table(header, cells),
        "",
        *(
            line
            for data, labels in ranked
            for line in (f"Measured order by mean local accuracy on `{data}`: {' > '.join(labels)}.", "")
        ),
        *(
            [
                "New nodes (held out of training, `task.unseen_nodes`), Flower runs: accuracy on their own "
                "test split with uniform mixing weights, after adapting by the E-step alone, and the AUROC "
                "of -log p(x) of their test inputs against novel ones (`covariate.novel_inputs`: between two "
                "components of the synthetic mixture; images reflected in the diagonal):",
                "",
                markdown_pipe_table(["method", "before", "after E-step", "novelty AUROC"], unseen),
                "",
            ]
            if unseen
            else []
        ),
        "## The paper",
        "",
        CLAIMS,
        "",
        f"Mean local accuracy per method (bars: mean over seeds, ticks: each seed): ![local]({figure.name})",
        "",
    ]
    return body, [figure]


def _ranking(groups: Sequence[Group]) -> list[tuple[str, list[str]]]:
    """Per dataset (a variant's runs), the methods by mean local accuracy, best first."""
    by_data: dict[str, list[tuple[float, str]]] = {}
    for group in groups:
        mean = group.stat(MEAN).mean
        if mean is not None and group.runs and group.runs[0].config is not None:
            by_data.setdefault(group.runs[0].config.task.dataset, []).append((mean, group.label))
    return [(data, [label for _, label in sorted(pairs, reverse=True)]) for data, pairs in by_data.items()]


def _plot(groups: Sequence[Group], path: Path) -> Path:
    fig, ax = _pyplot().subplots(figsize=(1.6 * max(len(groups), 3), 3.5))
    labels = [g.label for g in groups]
    means = [g.stat(MEAN).mean or 0.0 for g in groups]
    ax.bar(range(len(groups)), means, color="tab:blue", alpha=0.6)
    for i, group in enumerate(groups):
        seeds = [r.figures.get(MEAN) for r in group.runs if r.figures.get(MEAN) is not None]
        ax.plot([i] * len(seeds), seeds, "k_", markersize=14)
    ax.set_xticks(range(len(groups)), labels, rotation=20)
    ax.set_ylabel("final mean local accuracy")
    ax.set_ylim(0, max([1.0, *np.asarray(means)]))
    return _save(fig, path)
