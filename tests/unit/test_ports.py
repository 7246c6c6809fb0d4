"""free_ports: the ports handed to a run's servers are free, distinct, and outside the kernel's
ephemeral range, where the run's own outgoing connections could take them first."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fedgossip.base import ports as port_module
from fedgossip.base.ports import LOOPBACK, free_ports, listening_ports

pytestmark = pytest.mark.timeout(30)


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = free_ports(300)
    assert len(set(ports)) == 300
    assert all(port in listening_ports() for port in ports)
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(ports) < ephemeral_low
    for port in ports[:20]:
        with socket.socket() as server:
            server.bind((LOOPBACK, port))
            server.listen()


def test_a_taken_port_is_skipped_and_the_kernel_fills_in_when_the_range_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as held, socket.socket() as released:
        held.bind((LOOPBACK, 0))
        held.listen()
        released.bind((LOOPBACK, 0))
        taken, free = held.getsockname()[1], released.getsockname()[1]
        released.close()
        monkeypatch.setattr(port_module, "listening_ports", lambda: [taken, free])
        ports = free_ports(3)
    assert taken not in ports
    assert len(set(ports)) == 3
    assert free in ports  # the range's free port is used before any the kernel picks


def test_an_unreadable_ephemeral_range_falls_back_to_the_iana_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(port_module, "EPHEMERAL_RANGE", tmp_path / "missing")
    assert listening_ports() == range(port_module.LISTEN_FLOOR, port_module.IANA_EPHEMERAL_START)
