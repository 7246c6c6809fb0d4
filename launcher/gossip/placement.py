"""A gossip run's node processes: which nodes share one (`nodes.per_process`), and the local engine
that places and starts them (`launcher.engine = "local"`): processes of this machine, afresh or
forked by the fork server (`launcher.fork_server`). The engines are registered in
launcher/runs/engines.py (Ray actors: launcher/gossip/ray_engine.py)."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fedgossip.base.ports import LOOPBACK, free_ports
from fedgossip.config import ExperimentConfig
from fedgossip.launcher.runs.engines import NodeProcess, ProcessGroup
from fedgossip.launcher.supervision.forkserver import (
    ForkedChild,
    early_fork_server,
    preload_for,
    start_fork_server,
)
from fedgossip.launcher.supervision.forkserver_process import Preload
from fedgossip.launcher.supervision.namespaces import in_namespace
from fedgossip.launcher.supervision.processes import Child, child_env, python_module

if TYPE_CHECKING:  # imported when used: the CLI starts the fork server (`early_start`) before them
    from fedgossip.launcher.network.hosts import RunHosts
    from fedgossip.launcher.runs.results import ResultsFolder


class Starter(Protocol):
    """start(name, module, args, log_path, namespace): a node process running `python -m module args`
    (in the network namespace of an emulated host, if not "")."""

    def __call__(
        self, name: str, module: str, args: Sequence[str], log_path: Path, namespace: str = ""
    ) -> Child | ForkedChild: ...


HOST_PORT = 5000  # the first port of each emulated host: its peers listen on 5000, 5001, ...


def process_groups(node_configs: Sequence[Path], per_process: int) -> dict[str, ProcessGroup]:
    """The node processes by name: consecutive nodes, `per_process` to a process (the last may hold fewer)."""
    groups = [
        ProcessGroup(
            tuple(range(start, min(start + per_process, len(node_configs)))),
            tuple(node_configs[start : start + per_process]),
        )
        for start in range(0, len(node_configs), per_process)
    ]
    return {group.name: group for group in groups}


def fork_preload(config: ExperimentConfig) -> Preload | None:
    """What the fork server of `config`'s run preloads (its node processes are forked by
    `node_starter`); None when the run has none (Flower mode, Ray actors, launcher.fork_server = false)."""
    gossip, here = config.experiment.mode == "gossip", config.launcher.engine in ("local", "simulation")
    if not (gossip and here and config.launcher.fork_server):
        return None
    dp_sgd = config.privacy.dp_sgd(1) is not None
    return preload_for(config.task.model, config.task.dataset, dp_sgd, warm=config.task)


@contextlib.contextmanager
def early_start(config: ExperimentConfig) -> Iterator[None]:
    """For the block, `config`'s fork server (if it has one) already starting: it imports while the
    launcher prepares the run; the local engine adopts it (`start_fork_server`)."""
    with early_fork_server(fork_preload(config), child_env(config.task.threads)):
        yield


@contextlib.contextmanager
def node_starter(config: ExperimentConfig, results: ResultsFolder, lines: queue.Queue) -> Iterator[Starter]:
    """The way this run starts node processes (launcher.fork_server), for the block; their stdout
    lines go to `lines`. The fork server, if any, is stopped at the end with whatever it still runs."""
    env = child_env(config.task.threads)
    preload = fork_preload(config)
    if preload is None:

        def fresh(name: str, module: str, args: Sequence[str], log_path: Path, namespace: str = "") -> Child:
            argv = in_namespace(namespace, python_module(module, *args))
            return Child(name, argv, log_path=log_path, env=env, lines=lines)

        yield fresh
        return
    with start_fork_server(preload, results.logs / "forkserver.log", env) as server:

        def forked(
            name: str, module: str, args: Sequence[str], log_path: Path, namespace: str = ""
        ) -> ForkedChild:
            return server.spawn(name, module, args, log_path=log_path, lines=lines, namespace=namespace)

        yield forked


@dataclass(frozen=True)
class LocalEngine:
    """Node processes on this machine, their peers on free loopback ports, or with `hosts` each
    process in an emulated host of its own (launcher.network = "namespaces"), its peers on that
    host's address from HOST_PORT up."""

    starter: Starter
    logs: Path
    hosts: RunHosts | None = None

    def place(self, groups: Sequence[ProcessGroup]) -> list[str]:
        if self.hosts is not None:
            return [
                f"{self.hosts.address_of(node)}:{HOST_PORT + j}"
                for group in groups
                for j, node in enumerate(group.nodes)
            ]
        count = sum(len(group.nodes) for group in groups)
        return [f"{LOOPBACK}:{port}" for port in free_ports(count, LOOPBACK)]

    def start(self, group: ProcessGroup) -> NodeProcess:
        namespace = "" if self.hosts is None else self.hosts.namespace_of(group.nodes[0])
        return self.starter(group.name, *group.command, self.logs / f"{group.name}.log", namespace)


@contextlib.contextmanager
def local_engine(
    config: ExperimentConfig, results: ResultsFolder, lines: queue.Queue
) -> Iterator[LocalEngine]:
    """The local engine (`launcher.engine = "local"`, launcher/runs/engines.py) for the block: node
    processes started afresh or forked (`node_starter`), each in an emulated host of its own if
    launcher.network = "namespaces" (made here, removed at the end); their stdout lines go to
    `lines` as (process name, line), then (name, None) when a process ends."""
    with contextlib.ExitStack() as stack:
        hosts = None
        if config.launcher.network == "namespaces":
            from fedgossip.launcher.network.hosts import RunHosts

            hosts = stack.enter_context(RunHosts(config, results))
        start = stack.enter_context(node_starter(config, results, lines))
        yield LocalEngine(start, results.logs, hosts)
