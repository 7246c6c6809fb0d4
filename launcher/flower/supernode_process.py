"""`flower-supernode`, flwr's own, with shorter waits: flwr 1.42's SuperNode sleeps a hard-coded 3 s
whenever a poll of the SuperLink finds no message, and 0.5 s steps while its ClientApp's reply is
not ready, which puts up to 3.5 s of idle wait in every train and evaluate phase of a run on the
launcher's local deployment engine. The launcher's SuperNodes wait at most `IDLE_POLL_S` instead;
everything else is `flower_supernode()`. A SuperNode on a device is plain `flower-supernode`."""

from __future__ import annotations

import contextlib
import ctypes
import time
from types import SimpleNamespace

IDLE_POLL_S = 0.25
"""Seconds between the polls of an idle SuperNode (flwr's: 3); one HTTP request a poll."""
PR_SET_NAME = 15  # prctl: the calling thread's name, which ps shows for the process


def _sleep(seconds: float) -> None:
    time.sleep(min(seconds, IDLE_POLL_S))


def call_process(name: str) -> None:
    """Give this process `name` where ps and the kernel show it (15 characters), as flwr's own
    script would be called, instead of "python" (Linux; elsewhere nothing changes)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def main() -> None:
    """Run flwr's SuperNode (its command line) with the shorter idle poll."""
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli.flower_supernode import flower_supernode

    call_process("flower-supernode")
    start_client_internal.time = SimpleNamespace(**{**vars(time), "sleep": _sleep})
    flower_supernode()


if __name__ == "__main__":
    main()
