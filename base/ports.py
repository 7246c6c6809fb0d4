"""Free TCP ports for a run's servers, drawn below the kernel's ephemeral range."""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
from collections.abc import Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
LISTEN_FLOOR = 20000
IANA_EPHEMERAL_START = 49152
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct TCP ports free on `host`, held open together so they differ.

    Drawn from `listening_ports()` first, outside the kernel's ephemeral range: a run's own
    outgoing connections take ephemeral ports, and at 1000 peers one of them took a port handed
    to a peer before that peer bound it. Ports the kernel picks fill in if that range runs short.
    """
    ranged = listening_ports()
    order = random.SystemRandom().sample(ranged, len(ranged))  # not an experiment's choice
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for port in itertools.chain(order, itertools.repeat(0)):
            if len(ports) == count:
                break
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                if port == 0:
                    raise
                continue  # taken: the next candidate
            ports.append(stack.enter_context(s).getsockname()[1])
        return ports


def listening_ports() -> Sequence[int]:
    """Ports for the run's servers: from 20000 (below it, Ray's workers bind 10002-19999 and
    Flower its 909x) to the start of the ephemeral range (Linux's, else the IANA one)."""
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = IANA_EPHEMERAL_START
    return range(LISTEN_FLOOR, max(LISTEN_FLOOR, low))
