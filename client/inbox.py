"""The models a peer has received, by round, and the wait for a round's neighbours with a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection

from fedgossip.client.wire import ModelMessage


class Inbox:
    """Thread-safe store of received models, keyed by round and sender.

    The gRPC handlers `put`; the round loop `collect`s. Models of rounds already closed are stale
    and refused; a sender pushing twice in a round replaces its earlier model.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._models: dict[int, dict[int, ModelMessage]] = {}
        self._open_round = 1

    @property
    def open_round(self) -> int:
        """The lowest round still accepted."""
        return self._open_round

    def put(self, message: ModelMessage) -> bool:
        """Store a model; False (and not stored) if its round is already closed."""
        with self._cond:
            if message.round < self._open_round:
                return False
            self._models.setdefault(message.round, {})[message.sender] = message
            self._cond.notify_all()
            return True

    def collect(self, round_: int, expected: Collection[int], deadline: float) -> list[ModelMessage]:
        """Wait until every `expected` sender's model of `round_` is in (or `deadline`, a monotonic
        time, passes), close the round and return what arrived, sorted by sender.
        """
        with self._cond:
            while not set(expected) <= self._models.get(round_, {}).keys():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            arrived = self._models.pop(round_, {})
            self._open_round = round_ + 1
            for stale in [r for r in self._models if r <= round_]:
                del self._models[stale]
            return [arrived[s] for s in sorted(arrived)]
