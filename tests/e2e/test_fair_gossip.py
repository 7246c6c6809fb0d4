"""Fair incentives in gossip mode: the mechanism drawing among a peer's neighbours only, the fair
merge and contributions against hand-computed values, the "no model this round" notice (inbox and
a real peer process), and a multi-process fair gossip run end to end."""

from __future__ import annotations

import json
import time

import grpc
import numpy as np
import pytest

from fedgossip.client.gossip.transport.security import TOKEN_KEY
from fedgossip.client.gossip.transport.wire import encode
from fedgossip.config import load_config
from fedgossip.proto import gossip_pb2
from fedgossip.tasks import node_dataset
from tests.support import (
    metrics,
    neighbour_model,
    records,
    run_cli,
    sink_neighbour,
    start_token_peer,
    stub_for,
    wait_exit,
    wait_healthy,
)


@pytest.mark.timeout(90)
def test_a_peer_sent_notices_does_not_wait_and_refuses_bad_ones(tmp_path):
    timeout = 30.0
    task = [
        "task.model=linear",
        "experiment.rounds=2",
        f"experiment.round_timeout={timeout}",
        "nodes.count=2",
    ]
    child, port, neighbour = start_token_peer(tmp_path, task)
    try:
        with sink_neighbour(neighbour):
            stub = stub_for(f"127.0.0.1:{port}")
            wait_healthy(stub)
            auth = ((TOKEN_KEY, "s3cret"),)

            def status(sender, round_, metadata=auth):
                with pytest.raises(grpc.RpcError) as err:
                    stub.Withhold(gossip_pb2.WithholdNotice(sender=sender, round=round_), metadata=metadata)
                return err.value.code()

            assert status(1, 1, ()) == grpc.StatusCode.UNAUTHENTICATED
            assert status(7, 1) == grpc.StatusCode.PERMISSION_DENIED  # not a neighbour
            assert status(1, 0) == status(1, 3) == grpc.StatusCode.INVALID_ARGUMENT  # outside the run
            started = time.monotonic()
            assert stub.Withhold(gossip_pb2.WithholdNotice(sender=1, round=1), metadata=auth).accepted
            names, arrays, n = neighbour_model()
            assert stub.PushModel(iter(encode(1, 2, n, names, arrays)), timeout=20, metadata=auth).accepted
            assert wait_exit(child, 60) == 0
            assert time.monotonic() - started < timeout / 2  # round 1 did not wait for a model
    finally:
        child.stop()
    rounds = records(tmp_path / "node-0.log")
    assert [(r["round"], r["neighbours_heard"], r["merged"]) for r in rounds] == [(1, [], 0), (2, [1], 1)]


@pytest.mark.timeout(120)
def test_a_fair_gossip_run_sends_to_k_selected_neighbours_and_nobody_waits(tmp_path):
    timeout, rounds, peers, explore = 20.0, 6, 5, 2
    settings = [
        "experiment.name=fair-gossip-test",
        f"experiment.rounds={rounds}",
        f"experiment.round_timeout={timeout}",
        f"nodes.count={peers}",
        "topology.kind=complete",
        "task.init=shared",
        "task.stream_chunks=4",
        "task.label_noise=0.5",
        "strategy.name=fair",
        "strategy.params.stopping=fixed",
        f"strategy.params.explore_rounds={explore}",
        "strategy.params.ratio=0.5",  # k = floor(0.5 x 4 neighbours) = 2
    ]
    started = time.monotonic()
    result = run_cli("run", "--out", str(tmp_path / "run"), *[a for s in settings for a in ("--set", s)])
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    rows = metrics(tmp_path / "run")
    assert len(rows) == peers * rounds
    by = {(r["node"], r["round"]): r for r in rows}
    config = load_config(tmp_path / "run" / "config.toml")
    model_bytes = by[0, 1]["bytes_sent"] // (peers - 1)
    for r in rows:
        node, round_ = r["node"], r["round"]
        others = sorted(set(range(peers)) - {node})
        assert {"phase", "selected", "staleness", "contribution", "psi", "explore_p_value"} <= r.keys()
        assert set(r["neighbour_psi"]) == {str(n) for n in others}
        chunk = node_dataset(config.task, node, peers, config.experiment.seed, stream_round=round_)
        assert r["num_examples"] == len(chunk.y_train)  # the peer streams its own chunk of the round
        senders = [n for n in others if node in by[n, round_]["sent_to"]]
        assert r["neighbours_heard"] == senders and r["selected"] == bool(senders)
        assert r["bytes_sent"] == len(r["sent_to"]) * model_bytes
        if round_ <= explore:
            assert r["phase"] == "explore" and r["sent_to"] == others and r["staleness"] == 0
        else:
            assert r["phase"] == "exploit" and len(r["sent_to"]) == 2 and set(r["sent_to"]) <= set(others)
            assert sum(r["neighbour_probability"].values()) == pytest.approx(1.0)
    # every round ends when each neighbour's model or notice is in: never near a round timeout
    ends = [max(by[n, t]["time_s"] for n in range(peers)) for t in range(1, rounds + 1)]
    assert max(np.diff(ends)) < timeout / 4, ends
    assert wall < 60
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "complete"
    fair = summary["fair"]
    assert fair["explore_rounds"] == explore and fair["explore_rounds_per_peer"] == [explore, explore]
    assert set(fair["nodes"]) == {str(n) for n in range(peers)}
    reputation = np.mean([by[n, rounds]["neighbour_psi"]["0"] for n in range(1, peers)])
    assert fair["nodes"]["0"]["psi"] == pytest.approx(reputation, abs=1e-4)
    assert (tmp_path / "run" / "fair.png").stat().st_size > 10_000
