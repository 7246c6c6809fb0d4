"""The fork server: node processes forked from one pre-imported parent instead of started afresh.

A fresh peer process spends most of its start-up importing numpy, torch and the task code, and
holds its own copy of all of it. The fork server imports them once (`preload`, never grpc: gRPC's
core keeps threads and polling state that a fork would copy half-made; each child creates its own
gRPC state after the fork), freezes its heap out of the garbage collector's reach (`gc.freeze`,
so the children's collections do not dirty the shared pages) and forks one child per request, which
then runs `python -m MODULE ARGS` (runpy), exactly the code a fresh process runs. The children
share the imported code copy-on-write: less memory (PSS) and a start-up of a fraction of a second.

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
{"fork": name, "module", "args", "log", "env"}; server -> launcher {"ready": true} once the
imports are done, {"forked": name, "pid"} with the read end of the child's stdout pipe, {"exited":
pid, "code"} when a child is reaped (code as subprocess gives it: negative for a signal).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import json
import os
import queue
import runpy
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from fedgossip.base.signals import Shutdown
from fedgossip.launcher.supervision.processes import die_with_parent, log_tail, python_module, start_pump

READY_TIMEOUT_S = 120.0  # imports of torch on a loaded machine
REPLY_TIMEOUT_S = 30.0
GRACE_S = 5.0
REAP_S = 0.05  # how often the server looks for exited children
MAX_MESSAGE = 1 << 16
SIGNALS = {signal.SIGINT, signal.SIGTERM}
FORBIDDEN = ("grpc",)  # never imported before a fork
RAW_DATASETS = ("digits", "breast_cancer", "mnist-5k")  # what fedgossip.tasks.data.load_raw reads and caches


@dataclass(frozen=True)
class Preload:
    """What the fork server loads before forking: modules, and bundled datasets (`load_raw` names,
    cached read-only arrays the children then share)."""

    modules: tuple[str, ...]
    raw_data: tuple[str, ...] = ()


def preload_for(model: str, dataset: str = "") -> Preload:
    """What a gossip peer with `model` on `dataset` loads before it creates any gRPC state. Not
    scikit-learn (the linear model): it imports pandas and pyarrow when installed, whose allocator
    starts a thread, and a process with threads must not fork."""
    learner = [] if model == "linear" else ["fedgossip.tasks.torch_learner", "fedgossip.tasks.torch_models"]
    modules = [
        "numpy",
        "numpy.ma",  # imported by the first np.unique (the data split): ~15 ms per child otherwise
        "numpy.random",  # numpy imports it lazily, at the first np.random (the seeded streams)
        "fedgossip.config",
        "fedgossip.tasks",
        *learner,
        "fedgossip.client.gossip.transport.identity",
        "fedgossip.client.gossip.merge",
        "fedgossip.strategies.diagnostics",
        "fedgossip.proto.gossip_pb2",
        "fedgossip.schema.records",
        "fedgossip.schema.events",
        "fedgossip.base.signals",
    ]
    return Preload(tuple(modules), (dataset,) if dataset in RAW_DATASETS else ())


# ---- the launcher's side ---------------------------------------------------------------------


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
        return log_tail(self.log_path, lines)


class ForkServer:
    """A running fork server (start it with `start_fork_server`); `spawn` forks a child."""

    def __init__(self, preload: Preload, log_path: Path, env: Mapping[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket = ours
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        try:
            self.process = subprocess.Popen(
                python_module(
                    "fedgossip.launcher.supervision.forkserver",
                    str(theirs.fileno()),
                    json.dumps(dataclasses.asdict(preload)),
                ),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                env=dict(env),
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            theirs.close()
        self.log_path = log_path
        self._replies: queue.Queue = queue.Queue()
        self._exits: dict[int, int] = {}
        self._exited = threading.Condition()
        self._lock = threading.Lock()  # one fork request at a time
        self._listener = threading.Thread(target=self._listen, name="forkserver", daemon=True)
        self._listener.start()
        ready, _ = self._reply(READY_TIMEOUT_S, "to import its modules")
        if not ready.get("ready"):
            self.close()
            raise RuntimeError(f"the fork server failed: {ready.get('error') or log_tail(log_path)}")

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
            raise RuntimeError(f"the fork server did not answer within {timeout:.0f}s {what}") from None

    def spawn(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        log_path: Path,
        lines: queue.Queue,
        env: Mapping[str, str] | None = None,
    ) -> ForkedChild:
        """Fork a child running `python -m module args`; its stdout lines go to `lines` as (name, line)."""
        request = {"fork": name, "module": module, "args": list(args), "log": str(log_path)}
        request["env"] = dict(env or {})
        with self._lock:
            self._socket.send(json.dumps(request).encode())
            reply, fds = self._reply(REPLY_TIMEOUT_S, f"to fork {name}")
        if reply.get("forked") != name or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            why = reply.get("error") or log_tail(self.log_path)
            raise RuntimeError(f"the fork server could not fork {name}: {why}")
        os.set_inheritable(fds[0], False)
        reader = start_pump(name, os.fdopen(fds[0], "rb"), lines)
        return ForkedChild(self, name, reply["pid"], log_path, reader)

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
        self._log.close()


@contextlib.contextmanager
def start_fork_server(preload: Preload, log_path: Path, env: Mapping[str, str]) -> Iterator[ForkServer]:
    """A fork server for the block; closed (children stopped) on exit, error and Ctrl-C alike."""
    server = ForkServer(preload, log_path, env)
    try:
        yield server
    finally:
        server.close()


# ---- the server's side -----------------------------------------------------------------------


def _run_child(module: str, args: Sequence[str]) -> int:  # pragma: no cover - runs in a forked child
    """Run `python -m module args` in this (forked) process; its exit status."""
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _fork(request: dict, control: socket.socket, server_pid: int) -> tuple[int, int]:
    """Fork one child for `request`; returns its PID and the read end of its stdout pipe."""
    read, write = os.pipe()
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            control.close()
            os.close(read)
            for signum in SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            die_with_parent()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            if os.getppid() != server_pid:  # the server died between fork and prctl
                os._exit(1)
            devnull = os.open(os.devnull, os.O_RDONLY)
            for fd, target in ((devnull, 0), (write, 1), (log, 2)):
                os.dup2(fd, target)
                os.close(fd)
            os.environ.update(request["env"])
            code = _run_child(request["module"], request["args"])
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    os.close(write)
    os.close(log)
    return pid, read


def _send(control: socket.socket, message: dict, fds: Iterable[int] = ()) -> None:
    with contextlib.suppress(OSError):  # the launcher is gone: nothing to tell
        socket.send_fds(control, [json.dumps(message).encode()], list(fds))


def _reap(control: socket.socket, children: set[int]) -> None:
    """Report every child that exited."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(control, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _stop_children(control: socket.socket, children: set[int]) -> None:
    """SIGTERM every child, SIGKILL those still running after GRACE_S; report them all."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + GRACE_S
        while children and time.monotonic() < deadline:
            _reap(control, children)
            time.sleep(REAP_S)


def _unsafe_to_fork() -> str | None:
    """Why this process must not fork (a forbidden module imported, threads running), or None."""
    loaded = [name for name in FORBIDDEN if name in sys.modules]
    if loaded:
        return f"{', '.join(loaded)} imported before forking"
    threads = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["main"]
    if len(threads) > 1 or threading.active_count() > 1:
        return f"{len(threads)} threads run after the imports (set OMP_NUM_THREADS=1?): forking is unsafe"
    return None


def serve(control: socket.socket, preload: Preload) -> None:
    """Load `preload`, then fork a child per request until the launcher closes the socket."""
    started = time.monotonic()
    for module in preload.modules:
        importlib.import_module(module)
    if preload.raw_data:
        from fedgossip.tasks.data import load_raw

        for name in preload.raw_data:
            with contextlib.suppress(ValueError):  # not installed: each peer reports it itself
                load_raw(name)
    problem = _unsafe_to_fork()
    if problem:
        _send(control, {"ready": False, "error": problem})
        return
    gc.collect()
    gc.freeze()  # the imported objects stay out of the children's collections: their pages stay shared
    print(
        f"fork server {os.getpid()}: preloaded in {time.monotonic() - started:.2f}s",
        file=sys.stderr,
        flush=True,
    )
    _send(control, {"ready": True})
    me, children = os.getpid(), set()
    with Shutdown() as shutdown:
        try:
            while True:
                readable, _, _ = select.select([control], [], [], REAP_S)
                _reap(control, children)
                if not readable:
                    continue
                data = control.recv(MAX_MESSAGE)
                if not data:
                    break
                request = json.loads(data)
                try:
                    pid, read = _fork(request, control, me)
                except OSError as err:
                    _send(control, {"forked": None, "error": f"fork failed: {err}"})
                    continue
                children.add(pid)
                _send(control, {"forked": request["fork"], "pid": pid}, [read])
                os.close(read)
        except KeyboardInterrupt:  # SIGTERM: the launcher died (parent-death signal) or stops us
            pass
        finally:
            shutdown.begin()
            _stop_children(control, children)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])), Preload(**json.loads(sys.argv[2])))
