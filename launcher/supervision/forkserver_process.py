"""The fork server's own process: it imports the preload, then forks one child per request of the
launcher (`forkserver.ForkServer`, whose docstring tells the whole design and the control
messages), reports their exits and stops them all when the launcher goes.

Run as `python -m fedgossip.launcher.supervision.forkserver_process FD PRELOAD_JSON`.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fedgossip.base.signals import Shutdown
from fedgossip.launcher.supervision.namespaces import enter
from fedgossip.launcher.supervision.processes import die_with_parent

GRACE_S = 5.0
REAP_S = 0.05  # how often the server looks for exited children
MAX_MESSAGE = 1 << 16
SIGNALS = {signal.SIGINT, signal.SIGTERM}


@dataclass(frozen=True)
class Preload:
    """What the fork server loads before forking: modules, bundled datasets (`load_raw` names,
    cached read-only arrays the children then share), and the run's task (its TaskConfig as
    JSON; "" for none) whose model it warms up (its family's `warm_up`, `tasks.registry`)."""

    modules: tuple[str, ...]
    raw_data: tuple[str, ...] = ()
    warm: str = ""


def run_module(module: str, args: Sequence[str]) -> int:  # pragma: no cover - runs in a forked child
    """Run `python -m module args` in this (forked) process; its exit status."""
    sys.argv = [module, *args]
    return exit_status(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True))


def exit_status(main: Callable[[], object]) -> int:  # pragma: no cover - runs in a forked child
    """Call a program's `main` in this (forked) process; its exit status as the interpreter would
    give it (SystemExit's code, 1 for an uncaught exception, whose traceback goes to stderr)."""
    try:
        main()
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


def fork_child(close: Callable[[], None], run: Callable[[], int]) -> int:
    """Fork a child of this server; returns its PID. The child closes what the server held
    (`close`), takes the default signal dispositions, dies with the server (or exits at once if the
    server died before it could ask), then `run()` is its exit status: it never returns here."""
    server = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            close()
            for signum in SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            die_with_parent()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            if os.getppid() != server:  # the server died between fork and prctl
                os._exit(1)
            code = run()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    return pid


def _fork(request: dict, control: socket.socket) -> tuple[int, int]:
    """Fork one child for `request`; returns its PID and the read end of its stdout pipe."""
    read, write = os.pipe()
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close() -> None:
        control.close()
        os.close(read)

    def run() -> int:  # pragma: no cover - the child
        devnull = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((devnull, 0), (write, 1), (log, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.update(request["env"])
        if request.get("netns"):
            enter(request["netns"])
        return run_module(request["module"], request["args"])

    pid = fork_child(close, run)
    os.close(write)
    os.close(log)
    return pid, read


def send(connection: socket.socket, message: dict, fds: Iterable[int] = ()) -> None:
    """Send `message` (JSON) and `fds` on `connection`; nothing if the other end is gone."""
    with contextlib.suppress(OSError):
        socket.send_fds(connection, [json.dumps(message).encode()], list(fds))


def reap(children: set[int], report: Callable[[int, int], None]) -> None:
    """Report (`report(pid, code)`) and forget every child that exited."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        report(pid, os.waitstatus_to_exitcode(status))


def stop_children(children: set[int], report: Callable[[int, int], None]) -> None:
    """SIGTERM every child, SIGKILL those still running after GRACE_S; report them all."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + GRACE_S
        while children and time.monotonic() < deadline:
            reap(children, report)
            time.sleep(REAP_S)


def load(preload: Preload) -> None:
    """Import the preload's modules and load its bundled datasets (cached in this process)."""
    for module in preload.modules:
        importlib.import_module(module)
    if preload.raw_data:
        from fedgossip.tasks.data import load_raw

        for name in preload.raw_data:
            with contextlib.suppress(ValueError):  # not installed: each child reports it itself
                load_raw(name)


def warm_up(preload: Preload) -> None:
    """Run the warm-up of the preload's task's model family, if it has one (before the compute
    tokens open: it computes ungated). One that fails is reported in the server's log and
    skipped: each child then meets (and reports) the failure itself."""
    if not preload.warm:
        return
    from fedgossip.base.loading import load_callable
    from fedgossip.tasks.config import TaskConfig
    from fedgossip.tasks.registry import model_entry

    task = TaskConfig.from_dict(json.loads(preload.warm))
    hook = model_entry(task.model).family.warm_up
    if not hook:
        return
    try:
        load_callable(hook)(task)
    except Exception as err:  # a user's model may fail in any way: its nodes report it
        print(f"fork server {os.getpid()}: warm-up of {task.model!r} skipped: {err}", file=sys.stderr)


def open_compute_tokens() -> None:
    """One compute token per core for the children (`tasks.compute_gate`): their learners train
    and evaluate one per core at a time, on warm caches, instead of all at once."""
    from fedgossip.tasks import compute_gate

    compute_gate.open_tokens()


def unsafe_to_fork() -> str | None:
    """Why this process must not fork (threads running after the imports), or None.

    gRPC may be imported (its import starts no thread and no gRPC state: the supported way to fork
    without exec is before any channel or server exists); a channel or a server would start gRPC's
    threads, which this check refuses like any other thread."""
    threads = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["main"]
    if len(threads) > 1 or threading.active_count() > 1:
        return f"{len(threads)} threads run after the imports (set OMP_NUM_THREADS=1?): forking is unsafe"
    return None


def serve(control: socket.socket, preload: Preload) -> None:
    """Load `preload`, then fork a child per request until the launcher closes the socket."""
    started = time.monotonic()
    load(preload)
    loaded = time.monotonic()
    warm_up(preload)
    warm_s = time.monotonic() - loaded
    open_compute_tokens()
    problem = unsafe_to_fork()
    if problem:
        send(control, {"ready": False, "error": problem})
        return
    gc.collect()
    gc.freeze()  # the imported objects stay out of the children's collections: their pages stay shared
    print(
        f"fork server {os.getpid()}: preloaded in {time.monotonic() - started:.2f}s (warm-up {warm_s:.2f}s)",
        file=sys.stderr,
        flush=True,
    )
    send(control, {"ready": True})
    children = set()

    def report(pid: int, code: int) -> None:
        send(control, {"exited": pid, "code": code})

    with Shutdown() as shutdown:
        try:
            while True:
                readable, _, _ = select.select([control], [], [], REAP_S)
                reap(children, report)
                if not readable:
                    continue
                data = control.recv(MAX_MESSAGE)
                if not data:
                    break
                request = json.loads(data)
                try:
                    pid, read = _fork(request, control)
                except OSError as err:
                    send(control, {"forked": None, "error": f"fork failed: {err}"})
                    continue
                children.add(pid)
                send(control, {"forked": request["fork"], "pid": pid}, [read])
                os.close(read)
        except KeyboardInterrupt:  # SIGTERM: the launcher died (parent-death signal) or stops us
            pass
        finally:
            shutdown.begin()
            stop_children(children, report)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])), Preload(**json.loads(sys.argv[2])))
    # its children are stopped and reported: skip the interpreter's teardown of the preloaded
    # modules (0.2-0.5 s with torch, that the launcher's end waited for)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
