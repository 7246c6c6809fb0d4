"""A gossip peer's client side: one channel, stub and push queue per neighbour, and the push of a
round's model (or of a notice that none comes) to the neighbours linked in that round.

Every reply to a push tells which round its neighbour is in (`Inbox.note`): how far behind it this
peer may be. A model attacker's pushes carry its forged model instead of the trained one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from concurrent import futures

import numpy as np

from fedgossip.client.gossip.async_inbox import AsyncInbox
from fedgossip.client.gossip.compression import PushCompression
from fedgossip.client.gossip.inbox import Inbox
from fedgossip.client.gossip.transport.identity import LinkKeys
from fedgossip.client.gossip.transport.network import FaultySender, Link, TimedSender
from fedgossip.client.gossip.transport.security import call_metadata, channel_credentials
from fedgossip.client.gossip.transport.sender import NeighbourSender, close_channels, open_channels, wake
from fedgossip.client.gossip.transport.wire import CHANNEL_OPTIONS, push_stub
from fedgossip.config import ExperimentConfig
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc
from fedgossip.scenario.attacks import ModelAttack
from fedgossip.scenario.roles import Events

# a neighbour not listening yet (the peers of a run start within a second or so of each other) or
# that crashed and serves again is reconnected within 0.1-0.5 s, not after gRPC's own backoff (1 s
# at first, growing to 2 min): a first push that found its neighbour not yet serving held round 1
# of the quickstart 0.7-1.1 s
QUICK_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


class Links:
    """The connections of peer `config.peer.id` to its `neighbours` (node -> address), whose calls
    carry the `token` and this peer's link `keys` (where there are such); its pushes send the
    model (a model `attack`er's forged one) packed by the peer's `compression`. `push_stubs` carry
    the pushes (and notices) to some neighbours instead of their gRPC stubs
    (`handoff.LocalPushStub`: a co-located peer); Health and GetModel go over gRPC to every
    neighbour."""

    def __init__(
        self,
        config: ExperimentConfig,
        neighbours: Mapping[int, str],
        inbox: Inbox | AsyncInbox,
        events: Events,
        token: str | None,
        keys: LinkKeys | None,
        *,
        attack: ModelAttack | None,
        compression: PushCompression,
        push_stubs: Mapping[int, object] | None = None,
    ) -> None:
        assert config.peer is not None
        self.config = config
        self.node = config.peer.id
        self.inbox = inbox
        self.attack = attack
        self.compression = compression
        options = CHANNEL_OPTIONS + QUICK_RECONNECT
        self.channels = open_channels(neighbours, channel_credentials(config.peer), options)
        self.stubs = {node: push_stub(c) for node, c in self.channels.items()}
        self.metadata = {node: call_metadata(token, keys, node) for node in neighbours}
        pushes = {**self.stubs, **(push_stubs or {})}
        self.senders = {node: self._sender(node, stub, events) for node, stub in pushes.items()}

    def _sender(self, node: int, stub: gossip_pb2_grpc.GossipStub, events: Events) -> NeighbourSender:
        """The push queue to `node`: through the scenario's network faults, if any (the kernel's
        network layer: timed, no faults of its own)."""
        scenario = self.config.scenario
        if scenario.network_layer == "kernel":
            return TimedSender(node, stub, self.metadata[node], self._on_reply, events)
        if not scenario.network_faults:
            return NeighbourSender(node, stub, self.metadata[node], self._on_reply)
        nodes, seed = self.config.nodes.count, self.config.experiment.seed
        link = Link(scenario, self.node, node, nodes, seed)
        sync = self.config.gossip.schedule == "sync"  # its rounds wait for a notice of each lost push
        return FaultySender(node, stub, self.metadata[node], self._on_reply, link, events, notify_losses=sync)

    def _on_reply(self, node: int, reply: gossip_pb2.PushReply) -> None:
        """A neighbour's reply says which round it is in (how far behind it this peer may be)."""
        self.inbox.note(node, reply.round or None, refused=False)

    def push(
        self,
        round_: int,
        arrays: list[np.ndarray],
        num_examples: int,
        *,
        linked: Collection[int],
        alive: Collection[int],
        deadline: float,
        recipients: Collection[int],
    ) -> dict[int, futures.Future]:
        """Queue this round's model for the `recipients` among the neighbours `linked` this round,
        a notice that none comes for the other linked ones; return the sends (and notices, 0
        bytes) by node.

        Neighbours in `alive` are waited for (`wait_for_ready`) until the deadline, so a peer that
        starts late still gets round 1; the others get one fail-fast attempt.
        """
        if self.attack is not None:
            arrays = self.attack.forge(arrays)
        chunks = self.compression.chunks(self.node, round_, num_examples, arrays)
        notice = gossip_pb2.WithholdNotice(sender=self.node, round=round_)
        sends = {
            node: sender.queue(chunks, deadline, wait=node in alive)
            if node in recipients
            else sender.withhold(notice, deadline, wait=node in alive)
            for node, sender in self.senders.items()
            if node in linked
        }
        wake(sender for node, sender in self.senders.items() if node in linked and node in recipients)
        return sends

    def close(self) -> None:
        """Drop the neighbour connections (cancelling sends still in flight)."""
        for sender in self.senders.values():
            sender.close()
        close_channels(list(self.channels.values()))
