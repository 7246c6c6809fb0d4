"""Emulated hosts for real (root, iproute2): hosts reach each other and the default namespace over
their own addresses, nothing they were (namespace, veth, bridge, process) is left after `close()`
or after a SIGKILL of the process that made them (the watchdog removes it), and the kernel's
network layer loses and rate-limits exactly the direction of a link it shapes; its delay process
(kernels without netem) delays exactly that direction, by its delay, against TCP round trips."""

from __future__ import annotations

import ipaddress
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from fedgossip.launcher.network.delays import DelayProcess
from fedgossip.launcher.network.queue_delay import QueuedLink
from fedgossip.launcher.network.shaping import LinkShape, shape_links
from fedgossip.launcher.supervision.namespaces import EmulatedHosts
from tests.support import wait_for
from tests.support.namespaces import needs_namespaces, network_leftovers

pytestmark = [pytest.mark.e2e, needs_namespaces]

SERVER = textwrap.dedent(
    """
    import socket
    server = socket.create_server(("0.0.0.0", 5000))
    print("listening", flush=True)
    for _ in range(2):
        connection, (address, _port) = server.accept()
        connection.sendall(address.encode())
        connection.close()
    """
)
CLIENT = (
    "import socket, sys; print(socket.create_connection((sys.argv[1], 5000), timeout=5).recv(64).decode())"
)


