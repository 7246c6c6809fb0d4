"""The scenario's network between a peer and its neighbours: the one layer that applies faults.

Every push leaves a peer through a NeighbourSender; `FaultySender` is one that first asks the
link's `Link` what happens to the message: it is lost (with probability scenario.loss, or always
while a partition separates the two ends), or it waits delay_ms +- jitter_ms (uniform) plus its
size over bandwidth_mbps before it goes. Each direction of a link is the push of one of its ends,
so both directions are covered. A link's fate in a round is drawn from a stream of its own,
keyed by the experiment seed, the two ends and the round: how many messages the link sent
before, and when, changes nothing. In sync rounds a lost push still reaches the receiver as a
notice that no model comes (a Withhold notice: no model, no bytes), a barrier that keeps the two in
step: the receiver neither waits a round timeout for the lost model (a wait whose length would
decide which model it merges next) nor runs ahead of a neighbour it did not hear. Every loss and
delay is an event of the sender (a loss when the push is queued). scenario.link_delay_ms adds to
the delay of the links it names.

With scenario.network_layer = "kernel" the kernel applies all of it between emulated hosts
(launcher/network/shaping.py) and a peer pushes through a `TimedSender`: no fault of its own, and
a "push" event per push with the seconds it took (`push_s`), where the kernel's delays show.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent import futures

from fedgossip.base.seeding import stream
from fedgossip.client.gossip.transport.sender import NeighbourSender, OnReply, _Job
from fedgossip.client.gossip.transport.wire import WireChunk
from fedgossip.config.sections import ScenarioSection, link_ends
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc
from fedgossip.scenario.roles import Events


def group_of(node: int, groups: int, count: int) -> int:
    """The partition group of `node`: `groups` contiguous blocks of ids, as even as they can be."""
    return node * groups // count


class Link:
    """The faults of the link from `node` to `neighbour` (sender side)."""

    def __init__(self, scenario: ScenarioSection, node: int, neighbour: int, count: int, seed: int) -> None:
        self.scenario = scenario
        self.node, self.neighbour, self.seed = node, neighbour, seed
        self.split = scenario.partition_groups > 0 and group_of(
            node, scenario.partition_groups, count
        ) != group_of(neighbour, scenario.partition_groups, count)
        named = scenario.link_delay_ms.items()
        self.extra_ms = sum(delay for name, delay in named if set(link_ends(name)) == {node, neighbour})

    def partitioned(self, round_: int) -> bool:
        """Whether a partition separates the two ends in `round_`."""
        if not self.split:
            return False
        first, last = self.scenario.partition_rounds
        return first <= round_ <= last

    def _draws(self, round_: int) -> tuple[float, float]:
        """The round's loss draw (uniform in [0, 1)) and jitter (ms): the first two numbers of the
        stream keyed by (seed, "network", node, neighbour, round), whatever the link sent before."""
        rng = stream(self.seed, "network", self.node, self.neighbour, round_)
        draw = float(rng.random())
        jitter_ms = self.scenario.jitter_ms
        return draw, float(rng.uniform(-jitter_ms, jitter_ms)) if jitter_ms > 0 else 0.0

    def lost(self, round_: int) -> str | None:
        """Why a message sent in `round_` is lost ("partition", "loss"), None if it is not."""
        if self.partitioned(round_):
            return "partition"
        loss = self.scenario.loss
        return "loss" if loss > 0 and self._draws(round_)[0] < loss else None

    def delay(self, round_: int, nbytes: int) -> float:
        """The seconds a message of `nbytes` sent in `round_` (and not lost) waits before it goes."""
        s = self.scenario
        seconds = (s.delay_ms + self.extra_ms + self._draws(round_)[1]) / 1000
        if s.bandwidth_mbps > 0:
            seconds += nbytes * 8 / (s.bandwidth_mbps * 1e6)
        return seconds


class FaultySender(NeighbourSender):
    """A NeighbourSender whose pushes go through the link's faults first (see `Link`); with
    `notify_losses` (sync rounds) a lost push is a notice that no model comes instead."""

    def __init__(
        self,
        node: int,
        stub: gossip_pb2_grpc.GossipStub,
        metadata: Sequence[tuple[str, str]],
        on_reply: OnReply,
        link: Link,
        events: Events,
        *,
        notify_losses: bool,
    ) -> None:
        self._link = link
        self._events = events
        self._notify_losses = notify_losses
        super().__init__(node, stub, metadata, on_reply)

    def queue(self, chunks: Sequence[WireChunk], deadline: float, *, wait: bool) -> futures.Future:
        """Queue a model the link does not lose in its round (see NeighbourSender.queue); a lost one
        is dropped here, now (an event and a count of its round), and says 0 bytes: at once, or
        (`notify_losses`) when the neighbour has its notice."""
        header = chunks[0].header
        reason = self._link.lost(header.round)
        if reason is None:
            return super().queue(chunks, deadline, wait=wait)
        self._events.add("drop", header.round, to=self.node, reason=reason)
        self._events.count(header.round, "dropped", 1)
        if self._notify_losses:
            return self.withhold(
                gossip_pb2.WithholdNotice(sender=header.sender, round=header.round), deadline, wait=wait
            )
        result: futures.Future = futures.Future()
        result.set_result(0)
        return result

    async def _transmit(self, job: _Job) -> int:
        round_ = job.chunks[0].header.round
        delay = self._link.delay(round_, sum(len(c.data) for c in job.chunks))
        if delay > 0:
            self._events.add("delay", round_, to=self.node, delay_s=round(delay, 4))
            self._events.count(round_, "delayed_s", delay)
            if await self._pause(delay):
                return 0
        return await super()._transmit(job)


class TimedSender(NeighbourSender):
    """A NeighbourSender that records how long each push took (a "push" event: `to`, `push_s`,
    `bytes`, 0 if it failed): the network layer is the kernel's (scenario.network_layer = "kernel")."""

    def __init__(
        self,
        node: int,
        stub: gossip_pb2_grpc.GossipStub,
        metadata: Sequence[tuple[str, str]],
        on_reply: OnReply,
        events: Events,
    ) -> None:
        self._events = events
        super().__init__(node, stub, metadata, on_reply)

    async def _transmit(self, job: _Job) -> int:
        started = time.perf_counter()
        sent = await super()._transmit(job)
        took = round(time.perf_counter() - started, 4)
        self._events.add("push", job.chunks[0].header.round, to=self.node, push_s=took, bytes=sent)
        return sent
