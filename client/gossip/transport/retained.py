"""The models a peer keeps for the launcher's consensus observer until the observer has read them.

The observer reads a peer's model of a measured round r (r a multiple of
`experiment.consensus_every`, and the last round) once the peer's record of r reaches the launcher:
under load, or with the Ray engine's batched record pulls, that is rounds after the peer moved on.
So the peer keeps each measured round's published model until the observer reads that round
(GetModel with `ROUND_KEY` = r under the observer's secret), which releases it.

Memory: a kept model is a reference to the list the peer published, never a copy (a published
model is never changed in place: learners hand out fresh copies, and GetModel already serves that
list while the peer trains on). At most `MAX_RETAINED_BYTES` of models are kept per peer, and
always the last two (the current and the previous model, as the previous design kept), the oldest
dropped first: an observer further behind finds the peer moved on. A launcher short of CPU reads
records tens of seconds late (28 s after the peers' last round, quickstart at load 30), so the
bound is in bytes, not rounds: the quickstart's digits MLP (35 KB) keeps 1,870 rounds, LeNet-5
(0.25 MB) about 270, a 100 MB model two. With the observer in time, one or two models are held;
none without an observer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Generic, TypeVar

import numpy as np

MAX_RETAINED_BYTES = 64 * 2**20  # the kept models' bytes at most, once more than two are kept

Entry = TypeVar("Entry")


def nbytes(*models: Iterable[np.ndarray]) -> int:
    """The bytes of the distinct arrays of `models` (a model served twice counts once)."""
    arrays = {id(a): a for model in models for a in model}
    return sum(a.nbytes for a in arrays.values())


class RetainedModels(Generic[Entry]):
    """What was published after each measured round the observer has not read yet (thread-safe:
    the peer publishes from its own thread, GetModel reads and releases on the event loop)."""

    def __init__(self, every: int, last: int) -> None:
        self.every = every  # experiment.consensus_every; 0: no observer, nothing kept
        self.last = last
        self._kept: dict[int, tuple[Entry, int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def measured(self, round_: int) -> bool:
        """Whether the observer reads round `round_`: every k-th round, and the last."""
        return self.every > 0 and (round_ % self.every == 0 or round_ == self.last)

    def keep(self, round_: int, entry: Entry, size: int) -> None:
        """Keep `entry` (published after round `round_`, `size` bytes) if the round is measured;
        drop the oldest beyond the byte bound."""
        if not self.measured(round_):
            return
        with self._lock:
            self._drop(round_)  # published again (a peer that rejoined after a crash)
            self._kept[round_] = (entry, size)
            self._bytes += size
            while len(self._kept) > 2 and self._bytes > MAX_RETAINED_BYTES:
                self._drop(min(self._kept))

    def get(self, round_: int) -> Entry | None:
        """The entry kept for round `round_`, None if none is."""
        with self._lock:
            kept = self._kept.get(round_)
        return None if kept is None else kept[0]

    def release(self, round_: int) -> None:
        """Forget round `round_` (the observer has read it)."""
        with self._lock:
            self._drop(round_)

    def _drop(self, round_: int) -> None:
        kept = self._kept.pop(round_, None)
        if kept is not None:
            self._bytes -= kept[1]
