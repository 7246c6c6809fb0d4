"""The ClientApp fork server of a launcher's SuperNode: flwr starts one `flwr-clientapp` process per
message (train, evaluate, every SecAgg+ stage), each paying ~2 CPU-s of interpreter start and
imports. This process, started by `supernode_process` beside its SuperNode, imports flwr's ClientApp
command, our ClientApp and the model's modules once (`clientapp_preload`: torch only if the model
needs it), then forks one child per invocation of the run's `flwr-clientapp` (`clientapp_shim`),
which runs exactly the plain command's code (`clientapp_process`) with the shim's arguments,
environment, working directory and stdin/stdout/stderr.

gRPC is imported (flwr needs it) but creates no channel or server before a fork (flwr 1.42's
ClientApp talks HTTP to its SuperNode), and the fork server refuses to serve with more than one
thread (`forkserver_process.unsafe_to_fork`). A child gets SIGTERM when the fork server dies, and
when its shim's connection closes (the shim was killed); the fork server gets SIGTERM when its
SuperNode dies (parent-death signal) and then stops its children. Only processes of the same user
may connect (SO_PEERCRED). The pieces it shares with the gossip peers' fork server (preload,
the checks before forking, a program's exit status, stopping children) are in
`launcher/supervision/forkserver_process.py`.

Run as `python -m fedgossip.launcher.flower.clientapp_forkserver ADDRESS PRELOAD_JSON`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import time

from fedgossip.base.signals import Shutdown
from fedgossip.config import ExperimentConfig
from fedgossip.launcher.flower import clientapp_process
from fedgossip.launcher.flower.clientapp_shim import MAX_MESSAGE
from fedgossip.launcher.flower.supernode_process import call_process
from fedgossip.launcher.supervision.forkserver import preload_for
from fedgossip.launcher.supervision.forkserver_process import (
    SIGNALS,
    Preload,
    exit_status,
    load,
    stop_children,
    unsafe_to_fork,
)
from fedgossip.launcher.supervision.processes import die_with_parent

CLIENTAPP_PARTS = (
    "flwr.supernode.cli.flwr_clientapp",  # after clientapp_process.without_package_init
    "fedgossip.client.flower_app",
    "fedgossip.scenario.attacks",  # imported by the ClientApp at its first message
)
NAME = "clientapp-forks"  # the process name ps shows


def clientapp_preload(config: ExperimentConfig) -> Preload:
    """What the fork server of a SuperNode of `config` imports: what a gossip peer of the same
    model, dataset and privacy would, with the ClientApp's parts instead of the peer's."""
    dp_sgd = config.privacy.dp_sgd(config.experiment.rounds) is not None
    return preload_for(config.task.model, config.task.dataset, dp_sgd, CLIENTAPP_PARTS)


def _peer_uid(connection: socket.socket) -> int:
    creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[2]


def _fork(request: dict, fds: list[int], inherited: list[socket.socket | int]) -> int:
    """Fork a child running the ClientApp command for `request` on the shim's stdin/out/err (the
    `inherited` sockets and file descriptors of the server closed)."""
    server = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            for held in inherited:
                if isinstance(held, socket.socket):
                    held.close()
                else:
                    os.close(held)
            for signum in SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            die_with_parent()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            if os.getppid() != server:  # the server died between fork and prctl
                os._exit(1)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = [clientapp_process.__name__, *request["args"]]
            code = exit_status(clientapp_process.main)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    return pid


def _send(connection: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    with contextlib.suppress(OSError):  # the shim is gone
        socket.send_fds(connection, [json.dumps(message).encode()], fds or [])


class Forks:
    """The fork server's state: connections waiting to send their request, and running children
    with their pidfds and their shims' connections."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.waiting: set[socket.socket] = set()
        self.children: dict[int, tuple[int, socket.socket | None]] = {}  # pid -> (pidfd, shim)

    def sockets(self) -> list[socket.socket | int]:
        """What the server waits on: the listener, the connections, the children's pidfds."""
        shims = [shim for _, shim in self.children.values() if shim is not None]
        return [self.listener, *self.waiting, *shims, *(fd for fd, _ in self.children.values())]

    def accept(self) -> None:
        connection, _ = self.listener.accept()
        if _peer_uid(connection) != os.getuid():
            connection.close()
        else:
            self.waiting.add(connection)

    def request(self, connection: socket.socket) -> None:
        """Fork a child for the request on `connection` and tell the shim its pidfd."""
        self.waiting.discard(connection)
        try:
            data, fds, _, _ = socket.recv_fds(connection, MAX_MESSAGE, 3)
        except OSError:
            data, fds = b"", []
        try:
            if not data or len(fds) != 3:
                connection.close()
                return
            try:
                pid = _fork(json.loads(data), fds, [connection, *self.sockets()])
            except OSError as err:
                _send(connection, {"error": f"fork failed: {err}"})
                connection.close()
                return
        finally:
            for fd in fds:
                os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.children[pid] = (pidfd, connection)
        _send(connection, {"pid": pid}, [pidfd])

    def shim_closed(self, pid: int) -> None:
        """The shim of `pid` went away (killed): stop its child."""
        pidfd, shim = self.children[pid]
        if shim is not None:
            shim.close()
        self.children[pid] = (pidfd, None)
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)

    def report(self, pid: int, code: int) -> None:
        """Tell the shim of `pid` its exit code and forget it."""
        pidfd, shim = self.children.pop(pid)
        os.close(pidfd)
        if shim is not None:
            _send(shim, {"exit": code})
            shim.close()

    def step(self) -> None:
        """Wait for and handle one batch of events."""
        readable, _, _ = select.select(self.sockets(), [], [])
        by_pidfd = {fd: pid for pid, (fd, _) in self.children.items()}
        by_shim = {shim: pid for pid, (_, shim) in self.children.items() if shim is not None}
        for ready in readable:
            if ready is self.listener:
                self.accept()
            elif ready in self.waiting:
                self.request(ready)
            elif ready in by_shim:
                with contextlib.suppress(OSError):
                    if ready.recv(1):
                        continue  # nothing else is sent: ignore
                self.shim_closed(by_shim[ready])
            elif ready in by_pidfd:
                pid = by_pidfd[ready]
                _, status = os.waitpid(pid, 0)
                self.report(pid, os.waitstatus_to_exitcode(status))

    def stop(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL) and report them."""
        stop_children(set(self.children), self.report)


def serve(address: str, preload: Preload) -> None:
    """Import the ClientApp and `preload`, then fork a child per shim until stopped."""
    started = time.monotonic()
    call_process(NAME)
    clientapp_process.without_package_init(clientapp_process.PACKAGE)
    load(preload)
    problem = unsafe_to_fork(forbidden=())
    if problem:
        print(f"{NAME} {os.getpid()}: not serving ({problem}); the ClientApps start afresh", file=sys.stderr)
        return
    gc.collect()
    gc.freeze()  # the imported objects stay out of the children's collections: their pages stay shared
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + address)
    listener.listen(64)
    print(
        f"{NAME} {os.getpid()}: preloaded in {time.monotonic() - started:.2f}s", file=sys.stderr, flush=True
    )
    forks = Forks(listener)
    with Shutdown() as shutdown:
        try:
            while True:
                forks.step()
        except KeyboardInterrupt:  # SIGTERM/SIGINT: the SuperNode died (parent-death signal) or stops us
            pass
        finally:
            shutdown.begin()
            listener.close()
            forks.stop()


if __name__ == "__main__":
    serve(sys.argv[1], Preload(**json.loads(sys.argv[2])))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown of the preloaded modules
