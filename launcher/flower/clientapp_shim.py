"""The run's `flwr-clientapp` command (flower/bin, `files.prepare`): hands the invocation to its
run's ClientApp fork server (`clientapp_forkserver`), which forks a pre-imported child for it,
so a message costs a fork instead of a fresh interpreter importing flwr, numpy and the task code.

To its SuperExec it is an ordinary `flwr-clientapp` process: it sends the fork server its
arguments, environment, working directory and stdin/stdout/stderr (SCM_RIGHTS), relays SIGTERM and
SIGINT to the child (through the child's pidfd: never a reused PID) and exits as the child did
(the same code, or killed by the same signal). When no fork server answers (none started, not
ready yet, gone, or it could not fork), it execs the session's plain command instead
(`clientapp_process`), so the optimisation never breaks a run.

Standard library only, run with `python -S`: it must start in milliseconds (`-X importtime`).

Protocol (SOCK_SEQPACKET, the Unix socket path in ADDRESS_ENV, one JSON object per message):
shim -> server {"args", "env", "cwd"} with fds 0, 1, 2; server -> shim {"pid"} with the child's
pidfd, then {"exit": code} (code as subprocess gives it: negative for a signal), or {"error"}
instead of {"pid"} when it cannot fork.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

ADDRESS_ENV = "FEDGOSSIP_CLIENTAPP_FORKSERVER"
"""The socket path of the run's ClientApp fork server, in the launcher's SuperNodes' environment."""
FALLBACK_MODULE = "fedgossip.launcher.flower.clientapp_process"
MAX_MESSAGE = 1 << 20  # the request carries the whole environment
RELAYED = (signal.SIGTERM, signal.SIGINT)
NAME = "flwr-clientapp"


def connect(address: str) -> socket.socket | None:
    """A connection to the fork server listening on the socket path `address`, or None."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        client.connect(address)
    except OSError:
        client.close()
        return None
    return client


def fallback(args: list[str]) -> None:
    """Exec the plain ClientApp command (what runs without a fork server)."""
    os.execv(sys.executable, [sys.executable, "-m", FALLBACK_MODULE, *args])


def exit_as(code: int) -> None:
    """Exit with `code`, or be killed by signal -code (as the child was)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if code < 0:
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP keep their default
            signal.signal(-code, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [-code])
        os.kill(os.getpid(), -code)
    os._exit(code if 0 <= code < 256 else 1)


def run(name: str, args: list[str]) -> int | None:
    """Run the ClientApp as a child of the fork server at `name`; its exit code, or None if no
    fork server took it (then nothing ran: fall back)."""
    server = connect(name)
    if server is None:
        return None
    pending: list[int] = []
    pidfd: list[int] = []

    def relay(signum: int, _frame: object) -> None:
        if pidfd:
            with contextlib.suppress(ProcessLookupError):  # already exited
                signal.pidfd_send_signal(pidfd[0], signum)
        else:
            pending.append(signum)

    for signum in RELAYED:
        signal.signal(signum, relay)
    request = {"args": args, "env": dict(os.environ), "cwd": os.getcwd()}
    try:
        socket.send_fds(server, [json.dumps(request).encode()], [0, 1, 2])
        data, fds, _, _ = socket.recv_fds(server, MAX_MESSAGE, 1)
    except OSError:
        data, fds = b"", []
    reply = json.loads(data) if data else {}
    if "pid" not in reply or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return -pending[0] if pending else None  # stopped before anything ran: as by the signal
    pidfd.append(fds[0])
    for signum in pending:
        relay(signum, None)
    while True:
        try:
            data = server.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        if not data:
            print("flwr-clientapp: the ClientApp fork server ended before its child", file=sys.stderr)
            return 1
        message = json.loads(data)
        if "exit" in message:
            return int(message["exit"])


def main() -> None:
    """Run the ClientApp through the fork server of ADDRESS_ENV, or fall back to a fresh process."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(NAME)  # what ps shows (Linux), as for flwr's own command
    args = sys.argv[1:]
    name = os.environ.get(ADDRESS_ENV, "")
    code = run(name, args) if name else None
    if code is None:
        fallback(args)
    exit_as(code)


if __name__ == "__main__":
    main()
