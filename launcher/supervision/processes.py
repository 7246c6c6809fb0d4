"""Child processes of an experiment: started so that none outlives the launcher, stopped by PID.

Children run in their own session (a Ctrl-C reaches only the launcher, which then stops them in
order) and, on Linux, receive SIGTERM if the launcher dies without cleaning up. What they start in
turn is covered by the run's watchdog (launcher/supervision/watchdog.py), which `supervised()` starts first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from fedgossip.base.threads import THREAD_ENV
from fedgossip.launcher.supervision.watchdog import watchdog

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env(threads: int = 1, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a node process: BLAS/OpenMP capped at `threads`, plus `extra`, with the
    launch directory importable (`import_path`) wherever the child runs."""
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_ENV})
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    env["PYTHONPATH"] = import_path(env.get("PYTHONPATH", ""))
    return env


def import_path(pythonpath: str) -> str:
    """`pythonpath` for a process that may run in another directory (Flower's processes run in
    the results folder): every entry made absolute against the launch directory, and the launch
    directory itself appended, so a user's `package.module:function` found from where the user
    launched is found in every process of the run."""
    here = os.getcwd()
    entries = [os.path.abspath(entry) for entry in pythonpath.split(os.pathsep) if entry]
    return os.pathsep.join(dict.fromkeys([*entries, here]))


def start_pump(name: str, stream: IO[bytes], lines: queue.Queue) -> threading.Thread:
    """A thread queueing each line of `stream` as (name, line), then (name, None) at its end."""

    def pump() -> None:
        for raw in iter(stream.readline, b""):
            lines.put((name, raw.decode(errors="replace").rstrip("\n")))
        lines.put((name, None))

    thread = threading.Thread(target=pump, name=f"lines-{name}", daemon=True)
    thread.start()
    return thread


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log file, for error messages ("" if unreadable)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


class Child:
    """One started process; stdout lines (if captured) are queued as (name, line) tuples."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str],
        lines: queue.Queue | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE if lines is not None else self._log,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.pid = self.process.pid
        self._terminated = False
        self._reader = None
        if lines is not None:
            self._reader = start_pump(name, self.process.stdout, lines)

    def poll(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM, once: a second one could land in its cleanup) without
        waiting."""
        if self.process.poll() is None and not self._terminated:
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(grace)
        if self._reader is not None:
            self._reader.join(grace)
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the child's log, for error messages."""
        return log_tail(self.log_path, lines)


@contextlib.contextmanager
def supervised() -> Iterator[list[Child]]:
    """A list to put children in; every one is stopped on exit, error and Ctrl-C alike, and the
    watchdog stops every process of the run (grandchildren included) if the launcher dies."""
    children: list[Child] = []
    with watchdog():
        try:
            yield children
        finally:
            for child in children:
                child.terminate()
            for child in reversed(children):
                child.stop()


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]
