"""The senders on the process's one event loop (client/gossip/transport/: eventloop.py, sender.py), on
real gRPC:
a frozen neighbour delays only its own pushes, a newer model replaces one not sent, many senders
add no thread, a push the receiver cut (this process fed it too slowly) is pushed again and one
past its own deadline is not; a peer's server does not share a port with another server."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from fedgossip.client.gossip.transport.grpc_server import LoopServer
from fedgossip.client.gossip.transport.security import TOKEN_KEY
from fedgossip.client.gossip.transport.sender import NeighbourSender
from fedgossip.client.gossip.transport.wire import encode
from fedgossip.proto import gossip_pb2
from fedgossip.proto.gossip_pb2_grpc import GossipServicer
from tests.support import (
    TASK,
    aio_stub_for,
    loopback_ports,
    neighbour_model,
    records,
    sink_neighbour,
    start_token_peer,
    stub_for,
    wait_exit,
    wait_healthy,
)

CHUNKS = encode(0, 1, 10, ["w"], [np.zeros(1000, dtype=np.float32)])
NBYTES = sum(len(c.data) for c in CHUNKS)


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


class StallsOnce(Sequence):
    """A model's chunks whose first pass stalls `seconds` after the first chunk: a sender whose
    process is too busy to feed its stream (the stall holds this process's event loop, as a busy
    process does)."""

    def __init__(self, chunks: Sequence[gossip_pb2.ModelChunk], seconds: float) -> None:
        self._chunks = list(chunks)
        self._stall = seconds
        self.stalling = threading.Event()  # set when the stall begins

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, index):
        return self._chunks[index]

    def __iter__(self) -> Iterator[gossip_pb2.ModelChunk]:
        stall, self._stall = self._stall, 0.0
        for index, chunk in enumerate(self._chunks):
            yield chunk
            if index == 0 and stall:
                self.stalling.set()
                time.sleep(stall)


def pushed_again(caplog) -> list[str]:
    """The sender's log lines saying that the receiver cut a push and it goes again."""
    return [r.getMessage() for r in caplog.records if "pushing again" in r.getMessage()]


@pytest.mark.timeout(90)
def test_a_push_the_receiver_cut_is_pushed_again_and_arrives_once(tmp_path, caplog):
    """Peer 0 (a real process) cuts streams silent for 1 s; our push of round 1 stalls 2.5 s after
    its header, and meanwhile we move on to round 2: the receiver cuts the push, we push the round 1
    model again all the same (the receiver is still in round 1, waiting for it), then the round 2
    one, and its rounds use them (bytes counted once on both sides)."""
    caplog.set_level(logging.INFO, logger="fedgossip.client.gossip.transport.sender")
    child, port, neighbour = start_token_peer(tmp_path, [*TASK, "gossip.idle_timeout=1"])
    names, arrays, n = neighbour_model()
    first, second = (encode(1, round_, n, names, arrays) for round_ in (1, 2))
    nbytes = sum(len(c.data) for c in first)
    try:
        with sink_neighbour(neighbour):  # node 0's pushes to us
            wait_healthy(stub_for(f"127.0.0.1:{port}"))
            stub = aio_stub_for(f"127.0.0.1:{port}")
            sender = NeighbourSender(1, stub, [(TOKEN_KEY, "s3cret")], lambda *_: None)
            try:
                stalled = StallsOnce(first, 2.5)
                sent = [sender.send(stalled, time.monotonic() + 20, wait=True)]
                assert stalled.stalling.wait(10)
                sent.append(sender.send(second, time.monotonic() + 20, wait=True))
                assert [s.result(30) for s in sent] == [nbytes, nbytes]  # the cut push delivered none
            finally:
                sender.close()
            assert wait_exit(child, 60) == 0
    finally:
        child.stop()
    assert len(pushed_again(caplog)) == 1
    assert (tmp_path / "node-0.log").read_text().count("stream silent for 1s") == 1
    rounds = [r for r in records(tmp_path / "node-0.log") if r.get("type") == "round"]
    assert [(r["round"], r["neighbours_heard"], r["merged"], r["bytes_received"]) for r in rounds] == [
        (1, [1], 1, nbytes),
        (2, [1], 1, nbytes),
    ]
    assert rounds[0]["refused"] == 1


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
            assert sender.send(StallsOnce(CHUNKS, 2.5), began + 1.5, wait=True).result(30) == 0
            took = time.monotonic() - began
        finally:
            sender.close()
        assert sink.started == 2  # the stalled push was tried once
    assert 2.5 <= took < 10, took  # given up when the stall ended
    assert pushed_again(caplog) == []
    assert any("its deadline passed" in r.getMessage() for r in caplog.records)
