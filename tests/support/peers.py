"""Peers started by hand from a node config, the raw gRPC stubs that talk to them, and the
neighbours a test plays: a sink that accepts every push, the model a neighbour would push, and a
push whose sender stalls once (with the sender's log lines saying it pushed again)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from fedgossip.base.ports import free_ports
from fedgossip.client.gossip.transport.identity import LinkKeys, write_link_keys
from fedgossip.client.gossip.transport.sender import open_channels
from fedgossip.client.gossip.transport.wire import WireChunk, push_stub
from fedgossip.config import PeerSection, dump_toml, load_config
from fedgossip.launcher.supervision.processes import Child, child_env, python_module
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc
from fedgossip.tasks import build_learner

TASK = ["task.model=linear", "experiment.rounds=2", "experiment.round_timeout=20", "nodes.count=2"]
"""The small task of a hand-started peer and of the neighbour a test plays for it."""


def write_node_config(path: Path, peer: PeerSection, *overrides: str) -> Path:
    """A node config: the built-in quickstart with `overrides` and the given [peer] section."""
    config = load_config(None, list(overrides)).replace(peer=peer)
    path.write_text(dump_toml(config))
    return path


def start_peer(config: Path, log: Path) -> Child:
    """Start one peer process from a node config (stop it with .stop())."""
    return Child(
        f"peer-{config.stem}",
        python_module("fedgossip.client.gossip.peer", str(config)),
        log_path=log,
        env=child_env(1),
    )


def wait_healthy(stub: gossip_pb2_grpc.GossipStub, timeout: float = 60) -> gossip_pb2.HealthReply:
    """Wait (with a deadline) until the peer behind `stub` answers Health."""
    return stub.Health(gossip_pb2.HealthRequest(), timeout=timeout, wait_for_ready=True)


def loopback_ports(count: int) -> list[int]:
    return free_ports(count, "127.0.0.1")


def wait_exit(child: Child, timeout: float) -> int:
    """Wait for a child to exit by itself; fail the test (after stopping it) if it does not."""
    try:
        return child.process.wait(timeout)
    except subprocess.TimeoutExpired:
        child.stop()
        raise AssertionError(
            f"{child.name} did not finish within {timeout}s:\n{child.log_tail(20)}"
        ) from None


class _Sink(gossip_pb2_grpc.GossipServicer):
    """A neighbour that accepts any push and counts them (those started, those read to the end)."""

    def __init__(self) -> None:
        self.started = 0
        self.pushes = 0

    def PushModel(self, request_iterator, context):
        self.started += 1
        for _ in request_iterator:
            pass
        self.pushes += 1
        return gossip_pb2.PushReply(accepted=True)

    def PushWhole(self, request, context):
        return self.PushModel(iter([request]), context)


@contextlib.contextmanager
def sink_neighbour(port: int, credentials: grpc.ServerCredentials | None = None):
    """An in-process gRPC server on 127.0.0.1:`port` standing in for a neighbour's receiving side."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    sink = _Sink()
    gossip_pb2_grpc.add_GossipServicer_to_server(sink, server)
    address = f"127.0.0.1:{port}"
    server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    try:
        yield sink
    finally:
        server.stop(grace=None)


def stub_for(address: str, credentials: grpc.ChannelCredentials | None = None) -> gossip_pb2_grpc.GossipStub:
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    return push_stub(channel)


def messages(chunks: Sequence[WireChunk]) -> list[gossip_pb2.ModelChunk]:
    """An encoded model's chunks as protobuf messages, for a test to tamper with before pushing
    (a WireChunk is sent as its bytes: a change to its header would not travel)."""
    return [gossip_pb2.ModelChunk.FromString(chunk.raw) for chunk in chunks]


def aio_stub_for(address: str) -> gossip_pb2_grpc.GossipStub:
    """A stub on a grpc.aio channel of the process's event loop (what a peer's senders use)."""
    (channel,) = open_channels({0: address}, None, []).values()
    return push_stub(channel)


def neighbour_model() -> tuple[list[str], list[np.ndarray], int]:
    """The model node 1 would push: same task, node 1's partition."""
    config = load_config(None, TASK)
    learner = build_learner(config.task, 1, 2, config.experiment.seed)
    return list(learner.names), learner.get_weights(), learner.num_examples


def records(log) -> list[dict]:
    """The metrics records of a peer's events in its log (its stdout)."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [event["record"] for event in events if event.get("type") == "record"]


def linked_peer(folder: Path) -> tuple[PeerSection, int, int, list[tuple[str, str]]]:
    """Peer 0 on a loopback port, linked by link keys to neighbour 1 (the test plays it): its [peer]
    section, its port, the neighbour's port, and the metadata neighbour 1 pushes to it with."""
    port, neighbour = loopback_ports(2)
    keys = write_link_keys([(0, 1)], [0, 1], folder / "secrets")
    peer = PeerSection(
        id=0,
        listen=f"127.0.0.1:{port}",
        neighbours={"1": f"127.0.0.1:{neighbour}"},
        link_keys_file=str(keys[0]),
    )
    return peer, port, neighbour, LinkKeys.load(keys[1], 1).metadata(0)


def start_token_peer(tmp_path, task=TASK):
    """Peer 0 with token "s3cret" and neighbour 1 (the test plays it); returns it and both ports."""
    port, neighbour = loopback_ports(2)
    token = tmp_path / "token"
    token.write_text("s3cret")
    peer = PeerSection(
        id=0, listen=f"127.0.0.1:{port}", neighbours={"1": f"127.0.0.1:{neighbour}"}, token_file=str(token)
    )
    child = start_peer(write_node_config(tmp_path / "node-0.toml", peer, *task), tmp_path / "node-0.log")
    return child, port, neighbour


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
