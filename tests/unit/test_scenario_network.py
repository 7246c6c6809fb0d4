"""The scenario's network layer on real gRPC: pushes through a FaultySender to a real server on
loopback, losses counted at the receiver, delays measured on the clock."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from fedgossip.client.gossip.transport.network import FaultySender, Link, group_of
from fedgossip.client.gossip.transport.wire import encode
from fedgossip.config import ScenarioSection
from fedgossip.scenario.roles import Events
from tests.support import aio_stub_for, loopback_ports, sink_neighbour

MODEL = [np.zeros(1000, dtype=np.float32)]  # 4,000 bytes


def chunks(round_: int = 1):
    return encode(0, round_, 10, ["w"], MODEL)


def sender_to(port: int, scenario: ScenarioSection, events: Events, neighbour: int = 1, count: int = 4):
    link = Link(scenario, 0, neighbour, count, seed=7)
    stub = aio_stub_for(f"127.0.0.1:{port}")
    return FaultySender(neighbour, stub, [], lambda *_: None, link, events, notify_losses=False)


def push(sender: FaultySender, round_: int = 1) -> int:
    """Push one model and wait for its fate: the bytes delivered."""
    return sender.send(chunks(round_), time.monotonic() + 10, wait=True).result(timeout=30)


@pytest.mark.timeout(60)
def test_the_measured_loss_rate_is_within_a_binomial_bound():
    n, p = 400, 0.25
    (port,) = loopback_ports(1)
    events = Events(0, time.time())
    with sink_neighbour(port) as sink:
        sender = sender_to(port, ScenarioSection(loss=p), events)
        try:
            delivered = [push(sender, round_) for round_ in range(1, n + 1)]  # one fate a round
        finally:
            sender.close()
        received = sink.pushes
    lost = n - received
    assert sum(d > 0 for d in delivered) == received  # a lost push says 0 bytes; the others all bytes
    assert abs(lost - n * p) <= 4 * math.sqrt(n * p * (1 - p)), lost  # 4 sigma: 100 +- 35
    drops = [e for e in events.take() if e["kind"] == "drop"]
    assert len(drops) == lost and {e["details"]["reason"] for e in drops} == {"loss"}
    assert events.take_counts(n)["dropped"] == lost


def test_the_same_seed_loses_the_same_messages():
    scenario = ScenarioSection(loss=0.3, delay_ms=20, jitter_ms=10)

    def fates(node: int, neighbour: int) -> list[tuple[str | None, float]]:
        link = Link(scenario, node, neighbour, 4, seed=7)
        return [(link.lost(round_), link.delay(round_, 100)) for round_ in range(1, 51)]

    first = fates(0, 1)
    assert first == fates(0, 1)
    assert 5 <= sum(reason == "loss" for reason, _ in first) <= 25
    assert fates(1, 0) != first  # the other direction of the link draws its own faults
    assert all(10 / 1000 <= delay <= 30 / 1000 for reason, delay in first if reason is None)


@pytest.mark.timeout(60)
def test_a_configured_delay_and_bandwidth_cap_delay_each_push():
    (port,) = loopback_ports(1)
    nbytes = sum(len(c.data) for c in chunks())
    scenario = ScenarioSection(delay_ms=300, bandwidth_mbps=0.16)  # 4,000 bytes at 160 kbit/s: 0.2 s more
    expected = 0.3 + nbytes * 8 / 0.16e6
    events = Events(0, time.time())
    with sink_neighbour(port) as sink:
        baseline = sender_to(port, ScenarioSection(), events)
        slow = sender_to(port, scenario, events)
        try:
            push(baseline)  # the connection is up: what follows measures pushes, not the handshake
            push(slow)
            times = []
            for sender in (baseline, slow) * 3:
                started = time.monotonic()
                assert push(sender) == nbytes
                times.append(time.monotonic() - started)
        finally:
            baseline.close()
            slow.close()
        assert sink.pushes == 8
    fast, delayed = times[0::2], times[1::2]
    assert max(fast) < 0.2
    for seconds in delayed:
        assert expected <= seconds < expected + 0.4, (seconds, expected)
    delays = [e["details"]["delay_s"] for e in events.take() if e["kind"] == "delay"]
    assert delays == pytest.approx([expected] * 4, abs=1e-3)


@pytest.mark.timeout(60)
def test_a_partition_cuts_the_links_between_groups_for_its_rounds_only():
    assert [group_of(n, 2, 4) for n in range(4)] == [0, 0, 1, 1]
    scenario = ScenarioSection(partition_groups=2, partition_rounds=(2, 3))
    ports = loopback_ports(2)
    events = Events(0, time.time())
    with sink_neighbour(ports[0]) as same, sink_neighbour(ports[1]) as across:
        inside = sender_to(ports[0], scenario, events, neighbour=1)
        between = sender_to(ports[1], scenario, events, neighbour=3)
        try:
            delivered = {r: (push(inside, r) > 0, push(between, r) > 0) for r in range(1, 5)}
        finally:
            inside.close()
            between.close()
        assert (same.pushes, across.pushes) == (4, 2)
    assert delivered == {1: (True, True), 2: (True, False), 3: (True, False), 4: (True, True)}
    drops = [(e["round"], e["details"]) for e in events.take() if e["kind"] == "drop"]
    assert drops == [(2, {"to": 3, "reason": "partition"}), (3, {"to": 3, "reason": "partition"})]


def test_a_link_delay_adds_to_its_link_only_in_both_directions():
    scenario = ScenarioSection(delay_ms=10, link_delay_ms={"2-0": 50.0})
    assert Link(scenario, 0, 2, 4, seed=7).delay(1, 0) == 0.06
    assert Link(scenario, 2, 0, 4, seed=7).delay(1, 0) == 0.06
    assert Link(scenario, 0, 1, 4, seed=7).delay(1, 0) == 0.01
