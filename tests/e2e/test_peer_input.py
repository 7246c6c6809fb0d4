"""A real peer process against a raw gRPC client: bad pushes get their status codes, the peer keeps
serving, merges only the valid model, and finishes. TLS and token refuse what they must. A push
the peer cut (its sender, this process, fed it too slowly) is pushed again and arrives once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from fedgossip.base.certificates import make_ca, make_certificate
from fedgossip.client.gossip.transport.security import TOKEN_KEY
from fedgossip.client.gossip.transport.sender import NeighbourSender
from fedgossip.client.gossip.transport.service import CUT
from fedgossip.client.gossip.transport.wire import encode
from fedgossip.config import PeerSection
from fedgossip.proto import gossip_pb2
from tests.support import (
    TASK,
    StallsOnce,
    aio_stub_for,
    linked_peer,
    loopback_ports,
    messages,
    neighbour_model,
    pushed_again,
    records,
    sink_neighbour,
    start_peer,
    start_token_peer,
    stub_for,
    wait_exit,
    wait_for,
    wait_healthy,
    write_node_config,
)


def push(stub, chunks, metadata=()):
    return stub.PushModel(iter(chunks), timeout=20, metadata=metadata)


def status_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


@pytest.mark.timeout(90)
def test_bad_pushes_are_refused_and_the_peer_finishes(tmp_path):
    child, port, neighbour = start_token_peer(tmp_path)
    with sink_neighbour(neighbour) as node_1:  # we play node 1: receive its pushes, send ours
        _bad_pushes_then_good_ones(child, port)
    assert node_1.pushes == 2
    rounds = records(tmp_path / "node-0.log")
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["neighbours_heard"] == [1] for r in rounds)
    assert all(0 <= r["test_accuracy"] <= 1 for r in rounds)


def _bad_pushes_then_good_ones(child, port: int) -> None:
    try:
        stub = stub_for(f"127.0.0.1:{port}")
        wait_healthy(stub)
        auth = ((TOKEN_KEY, "s3cret"),)
        names, arrays, n = neighbour_model()

        garbage = [gossip_pb2.ModelChunk(data=b"\xde\xad" * 1000)]
        assert status_of(lambda: push(stub, garbage, auth)) == grpc.StatusCode.INVALID_ARGUMENT

        wrong_shape = [a.reshape(-1) if a.ndim == 2 else a for a in arrays]
        assert (
            status_of(lambda: push(stub, encode(1, 1, n, names, wrong_shape), auth))
            == grpc.StatusCode.INVALID_ARGUMENT
        )

        poisoned = [a.copy() for a in arrays]
        poisoned[0].flat[3] = np.nan
        assert (
            status_of(lambda: push(stub, encode(1, 1, n, names, poisoned), auth))
            == grpc.StatusCode.INVALID_ARGUMENT
        )

        oversize = messages(encode(1, 1, n, names, arrays))
        oversize[0].header.total_bytes = 1 << 40
        assert status_of(lambda: push(stub, oversize, auth)) == grpc.StatusCode.RESOURCE_EXHAUSTED

        huge_header = messages(encode(1, 1, n, names, arrays))
        huge_header[0].header.tensors.add(name="x" * (5 << 20), dtype="<f4", shape=[1])
        assert status_of(lambda: push(stub, huge_header, auth)) == grpc.StatusCode.RESOURCE_EXHAUSTED

        assert (
            status_of(lambda: push(stub, encode(1, 1, n, names, arrays))) == grpc.StatusCode.UNAUTHENTICATED
        )
        wrong = ((TOKEN_KEY, "s3cre7"),)
        assert (
            status_of(lambda: push(stub, encode(1, 1, n, names, arrays), wrong))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert (
            status_of(lambda: push(stub, encode(7, 1, n, names, arrays), auth))
            == grpc.StatusCode.PERMISSION_DENIED
        )

        assert wait_healthy(stub, timeout=5).node == 0
        for round_ in (1, 2):
            assert push(stub, encode(1, round_, n, names, arrays), auth).accepted
        assert wait_exit(child, 60) == 0
    finally:
        child.stop()


STUCK_PUSHER = """
import sys
import grpc
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc
address, key, token, path = sys.argv[1:]
data, chunks = open(path, "rb").read(), []
while data:
    size = int.from_bytes(data[:4], "big")
    chunks.append(gossip_pb2.ModelChunk.FromString(data[4 : 4 + size]))
    data = data[4 + size :]

