"""What a gossip peer's round loop asks of its strategy besides training: the round's learner
(a streamed task's data), which neighbours get the model, how the models merge, and what the
round's record adds. `RoundPlan` is every merge rule's plan; `round_plan` picks the plan of a
config: a mechanism's own (its registry entry's `gossip_plan`, a `RoundPlan` subclass; fair
incentives: `fedgossip.client.gossip.fair.FairGossip`).

Per round the peer calls, in this order: `learner` (before training), `recipients` (before
pushing: the others get a notice that no model comes), `merge` (every round, even when nothing
arrived), `fields` (into the round's record).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedgossip.client.gossip.merge import merge_models
from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.config import ExperimentConfig
from fedgossip.strategies import Outcome
from fedgossip.strategies.mechanisms import mechanism
from fedgossip.tasks import Learner, stream_learner


class RoundPlan:
    """The plan of a merge rule: every neighbour gets the model every round, the received models
    merge with the configured rule (`merge_models`), the record adds nothing."""

    def __init__(self, config: ExperimentConfig, node: int, neighbours: Sequence[int]) -> None:
        self.config = config
        self.node = node
        self.neighbours = sorted(neighbours)

    def learner(self, round_: int, learner: Learner) -> Learner:
        """The learner of round `round_`: `learner` itself, or with task.stream_chunks the node's
        learner on the round's chunk and evaluation set, with `learner`'s weights."""
        task = self.config.task
        if not task.stream_chunks:
            return learner
        nodes, seed = self.config.nodes.count, self.config.experiment.seed
        return stream_learner(task, self.node, nodes, seed, round_, learner)

    def recipients(self, round_: int) -> set[int]:
        """The neighbours this round's model is pushed to (the others get a notice)."""
        return set(self.neighbours)

    def merge(
        self,
        round_: int,
        start: list[np.ndarray],
        own: list[np.ndarray],
        own_examples: int,
        messages: Sequence[ModelMessage],
        shared: Sequence[int],
    ) -> Outcome:
        """The merged values of the `shared` tensors (by their positions in a model), from the model
        the peer trained from (`start`), its trained one (`own`, of `own_examples` examples) and
        the models received; `Outcome(None, None)`: nothing to merge (the peer keeps `own`)."""
        if not messages:
            return Outcome(None, None)
        received = [[m.arrays[i] for i in shared] for m in messages]
        weights = [m.num_examples for m in messages]
        return merge_models(self.config.strategy, [own[i] for i in shared], received, weights, round_)

    def fields(self, round_: int) -> dict[str, Any]:
        """Fields of the round's metrics record that the plan adds."""
        return {}


def round_plan(config: ExperimentConfig, node: int, neighbours: Sequence[int]) -> RoundPlan:
    """The plan of `config`'s strategy for peer `node`: its mechanism's, or the merge rules'."""
    own = mechanism(config.strategy.name)
    plan = RoundPlan if own is None else own.part("gossip_plan")
    return plan(config, node, neighbours)
