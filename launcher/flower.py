"""Launch a Flower experiment: the fedgossip ServerApp and ClientApp on one of three engines.

- "deployment": a `flower-superlink` and one `flower-supernode` per node (node config
  `partition-id=I num-partitions=N`) on free loopback ports, with a private FLWR_HOME in the
  results folder; optionally TLS (security.tls) and SuperNode authentication with registered keys
  (security.mutual_tls). The app is submitted with `flwr run` and followed until the SuperLink
  reports `finished:completed` (`flwr run` exits 0 for a failed run too).
- "simulation": a `flower-superlink --simulation` on a free loopback port runs the same app on
  Flower's Ray-based simulation engine with `nodes.count` virtual SuperNodes.
- "inprocess": Strategy.start() with an in-process Grid in this process (no ports, no Ray).

All engines produce the same results folder as a gossip run: the ServerApp emits one record per
node per round plus one "server" record per round; they reach metrics.jsonl (appended, flushed)
as they are produced, and move the progress bar. Every process the launcher started, and every
process those started, is stopped by PID on completion, error and Ctrl-C.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from fedgossip.config import ExperimentConfig
from fedgossip.launcher import flower_runtime as rt
from fedgossip.launcher.gossip import Outcome
from fedgossip.launcher.processes import Child, free_ports, supervised
from fedgossip.launcher.proctree import ProcessTracker
from fedgossip.launcher.progress import RoundProgress
from fedgossip.launcher.results import ResultsFolder
from fedgossip.schema.records import SERVER, SERVER_EVENTS, LineTail, check_event

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUPERLINK_ATTEMPTS = 3
STATUS_POLL_S = 10.0  # how often the SuperLink is asked for the run status while records flow
SUBMIT_GRACE_S = 60.0  # extra time over the round timeouts before the launcher gives up


class EventSink:
    """Turns the ServerApp's events into metrics records, progress and the outcome."""

    def __init__(self, results: ResultsFolder, bar: RoundProgress, outcome: Outcome, started: float) -> None:
        self.results, self.bar, self.outcome, self.started = results, bar, outcome, started
        self.done = False
        self.failed = False
        self.info: dict[str, Any] = {}
        self.rounds_done = 0

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
        elif kind == "error":
            self.failed = True
            self.outcome.errors.append(f"ServerApp: {event.get('error')}")
        elif kind == "done":
            self.done = True
            self.info.update({f"serverapp_{k}": v for k, v in event.items() if k != "type"})


def run_flower(config: ExperimentConfig, results: ResultsFolder, console: Console) -> Outcome:
    """Run the Flower experiment on its configured engine and return the outcome."""
    started = time.time()
    outcome = FlowerOutcome()
    per_round = _nodes_per_round(config)
    security = config.security
    if security.token:
        console.print("[yellow]security.token is a gossip option: Flower mode does not use it[/]")
    if security.tls and config.flower.engine != "deployment":
        console.print(
            f"[yellow]security.tls applies to the deployment engine only, not {config.flower.engine}[/]"
        )
    with RoundProgress(console, per_round, config.experiment.rounds, config.experiment.name) as bar:
        sink = EventSink(results, bar, outcome, started)
        try:
            if config.flower.engine == "inprocess":
                _run_inprocess(
                    config,
                    sink,
                    started,
                    results.logs / "inprocess.log",
                    results.path / "flower" / "final-model.npz",
                )
            else:
                _run_engine(config, results, sink, bar, started)
        except _LaunchError as err:
            outcome.errors.append(str(err))
            sink.failed = True
    outcome.wall_time_s = time.time() - started
    outcome.flower = {"engine": config.flower.engine, **sink.info}
    if sink.failed or not sink.done:
        outcome.status = "failed"
        if not outcome.errors:
            outcome.errors.append("the run ended without finishing its rounds")
    elif outcome.dead_nodes:
        outcome.status = "partial"
    return outcome


@dataclass
class FlowerOutcome(Outcome):
    """The outcome of a Flower run: the gossip outcome plus what Flower and the ServerApp said."""

    flower: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict:
        return {**super().info(), "flower": self.flower}


class _LaunchError(RuntimeError):
    """The launcher could not start, follow or finish the run."""


def _nodes_per_round(config: ExperimentConfig) -> int:
    """How many node records a round has (the sample sizes; all nodes at fraction 1)."""
    count, flower = config.nodes.count, config.flower
    minimum = min(2, count)
    train = max(int(count * flower.fraction_train), minimum)
    evaluate = max(int(count * flower.fraction_evaluate), minimum) if flower.fraction_evaluate > 0 else 0
    return min(count, max(train, evaluate))


