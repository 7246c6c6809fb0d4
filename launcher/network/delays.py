"""The kernel layer's delays through netfilter queues (kernels without netem): which link
directions the delay process holds, and that process's life in the launcher (started in host 0
and ready before the first node process, watched, stopped before the hosts are removed).

If the delay process dies during the run, its links lose their delays (the kernel lets their
packets through): the watcher says so on stderr and kills the run's node processes, so the run
fails at once (exit 1) rather than go on with links that are not the scenario's.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedgossip.launcher.network.queue_delay import READY, QueuedLink, spec
from fedgossip.launcher.supervision.namespaces import EmulatedHosts, NamespaceError, processes_in
from fedgossip.launcher.supervision.processes import child_env, die_with_parent, log_tail, python_module

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
MODULE = "fedgossip.launcher.network.queue_delay"


def queued_links(
    hosts: EmulatedHosts, delays: Mapping[tuple[int, int], tuple[float, float]]
) -> list[QueuedLink]:
    """The delayed directions ((sender host, receiver host) -> (delay_ms, jitter_ms)) as the
    delay process holds them: in the receiver's namespace, matched by the sender's address."""
    return [
        QueuedLink(a, b, hosts.namespaces[b], hosts.addresses[a], delay, jitter)
        for (a, b), (delay, jitter) in sorted(delays.items())
        if delay > 0
    ]


@functools.cache
def unavailable_reason() -> str | None:
    """Why this machine cannot delay through netfilter queues (no pyroute2, or the kernel refuses
    the rule or the queue: tried in a throwaway host), or None if it can."""
    if importlib.util.find_spec("pyroute2") is None:
        return "the Python package pyroute2 is not installed (pip install 'fedgossip[network]')"
    with tempfile.TemporaryDirectory() as folder, EmulatedHosts(1) as hosts:
        try:
            probe = [QueuedLink(0, 0, hosts.namespaces[0], hosts.gateway, 1.0)]
            DelayProcess(hosts, probe, 0, Path(folder) / "probe.log").close()
        except NamespaceError as err:
            return str(err)
    return None


class DelayProcess:
    """The delay process of `hosts` holding `links`, ready on construction (NamespaceError with
    its last log lines if it is not); `close()` stops it."""

    def __init__(self, hosts: EmulatedHosts, links: Sequence[QueuedLink], seed: int, log_path: Path) -> None:
        self.hosts = hosts
        self.log_path = log_path
        self.stopping = threading.Event()
        with open(log_path, "ab") as log:
            self.process = hosts.run(
                0,
                python_module(MODULE),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=child_env(),
                start_new_session=True,  # a Ctrl-C reaches the launcher, which stops it in order
                preexec_fn=die_with_parent,
            )
        self.pid = self.process.pid
        try:
            self.process.stdin.write(spec(links, seed, hosts.namespaces[0]).encode())
            self.process.stdin.close()
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        self.watcher = threading.Thread(target=self._watch, name="delay-process", daemon=True)
        self.watcher.start()

    def _wait_ready(self) -> None:
        """Wait for the process's READY line; NamespaceError with its log's tail if it exits first."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                line = self.process.stdout.readline().decode().strip()
                if line == READY:
                    return
                if not line:
                    break
        self.process.kill()
        self.process.wait()
        tail = " ".join(log_tail(self.log_path, 1).split()) or f"exit {self.process.returncode}"
        raise NamespaceError(f"the delay process (netfilter queues) did not start: {tail}")

    def _watch(self) -> None:
        """If the process dies before `close()`: say so and stop the run's node processes."""
        code = self.process.wait()
        if self.stopping.is_set():
            return
        print(
            f"failed: the kernel layer's delay process (PID {self.pid}) exited with {code}: the "
            f"links it delayed are not delayed any more; stopping the run (its log: {self.log_path})",
            file=sys.stderr,
            flush=True,
        )
        for pid in processes_in(self.hosts.namespaces):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue

    def close(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after STOP_GRACE_S); idempotent."""
        self.stopping.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
