"""Bytes that are no protobuf message, sent to every RPC of a real peer process with and without
credentials: each call gets a documented code (UNAUTHENTICATED before anything is decoded when
the caller has no credentials, INVALID_ARGUMENT after), the peer's log grows by a few lines
however many calls come, and the peer goes on serving its neighbour."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest

from fedgossip.client.gossip.transport.wire import encode
from tests.support import (
    linked_peer,
    neighbour_model,
    records,
    sink_neighbour,
    start_peer,
    stub_for,
    wait_exit,
    wait_healthy,
    write_node_config,
)

TASK = ["task.model=linear", "experiment.rounds=2", "experiment.round_timeout=600", "nodes.count=2"]
CALLS = 1000
GARBAGE = [b"\xff", b"\x0a\xff", b"\xff" * 11, b"garbage bytes", bytes(range(256))]
SERVICE = "/fedgossip.gossip.Gossip/"
INVALID, UNAUTHENTICATED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED
EXPECTED = {  # (rpc, with credentials) -> the one code every garbage call gets
    ("PushModel", False): UNAUTHENTICATED,
    ("PushWhole", False): UNAUTHENTICATED,
    ("GetModel", False): UNAUTHENTICATED,
    ("Withhold", False): UNAUTHENTICATED,
    ("Health", False): INVALID,  # Health needs no credentials
    ("PushModel", True): INVALID,
    ("PushWhole", True): INVALID,
    ("GetModel", True): INVALID,
    ("Withhold", True): INVALID,
    ("Health", True): INVALID,
}


def garbage_call(channel: grpc.Channel, rpc: str, raw: bytes, metadata) -> grpc.StatusCode:
    """Send `raw` as the request of `rpc` (no serializer: the bytes go as they are); its code."""
    try:
        if rpc == "PushModel":
            channel.stream_unary(SERVICE + rpc)(iter([raw]), timeout=10, metadata=metadata)
        elif rpc == "GetModel":
            list(channel.unary_stream(SERVICE + rpc)(raw, timeout=10, metadata=metadata))
        else:
            channel.unary_unary(SERVICE + rpc)(raw, timeout=10, metadata=metadata)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.mark.timeout(300)
def test_garbage_to_every_rpc_gets_documented_codes_few_log_lines_and_the_peer_serves_on(tmp_path):
    config, port, neighbour, credentials = linked_peer(tmp_path)
    log = tmp_path / "node-0.log"
    child = start_peer(write_node_config(tmp_path / "node-0.toml", config, *TASK), log)
    names, arrays, n = neighbour_model()
    try:
        with sink_neighbour(neighbour):
            stub = stub_for(f"127.0.0.1:{port}")
            wait_healthy(stub)
            before = log.stat().st_size
            codes: dict[tuple[str, bool], Counter] = {}
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                for rpc, keyed in EXPECTED:
                    metadata = credentials if keyed else ()
                    codes[rpc, keyed] = Counter(
                        garbage_call(channel, rpc, GARBAGE[i % len(GARBAGE)], metadata) for i in range(CALLS)
                    )
            grown = log.stat().st_size - before
            for round_ in (1, 2):  # the neighbour's models are still taken
                reply = stub.PushModel(
                    iter(encode(1, round_, n, names, arrays)), timeout=30, metadata=credentials
                )
                assert reply.accepted, reply.detail
            assert wait_exit(child, 120) == 0
    finally:
        child.stop()
    assert codes == {call: Counter({code: CALLS}) for call, code in EXPECTED.items()}
    text = log.read_text()
    assert grown < 10_000, f"the log grew by {grown} bytes:\n{text[-3000:]}"
    assert "Traceback" not in text and "DecodeError" not in text
    assert [(r["round"], r["neighbours_heard"], r["merged"]) for r in records(log)] == [
        (1, [1], 1),
        (2, [1], 1),
    ]
