"""A gossip run's node processes: which nodes share one (`nodes.per_process`), and the local engine
that places and starts them (`launcher.engine = "local"`): processes of this machine, afresh or
forked by the fork server (`launcher.fork_server`). The engines are registered in
launcher/runs/engines.py (Ray actors: launcher/gossip/ray_engine.py)."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fedgossip.base.ports import LOOPBACK, free_ports
from fedgossip.config import ExperimentConfig
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.forkserver import ForkedChild, preload_for, start_fork_server
from fedgossip.launcher.supervision.processes import Child, child_env, python_module

Starter = Callable[[str, str, Sequence[str], Path], "Child | ForkedChild"]
"""start(name, module, args, log_path): a node process running `python -m module args`."""


class NodeProcess(Protocol):
    """What the launcher needs of a node process, wherever it runs (`processes.Child`)."""

    name: str
    pid: int

    def terminate(self) -> None: ...

    def stop(self, grace: float = ...) -> int: ...

    def log_tail(self, lines: int = ...) -> str: ...


@dataclass(frozen=True)
class ProcessGroup:
    """The nodes one process hosts, and the module and arguments it runs."""

    nodes: tuple[int, ...]
    configs: tuple[Path, ...]

    @property
    def name(self) -> str:
        """node-N for a process of one peer (its log: logs/node-N.log), nodes-A-B for several."""
        first, last = self.nodes[0], self.nodes[-1]
        return f"node-{first}" if len(self.nodes) == 1 else f"nodes-{first}-{last}"

    @property
    def command(self) -> tuple[str, list[str]]:
        """(module, args) of the process: one peer (client/gossip/peer.py) or a host of several
        (client/gossip/host.py)."""
        module = "fedgossip.client.gossip.peer" if len(self.nodes) == 1 else "fedgossip.client.gossip.host"
        return module, [str(path) for path in self.configs]

    def node_of(self, event: dict[str, Any]) -> int | None:
        """The node an event of this process is about: the node it names if this process hosts it;
        for a process of one peer, that peer (its config errors name no node); else None."""
        node = event.get("node")
        if isinstance(node, int) and not isinstance(node, bool) and node in self.nodes:
            return node
        return self.nodes[0] if len(self.nodes) == 1 else None

    def label(self, node: int | None) -> str:
        """How errors name the node (or, for an event naming none, the process)."""
        return f"node {node}" if node is not None else f"process {self.name}"


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


@contextlib.contextmanager
def node_starter(config: ExperimentConfig, results: ResultsFolder, lines: queue.Queue) -> Iterator[Starter]:
    """The way this run starts node processes (launcher.fork_server), for the block; their stdout
    lines go to `lines`. The fork server, if any, is stopped at the end with whatever it still runs."""
    env = child_env(config.task.threads)
    if not config.launcher.fork_server:

        def fresh(name: str, module: str, args: Sequence[str], log_path: Path) -> Child:
            return Child(name, python_module(module, *args), log_path=log_path, env=env, lines=lines)

        yield fresh
        return
    preload = preload_for(config.task.model, config.task.dataset)
    with start_fork_server(preload, results.logs / "forkserver.log", env) as server:

        def forked(name: str, module: str, args: Sequence[str], log_path: Path) -> ForkedChild:
            return server.spawn(name, module, args, log_path=log_path, lines=lines)

        yield forked


@dataclass(frozen=True)
class LocalEngine:
    """Node processes on this machine, their peers on free loopback ports."""

    starter: Starter
    logs: Path

    def place(self, groups: Sequence[ProcessGroup]) -> list[str]:
        count = sum(len(group.nodes) for group in groups)
        return [f"{LOOPBACK}:{port}" for port in free_ports(count, LOOPBACK)]

    def start(self, group: ProcessGroup) -> NodeProcess:
        return self.starter(group.name, *group.command, self.logs / f"{group.name}.log")


@contextlib.contextmanager
def local_engine(
    config: ExperimentConfig, results: ResultsFolder, lines: queue.Queue
) -> Iterator[LocalEngine]:
    """The local engine (`launcher.engine = "local"`, launcher/runs/engines.py) for the block: node
    processes started afresh or forked (`node_starter`); their stdout lines go to `lines` as
    (process name, line), then (name, None) when a process ends."""
    with node_starter(config, results, lines) as start:
        yield LocalEngine(start, results.logs)
