"""What an asynchronous gossip peer has heard: the latest fresh model of each neighbour, and when
to merge (`MergeTrigger`).

A model is *fresh* when it is newer (by its sender's local step, the wire's `round`) than the last
one merged from that sender and than the one already held from it. Each fresh arrival counts
towards the merge, as in the vanishing-variance paper's rule (a neighbour that pushed twice counts
twice), but only its latest model is kept: a fast neighbour weighs in the merge like any other.
Anything else (a repeat, an older model) is refused as "closed". There is no round window: the
service's early window check never refuses a model (`window` is None); `put` decides.

The gRPC handlers write (`put`, `note`, `withhold`); the peer's loop reads (`arrivals`, `take`,
`take_refused`).
"""

from __future__ import annotations

import threading

from fedgossip.client.gossip.transport.wire import ModelMessage


class WindowlessInbox:
    """The part of an inbox without a round window that takes no notices (asynchronous gossip and
    the tick schedule): what to keep is decided by `put` alone, a notice that no model comes
    is refused, and refusals are counted under the inbox's lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused = 0

    def window(self, round_: int) -> str | None:
        """No round window: the service's early window check never refuses a model."""
        return None

    def withhold(self, sender: int, round_: int) -> str | None:
        """No notices here (fair gossip, which sends them, runs synchronously only): counted as
        refused, "closed"."""
        self.note(sender)
        return "closed"

    def note(self, sender: int | None, round_: int | None = None, *, refused: bool = True) -> None:
        """Count a push or notice that was not kept (`refused`); the sender's step is not needed."""
        with self._lock:
            self._refused += int(refused)

    def take_refused(self) -> int:
        """Pushes refused since the last call (invalid, unauthenticated, not kept, implausible)."""
        with self._lock:
            refused, self._refused = self._refused, 0
            return refused


class AsyncInbox(WindowlessInbox):
    """Thread-safe store of the latest fresh model per sender (the service's inbox in async mode)."""

    def __init__(self) -> None:
        super().__init__()
        self._latest: dict[int, ModelMessage] = {}  # sender -> its newest model not merged yet
        self._merged: dict[int, int] = {}  # sender -> step of the last model merged from it
        self._arrivals = 0  # fresh models received since the last merge (repeated senders count)
        self.step = 0  # the peer's local units done (what its replies say it is at)

    @property
    def open_round(self) -> int:
        """The unit the peer works on now (its replies tell the neighbours where it is)."""
        return self.step + 1

    def put(self, message: ModelMessage) -> str | None:
        """Keep a fresh model (see the module docstring); "closed" (refused) for one not fresh."""
        with self._lock:
            sender = message.sender
            held = self._latest.get(sender)
            newest = max(self._merged.get(sender, 0), held.round if held is not None else 0)
            if message.round <= newest:
                self._refused += 1
                return "closed"
            self._latest[sender] = message
            self._arrivals += 1
            return None

    @property
    def arrivals(self) -> int:
        """Fresh models received since the last merge (a sender counts once per fresh model)."""
        with self._lock:
            return self._arrivals

    def take(self) -> list[ModelMessage]:
        """The latest fresh model of each sender, sorted by sender, now merged: they and everything
        older from their senders are no longer fresh, and the arrivals count starts again."""
        with self._lock:
            taken = [self._latest[s] for s in sorted(self._latest)]
            for message in taken:
                self._merged[message.sender] = message.round
            self._latest.clear()
            self._arrivals = 0
            return taken


class MergeTrigger:
    """When an async peer merges: once `degree` fresh models arrived ("fresh", the paper's rule),
    or `timeout` seconds after its last merge (or its start), whatever is fresh ("timeout")."""

    def __init__(self, degree: int, timeout: float, now: float) -> None:
        self.degree = degree
        self.timeout = timeout
        self.last = now

    def due(self, arrivals: int, now: float) -> str | None:
        """Why a merge is due now ("fresh" first, then "timeout"), or None."""
        if arrivals >= self.degree:
            return "fresh"
        if now - self.last >= self.timeout:
            return "timeout"
        return None

    def merged(self, now: float) -> None:
        """A merge happened at `now` (monotonic seconds): the timeout counts from there."""
        self.last = now
