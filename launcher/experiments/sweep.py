"""`fedgossip sweep`: a grid of config values times N seeds, each run a child `fedgossip run`.

Orchestration only. Every run is a `fedgossip run` process of its own, so one run's crash never
stops the sweep; J run at a time. Run folders are DIR/<key=value>_..._seed=<seed>, each run's
launcher output is DIR/logs/<name>.log and DIR/sweep.json lists every run and how it ended.

Seeds are the config's experiment.seed + 0, 1, ..., N-1: reproducible, and the first one is the
plain `fedgossip run` of the config. A run whose summary.json says it reached its end (FINISHED)
with the same config is skipped, so the same command run again after Ctrl-C or a crash runs only
what is missing; a run folder left unfinished (interrupted, failed, no summary) is removed and
run again (its launcher output stays in its log). Ctrl-C (or SIGTERM) stops every running run
through its own shutdown: each stops its nodes and keeps its finished rounds. The sweep folder
is claimed for the sweep's life (launcher/runs/claim.py): a second sweep into it is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from fedgossip.base.files import write_json
from fedgossip.base.signals import Shutdown
from fedgossip.config import ExperimentConfig, dump_toml, load_config
from fedgossip.launcher.runs.claim import FolderClaim, check_free, wait_free
from fedgossip.launcher.runs.progress import RunProgress
from fedgossip.launcher.supervision.processes import Child, child_env, python_module, supervised
from fedgossip.reports.groups import seed_tag
from fedgossip.reports.records import CONFIG, METRICS, read_config_table
from fedgossip.reports.summary import read_summary
from fedgossip.reports.tracking import Track
from fedgossip.scenario.topology import run_graph

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FINISHED = ("complete", "partial", "degraded")  # the run reached its end: rerunning changes nothing
STOP_GRACE_S = 30.0  # a run's own shutdown (stopping its nodes, writing its summary) before SIGKILL
POLL_S = 0.2
MAX_NAME = 120  # characters of a run folder's name; longer (or unsafe) names end in a hash
SAFE = re.compile(r"[^A-Za-z0-9._=+-]")
SWEEP_JSON = "sweep.json"


@dataclass(frozen=True)
class SweepRun:
    """One run of the sweep: its folder name, its `--set` overrides (grid values and seed) and its
    validated config."""

    name: str
    overrides: tuple[str, ...]
    seed: int
    config: ExperimentConfig


@dataclass
class RunResult:
    """How one run of the sweep ended."""

    name: str
    seed: int
    overrides: tuple[str, ...]
    status: str
    exit_code: int | None = None
    seconds: float | None = None
    skipped: bool = False

    @classmethod
    def of(cls, run: SweepRun, status: str, **how: Any) -> RunResult:
        """The result of `run` with `status` (and exit_code, seconds, skipped)."""
        return cls(run.name, run.seed, run.overrides, status, **how)


@dataclass
class SweepOutcome:
    """The runs of a sweep and how the sweep ended."""

    results: list[RunResult] = field(default_factory=list)
    interrupted: bool = False
    exit_code: int = 0
    wall_time_s: float = 0.0


def split_values(raw: str) -> list[str]:
    """`v1,v2,...` split on the commas outside brackets, braces and quotes (a TOML list is one value)."""
    values, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(raw):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(raw[start:index].strip())
            start = index + 1
    return [*values, raw[start:].strip()]


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`--grid section.key=v1,v2` options as (key, values), checked for form and repeats."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or "." not in key or not all(key.split(".")):
            raise ValueError(f"--grid expects section.key=v1,v2,...; got {item!r}")
        if key == "experiment.seed":
            raise ValueError("--grid experiment.seed: seeds come from --seeds (and the config's seed)")
        if any(key == known for known, _ in grid):
            raise ValueError(f"--grid {key} is given twice: give all its values in one --grid")
        values = split_values(raw)
        if not all(values):
            raise ValueError(f"--grid {key}: empty value in {raw!r}")
        if len(set(values)) < len(values):
            raise ValueError(f"--grid {key}: a value is repeated in {raw!r}")
        grid.append((key, values))
    return grid


def run_name(point: Sequence[tuple[str, str]], seed: int) -> str:
    """The folder name of a grid point and seed: key=value pairs joined by "_", then seed=N; a
    name with characters unsafe in file names, or too long, is cut and ends in a hash of it."""
    name = "_".join([*(f"{key}={value}" for key, value in point), seed_tag(seed)])
    safe = SAFE.sub("-", name)
    if safe == name and len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{safe[: MAX_NAME - len(seed_tag(seed)) - 13]}-{digest}_{seed_tag(seed)}"


def plan(
    config_path: Path | None, overrides: Sequence[str], grid: Sequence[str], seeds: int
) -> list[SweepRun]:
    """Every run of the sweep, each config validated (a bad key or value raises ValueError naming
    the run) before anything runs."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    base = load_config(config_path, overrides)
    points: list[list[tuple[str, str]]] = [[]]
    for key, values in parse_grid(grid):
        points = [[*point, (key, value)] for point in points for value in values]
    runs = [
        plan_run(config_path, overrides, run_name(point, seed), [f"{k}={v}" for k, v in point], seed)
        for point in points
        for seed in seed_range(base, seeds)
    ]
    if len({run.name for run in runs}) < len(runs):
        raise ValueError("two grid points give the same run folder name: make their values differ more")
    return runs


