"""At most one node per core computes (trains, evaluates) at a time among a fork server's children.

Why: 32 LeNet-5 peer processes on 2 cores all train at the start of a round and all evaluate at
its end; the kernel then switches between 16 of them per core every few milliseconds, each switch
evicting the caches the other had filled, and the same torch work costs up to 40% more CPU than in
one process (`benchmarks/floor.py`). A node that holds a token for its whole `Learner.train` call
(or `train_step`) or a torch evaluation runs it on a warm core: the 32-peer LeNet case takes 11%
less CPU and 10% less wall time on a quiet machine (docs/performance.md).

A token is a unit of a semaphore that the fork server makes before forking (`open_tokens`): a
waiter sleeps in the kernel until a unit is free (no polling: waking 30 waiters every few
milliseconds costs most of the gain) or WAIT_LIMIT_S has passed, after which it computes without
one, so a holder that is stopped (SIGSTOP) or slow delays the others by at most that much a call.
Each holder also locks one of as many slot files (`flock`, which the kernel releases when a process
dies): a waiter that timed out and finds a slot free knows that a holder died with its unit, takes
the slot over and gives the unit back when done. A process that did not fork from a fork server
that opened tokens computes ungated (`held` does nothing): the gate changes when a node computes,
never what.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import tempfile
import threading
from collections.abc import Iterator

WAIT_LIMIT_S = 0.5  # longest wait for a token; then the call computes without one

_semaphore = None  # the tokens (a multiprocessing semaphore), inherited by the fork server's children
_files: list = []  # the slot files, open, inherited too
_slots: tuple[int, ...] = ()  # their descriptors
_opened = 0  # how many times tokens were opened in this process: a thread's descriptors are of the last
_local = threading.local()  # each thread's own descriptors of the slots, and whether it holds a token


def open_tokens(count: int | None = None) -> None:
    """In a fork server, before it forks: open `count` tokens (default: the cores this process
    may run on) for its children. The slot files are anonymous: nothing is left behind."""
    global _semaphore, _slots, _opened
    count = len(os.sched_getaffinity(0)) if count is None else count
    if count < 1:
        raise ValueError(f"count must be at least 1; got {count}")
    _files[:] = [tempfile.TemporaryFile() for _ in range(count)]  # noqa: SIM115 - open for its life
    _slots = tuple(file.fileno() for file in _files)
    _semaphore = multiprocessing.get_context("fork").Semaphore(count)
    _opened += 1


def _own() -> list[int]:
    """This thread's own descriptors of the slot files (an open file description of its own, so
    that its flock excludes the other threads'; opened once per thread and process)."""
    owner = (os.getpid(), _opened)
    if getattr(_local, "owner", None) != owner:
        _local.owner = owner
        _local.fds = [os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC) for fd in _slots]
    return _local.fds


def _take(fds: list[int]) -> int | None:
    """The descriptor of a slot taken (flock), or None if all are held."""
    for fd in fds:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        return fd
    return None


@contextlib.contextmanager
def held() -> Iterator[None]:
    """The block runs holding a token (waiting at most WAIT_LIMIT_S for one), or ungated when
    this process has no tokens."""
    if _semaphore is None or getattr(_local, "holding", False):  # none, or held already (nested)
        yield
        return
    fds = _own()
    unit = _semaphore.acquire(timeout=WAIT_LIMIT_S)
    slot = _take(fds)  # without a unit, a free slot is a dead holder's: its unit is taken over
    adopted = not unit and slot is not None
    _local.holding = True
    try:
        yield
    finally:
        _local.holding = False
        if slot is not None:
            fcntl.flock(slot, fcntl.LOCK_UN)
        if unit or adopted:
            _semaphore.release()