def _run_inprocess(
    config: ExperimentConfig, sink: EventSink, started: float, log_path: Path, model_path: Path
) -> None:
    from fedgossip.client.flower_app import app as client_app
    from fedgossip.config import dump_toml
    from fedgossip.server import protocol as p
    from fedgossip.server.federation import run_federation
    from fedgossip.server.local_grid import LocalGrid

    grid = LocalGrid(
        client_app, config.nodes.count, {p.CONFIG_TOML: dump_toml(config)}, id_seed=config.experiment.seed
    )
    flwr_log = logging.getLogger("flwr")
    saved = flwr_log.handlers[:], flwr_log.propagate
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    flwr_log.handlers, flwr_log.propagate = [handler], False  # Flower's log to logs/, not the console
    try:
        arrays = run_federation(grid, config, sink, started)
        if arrays is not None:
            p.save_model(model_path, {name: array.numpy() for name, array in arrays.items()})
    except Exception as err:  # already emitted as an "error" event by run_federation
        sink.failed = True
        logging.getLogger("fedgossip.launcher").debug("in-process run failed", exc_info=True)
        if not any(e.startswith("ServerApp:") for e in sink.outcome.errors):
            sink.outcome.errors.append(f"ServerApp: {type(err).__name__}: {err}")
    finally:
        flwr_log.handlers, flwr_log.propagate = saved
        handler.close()


def _run_engine(
    config: ExperimentConfig, results: ResultsFolder, sink: EventSink, bar: RoundProgress, started: float
) -> None:
    """Deployment or simulation: start the processes, submit, follow, stop everything."""
    flower = config.flower
    simulation = flower.engine == "simulation"
    count = config.nodes.count
    ports = free_ports(1 + (0 if simulation else count), rt.LOOPBACK)
    address = f"{rt.LOOPBACK}:{ports[0]}"
    files = rt.prepare(config, results.path / "flower", address, started)
    security = (
        rt.security_material(config, results.secrets)
        if config.security.tls and not simulation
        else rt.Security()
    )
    rt.write_connection(files.home, address, security.ca)
    env = rt.flower_env(files.home, config.task.threads)
    tracker = ProcessTracker()
    tail = LineTail(files.records)
    run_id: int | None = None
    with supervised() as children:
        try:
            for attempt in range(SUPERLINK_ATTEMPTS):  # a free port can be taken before we bind it
                superlink = Child(
                    "superlink",
                    rt.superlink_argv(ports[0], security, simulation=simulation),
                    log_path=results.logs / "superlink.log",
                    env=env,
                    cwd=files.root,
                )
                children.append(superlink)
                bar.status("starting the SuperLink")
                try:
                    rt.wait_ready(ports[0], security, superlink, flower.startup_timeout)
                    break
                except RuntimeError as err:
                    if superlink.poll() is None or attempt + 1 == SUPERLINK_ATTEMPTS:
                        raise _LaunchError(str(err)) from None
                    children.remove(superlink)
                    superlink.stop()
                    ports = free_ports(len(ports), rt.LOOPBACK)
                    address = f"{rt.LOOPBACK}:{ports[0]}"
                    rt.write_connection(files.home, address, security.ca)
            if security.node_keys:
                _check(lambda: rt.register_node_keys(security, env))
            for node in [] if simulation else range(count):
                children.append(
                    Child(
                        f"supernode-{node}",
                        rt.supernode_argv(
                            address, ports[1 + node], node, count, security, max_wait=flower.startup_timeout
                        ),
                        log_path=results.logs / f"supernode-{node}.log",
                        env=env,
                        cwd=files.root,
                    )
                )
            _write_processes(results, children, run_id)
            bar.status("submitting the run")
            federation = (
                f"num-supernodes={count} client-resources-num-cpus={flower.simulation_cpus}"
                if simulation
                else None
            )
            run_id = _check(lambda: rt.submit(files, env, federation))
            _write_processes(results, children, run_id)
            bar.status(f"run {run_id} submitted; waiting for {count} nodes")
            status = _follow(config, run_id, children, tracker, tail, sink, env, started)
            sink.info.update(
                run_id=run_id,
                status=status.get("status"),
                network_traffic=status.get("network-traffic"),
                compute_time=status.get("compute-time"),
            )
            if status.get("status") != "finished:completed":
                sink.failed = True
                detail = status.get("status-details")
                detail = f" ({detail})" if detail and detail != "N/A" else ""
                sink.outcome.errors.append(f"Flower run {run_id} ended {status.get('status')}{detail}")
        except KeyboardInterrupt:
            if run_id is not None:
                rt.stop_run(run_id, env)
            raise
        finally:
            for event in tail.read():
                sink(event)
            _stop_all(children, tracker, results)
            _write_processes(results, children, run_id, tracker)


