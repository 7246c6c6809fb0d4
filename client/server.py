"""A peer's grpc.aio server, run on an event loop of its own thread beside the synchronous round loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from concurrent import futures

import grpc

from fedgossip.proto import gossip_pb2_grpc

START_TIMEOUT = 30.0


class LoopServer:
    """Starts `servicer` on `listen` in a background event loop; `stop` ends both."""

    def __init__(
        self,
        servicer: gossip_pb2_grpc.GossipServicer,
        listen: str,
        credentials: grpc.ServerCredentials | None,
        options: Sequence[tuple[str, int]],
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-aio", daemon=True)
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            self._start(servicer, listen, credentials, options), self._loop
        )
        try:
            self.port = started.result(START_TIMEOUT)
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self, servicer, listen: str, credentials, options) -> int:
        self._server = grpc.aio.server(options=list(options))
        gossip_pb2_grpc.add_GossipServicer_to_server(servicer, self._server)
        try:
            if credentials:
                port = self._server.add_secure_port(listen, credentials)
            else:
                port = self._server.add_insecure_port(listen)
        except RuntimeError as err:
            raise ValueError(f"cannot listen on {listen}: {err}") from None
        if port == 0:
            raise ValueError(f"cannot listen on {listen} (port in use?)")
        await self._server.start()
        return port

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (calls in progress get `grace` seconds), then end the loop thread."""
        stopping = asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop)
        with contextlib.suppress(futures.TimeoutError, RuntimeError):
            stopping.result(grace + 2.0)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