def sweep_folder(
    config_path: Path | None,
    overrides: Sequence[str],
    grid: Sequence[str],
    seeds: int,
    jobs: int | None,
    out: Path,
    console: Console,
    track: Track | None = None,
) -> SweepOutcome:
    """`fedgossip sweep CONFIG --set ... --grid ... --seeds N [--jobs J] --out OUT [--track T]` up to
    its outcome (every run checked before any starts); the one path of the CLI and the Python API."""
    planned = plan(config_path, overrides, grid, seeds)
    jobs = default_jobs(planned) if jobs is None else jobs
    return run_sweep(config_path, planned, overrides, out, jobs, console, track=track)


def seed_range(base: ExperimentConfig, seeds: int) -> range:
    """The seeds of `seeds` runs of `base`: its experiment.seed + 0, 1, ..., seeds - 1."""
    return range(base.experiment.seed, base.experiment.seed + seeds)


def plan_run(
    config_path: Path | None, overrides: Sequence[str], name: str, settings: Sequence[str], seed: int
) -> SweepRun:
    """The run `name` of the config with `overrides`, then `settings` (its own `--set` items) and
    `seed`, validated (a bad key or value, or a gossip topology that cannot be built or merged on,
    raises ValueError naming the run)."""
    run_overrides = (*settings, f"experiment.seed={seed}")
    try:
        config = load_config(config_path, [*overrides, *run_overrides])
        if config.experiment.mode == "gossip":
            run_graph(config)
    except ValueError as err:
        raise ValueError(f"run {name}: {err}") from None
    return SweepRun(name, run_overrides, seed, config)


def default_jobs(runs: Sequence[SweepRun]) -> int:
    """Runs at once by default: the cores over the nodes of the biggest run (at least 1). Each run
    already runs a process per node, so more runs at once would only compete for the cores and
    distort the seconds-to-target and wall-time figures the sweep is there to compare."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(run.config.nodes.count for run in runs))


def same_config(path: Path, config: ExperimentConfig) -> bool:
    """Whether the run folder `path` holds a run of `config`: the same resolved config, keys added
    to fedgossip since that run was made taking their defaults (so an upgrade keeps a sweep's
    finished runs); a key fedgossip no longer knows makes it another config."""
    wanted = tomllib.loads(dump_toml(config))
    if read_config_table(path) == wanted:
        return True
    try:
        return tomllib.loads(dump_toml(load_config(path / CONFIG))) == wanted
    except (OSError, ValueError):
        return False


def folder_state(path: Path, config: ExperimentConfig) -> str:
    """The status in the summary of the run folder `path` of `config` if that run reached its end
    (one of FINISHED); else "missing" (nothing there) or "unfinished". A folder that holds a run
    of another config raises ValueError: it is never removed nor skipped."""
    if not (path / CONFIG).exists() and not (path / METRICS).exists():
        return "missing"
    if not same_config(path, config):
        raise ValueError(f"{path} holds a run of another config: choose another --out or remove it")
    status = (read_summary(path) or {}).get("status")
    return status if status in FINISHED else "unfinished"


def run_sweep(
    config_path: Path | None,
    runs: Sequence[SweepRun],
    overrides: Sequence[str],
    out: Path,
    jobs: int,
    console: Console,
    finish: Callable[[SweepOutcome], object] | None = None,
    track: Track | None = None,
) -> SweepOutcome:
    """Run every run of `runs` not finished yet into `out`, `jobs` at a time (each tracked in
    `track.in_sweep`, if given); write sweep.json, then call `finish(outcome)` (a reproduction writes
    its plan). The sweep folder is claimed from the first look at it to the end: a second command
    into it is refused (FolderInUse)."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1; got {jobs}")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with FolderClaim(out) as claim:
        if claim.stale is not None:
            stale = f"{out} was claimed by a command that died ({claim.stale}): taken over"
            console.print(f"[yellow]{escape(stale)}[/]")
        outcome = _sweep(config_path, runs, overrides, out, jobs, console, track)
        _write_record(out, config_path, overrides, jobs, outcome)
        if finish is not None:
            finish(outcome)
    return outcome


