"""Churn: which nodes are down in which rounds, drawn from the experiment seed.

The plan is a pure function of the config, so the launcher (which stops and restarts the SuperNode
processes) and the ServerApp (which waits, at each round's start, until the SuperLink's nodes match
it) agree without talking, and so do the gossip peers (`fedgossip.client.gossip.crash`: whom a round
waits for, when and from whom a crashed peer rejoins). A node chosen by `scenario.crash` /
`crash_fraction`, or drawn by `crash_rate` (the gossip peers' `CrashClock`, so both runtimes crash
the same nodes in the same rounds), is down from the round it crashes in for `down_rounds` rounds
and takes part again in round crash + down_rounds (if the run lasts that long). No Flower, no
torch here: the launcher imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedgossip.config import ExperimentConfig
from fedgossip.scenario.roles import CrashClock, roles


@dataclass(frozen=True)
class Outage:
    """One crash of one node: down in rounds first .. back - 1, back for round `back` (None: the
    run ends first)."""

    node: int
    first: int
    back: int | None


@dataclass(frozen=True)
class ChurnPlan:
    """Every outage of a run, and the questions the launcher and the ServerApp ask of them."""

    outages: tuple[Outage, ...]
    rounds: int
    down_rounds: int

    def crashing(self, round_: int) -> list[int]:
        """The nodes whose SuperNode stops before `round_`."""
        return sorted(o.node for o in self.outages if o.first == round_)

    def returning(self, round_: int) -> list[Outage]:
        """The outages that end with `round_` (their node is back for it), by node."""
        return sorted((o for o in self.outages if o.back == round_), key=lambda o: o.node)

    def down(self, round_: int) -> set[int]:
        """The nodes that are down in `round_`."""
        return {o.node for o in self.outages if o.first <= round_ and (o.back is None or round_ < o.back)}

    def fewest_up(self, count: int) -> tuple[int, int]:
        """(the fewest of `count` nodes up in any round, the first round with that few)."""
        return min((count - len(self.down(r)), r) for r in range(1, self.rounds + 1))

    def __bool__(self) -> bool:
        return bool(self.outages)


def churn_plan(config: ExperimentConfig) -> ChurnPlan:
    """The outages of `config`'s scenario over its rounds (empty without churn)."""
    scenario, count, seed = config.scenario, config.nodes.count, config.experiment.seed
    rounds, down_rounds = config.experiment.rounds, scenario.down_rounds
    outages = []
    if scenario.churn:
        for node in range(count):
            clock = CrashClock(scenario, roles(scenario, node, count, seed), node, seed)
            round_ = 1
            while round_ <= rounds:
                if not clock.crashes(round_):
                    round_ += 1
                    continue
                back = round_ + down_rounds
                outages.append(Outage(node, round_, back if back <= rounds else None))
                round_ = back
    return ChurnPlan(tuple(outages), rounds, down_rounds)
