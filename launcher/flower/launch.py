"""Launch a Flower experiment: the fedgossip ServerApp and ClientApp on one of three engines.

- "deployment": a `flower-superlink` and one `flower-supernode` per node (node config
  `partition-id=I num-partitions=N`) on free loopback ports, with a private FLWR_HOME in the
  results folder; optionally TLS (security.tls) and SuperNode authentication with registered keys
  (security.mutual_tls). The app is submitted with `flwr run` and followed until the SuperLink
  reports `finished:completed` (`flwr run` exits 0 for a failed run too).
- "simulation": one child process runs the same app on Flower's Ray-based simulation engine,
  called in process, with `nodes.count` virtual SuperNodes (no SuperLink, `flwr run` or SuperExec).
- "inprocess": Strategy.start() with an in-process Grid in this process (no ports, no Ray).

All engines produce the same results folder as a gossip run: the ServerApp emits one record per
node per round plus one "server" record per round; they reach metrics.jsonl (appended, flushed)
as they are produced, and move the progress bar. Every process the launcher started, and every
process those started, is stopped by PID on completion, error and Ctrl-C.

Under churn (scenario.crash / crash_fraction / crash_rate, deployment only) SuperNodes are stopped
and restarted mid-run (`flower_churn`), every stop and rejoin an event of events.jsonl.

This module turns the ServerApp's events into records and the outcome (`EventSink`) and runs the
engine registered under flower.engine (launcher/runs/engines.py): `inprocess.run_inprocess`,
`simulation.run_simulation_engine` (on `simulation_process` and `files`) or
`superlink.run_on_superlink` (deployment, on `processes`, `files`, `security` and the `flwr_cli`
wrapper).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console

from fedgossip.config import ExperimentConfig
from fedgossip.launcher.flower.outcome import FlowerOutcome, LaunchError
from fedgossip.launcher.runs.engines import FLOWER_ENGINES
from fedgossip.launcher.runs.outcome import Outcome
from fedgossip.launcher.runs.progress import RoundProgress
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.schema.events import SERVER_EVENTS, check_event
from fedgossip.schema.fields import SERVER

if TYPE_CHECKING:
    from fedgossip.launcher.flower.churn import SuperNodeChurn


class EventSink:
    """Turns the ServerApp's events into metrics records, progress and the outcome."""

    def __init__(self, results: ResultsFolder, bar: RoundProgress, outcome: Outcome, started: float) -> None:
        self.results, self.bar, self.outcome, self.started = results, bar, outcome, started
        self.done = False
        self.failed = False
        self.info: dict[str, Any] = {}
        self.rounds_done = 0
        self.churn: SuperNodeChurn | None = None  # the deployment engine's, under churn

    def __call__(self, event: dict[str, Any]) -> None:
        event = check_event(event, SERVER_EVENTS)  # type: ignore[assignment]
        if event is None:
            return
        kind = event["type"]
        if kind == "record" and isinstance(event.get("record"), dict):
            record = event["record"]
            self.results.append(record)
            if isinstance(record.get("node"), int) and record.get("test_accuracy") is not None:
                self.bar.record(record)
            elif record.get("node") == SERVER:
                self.rounds_done = max(self.rounds_done, int(record.get("round", 0)))
        elif kind == "started":
            self.outcome.startup_s = round(time.time() - self.started, 3)
            self.bar.status(f"{len(event.get('labels', {}))} nodes ready after {self.outcome.startup_s:.1f}s")
        elif kind == "node-error":
            node = event.get("node")
            if isinstance(node, int) and node not in self.outcome.dead_nodes:
                self.outcome.dead_nodes.append(node)
            self.outcome.errors.append(
                f"node {node}, round {event.get('round')} ({event.get('phase')}): {event.get('error')}"
            )
        elif kind == "round-start" and self.churn is not None:
            round_ = event.get("round")
            if isinstance(round_, int) and not isinstance(round_, bool):
                self.churn.round_start(round_)
        elif kind == "scenario" and self.churn is not None:
            self.churn.rejoined(event)
        elif kind == "error":
            self.failed = True
            self.outcome.errors.append(f"ServerApp: {event.get('error')}")
        elif kind == "done":
            self.done = True
            self.info.update({f"serverapp_{k}": v for k, v in event.items() if k != "type"})


def run_flower(
    config: ExperimentConfig, results: ResultsFolder, console: Console, started: float | None = None
) -> Outcome:
    """Run the Flower experiment on its configured engine and return the outcome; the run's clock
    (time_s, startup_s, wall_time_s) starts at `started` (`execute`'s; None: now). The strategy's
    arguments are checked first (ValueError: too few nodes per round for krum, also in the
    emptiest round under churn; a user's rule that does not import), as the ServerApp will, so
    that a bad config starts nothing."""
    from fedgossip.launcher.flower.churn import check_churn
    from fedgossip.scenario.churn import churn_plan
    from fedgossip.server.strategy_arguments import strategy_arguments

    strategy_arguments(config)
    plan = churn_plan(config)
    check_churn(config, plan)
    started = time.time() if started is None else started
    outcome = FlowerOutcome()
    per_round = _nodes_per_round(config)
    security = config.security
    if security.token:
        console.print("[yellow]security.token is a gossip option: Flower mode does not use it[/]")
    engine = FLOWER_ENGINES[config.flower.engine]
    if security.tls and not engine.node_processes:
        console.print(
            f"[yellow]security.tls applies to the deployment engine only, not {config.flower.engine}[/]"
        )
    rounds, count = config.experiment.rounds, config.nodes.count
    records = sum(_nodes_per_round(config, count - len(plan.down(r))) for r in range(1, rounds + 1))
    with RoundProgress(console, per_round, rounds, config.experiment.name, records) as bar:
        sink = EventSink(results, bar, outcome, started)
        try:
            engine.load()(config, results, sink, bar, started)
        except LaunchError as err:
            outcome.errors.append(str(err))
            sink.failed = True
    outcome.wall_time_s = time.time() - started
    outcome.flower = {"engine": config.flower.engine, **sink.info}
    outcome.conclude(done=sink.done, failed=sink.failed)
    return outcome


def _nodes_per_round(config: ExperimentConfig, up: int | None = None) -> int:
    """How many node records a round with `up` nodes up (default: all) has: the sample sizes,
    every node up at fraction 1."""
    count, flower = config.nodes.count if up is None else up, config.flower
    minimum = min(2, count)
    train = max(int(count * flower.fraction_train), minimum)
    evaluate = max(int(count * flower.fraction_evaluate), minimum) if flower.fraction_evaluate > 0 else 0
    return min(count, max(train, evaluate))