@pytest.mark.timeout(60)
def test_hosts_talk_over_their_own_addresses_and_leave_nothing():
    with EmulatedHosts(3) as hosts:
        subnet = ipaddress.IPv4Network(f"{hosts.gateway}/16", strict=False)
        assert len(set(hosts.addresses)) == 3
        assert all(ipaddress.IPv4Address(a) in subnet for a in hosts.addresses)
        assert (
            f"{subnet} dev {hosts.bridge}"
            in subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
        )
        server = hosts.run(2, [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "listening"
        from_host_0 = subprocess.run(
            hosts.command(0, [sys.executable, "-c", CLIENT, hosts.addresses[2]]),
            capture_output=True,
            text=True,
        )
        from_default = subprocess.run(
            [sys.executable, "-c", CLIENT, hosts.addresses[2]], capture_output=True, text=True
        )
        # the server sees each caller's own address: host 0's, then the gateway's (the default namespace)
        assert from_host_0.stdout.strip() == hosts.addresses[0], from_host_0.stderr
        assert from_default.stdout.strip() == hosts.gateway, from_default.stderr
        assert server.wait(10) == 0
        no_route = subprocess.run(
            hosts.command(1, [sys.executable, "-c", CLIENT, "192.0.2.1"]), capture_output=True, text=True
        )
        assert no_route.returncode != 0  # a host has its subnet only: nothing leaves the bridge
        sleeper = hosts.run(1, ["sleep", "60"])
        prefix = hosts.prefix
        assert len(network_leftovers(prefix)) == 3 + 3 + 1  # namespaces, veths, bridge
    assert network_leftovers(prefix) == []
    # what still ran in a host is killed: by the hosts' watchdog stopping this process's children
    # (SIGTERM first) or by the removal of the namespaces (SIGKILL), whichever comes first
    assert sleeper.wait(5) in (-signal.SIGTERM, -signal.SIGKILL)


@pytest.mark.timeout(60)
def test_sigkill_of_the_maker_leaves_nothing(tmp_path):
    maker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from fedgossip.launcher.supervision.namespaces import EmulatedHosts\n"
            "hosts = EmulatedHosts(2)\n"
            "sleeper = hosts.run(0, ['sleep', '60'])\n"
            "print(hosts.prefix, sleeper.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        prefix, pid = maker.stdout.readline().split()
        sleeper = psutil.Process(int(pid))
        assert len(network_leftovers(prefix)) == 2 + 2 + 1
        maker.send_signal(signal.SIGKILL)
        maker.wait(5)
        wait_for(lambda: network_leftovers(prefix) == [], 5, f"the watchdog to remove {prefix}'s network")
        wait_for(
            lambda: not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE, 5, "the sleeper"
        )
    finally:
        maker.kill()
        maker.wait(5)


COUNT_DATAGRAMS = textwrap.dedent(
    """
    import socket
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", 6000))
    server.settimeout(1.0)
    print("listening", flush=True)
    received = 0
    try:
        while True:
            server.recv(64)
            received += 1
    except TimeoutError:
        print(received)
    """
)
SEND_DATAGRAMS = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    s.sendto(b'x' * 32, (sys.argv[1], 6000)); time.sleep(0.0002)\n"
)
TIMED_UPLOAD = (
    "import socket, sys, time\n"
    "started = time.perf_counter()\n"
    "with socket.create_connection((sys.argv[1], 5000), timeout=30) as s:\n"
    "    s.sendall(b'x' * int(sys.argv[2])); s.shutdown(socket.SHUT_WR); s.recv(1)\n"
    "print(time.perf_counter() - started)\n"
)
SINK = (
    "import socket\n"
    "connection, _ = socket.create_server(('0.0.0.0', 5000)).accept()\n"
    "while connection.recv(65536): pass\n"
    "connection.close()\n"
)


def received(hosts: EmulatedHosts, sender: int, receiver: int, count: int) -> int:
    """How many of `count` UDP datagrams from host `sender` reach host `receiver`."""
    counter = hosts.run(receiver, [sys.executable, "-c", COUNT_DATAGRAMS], stdout=subprocess.PIPE, text=True)
    assert counter.stdout.readline().strip() == "listening"
    subprocess.run(
        hosts.command(sender, [sys.executable, "-c", SEND_DATAGRAMS, hosts.addresses[receiver], str(count)]),
        check=True,
    )
    return int(counter.communicate(timeout=30)[0])


def upload_s(hosts: EmulatedHosts, sender: int, receiver: int, nbytes: int) -> float:
    """Seconds to send `nbytes` over TCP from host `sender` to host `receiver`."""
    sink = hosts.run(receiver, [sys.executable, "-c", SINK])
    try:
        argv = [sys.executable, "-c", TIMED_UPLOAD, hosts.addresses[receiver], str(nbytes)]
        for _ in range(50):  # until the sink listens
            done = subprocess.run(hosts.command(sender, argv), capture_output=True, text=True)
            if done.returncode == 0:
                return float(done.stdout)
            time.sleep(0.1)
        raise AssertionError(done.stderr)
    finally:
        sink.kill()
        sink.wait(5)


@pytest.mark.timeout(60)
def test_the_kernel_loses_and_limits_one_direction_of_a_link_as_shaped():
    n, p = 1000, 0.3
    with EmulatedHosts(3) as hosts:
        shape_links(hosts, {(0, 1): LinkShape(loss=p), (0, 2): LinkShape(rate_mbps=2.0)})
        lost = n - received(hosts, 0, 1, n)
        assert abs(lost - n * p) <= 4 * math.sqrt(n * p * (1 - p)), lost  # 4 sigma: 300 +- 58
        assert received(hosts, 1, 0, n) == n  # the other direction is not shaped
        assert received(hosts, 0, 2, n) == n  # nor another link from the same host
        limited = upload_s(hosts, 0, 2, 250_000)  # 2 Mbit/s: 1 s
        assert limited >= 0.9, limited
        assert upload_s(hosts, 2, 0, 250_000) < limited / 3  # the way back is free


ECHO = (
    "import socket\n"
    "server = socket.create_server(('0.0.0.0', 5000))\n"
    "print('listening', flush=True)\n"
    "connection, _ = server.accept()\n"
    "connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
    "while data := connection.recv(64): connection.sendall(data)\n"
)
ROUND_TRIPS = (
    "import socket, statistics, sys, time\n"
    "s = socket.create_connection((sys.argv[1], 5000), timeout=10)\n"
    "s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
    "times = []\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    started = time.perf_counter(); s.sendall(b'x'); s.recv(1)\n"
    "    times.append(time.perf_counter() - started)\n"
    "print(min(times) * 1000, statistics.median(times) * 1000)\n"
)


def round_trips_ms(hosts: EmulatedHosts, client: int, server: int, count: int = 20) -> tuple[float, float]:
    """(min, median) milliseconds of `count` one-byte TCP round trips from host `client` to an echo
    in host `server`."""
    echo = hosts.run(server, [sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout.readline().strip() == "listening"
        argv = [sys.executable, "-c", ROUND_TRIPS, hosts.addresses[server], str(count)]
        done = subprocess.run(hosts.command(client, argv), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        fastest, median = map(float, done.stdout.split())
        return fastest, median
    finally:
        echo.kill()
        echo.wait(5)


@pytest.mark.timeout(60)
def test_the_queue_delay_adds_one_way_delay_to_measured_round_trips(tmp_path):
    """The netfilter-queue path (kernels without netem) delays one direction of a link by its
    delay_ms: a TCP echo's round trip grows by 50 ms (one way), not 100, on that link only; and
    once the delay process is killed the link is undelayed again (the rules' bypass)."""
    with EmulatedHosts(3) as hosts:
        _, before = round_trips_ms(hosts, 0, 1)
        link = QueuedLink(0, 1, hosts.namespaces[1], hosts.addresses[0], delay_ms=50.0)
        delays = DelayProcess(hosts, [link], 0, tmp_path / "delays.log")
        try:
            fastest, median = round_trips_ms(hosts, 0, 1)
            assert fastest >= 50.0 and median < before + 50.0 + 5.0, (before, fastest, median)
            _, other = round_trips_ms(hosts, 0, 2)  # another link of the same sender: not delayed
            assert other < 10.0, other
            os.kill(delays.pid, signal.SIGKILL)
            delays.watcher.join(5)  # it saw the death (and stopped what ran in the hosts)
            _, after = round_trips_ms(hosts, 0, 1)
            assert after < 10.0, after
        finally:
            delays.close()
