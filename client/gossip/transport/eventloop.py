"""The one asyncio event loop of a peer process: the grpc.aio servers, channels and senders of every
peer the process hosts run on it, so a process has one gRPC stack and no thread per push.

The loop's thread starts lazily, on first use: never in the fork server (it must not run threads
before forking; it may import grpc, which starts none), so each forked child starts its own. This
module imports no grpc. Synchronous code (the round loops) hands coroutines to the loop with
`submit` (a concurrent future) or `call` (waits for the result, with a timeout).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent import futures
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def process_loop() -> asyncio.AbstractEventLoop:
    """The process's event loop, running in its daemon thread "grpc-aio" (started on first call)."""
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="grpc-aio", daemon=True).start()
            _loop = loop
        return _loop


def submit(coroutine: Coroutine[Any, Any, T]) -> futures.Future[T]:
    """Run `coroutine` on the process's loop; its concurrent future (callable from any other thread)."""
    return asyncio.run_coroutine_threadsafe(coroutine, process_loop())


def call(coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run `coroutine` on the process's loop and wait up to `timeout` seconds for its result (its
    exception is raised here); TimeoutError, the coroutine cancelled, when it takes longer."""
    done = submit(coroutine)
    try:
        return done.result(timeout)
    except futures.TimeoutError:
        done.cancel()
        raise TimeoutError(f"no result from the event loop within {timeout:g}s") from None


def call_soon(callback, *args: Any) -> None:
    """Call `callback(*args)` on the process's loop, soon (from any thread)."""
    process_loop().call_soon_threadsafe(callback, *args)
