"""The in-process transport of the virtual-time engine (`launcher.engine = "simulation"`): all
peers of a run in one process, no sockets.

A push is encoded as on the wire (the peer's `compression.PushCompression.chunks`, the model
attacker's forged model included) and handed at once to the receiving peer's
`GossipService.deliver`, which applies the checks of a gRPC push (header, sender, round window,
finiteness, norm bound) and puts it in the receiver's inbox: delivery takes no time and never
fails. The reply updates what the sender knows of the receiver's round, as a gRPC reply does. A
notice that no model comes goes through `GossipService.deliver_notice` likewise. Nothing waits: a
neighbour whose model is not in the inbox when the virtual-time engine collects a round is missing
(`InProcessWatch`), and there is no Health nor GetModel (the engine refuses crashes and catch-up
needs: config's simulation checks).
"""

from __future__ import annotations

from collections.abc import Collection
from concurrent import futures
from typing import TYPE_CHECKING

import numpy as np

from fedgossip.client.gossip.transport.identity import LinkKeys
from fedgossip.client.gossip.transport.service import GossipService
from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.proto import gossip_pb2

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer


class NoServer:
    """What stands for a peer's server in the virtual-time engine: no port, nothing to stop."""

    port = 0

    def stop(self, grace: float | None = None) -> None:
        """Nothing to stop."""


def _done(value: int) -> futures.Future:
    future: futures.Future = futures.Future()
    future.set_result(value)
    return future


class InProcessNetwork:
    """The transport shared by all peers of one process (a `transports.Transport`): each peer's
    service by node, where the links deliver."""

    def __init__(self) -> None:
        self.services: dict[int, GossipService] = {}

    def serve(self, peer: GossipPeer, listen: str, *, exclusive: bool = True) -> NoServer:
        """Register `peer`'s service as the receiver of pushes to its node."""
        self.services[peer.node] = peer.service
        return NoServer()

    def links(self, peer: GossipPeer, token: str | None, keys: LinkKeys | None) -> InProcessLinks:
        """`peer`'s links to its neighbours' services (callers are identified by construction)."""
        return InProcessLinks(self, peer)

    def watch(self, peer: GossipPeer) -> InProcessWatch:
        """No waiting: a round's models are in the inbox when the engine collects it."""
        return InProcessWatch(peer)


class InProcessLinks:
    """`links.Links`' push, delivered in process (see the module docstring)."""

    def __init__(self, network: InProcessNetwork, peer: GossipPeer) -> None:
        self.stubs: dict[int, object] = {}  # no gRPC stubs: no Health, no GetModel
        self.network = network
        self.peer = peer
        self.node = peer.node

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
        """Deliver this round's model to the `recipients` among the neighbours `linked` this
        round, a notice to the other linked ones; the bytes delivered by node (done futures: 0
        for a notice or a refused model), as `Links.push` returns them."""
        peer = self.peer
        if peer.attack is not None:
            arrays = peer.attack.forge(arrays)
        chunks = peer.compression.chunks(self.node, round_, num_examples, arrays)
        size = sum(len(c.data) for c in chunks)
        notice = gossip_pb2.WithholdNotice(sender=self.node, round=round_)
        sent: dict[int, futures.Future] = {}
        for node in sorted(peer.neighbours):
            if node not in linked:
                continue
            service = self.network.services[node]
            if node in recipients:
                reply = service.deliver(chunks, self.node)
                sent[node] = _done(size if reply.accepted else 0)
            else:
                reply = service.deliver_notice(notice, self.node)
                sent[node] = _done(0)
            peer.inbox.note(node, reply.round or None, refused=False)
        return sent

    def close(self) -> None:
        """Nothing to close."""


class InProcessWatch:
    """`neighbours.NeighbourWatch` of a peer whose neighbours' models are delivered at once."""

    def __init__(self, peer: GossipPeer) -> None:
        self.peer = peer

    def wait_for(self, round_: int, neighbours: set[int], deadline: float) -> tuple[set[int], set[int]]:
        """The neighbours whose model (or notice) of `round_` is not in; none is silent (they
        all run, and would answer a Health call)."""
        return self.peer.inbox.wait(round_, neighbours, 0.0), set()

    def catch_up(self, round_: int, margin: int | None = None) -> ModelMessage | None:
        """Peers in one virtual-time process never fall behind: nothing to catch up."""
        return None
