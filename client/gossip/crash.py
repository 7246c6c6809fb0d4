"""A gossip peer's scheduled crash (`scenario.churn`, see `fedgossip.scenario.roles.CrashClock`)
and its rejoin.

At the start of a crash round the peer stops serving and forgets its model while its neighbours
go `scenario.down_rounds` rounds on; then it serves again on the same port and rejoins by adopting
the model of the furthest neighbour not behind it (GetModel). Neighbours down at the same time and
planned back by its own return (the seeded churn plan, `fedgossip.scenario.churn`, known to every
peer) are waited for until they answer, at most as long as it stayed down: they crashed before it
came back, so they are back within as long (with `crash_rate` a neighbour may come back at another
round; the bound holds). So after a crash of many, or all, nodes, whose returns spread by how far
apart they crashed, the peers rejoin each other instead of each running on alone. The neighbours
that answer are waited for in the round it lands in (their models of it, pushed while it was
coming back, are held); the others are not (`mark_silent`), whatever was known of them before.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from fedgossip.client.gossip.neighbours import MAX_WAIT_TIMEOUTS
from fedgossip.scenario.churn import ChurnPlan
from fedgossip.scenario.roles import CrashClock
from fedgossip.schema.events import Emit

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer

HEALTH_POLL_S = 0.2  # how often a crashed peer asks whether its neighbours went far enough


class Crash:
    """The crashes of one peer (when its `clock` says) and its rejoins, knowing when its
    neighbours are down (the run's churn `plan`)."""

    def __init__(self, peer: GossipPeer, clock: CrashClock, plan: ChurnPlan) -> None:
        self.peer = peer
        self.clock = clock
        self.plan = plan

    def due(self, round_: int) -> bool:
        """Whether the peer crashes at the start of `round_` (asked once per round it runs)."""
        return self.clock.crashes(round_)

    def crash_and_rejoin(self, round_: int, emit: Emit) -> list[np.ndarray]:
        """Crash at the start of `round_`, stay down, come back and rejoin; the model the peer
        goes on with (the peer resumes after the round its service says it completed)."""
        peer = self.peer
        scenario, events, records = peer.scenario, peer.events, peer.records
        events.add("crash", round_, down_rounds=scenario.down_rounds)
        records.emit_events(emit)
        peer.service.state = "crashed"
        peer.server.stop(grace=0.0)
        peer.learner.assign(peer.initial)
        self._stay_down(round_ - 1 + scenario.down_rounds)
        back = time.monotonic()
        peer.service.publish(peer.initial, peer.learner.num_examples, round_ - 1)
        peer.serve_again()
        stubs = set(peer.links.stubs)
        answered = self._rejoin_with(stubs, self.down_with(round_, round_ + scenario.down_rounds))
        for node, done in answered.items():
            peer.inbox.note(node, done, refused=False)
        caught_up = peer.watch.catch_up(round_, margin=-1)
        current = peer.initial if caught_up is None else caught_up.arrays
        resume = peer.service.completed + 1
        rejoined = {"rounds_missed": resume - round_, "rejoin_s": round(time.monotonic() - back, 4)}
        events.add("rejoin", resume, from_node=None if caught_up is None else caught_up.sender, **rejoined)
        if caught_up is not None and caught_up.round >= round_:  # the record of the jump says it
            emit(records.caught_up(caught_up, round_, **rejoined))
        else:  # in step with its neighbours: the next record says it
            records.rejoined = rejoined
        peer.inbox.mark_silent(stubs - answered.keys())
        records.emit_events(emit)
        return current

    def down_with(self, first: int, back: int) -> set[int]:
        """The nodes planned to be down while this peer is (it crashed at round `first` and is
        planned back for round `back`) and back no later than it: the peers it rejoins with."""
        return {
            o.node
            for o in self.plan.outages
            if o.node != self.peer.node and o.first < back and o.back is not None and first < o.back <= back
        }

    def _rejoin_with(self, stubs: set[int], returning: set[int]) -> dict[int, int]:
        """The rounds completed by the neighbours (of `stubs`) that answer Health, asked until all
        of `returning` answer or `_down_bound` seconds have passed (those still silent are gone)."""
        peer = self.peer
        timeout = peer.config.experiment.round_timeout
        limit = time.monotonic() + self._down_bound()
        while True:
            answered = peer.watch.health(stubs, timeout / 4)
            if returning & stubs <= answered.keys() or time.monotonic() >= limit:
                return answered
            time.sleep(HEALTH_POLL_S)

    def _down_bound(self) -> float:
        """How long a crashed peer stays down at most, in seconds: MAX_WAIT_TIMEOUTS round
        timeouts per round down (its neighbours gone, or all down with it)."""
        return MAX_WAIT_TIMEOUTS * self.peer.config.experiment.round_timeout * self.peer.scenario.down_rounds

    def _stay_down(self, until: int) -> None:
        """Wait (asking the neighbours' Health) until one of them completed round `until`, or
        `_down_bound` seconds have passed."""
        peer = self.peer
        timeout = peer.config.experiment.round_timeout
        limit = time.monotonic() + self._down_bound()
        stubs = set(peer.links.stubs)
        while time.monotonic() < limit:
            if max(peer.watch.health(stubs, min(1.0, timeout / 4)).values(), default=0) >= until:
                return
            time.sleep(HEALTH_POLL_S)
