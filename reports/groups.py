"""Runs of one config that differ only by their seed, grouped, with mean +- std over the seeds.

A run is read from its results folder only: the accuracy figures are recomputed from its metrics
records (so a missing or torn summary.json changes nothing), the status and wall time come from
its summary.json. The std is the sample standard deviation (ddof = 1), None for a single seed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedgossip.config import ExperimentConfig
from fedgossip.reports.local_accuracy import MEAN, MIN, local_summary
from fedgossip.reports.mechanisms import mechanism_figures, mechanism_reports
from fedgossip.reports.records import DEFAULT_TARGET, config_table, read_config, read_records
from fedgossip.reports.scenario import scenario_summary
from fedgossip.reports.summary import (
    accuracy_summary,
    config_figures,
    mode_label,
    read_summary,
    round_curve,
    schedule_of,
)

SEED_SUFFIX = re.compile(r"(^|_)seed=\d+$")  # a sweep's run is named <grid point>_seed=<seed>
STATUS_SEVERITY = ("complete", "degraded", "partial", "unknown", "interrupted", "failed")

STATS = (  # (key of the run's figures, key in the comparison)
    ("final_mean_accuracy", "final_mean_accuracy"),
    ("final_min_accuracy", "final_min_accuracy"),
    ("rounds_to_target", "rounds_to_target"),
    ("seconds_to_target", "seconds_to_target"),
    ("bytes_sent", "bytes_sent"),
    ("wall_time_s", "wall_time_s"),
    ("honest_mean_accuracy", "honest_mean_accuracy"),
    ("honest_min_accuracy", "honest_min_accuracy"),
    ("attack_success_rate", "attack_success_rate"),
    (MEAN, MEAN),  # task.eval local or both
    (MIN, MIN),
)


def stat_keys() -> tuple[tuple[str, str], ...]:
    """STATS and every registered mechanism's numeric figures (None for runs of other strategies)."""
    return (*STATS, *((key, key) for report in mechanism_reports() for key in report.stats))


def label_keys() -> tuple[str, ...]:
    """Every registered mechanism's text figures (a group shows its first run's)."""
    return tuple(key for report in mechanism_reports() for key in report.labels)


def seed_tag(seed: int) -> str:
    """The end of a sweep run's folder name: what `group_runs` strips to label the group."""
    return f"seed={seed}"


@dataclass(frozen=True)
class Stat:
    """Mean and sample std of one figure over the seeds that have it (`n` of them)."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        present = [float(v) for v in values if v is not None]
        if not present:
            return cls(None, None, 0)
        std = float(np.std(present, ddof=1)) if len(present) > 1 else None
        return cls(float(np.mean(present)), std, len(present))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


@dataclass
class Run:
    """One results folder: its config (seed apart), its figures and its mean-accuracy curve."""

    path: Path
    seed: int | None
    config: ExperimentConfig | None  # None: its config.toml is missing or unreadable
    figures: dict[str, Any]
    curve: dict[int, tuple[float, float]]  # round -> (mean accuracy over nodes, seconds)

    @property
    def status(self) -> str:
        return str(self.figures.get("status") or "unknown")


def load_run(path: Path, target: float | None = None) -> Run:
    """Read one results folder; `target` overrides the config's target accuracy."""
    config = read_config(path)
    records = read_records(path)
    own_target = config.experiment.target_accuracy if config is not None else DEFAULT_TARGET
    goal = float(target if target is not None else own_target)
    figures = {
        **config_figures(config, path),
        **_launcher_info(path),
        **accuracy_summary(records, goal, schedule_of(config)),
        **scenario_summary(records, config),
        **local_summary(records),
        **mechanism_figures(records, config),
        "target_accuracy": goal,
    }
    seed = config.experiment.seed if config is not None else None
    return Run(path, seed, config, figures, round_curve(records))


def _launcher_info(path: Path) -> dict[str, Any]:
    """Status and wall time from the run's summary.json (status "unknown" if missing or torn)."""
    summary = read_summary(path) or {}
    return {"status": summary.get("status", "unknown"), "wall_time_s": summary.get("wall_time_s")}


