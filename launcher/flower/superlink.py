"""The "deployment" Flower engine: the app runs on a SuperLink the launcher starts on a free
loopback port (or in an emulated host of its own: launcher.network = "namespaces") and one
`flower-supernode` per node (each in a host of its own then), optionally with TLS and SuperNode
authentication, stopped and restarted mid-run under churn (launcher/flower/churn.py), their
ClientApps forked by the run's ClientApp fork server (launcher/flower/clientapp_forkserver.py); it is
submitted with `flwr run` and followed until the SuperLink reports it finished (`flwr run` exits 0
for a failed run too)."""

from __future__ import annotations

import time
from functools import partial

from fedgossip.base.ports import LOOPBACK
from fedgossip.config import ExperimentConfig
from fedgossip.launcher.flower import processes as fp
from fedgossip.launcher.flower.churn import SuperNodeChurn
from fedgossip.launcher.flower.clientapp_forkserver import serving
from fedgossip.launcher.flower.files import flower_env, prepare
from fedgossip.launcher.flower.flwr_cli import register_node_keys, run_status, stop_run, submit
from fedgossip.launcher.flower.launch import EventSink
from fedgossip.launcher.flower.outcome import LaunchError, checked, time_limit
from fedgossip.launcher.flower.security import Security, security_material
from fedgossip.launcher.network.hosts import flower_hosts
from fedgossip.launcher.runs.progress import RoundProgress
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.processes import Child, supervised
from fedgossip.launcher.supervision.proctree import ProcessTracker, alive
from fedgossip.scenario.churn import churn_plan
from fedgossip.schema.lines import LineTail

STATUS_POLL_S = 30.0  # how often the SuperLink is asked for the run status while records flow
ENDING_WAIT_S = 2.0  # after the last record, how long the ServerApp process may take to exit before asking
SERVERAPP = "flwr-serverapp"  # the process name of Flower's ServerApp (started by the SuperLink's SuperExec)
SUBMIT_GRACE_S = 60.0  # extra time over the round timeouts before the launcher gives up


def run_on_superlink(
    config: ExperimentConfig,
    results: ResultsFolder,
    sink: EventSink,
    bar: RoundProgress,
    started: float,
) -> None:
    """Start the SuperLink and SuperNodes, submit, follow, stop everything."""
    flower = config.flower
    count = config.nodes.count
    files = prepare(config, results.path / "flower", started)
    env = flower_env(files.home, config.task.threads, files.bin)
    tracker = ProcessTracker()
    tail = LineTail(files.records)
    run_id: int | None = None
    preload = fp.clientapp_forks(config)
    with (
        supervised() as children,
        flower_hosts(config, results) as hosts,
        serving(preload, children, results.logs, env) as forks,
    ):
        host = LOOPBACK if hosts is None else hosts.addresses[0]
        security = security_material(config, results.secrets, host) if config.security.tls else Security()
        try:
            bar.status("starting the SuperLink")
            ports = checked(
                lambda: fp.start_superlink(
                    children,
                    1 + count,
                    security,
                    files,
                    env,
                    results.logs,
                    timeout=flower.startup_timeout,
                    hosts=hosts,
                )
            )
            if security.node_keys:
                checked(lambda: register_node_keys([public for _, public in security.node_keys], env))
            start = partial(
                fp.supernode,
                ports=ports,
                security=security,
                files=files,
                env=env,
                logs=results.logs,
                max_wait=flower.startup_timeout,
                hosts=hosts,
                forks=forks,
            )
            children.extend(start(node) for node in range(count))
            if plan := churn_plan(config):
                sink.churn = SuperNodeChurn(plan, children, start, results, started)
            fp.write_processes(results, children, run_id)
            bar.status("submitting the run")
            run_id = checked(lambda: submit(files.app, files.run_config, env))
            fp.write_processes(results, children, run_id)
            bar.status(f"run {run_id} submitted; waiting for {count} nodes")
            status = _follow(config, run_id, children, tracker, tail, sink, env)
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
                stop_run(run_id, env)
            raise
        finally:
            for event in tail.read():
                sink(event)
            fp.stop_all(children, tracker, results)
            fp.write_processes(results, children, run_id, tracker)


def _follow(
    config: ExperimentConfig,
    run_id: int,
    children: list[Child],
    tracker: ProcessTracker,
    tail: LineTail,
    sink: EventSink,
    env: dict[str, str],
) -> dict:
    """Stream the records until the SuperLink reports the run finished; return its last status.

    A SuperNode that dies is reported (its node becomes a dead node) and the ServerApp carries on
    without it, as gossip peers do; the run is stopped (and fails) when the SuperLink dies or the
    run outlives its time limit: startup plus twice the round timeout per round (train and
    evaluate messages) plus a grace, plus the start-up time again for each round SuperNodes
    restart in under churn. The SuperLink is asked for the status every STATUS_POLL_S and, once the
    last record came or the ServerApp process ended, when that process has gone (at most
    ENDING_WAIT_S after the last record), then every second.
    """
    restarts = len({outage.back for outage in churn_plan(config).outages if outage.back})
    limit = time_limit(config, 1 + restarts) + SUBMIT_GRACE_S
    deadline = time.monotonic() + limit
    asked = time.monotonic()  # when the SuperLink was last asked for the run status
    next_scan = 0.0
    ending_since: float | None = None
    lost: set[str] = set()
    while True:
        for event in tail.read():
            sink(event)
        if time.monotonic() >= next_scan:
            fp.scan(tracker, children)
            next_scan = time.monotonic() + (0.2 if sink.done or sink.failed else 1.0)
        for child in children:
            if child.poll() is None or child.name in lost:
                continue
            lost.add(child.name)
            if child.name == "superlink":
                stop_run(run_id, env)
                raise LaunchError(
                    f"the SuperLink exited with {child.poll()} during the run: {fp.tail(child, 2)}"
                )
            node = int(child.name.rsplit("-", 1)[1])  # a SuperNode: the ServerApp carries on without it
            if node not in sink.outcome.dead_nodes:
                sink.outcome.dead_nodes.append(node)
            sink.outcome.errors.append(f"{child.name} exited with {child.poll()}: {fp.tail(child, 1)}")
        now = time.monotonic()
        if now >= deadline:
            stop_run(run_id, env)
            raise LaunchError(f"the run exceeded its time limit of {limit:.0f}s and was stopped")
        app_ended = _serverapp_ended(tracker)
        if ending_since is None and (sink.done or sink.failed or app_ended):
            ending_since = now
        ending = ending_since is not None and (app_ended or now >= ending_since + ENDING_WAIT_S)
        if now >= asked + STATUS_POLL_S or (ending and now >= asked + 1.0):
            status = checked(lambda: run_status(run_id, env))
            if str(status.get("status", "")).startswith("finished"):
                return status
            asked = time.monotonic()
        time.sleep(0.2)


def _serverapp_ended(tracker: ProcessTracker) -> bool:
    """Whether a ServerApp process of the run was seen and none of them runs any more: the run is
    over and the SuperLink says so (each status question is a `flwr ls` process, ~1.3 s of CPU, so
    the launcher asks when the ServerApp has gone rather than every second)."""
    apps = [pid for pid, name in tracker.names.items() if name.startswith(SERVERAPP)]
    return bool(apps) and not any(alive(pid) for pid in apps)
