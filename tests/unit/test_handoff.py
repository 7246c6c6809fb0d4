"""The handoff of pushes between peers of one process (client/gossip/handoff.py), on real peers in
this process: a push reaches a co-located neighbour with no gRPC path between them (their
configured addresses lead nowhere), through the receiver's checks, the scenario's faults and the
attacker's forgery; a neighbour that stopped serving gets the push once it serves again."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fedgossip.client.gossip.handoff import HandoffTransport, LocalPushStub, LocalServices, NotServing
from fedgossip.client.gossip.host import name_os_thread, transport_of
from fedgossip.client.gossip.peer import GossipPeer
from fedgossip.client.gossip.transport import eventloop as loop
from fedgossip.client.gossip.transport.wire import encode
from fedgossip.client.gossip.transports import GrpcTransport
from fedgossip.config import PeerSection, load_config
from fedgossip.proto import gossip_pb2

NOWHERE = "127.0.0.1:1"  # the neighbours' configured address: nothing listens there


def pair(transport, *overrides: str) -> list[GossipPeer]:
    """Peers 0 and 1 of the linear task, neighbours of each other, on `transport`; each one's
    address for the other leads nowhere, so only a handoff reaches it."""
    base = load_config(None, ["task.model=linear", "nodes.count=2", "experiment.rounds=3", *overrides])
    peers = []
    for node in (0, 1):
        peer = PeerSection(id=node, listen="127.0.0.1:0", neighbours={str(1 - node): NOWHERE})
        peers.append(GossipPeer(base.replace(peer=peer), transport))
    return peers


def push(sender: GossipPeer, round_: int, seconds: float, *, model: bool = True):
    """`sender`'s push (or notice) of `round_` to its neighbour, with `seconds` until its deadline."""
    arrays = sender.learner.get_weights()
    deadline = time.monotonic() + seconds
    sends = sender.links.push(
        round_, arrays, 10, linked={1 - sender.node}, alive={1 - sender.node}, deadline=deadline,
        recipients={1 - sender.node} if model else set(),
    )  # fmt: skip
    return sends[1 - sender.node]


def nbytes(peer: GossipPeer, round_: int) -> int:
    return sum(len(c.data) for c in encode(peer.node, round_, 10, peer.names, peer.learner.get_weights()))


@pytest.fixture
def closing():
    peers: list[GossipPeer] = []
    yield peers
    for peer in peers:
        peer.close()


@pytest.mark.timeout(60)
def test_a_push_reaches_a_co_located_neighbour_without_grpc_and_its_reply_is_noted(closing):
    closing += pair(HandoffTransport({0, 1}))
    sender, receiver = closing
    assert push(sender, 1, 5.0).result(10) == nbytes(sender, 1)
    (message,) = receiver.inbox.close(1)
    assert message.sender == 0 and message.round == 1
    for got, sent in zip(message.arrays, sender.learner.get_weights(), strict=True):
        np.testing.assert_array_equal(got, sent)
    assert sender.inbox.progress() == {1: 1}  # the reply said which round the receiver is in
    assert push(receiver, 2, 5.0, model=False).result(10) == 0  # a notice: no model this round
    assert receiver.inbox.progress() == {0: 1} and sender.inbox.notices(2) == {1}


@pytest.mark.timeout(60)
def test_over_grpc_the_same_push_finds_nobody(closing):
    closing += pair(GrpcTransport())
    assert push(closing[0], 1, 1.0).result(10) == 0  # the contrast: only the handoff reached it


@pytest.mark.timeout(60)
def test_the_receivers_checks_apply_to_a_handoff(closing):
    closing += pair(HandoffTransport({0, 1}), "gossip.max_norm_ratio=2")
    sender, receiver = closing
    receiver.service.publish(receiver.learner.get_weights(), 10, 0)
    as_other = LocalPushStub(sender.transport.services, 1, caller=5)  # node 5 pushing as node 0
    reply = loop.call(as_other.PushModel(encode(0, 1, 10, sender.names, sender.learner.get_weights())), 5)
    assert not reply.accepted and reply.detail == "node 5 pushed as node 0"
    stub = LocalPushStub(sender.transport.services, 1, caller=0)
    huge = [100 * a + 1 for a in sender.learner.get_weights()]  # far beyond the norm bound
    reply = loop.call(stub.PushModel(encode(0, 1, 10, sender.names, huge)), 5)
    assert not reply.accepted and "norm" in reply.detail
    assert receiver.inbox.close(1) == [] and receiver.inbox.take_refused() == 2


@pytest.mark.timeout(60)
def test_a_handoff_goes_through_the_scenarios_loss_and_the_attackers_forgery(closing):
    attack = ["scenario.attack=sign-flip", "scenario.attacker_fraction=1.0", "scenario.attack_scale=2"]
    closing += pair(HandoffTransport({0, 1}), *attack)
    sender, receiver = closing
    assert push(sender, 1, 5.0).result(10) > 0
    (message,) = receiver.inbox.close(1)
    for got, own in zip(message.arrays, sender.learner.get_weights(), strict=True):
        np.testing.assert_array_equal(got, -2 * own)  # the forged model, not the trained one
    closing += pair(HandoffTransport({0, 1}), "scenario.loss=1.0")
    sender, receiver = closing[2:]
    assert push(sender, 1, 5.0).result(10) == 0
    assert receiver.inbox.close(1) == []
    assert sender.events.take_counts(1)["dropped"] == 1


@pytest.mark.timeout(60)
def test_a_neighbour_that_stopped_serving_gets_the_push_once_it_serves_again(closing):
    closing += pair(HandoffTransport({0, 1}))
    sender, receiver = closing
    receiver.server.stop(grace=0.0)
    with pytest.raises(NotServing) as refused:
        loop.call(LocalPushStub(sender.transport.services, 1, 0).Withhold(gossip_pb2.WithholdNotice()), 5)
    assert refused.value.code().name == "UNAVAILABLE"
    assert push(sender, 1, 0.3).result(10) == 0  # its deadline passed while the neighbour was down
    waiting = push(sender, 1, 10.0)
    time.sleep(0.3)
    assert not waiting.done()  # tried again every RETRY_S
    receiver.serve_again()
    assert waiting.result(10) == nbytes(sender, 1)


def test_the_host_hands_over_when_it_hosts_more_than_one_peer_and_local_handoff_is_on():
    def configs(count: int, *overrides: str):
        base = load_config(None, ["nodes.count=4", *overrides])
        return [base.replace(peer=PeerSection(id=n, listen="127.0.0.1:0")) for n in range(count)]

    assert transport_of(configs(1)) is None
    assert transport_of(configs(3, "nodes.local_handoff=false")) is None
    transport = transport_of(configs(3))
    assert isinstance(transport, HandoffTransport) and transport.hosted == {0, 1, 2}
    with pytest.raises(NotServing):
        LocalServices().get(5)


def test_a_hosted_peers_thread_carries_its_name_in_the_os():
    seen: list[str] = []

    def named() -> None:
        name_os_thread("node-12")
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as comm:
            seen.append(comm.read().strip())

    thread = threading.Thread(target=named)
    thread.start()
    thread.join(10)
    assert seen == ["node-12"]  # what benchmarks/bench_floor.py counts as a peer's round loop
