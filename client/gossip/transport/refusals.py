"""The log of refused calls, bounded whatever callers send: one line per caller and kind of refusal
per interval, and at most `budget` lines per interval in all (an outsider can call from many
addresses); the refusals left out are counted in the next line written.

Why: every refusal used to be a line, so anyone able to connect could grow a peer's log, and fill its
disk, at the rate it could call. The refusals still all count in the round's `refused` field.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

INTERVAL = 60.0
BUDGET = 50


def caller_host(peer: str) -> str:
    """The address of a gRPC peer string without its port ("ipv4:127.0.0.1:5100" -> "ipv4:127.0.0.1"):
    an outsider opens a connection, and so a port, per call."""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


class RefusalLog:
    """Writes a refusal's warning unless one of the same `key` was written in the last `interval`
    seconds, or `budget` lines already were."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        interval: float = INTERVAL,
        budget: int = BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._budget = budget
        self._clock = clock
        self._written: dict[Hashable, float] = {}  # key -> when its last line was written
        self._left_out = 0

    def warning(self, key: Hashable, message: str, *args: object) -> None:
        """Log `message % args` as a warning, or count it as left out (see the class)."""
        now = self._clock()
        self._written = {k: t for k, t in self._written.items() if now - t < self._interval}
        if key in self._written or len(self._written) >= self._budget:
            self._left_out += 1
            return
        self._written[key] = now
        if self._left_out:
            message += f" (and {self._left_out} more refusals since the line before, not logged)"
            self._left_out = 0
        self._log.warning(message, *args)
