"""The senders on the process's one event loop (client/gossip/transport/: eventloop.py, sender.py), on
real gRPC in this process: a frozen neighbour delays only its own pushes, a newer model replaces
one not sent, many senders add no thread, a push past its own deadline is not pushed again, a
round's queued models go with one wakeup of the loop; a model in one chunk goes in one unary call
(PushWhole), taken as its stream would be; a peer's server does not share a port with another
server. (A push a real peer cut is pushed again:
tests/e2e/test_peer_input.py.)"""

from __future__ import annotations

import logging
import socket
import threading
import time

import numpy as np
import pytest

from fedgossip.client.gossip.inbox import Inbox
from fedgossip.client.gossip.transport import eventloop
from fedgossip.client.gossip.transport.grpc_server import LoopServer
from fedgossip.client.gossip.transport.sender import NeighbourSender, wake
from fedgossip.client.gossip.transport.service import Authenticator, GossipService
from fedgossip.client.gossip.transport.wire import CHANNEL_OPTIONS, encode
from fedgossip.proto.gossip_pb2_grpc import GossipServicer
from fedgossip.schema.tensors import specs_of
from tests.support import (
    StallsOnce,
    aio_stub_for,
    loopback_ports,
    pushed_again,
    sink_neighbour,
)

CHUNKS = encode(0, 1, 10, ["w"], [np.zeros(1000, dtype=np.float32)])  # one chunk: PushWhole
NBYTES = sum(len(c.data) for c in CHUNKS)
STREAMED = encode(0, 1, 10, ["w"], [np.zeros(1000, dtype=np.float32)], chunk_bytes=1024)  # PushModel


def sender_to(port: int, node: int = 1) -> NeighbourSender:
    return NeighbourSender(node, aio_stub_for(f"127.0.0.1:{port}"), [], lambda *_: None)


