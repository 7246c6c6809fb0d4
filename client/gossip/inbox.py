"""What a peer has heard: the models received by round, the neighbours' progress, refusals.

The gRPC handlers write (`put`, `note`); the round loop reads (`wait`, `close`, `take_refused`,
`progress`, `notices`). Models are taken for the open round and the next one; a model one round
late stands in for its sender's model of the open round, so a neighbour that fell one round behind
(it missed a deadline by a hair) is still merged, and the two never drift apart for good. A
neighbour may instead say that it sends no model in a round (`withhold`, fair gossip): it is not
waited for in that round.

A model further ahead is not used now but held (the latest per sender): when the peer jumps ahead
(catch-up, rejoin), its neighbours' models of the rounds it lands in are already there. The peer
marks the neighbours that stopped answering as silent (`mark_silent`), and does not wait for them;
any sign of life from one of them in the open round or the one before (a push, a notice, a reply)
ends that, so it is waited for again from then on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection

from fedgossip.client.gossip.transport.wire import ModelMessage


class Inbox:
    """Thread-safe store of received models, keyed by round and sender.

    A sender pushing twice in a round replaces its earlier model. Models more than one round late
    are refused, those further ahead held; the round of every sender is remembered, so a peer that
    fell behind learns it from there.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._models: dict[int, dict[int, ModelMessage]] = {}
        self._withheld: dict[int, set[int]] = {}  # round -> senders that send no model in it
        self._held: dict[int, ModelMessage] = {}  # sender -> its latest model ahead of the window
        self._silent: set[int] = set()  # senders not waited for until heard from again
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
        """Store a model; returns why it is not used now ("closed": refused; "ahead": held for a
        jump, replacing an older one held), None when stored for the window."""
        with self._cond:
            self._note(message.sender, message.round)
            refused = self.window(message.round)
            if refused == "ahead":
                held = self._held.get(message.sender)
                if held is None or held.round <= message.round:
                    self._held[message.sender] = message
            if refused:
                self._refused += 1
                return refused
            self._store(message)
            self._cond.notify_all()
            return None

    def _store(self, message: ModelMessage) -> None:
        """Put a model of the window in its round; one round late, it stands in for the open round."""
        if message.round < self._open_round:
            self._models.setdefault(self._open_round, {}).setdefault(message.sender, message)
        else:
            self._models.setdefault(message.round, {})[message.sender] = message

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
        if round_ is None:
            return
        if round_ > self._progress.get(sender, 0):
            self._progress[sender] = round_
        if round_ >= self._open_round - 1:  # in step again: waited for from now on
            self._silent.discard(sender)

    def mark_silent(self, senders: Collection[int]) -> None:
        """Stop waiting for `senders` (they did not answer) until they are heard from in the open
        round or the one before."""
        with self._cond:
            self._silent |= set(senders)

    def silent(self) -> set[int]:
        """The senders marked silent and not heard from since."""
        with self._cond:
            return set(self._silent)

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
        """Open `round_`: drop what is older, move the held models now in the window to their round."""
        self._open_round = round_
        for stale in [r for r in self._models if r < round_]:
            del self._models[stale]
        for stale in [r for r in self._withheld if r < round_]:
            del self._withheld[stale]
        for sender, message in list(self._held.items()):
            if self.window(message.round) != "ahead":
                del self._held[sender]
                if self.window(message.round) is None:
                    self._store(message)

    def take_refused(self) -> int:
        """Pushes refused since the last call (invalid, unauthenticated, too late or early, implausible)."""
        with self._cond:
            refused, self._refused = self._refused, 0
            return refused
