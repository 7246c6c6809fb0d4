"""The engines a run's nodes run on, one registry entry each, for each runtime.

The two runtimes drive their engines differently, so each has its own protocol and registry:
- a gossip engine (`launcher.engine`) places node processes and starts them, and the gossip
  launcher (launcher/gossip/launch.py) supervises them and reads their events itself:
  `open(config, results, lines)` is a context manager giving a `GossipEngine`;
- a Flower engine (`flower.engine`) runs the whole federation, feeding the ServerApp's events
  to the launcher's sink: `run(config, results, sink, bar, started, **options)` returns when
  the run is over.
How the nodes share processes (`nodes.per_process`) and whether they are forked
(`launcher.fork_server`) are options of the local gossip engine, not engines of their own.
Each entry names its function by `package.module:function`, imported only when the engine is
used (Ray and Flower's SuperLink machinery stay unimported otherwise).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fedgossip.base.loading import load_callable
from fedgossip.config import ExperimentConfig

if TYPE_CHECKING:
    from fedgossip.launcher.runs.results import ResultsFolder


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


class GossipEngine(Protocol):
    """Where a gossip run's node processes run: `place` says where each node's peer will listen
    (in node order, before any node config is written), then `start` starts each group's process."""

    def place(self, groups: Sequence[ProcessGroup]) -> list[str]: ...

    def start(self, group: ProcessGroup) -> NodeProcess: ...


OpenGossipEngine = Callable[
    [ExperimentConfig, "ResultsFolder", queue.Queue], AbstractContextManager[GossipEngine]
]
"""open(config, results, lines): the engine for a block; node processes' stdout lines go to
`lines` as (process name, line), then (name, None) when a process ends."""


@dataclass(frozen=True)
class Engine:
    """A registered engine: its function (`package.module:function`), the keyword options it is
    called with, and whether each node is a process of this machine (the memory check counts
    them; in Flower mode, the only engine whose links TLS secures), and whether one process runs
    every node (the virtual-time engine)."""

    function: str
    node_processes: bool
    options: Mapping[str, Any] = field(default_factory=dict)
    one_process: bool = False  # gossip: every node in one process, whatever nodes.per_process says

    def load(self) -> Callable[..., Any]:
        """The engine's function, its options bound."""
        function = load_callable(self.function)
        return lambda *args: function(*args, **self.options)


GOSSIP_ENGINES: dict[str, Engine] = {
    "local": Engine("fedgossip.launcher.gossip.placement:local_engine", node_processes=True),
    "ray": Engine("fedgossip.launcher.gossip.ray_engine:ray_engine", node_processes=False),
    "simulation": Engine(
        "fedgossip.launcher.gossip.simulation:simulation_engine", node_processes=False, one_process=True
    ),
}
FLOWER_ENGINES: dict[str, Engine] = {
    "deployment": Engine("fedgossip.launcher.flower.superlink:run_on_superlink", node_processes=True),
    "simulation": Engine("fedgossip.launcher.flower.simulation:run_simulation_engine", node_processes=False),
    "inprocess": Engine("fedgossip.launcher.flower.inprocess:run_inprocess", node_processes=False),
}


def configured_engine(config: ExperimentConfig) -> Engine:
    """The engine `config` runs on: flower.engine in Flower mode, else launcher.engine."""
    if config.experiment.mode == "flower":
        return FLOWER_ENGINES[config.flower.engine]
    return GOSSIP_ENGINES[config.launcher.engine]
