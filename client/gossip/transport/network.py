"""The scenario's network between a peer and its neighbours: the one layer that applies faults.

Every push leaves a peer through a NeighbourSender; `FaultySender` is one that first asks the
link's `Link` what happens to the message: it is lost (with probability scenario.loss, or always
while a partition separates the two ends), or it waits delay_ms +- jitter_ms (uniform) plus its
size over bandwidth_mbps before it goes. Each direction of a link is the push of one of its ends,
so both directions are covered. Each link draws from its own stream of the experiment seed (in
push order, in the sender's coroutine), and every loss and delay is an event of the sender.
scenario.link_delay_ms adds to the delay of the links it names.

With scenario.network_layer = "kernel" the kernel applies all of it between emulated hosts
(launcher/network/shaping.py) and a peer pushes through a `TimedSender`: no fault of its own, and
a "push" event per push with the seconds it took (`push_s`), where the kernel's delays show.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fedgossip.base.seeding import stream
from fedgossip.client.gossip.transport.sender import NeighbourSender, OnReply, _Job
from fedgossip.config.sections import ScenarioSection, link_ends
from fedgossip.proto import gossip_pb2_grpc
from fedgossip.scenario.roles import Events


def group_of(node: int, groups: int, count: int) -> int:
    """The partition group of `node`: `groups` contiguous blocks of ids, as even as they can be."""
    return node * groups // count


class Link:
    """The faults of the link from `node` to `neighbour` (sender side)."""

    def __init__(self, scenario: ScenarioSection, node: int, neighbour: int, count: int, seed: int) -> None:
        self.scenario = scenario
        self.split = scenario.partition_groups > 0 and group_of(
            node, scenario.partition_groups, count
        ) != group_of(neighbour, scenario.partition_groups, count)
        self._rng = stream(seed, "network", node, neighbour)
        named = scenario.link_delay_ms.items()
        self.extra_ms = sum(delay for name, delay in named if set(link_ends(name)) == {node, neighbour})

    def partitioned(self, round_: int) -> bool:
        """Whether a partition separates the two ends in `round_`."""
        if not self.split:
            return False
        first, last = self.scenario.partition_rounds
        return first <= round_ <= last

    def fate(self, round_: int, nbytes: int) -> tuple[str | None, float]:
        """What happens to a message of `nbytes` sent in `round_`: why it is lost (None: it is
        not), and the seconds it waits before it goes. One loss draw and one jitter draw a message."""
        s = self.scenario
        lost = bool(self._rng.random() < s.loss) if s.loss > 0 else False
        jitter = self._rng.uniform(-s.jitter_ms, s.jitter_ms) if s.jitter_ms > 0 else 0.0
        if self.partitioned(round_):
            return "partition", 0.0
        if lost:
            return "loss", 0.0
        seconds = (s.delay_ms + self.extra_ms + jitter) / 1000
        if s.bandwidth_mbps > 0:
            seconds += nbytes * 8 / (s.bandwidth_mbps * 1e6)
        return None, seconds


class FaultySender(NeighbourSender):
    """A NeighbourSender whose pushes go through the link's faults first (see `Link`)."""

    def __init__(
        self,
        node: int,
        stub: gossip_pb2_grpc.GossipStub,
        metadata: Sequence[tuple[str, str]],
        on_reply: OnReply,
        link: Link,
        events: Events,
    ) -> None:
        self._link = link
        self._events = events
        super().__init__(node, stub, metadata, on_reply)

    async def _transmit(self, job: _Job) -> int:
        round_ = job.chunks[0].header.round
        nbytes = sum(len(c.data) for c in job.chunks)
        reason, delay = self._link.fate(round_, nbytes)
        if reason is not None:
            self._events.add("drop", round_, to=self.node, reason=reason)
            self._events.count(round_, "dropped", 1)
            return 0
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
