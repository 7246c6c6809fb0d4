"""The SuperLink and SuperNode processes of a deployment run: their command lines,
starting them (the SuperLink until it answers /health), processes.json, and the ordered stop.

Each process is a supervised `Child` (launcher/supervision/processes.py); what they start in turn
(flower-superexec, flwr-serverapp, flwr-clientapp) is remembered by a `ProcessTracker` and stopped
by PID, leaves first.
"""

from __future__ import annotations

import os
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedgossip.base import flower_protocol as p
from fedgossip.base.polling import poll_until
from fedgossip.base.ports import LOOPBACK, free_ports
from fedgossip.config import ExperimentConfig
from fedgossip.launcher.flower.clientapp_forkserver import NETNS_ENV, clientapp_preload
from fedgossip.launcher.flower.files import FlowerFiles, write_connection
from fedgossip.launcher.flower.flwr_cli import executable
from fedgossip.launcher.flower.security import Security
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.forkserver_process import Preload
from fedgossip.launcher.supervision.namespaces import EmulatedHosts
from fedgossip.launcher.supervision.processes import Child, python_module
from fedgossip.launcher.supervision.proctree import ProcessTracker, descendants, stop_leaves_first

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUPERLINK_ATTEMPTS = 3
HEALTH_POLL_S = 0.2
FORKS_ENV = "FEDGOSSIP_CLIENTAPP_FORKS"
"""Set to "off" in the launcher's environment: no ClientApp fork server (for comparisons)."""


def superlink_argv(port: int, security: Security, host: str = LOOPBACK) -> list[str]:
    """`flower-superlink` on host:port, TLS and SuperNode authentication as `security` says."""
    argv = [
        executable("flower-superlink"),
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    if security.tls:
        argv += [
            "--ssl-ca-certfile",
            str(security.ca),
            "--ssl-certfile",
            str(security.cert),
            "--ssl-keyfile",
            str(security.key),
        ]
    else:
        argv.append("--insecure")
    if security.node_keys:
        argv.append("--enable-supernode-auth")
    return argv


def supernode_argv(
    superlink: str, port: int, partition: int, partitions: int, security: Security, *, max_wait: float
) -> list[str]:
    """`flower-supernode` (with shorter idle waits: `supernode_process`) holding data partition
    `partition` of `partitions`."""
    options = supernode_options(superlink, port, partition, partitions, security, max_wait=max_wait)
    return [*python_module("fedgossip.launcher.flower.supernode_process"), *options]


def clientapp_forks(config: ExperimentConfig) -> Preload | None:
    """What the run's ClientApp fork server preloads (`clientapp_forkserver`), or None when
    FORKS_ENV is "off" (every ClientApp then starts afresh, as on a device)."""
    if os.environ.get(FORKS_ENV, "").lower() == "off":
        return None
    return clientapp_preload(config)


def supernode_options(
    superlink: str, port: int, partition: int, partitions: int, security: Security, *, max_wait: float
) -> list[str]:
    """The options of `flower-supernode` (and of `supernode_process`) for `supernode_argv`; a
    deployment bundle's start script gives them to Flower's own flower-supernode."""
    argv = [
        "--superlink",
        superlink,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--node-config",
        f"{p.PARTITION_ID}={partition} {p.NUM_PARTITIONS}={partitions}",
        "--max-wait-time",
        str(int(max_wait)),
    ]
    argv += ["--root-certificates", str(security.ca)] if security.tls else ["--insecure"]
    if security.node_keys:
        argv += ["--auth-supernode-private-key", str(security.node_keys[partition][0])]
    return argv


def wait_ready(port: int, security: Security, child: Child, timeout: float, host: str = LOOPBACK) -> None:
    """Wait until the SuperLink at host:port answers /health. RuntimeError if the process exits
    first, TimeoutError once `timeout` seconds passed."""
    scheme = "https" if security.tls else "http"
    context = ssl.create_default_context(cafile=str(security.ca)) if security.tls else None
    url = f"{scheme}://{host}:{port}/health"

    def answers() -> bool:
        if child.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.poll()} while starting: {tail(child, 3)}")
        try:
            with urllib.request.urlopen(url, timeout=1.0, context=context):
                return True
        except (urllib.error.URLError, OSError):
            return False

    poll_until(answers, timeout, HEALTH_POLL_S, f"{child.name} to answer on {host}:{port}")


