"""Plots of runs (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedgossip.reports.records import by_round, evaluated_records, node_records

if TYPE_CHECKING:
    from fedgossip.config import ScenarioSection
    from fedgossip.reports.groups import Group


def _pyplot():
    """pyplot on the Agg backend (no display needed); in a Jupyter kernel the notebook's own
    backend is kept (its inline backend draws off-screen as well)."""
    import matplotlib

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def pyplot_imported_in_background() -> Iterator[None]:
    """Import pyplot (about 0.5 CPU-s) in a thread during the block, joined at its end: a run does
    it while its fork server imports torch (on the other core), before its nodes start, so that
    the figures at the run's end need not wait for it."""
    thread = threading.Thread(target=_pyplot, name="import-pyplot", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def _figure(**size: Any) -> Any:
    """A matplotlib Figure outside pyplot: returned to API users, never shown nor kept by pyplot."""
    from matplotlib.figure import Figure

    return Figure(**size)


def plot_run(records: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Test accuracy per round: every node thin, the mean bold, the min-max band shaded (the
    evaluated rounds only: `experiment.evaluate_every`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _accuracy(ax, records, title)
    return _save(fig, path, RUN_MARGINS)


def _accuracy(ax: Any, records: list[dict[str, Any]], title: str) -> None:
    """Draw the accuracy of `plot_run` on `ax`."""
    records = evaluated_records(records)
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


def plot_variance(records: list[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Accuracy per round (left, as `plot_run`) beside the variance of each tensor per round
    (right, log scale): the mean over nodes of their `layer_variance`, and the global model's
    (dashed) where a server recorded one. None (nothing written) if no record has a variance."""
    nodes = variance_curves(node_records(records))
    server = variance_curves([r for r in records if r.get("node") == "server"])
    if not nodes and not server:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    _accuracy(left, records, title)
    colours: dict[str, Any] = {}
    for curves, style, suffix in ((nodes, "-", " (mean over nodes)"), (server, "--", " (global)")):
        for name, (rounds, values) in curves.items():
            (line,) = right.plot(rounds, values, style, color=colours.get(name), linewidth=1.5)
            colours.setdefault(name, line.get_color())
            line.set_label(name + (suffix if nodes and server else ""))
    right.set(xlabel="round", ylabel="variance of the tensor's entries", yscale="log")
    plain_log_labels(right.yaxis)
    right.set_title("layer variance after the merge" if nodes else "layer variance of the global model")
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize="x-small", ncol=1 + len(colours) // 12, loc="best")
    return _save(fig, path, RUN_MARGINS)


_MATHTEXT = re.compile(r"\$\\mathdefault\{(.*)\}\$")
_EXPONENT = re.compile(r"\^\{(-?\d+)\}")
_SUPERSCRIPTS = str.maketrans(
    "-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
)


def plain_log_labels(axis: Any) -> None:
    """Label a base-10 log `axis` as matplotlib does by default (10^-3, and 2x10^-3 on a short
    range), in plain text with superscript digits instead of mathtext: building the mathtext
    parser costs ~0.1 CPU-s the first time, which a run pays after its last round."""
    formatter = _plain_log_formatter()
    axis.set_major_formatter(formatter(10))
    axis.set_minor_formatter(formatter(10, labelOnlyBase=False))


@functools.cache
def _plain_log_formatter() -> type:
    """matplotlib's log tick formatter, its labels turned into plain text (`plain_label`)."""
    from matplotlib.ticker import LogFormatterSciNotation

    class PlainLogFormatter(LogFormatterSciNotation):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return plain_label(super().__call__(x, pos))

    return PlainLogFormatter


def plain_label(label: str) -> str:
    """A mathtext tick label of matplotlib's log formatters in plain text (`2\\times10^{-3}` inside
    `$\\mathdefault{...}$` becomes 2, a multiplication sign, 10 and a superscript -3); other labels
    as they are."""
    match = _MATHTEXT.fullmatch(label)
    if match is None:
        return label
    body = match.group(1).replace("\\times", "\u00d7")
    return _EXPONENT.sub(lambda exponent: exponent.group(1).translate(_SUPERSCRIPTS), body)


def variance_curves(records: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """Tensor name -> (rounds, mean over the records of that round of its variance)."""
    values: dict[str, dict[int, list[float]]] = {}
    for record in records:
        for name, variance in (record.get("layer_variance") or {}).items():
            if isinstance(variance, (int, float)) and variance > 0:
                values.setdefault(name, {}).setdefault(record["round"], []).append(variance)
    return {
        name: (sorted(by_round), [float(np.mean(by_round[r])) for r in sorted(by_round)])
        for name, by_round in values.items()
    }


def plot_seed_bands(
    panels: Sequence[tuple[str, str, dict[str, list[dict[int, float]]]]], path: str | Path
) -> Path:
    """Side by side, one panel per (title, y label, curves): every label's curves (one per seed,
    round -> value) as their mean over the seeds having each round, with a band of +- one std;
    log scale (the panels are variances)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (title, ylabel, curves) in zip(axes[0], panels, strict=True):
        for label, seeds in curves.items():
            rounds = sorted({r for curve in seeds for r in curve})
            if not rounds:
                continue
            values = [[curve[r] for curve in seeds if r in curve] for r in rounds]
            mean = np.array([np.mean(v) for v in values])
            std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values])
            (line,) = ax.plot(rounds, mean, linewidth=1.8, label=label)
            low = np.maximum(mean - std, mean * 1e-2)  # a log axis: the band stops above 0
            ax.fill_between(rounds, low, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set(xlabel="round", ylabel=ylabel, title=title, yscale="log")
        plain_log_labels(ax.yaxis)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small", loc="best")
    return _save(fig, path)


def plot_consensus(entries: list[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """The consensus distance (mean L2 distance of the node models to their average) per round;
    None (nothing written) if it was never measured."""
    points = [(e["round"], e["consensus_distance"]) for e in entries if e["consensus_distance"] is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(*zip(*points, strict=True), "o-", linewidth=1.8, markersize=3)
    ax.set(xlabel="round", ylabel="mean L2 distance to the average model", title=title, ylim=(0, None))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_comparison(groups: Sequence[Group], path: str | Path, ticks_per_round: int = 0) -> Path:
    """`comparison_figure` written as PNG."""
    return save_figure(comparison_figure(groups, ticks_per_round), path)


def comparison_figure(groups: Sequence[Group], ticks_per_round: int = 0) -> Any:
    """Mean test accuracy of each group against rounds (left) and seconds (right), averaged over
    its seeds, with a band of +- one std over the seeds; with `ticks_per_round`, against ticks
    only (runs in virtual time: no seconds to compare)."""
    if ticks_per_round:
        fig = _figure(figsize=(7, 4.2))
        by_r = fig.subplots()
        axes = [by_r]
    else:
        fig = _figure(figsize=(11, 4.2))
        by_r, by_t = fig.subplots(1, 2, sharey=True)
        axes = [by_r, by_t]
    scale = ticks_per_round or 1
    for group in groups:
        rounds, mean, std, seconds = group.curves()
        if not rounds:
            continue
        label = f"{group.label} ({len(group.runs)} seeds)" if len(group.runs) > 1 else group.label
        xs = [[r * scale for r in rounds], seconds][: len(axes)]
        (line,) = by_r.plot(xs[0], mean, label=label, linewidth=1.8)
        for ax, x in zip(axes[1:], xs[1:], strict=True):
            ax.plot(x, mean, color=line.get_color(), linewidth=1.8)
        if len(group.runs) > 1:
            for ax, x in zip(axes, xs, strict=True):
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    by_r.set(
        xlabel="tick" if ticks_per_round else "round", ylabel="mean test accuracy over nodes", ylim=(0, 1)
    )
    by_r.xaxis.get_major_locator().set_params(integer=True)
    if not ticks_per_round:
        axes[1].set(xlabel="seconds since launch (mean over seeds; start-up included)", xlim=(0, None))
    for ax in axes:
        ax.grid(alpha=0.3)
    by_r.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def plot_final(groups: Sequence[Group], path: str | Path) -> Path:
    """`final_figure` written as PNG."""
    return save_figure(final_figure(groups), path)


def final_figure(groups: Sequence[Group]) -> Any:
    """Final mean accuracy over nodes of each group: a box over its seeds, every seed a dot."""
    fig = _figure(figsize=(max(5.0, 1.2 * len(groups) + 2), 4.2))
    ax = fig.subplots()
    finals = [[r.figures["final_mean_accuracy"] for r in g.runs] for g in groups]
    finals = [[value for value in values if value is not None] for values in finals]
    positions = list(range(1, len(groups) + 1))
    ax.boxplot(finals, positions=positions, widths=0.5, showfliers=False)
    for x, values in zip(positions, finals, strict=True):
        ax.plot([x] * len(values), values, "o", color="C0", alpha=0.7)
    ax.set_xticks(positions, [g.label for g in groups], rotation=20, ha="right", fontsize="small")
    ax.set(ylabel="final mean test accuracy over nodes", title="final accuracy per method (one dot per seed)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def attacker_fraction(group: Group) -> float | None:
    """The group's scenario.attacker_fraction when it has an attack (None: no attack, or ids)."""
    scenario = _fraction_attack(group)
    return scenario.attacker_fraction if scenario is not None else None


def _fraction_attack(group: Group) -> ScenarioSection | None:
    """The group's scenario if a share of its nodes attack (not named ids), else None."""
    config = group.runs[0].config
    if config is None or config.scenario.attack == "none" or config.scenario.attackers:
        return None
    return config.scenario


def plot_robustness(groups: Sequence[Group], path: str | Path) -> Path:
    """`robustness_figure` written as PNG."""
    return save_figure(robustness_figure(groups), path)


def robustness_figure(groups: Sequence[Group]) -> Any:
    """Final honest mean accuracy against the fraction of attackers, one line per strategy (mean
    over seeds, a band of +- one std); the attack success rate dashed where one is measured."""
    fig = _figure(figsize=(7, 4.2))
    ax = fig.subplots()
    lines: dict[str, list[tuple[float, float, float, float | None]]] = {}
    for group in groups:
        scenario = _fraction_attack(group)
        honest = group.stat("honest_mean_accuracy")
        if scenario is None or honest.mean is None:
            continue
        fraction = scenario.attacker_fraction
        label = f"{group.first['strategy']} ({scenario.attack})"
        success = group.stat("attack_success_rate").mean
        lines.setdefault(label, []).append((fraction, honest.mean, honest.std or 0.0, success))
    for label, points in sorted(lines.items()):
        x, mean, std, success = (np.array(v, dtype=float) for v in zip(*sorted(points), strict=True))
        (line,) = ax.plot(x, mean, "o-", label=label, linewidth=1.8)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        if not np.isnan(success).all():
            ax.plot(x, success, "s--", color=line.get_color(), label=f"{label}: attack success")
    ax.set(xlabel="fraction of attackers", ylabel="final honest mean test accuracy", ylim=(0, 1))
    ax.set_title("robustness: honest nodes' accuracy against the attackers' share")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Margins:
    """A figure's margins in inches (and the gap between side-by-side axes, in inches too): fixed
    where the axes' labels are known in advance, so the figure is laid out without `tight_layout`,
    which draws it once more only to measure them (a third of a run's figure time)."""

    left: float
    right: float
    bottom: float
    top: float
    gap: float = 0.0

    def apply(self, fig: Any) -> None:
        width, height = fig.get_size_inches()
        columns = max(1, len(fig.axes))
        axes_width = (width - self.left - self.right - self.gap * (columns - 1)) / columns
        fig.subplots_adjust(
            left=self.left / width,
            right=1 - self.right / width,
            bottom=self.bottom / height,
            top=1 - self.top / height,
            wspace=self.gap / axes_width,
        )


# a run's accuracy figure and its variance figure: ticks 0.0-1.0 on the left axis and 10^-k on a log
# right axis, whatever the records hold (what tight_layout gave them, with room to spare)
RUN_MARGINS = Margins(left=0.72, right=0.16, bottom=0.6, top=0.38, gap=0.95)


def _save(fig: Any, path: str | Path, margins: Margins | None = None) -> Path:
    """Write a pyplot figure as PNG and close it: laid out by `margins`, else by tight_layout."""
    if margins is None:
        fig.tight_layout()
    else:
        margins.apply(fig)
    save_figure(fig, path)
    _pyplot().close(fig)
    return Path(path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a figure as PNG (the figures of every report: 120 dpi)."""
    fig.savefig(path, dpi=120)
    return Path(path)
