"""The run's watchdog: a tiny process that stops every process of the run when the launcher dies.

Why a process of its own: after a SIGKILL (or a crash in C) the launcher runs no cleanup at all.
PR_SET_PDEATHSIG reaches only its direct children, and Flower's SuperLink and SuperNodes start
flower-superexec, which starts flwr-serverapp and flwr-clientapp processes, some with setsid; they
only notice the loss through Flower's own parent polls, seconds later. So `watchdog()` (used by
`supervised()`, before any child starts) launches `python -m fedgossip.launcher.supervision.watchdog PID`:

- in its own session and without a parent-death signal: neither Ctrl-C nor the launcher's death
  reaches it, and it imports psutil only, so it is up long before any grandchild exists;
- its stdin is the read end of a pipe whose write end only the launcher holds (close-on-exec, so
  no child inherits it). The kernel closes that end when the launcher dies by any means, and the
  watchdog sees EOF at once: no polling delay, no PID to trust;
- every SCAN_S it looks for the launcher's new descendants (psutil) and remembers each one by PID
  and creation time, so a process re-parented to init after its parent died stays known and a
  reused PID is never signalled. It reads only the processes that appeared since its last look
  (`ProcessTracker.scan_new`): a process joins the launcher's tree only when it is created, and a
  quiet tick costs one listing of /proc, not a read of every process (~2.5% of a core before);
- on EOF it sweeps (the remembered processes, what they started since, the members of their
  sessions), SIGTERMs them, SIGKILLs whatever still runs after GRACE_S, and exits: every process of
  the run is gone within about a second of the launcher's death.

Network namespaces: a run with emulated hosts (launcher/supervision/namespaces.py) writes their
prefix, one line, to the pipe (`remove_on_exit`) before it makes them; after the sweep the
watchdog removes whatever still carries that prefix (namespaces, veths, bridge), since the kernel
keeps a named namespace after its last process.

When the run ends normally the launcher stops its children, then closes the pipe itself; the sweep
finds nothing left (or stops the leftovers) and the watchdog exits while the launcher waits for it,
so it never outlives its job. It also gives up if the launcher is gone but the pipe stayed open.
Alternatives: PR_SET_CHILD_SUBREAPER on the launcher keeps orphans under it only while it lives;
killing process groups misses processes that called setsid; cgroups need privileges.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator

import psutil

from fedgossip.launcher.supervision.proctree import ProcessTracker

SCAN_S = 0.25  # how stale the watchdog's list of processes can be
GRACE_S = 0.8  # SIGTERM -> SIGKILL: stopped within 2 s of the launcher's death, even on a loaded machine
EXIT_TIMEOUT_S = 10.0  # how long the launcher waits for the watchdog after closing the pipe
_pipes: list[int] = []  # the write ends of this process's running watchdogs, innermost last


def _read_ready(fd: int, timeout: float, into: bytearray) -> int | None:
    """Append what `fd` has within `timeout` seconds to `into`: the count read, None at EOF."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return 0
    data = os.read(fd, 4096)
    into += data
    return len(data) or None


def watch(launcher: int, fd: int = 0) -> list[int]:
    """Track the descendants of `launcher` until `fd` reads EOF (or the launcher is gone), then stop
    every one still running and remove the network namespaces whose prefixes `fd` named (a line
    each); return the stopped PIDs."""
    said = bytearray()
    try:
        left = _stop_descendants(launcher, fd, said)
    except (psutil.NoSuchProcess, ProcessLookupError):  # the launcher died before this process looked
        left = []
    while _read_ready(fd, 0.0, said):  # what it wrote just before it died
        pass
    prefixes = [line.decode() for line in bytes(said).split(b"\n")[:-1] if line]
    if prefixes:
        from fedgossip.launcher.supervision.namespaces import remove_network  # only runs that made hosts

        for prefix in prefixes:
            remove_network(prefix)
    return left


def _stop_descendants(launcher: int, fd: int, said: bytearray) -> list[int]:
    """`watch` without the namespaces: what `fd` says goes to `said`."""
    me = psutil.Process()
    tracker = ProcessTracker(exclude={me.pid}, since=me.create_time(), foreign_sessions={os.getsid(launcher)})
    parent = psutil.Process(launcher)
    while _read_ready(fd, SCAN_S, said) is not None and parent.is_running():
        tracker.scan_new([launcher])
    tracker.scan([launcher])
    left = tracker.stop_leftovers(GRACE_S)
    if left and not parent.is_running():
        names = ", ".join(f"{tracker.names[pid]} ({pid})" for pid in left)
        print(f"fedgossip watchdog: launcher {launcher} is gone; stopped {names}", file=sys.stderr)
    return left


@contextlib.contextmanager
def watchdog() -> Iterator[int]:
    """Run the watchdog for this process while the block runs; yields its PID."""
    read, write = os.pipe()  # both ends close-on-exec: only the watchdog gets `read`, as its stdin
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "fedgossip.launcher.supervision.watchdog", str(os.getpid())],
            stdin=read,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    _pipes.append(write)
    try:
        yield process.pid
    finally:
        _pipes.remove(write)
        os.close(write)
        try:
            process.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def remove_on_exit(prefix: str) -> bool:
    """Have this process's innermost running watchdog remove the network namespaces, veths and
    bridge named `prefix` when it ends (after it stopped the run's processes); False if none runs."""
    if not _pipes:
        return False
    os.write(_pipes[-1], f"{prefix}\n".encode())
    return True


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, psutil.NoSuchProcess, ProcessLookupError):  # launcher gone
        watch(int(sys.argv[1]))
