"""A peer's grpc.aio server, run on the process's event loop (`eventloop.py`), beside the
synchronous round loop; every peer a process hosts serves on that one loop."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import grpc

from fedgossip.client.gossip.transport import eventloop as loop
from fedgossip.client.gossip.transport.service import GossipService, add_to_server

START_TIMEOUT = 30.0
# gRPC binds with SO_REUSEPORT by default: a port another process listens on (another run on the
# machine) would be shared silently, the kernel spreading the neighbours' connections over both
# servers (seen as pushes refused for a wrong link key). Without it, such a port is an error.
EXCLUSIVE_PORT = [("grpc.so_reuseport", 0)]


class LoopServer:
    """Starts `servicer` on `listen` on the process's event loop; `stop` ends it."""

    def __init__(
        self,
        servicer: GossipService,
        listen: str,
        credentials: grpc.ServerCredentials | None,
        options: Sequence[tuple[str, int]],
        *,
        exclusive: bool = True,
    ) -> None:
        """`exclusive`: bind without SO_REUSEPORT (EXCLUSIVE_PORT); False only to serve again on
        the port this process's stopped server had."""
        self._server: grpc.aio.Server | None = None
        options = [*options, *EXCLUSIVE_PORT] if exclusive else list(options)
        self.port = loop.call(self._start(servicer, listen, credentials, options), START_TIMEOUT)

    async def _start(self, servicer, listen: str, credentials, options) -> int:
        server = grpc.aio.server(options=options)
        add_to_server(servicer, server)
        try:
            if credentials:
                port = server.add_secure_port(listen, credentials)
            else:
                port = server.add_insecure_port(listen)
        except RuntimeError as err:
            raise ValueError(f"cannot listen on {listen}: {err}") from None
        if port == 0:
            raise ValueError(f"cannot listen on {listen} (port in use?)")
        await server.start()
        self._server = server
        return port

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (calls in progress get `grace` seconds); the loop goes on for the others."""
        if self._server is not None:
            with contextlib.suppress(TimeoutError, RuntimeError):
                loop.call(self._server.stop(grace), grace + 2.0)
