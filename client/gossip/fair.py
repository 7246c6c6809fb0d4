"""`strategy.name = "fair"` in gossip mode: each peer runs the fair-incentive mechanism
(`fedgossip.strategies.fair.FairMechanism`) over its own neighbourhood, without a coordinator.

The peer is the coordinator of its own game: the players are the peer itself (local index 0) and
its neighbours (1..d, by id). With theta_i the model the peer trained from this round, the update
of player j is g_j = theta_j' - theta_i (its trained model minus the peer's starting model; the
peer's own g_0 is its own local update), w_j its share of the examples, and the merge is the
mechanism's step: theta_i <- theta_i + sum_{j delivered} w_j g_j (w not renormalised over who
delivered; a neighbour that sent nothing counts as a zero update). With everyone delivering this
is the example-weighted average of the peer's and its neighbours' trained models.

Explore (every neighbour gets the model; all are merged): the Shapley values of the players
under U(S) = cos(g_N, sum_{j in S} w_j g_j) are averaged into psi, until the peer's own stopping
test says they settled. Exploit: each round the peer pushes its model to k = max(1, floor(ratio
d)) neighbours drawn with softmax(beta psi) over its psi of them, and sends the others a notice
that no model comes (so nobody waits for it); it merges whatever it receives. Each peer leaves
the explore phase on its own. See docs/fair-gossip.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedgossip.base.seeding import stream
from fedgossip.client.gossip.rounds import RoundPlan
from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.config import ExperimentConfig
from fedgossip.strategies import Outcome
from fedgossip.strategies.fair import FairMechanism


class FairGossip(RoundPlan):
    """One peer's fair-incentive mechanism over itself (player 0) and its neighbours."""

    def __init__(self, config: ExperimentConfig, node: int, neighbours: Sequence[int]) -> None:
        super().__init__(config, node, neighbours)
        if not self.neighbours:
            raise ValueError(f"strategy 'fair': peer {node} has no neighbours to reward")
        self.index = {n: i + 1 for i, n in enumerate(self.neighbours)}  # neighbour id -> player
        players = len(self.neighbours) + 1
        self.mechanism = FairMechanism(
            players,
            config.strategy.params,
            stream(config.experiment.seed, "fair", node),
            candidates=range(1, players),
        )
        self._sent: list[int] = []
        self._heard: list[int] = []

    def recipients(self, round_: int) -> set[int]:
        """Every neighbour while exploring; then the k drawn by softmax(beta psi)."""
        self._sent = [self.neighbours[i - 1] for i in self.mechanism.choose(round_)]
        self._heard = []
        return set(self._sent)

    def merge(
        self,
        round_: int,
        start: list[np.ndarray],
        own: list[np.ndarray],
        own_examples: int,
        messages: Sequence[ModelMessage],
        shared: Sequence[int],
    ) -> Outcome:
        """theta_i + sum_j w_j g_j over the peer and the neighbours heard (float tensors; others
        keep the own values); in an explore round the contributions too."""
        floats = [i for i in shared if own[i].dtype.kind == "f"]
        base = [np.asarray(start[i], dtype=np.float64) for i in floats]

        def update(arrays: list[np.ndarray]) -> list[np.ndarray]:
            return [np.asarray(arrays[i], dtype=np.float64) - b for i, b in zip(floats, base, strict=True)]

        updates = {0: update(own), **{self.index[m.sender]: update(m.arrays) for m in messages}}
        sizes = {0: own_examples, **{self.index[m.sender]: m.num_examples for m in messages}}
        try:
            step = iter(self.mechanism.aggregate(updates, sizes))
        except ValueError as err:  # e.g. every example count zero: keep the own model
            return Outcome(None, f"strategy 'fair' failed in round {round_}: {err}")
        self.mechanism.receivers()
        self._heard = sorted(m.sender for m in messages)
        moved = {i: b + next(step) for i, b in zip(floats, base, strict=True)}
        return Outcome([moved[i].astype(own[i].dtype) if i in moved else own[i] for i in shared], None)

    def fields(self, round_: int) -> dict[str, Any]:
        """The fair fields of the peer's record: its phase, whether a neighbour sent it a model
        (selected), rounds since one last did (staleness), its own contribution, psi and test
        p-value in its own game; whom it sent its model to, its psi of each neighbour and (exploit)
        each neighbour's chance to be drawn."""
        players = self.mechanism.fields()
        mine = players[0]
        last_heard = int(self.mechanism.last_received[1:].max())
        exploit = mine["phase"] == "exploit"
        return {
            "phase": mine["phase"],
            "selected": bool(self._heard),
            "staleness": round_ - last_heard,
            "contribution": mine["contribution"],
            "psi": mine["psi"],
            "selection_probability": None,
            "explore_p_value": mine["explore_p_value"],
            "update_norm": mine["update_norm"],
            "update_alignment": mine["update_alignment"],
            "sent_to": list(self._sent),
            "neighbour_psi": None
            if mine["psi"] is None
            else {str(n): players[i]["psi"] for n, i in self.index.items()},
            "neighbour_probability": {
                str(n): players[i]["selection_probability"] for n, i in self.index.items()
            }
            if exploit
            else None,
        }
