"""What a peer has heard: the models received by round, the neighbours' progress, refusals.

The gRPC handlers write (`put`, `note`); the round loop reads (`collect`, `take_round_news`,
`progress`). Pushes are accepted for the open round and the next one only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from dataclasses import dataclass

from fedgossip.client.wire import ModelMessage


@dataclass(frozen=True)
class RoundNews:
    """What happened on the wire during one round, besides the merged models."""

    refused: int  # pushes not used: invalid, unauthenticated, late, ahead, implausible
    seen: frozenset[int]  # neighbours that pushed anything, even a refused model: they are alive


class Inbox:
    """Thread-safe store of received models, keyed by round and sender.

    A sender pushing twice in a round replaces its earlier model. Models of rounds already closed
    are refused (the sender still counts as alive); so are models more than one round ahead (the
    sender's round is remembered: a peer that fell behind learns it from there).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._models: dict[int, dict[int, ModelMessage]] = {}
        self._open_round = 1
        self._progress: dict[int, int] = {}
        self._refused = 0
        self._seen: set[int] = set()

    @property
    def open_round(self) -> int:
        """The lowest round still accepted."""
        return self._open_round

    def window(self, round_: int) -> str | None:
        """Why a model of `round_` would not be used now ("closed", "ahead"), or None if it would."""
        if round_ < self._open_round:
            return "closed"
        if round_ > self._open_round + 1:
            return "ahead"
        return None

    def put(self, message: ModelMessage) -> str | None:
        """Store a model; returns why it was refused ("closed", "ahead"), None when stored."""
        with self._cond:
            self._note(message.sender, message.round)
            refused = self.window(message.round)
            if refused:
                self._refused += 1
                return refused
            self._models.setdefault(message.round, {})[message.sender] = message
            self._cond.notify_all()
            return None

    def note(self, sender: int | None, round_: int | None = None, *, refused: bool = True) -> None:
        """Record a push that was not stored (refused), and what round its sender is at, if known."""
        with self._cond:
            if sender is not None:
                self._note(sender, round_)
            self._refused += int(refused)

    def _note(self, sender: int, round_: int | None) -> None:
        self._seen.add(sender)
        if round_ is not None and round_ > self._progress.get(sender, 0):
            self._progress[sender] = round_

    def progress(self) -> dict[int, int]:
        """The highest round each neighbour is known to have reached (from its pushes and replies)."""
        with self._cond:
            return dict(self._progress)

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
            self._advance(round_ + 1)
            return [arrived[s] for s in sorted(arrived)]

    def skip_to(self, round_: int) -> None:
        """Open `round_` directly (after catching up), dropping the models of earlier rounds."""
        with self._cond:
            self._advance(round_)

    def _advance(self, round_: int) -> None:
        self._open_round = round_
        for stale in [r for r in self._models if r < round_]:
            del self._models[stale]

    def take_round_news(self) -> RoundNews:
        """Refusals and senders seen since the last call, reset for the next round."""
        with self._cond:
            news = RoundNews(self._refused, frozenset(self._seen))
            self._refused, self._seen = 0, set()
            return news
