"""The neighbours a gossip peer is linked to in a round: its static ones, or (with
`scenario.resample_every`) the epoch's random k-out draw of `fedgossip.scenario.resample`, the
same on every peer, announced as a "topology" event when an epoch starts."""

from __future__ import annotations

from fedgossip.config import ExperimentConfig
from fedgossip.scenario.resample import epoch_of, k_out_graph
from fedgossip.scenario.roles import Events


class LinkedNeighbours:
    """The linked neighbours of peer `node` round by round (its static `neighbours` without
    resampling)."""

    def __init__(self, config: ExperimentConfig, node: int, neighbours: set[int], events: Events) -> None:
        self.config = config
        self.node = node
        self.neighbours = neighbours
        self.events = events
        self._epoch: tuple[int, set[int]] | None = None  # the resampling epoch and its neighbours

    def of(self, round_: int) -> set[int]:
        """The neighbours of `round_` (a new epoch's draw is announced)."""
        scenario = self.config.scenario
        every = scenario.resample_every
        if not every:
            return set(self.neighbours)
        epoch = epoch_of(round_, every)
        if self._epoch is None or self._epoch[0] != epoch:
            nodes, seed = self.config.nodes.count, self.config.experiment.seed
            graph = k_out_graph(nodes, scenario.resample_degree, seed, epoch)
            self._epoch = (epoch, graph[self.node])
            self.events.add("topology", round_, neighbours=sorted(self._epoch[1]))
        return set(self._epoch[1])
