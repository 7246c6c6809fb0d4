"""What a peer has heard: the models received by round, the neighbours' progress, refusals.

The gRPC handlers write (`put`, `note`); the round loop reads (`wait`, `close`, `take_refused`,
`progress`, `notices`). Models are taken for the open round and the next one; a model one round
late stands in for its sender's model of the open round, so a neighbour that fell one round behind
(it missed a deadline by a hair) is still merged, and the two never drift apart for good. A
neighbour may instead say that it sends no model in a round (`withhold`, fair gossip): it is not
waited for in that round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection

from fedgossip.client.wire import ModelMessage


class Inbox:
    """Thread-safe store of received models, keyed by round and sender.

    A sender pushing twice in a round replaces its earlier model. Models more than one round late
    or ahead are refused; the round of every sender is remembered, so a peer that fell behind
    learns it from there.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._models: dict[int, dict[int, ModelMessage]] = {}
        self._withheld: dict[int, set[int]] = {}  # round -> senders that send no model in it
        self._open_round = 1
        self._progress: dict[int, int] = {}
        self._refused = 0

    @property
    def open_round(self) -> int:
        """The lowest round still accepted."""
        return self._open_round

    def window(self, round_: int) -> str | None:
        """Why a model of `round_` would not be used now ("closed", "ahead"), or None if it would."""
        if round_ < self._open_round - 1:
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
            if message.round < self._open_round:  # one round late: stands in for the open round
                senders = self._models.setdefault(self._open_round, {})
                senders.setdefault(message.sender, message)
            else:
                self._models.setdefault(message.round, {})[message.sender] = message
            self._cond.notify_all()
            return None

    def withhold(self, sender: int, round_: int) -> str | None:
        """Record that `sender` sends no model in `round_`; returns why the notice is not used
        ("closed": its round is over, a late notice stands in for nothing; "ahead"), None if used."""
        with self._cond:
            self._note(sender, round_)
            refused = "closed" if round_ < self._open_round else self.window(round_)
            if refused:
                return refused
            self._withheld.setdefault(round_, set()).add(sender)
            self._cond.notify_all()
            return None

    def notices(self, round_: int) -> set[int]:
        """The senders that said they send no model in `round_` (until the round is closed)."""
        with self._cond:
            return set(self._withheld.get(round_, ()))

    def note(self, sender: int | None, round_: int | None = None, *, refused: bool = True) -> None:
        """Record a push that was not stored (refused), and what round its sender is at, if known."""
        with self._cond:
            if sender is not None:
                self._note(sender, round_)
            self._refused += int(refused)

    def _note(self, sender: int, round_: int | None) -> None:
        if round_ is not None and round_ > self._progress.get(sender, 0):
            self._progress[sender] = round_

    def progress(self) -> dict[int, int]:
        """The highest round each neighbour is known to have reached (from its pushes and replies)."""
        with self._cond:
            return dict(self._progress)

    def wait(self, round_: int, expected: Collection[int], deadline: float) -> set[int]:
        """Wait until every `expected` sender's model of `round_` (or its notice that it sends
        none) is in, or `deadline` (a monotonic time) passes; return the senders still missing."""
        with self._cond:
            while (
                missing := set(expected)
                - self._models.get(round_, {}).keys()
                - self._withheld.get(round_, set())
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return missing

    def close(self, round_: int) -> list[ModelMessage]:
        """Close `round_` and return its models, sorted by sender. A model one round late that
        stands in for its sender keeps its own `round`."""
        with self._cond:
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
        for stale in [r for r in self._withheld if r < round_]:
            del self._withheld[stale]

    def take_refused(self) -> int:
        """Pushes refused since the last call (invalid, unauthenticated, too late or early, implausible)."""
        with self._cond:
            refused, self._refused = self._refused, 0
            return refused
