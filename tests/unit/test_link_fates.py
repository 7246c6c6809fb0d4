"""A link's fate in a round (lost or not, its jitter) is drawn from the seed, the link's ends and the
round alone: not from how many messages the link sent before, in which order, or when. Checked on
`Link` against numpy's seeded generator directly, and on real gRPC through a `FaultySender` whose
lost pushes in sync rounds reach the neighbour as Withhold notices."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from fedgossip.client.gossip.transport.network import FaultySender, Link
from fedgossip.client.gossip.transport.wire import encode
from fedgossip.config import ScenarioSection
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc
from fedgossip.scenario.roles import Events
from tests.support import aio_stub_for, loopback_ports

SEED, NETWORK_STREAM = 7, 10  # base/seeding.py's id of the "network" stream
LOSSY = ScenarioSection(loss=0.4, delay_ms=5.0, jitter_ms=4.0)
ROUNDS = range(1, 41)


def reference(node: int, neighbour: int, round_: int) -> tuple[bool, float]:
    """Whether the push of `round_` from `node` to `neighbour` is lost, and its delay (s): the first
    two numbers of numpy's generator for (seed, network, node, neighbour, round), by hand."""
    rng = np.random.default_rng(
        np.random.SeedSequence(SEED, spawn_key=(NETWORK_STREAM, node, neighbour, round_))
    )
    lost = rng.random() < LOSSY.loss
    return bool(lost), (LOSSY.delay_ms + rng.uniform(-LOSSY.jitter_ms, LOSSY.jitter_ms)) / 1000


def test_a_links_fate_in_a_round_does_not_depend_on_what_it_sent_before():
    in_order = Link(LOSSY, 0, 1, 4, SEED)
    first = {r: (in_order.lost(r) is not None, in_order.delay(r, 0)) for r in ROUNDS}
    busy = Link(LOSSY, 0, 1, 4, SEED)
    for _ in range(25):  # many messages of other rounds first, some rounds again, the rest backwards
        busy.lost(3), busy.delay(3, 0), busy.lost(90)
    later = {r: (busy.lost(r) is not None, busy.delay(r, 0)) for r in reversed(ROUNDS)}
    assert later == first
    assert first == {r: pytest.approx(reference(0, 1, r)) for r in ROUNDS}
    assert 8 <= sum(lost for lost, _ in first.values()) <= 24  # 40 draws at 0.4: 16 +- 8
    assert {r: reference(1, 0, r)[0] for r in ROUNDS} != {r: lost for r, (lost, _) in first.items()}


class _Neighbour(gossip_pb2_grpc.GossipServicer):
    """A neighbour's receiving side that records the rounds of the pushes and notices it gets."""

    def __init__(self) -> None:
        self.pushed: list[int] = []
        self.noticed: list[int] = []

    def PushModel(self, request_iterator, context):
        rounds = {chunk.header.round for chunk in request_iterator if chunk.HasField("header")}
        self.pushed += sorted(rounds)
        return gossip_pb2.PushReply(accepted=True)

    def PushWhole(self, request, context):
        return self.PushModel(iter([request]), context)

    def Withhold(self, request, context):
        self.noticed.append(request.round)
        return gossip_pb2.PushReply(accepted=True)


@pytest.mark.timeout(60)
def test_a_sender_loses_the_pushes_of_the_same_rounds_however_many_it_sent_before():
    (port,) = loopback_ports(1)
    neighbour = _Neighbour()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    gossip_pb2_grpc.add_GossipServicer_to_server(neighbour, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    scenario = ScenarioSection(loss=0.4)
    events = Events(0, time.time())
    link = Link(scenario, 0, 1, 4, SEED)
    sender = FaultySender(
        1, aio_stub_for(f"127.0.0.1:{port}"), [], lambda *_: None, link, events, notify_losses=True
    )
    model = [np.zeros(8, dtype=np.float32)]

    def push(round_: int) -> int:
        chunks = encode(0, round_, 10, ["w"], model)
        return sender.send(chunks, time.monotonic() + 10, wait=True).result(timeout=30)

    try:
        for _ in range(7):  # messages before the rounds compared: the old one stream a link shifted
            push(100)
        delivered = {r: push(r) for r in ROUNDS}
    finally:
        sender.close()
        server.stop(grace=None)
    lost = {r for r in ROUNDS if reference(0, 1, r)[0]}
    assert lost and lost != set(ROUNDS)
    assert {r for r, nbytes in delivered.items() if nbytes == 0} == lost
    assert sorted(neighbour.noticed) == sorted(lost | ({100} if reference(0, 1, 100)[0] else set()))
    assert set(neighbour.pushed) - {100} == set(ROUNDS) - lost
    drops = [(e["round"], e["details"]["reason"]) for e in events.take() if e["kind"] == "drop"]
    assert sorted(r for r, _ in drops if r != 100) == sorted(lost)
