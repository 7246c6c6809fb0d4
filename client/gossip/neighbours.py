"""What a gossip peer asks its neighbours besides pushing: how far they are (Health), while it
waits for their models of a round, and their model (GetModel), to catch up when it fell
`gossip.catch_up_rounds` behind them (or to rejoin after a crash).

A neighbour held up by its own neighbour is waited for longer; one that does not answer (frozen,
dead), is further behind or already ahead is not: a stalled peer delays the others in one wave,
not round after round. A fetched model is checked like any push (`ModelAssembler`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc

from fedgossip.client.gossip.transport import eventloop as loop
from fedgossip.client.gossip.transport.wire import ModelAssembler, ModelMessage, WireError
from fedgossip.proto import gossip_pb2

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer

log = logging.getLogger("fedgossip.peer")

MAX_WAIT_TIMEOUTS = 3  # a round waits at most this many round timeouts for live neighbours
LOOP_SLACK_S = 5.0  # beyond a call's gRPC timeout, how long the round loop waits for the event loop


class NeighbourWatch:
    """The Health and GetModel calls of one peer to its neighbours, and what it makes of them."""

    def __init__(self, peer: GossipPeer) -> None:
        self.peer = peer
        self.stubs = peer.links.stubs
        self.timeout = peer.config.experiment.round_timeout

    def wait_for(self, round_: int, neighbours: set[int], deadline: float) -> tuple[set[int], set[int]]:
        """Wait for the neighbours' models of `round_` until `deadline`; then ask the missing ones
        (Health) and wait longer, up to MAX_WAIT_TIMEOUTS round timeouts in all, for those that
        answer that they are working on this round or the one before (a model one round late
        stands in). Returns the neighbours still missing, and those of them that did not answer."""
        inbox, timeout = self.peer.inbox, self.timeout
        limit = deadline + (MAX_WAIT_TIMEOUTS - 1) * timeout
        missing = inbox.wait(round_, neighbours, deadline)
        silent: set[int] = set()
        while missing and time.monotonic() < limit:
            rounds = self.health(missing, min(1.0, timeout / 4))
            silent |= missing - rounds.keys()
            busy = {node for node, done in rounds.items() if round_ - 2 <= done < round_}
            if not busy:
                break
            missing = inbox.wait(round_, busy, min(limit, time.monotonic() + timeout)) | (missing - busy)
        return missing, silent & missing

    def health(self, nodes: set[int], timeout: float) -> dict[int, int]:
        """The rounds completed by those of `nodes` whose Health answers within `timeout`."""

        async def ask() -> dict[int, int]:
            calls = {n: self.stubs[n].Health(gossip_pb2.HealthRequest(), timeout=timeout) for n in nodes}
            replies = await asyncio.gather(*calls.values(), return_exceptions=True)
            answered = zip(calls, replies, strict=True)
            return {n: r.round for n, r in answered if not isinstance(r, BaseException)}

        try:
            return loop.call(ask(), timeout + LOOP_SLACK_S)
        except TimeoutError:
            return {}

    def catch_up(self, round_: int, margin: int | None = None) -> ModelMessage | None:
        """If neighbours are `margin` (default: catch_up_rounds) rounds ahead, fetch and adopt the
        furthest one's model (not older than round `round_`, or `round_ + margin` for a negative
        margin: a peer that rejoins takes any neighbour's model not behind its own)."""
        peer = self.peer
        margin = peer.gossip.catch_up_rounds if margin is None else margin
        progress = peer.inbox.progress()  # only neighbours heard from: the others may be down
        ahead = [n for n in self.stubs if n in progress and progress[n] >= round_ + margin]
        for node in sorted(ahead, key=lambda n: -progress[n]):
            try:
                message = self.fetch(node)
            except (grpc.RpcError, WireError, TimeoutError) as err:
                log.warning("catch-up from node %d failed: %s", node, err)
                continue
            if message.round >= round_ + min(margin, 0):
                peer.learner.assign(message.arrays)  # checked by the assembler, like any push
                peer.inbox.skip_to(message.round + 1)
                peer.service.publish(message.arrays, peer.learner.num_examples, message.round)
                log.info("round %d: caught up with node %d at round %d", round_, node, message.round)
                return message
        return None

    def fetch(self, node: int) -> ModelMessage:
        """A neighbour's current model (GetModel), checked like any push."""
        peer = self.peer
        rounds = (0, peer.config.experiment.rounds)
        assembler = ModelAssembler(peer.specs, senders=[node], rounds=rounds, max_bytes=peer.max_bytes)
        timeout = self.timeout

        async def fetch() -> ModelMessage:
            stream = self.stubs[node].GetModel(
                gossip_pb2.GetModelRequest(), timeout=timeout, metadata=peer.links.metadata[node]
            )
            async for chunk in stream:
                assembler.add(chunk)
            return assembler.finish()

        return loop.call(fetch(), timeout + LOOP_SLACK_S)
