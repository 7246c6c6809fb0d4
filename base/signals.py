"""Stop on SIGINT or SIGTERM like on Ctrl-C, once: the first signal raises `Interrupted` (a
KeyboardInterrupt) in the main thread, every later one is ignored, so the cleanup that follows runs
to its end without a second exception inside it.

Both the launcher and the gossip peers use it: a signal can arrive more than once (the launcher's
own SIGTERM, the parent-death signal, a user pressing Ctrl-C twice). The exit status is 128 + the
signal number (130 for SIGINT, 143 for SIGTERM). Light: peers import it.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The KeyboardInterrupt raised by a SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Shutdown:
    """The process's SIGINT/SIGTERM handling while it runs: `with Shutdown() as shutdown: ...`
    (or `.install()`). Call `begin()` when the shutdown starts without a signal (the work is done),
    so that a signal arriving during the cleanup is ignored as well.

    Once the shutdown has begun both signals are ignored (SIG_IGN) until the process exits: the
    interpreter resets Python handlers to the default while it finalizes, when a late signal would
    still kill the process with the wrong status. A process started during the shutdown inherits
    the ignored signals, so start only short ones (with their own timeout) then. The context
    manager puts the previous handlers back only if no signal stopped the process.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopping = False
        self._saved: dict[int, Any] = {}

    def install(self) -> Shutdown:
        """Take over SIGINT and SIGTERM (only the main thread can; elsewhere nothing changes)."""
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:  # delivered before begin() took effect
            return
        self.signum = signum
        self.begin()
        raise Interrupted(signum)

    def begin(self) -> None:
        """The shutdown has started: every signal from now on is ignored."""
        self.stopping = True
        for signum in self._saved:
            signal.signal(signum, signal.SIG_IGN)

    @property
    def exit_code(self) -> int:
        """The conventional exit status of a process stopped by the signal (Ctrl-C if none)."""
        return 128 + (self.signum or signal.SIGINT)

    def restore(self) -> None:
        """Put the previous handlers back."""
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()

    def __enter__(self) -> Shutdown:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        if self.signum is None:
            self.restore()
