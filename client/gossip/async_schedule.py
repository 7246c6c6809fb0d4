"""Asynchronous gossip (`gossip.schedule = "async"`): a peer's loop without a round barrier.

Each peer goes at its own pace, unit after unit: it trains one `gossip.async_unit` ("epoch": one
train() call, task.local_epochs epochs; "step": one minibatch of task.batch_size), waits an
interval drawn uniformly from `gossip.async_interval` = [lo, hi] seconds (the node's stream
"async" of the experiment seed), pushes the trained model to its neighbours, and merges (the
strategy's rule, as in synchronous rounds) when as many *fresh* models came as it has
neighbours, or `gossip.async_merge_timeout` seconds after its last merge (whatever is fresh,
maybe nothing): `fedgossip.client.gossip.async_inbox`. It never waits for a neighbour, so a dead or
frozen one only makes its merges rarer, never later than the timeout.

The run is `experiment.rounds` units per peer: the same amount of training as that many
synchronous rounds of the same unit. The wire's `round` is the sender's unit count (monotone:
receivers tell fresh from stale by it). One metrics record per unit: `round` is the unit,
`time_s` its time; `merge_trigger` says why it merged ("fresh", "timeout"; null: no merge due)
and `merged_units` the units of the models merged (how stale they were). `bytes_sent` counts the
bytes delivered since the previous record (sends are not waited for, except after the last unit,
up to FINAL_DELIVERY_S, so the final model reaches the neighbours still running).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING

import numpy as np

from fedgossip.base.seeding import stream
from fedgossip.client.gossip.async_inbox import AsyncInbox, MergeTrigger
from fedgossip.client.gossip.own_model import Trained
from fedgossip.schema.events import Emit

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer

FINAL_DELIVERY_S = 2.0  # how long the last unit's pushes may take to land before the peer exits


class AsyncLoop:
    """The asynchronous schedule of one `GossipPeer` (through its parts: own model, links,
    linked neighbours, records)."""

    def __init__(self, peer: GossipPeer, clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(peer.inbox, AsyncInbox):
            raise ValueError("an async loop needs the peer's AsyncInbox (gossip.schedule = 'async')")
        self.peer = peer
        self.inbox = peer.inbox
        self.clock = clock  # seconds: monotonic time, or the virtual-time engine's clock
        self.pauses = stream(peer.config.experiment.seed, "async", peer.peer.id)
        self.pending: list[futures.Future] = []  # sends not yet counted in a record
        self.trigger = MergeTrigger(len(peer.neighbours), peer.gossip.async_merge_timeout, clock())

    def run(self, emit: Emit) -> None:
        """Train, pause, push and maybe merge experiment.rounds times, one record per unit."""
        peer = self.peer
        current = self.begin(emit)
        for unit in range(1, peer.config.experiment.rounds + 1):
            trained = self.train(unit, current)
            time.sleep(self.pause())
            current = self.finish_unit(unit, current, trained, emit)
        peer.finish(emit)

    def begin(self, emit: Emit) -> list[np.ndarray]:
        """Start the peer (`GossipPeer.start`); the merge timeout counts from now."""
        current = self.peer.start(emit)
        self.trigger.merged(self.clock())
        return current

    def train(self, unit: int, current: list[np.ndarray]) -> Trained:
        """Train `unit` from `current` (one gossip.async_unit)."""
        trained = self.peer.model.train(unit, current, self.peer.gossip.async_unit)
        self.peer.service.state = "waiting"
        return trained

    def pause(self) -> float:
        """The pause after a unit's training, drawn from gossip.async_interval (the node's stream)."""
        return float(self.pauses.uniform(*self.peer.gossip.async_interval))

    def finish_unit(
        self, unit: int, current: list[np.ndarray], trained: Trained, emit: Emit
    ) -> list[np.ndarray]:
        """After the pause: push `unit`'s model, merge if due (at the clock's now), record; the
        model kept. (The real loop sleeps the pause before it; the virtual-time engine schedules it.)"""
        peer = self.peer
        own, train_loss = trained
        self.inbox.step = unit
        self._push(unit, own)
        reason = self.trigger.due(self.inbox.arrivals, self.clock())
        messages = self.inbox.take() if reason else []
        if reason:
            self.trigger.merged(self.clock())
        merged = peer.model.merge(unit, current, own, messages)
        current = merged.model
        sent = self._delivered(FINAL_DELIVERY_S if unit == peer.config.experiment.rounds else 0.0)
        peer.keep(current, unit)
        emit(
            peer.records.round(
                unit,
                current,
                messages,
                train_loss=train_loss,
                test_loss=merged.test_loss,
                test_accuracy=merged.test_accuracy,
                bytes_sent=sent,
                discarded=merged.discarded,
                merge_trigger=reason,
                merged_units=[m.round for m in messages],
            )
        )
        peer.records.emit_events(emit)
        return current

    def _push(self, unit: int, own: list[np.ndarray]) -> None:
        """Queue the model of `unit` for every neighbour linked in it (a send waits for a
        neighbour not reachable yet up to the round timeout; a newer model replaces one still
        queued)."""
        peer = self.peer
        linked = peer.linked.of(unit)
        deadline = time.monotonic() + peer.config.experiment.round_timeout  # a real send's deadline
        examples = peer.learner.num_examples
        sends = peer.links.push(
            unit, own, examples, linked=linked, alive=linked, deadline=deadline, recipients=linked
        )
        self.pending += sends.values()

    def _delivered(self, wait: float) -> int:
        """Bytes delivered by the sends done since the last call, after waiting up to `wait`
        seconds for those still in flight; the others are counted by a later call."""
        if wait:
            futures.wait(self.pending, timeout=wait)
        delivered, waiting = 0, []
        for send in self.pending:
            if send.done():
                delivered += send.result()
            else:
                waiting.append(send)
        self.pending = waiting
        return delivered
