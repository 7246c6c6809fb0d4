"""The authors' tick schedule (`gossip.schedule = "ticks"`), from their simulator DFL_torch.

Time is counted in ticks 0..T, T = experiment.rounds x gossip.eval_every_ticks. A node trains one
minibatch (`learner.train_step`) at tick 0 and then every randint(lo, hi) ticks
(`gossip.train_every_ticks`, the node's stream "ticks" of the experiment seed), and pushes its
model to all its (linked) neighbours after each training. It merges (the configured rule, its
current model as the own one) once it has received as many models as it has neighbours since its
last merge, a neighbour's duplicates each counting (`TickInbox`), then clears its buffer; it
checks once per tick, after the tick's trainings and pushes. At the end of tick k x
gossip.eval_every_ticks it evaluates and writes the record of round k (its `tick` field: the
tick): the period's mean training loss, the models it merged (`merged`, `neighbours_heard` in
merge order, duplicates included), `merge_trigger` "fresh" if it merged in the period (else
null), the bytes its pushes delivered.

`TickNode` is what one node does, written once; two drivers run it:
- `run_ticks`, the virtual-time engine's: every tick exactly, in three phases over all nodes in
  node order (all due trainings and their pushes, delivered at once; then all merges; then the
  evaluations), as the authors' simulator does;
- `TickLoop`, a real peer process's: tick t starts t x gossip.tick_s seconds after the peer's
  start (a late tick starts at once: the loop never skips one), and models arrive over gRPC
  whenever they do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING, Any

import numpy as np

from fedgossip.base.seeding import stream
from fedgossip.client.gossip.clock import VirtualClock
from fedgossip.client.gossip.tick_inbox import TickInbox
from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.schema.events import Emit

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer

Log = Callable[[int, int, str], None]
"""log(tick, node, what): what a node did ("train", "merge", "evaluate"), for tests and tracing."""


class TickNode:
    """One node of the tick schedule (see the module docstring): `train` (and push) at a tick,
    `merge` when its buffer is full, `evaluate` at an evaluation tick. `intervals` draws the ticks
    to the next training (default: the node's seeded randint over gossip.train_every_ticks)."""

    def __init__(self, peer: GossipPeer, intervals: Callable[[], int] | None = None, log: Log | None = None):
        if not isinstance(peer.inbox, TickInbox):
            raise ValueError("a tick node needs the peer's TickInbox (gossip.schedule = 'ticks')")
        self.peer = peer
        self.node = peer.node
        self.inbox = peer.inbox
        self.every = peer.gossip.eval_every_ticks
        self.last_tick = peer.config.experiment.rounds * self.every
        low, high = peer.gossip.train_every_ticks
        rng = stream(peer.config.experiment.seed, "ticks", peer.node)
        self.intervals = intervals or (lambda: int(rng.integers(low, high + 1)))
        self.log = log
        self.alive = True
        self.next_train = 0
        self.current: list[np.ndarray] = []
        self._losses: list[float] = []
        self._merged: list[ModelMessage] = []
        self._discarded: str | None = None
        self._pending: list[futures.Future] = []

    def period(self, tick: int) -> int:
        """The evaluation period (round) tick `tick` belongs to: round k ends with tick k x every."""
        return max(1, min(-(-tick // self.every), self.last_tick // self.every))

    def start(self, emit: Emit) -> None:
        """Start the peer (`GossipPeer.start`: its initial model, "ready")."""
        self.current = self.peer.start(emit)

    def train(self, tick: int) -> bool:
        """If a training is due at `tick`: train one minibatch, push the model to the linked
        neighbours, draw the next training tick; whether it trained. Diverged goes through."""
        if tick != self.next_train:
            return False
        peer, round_ = self.peer, self.period(tick)
        self.current, loss = peer.model.train(round_, self.current, "step")
        if loss is not None:
            self._losses.append(loss)
        linked = peer.linked.of(round_)
        deadline = time.monotonic() + peer.config.experiment.round_timeout  # a real send's deadline
        sends = peer.links.push(
            round_,
            self.current,
            peer.learner.num_examples,
            linked=linked,
            alive=linked,
            deadline=deadline,
            recipients=linked,
        )
        self._pending += sends.values()
        self.next_train = tick + self.intervals()
        self._trace(tick, "train")
        return True

    def merge(self, tick: int) -> bool:
        """Merge if as many models came since the last merge as the node has neighbours; whether it did."""
        degree = len(self.peer.neighbours)
        if not degree or self.inbox.count < degree:
            return False
        messages = self.inbox.take()
        merged, discarded = self.peer.model.combine(self.period(tick), self.current, self.current, messages)
        self.peer.learner.assign(merged)
        self.current = merged
        if discarded is None:
            self._merged += messages
        self._discarded = discarded or self._discarded
        self._trace(tick, "merge")
        return True

    def evaluate(self, tick: int, emit: Emit, final_wait: float = 0.0) -> bool:
        """At the end of an evaluation tick: evaluate, keep (serve) the model and emit the
        period's record; whether it did. `final_wait`: how long the last tick waits for its
        pushes to land (real peers)."""
        if tick == 0 or tick % self.every:
            return False
        peer, round_ = self.peer, tick // self.every
        test_loss, test_accuracy = peer.learner.evaluate(peer.config.experiment.whole_test_set(round_))
        peer.keep(self.current, round_)
        merged, self._merged = self._merged, []
        losses, self._losses = self._losses, []
        discarded, self._discarded = self._discarded, None
        emit(
            peer.records.round(
                round_,
                self.current,
                merged,
                train_loss=float(np.mean(losses)) if losses else None,
                test_loss=test_loss,
                test_accuracy=test_accuracy,
                bytes_sent=self._delivered(final_wait if tick == self.last_tick else 0.0),
                discarded=discarded,
                merge_trigger="fresh" if merged else None,
                tick=tick,
            )
        )
        peer.records.emit_events(emit)
        self.inbox.period = self.period(tick + 1)
        self._trace(tick, "evaluate")
        return True

    def _delivered(self, wait: float) -> int:
        """Bytes delivered by the pushes since the last record (those still in flight, after
        waiting up to `wait` seconds for them, count in a later one)."""
        if wait:
            futures.wait(self._pending, timeout=wait)
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        return sum(f.result() for f in done)

    def _trace(self, tick: int, what: str) -> None:
        if self.log is not None:
            self.log(tick, self.node, what)


def run_ticks(
    nodes: list[TickNode], clock: VirtualClock, emit: Emit, guard: Callable[[GossipPeer, Callable], Any]
) -> None:
    """The virtual-time driver: every tick on `clock`, three phases over the nodes in their order
    (train and push; merge; evaluate). `guard(peer, step)` runs a training (None: the peer
    diverged and ends)."""
    for node in nodes:
        node.start(emit)

    def tick(t: int) -> None:
        for node in nodes:
            if node.alive and guard(node.peer, lambda n=node: n.train(t)) is None:
                node.alive = False
        for node in nodes:
            if node.alive:
                node.merge(t)
        for node in nodes:
            if node.alive:
                node.evaluate(t, emit)
        if t < nodes[0].last_tick:
            clock.at(t + 1, lambda: tick(t + 1))

    clock.at(0, lambda: tick(0))
    clock.run()


FINAL_DELIVERY_S = 2.0  # how long a real peer's last tick waits for its pushes to land


class TickLoop:
    """The tick schedule of one real `GossipPeer`: a tick every gossip.tick_s seconds."""

    def __init__(self, peer: GossipPeer) -> None:
        self.peer = peer
        self.node = TickNode(peer)

    def run(self, emit: Emit) -> None:
        """Run ticks 0..T; Diverged if training keeps failing."""
        node, tick_s = self.node, self.peer.gossip.tick_s
        node.start(emit)
        started = time.monotonic()
        for tick in range(node.last_tick + 1):
            time.sleep(max(0.0, started + tick * tick_s - time.monotonic()))
            node.train(tick)
            node.merge(tick)
            node.evaluate(tick, emit, FINAL_DELIVERY_S)
        self.peer.finish(emit)
