"""A property-based fuzz of the wire against a real peer process: random headers and chunk streams,
with and without valid credentials, get only the documented status codes, and the peer keeps serving.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedgossip.client.gossip.transport.wire import encode
from fedgossip.config import load_config
from fedgossip.proto import gossip_pb2
from fedgossip.tasks import build_learner
from tests.support import (
    linked_peer,
    sink_neighbour,
    start_peer,
    stub_for,
    wait_healthy,
    write_node_config,
)

TASK = ["task.model=linear", "experiment.rounds=1000000", "nodes.count=2", "gossip.idle_timeout=2"]
DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
DTYPES = ["<f4", "<f8", "<f2", "<i4", "<i8", ">f4", "|u1", "object", ""]
INT64 = st.integers(-(2**63), 2**63 - 1)


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    """A real peer (node 0) whose neighbour 1 is a sink in this process; yields what a pusher needs."""
    tmp = tmp_path_factory.mktemp("fuzz")
    config, port, neighbour, credentials = linked_peer(tmp)
    log = tmp / "node-0.log"
    child = start_peer(write_node_config(tmp / "node-0.toml", config, *TASK), log)
    with sink_neighbour(neighbour):
        try:
            stub = stub_for(f"127.0.0.1:{port}")
            wait_healthy(stub)
            learner = build_learner(load_config(None, TASK).task, 1, 2, 0)
            yield stub, credentials, learner, child, log
        finally:
            child.stop()
    assert "Traceback" not in log.read_text()


def tensors(learner) -> st.SearchStrategy:
    """Tensor specs: the right ones, or names, dtypes and shapes a little or very wrong."""
    right = [
        gossip_pb2.TensorSpec(name=n, dtype="<f4", shape=s)
        for n, s in zip(learner.names, learner.shapes, strict=True)
    ]
    wrong = st.builds(
        gossip_pb2.TensorSpec,
        name=st.text(max_size=20),
        dtype=st.sampled_from(DTYPES),
        shape=st.lists(st.integers(-5, 2**40), max_size=4),
    )
    return st.one_of(
        st.just(right), st.lists(wrong, max_size=4), st.lists(st.sampled_from(right), max_size=3)
    )


@st.composite
def pushes(draw, learner):
    """A random chunk stream: maybe a header (sender, round, count, specs, size), then data chunks."""
    specs = draw(tensors(learner))
    declared = min(sum(4 * int(np.prod(s.shape, dtype=object)) for s in specs if s.shape), 2**63 - 1)
    header = gossip_pb2.ModelHeader(
        sender=draw(st.one_of(st.just(1), INT64)),
        round=draw(st.one_of(st.integers(0, 5), INT64)),
        num_examples=draw(st.one_of(st.integers(1, 500), INT64)),
        tensors=specs,
        total_bytes=draw(st.one_of(st.just(max(declared, 0)), INT64)),
    )
    chunks = []
    if draw(st.booleans()):
        chunks.append(gossip_pb2.ModelChunk(header=header))
    for data in draw(st.lists(st.binary(max_size=2048), max_size=4)):
        repeat = draw(st.booleans()) and draw(st.booleans())
        chunks.append(
            gossip_pb2.ModelChunk(header=header, data=data) if repeat else gossip_pb2.ModelChunk(data=data)
        )
    return chunks


@pytest.mark.timeout(300)
def test_random_pushes_get_documented_codes_and_the_peer_keeps_serving(peer):
    stub, metadata, learner, child, _ = peer

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(chunks=pushes(learner), authenticated=st.booleans())
    def push(chunks, authenticated):
        try:
            reply = stub.PushModel(iter(chunks), timeout=10, metadata=metadata if authenticated else ())
        except grpc.RpcError as err:
            assert err.code() in DOCUMENTED, (err.code(), err.details())
            return
        assert authenticated and isinstance(reply.accepted, bool)

    push()
    assert child.poll() is None
    assert stub.Health(gossip_pb2.HealthRequest(), timeout=5).node == 0
    names, arrays, n = list(learner.names), learner.get_weights(), learner.num_examples
    round_ = stub.Health(gossip_pb2.HealthRequest(), timeout=5).round + 1
    assert stub.PushModel(iter(encode(1, round_, n, names, arrays)), timeout=10, metadata=metadata).round >= 1