@dataclass
class Group:
    """The runs of one config that differ only by their seed."""

    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def first(self) -> dict[str, Any]:
        return self.runs[0].figures

    def stat(self, key: str) -> Stat:
        return Stat.of(run.figures.get(key) for run in self.runs)

    def status(self) -> str:
        """The status of every run if they share one; else how many ended in each, worst first."""
        statuses = [run.status for run in self.runs]
        if len(set(statuses)) == 1:
            return statuses[0]
        worst_first = sorted(set(statuses), key=_severity, reverse=True)
        return ", ".join(f"{statuses.count(s)} {s}" for s in worst_first)

    def row(self) -> dict[str, Any]:
        """The group as one comparison row (JSON-ready)."""
        first = self.first
        return {
            "label": self.label,
            "strategy": first["strategy"],
            "mode": mode_label(first),
            "nodes": first["nodes"],
            "evaluate_every": first.get("evaluate_every", 1),
            "eval_examples": first.get("eval_examples", 0),
            "scenario": first["scenario"],
            **{key: first[key] for key in label_keys()},
            "seeds": len(self.runs),
            "target_accuracy": first["target_accuracy"],
            **{name: self.stat(key).to_dict() for key, name in stat_keys()},
            "status": self.status(),
            "runs": [
                {"path": str(run.path), "seed": run.seed, "status": run.status, **_run_figures(run)}
                for run in self.runs
            ],
        }

    def curves(self) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
        """Rounds, and per round the mean and std over seeds of the mean accuracy and the mean
        seconds, over the seeds that reached that round (std 0 for a single seed)."""
        rounds = sorted({r for run in self.runs for r in run.curve})
        acc, seconds, spread = [], [], []
        for r in rounds:
            points = [run.curve[r] for run in self.runs if r in run.curve]
            accs = [a for a, _ in points]
            acc.append(float(np.mean(accs)))
            spread.append(float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0)
            seconds.append(float(np.mean([t for _, t in points])))
        return rounds, np.array(acc), np.array(spread), np.array(seconds)


def _severity(status: str) -> int:
    """How bad a run status is (an unknown word counts as the worst)."""
    return STATUS_SEVERITY.index(status) if status in STATUS_SEVERITY else len(STATUS_SEVERITY)


def _run_figures(run: Run) -> dict[str, Any]:
    return {key: run.figures.get(key) for key, _ in stat_keys()}


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group `runs` whose configs are equal but for experiment.seed, in the order first seen; each
    group's runs in seed order. Labels: the first run's folder name without a sweep's seed suffix
    (the experiment name if nothing is left), made unique with the parent folder's name (then a
    number) where two groups would share one."""
    groups: list[tuple[str, Group]] = []
    for run in runs:
        key = _config_key(run.config)
        group = next((g for k, g in groups if k == key), None)
        if group is None:
            group = Group(SEED_SUFFIX.sub("", run.path.name) or str(run.figures["name"]))
            groups.append((key, group))
        group.runs.append(run)
    result = [g for _, g in groups]
    for group in result:
        group.runs.sort(key=lambda run: (run.seed is None, run.seed or 0, run.path.name))
    _unique_labels(result)
    return result


def _config_key(config: ExperimentConfig | None) -> str:
    """What runs of one group share: their whole config but experiment.seed, as JSON."""
    table = config_table(config)
    table.get("experiment", {}).pop("seed", None)
    return json.dumps(table, sort_keys=True, default=str)


def _unique_labels(groups: list[Group]) -> None:
    """Prefix clashing labels with the parent folder's name; number any that still clash."""
    for rename in (lambda g, _: f"{g.runs[0].path.parent.name}/{g.label}", lambda g, i: f"{g.label}#{i}"):
        seen: dict[str, list[Group]] = {}
        for group in groups:
            seen.setdefault(group.label, []).append(group)
        for same in seen.values():
            if len(same) > 1:
                for index, group in enumerate(same, 1):
                    group.label = rename(group, index)
