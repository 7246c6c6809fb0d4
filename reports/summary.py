"""The summary of one run: final accuracies, time and rounds to a target accuracy, bytes moved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedgossip.base.files import write_json
from fedgossip.config import ExperimentConfig
from fedgossip.reports.fedgmm import unseen_summary
from fedgossip.reports.local_accuracy import local_summary
from fedgossip.reports.mechanisms import mechanism_report
from fedgossip.reports.privacy import privacy_summary
from fedgossip.reports.records import (
    DEFAULT_TARGET,
    SUMMARY,
    by_round,
    evaluated_records,
    node_records,
    read_config,
    read_consensus,
    read_records,
)
from fedgossip.reports.scenario import last_records, scenario_summary


def summarize(run_dir: str | Path, run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute the summary of a results folder, merge the launcher's `run_info`, write summary.json."""
    summary = build_summary(run_dir, run_info)
    write_summary(Path(run_dir) / SUMMARY, summary)
    return summary


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's summary.json as written by its launcher; None if missing or torn (a killed launcher,
    a full disk) or not a JSON object."""
    try:
        summary = json.loads((Path(run_dir) / SUMMARY).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return summary if isinstance(summary, dict) else None


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    """summary.json: the summary as indented JSON, replaced whole (never left cut by a full disk)."""
    write_json(path, summary)


def build_summary(run_dir: str | Path, run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary of a results folder merged with the launcher's `run_info`, without writing it."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    records = read_records(run_dir)
    target = config.experiment.target_accuracy if config is not None else DEFAULT_TARGET
    summary: dict[str, Any] = {
        **config_figures(config, run_dir),
        "rounds_planned": config.experiment.rounds if config is not None else None,
        "target_accuracy": target,
        **accuracy_summary(records, target, schedule_of(config)),
        **consensus_summary(read_consensus(run_dir, records)),
        **scenario_summary(records, config),
        **privacy_summary(records),
        **local_summary(records),
        **unseen_summary(run_dir, config),
        **(run_info or {}),
    }
    report = mechanism_report(summary["strategy"])
    own = None if report is None else report.summary(records, config)
    if own is not None:  # a mechanism's object, e.g. fair incentives' "fair"
        summary[report.name] = own
    return summary


def config_figures(config: ExperimentConfig | None, run_dir: Path) -> dict[str, Any]:
    """What a run's config says of it in its summary and a comparison: name, mode, Flower engine,
    strategy, nodes, gossip schedule, evaluate_every, eval_examples (a run whose config cannot be
    read: its folder's name, gossip, every round evaluated on the whole test set)."""
    if config is None:
        said: dict[str, Any] = {
            "name": run_dir.name,
            "mode": "gossip",
            "engine": None,
            "strategy": None,
            "nodes": None,
            "evaluate_every": 1,
            "eval_examples": 0,
        }
    else:
        said = {
            "name": config.experiment.name,
            "mode": config.experiment.mode,
            "engine": config.flower.engine if config.experiment.mode == "flower" else None,
            "strategy": config.strategy.name,
            "nodes": config.nodes.count,
            "evaluate_every": config.experiment.evaluate_every,
            "eval_examples": config.task.eval_examples,
        }
    return {**said, "schedule": schedule_of(config)}


def schedule_of(config: ExperimentConfig | None) -> str | None:
    """A gossip run's schedule ("sync" or "async"), None for a Flower run ("sync" without a config)."""
    if config is None:
        return "sync"
    return config.gossip.schedule if config.experiment.mode == "gossip" else None


def mode_label(summary: dict[str, Any]) -> str:
    """How a run ran, for tables: "gossip", "gossip/async" or "flower/ENGINE"."""
    mode = str(summary.get("mode", ""))
    detail = summary.get("engine") or ("async" if summary.get("schedule") == "async" else None)
    return f"{mode}/{detail}" if detail else mode


def accuracy_summary(
    records: list[dict[str, Any]], target: float, schedule: str | None = "sync"
) -> dict[str, Any]:
    """Final mean/min accuracy over nodes, the per-round mean curve, rounds/seconds to `target`.

    Only evaluated records count (`experiment.evaluate_every`): the final accuracy is each node's
    last evaluated one, the curve has null for a round not evaluated. Rounds to the target: the
    first evaluated round (async gossip: local unit) whose mean accuracy over the nodes reaches
    it. Seconds: when that round ended (its slowest node); async gossip, whose nodes are not in
    step: the first time the mean of every node's latest accuracy reached it."""
    nodes = node_records(records)
    tested = evaluated_records(nodes)
    last = last_records(tested)
    final = [r["test_accuracy"] for r in last.values()]
    curve = round_curve(tested)
    reached, seconds = first_reaching(curve, target)
    if schedule == "async":  # no rounds in common: the first moment the nodes' latest mean gets there
        seconds = next((t for t, acc in time_curve(tested) if acc >= target), None)
    rounds = list(by_round(nodes))
    return {
        "rounds_completed": max(rounds, default=0),
        "final_mean_accuracy": float(np.mean(final)) if final else None,
        "final_min_accuracy": float(np.min(final)) if final else None,
        "final_max_accuracy": float(np.max(final)) if final else None,
        "rounds_to_target": reached,
        "seconds_to_target": seconds,
        "bytes_sent": int(sum(r.get("bytes_sent", 0) for r in nodes)),
        "bytes_received": int(sum(r.get("bytes_received", 0) for r in nodes)),
        "mean_accuracy_by_round": [round(curve[r][0], 5) if r in curve else None for r in rounds],
        "final_accuracy_by_node": {str(n): last[n]["test_accuracy"] for n in sorted(last)},
        # the round each node's final figure comes from: the nodes (and rounds) the finals cover
        "final_round_by_node": {str(n): last[n]["round"] for n in sorted(last)},
    }


def first_reaching(curve: dict[int, tuple[float, float]], target: float) -> tuple[int | None, float | None]:
    """The first round of a `round_curve` whose mean accuracy is >= `target`, and its seconds
    ((None, None) if none is)."""
    reached = next((r for r, (acc, _) in curve.items() if acc >= target), None)
    return reached, None if reached is None else curve[reached][1]


def consensus_summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The last measured consensus distance and its round (None when it was not measured)."""
    measured = [e for e in entries if e["consensus_distance"] is not None]
    last = measured[-1] if measured else {}
    return {
        "final_consensus_distance": last.get("consensus_distance"),
        "final_consensus_round": last.get("round"),
    }


def round_curve(records: list[dict[str, Any]]) -> dict[int, tuple[float, float]]:
    """Per evaluated round, in order: the mean test accuracy over the nodes that recorded it and
    the time the round ended (its slowest evaluated node's `time_s`)."""
    return {
        r: (float(np.mean([x["test_accuracy"] for x in group])), max(x["time_s"] for x in group))
        for r, group in by_round(evaluated_records(records)).items()
    }


def time_curve(records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """At each record's `time_s`, from the first moment every node has one, the mean over the
    nodes of their latest test accuracy: accuracy against time when nodes are not in step
    (pass evaluated records only)."""
    nodes = {r["node"] for r in records}
    latest: dict[Any, float] = {}
    curve = []
    for r in sorted(records, key=lambda r: r["time_s"]):
        latest[r["node"]] = r["test_accuracy"]
        if len(latest) == len(nodes):
            curve.append((float(r["time_s"]), float(np.mean(list(latest.values())))))
    return curve
