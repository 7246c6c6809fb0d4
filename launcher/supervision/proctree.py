"""Every process of a run, found and stopped by PID + creation time (psutil).

The launcher's children start processes of their own (Flower's SuperLink and SuperNodes start
flower-superexec, which starts flwr-serverapp and flwr-clientapp processes, some in sessions of
their own). A `ProcessTracker` remembers each of them as a psutil.Process, which holds the
creation time: a PID reused by an unrelated process after ours exited is never signalled. The
launcher's Flower supervision and the run's watchdog (launcher/supervision/watchdog.py) both use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import psutil

from fedgossip.base.polling import poll_until

POLL_S = 0.05


def _running(proc: psutil.Process) -> bool:
    """Whether `proc` (same PID and creation time) still runs; a zombie has finished."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def alive(pid: int) -> bool:
    """Whether process `pid` runs (zombies count as gone)."""
    try:
        return _running(psutil.Process(pid))
    except psutil.Error:
        return False


def descendants(roots: Iterable[int]) -> list[psutil.Process]:
    """Every live descendant of the processes `roots`, found in one pass over the process table."""
    children: dict[int, list[psutil.Process]] = {}
    for proc in psutil.process_iter(["ppid", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.info["ppid"] is not None:
            children.setdefault(proc.info["ppid"], []).append(proc)
    found: dict[int, psutil.Process] = {}
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child.pid not in found:
                found[child.pid] = child
                stack.append(child.pid)
    return list(found.values())


def _depth(proc: psutil.Process, among: dict[int, psutil.Process]) -> int:
    """How many ancestors of `proc` are in `among`."""
    depth, seen = 0, {proc.pid}
    with contextlib.suppress(psutil.Error):
        parent = proc.ppid()
        while parent in among and parent not in seen:
            depth, seen = depth + 1, seen | {parent}
            parent = among[parent].ppid()
    return depth


def stop_leaves_first(procs: Iterable[psutil.Process], grace: float) -> list[psutil.Process]:
    """`stop` the deepest processes first, then their parents, level by level: each gets one
    SIGTERM while its parent still runs. (Flower's processes stop by themselves when their parent
    dies, so a SIGTERM sent after that lands in their own shutdown: a second signal.)"""
    left = {proc.pid: proc for proc in procs if _running(proc)}
    levels: dict[int, list[psutil.Process]] = {}
    for proc in left.values():
        levels.setdefault(_depth(proc, left), []).append(proc)
    return [proc for depth in sorted(levels, reverse=True) for proc in stop(levels[depth], grace)]


def stop(procs: Iterable[psutil.Process], grace: float) -> list[psutil.Process]:
    """SIGTERM every running process of `procs`, SIGKILL those still running after `grace`
    seconds; return the ones that were signalled."""
    left = [proc for proc in procs if _running(proc)]
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    with contextlib.suppress(TimeoutError):
        poll_until(lambda: not any(_running(proc) for proc in left), grace, POLL_S, "the processes to exit")
    for proc in left:
        if _running(proc):
            with contextlib.suppress(psutil.Error):
                proc.kill()
    return left


class ProcessTracker:
    """Remembers every process found under some roots, so that all of them can be stopped by PID.

    `exclude`: PIDs never tracked (the tracking process itself); `since`: only processes created at
    or after this time (epoch seconds) belong to the run; `foreign_sessions`: session ids that are
    not the run's (the launcher's, which is the user's terminal session). The tracking process's
    own session is never the run's either.
    """

    def __init__(
        self, *, exclude: Iterable[int] = (), since: float = 0.0, foreign_sessions: Iterable[int] = ()
    ) -> None:
        self.known: dict[int, psutil.Process] = {}
        self.names: dict[int, str] = {}
        self.sessions: set[int] = set()
        self.exclude = set(exclude)
        self.since = since
        self.foreign_sessions = {0, 1, os.getsid(0), *foreign_sessions}
        self._listed: set[int] = set()  # the process table's PIDs at the last `scan_new`

    def scan(self, roots: Iterable[int]) -> None:
        """Add the current descendants of `roots` (call it now and then while the run goes on); the
        roots themselves are the caller's to stop, never tracked."""
        roots = set(roots)
        self.exclude |= roots
        self._add_descendants(roots)

    def scan_new(self, roots: Iterable[int]) -> None:
        """`scan` for roots that never change, reading only the processes that appeared since the
        last call (the first call reads them all). A process joins a tree only when it is created,
        so this finds what `scan` finds while looking at a few processes instead of all of them."""
        listed = set(psutil.pids())
        new, self._listed = listed - self._listed, listed
        roots = set(roots)
        self.exclude |= roots
        parents = roots | (self.known.keys() & listed)
        parent_of: dict[int, tuple[psutil.Process, int]] = {}
        for pid in new - self.exclude:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                parent_of[pid] = (proc, proc.ppid())
        while attached := [pid for pid, (_, ppid) in parent_of.items() if ppid in parents]:
            for pid in attached:  # children first seen with their parent join in the next pass
                self._add(parent_of.pop(pid)[0])
                parents.add(pid)

    def _add_descendants(self, roots: Iterable[int]) -> None:
        for proc in descendants(roots):
            self._add(proc)

    def _add(self, proc: psutil.Process) -> None:
        if proc.pid in self.exclude or (proc.pid in self.known and self.known[proc.pid] == proc):
            return
        try:
            if proc.create_time() < self.since:
                return
            name, session = proc.name(), os.getsid(proc.pid)
        except (psutil.Error, OSError):
            return
        self.known[proc.pid], self.names[proc.pid] = proc, name
        if session not in self.foreign_sessions:
            self.sessions.add(session)

    def labelled(self) -> dict[str, int]:
        """The remembered processes as "name-pid" -> pid (for processes.json)."""
        return {f"{self.names[pid]}-{pid}": pid for pid in sorted(self.known)}

    def sweep(self) -> list[psutil.Process]:
        """The remembered processes still running, plus what they started since the last scan and
        the members of their sessions (orphans whose parent died keep their session; a session id
        is not reused while the session has a member)."""
        self._add_descendants([pid for pid, proc in self.known.items() if _running(proc)])
        if self.sessions:
            for proc in psutil.process_iter():
                with contextlib.suppress(OSError):
                    if proc.pid not in self.known and os.getsid(proc.pid) in self.sessions:
                        self._add(proc)
        return [proc for proc in self.known.values() if _running(proc)]

    def stop_leftovers(self, grace: float = 5.0, *, leaves_first: bool = False) -> list[int]:
        """SIGTERM, then SIGKILL after `grace`, every process of the run still running (all at once,
        or level by level from the leaves up); return the PIDs that had to be signalled."""
        procs = self.sweep()
        return sorted(proc.pid for proc in (stop_leaves_first if leaves_first else stop)(procs, grace))
