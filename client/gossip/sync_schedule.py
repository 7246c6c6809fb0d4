"""Synchronous gossip (`gossip.schedule = "sync"`, the default): rounds in step with the neighbours.

Each round: train, push the model to every neighbour linked in it (the round plan may push to some
only; the others get a notice that none comes, so they do not wait for it: fair gossip), wait (up
to the round timeout) for the neighbours' models of this round, merge them in sender order with
the configured strategy, evaluate, emit a metrics record. A neighbour that missed a round is not
waited for again until it is heard from again in step (a model one round late counts: it stands
in for this round's), so a dead or frozen peer costs its neighbours one timeout, not one per
round. A peer that fell behind catches up (`NeighbourWatch.catch_up`); one whose crash is due
crashes and rejoins (`Crash`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from concurrent import futures
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from fedgossip.schema.events import Emit

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer

log = logging.getLogger("fedgossip.peer")

DELIVERY_GRACE_S = 2.0  # how long a round waits for its model to reach the neighbours in step


class Sent(NamedTuple):
    """A round's first half: the trained model and its loss, the neighbours expected to send,
    the round's deadline (monotonic) and the pushes in flight by node."""

    own: list[np.ndarray]
    train_loss: float | None
    expected: set[int]
    deadline: float
    pending: dict[int, futures.Future]


class SyncRounds:
    """The synchronous schedule of one `GossipPeer`."""

    def __init__(self, peer: GossipPeer) -> None:
        self.peer = peer

    def run(self, emit: Emit) -> None:
        """Run every round, calling `emit` with each metrics record; Diverged if training keeps failing."""
        peer = self.peer
        rounds = peer.config.experiment.rounds
        current = peer.start(emit)
        round_ = 1
        while round_ <= rounds:
            if peer.crash.due(round_):
                current, round_ = peer.crash.crash_and_rejoin(round_, emit)
                continue
            caught_up = peer.watch.catch_up(round_)
            if caught_up is not None:
                current = caught_up.arrays
                emit(peer.records.caught_up(caught_up, round_))
                round_ = caught_up.round + 1  # their models of it that came before are held
                continue
            current = self.collect(round_, current, self.send(round_, current), emit)
            round_ += 1
        peer.finish(emit)

    def send(self, round_: int, current: list[np.ndarray]) -> Sent:
        """The first half of round `round_`: train from `current` and push the trained model to
        the neighbours linked in the round (the plan's recipients; the others get a notice)."""
        return self.push(round_, self.peer.model.train(round_, current))

    def push(self, round_: int, trained: tuple[list[np.ndarray], float | None]) -> Sent:
        """Push the round's `trained` (model, loss) as `send` does (the virtual-time engine
        trains its peers at once first, then pushes in node order)."""
        peer, inbox = self.peer, self.peer.inbox
        own, train_loss = trained
        deadline = time.monotonic() + peer.config.experiment.round_timeout
        peer.service.state = "waiting"
        # not linked: the churn plan's down neighbours; not waited for: the silent ones (no Health answer)
        linked, expected = peer.crash.neighbours(round_, peer.linked.of(round_), inbox.silent())
        pending = peer.links.push(
            round_,
            own,
            peer.learner.num_examples,
            linked=linked,
            alive=expected,
            deadline=deadline,
            recipients=peer.plan.recipients(round_),
        )
        return Sent(own, train_loss, expected, deadline, pending)

    def collect(self, round_: int, current: list[np.ndarray], sent: Sent, emit: Emit) -> list[np.ndarray]:
        """The second half of round `round_`: wait for the neighbours' models of the round, merge
        them in sender order, evaluate and record; the model kept. (Real peers call it right
        after `send`; the virtual-time engine once every peer has sent.)"""
        peer, inbox = self.peer, self.peer.inbox
        rounds, timeout = peer.config.experiment.rounds, peer.config.experiment.round_timeout
        missing, silent = peer.watch.wait_for(round_, sent.expected, sent.deadline)
        noticed = inbox.notices(round_)  # they send no model this round, yet are in step
        messages = inbox.close(round_)
        heard = [m.sender for m in messages]
        # the first round waits for connections being set up; the last must reach everyone
        edge = round_ in (1, rounds)
        until = sent.deadline if edge else time.monotonic() + min(DELIVERY_GRACE_S, timeout / 4)
        in_step = {m.sender for m in messages if m.round == round_} | noticed
        delivered_bytes = delivered(sent.pending, in_step, until)
        if missing:
            log.warning(
                "round %d: no model from %s (not answering: %s)", round_, sorted(missing), sorted(silent)
            )
        inbox.mark_silent(silent - set(heard) - noticed)
        merged = peer.model.merge(round_, current, sent.own, messages)
        peer.keep(merged.model, round_)
        emit(
            peer.records.round(
                round_,
                merged.model,
                messages,
                train_loss=sent.train_loss,
                test_loss=merged.test_loss,
                test_accuracy=merged.test_accuracy,
                bytes_sent=delivered_bytes,
                discarded=merged.discarded,
                **peer.plan.fields(round_),
            )
        )
        peer.records.emit_events(emit)
        return merged.model


def delivered(pending: dict[int, futures.Future], heard: Collection[int], until: float) -> int:
    """Bytes of this round's model delivered to the neighbours heard from in time this round
    (their model or their notice that none comes; a notice of ours counts 0 bytes).

    Those neighbours are in step and accept at once, so the wait is short; it is bounded by
    `until` (a monotonic time): a neighbour that froze right after its push holds nobody. In
    the first round (connections still being set up) and the last (the final model must reach
    them before the peer exits) `until` is the deadline. Sends to other neighbours are not waited for.
    """
    sends = [pending[node] for node in heard if node in pending]
    done, _ = futures.wait(sends, timeout=max(0.0, until - time.monotonic()))
    return sum(f.result() for f in done)
