"""The kernel layer's delays where the kernel has no netem: one process per run that holds each
delayed link's packets in a netfilter queue and lets each go (the ACCEPT verdict) after its delay.

`python -m fedgossip.launcher.network.queue_delay` runs inside one of the run's hosts (so removing
the hosts, by the launcher or its watchdog, kills it like any other process of the run). It reads
the links (JSON, `QueuedLink`s and the seed) on stdin; for each receiving host it enters the
host's network namespace, adds the nftables rules that queue each delayed source's packets at the
input hook (queue number = the sender's index) and binds those queues to a netlink socket of that
namespace; back in its own namespace it prints "ready" and serves every socket from one loop:
a queued packet's release time is its arrival plus delay_ms (+ a uniform draw in +- jitter_ms from
the experiment seed's "network" stream of the link, as netem: the packets of a link may reorder),
kept in one heap. It stops on SIGTERM; its sockets close with it, the kernel drops what the queues
held (TCP sends it again) and lets every later packet through undelayed (the rules' bypass flag:
with the links stopped instead, TCP connections of the hosts would outlive the processes, closing
into a silent link, and hold the namespaces for seconds after their removal). The launcher
watches the process so that this never passes silently (launcher/network/delays.py).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import json
import resource
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from fedgossip.base.seeding import stream
from fedgossip.launcher.network.nfqueue import bind_queues, open_socket, packets, queue_sources, verdict
from fedgossip.launcher.supervision.namespaces import enter

READY = "ready"
STOPPED = "queue_delay stopped:"


@dataclass(frozen=True)
class QueuedLink:
    """One delayed direction of a link: the receiver's namespace, the sender's address."""

    sender: int
    receiver: int
    namespace: str
    source: str
    delay_ms: float
    jitter_ms: float = 0.0


def spec(links: Sequence[QueuedLink], seed: int, home: str) -> str:
    """What the delay process, started in the namespace `home`, reads on its stdin."""
    return json.dumps({"seed": seed, "home": home, "links": [asdict(link) for link in links]})


def open_queues(links: Sequence[QueuedLink], home: str) -> dict[str, socket.socket]:
    """Per receiving namespace, its queue rules and the socket bound to its queues (made inside it);
    this process then returns to its own namespace, `home`."""
    by_namespace: dict[str, list[QueuedLink]] = {}
    for link in links:
        by_namespace.setdefault(link.namespace, []).append(link)
    sockets = {}
    try:
        for namespace, own in sorted(by_namespace.items()):
            enter(namespace)
            sockets[namespace] = sock = open_socket()
            bind_queues(sock, [link.sender for link in own])  # before the rules: no packet unserved
            queue_sources([(link.source, link.sender) for link in own])
    finally:
        enter(home)
    return sockets


class Delays:
    """Release times of queued packets, drawn per link (the seed's "network" stream of the link)."""

    def __init__(self, links: Sequence[QueuedLink], seed: int) -> None:
        self.links = {(link.namespace, link.sender): link for link in links}
        self.draws = {
            key: stream(seed, "network", link.sender, link.receiver) for key, link in self.links.items()
        }

    def release(self, namespace: str, queue: int, arrival: float) -> float:
        """When a packet of `queue` in `namespace`, queued at `arrival` (monotonic s), may go on."""
        link = self.links[(namespace, queue)]
        delay = link.delay_ms
        if link.jitter_ms > 0:
            delay += self.draws[(namespace, queue)].uniform(-link.jitter_ms, link.jitter_ms)
        return arrival + max(delay, 0.0) / 1000.0


def serve(sockets: dict[str, socket.socket], delays: Delays, released: list[int]) -> None:
    """Hold every queued packet until its release time, then accept it (counted in `released[0]`);
    forever."""
    selector = selectors.DefaultSelector()
    for namespace, sock in sockets.items():
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, namespace)
    held: list[tuple[float, int, socket.socket, int, int]] = []
    order = itertools.count()
    while True:
        timeout = max(held[0][0] - time.monotonic(), 0.0) if held else None
        for key, _ in selector.select(timeout):
            sock = key.fileobj
            while True:
                try:
                    data = sock.recv(1 << 16)
                except BlockingIOError:
                    break
                except OSError as err:  # ENOBUFS: the kernel dropped messages; their packets stay held
                    if err.errno != errno.ENOBUFS:
                        raise
                    print(
                        f"queue_delay: {key.data}: {err} (packets held until the run ends)", file=sys.stderr
                    )
                    continue
                arrival = time.monotonic()
                for queue, packet_id in packets(data):
                    release = delays.release(key.data, queue, arrival)
                    heapq.heappush(held, (release, next(order), sock, queue, packet_id))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, sock, queue, packet_id = heapq.heappop(held)
            sock.send(verdict(queue, packet_id))
            released[0] += 1


def main() -> int:
    """Read the plan on stdin, open the queues, say READY, serve until SIGTERM; log the cost."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    plan = json.load(sys.stdin)
    links = [QueuedLink(**link) for link in plan["links"]]
    sockets, delays = open_queues(links, plan["home"]), Delays(links, plan["seed"])
    released = [0]
    try:
        print(READY, flush=True)
        serve(sockets, delays, released)
    finally:  # what it cost, in its log (benchmarks/bench_kernel_delay.py reads it)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        print(f"{STOPPED} packets={released[0]} cpu_s={cpu:.3f}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
