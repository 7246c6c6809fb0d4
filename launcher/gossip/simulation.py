"""The virtual-time engine of gossip runs (`launcher.engine = "simulation"`): every peer of the
run in one process (`fedgossip.client.gossip.virtual`), on a virtual clock, without sockets.

To the launcher it is a local engine whose one process hosts every node: it is started like a
host process (afresh or by the fork server), its stdout lines are the peers' events, each naming
its node, and it is supervised and stopped the same way. The node configs still name an address
per peer (the config format needs one); nothing listens there.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedgossip.base.ports import LOOPBACK
from fedgossip.config import ExperimentConfig
from fedgossip.launcher.gossip.placement import Starter, node_starter
from fedgossip.launcher.runs.engines import NodeProcess, ProcessGroup
from fedgossip.launcher.runs.results import ResultsFolder

MODULE = "fedgossip.client.gossip.virtual"


@dataclass(frozen=True)
class SimulationEngine:
    """One process of this machine running every peer of the run in virtual time."""

    starter: Starter
    logs: Path

    def place(self, groups: Sequence[ProcessGroup]) -> list[str]:
        """Placeholder addresses (loopback, port 1 + node): no peer listens."""
        count = sum(len(group.nodes) for group in groups)
        return [f"{LOOPBACK}:{1 + node % 65535}" for node in range(count)]

    def start(self, group: ProcessGroup) -> NodeProcess:
        return self.starter(
            group.name, MODULE, [str(path) for path in group.configs], self.logs / f"{group.name}.log"
        )


@contextlib.contextmanager
def simulation_engine(
    config: ExperimentConfig, results: ResultsFolder, lines: queue.Queue
) -> Iterator[SimulationEngine]:
    """The virtual-time engine for the block (its process's stdout lines go to `lines`)."""
    with node_starter(config, results, lines) as start:
        yield SimulationEngine(start, results.logs)
