"""Pushes between peers hosted by one process (`nodes.local_handoff`, `host.py`): handed over in
process, without gRPC, through the checks of a gRPC push.

`HandoffTransport` is the gRPC transport of a process's peers (each still serves on its own port,
for its remote neighbours, Health, GetModel and the observer) whose senders to co-located
neighbours push through a `LocalPushStub` instead of a gRPC stub. Everything in front of the stub is
unchanged: the one-slot queue of `NeighbourSender`, the scenario's faults (`FaultySender`: a loss,
a delay, a partition), the model attacker's forged model (forged before encoding, in
`Links.push`), the reply noted in the sender's inbox. The stub hands the encoded chunks to the
receiver's `GossipService.deliver` (the virtual-time engine's entry, `inprocess.py`: header,
sender = caller, round window, finiteness, norm bound) on the event loop, where the receiver's
gRPC handlers run too. A neighbour that does not serve (crashed, or stopped) answers UNAVAILABLE,
which the sender retries until the push's deadline, as a gRPC push waiting for a server.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

import grpc

from fedgossip.client.gossip.transport.grpc_server import LoopServer
from fedgossip.client.gossip.transport.service import GossipService
from fedgossip.client.gossip.transport.wire import WireChunk
from fedgossip.client.gossip.transports import GrpcTransport
from fedgossip.proto import gossip_pb2

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer


class NotServing(grpc.RpcError):
    """What a push to a co-located neighbour that does not serve ends with: UNAVAILABLE, as over gRPC."""

    def __init__(self, node: int) -> None:
        super().__init__(f"node {node} is not serving")
        self.node = node

    def code(self) -> grpc.StatusCode:
        """UNAVAILABLE: a transient refusal, tried again until the push's deadline."""
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        """Which neighbour does not serve."""
        return f"node {self.node} is not serving"


class LocalServices:
    """The services of the process's peers that serve now, by node (read on the event loop, changed
    by the peers' threads: one dict operation each)."""

    def __init__(self) -> None:
        self._serving: dict[int, GossipService] = {}

    def add(self, node: int, service: GossipService) -> None:
        """`node` serves: pushes to it are handed to `service`."""
        self._serving[node] = service

    def remove(self, node: int) -> None:
        """`node` stopped serving."""
        self._serving.pop(node, None)

    def get(self, node: int) -> GossipService:
        """The service of `node`; NotServing if it does not serve."""
        service = self._serving.get(node)
        if service is None:
            raise NotServing(node)
        return service


class LocalPushStub:
    """The push half of a `GossipStub` to the co-located neighbour `node`, for the sender `caller`:
    PushModel, PushWhole and Withhold hand the message to the neighbour's `GossipService.deliver` and
    `deliver_notice` (the caller is identified by construction; no token nor key to check)."""

    def __init__(self, services: LocalServices, node: int, caller: int) -> None:
        self.services = services
        self.node = node
        self.caller = caller

    async def PushModel(self, chunks: Iterable[WireChunk], **call: object) -> gossip_pb2.PushReply:
        """Deliver a push's chunks (the gRPC call options in `call` do not apply: it is at once)."""
        return self.services.get(self.node).deliver(list(chunks), self.caller)

    async def PushWhole(self, chunk: WireChunk, **call: object) -> gossip_pb2.PushReply:
        """Deliver a push of one chunk."""
        return self.services.get(self.node).deliver([chunk], self.caller)

    async def Withhold(self, notice: gossip_pb2.WithholdNotice, **call: object) -> gossip_pb2.PushReply:
        """Deliver a notice that no model comes this round."""
        return self.services.get(self.node).deliver_notice(notice, self.caller)


class LocalServer:
    """A peer's gRPC server that also makes it a receiver of its co-located neighbours' pushes while
    it serves."""

    def __init__(self, server: LoopServer, services: LocalServices, node: int) -> None:
        self.server = server
        self.port = server.port
        self.services = services
        self.node = node

    def stop(self, grace: float = 1.0) -> None:
        """Stop taking pushes in process, then over gRPC."""
        self.services.remove(self.node)
        self.server.stop(grace)


class HandoffTransport(GrpcTransport):
    """The transport of the peers of one process, the nodes `hosted`: gRPC servers and links, but
    pushes between two of them handed over in process (see the module docstring)."""

    def __init__(self, hosted: Collection[int]) -> None:
        self.hosted = frozenset(hosted)
        self.services = LocalServices()

    def serve(self, peer: GossipPeer, listen: str, *, exclusive: bool = True) -> LocalServer:
        """Serve over gRPC as `GrpcTransport` does, and take pushes from the co-located peers."""
        server = LocalServer(super().serve(peer, listen, exclusive=exclusive), self.services, peer.node)
        self.services.add(peer.node, peer.service)
        return server

    def push_stubs(self, peer: GossipPeer) -> dict[int, LocalPushStub]:
        """A `LocalPushStub` to each of `peer`'s co-located neighbours."""
        return {n: LocalPushStub(self.services, n, peer.node) for n in peer.neighbours if n in self.hosted}
