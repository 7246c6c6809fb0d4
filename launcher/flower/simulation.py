"""The "simulation" Flower engine: Flower's Ray-based simulation runtime, called in process by one
child of the launcher (launcher/flower/simulation_process.py), with no SuperLink, `flwr run` or
SuperExec in between (they cost ~7.6 s before the first round).

Why a child process and not the launcher's own: Ray's driver state (ray.init, its log and signal
handling) and Flower's globals (TaskIdentity, the "flwr" logger) stay out of the launcher, Ray's
GCS, raylet and workers are all descendants of one PID the launcher stops (leaves first) on
completion, error and Ctrl-C, and a hung runtime can always be killed without taking the
launcher's records with it.

The ServerApp appends its events to flower/records.jsonl (as under a SuperLink); this engine
follows that file into the launcher's sink until the child exits. The results folder is the one
the deployment engine writes (`files.prepare`), plus logs/simulation.log (Flower's and Ray's log).
"""

from __future__ import annotations

import time

from fedgossip.config import ExperimentConfig
from fedgossip.launcher.flower.files import flower_env, prepare
from fedgossip.launcher.flower.launch import EventSink
from fedgossip.launcher.flower.outcome import LaunchError, time_limit
from fedgossip.launcher.runs.progress import RoundProgress
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.processes import Child, python_module, supervised
from fedgossip.launcher.supervision.proctree import ProcessTracker
from fedgossip.schema.lines import LineTail

SCAN_S = 1.0  # how often the child's process tree (Ray's processes) is remembered
POLL_S = 0.1  # how often records are read while the child runs
COMPLETED, FAILED = "finished:completed", "finished:failed"  # Flower's run statuses, for the summary


def model_modules(config: ExperimentConfig) -> tuple[str, ...]:
    """What each Ray worker imports in the background as it boots (`simulation_worker`): the
    modules of the model's family (`tasks.registry`: torch's learner for a torch model), Opacus'
    with DP-SGD. Named on the simulation process's command line, so that it starts Ray before it
    reads the config."""
    from fedgossip.tasks.registry import DP_SGD_PRELOAD, model_entry

    private = DP_SGD_PRELOAD if config.privacy.dp_sgd(config.experiment.rounds) else ()
    return (*model_entry(config.task.model).family.preload, *private)


def run_simulation_engine(
    config: ExperimentConfig, results: ResultsFolder, sink: EventSink, bar: RoundProgress, started: float
) -> None:
    """Start the simulation process, feed its records to `sink` until it exits, stop everything it
    started (by PID) on every way out. A failed or timed-out run marks `sink` failed."""
    files = prepare(config, results.path / "flower", started)
    env = flower_env(files.home, config.task.threads)
    tracker = ProcessTracker()
    tail = LineTail(files.records)
    argv = python_module(
        "fedgossip.launcher.flower.simulation_process",
        str(files.root.resolve()),
        str(config.nodes.count),
        str(config.flower.simulation_cpus),
        ",".join(model_modules(config)),
    )
    with supervised() as children:
        try:
            bar.status(f"starting Flower's simulation runtime with {config.nodes.count} virtual nodes")
            child = Child(
                "simulation", argv, log_path=results.logs / "simulation.log", env=env, cwd=files.root
            )
            children.append(child)
            results.write_processes({child.name: child.pid})
            code = _follow(config, child, tracker, tail, sink)
            sink.info["status"] = COMPLETED if code == 0 else FAILED
            if code != 0:
                sink.failed = True
                sink.outcome.errors.append(f"the simulation process exited with {code}: {child.log_tail(1)}")
        finally:
            for event in tail.read():
                sink(event)
            tracker.scan([c.pid for c in children if c.poll() is None])
            tracker.stop_leftovers(leaves_first=True)
            for child in children:
                child.stop()
            results.write_processes({**{c.name: c.pid for c in children}, **tracker.labelled()})


def _follow(
    config: ExperimentConfig, child: Child, tracker: ProcessTracker, tail: LineTail, sink: EventSink
) -> int:
    """Stream the records until the child exits; return its exit code. LaunchError once the run
    outlives its time limit: startup plus twice the round timeout per round (train and evaluate
    messages)."""
    limit = time_limit(config)
    deadline = time.monotonic() + limit
    next_scan = 0.0
    while (code := child.poll()) is None:
        for event in tail.read():
            sink(event)
        now = time.monotonic()
        if now >= next_scan:
            tracker.scan([child.pid])
            next_scan = now + SCAN_S
        if now >= deadline:
            raise LaunchError(f"the run exceeded its time limit of {limit:.0f}s and was stopped")
        time.sleep(POLL_S)
    return code
