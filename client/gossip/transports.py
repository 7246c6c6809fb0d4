"""A gossip peer's transport, the one part a virtual-time run swaps: how it serves its
neighbours (a server), reaches them (links: pushes and notices) and asks them how far they are
(a watch: Health, GetModel for catch-up).

`GrpcTransport` is what every real peer uses: a gRPC server on `peer.listen`, gRPC links and
Health/GetModel calls. The virtual-time engine's in-process transport
(`fedgossip.client.gossip.inprocess.InProcessNetwork`) hands pushes to the receiver's service
directly, through the same checks; the peers packed in one process push to each other that way
too (`fedgossip.client.gossip.handoff.HandoffTransport`, `nodes.local_handoff`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from fedgossip.client.gossip.links import Links
from fedgossip.client.gossip.neighbours import NeighbourWatch
from fedgossip.client.gossip.transport.grpc_server import LoopServer
from fedgossip.client.gossip.transport.identity import LinkKeys
from fedgossip.client.gossip.transport.security import server_credentials
from fedgossip.client.gossip.transport.wire import CHANNEL_OPTIONS

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer


class Transport(Protocol):
    """The parts of a peer that talk to its neighbours."""

    def serve(self, peer: GossipPeer, listen: str, *, exclusive: bool = True): ...

    def links(self, peer: GossipPeer, token: str | None, keys: LinkKeys | None): ...

    def watch(self, peer: GossipPeer): ...


class GrpcTransport:
    """Real peers: a gRPC server, gRPC links to the neighbours, Health/GetModel calls."""

    def serve(self, peer: GossipPeer, listen: str, *, exclusive: bool = True) -> LoopServer:
        """Serve `peer.service` on `listen` (`exclusive`: see LoopServer)."""
        credentials = server_credentials(peer.peer)
        return LoopServer(peer.service, listen, credentials, CHANNEL_OPTIONS, exclusive=exclusive)

    def links(self, peer: GossipPeer, token: str | None, keys: LinkKeys | None) -> Links:
        """gRPC connections to the neighbours, their calls carrying `token` and `keys`."""
        return Links(
            peer.config,
            peer.neighbours,
            peer.inbox,
            peer.events,
            token,
            keys,
            attack=peer.attack,
            compression=peer.compression,
            push_stubs=self.push_stubs(peer),
        )

    def push_stubs(self, peer: GossipPeer) -> dict[int, object]:
        """Stubs that carry `peer`'s pushes to some neighbours instead of gRPC (none here; see
        `handoff.HandoffTransport`)."""
        return {}

    def watch(self, peer: GossipPeer) -> NeighbourWatch:
        """Health and GetModel calls over the links."""
        return NeighbourWatch(peer)