def _check(action):
    try:
        return action()
    except RuntimeError as err:
        raise _LaunchError(str(err)) from None


def _follow(
    config: ExperimentConfig,
    run_id: int,
    children: list[Child],
    tracker: ProcessTracker,
    tail: LineTail,
    sink: EventSink,
    env: dict[str, str],
    started: float,
) -> dict:
    """Stream the records until the SuperLink reports the run finished; return its last status.

    A SuperNode that dies is reported (its node becomes a dead node) and the ServerApp carries on
    without it, as gossip peers do; the run is stopped (and fails) when the SuperLink dies or the
    run outlives its time limit: startup plus twice the round timeout per round (train and
    evaluate messages) plus a grace.
    """
    flower = config.flower
    limit = flower.startup_timeout + config.experiment.rounds * 2 * flower.round_timeout + SUBMIT_GRACE_S
    deadline = time.monotonic() + limit
    next_status = time.monotonic() + STATUS_POLL_S
    next_scan = 0.0
    lost: set[str] = set()
    while True:
        for event in tail.read():
            sink(event)
        if time.monotonic() >= next_scan:
            _scan(tracker, children)
            next_scan = time.monotonic() + 1.0
        for child in children:
            if child.poll() is None or child.name in lost:
                continue
            lost.add(child.name)
            if child.name == "superlink":
                rt.stop_run(run_id, env)
                tail_text = _tail(child, 2)
                raise _LaunchError(f"the SuperLink exited with {child.poll()} during the run: {tail_text}")
            node = int(child.name.rsplit("-", 1)[1])  # a SuperNode: the ServerApp carries on without it
            if node not in sink.outcome.dead_nodes:
                sink.outcome.dead_nodes.append(node)
            sink.outcome.errors.append(f"{child.name} exited with {child.poll()}: {_tail(child, 1)}")
        now = time.monotonic()
        if now >= deadline:
            rt.stop_run(run_id, env)
            raise _LaunchError(f"the run exceeded its time limit of {limit:.0f}s and was stopped")
        if sink.done or sink.failed or now >= next_status:
            status = _check(lambda: rt.run_status(run_id, env))
            if str(status.get("status", "")).startswith("finished"):
                return status
            next_status = now + (1.0 if sink.done or sink.failed else STATUS_POLL_S)
        time.sleep(0.2)


def _scan(tracker: ProcessTracker, children: list[Child]) -> None:
    """Remember what the running SuperLink and SuperNodes have started so far."""
    tracker.scan([c.pid for c in children if c.poll() is None])


def _tail(child: Child, lines: int) -> str:
    """The end of a Flower process's log without its colour codes."""
    return ANSI.sub("", child.log_tail(lines))


def _write_processes(
    results: ResultsFolder,
    children: list[Child],
    run_id: int | None,
    tracker: ProcessTracker | None = None,
) -> None:
    """processes.json: the SuperLink and SuperNodes by name, the Flower run id and (at the end)
    every process they started, as "name-pid"."""
    pids: dict[str, Any] = {c.name: c.pid for c in children}
    if tracker is not None:
        pids.update(tracker.labelled())
    if run_id is not None:
        pids["flower_run_id"] = run_id
    if hasattr(results, "write_processes"):
        results.write_processes(pids)


def _stop_all(children: list[Child], tracker: ProcessTracker, results: ResultsFolder) -> None:
    """Stop what the SuperLink and SuperNodes started (leaves first), then the SuperNodes
    (together), then the SuperLink, all by PID: each process gets one SIGTERM while its parent
    still runs, and the SuperNodes can still sign off at the SuperLink."""
    _scan(tracker, children)
    started = tracker.stop_leftovers(leaves_first=True)
    if started:
        with open(results.logs / "superlink.log", "a") as log:
            log.write(f"fedgossip: stopped the Flower processes {started}\n")
    nodes = [child for child in children if child.name != "superlink"]
    for child in nodes:
        child.terminate()
    for child in [*nodes, *children]:
        child.stop()