def stuck_after_last_chunk():
    yield from chunks
    print("sent", flush=True)
    sys.stdin.readline()  # the stream stays open: the test freezes this process now

stub = gossip_pb2_grpc.GossipStub(grpc.insecure_channel(address))
stub.PushModel(stuck_after_last_chunk(), timeout=2.0, metadata=((key, token),))
"""


@pytest.mark.timeout(90)
def test_a_push_cut_at_its_deadline_is_refused_though_every_chunk_arrived(tmp_path):
    """A sender frozen (SIGSTOP) after its last chunk, before it closed its stream: grpc.aio reads
    the deadline as the end of the stream, but the push failed, so it is no model (a frozen sender
    must not count as heard from: its neighbour would wait for it again)."""
    child, port, neighbour = start_token_peer(tmp_path)
    names, arrays, n = neighbour_model()
    framed = (c.raw for c in encode(1, 1, n, names, arrays))
    (tmp_path / "chunks").write_bytes(b"".join(len(b).to_bytes(4, "big") + b for b in framed))
    argv = [
        sys.executable,
        "-c",
        STUCK_PUSHER,
        f"127.0.0.1:{port}",
        TOKEN_KEY,
        "s3cret",
        str(tmp_path / "chunks"),
    ]
    pusher = None
    try:
        with sink_neighbour(neighbour):
            stub = stub_for(f"127.0.0.1:{port}")
            wait_healthy(stub)
            pusher = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert pusher.stdout.readline().strip() == "sent"
            os.kill(pusher.pid, signal.SIGSTOP)
            log = tmp_path / "node-0.log"
            wait_for(lambda: CUT in log.read_text(), 30, "the refusal of the cut push")
            auth = ((TOKEN_KEY, "s3cret"),)
            for round_ in (1, 2):
                assert push(stub, encode(1, round_, n, names, arrays), auth).accepted
            assert wait_exit(child, 60) == 0
    finally:
        if pusher is not None:
            pusher.kill()
            pusher.wait(10)
        child.stop()
    first = records(tmp_path / "node-0.log")[0]
    assert first["refused"] == 1 and first["neighbours_heard"] == [1]


@pytest.mark.timeout(90)
def test_tls_and_token_refuse_plaintext_and_anonymous_clients(tmp_path):
    port, neighbour = loopback_ports(2)
    ca = make_ca(tmp_path / "pki")
    cert = make_certificate(ca, tmp_path / "pki", "node-0", ["127.0.0.1"])
    node_1 = make_certificate(ca, tmp_path / "pki", "node-1", ["127.0.0.1"])
    node_2 = make_certificate(ca, tmp_path / "pki", "node-2", ["127.0.0.1"])
    stranger_ca = make_ca(tmp_path / "other")
    stranger = make_certificate(stranger_ca, tmp_path / "other", "stranger", ["127.0.0.1"])
    token = tmp_path / "token"
    token.write_text("s3cret")
    peer = PeerSection(
        id=0,
        listen=f"127.0.0.1:{port}",
        neighbours={"1": f"127.0.0.1:{neighbour}"},
        ca_file=str(ca.cert),
        cert_file=str(cert.cert),
        key_file=str(cert.key),
        client_ca_file=str(ca.cert),
        token_file=str(token),
    )
    child = start_peer(write_node_config(tmp_path / "node-0.toml", peer, *TASK), tmp_path / "node-0.log")
    address = f"127.0.0.1:{port}"
    read = lambda p: p.read_bytes()  # noqa: E731
    trusted = grpc.ssl_channel_credentials(read(ca.cert), read(node_1.key), read(node_1.cert))
    serving = grpc.ssl_server_credentials([(read(node_1.key), read(node_1.cert))], read(ca.cert), True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(sink_neighbour(neighbour, serving))
        stack.callback(child.stop)
        stub = stub_for(address, trusted)
        wait_healthy(stub)
        names, arrays, n = neighbour_model()
        chunks = encode(1, 1, n, names, arrays)

        plaintext = stub_for(address)
        assert (
            status_of(lambda: plaintext.Health(gossip_pb2.HealthRequest(), timeout=3))
            == grpc.StatusCode.UNAVAILABLE
        )
        no_client_cert = stub_for(address, grpc.ssl_channel_credentials(read(ca.cert)))
        assert (
            status_of(lambda: no_client_cert.Health(gossip_pb2.HealthRequest(), timeout=3))
            == grpc.StatusCode.UNAVAILABLE
        )
        foreign = grpc.ssl_channel_credentials(read(ca.cert), read(stranger.key), read(stranger.cert))
        assert (
            status_of(lambda: stub_for(address, foreign).Health(gossip_pb2.HealthRequest(), timeout=3))
            == grpc.StatusCode.UNAVAILABLE
        )
        assert status_of(lambda: push(stub, chunks)) == grpc.StatusCode.UNAUTHENTICATED

        auth = ((TOKEN_KEY, "s3cret"),)
        impostor = grpc.ssl_channel_credentials(read(ca.cert), read(node_2.key), read(node_2.cert))
        assert (
            status_of(lambda: push(stub_for(address, impostor), chunks, auth))
            == grpc.StatusCode.PERMISSION_DENIED
        )  # node 2's certificate cannot push as node 1
        assert push(stub, chunks, auth).accepted
        assert push(stub, encode(1, 2, n, names, arrays), auth).accepted
        assert wait_exit(child, 60) == 0


@pytest.mark.timeout(90)
def test_the_norm_bound_refuses_implausible_models_from_an_identified_neighbour(tmp_path):
    peer, port, neighbour, credentials = linked_peer(tmp_path)
    node = write_node_config(tmp_path / "node-0.toml", peer, *TASK, "gossip.max_norm_ratio=10")
    child = start_peer(node, tmp_path / "node-0.log")
    with contextlib.ExitStack() as stack:
        stack.enter_context(sink_neighbour(neighbour))
        stack.callback(child.stop)
        stub = stub_for(f"127.0.0.1:{port}")
        wait_healthy(stub)
        as_1 = credentials
        names, arrays, n = neighbour_model()
        scaled = push(stub, encode(1, 1, n, names, [100 * a for a in arrays]), as_1)
        assert not scaled.accepted and "exceeds 10 x own norm" in scaled.detail
        for round_ in (1, 2):
            assert push(stub, encode(1, round_, n, names, arrays), as_1).accepted
        assert wait_exit(child, 60) == 0
    rounds = records(tmp_path / "node-0.log")
    assert [r["neighbours_heard"] for r in rounds] == [[1], [1]]
    assert rounds[0]["refused"] == 1


@pytest.mark.timeout(90)
def test_a_push_the_receiver_cut_is_pushed_again_and_arrives_once(tmp_path, caplog):
    """Peer 0 (a real process) cuts streams silent for 1 s; our push of round 1 stalls 2.5 s after
    its header, and meanwhile we move on to round 2: the receiver cuts the push, we push the round 1
    model again all the same (the receiver is still in round 1, waiting for it), then the round 2
    one, and its rounds use them (bytes counted once on both sides)."""
    caplog.set_level(logging.INFO, logger="fedgossip.client.gossip.transport.sender")
    child, port, neighbour = start_token_peer(tmp_path, [*TASK, "gossip.idle_timeout=1"])
    names, arrays, n = neighbour_model()
    # streamed in chunks of 1 KB: a model in one chunk goes in one unary call, which cannot stall
    first, second = (encode(1, round_, n, names, arrays, chunk_bytes=1024) for round_ in (1, 2))
    assert len(first) > 1
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
    rounds = records(tmp_path / "node-0.log")
    assert [(r["round"], r["neighbours_heard"], r["merged"], r["bytes_received"]) for r in rounds] == [
        (1, [1], 1, nbytes),
        (2, [1], 1, nbytes),
    ]
    assert rounds[0]["refused"] == 1
