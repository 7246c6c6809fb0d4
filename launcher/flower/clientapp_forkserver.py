"""The ClientApp fork server of a deployment run: flwr's SuperNodes start one `flwr-clientapp`
process per message (train, evaluate, every SecAgg+ stage), each paying ~2 CPU-s of interpreter
start and imports. This process, started by the launcher before the SuperLink (`start`), imports
flwr's ClientApp command, our ClientApp and the model's modules once (`clientapp_preload`: torch
only if the model needs it), then forks one child per invocation of the run's `flwr-clientapp`
(`clientapp_shim`) on any of the launcher's SuperNodes, which runs exactly the plain command's code
(`clientapp_process`) with the shim's arguments, environment, working directory and
stdin/stdout/stderr, in the shim's emulated host (NETNS_ENV, launcher.network = "namespaces").
One per run, not one per SuperNode: a fork server per SuperNode (N imports at the start of a run
on 2 cores) delayed round 1 of 4 SuperNodes to 54 s against 42 s with fresh processes (load ~22);
one per run reached it no later (53 s against 56 s, load ~50; bench_flower --clientapp-forks).

gRPC is imported (flwr needs it) but creates no channel or server before a fork (flwr 1.42's
ClientApp talks HTTP to its SuperNode), and the fork server refuses to serve with more than one
thread (`forkserver_process.unsafe_to_fork`). A child gets SIGTERM when the fork server dies, and
when its shim's connection closes (the shim was killed); the fork server is one of the launcher's
children (it dies with the launcher) and stops its children when stopped. Its socket is in a
private folder (0700) of its own, and only processes of the same user may connect (SO_PEERCRED).
The pieces it shares with the gossip peers' fork server (preload, the checks before forking, a
program's exit status, stopping children) are in `launcher/supervision/forkserver_process.py`.

Run as `python -m fedgossip.launcher.flower.clientapp_forkserver SOCKET_PATH PRELOAD_JSON`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from fedgossip.base.signals import Shutdown
from fedgossip.config import ExperimentConfig
from fedgossip.launcher.flower import clientapp_process
from fedgossip.launcher.flower.clientapp_shim import ADDRESS_ENV, MAX_MESSAGE
from fedgossip.launcher.flower.supernode_process import call_process
from fedgossip.launcher.supervision.forkserver import preload_for
from fedgossip.launcher.supervision.forkserver_process import (
    Preload,
    exit_status,
    fork_child,
    load,
    send,
    stop_children,
    unsafe_to_fork,
)
from fedgossip.launcher.supervision.namespaces import enter
from fedgossip.launcher.supervision.processes import Child, python_module

CLIENTAPP_PARTS = (
    "flwr.supernode.cli.flwr_clientapp",  # after clientapp_process.without_package_init
    # httpx imports it at its first client, the ClientApp's to its SuperNode: 20-100 ms a message
    "httpcore",
    "fedgossip.client.flower_app",
    # imported by the ClientApp at its first message (roles: 15-60 ms a message, with schema's modules)
    "fedgossip.scenario.attacks",
    "fedgossip.scenario.roles",
)
NAME = "clientapp-forks"  # the process name ps shows
NETNS_ENV = "FEDGOSSIP_CLIENTAPP_NETNS"
"""In a SuperNode's environment: the network namespace of its emulated host, which its ClientApps enter."""


def clientapp_preload(config: ExperimentConfig) -> Preload:
    """What the ClientApp fork server of a run of `config` imports: what a gossip peer of the same
    model, dataset and privacy would, with the ClientApp's parts instead of the peer's."""
    dp_sgd = config.privacy.dp_sgd(config.experiment.rounds) is not None
    return preload_for(config.task.model, config.task.dataset, dp_sgd, CLIENTAPP_PARTS)


def _peer_uid(connection: socket.socket) -> int:
    creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[2]


def _fork(request: dict, fds: list[int], inherited: list[socket.socket | int]) -> int:
    """Fork a child running the ClientApp command for `request` on the shim's stdin/out/err (the
    `inherited` sockets and file descriptors of the server closed)."""

    def close() -> None:
        for held in inherited:
            if isinstance(held, socket.socket):
                held.close()
            else:
                os.close(held)

    def run() -> int:  # pragma: no cover - the child
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        if request["env"].get(NETNS_ENV):
            enter(request["env"][NETNS_ENV])
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [clientapp_process.__name__, *request["args"]]
        return exit_status(clientapp_process.main)

    return fork_child(close, run)


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
                send(connection, {"error": f"fork failed: {err}"})
                connection.close()
                return
        finally:
            for fd in fds:
                os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.children[pid] = (pidfd, connection)
        send(connection, {"pid": pid}, [pidfd])

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
            send(shim, {"exit": code})
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


@contextlib.contextmanager
def serving(
    preload: Preload | None, children: list[Child], logs: Path, env: Mapping[str, str]
) -> Iterator[dict[str, str]]:
    """Start the run's ClientApp fork server preloading `preload`, as one of `children` (stopped
    with them; its log logs/clientapp-forks.log); yields what the SuperNodes' environment needs to
    use it ({} without a preload: fresh processes). Its private folder is removed at the end."""
    if preload is None:
        yield {}
        return
    folder = Path(tempfile.mkdtemp(prefix="fedgossip-"))  # short: a socket path has 107 bytes at most
    try:
        address = str(folder / "clientapp.sock")
        argv = python_module(__name__, address, json.dumps(dataclasses.asdict(preload)))
        children.append(Child(NAME, argv, log_path=logs / f"{NAME}.log", env=env))
        yield {ADDRESS_ENV: address}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def serve(address: str, preload: Preload) -> None:
    """Import the ClientApp and `preload`, then fork a child per shim (listening on the socket
    path `address`) until stopped."""
    started = time.monotonic()
    call_process(NAME)
    clientapp_process.without_package_init(clientapp_process.PACKAGE)
    load(preload)
    problem = unsafe_to_fork()
    if problem:
        print(f"{NAME} {os.getpid()}: not serving ({problem}); the ClientApps start afresh", file=sys.stderr)
        return
    gc.collect()
    gc.freeze()  # the imported objects stay out of the children's collections: their pages stay shared
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(address)
    listener.listen(64)
    print(
        f"{NAME} {os.getpid()}: preloaded in {time.monotonic() - started:.2f}s", file=sys.stderr, flush=True
    )
    forks = Forks(listener)
    with Shutdown() as shutdown:
        try:
            while True:
                forks.step()
        except KeyboardInterrupt:  # SIGTERM/SIGINT: the launcher died (parent-death signal) or stops us
            pass
        finally:
            shutdown.begin()
            listener.close()
            with contextlib.suppress(OSError):  # the socket, then its folder (`serving`'s)
                os.unlink(address)
                os.rmdir(os.path.dirname(address))
            forks.stop()


if __name__ == "__main__":
    serve(sys.argv[1], Preload(**json.loads(sys.argv[2])))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown of the preloaded modules