def start_superlink(
    children: list[Child],
    port_count: int,
    security: Security,
    files: FlowerFiles,
    env: dict[str, str],
    logs: Path,
    *,
    timeout: float,
    hosts: EmulatedHosts | None = None,
) -> list[int]:
    """Start the SuperLink on the first of `port_count` free loopback ports (the others are for the
    SuperNodes), point FLWR_HOME's connection at it, and wait until it answers; return the ports.
    With emulated `hosts` (launcher.network = "namespaces"), it runs in host 0, on its address.

    A free port can be taken before the SuperLink binds it: a SuperLink that exits while starting
    is retried on fresh ports (SUPERLINK_ATTEMPTS in all). RuntimeError when it keeps exiting,
    TimeoutError when it does not answer in time."""
    attempts = 0
    while True:
        attempts += 1
        ports = free_ports(port_count, LOOPBACK)
        host = LOOPBACK if hosts is None else hosts.addresses[0]
        write_connection(files.home, f"{host}:{ports[0]}", security.ca)
        argv = superlink_argv(ports[0], security, host)
        superlink = Child(
            "superlink",
            argv if hosts is None else hosts.command(0, argv),
            log_path=logs / "superlink.log",
            env=env,
            cwd=files.root,
        )
        children.append(superlink)
        try:
            wait_ready(ports[0], security, superlink, timeout, host)
            return ports
        except (RuntimeError, TimeoutError):
            if superlink.poll() is None or attempts == SUPERLINK_ATTEMPTS:
                raise
            children.remove(superlink)
            superlink.stop()


def supernode(
    node: int,
    ports: list[int],
    security: Security,
    files: FlowerFiles,
    env: dict[str, str],
    logs: Path,
    *,
    max_wait: float,
    hosts: EmulatedHosts | None = None,
    forks: Mapping[str, str] | None = None,
) -> Child:
    """Start the SuperNode of `node` (partition `node`, port `ports[1 + node]`, connecting to the
    SuperLink on `ports[0]`; in host node + 1 of emulated `hosts`, if given; its ClientApps forked
    by the run's fork server whose environment entries are `forks`, if given); started again under
    churn, it is the same node: same command line, same log (appended)."""
    superlink = f"{LOOPBACK if hosts is None else hosts.addresses[0]}:{ports[0]}"
    count = len(ports) - 1
    argv = supernode_argv(superlink, ports[1 + node], node, count, security, max_wait=max_wait)
    if forks and hosts is not None:
        forks = {**forks, NETNS_ENV: hosts.namespaces[node + 1]}
    return Child(
        f"supernode-{node}",
        argv if hosts is None else hosts.command(node + 1, argv),
        log_path=logs / f"supernode-{node}.log",
        env={**env, **(forks or {})},
        cwd=files.root,
    )


def stop_supernode(child: Child, grace: float = 5.0) -> int:
    """Stop one SuperNode by PID: what it started (leaves first), then itself (SIGTERM, so it signs
    off at the SuperLink; SIGKILL after `grace`). Returns its exit code."""
    stop_leaves_first(descendants([child.pid]), grace)
    return child.stop(grace)


def scan(tracker: ProcessTracker, children: list[Child]) -> None:
    """Remember what the running SuperLink and SuperNodes have started so far."""
    tracker.scan([c.pid for c in children if c.poll() is None])


def tail(child: Child, lines: int) -> str:
    """The end of a Flower process's log without its colour codes."""
    return ANSI.sub("", child.log_tail(lines))


def write_processes(
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


def stop_all(children: list[Child], tracker: ProcessTracker, results: ResultsFolder) -> None:
    """Stop what the SuperLink and SuperNodes started (leaves first), then the SuperNodes
    (together), then the SuperLink, all by PID: each process gets one SIGTERM while its parent
    still runs, and the SuperNodes can still sign off at the SuperLink."""
    scan(tracker, children)
    started = tracker.stop_leftovers(leaves_first=True)
    if started:
        with open(results.logs / "superlink.log", "a") as log:
            log.write(f"fedgossip: stopped the Flower processes {started}\n")
    nodes = [child for child in children if child.name != "superlink"]
    for child in nodes:
        child.terminate()
    for child in [*nodes, *children]:
        child.stop()
