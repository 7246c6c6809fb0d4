"""Compressed gossip (`gossip.codec`) between real peer processes: a CHOCO-gossip run of packed
peers (in-process handoff inside a process, gRPC across) records what the virtual-time engine
records, bytes of the compressed pushes included; a peer refuses a push of a codec it was not
configured for with INVALID_ARGUMENT over real gRPC, and takes its own codec's."""

from __future__ import annotations

import grpc
import pytest

from fedgossip.client.gossip.compression import PushCompression
from fedgossip.client.gossip.transport.wire import encode
from fedgossip.config import load_config
from fedgossip.schema.codecs import codec
from fedgossip.schema.tensors import specs_of
from fedgossip.tasks import build_learner
from tests.support import (
    linked_peer,
    metrics,
    neighbour_model,
    records,
    run_cli,
    set_args,
    sink_neighbour,
    start_peer,
    stub_for,
    wait_exit,
    wait_healthy,
    write_node_config,
)

TIMING = {"time_s", "rejoin_s", "train_s", "evaluate_s", "delayed_s"}
RING = [  # two processes of two peers on a ring: one link inside each process, two across
    "nodes.count=4",
    "nodes.per_process=2",
    "topology.kind=ring",
    "task.model=linear",
    "experiment.rounds=4",
    "strategy.name=average",
    "gossip.codec=choco",
    "gossip.codec_ratio=0.2",
    "gossip.codec_gamma=0.5",
]


def untimed(out) -> list[dict]:
    """A completed run's records without their timing fields, in (node, round) order."""
    stripped = [{k: v for k, v in r.items() if k not in TIMING} for r in metrics(out)]
    return sorted(stripped, key=lambda r: (r["node"], r["round"]))


@pytest.mark.timeout(300)
def test_choco_between_packed_peer_processes_records_what_the_virtual_engine_records(tmp_path):
    for name, extra in (("real", []), ("virtual", ["launcher.engine=simulation"])):
        done = run_cli("run", "--out", str(tmp_path / name), *set_args([*RING, *extra]), timeout=200)
        assert done.returncode in (0, 3), done.stdout[-2000:] + done.stderr[-2000:]  # 3: target missed
    real, virtual = untimed(tmp_path / "real"), untimed(tmp_path / "virtual")
    assert len(real) == 16 and real == virtual
    config = load_config(None, RING)
    learner = build_learner(config.task, 0, 4, config.experiment.seed)
    push = sum(codec("choco", 0.2).nbytes(s) for s in specs_of(list(learner.names), learner.get_weights()))
    assert push < sum(a.nbytes for a in learner.get_weights()) / 2
    assert {(r["bytes_sent"], r["bytes_received"], r["merged"]) for r in real} == {(2 * push, 2 * push, 2)}


@pytest.mark.timeout(120)
def test_a_peer_refuses_a_codec_it_was_not_configured_for_with_invalid_argument(tmp_path):
    peer, port, neighbour, credentials = linked_peer(tmp_path)
    task = ["task.model=linear", "experiment.rounds=2", "experiment.round_timeout=60", "nodes.count=2"]
    log = tmp_path / "node-0.log"
    child = start_peer(write_node_config(tmp_path / "node-0.toml", peer, *task, "gossip.codec=int8"), log)
    names, arrays, n = neighbour_model()
    specs = specs_of(names, arrays)
    try:
        with sink_neighbour(neighbour):
            stub = stub_for(f"127.0.0.1:{port}")
            wait_healthy(stub)
            others = {
                "none": encode(1, 1, n, names, arrays),
                "fp16": PushCompression(codec("fp16"), specs, 0.0).chunks(1, 1, n, arrays),
                "choco": PushCompression(codec("choco"), specs, 0.1).chunks(1, 1, n, arrays),
            }
            for name, chunks in others.items():
                with pytest.raises(grpc.RpcError) as refused:
                    stub.PushModel(iter(chunks), timeout=30, metadata=credentials)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
                assert f"codec '{name}': this peer takes 'int8'" in refused.value.details()
            int8 = PushCompression(codec("int8"), specs, 0.0)
            for round_ in (1, 2):
                chunks = int8.chunks(1, round_, n, arrays)
                assert stub.PushModel(iter(chunks), timeout=30, metadata=credentials).accepted
            assert wait_exit(child, 60) == 0
    finally:
        child.stop()
    size = sum(codec("int8").nbytes(s) for s in specs)
    assert [(r["round"], r["merged"], r["bytes_received"]) for r in records(log)] == [
        (1, 1, size),
        (2, 1, size),
    ]
