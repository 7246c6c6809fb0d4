"""Several gossip peers in one OS process (`[nodes] per_process = k`): hundreds of peers per machine.

Each hosted peer is a whole `GossipPeer`: its own gRPC server on its own port, its own senders,
learner and round loop (a thread). The peers of one process hand their pushes to each other in
process, through the checks and scenario faults of a gRPC push (`handoff.py`; with
`nodes.local_handoff = false` over real gRPC, like any neighbours); Health and GetModel between them
go over gRPC. What they share is the interpreter, the imported code, gRPC's core and
the process's one event loop (`fedgossip.client.gossip.transport.eventloop`), on which every
server and sender runs.
Every event a peer emits names its node, so the launcher tells them apart on the one stdout. A
peer that diverges ends alone; the process ends when all have ended, or on SIGTERM/SIGINT
(`Shutdown`, as a single peer), which stops every hosted peer; a crash of the process ends
exactly its k peers, which the launcher then records as dead.

    python -m fedgossip.client.gossip.host NODE-0.toml NODE-1.toml ...
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
from collections.abc import Sequence

from fedgossip.base.signals import Shutdown
from fedgossip.client.gossip.handoff import HandoffTransport
from fedgossip.client.gossip.peer import GossipPeer, configure_logging, run_to_end
from fedgossip.client.gossip.transports import Transport
from fedgossip.config import ExperimentConfig, load_config
from fedgossip.schema.events import Emit
from fedgossip.schema.lines import LineWriter

log = logging.getLogger("fedgossip.host")

JOIN_S = 0.5  # how often the main thread wakes while the peers run (signals are handled there)
PR_SET_NAME = 15  # prctl: the calling thread's name, as /proc/PID/task/TID/stat shows it


def name_os_thread(name: str) -> None:
    """Give the calling thread `name` (15 bytes) in the OS too (Linux; elsewhere nothing), so that
    per-thread CPU (top -H, benchmarks/bench_floor.py) tells a peer's round loop from the event loop."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


class Hosted:
    """One peer of the process, run to its end in a thread of its own, closed exactly once."""

    def __init__(self, peer: GossipPeer, emit: Emit, shutdown: Shutdown) -> None:
        self.peer, self.emit, self.shutdown = peer, emit, shutdown
        self.node = peer.peer.id
        self.code: int | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"node-{self.node}", daemon=True)

    def _run(self) -> None:
        name_os_thread(self.thread.name)
        try:
            self.code = run_to_end(self.peer, self.emit)
        except Exception as err:  # one peer's failure never takes its neighbours in the process down
            if self.shutdown.stopping:
                return  # the process is stopping and closed this peer under its feet
            log.exception("node %d failed", self.node)
            self.emit({"type": "error", "node": self.node, "error": f"{type(err).__name__}: {err}"})
            self.code = 1
        finally:
            self.close()
        if self.code == 0:
            self.emit({"type": "done", "node": self.node})

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.peer.close()


def transport_of(configs: Sequence[ExperimentConfig]) -> Transport | None:
    """The transport the peers of `configs` share: pushes between them handed over in process
    (`nodes.local_handoff`, more than one peer), else None (each its own gRPC transport)."""
    if len(configs) < 2 or not configs[0].nodes.local_handoff:
        return None
    return HandoffTransport({config.peer.id for config in configs if config.peer is not None})


def build_peers(config_paths: Sequence[str], emit: Emit) -> list[GossipPeer] | None:
    """The peers of the node configs; None (an error event emitted, those built closed) when one
    of the configs is bad."""
    peers: list[GossipPeer] = []
    try:
        configs = [load_config(path) for path in config_paths]
        transport = transport_of(configs)
        for config in configs:
            peers.append(GossipPeer(config, transport))
    except ValueError as err:
        log.error("%s", err)
        emit({"type": "error", "error": str(err)})
        for peer in peers:
            peer.close()
        return None
    return peers


def run_hosted(hosted: Sequence[Hosted]) -> int:
    """Run the hosted peers to their ends (the calling thread wakes every JOIN_S for signals);
    0 when every peer finished, 1 if one diverged or failed."""
    for one in hosted:
        one.thread.start()
    for one in hosted:
        while one.thread.is_alive():
            one.thread.join(JOIN_S)
    return max(one.code or 0 for one in hosted)


def run_peers(config_paths: Sequence[str]) -> int:
    """Entry point of a process hosting one peer per node config; its exit status: 0 when every
    peer finished, 1 if one diverged or failed, 2 for a bad config (no peer started), 128 +
    the signal when stopped."""
    configure_logging("%(threadName)s")
    emit = LineWriter(sys.stdout)
    peers = build_peers(config_paths, emit)
    if peers is None:
        return 2
    shutdown = Shutdown().install()
    hosted = [Hosted(peer, emit, shutdown) for peer in peers]
    try:
        return run_hosted(hosted)
    except KeyboardInterrupt:
        return shutdown.exit_code
    finally:
        shutdown.begin()
        for one in hosted:
            one.close()


if __name__ == "__main__":
    code = run_peers(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # peer threads stopped by a signal may still run: no interpreter teardown under them
