"""A gossip peer's scheduled crash (`scenario.churn`, see `fedgossip.scenario.roles.CrashClock`),
its rejoin, and what its neighbours make of it: all decided by the seeded churn plan
(`fedgossip.scenario.churn.ChurnPlan`, known to every peer), never by timing.

A peer that crashes at the start of round `first` stops serving and forgets its model; the plan
has it down in rounds first .. back - 1 (back = first + `scenario.down_rounds`) and back for round
`back`. Its neighbours neither push to it nor wait for it in the rounds it is planned down (no
timeout: the same merge set every run, as for a lost push's notice), and wait for it again from
`back` on (even if an earlier round marked it silent). It serves again, its inbox open at `back`,
once a neighbour the plan has up in round back - 1 has completed round back - 2 (at once if none
is up): before any neighbour pushes its model of round `back`. It then adopts the model of round
back - 1 of its source: the lowest-numbered neighbour linked in round `back` (with
`scenario.resample_every`, that round's) that the plan has up in rounds back - 1 and `back`. The
source waits for it in round `back`, so it still serves that model when asked (Health first, then
GetModel): the rejoin's record is that model at round back - 1, and the peer resumes at `back`
once every neighbour linked and up in it has completed round back - 2 (Health), so that each
takes its push of round `back` at once (a push further ahead is held and counts no bytes).
With no source (its neighbours all down with it) it goes on from its initial model, and its next
record says it rejoined. An outage the plan runs past the last round keeps the peer down to the end:
its one more record is of the last round, its initial model evaluated and the rounds it missed
(the launcher counts it finished, not dead). One followed at once by another (`crash_rate`) goes
on into it.

Reality may not follow the plan (a neighbour really dead, or slower than the round timeouts allow);
then every wait is bounded as in any round: the peer stays down at most `_down_bound` seconds, and
waits at most MAX_WAIT_TIMEOUTS round timeouts for its source (its neighbours give up waiting for it
in round `back` as soon); if the source answers past round back - 1 it adopts that model and
resumes after its round, if not at all it goes on from its initial model. The rejoin event then
says why (`off_plan`), and the log says so too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

import grpc
import numpy as np

from fedgossip.client.gossip.neighbours import MAX_WAIT_TIMEOUTS
from fedgossip.client.gossip.transport.wire import ModelMessage, WireError
from fedgossip.scenario.churn import ChurnPlan
from fedgossip.scenario.roles import CrashClock
from fedgossip.schema.events import Emit

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer

log = logging.getLogger("fedgossip.peer")

HEALTH_POLL_S = 0.2  # how often a crashed peer asks whether its neighbours went far enough


class Crash:
    """The crashes of one peer (when its `clock` says) and its rejoins, and which neighbours its
    rounds push to and wait for, by the run's churn `plan`."""

    def __init__(self, peer: GossipPeer, clock: CrashClock, plan: ChurnPlan) -> None:
        self.peer = peer
        self.clock = clock
        self.plan = plan
        self._down_since: int | None = None  # the first round of outages back to back (crash_rate)

    def due(self, round_: int) -> bool:
        """Whether the peer crashes at the start of `round_` (asked once per round it runs)."""
        return self.clock.crashes(round_)

    def neighbours(
        self, round_: int, linked: Collection[int], silent: Collection[int]
    ) -> tuple[set[int], set[int]]:
        """Of the neighbours `linked` in `round_`: those the plan has up (pushed to), and those of
        them the round waits for (all but the `silent` ones, unless the plan brings them back in
        this round)."""
        if not self.plan:
            return set(linked), set(linked) - set(silent)
        up = set(linked) - self.plan.down(round_)
        back = {o.node for o in self.plan.returning(round_)}
        return up, up - (set(silent) - back)

    def source(self, back: int) -> int | None:
        """The neighbour whose model of round back - 1 a peer back for round `back` adopts: the
        lowest-numbered one linked in `back` (it waits for the peer then) that the plan has up in
        rounds back - 1 and `back`; None if there is none."""
        up = self.peer.linked.of(back) - self.plan.down(back - 1) - self.plan.down(back)
        return min(up, default=None)

    def crash_and_rejoin(self, round_: int, emit: Emit) -> tuple[list[np.ndarray], int]:
        """Crash at the start of `round_`, stay down, come back and rejoin; the model the peer goes
        on with and the round it resumes at (past the last round: it stays down to the end)."""
        peer = self.peer
        scenario, events, records = peer.scenario, peer.events, peer.records
        events.add("crash", round_, down_rounds=scenario.down_rounds)
        records.emit_events(emit)
        peer.service.state = "crashed"
        peer.server.stop(grace=0.0)
        peer.learner.assign(peer.initial)
        back = round_ + scenario.down_rounds
        first, self._down_since = (round_ if self._down_since is None else self._down_since), None
        if back > peer.config.experiment.rounds:
            self._record_last(first, emit)
            return peer.initial, back
        if peer.node in self.plan.down(back):  # crashes again (crash_rate) at its return
            self._down_since = first
            return peer.initial, back
        self._stay_down(back)
        started = time.monotonic()
        peer.inbox.skip_to(back)  # the neighbours' models of `back` may come from now on
        peer.service.publish(peer.initial, peer.learner.num_examples, back - 1)
        peer.serve_again()
        source = self.source(back)
        limit = time.monotonic() + MAX_WAIT_TIMEOUTS * peer.config.experiment.round_timeout
        message, off_plan = self._adopt(source, back, limit) if source is not None else (None, None)
        resume = back if message is None else message.round + 1
        if resume == back:
            self._await_neighbours(back, limit)
        rejoined = {"rounds_missed": resume - first, "rejoin_s": round(time.monotonic() - started, 4)}
        extra = {} if off_plan is None else {"off_plan": off_plan}
        events.add("rejoin", resume, from_node=None if message is None else source, **rejoined, **extra)
        if message is not None:  # the record of the jump says it
            emit(records.caught_up(message, first, **rejoined))
        else:  # from its initial model: the next record says it
            records.rejoined = rejoined
        records.emit_events(emit)
        return peer.initial if message is None else message.arrays, resume

    def _record_last(self, first: int, emit: Emit) -> None:
        """The last round's record of a peer down from round `first` to the end of the run: the
        model it holds (its initial one, evaluated), nothing merged, the rounds it missed (and
        `rejoin_s` 0: it holds that model at once), so the launcher counts it finished, not dead."""
        peer = self.peer
        last = peer.config.experiment.rounds
        test_loss, test_accuracy = peer.learner.evaluate(peer.config.experiment.whole_test_set(last))
        peer.records.rejoined = {"rounds_missed": last + 1 - first, "rejoin_s": 0.0}
        emit(
            peer.records.round(
                last,
                peer.initial,
                [],
                discarded=None,
                train_loss=None,
                test_loss=test_loss,
                test_accuracy=test_accuracy,
                bytes_sent=0,
                **peer.plan.fields(last),
            )
        )

    def _adopt(self, source: int, back: int, limit: float) -> tuple[ModelMessage | None, str | None]:
        """Fetch and adopt `source`'s model of round back - 1 (once its Health says it completed
        that round), waiting until `limit` (monotonic) at most; the model adopted (None: none)
        and, when it is not the planned one, why."""
        peer, wanted = self.peer, back - 1
        timeout = peer.config.experiment.round_timeout
        while time.monotonic() < limit:
            if peer.watch.health({source}, min(1.0, timeout / 4)).get(source, -1) >= wanted:
                try:
                    message = peer.watch.fetch(source)
                except (grpc.RpcError, WireError, TimeoutError) as err:
                    log.warning("rejoin: fetching node %d's model failed: %s", source, err)
                    message = None
                if message is not None and message.round >= wanted:
                    peer.learner.assign(message.arrays)  # checked by the assembler, like any push
                    peer.inbox.skip_to(message.round + 1)
                    peer.service.publish(message.arrays, peer.learner.num_examples, message.round)
                    if message.round == wanted:
                        return message, None
                    why = f"node {source} was past round {wanted} (at {message.round})"
                    log.warning("rejoin off plan: %s", why)
                    return message, why
            time.sleep(HEALTH_POLL_S)
        why = f"no model of round {wanted} from node {source} within {MAX_WAIT_TIMEOUTS * timeout:g}s"
        log.warning("rejoin off plan: %s; going on from the initial model", why)
        return None, why

    def _await_neighbours(self, back: int, limit: float) -> None:
        """Wait (Health) until every neighbour linked and up in round `back` has completed round
        back - 2, so its inbox takes the peer's model of `back` (earlier, the model would be held
        for later and counted as not delivered), until `limit` (monotonic) at most. A neighbour
        the plan has up in round back - 1 that does not answer is not waited for (dead)."""
        peer = self.peer
        timeout = peer.config.experiment.round_timeout
        waiting = peer.linked.of(back) - self.plan.down(back)
        returning = self.plan.down(back - 1)  # planned back with it: may not serve yet
        while waiting and time.monotonic() < limit:
            done = peer.watch.health(waiting, min(1.0, timeout / 4))
            waiting -= {n for n, r in done.items() if r >= back - 2} | (waiting - done.keys() - returning)
            if waiting:
                time.sleep(HEALTH_POLL_S)

    def _down_bound(self) -> float:
        """How long a crashed peer stays down at most, in seconds: MAX_WAIT_TIMEOUTS round
        timeouts per round down (its neighbours gone)."""
        return MAX_WAIT_TIMEOUTS * self.peer.config.experiment.round_timeout * self.peer.scenario.down_rounds

    def _stay_down(self, back: int) -> None:
        """Wait (asking their Health) until a neighbour the plan has up in round back - 1 has
        completed round back - 2, so the peer serves before any model of round `back` is pushed to
        it (at once if none is up); at most `_down_bound` seconds."""
        peer = self.peer
        timeout = peer.config.experiment.round_timeout
        up = set(peer.links.stubs) - self.plan.down(back - 1)
        limit = time.monotonic() + self._down_bound()
        while up and time.monotonic() < limit:
            if max(peer.watch.health(up, min(1.0, timeout / 4)).values(), default=-1) >= back - 2:
                return
            time.sleep(HEALTH_POLL_S)
