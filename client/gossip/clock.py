"""Virtual time for the virtual-time engine: a clock and its event queue.

An event is (virtual time, sequence number, action) on a heap: the earliest runs first, and
events at one time run in the order they were scheduled (the sequence number), so a run is the
same every time. Running an action takes no virtual time: compute is free, only the waits a
schedule asks for (`at`) move the clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class VirtualClock:
    """The virtual time now (call it: seconds or ticks, as the schedule counts) and the events due."""

    def __init__(self) -> None:
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()

    def __call__(self) -> float:
        return self.now

    def at(self, time: float, action: Callable[[], None]) -> None:
        """Run `action` at virtual `time` (not before now), after the events already due then."""
        if time < self.now:
            raise ValueError(f"event at {time} is in the past (now {self.now})")
        heapq.heappush(self._events, (time, next(self._sequence), action))

    def run(self) -> None:
        """Run the events in (time, sequence) order until none is left (actions may add more)."""
        while self._events:
            time, _, action = heapq.heappop(self._events)
            self.now = time
            action()
