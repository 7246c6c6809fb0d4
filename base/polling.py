"""Polling with a deadline: the one loop for waits on something that cannot notify (a process
exiting, a port answering), so that every such wait has a timeout and none sleeps blindly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(predicate: Callable[[], T], timeout: float, interval: float, what: str) -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy, and return that.

    The predicate is tried at once and a last time at the deadline; TimeoutError naming `what`
    after `timeout` seconds. An exception of the predicate ends the wait (it propagates)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(interval, remaining))