def frozen_neighbour() -> tuple[socket.socket, int]:
    """A port that takes connections (the kernel's backlog) and never answers: a SIGSTOPped peer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, listener.getsockname()[1]


@pytest.mark.timeout(60)
def test_a_frozen_neighbour_delays_only_its_own_pushes():
    (port,) = loopback_ports(1)
    listener, frozen_port = frozen_neighbour()
    with sink_neighbour(port) as sink:
        live, stuck = sender_to(port, 1), sender_to(frozen_port, 2)
        try:
            assert live.send(CHUNKS, time.monotonic() + 10, wait=True).result(30) == NBYTES  # connected
            started = time.monotonic()
            hanging = stuck.send(CHUNKS, started + 3.0, wait=True)
            times = []
            for _ in range(10):
                began = time.monotonic()
                assert live.send(CHUNKS, began + 10, wait=True).result(30) == NBYTES
                times.append(time.monotonic() - began)
            assert not hanging.done()  # still waiting for the frozen neighbour...
            assert hanging.result(30) == 0  # ...until its deadline, then given up
            waited = time.monotonic() - started
        finally:
            live.close()
            stuck.close()
            listener.close()
        assert sink.pushes == 11
    assert max(times) < 1.0, times  # the live neighbour's pushes went on meanwhile
    assert 3.0 <= waited < 6.0, waited


@pytest.mark.timeout(60)
def test_a_newer_model_replaces_one_not_sent_and_close_drops_the_waiting_one():
    listener, frozen_port = frozen_neighbour()
    sender = sender_to(frozen_port)
    try:
        deadline = time.monotonic() + 30
        in_flight = sender.send(CHUNKS, deadline, wait=True)
        time.sleep(0.2)  # the first push is in flight (to a neighbour that never answers)
        replaced = sender.send(CHUNKS, deadline, wait=True)
        newest = sender.send(CHUNKS, deadline, wait=True)
        assert replaced.result(5) == 0  # replaced at once, before it was sent
        assert not newest.done() and not in_flight.done()
    finally:
        sender.close()
        listener.close()
    assert newest.result(5) == 0  # dropped by close, never sent


def own_threads() -> list[str]:
    """The names of this process's Python threads, the sink server's workers apart."""
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith("ThreadPoolExecutor"))


@pytest.mark.timeout(60)
def test_senders_share_the_process_loop_and_add_no_threads():
    (port,) = loopback_ports(1)
    with sink_neighbour(port) as sink:
        first = sender_to(port)  # the loop (and gRPC's own threads) exist from here on
        threads = own_threads()
        assert "grpc-aio" in threads
        senders = [sender_to(port, node) for node in range(2, 52)]
        try:
            sent = [s.send(CHUNKS, time.monotonic() + 20, wait=True) for s in senders]
            assert [f.result(30) for f in sent] == [NBYTES] * 50
            assert own_threads() == threads
        finally:
            for sender in [first, *senders]:
                sender.close()
        assert sink.pushes == 50


@pytest.mark.timeout(60)
def test_a_peer_server_never_shares_a_port_another_server_listens_on():
    (port,) = loopback_ports(1)
    # another process's gRPC server (it binds with SO_REUSEPORT, gRPC's default)
    with sink_neighbour(port), pytest.raises(ValueError, match="cannot listen"):
        LoopServer(GossipServicer(), f"127.0.0.1:{port}", None, [])


@pytest.mark.timeout(60)
def test_a_push_past_its_own_deadline_is_not_pushed_again(caplog):
    """Our push stalls past its own deadline (the receiver waits longer than that): it ends like a
    receiver's cut (DEADLINE_EXCEEDED, or CANCELLED by grpc.aio when the stalled write fails
    first: the usual outcome on an idle machine), yet is given up, after one attempt."""
    caplog.set_level(logging.INFO, logger="fedgossip.client.gossip.transport.sender")
    (port,) = loopback_ports(1)
    with sink_neighbour(port) as sink:
        sender = sender_to(port)
        try:
            assert sender.send(CHUNKS, time.monotonic() + 10, wait=True).result(30) == NBYTES  # connected
            began = time.monotonic()
            assert sender.send(StallsOnce(STREAMED, 2.5), began + 1.5, wait=True).result(30) == 0
            took = time.monotonic() - began
        finally:
            sender.close()
        assert sink.started == 2  # the stalled push was tried once
    assert 2.5 <= took < 10, took  # given up when the stall ended
    assert pushed_again(caplog) == []
    assert any("its deadline passed" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(60)
def test_queued_models_go_when_woken_with_one_call_onto_the_loop(monkeypatch):
    (port,) = loopback_ports(1)
    with sink_neighbour(port) as sink:
        senders = [sender_to(port, node) for node in (1, 2, 3)]
        try:
            calls = []
            call_soon = eventloop.call_soon
            monkeypatch.setattr(eventloop, "call_soon", lambda *a: (calls.append(a), call_soon(*a)))
            deadline = time.monotonic() + 10
            queued = [s.queue(CHUNKS, deadline, wait=True) for s in senders]
            time.sleep(0.2)
            assert not any(f.done() for f in queued) and sink.pushes == 0  # nothing goes unwoken
            wake(senders)
            assert [f.result(30) for f in queued] == [NBYTES] * 3
            assert len(calls) == 1  # one wakeup of the loop for the three senders
        finally:
            for s in senders:
                s.close()
        assert sink.pushes == 3


@pytest.mark.timeout(60)
def test_a_model_in_one_chunk_goes_in_one_unary_call_and_is_taken_as_its_stream_would_be():
    """Neighbour 1's model is one chunk (PushWhole), neighbour 2's the same model in 1 KB chunks
    (PushModel's stream): the receiving service takes both into its inbox equal to what was sent,
    and answers a push of a round it closed alike."""
    names, model = ["w", "b"], [np.arange(1000, dtype=np.float32).reshape(100, 10), np.ones(10, np.float32)]
    inbox = Inbox()
    specs = specs_of(names, model)
    service = GossipService(
        0,
        specs,
        inbox,
        neighbours=[1, 2],
        rounds=5,
        max_bytes=1 << 20,
        auth=Authenticator(),
        max_pushes=8,
        idle_timeout=10.0,
    )
    calls = []
    for method in ("PushModel", "PushWhole"):  # count the calls each handler gets
        handler = getattr(service, method)

        async def counted(request, context, handler=handler, method=method):
            calls.append(method)
            return await handler(request, context)

        setattr(service, method, counted)
    server = LoopServer(service, "127.0.0.1:0", None, CHANNEL_OPTIONS)
    senders = [sender_to(server.port, node) for node in (1, 2)]
    try:
        for round_ in (1, 2):
            pushes = [
                encode(1, round_, 10, names, model),
                encode(2, round_, 10, names, model, chunk_bytes=1024),
            ]
            assert [len(chunks) for chunks in pushes] == [1, 4]
            sent = [
                s.send(chunks, time.monotonic() + 10, wait=True)
                for s, chunks in zip(senders, pushes, strict=True)
            ]
            assert [f.result(30) for f in sent] == [sum(len(c.data) for c in chunks) for chunks in pushes]
            assert inbox.wait(round_, {1, 2}, time.monotonic() + 10) == set()
            taken = inbox.close(round_)
            assert [(m.sender, m.round, m.num_examples) for m in taken] == [(1, round_, 10), (2, round_, 10)]
            for message in taken:
                assert all(np.array_equal(got, want) for got, want in zip(message.arrays, model, strict=True))
        assert sorted(calls) == ["PushModel", "PushModel", "PushWhole", "PushWhole"]
        stub = senders[0]._stub  # a push of closed round 1, both ways: the same answer
        late = encode(1, 1, 10, names, model)

        async def answers():
            return await stub.PushWhole(late[0], timeout=10), await stub.PushModel(iter(late), timeout=10)

        whole, streamed = eventloop.call(answers(), 15)
        assert (whole.accepted, whole.detail, whole.round) == (False, "round 1 is closed", 3)
        assert (streamed.accepted, streamed.detail, streamed.round) == (False, "round 1 is closed", 3)
    finally:
        for sender in senders:
            sender.close()
        server.stop(0.5)
