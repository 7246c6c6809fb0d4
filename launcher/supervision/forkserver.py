"""The fork server: node processes forked from one pre-imported parent instead of started afresh.

A fresh peer process spends most of its start-up importing numpy, torch and the task code, and holds
its own copy of all of it. The fork server imports them once (`preload`: with the peer's own modules
and gRPC's, whose import makes no gRPC state; a channel or server would start gRPC's core's threads
and polling state, which a fork would copy half-made, so the server refuses to fork with any thread
running and each child creates its own gRPC state after the fork), freezes its heap out of the
garbage collector's reach (`gc.freeze`, so the children's collections do not dirty the shared pages)
and forks one child per request, which then runs `python -m MODULE ARGS` (runpy), exactly the code a
fresh process runs. The children share the imported code copy-on-write: less memory (PSS) and a
start-up of a fraction of a second. Given the run's task on a bundled dataset, the server also
runs its model once before forking (its family's `warm_up`, `tasks.registry`: a training step and
an evaluation batch, the random state untouched), so that torch's first-use work is inherited
instead of paid by every child on its first calls. A run starts its fork server first
(`early_fork_server`: its imports, torch's above all, then run on the other core while the
launcher imports its own modules and prepares the run) and its engine adopts it
(`start_fork_server`), which then names its log file in the run's folder.

The launcher keeps the same contract as for `Child` (launcher/supervision/processes.py): each child's stdout
is a pipe the launcher reads lines from (passed back over the control socket, SCM_RIGHTS), its
stderr appends to its log, it is stopped by PID (psutil: PID + creation time, so a reused PID is
never signalled) and its exit status is reported by the fork server, which reaps it. No child
outlives the launcher: the fork server gets SIGTERM when the launcher dies (parent-death signal)
and sees EOF on its control socket when the launcher closes it or dies; either way it stops its
children (SIGTERM, then SIGKILL after GRACE_S) and exits; each child gets SIGTERM when the fork
server dies; and the run's watchdog tracks them all as descendants of the launcher. A child
starts with SIGINT/SIGTERM at their defaults (blocked across the fork), so the peer's own
`Shutdown` (base/signals.py) governs them from there.

Control messages (SOCK_SEQPACKET, one JSON object per message): launcher -> server
{"fork": name, "module", "args", "log", "env", "netns"} (netns: the network namespace of the
emulated host the child enters first, or ""); server -> launcher {"ready": true} once the imports
are done, {"forked": name, "pid"} with the read end of the child's stdout pipe, {"exited": pid,
"code"} when a child is reaped (code as subprocess gives it: negative for a signal).

A fork server that fails (killed while it imports or forks, a fork refused: no memory, no inode
for the child's log) raises `LaunchError` naming the cause in one line; one that ends mid-run is
named in its children's exit messages (`ForkedChild.log_tail`).

This module is the launcher's side; the fork server's own process is `forkserver_process`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil

from fedgossip.launcher.runs.outcome import LaunchError
from fedgossip.launcher.supervision.forkserver_process import GRACE_S, MAX_MESSAGE, Preload
from fedgossip.launcher.supervision.processes import die_with_parent, log_tail, python_module, start_pump
from fedgossip.tasks.config import TaskConfig
from fedgossip.tasks.datasets import dataset_entry
from fedgossip.tasks.registry import DP_SGD_PRELOAD, model_entry

READY_TIMEOUT_S = 120.0  # imports of torch on a loaded machine
REPLY_TIMEOUT_S = 30.0
PEER_MODULES = (  # what every gossip peer imports, the model's family's modules in between
    "numpy",
    "numpy.ma",  # imported by the first np.unique (the data split): ~15 ms per child otherwise
    "numpy.random",  # numpy imports it lazily, at the first np.random (the seeded streams)
    "fedgossip.config",
    "fedgossip.tasks",
)
PEER_PARTS = (  # the modules a gossip peer (client/gossip/peer.py) and a host of several import
    "fedgossip.client.gossip.async_schedule",
    "fedgossip.client.gossip.crash",
    "fedgossip.client.gossip.handoff",
    "fedgossip.client.gossip.merge",
    "fedgossip.client.gossip.private_sharing",
    "fedgossip.client.gossip.resampling",
    "fedgossip.client.gossip.round_record",
    "fedgossip.client.gossip.rounds",
    "fedgossip.client.gossip.sync_schedule",
    "fedgossip.client.gossip.ticks",
    "fedgossip.client.gossip.transports",
    "fedgossip.client.gossip.transport.security",
    "fedgossip.scenario.churn",
    "fedgossip.strategies.diagnostics",
    "fedgossip.schema.records",
)


def preload_for(
    model: str,
    dataset: str = "",
    dp_sgd: bool = False,
    parts: Sequence[str] = PEER_PARTS,
    warm: TaskConfig | None = None,
) -> Preload:
    """What a node with `model` on `dataset` loads before it creates any gRPC state: the
    modules of the model's family (`tasks.registry`), DP-SGD's (Opacus) if the run trains with
    it, the node's own `parts` (default: a gossip peer's), a bundled dataset's arrays
    (`tasks.datasets`) and, given the run's task `warm` on a bundled dataset (whose example
    shape the server then knows), that task to warm its model up with (its family's `warm_up`)."""
    bundled = bool(dataset) and dataset_entry(dataset).bundled is not None
    private = DP_SGD_PRELOAD if dp_sgd else ()
    family = model_entry(model).family
    modules = (*PEER_MODULES, *family.preload, *private, *parts)
    task = ""
    if warm is not None and bundled and family.warm_up:
        task = json.dumps(dataclasses.asdict(warm), sort_keys=True)
    return Preload(modules, (dataset,) if bundled else (), task)


class ForkedChild:
    """A process forked by the fork server: the interface of `processes.Child`."""

    def __init__(
        self, server: ForkServer, name: str, pid: int, log_path: Path, reader: threading.Thread
    ) -> None:
        self.name, self.pid, self.log_path = name, pid, log_path
        self._server = server
        self._reader = reader
        self._terminated = False
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:  # already gone: its exit status comes from the server
            self._process = None

    def poll(self) -> int | None:
        return self._server.exit_code(self.pid)

    def _signal(self, signum: int) -> None:
        """Signal the child if it is still this process (same PID and creation time)."""
        if self._process is not None and self.poll() is None:
            with contextlib.suppress(psutil.Error):
                self._process.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM, once, without waiting."""
        if not self._terminated:
            self._terminated = True
            self._signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """The exit status once the server reported it within `timeout` seconds, else None."""
        return self._server.wait_exit(self.pid, timeout)

    def stop(self, grace: float = GRACE_S) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit status (-9 if the fork
        server could not report it)."""
        if self.poll() is None:
            self.terminate()
            if self.wait(grace) is None:
                self._signal(signal.SIGKILL)
        code = self.wait(grace)
        self._reader.join(grace)
        return -signal.SIGKILL if code is None else code

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the child's log; when the fork server ended before reporting the
        child's exit, that first (the child's exit status is then unknown)."""
        tail = log_tail(self.log_path, lines)
        if self.poll() is not None or self._server.reporting():
            return tail
        return "; ".join(filter(None, (f"{self._server.ended()} before reporting this node's exit", tail)))


class ForkServer:
    """A running fork server (start it with `start_fork_server`); `spawn` forks a child.

    Its process starts at once; its output is kept in memory until `log_to` names its log file
    (an early start, `early_fork_server`, precedes the run's results folder), and `wait_ready`
    waits for its imports."""

    def __init__(self, preload: Preload, env: Mapping[str, str]) -> None:
        self.preload, self.env = preload, dict(env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket = ours
        try:
            self.process = subprocess.Popen(
                python_module(
                    "fedgossip.launcher.supervision.forkserver_process",
                    str(theirs.fileno()),
                    json.dumps(dataclasses.asdict(preload)),
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self.env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            theirs.close()
        self.log_path: Path | None = None
        self._output = ServerOutput(self.process.stdout)
        self._replies: queue.Queue = queue.Queue()
        self._exits: dict[int, int] = {}
        self._exited = threading.Condition()
        self._lock = threading.Lock()  # one fork request at a time
        self._listener = threading.Thread(target=self._listen, name="forkserver", daemon=True)
        self._listener.start()

    def log_to(self, log_path: Path) -> None:
        """Append the server's output (what it wrote so far, then the rest) to `log_path`."""
        self._output.to(log_path)
        self.log_path = log_path

    def wait_ready(self) -> None:
        """Wait until the server has imported its preload; LaunchError (the server stopped) if it
        fails or does not answer in time."""
        try:
            ready, _ = self._reply(READY_TIMEOUT_S, "to import its modules")
        except LaunchError:
            self.close()  # stopped, not left importing
            raise
        if not ready.get("ready"):
            self.close()
            why = ready.get("error") or self._cause()
            raise LaunchError(f"the fork server failed while importing its modules: {why}")

    def _listen(self) -> None:
        """Route the server's messages: exits to the exit table, everything else to the replies."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._socket, MAX_MESSAGE, 1)
            except OSError:
                data, fds = b"", []
            if not data:
                break
            message = json.loads(data)
            if "exited" in message:
                with self._exited:
                    self._exits[message["exited"]] = message["code"]
                    self._exited.notify_all()
            else:
                self._replies.put((message, fds))
        self._replies.put(({}, []))
        with self._exited:
            self._exits.setdefault(-1, 0)  # marks the end of reports
            self._exited.notify_all()

    def _reply(self, timeout: float, what: str) -> tuple[dict, list[int]]:
        """The server's next reply and the file descriptors that came with it."""
        try:
            return self._replies.get(timeout=timeout)
        except queue.Empty:
            raise LaunchError(f"the fork server did not answer within {timeout:.0f}s {what}") from None

    def spawn(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        log_path: Path,
        lines: queue.Queue,
        env: Mapping[str, str] | None = None,
        namespace: str = "",
    ) -> ForkedChild:
        """Fork a child running `python -m module args` (in the network `namespace` of an emulated
        host, if given); its stdout lines go to `lines` as (name, line)."""
        request = {"fork": name, "module": module, "args": list(args), "log": str(log_path)}
        request["env"] = dict(env or {})
        request["netns"] = namespace
        with self._lock:
            try:
                self._socket.send(json.dumps(request).encode())
            except OSError:  # the server ended before this request: its end is the cause
                raise LaunchError(f"the fork server could not fork {name}: {self._cause()}") from None
            reply, fds = self._reply(REPLY_TIMEOUT_S, f"to fork {name}")
        if reply.get("forked") != name or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            why = reply.get("error") or self._cause()
            raise LaunchError(f"the fork server could not fork {name}: {why}")
        os.set_inheritable(fds[0], False)
        reader = start_pump(name, os.fdopen(fds[0], "rb"), lines)
        return ForkedChild(self, name, reply["pid"], log_path, reader)

    def reporting(self) -> bool:
        """Whether the server still reports its children's exits (it has not ended)."""
        with self._exited:
            return -1 not in self._exits

    def ended(self) -> str:
        """How the server process ended, e.g. "the fork server (pid 12) was killed by SIGKILL"."""
        try:
            code = self.process.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            return f"the fork server (pid {self.process.pid}) stopped answering"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"the fork server (pid {self.process.pid}) was killed by {signal.Signals(-code).name}"
        return f"the fork server (pid {self.process.pid}) exited with {code}"

    def _cause(self) -> str:
        """Why the server gave no answer: how it ended, and unless a signal ended it the last line
        of its log (an error's)."""
        ended = self.ended()
        self._output.finish(GRACE_S)  # the server's last words are in its log
        signalled = (self.process.poll() or 0) < 0
        tail = "" if signalled or self.log_path is None else log_tail(self.log_path, 1)
        return ended + (f" ({tail})" if tail else "")

    def exit_code(self, pid: int) -> int | None:
        with self._exited:
            return self._exits.get(pid)

    def wait_exit(self, pid: int, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for the exit of `pid` (None if not reported by then, or if
        the server ended without reporting it)."""
        deadline = time.monotonic() + timeout
        with self._exited:
            while pid not in self._exits and -1 not in self._exits:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._exited.wait(left)
            return self._exits.get(pid)

    def close(self, grace: float = GRACE_S) -> None:
        """End the server: it stops the children still running, reports them and exits."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_WR)
        try:
            self.process.wait(2 * grace + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._listener.join(grace)
        self._socket.close()
        self._output.finish(grace)


class ServerOutput:
    """The fork server's stdout and stderr (one pipe), drained by a thread of the launcher: kept in
    memory until `to` names the log file, then appended to it."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._lock = threading.Lock()
        self._kept = bytearray()
        self._file: IO[bytes] | None = None
        self._drain = threading.Thread(target=self._read, args=(pipe,), name="forkserver-log", daemon=True)
        self._drain.start()

    def _read(self, pipe: IO[bytes]) -> None:
        with pipe:
            for chunk in iter(lambda: pipe.read1(MAX_MESSAGE), b""):
                with self._lock:
                    if self._file is None:
                        self._kept += chunk
                    else:
                        self._file.write(chunk)
                        self._file.flush()

    def to(self, path: Path) -> None:
        """From now on, append to `path` (what was kept first)."""
        with self._lock:
            self._file = open(path, "ab")  # noqa: SIM115 - closed in finish()
            self._file.write(self._kept)
            self._file.flush()
            self._kept.clear()

    def finish(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the end of the output (the server and its pipe closed),
        then close the log file."""
        self._drain.join(timeout)
        with self._lock:
            if self._file is not None and not self._drain.is_alive():
                self._file.close()


_early: list[ForkServer] = []  # started ahead of their run by `early_fork_server`, not adopted yet


@contextlib.contextmanager
def early_fork_server(preload: Preload | None, env: Mapping[str, str]) -> Iterator[None]:
    """For the block, a fork server started now with `preload` and `env` (None: none), so that it
    imports (torch...) while the launcher imports its own modules and prepares the run;
    `start_fork_server` with the same preload and env adopts it. One not adopted is stopped at the
    end of the block (it forked nothing). Inside the block of one already started with them (the
    CLI's, before it imports the launcher), nothing is started."""
    if preload is None or any(s.preload == preload and s.env == dict(env) for s in _early):
        yield
        return
    server = ForkServer(preload, env)
    _early.append(server)
    try:
        yield
    finally:
        if server in _early:
            _early.remove(server)
            server.process.terminate()
            server.close()


def _adopt(preload: Preload, env: Mapping[str, str]) -> ForkServer | None:
    """The early fork server started with `preload` and `env`, if any (any other early one is
    stopped: its run asks for another)."""
    while _early:
        server = _early.pop()
        if server.preload == preload and server.env == dict(env):
            return server
        server.process.terminate()
        server.close()
    return None


@contextlib.contextmanager
def start_fork_server(preload: Preload, log_path: Path, env: Mapping[str, str]) -> Iterator[ForkServer]:
    """A fork server for the block (the early one, if it matches), logging to `log_path`, its
    imports done; closed (children stopped) on exit, error and Ctrl-C alike."""
    server = _adopt(preload, env) or ForkServer(preload, env)
    server.log_to(log_path)
    server.wait_ready()
    try:
        yield server
    finally:
        server.close()
