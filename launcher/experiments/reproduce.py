"""`fedgossip reproduce NAME`: a paper's experiment (declared as data in `papers.py`) planned and
run by the sweep machinery.

A reproduction is a base config (a TOML of the repository), a list of methods, a number of seeds,
and three settings (`quick`, `default`, `full`), each a list of `--set` overrides on the base.
Its runs are a sweep's
(`launcher/experiments/sweep.py`: one `fedgossip run` per run into OUT/<label>_seed=<seed>, runs already
finished skipped, so the same command resumes after Ctrl-C); the figures and the write-up are made
by `reports/reproductions.py` from the runs' results folders and OUT/reproduction.json.

An `optional` method needs a config key that may not exist yet (asynchronous gossip): it is run
only when the config accepts its overrides, and the write-up says why it was skipped otherwise.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from fedgossip.base.files import write_json
from fedgossip.config import load_config
from fedgossip.launcher.experiments.papers import IN_PROCESS, REPRODUCTIONS, SETTINGS, Method, Reproduction
from fedgossip.launcher.experiments.sweep import SweepOutcome, SweepRun, plan_run, run_sweep, seed_range
from fedgossip.reports.groups import seed_tag
from fedgossip.reports.reproductions import PLAN_JSON


@dataclass
class Plan:
    """What one `fedgossip reproduce` runs: the runs (sweep runs), the overrides common to them,
    the methods skipped (with why) and the notes for the write-up."""

    reproduction: Reproduction
    setting: str
    overrides: tuple[str, ...]
    seeds: int
    methods: list[tuple[Method, list[SweepRun]]] = field(default_factory=list)
    skipped: list[tuple[Method, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        """The base config of the planned setting."""
        return self.reproduction.config_path(self.setting)

    @property
    def runs(self) -> list[SweepRun]:
        """Every run, method by method, seed by seed."""
        return [run for _, runs in self.methods for run in runs]

    def record(self) -> dict[str, Any]:
        """The plan as OUT/reproduction.json (JSON-ready): what the write-up is made from."""
        setting = self.reproduction.settings[self.setting]
        return {
            "name": self.reproduction.name,
            "title": self.reproduction.title,
            "config": self.reproduction.config_of(self.setting),
            "setting": self.setting,
            "scale": setting.scale,
            "seeds": self.seeds,
            "default_seeds": setting.seeds,
            "ticks_per_round": setting.ticks_per_round,
            "overrides": list(self.overrides),
            "methods": [
                {"label": m.label, "overrides": list(m.overrides), "runs": [run.name for run in runs]}
                for m, runs in self.methods
            ],
            "skipped": [
                {"label": m.label, "overrides": list(m.overrides), "why": why} for m, why in self.skipped
            ],
            "notes": self.notes,
        }


def lookup(name: str) -> Reproduction:
    """The reproduction called `name`; ValueError listing the names otherwise."""
    if name not in REPRODUCTIONS:
        raise ValueError(f"unknown reproduction {name!r}; known: {', '.join([*REPRODUCTIONS, *IN_PROCESS])}")
    return REPRODUCTIONS[name]


def plan(name: str, setting: str = "default", seeds: int | None = None) -> Plan:
    """Every run of reproduction `name` at `setting` (quick, default or full) with `seeds` seeds
    (None: the setting's), each config validated before anything runs; optional methods the
    config refuses are skipped."""
    reproduction = lookup(name)
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {', '.join(SETTINGS)}; got {setting!r}")
    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    config_path = reproduction.config_path(setting)
    if not config_path.is_file():
        raise ValueError(
            f"{reproduction.config_of(setting)} not found: run `fedgossip reproduce` from the root of a "
            "clone of the repository"
        )
    chosen = reproduction.settings[setting]
    seeds = chosen.seeds if seeds is None else seeds
    overrides, notes = list(chosen.overrides), []
    for fallback in reproduction.fallbacks:
        if setting in fallback.settings and importlib.util.find_spec(fallback.module) is None:
            overrides += fallback.overrides
            notes.append(fallback.note)
    result = Plan(reproduction, setting, tuple(overrides), seeds, notes=notes)
    base = load_config(config_path, overrides)
    for method in reproduction.methods_of(setting):
        if method.optional:
            try:
                load_config(config_path, [*overrides, *method.overrides])
            except ValueError as err:
                result.skipped.append((method, str(err)))
                continue
        runs = [
            plan_run(config_path, overrides, run_folder(method, seed), method.overrides, seed)
            for seed in seed_range(base, seeds)
        ]
        result.methods.append((method, runs))
    return result


def run_folder(method: Method, seed: int) -> str:
    """The results folder name of `method`'s run with `seed` (grouped by label in the reports)."""
    return f"{method.label}_{seed_tag(seed)}"


def default_out(name: str, setting: str) -> Path:
    """Where the runs go by default: results/reproduce/NAME (NAME-quick, NAME-full)."""
    return Path("results") / "reproduce" / (name if setting == "default" else f"{name}-{setting}")


def reproduce(planned: Plan, out: Path, jobs: int, console: Console) -> SweepOutcome:
    """Run the planned runs not finished yet into `out` (a sweep) and write OUT/reproduction.json
    (while the sweep still holds the folder)."""

    def write_plan(outcome: SweepOutcome) -> None:
        write_json(out / PLAN_JSON, {**planned.record(), "wall_time_s": round(outcome.wall_time_s, 3)})

    return run_sweep(planned.config_path, planned.runs, planned.overrides, out, jobs, console, write_plan)
