"""At most one node per core computes (trains, evaluates) at a time among a fork server's children.

Why: 32 LeNet-5 peer processes on 2 cores all train at the start of a round and all evaluate at
its end; the kernel then switches between 16 of them per core every few milliseconds, each switch
evicting the caches the other had filled, and the same torch work costs up to 40% more CPU than in
one process (`benchmarks/floor.py`). A node that holds a token for its whole `Learner.train` call
(or `train_step`) or a torch evaluation runs it on a warm core: the 32-peer LeNet case takes 11%
less CPU and 10% less wall time on a quiet machine (docs/performance.md).

A token is a unit of a semaphore that the fork server makes before forking (`open_tokens`): a
waiter sleeps in the kernel until a unit is free (no polling: waking 30 waiters every few
milliseconds costs most of the gain). It waits as long as the gate moves: only once WAIT_LIMIT_S
passed without any holder leaving (a shared count of the releases did not change; a racy count,
enough to tell whether it moved), or WAIT_CAP_S in all, does it compute without one. So the
holders that are all stopped (SIGSTOP) or slow delay the others by at most WAIT_LIMIT_S a call,
while a queue longer than that stays gated: 32 LeNet-5 peers asking at once at the start of a
round wait ~0.5 s behind 2 tokens on a quiet machine, twice that under load, and a fixed 0.5 s
limit let 57% of the calls compute ungated under load (docs/performance.md, session 16).
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
import time
from collections.abc import Iterator

WAIT_LIMIT_S = 0.5  # longest wait for a token without any holder leaving; then the call computes without one
WAIT_CAP_S = 10.0  # longest wait for a token in all (a waiter that keeps losing the race for a unit)

_semaphore = None  # the tokens (a multiprocessing semaphore), inherited by the fork server's children
_releases = None  # how many times a unit was given back (shared memory, inherited too; racy, see above)
_files: list = []  # the slot files, open, inherited too
_slots: tuple[int, ...] = ()  # their descriptors
_opened = 0  # how many times tokens were opened in this process: a thread's descriptors are of the last
_local = threading.local()  # each thread's own descriptors of the slots, and whether it holds a token


def open_tokens(count: int | None = None) -> None:
    """In a fork server, before it forks: open `count` tokens (default: the cores this process
    may run on) for its children. The slot files are anonymous: nothing is left behind."""
    global _semaphore, _releases, _slots, _opened
    count = len(os.sched_getaffinity(0)) if count is None else count
    if count < 1:
        raise ValueError(f"count must be at least 1; got {count}")
    _files[:] = [tempfile.TemporaryFile() for _ in range(count)]  # noqa: SIM115 - open for its life
    _slots = tuple(file.fileno() for file in _files)
    context = multiprocessing.get_context("fork")
    _semaphore = context.Semaphore(count)
    _releases = context.RawValue("Q", 0)
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


def _acquire() -> bool:
    """Whether a unit was taken: waiting while the gate moves (a release within each
    WAIT_LIMIT_S), at most WAIT_CAP_S."""
    assert _semaphore is not None and _releases is not None
    give_up = time.monotonic() + WAIT_CAP_S
    while True:
        seen = _releases.value
        if _semaphore.acquire(timeout=min(WAIT_LIMIT_S, max(0.0, give_up - time.monotonic()))):
            return True
        if _releases.value == seen or time.monotonic() >= give_up:
            return False


def _release() -> None:
    """Give a unit back and count it (the count wraps rather than overflows)."""
    assert _semaphore is not None and _releases is not None
    _releases.value = (_releases.value + 1) % 2**64
    _semaphore.release()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """The block runs holding a token (waiting at most WAIT_LIMIT_S for one), or ungated when
    this process has no tokens."""
    if _semaphore is None or getattr(_local, "holding", False):  # none, or held already (nested)
        yield
        return
    fds = _own()
    unit = _acquire()
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
            _release()
