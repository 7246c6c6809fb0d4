"""What a peer of the tick schedule (`gossip.schedule = "ticks"`) has received since its last
merge: every model, in arrival order, duplicates from one neighbour kept (they count towards the
merge as in the authors' simulator, whose buffer sums every model it is sent).

The wire's `round` of a tick model is its sender's evaluation period (`TickNode.period`); there
is no window: every checked model is kept. The gRPC handlers (or the in-process links) write
(`put`, `note`, `withhold`); the peer's ticks read (`count`, `take`, `take_refused`).
"""

from __future__ import annotations

from fedgossip.client.gossip.async_inbox import WindowlessInbox
from fedgossip.client.gossip.transport.wire import ModelMessage


class TickInbox(WindowlessInbox):
    """Thread-safe buffer of the models received since the last merge (the service's inbox)."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer: list[ModelMessage] = []
        self.period = 1  # the peer's evaluation period (what its replies say it is at)

    @property
    def open_round(self) -> int:
        """The peer's evaluation period now."""
        return self.period

    def put(self, message: ModelMessage) -> str | None:
        """Keep `message` (never refused: None)."""
        with self._lock:
            self._buffer.append(message)
            return None

    @property
    def count(self) -> int:
        """Models received since the last merge (a neighbour's duplicates each count)."""
        with self._lock:
            return len(self._buffer)

    def take(self) -> list[ModelMessage]:
        """Every model received since the last merge, in arrival order; the buffer is cleared."""
        with self._lock:
            taken, self._buffer = self._buffer, []
            return taken