def _sweep(
    config_path: Path | None,
    runs: Sequence[SweepRun],
    overrides: Sequence[str],
    out: Path,
    jobs: int,
    console: Console,
    track: Track | None,
) -> SweepOutcome:
    """`run_sweep` in its claimed folder, up to the outcome."""
    states = {run.name: _state(out / run.name, run.config) for run in runs}  # raises before any run
    done = {
        run.name: RunResult.of(run, states[run.name], skipped=True)
        for run in runs
        if states[run.name] in FINISHED
    }
    pending = [run for run in runs if run.name not in done]
    (out / "logs").mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]sweep[/]: {len(runs)} runs, {len(done)} already done, "
        f"{max(1, min(jobs, len(pending)))} at a time -> {escape(str(out))}"
    )
    outcome = SweepOutcome()
    started = time.time()
    running: dict[str, tuple[SweepRun, Child, float]] = {}
    with (
        Shutdown() as shutdown,
        supervised() as children,
        RunProgress(console, len(runs), len(done)) as bar,
    ):
        try:
            while pending or running:
                while pending and len(running) < jobs:
                    run = pending.pop(0)
                    state, why = _state_now(out / run.name, run.config)
                    if state != "missing" and state != "unfinished":
                        done[run.name] = RunResult.of(run, state, skipped=not why)
                        bar.started(run.name)
                        bar.finished(run.name, _skipped_line(run.name, state, why))
                        continue
                    if state == "unfinished":
                        shutil.rmtree(out / run.name)
                    child = _start(config_path, overrides, run, out, track)
                    children.append(child)
                    running[run.name] = (run, child, time.time())
                    bar.started(run.name)
                time.sleep(POLL_S)
                for name, (run, child, since) in list(running.items()):
                    if child.poll() is not None:
                        del running[name]
                        done[name] = _result(run, child.stop(), time.time() - since, out)
                        bar.finished(name, _line(done[name]))
        except KeyboardInterrupt:
            outcome.interrupted = True
            shutdown.begin()
            for _, child, _ in running.values():
                child.terminate()
            for name, (run, child, since) in running.items():
                done[name] = _result(run, child.stop(STOP_GRACE_S), time.time() - since, out)
        finally:
            shutdown.begin()
    outcome.wall_time_s = time.time() - started
    outcome.results = [done.get(run.name, RunResult.of(run, "not run")) for run in runs]
    outcome.exit_code = _exit_code(outcome, shutdown)
    return outcome


def _state(path: Path, config: ExperimentConfig) -> str:
    """`folder_state` of a run folder once no command holds it: a run of a sweep killed a moment
    ago may still be stopping (its watchdog stops it); FolderInUse if it still runs after that."""
    wait_free(path, STOP_GRACE_S)
    return folder_state(path, config)


def _state_now(path: Path, config: ExperimentConfig) -> tuple[str, str]:
    """The state of a run folder as its run is about to start, and why it cannot ("" if it can):
    another command may have run it, or be running it, since the sweep first looked."""
    try:
        check_free(path)
        return folder_state(path, config), ""
    except ValueError as err:  # FolderInUse, or a run of another config written there since
        return "not run", str(err)


def _skipped_line(name: str, state: str, why: str) -> str:
    """The progress line of a run not started: finished meanwhile by another command, or in the way."""
    if why:
        return f"{escape(name)}: [red]not run[/]: {escape(why)}"
    return f"{escape(name)}: [green]{escape(state)}[/], finished by another command meanwhile"


def _start(
    config_path: Path | None, overrides: Sequence[str], run: SweepRun, out: Path, track: Track | None
) -> Child:
    """Start `fedgossip run` for `run`, its output appended to DIR/logs/NAME.log."""
    args = [] if config_path is None else [str(config_path)]
    settings = [arg for item in (*overrides, *run.overrides) for arg in ("--set", item)]
    tracked = [] if track is None else track.in_sweep(out, run.name).argv()
    return Child(
        run.name,
        python_module(
            "fedgossip.launcher.cli", "run", *args, "--out", str(out / run.name), *settings, *tracked
        ),
        log_path=out / "logs" / f"{run.name}.log",
        env=child_env(1),
    )


def _result(run: SweepRun, code: int, seconds: float, out: Path) -> RunResult:
    """How a run ended: its summary's status ("failed" if it wrote none: it crashed)."""
    status = (read_summary(out / run.name) or {}).get("status", "failed")
    return RunResult.of(run, str(status), exit_code=code, seconds=round(seconds, 3))


def _line(result: RunResult) -> str:
    colour = "green" if result.status == "complete" else "yellow" if result.status in FINISHED else "red"
    return (
        f"{escape(result.name)}: [{colour}]{escape(result.status)}[/] in {result.seconds:.1f}s "
        f"(exit {result.exit_code})"
    )


def _exit_code(outcome: SweepOutcome, shutdown: Shutdown) -> int:
    """130/143 if interrupted; 1 if a run did not reach its end; 3 if one is partial or degraded."""
    if outcome.interrupted:
        return shutdown.exit_code
    statuses = {result.status for result in outcome.results}
    if not statuses <= set(FINISHED):
        return 1
    return 0 if statuses <= {"complete"} else 3


def _write_record(
    out: Path, config_path: Path | None, overrides: Sequence[str], jobs: int, outcome: SweepOutcome
) -> None:
    """DIR/sweep.json: what was swept and how every run ended (this invocation's view)."""
    record = {
        "config": str(config_path) if config_path is not None else "quickstart",
        "overrides": list(overrides),
        "jobs": jobs,
        "interrupted": outcome.interrupted,
        "wall_time_s": round(outcome.wall_time_s, 3),
        "runs": [{**result.__dict__, "overrides": list(result.overrides)} for result in outcome.results],
    }
    write_json(out / SWEEP_JSON, record)  # whole or as it was: a full disk never leaves it empty
