"""Diagnostics: per-tensor variance and the consensus distance, against direct numpy computations
on known models, and in real runs of both modes (gossip peers over real gRPC read back by an
independent GetModel; the Flower ServerApp in-process with a user rule that saves what it receives).
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from rich.console import Console

from fedgossip.client.gossip.peer import OBSERVER_WAIT_S
from fedgossip.client.gossip.transport.identity import (
    LINK_KEY,
    NODE_KEY,
    LinkKeys,
    observer_metadata,
    read_observer_secret,
)
from fedgossip.client.gossip.transport.wire import encode
from fedgossip.config import load_config
from fedgossip.launcher.experiments.run import run_experiment
from fedgossip.launcher.gossip.consensus import ConsensusObserver, ObserverAccess
from fedgossip.launcher.gossip.launch import write_node_configs
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.proto import gossip_pb2
from fedgossip.reports.records import read_consensus
from tests.support import (
    cli_argv,
    direct_consensus,
    loopback_ports,
    metrics,
    start_peer,
    stub_for,
    wait_exit,
    wait_for,
)

# --- gossip: real peers, the real observer, and reads of our own -------------------------------

NODES, ROUNDS = 4, 3
DEAD = 99
GOSSIP = [
    f"nodes.count={NODES}",
    f"experiment.rounds={ROUNDS}",
    "topology.kind=ring",
    "task.model=linear",
    "experiment.round_timeout=30",
]
LAST_ONLY = f"experiment.consensus_every={ROUNDS}"  # the observer reads nothing before the last round


def peer_records(log: Path) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line["record"] for line in lines if line.get("type") == "record"]


def get_model(stub, metadata) -> tuple[int, list[np.ndarray]]:
    """A peer's current model (GetModel) with the given credentials: its round and tensors."""
    chunks = list(stub.GetModel(gossip_pb2.GetModelRequest(), timeout=20, metadata=metadata))
    header, data = chunks[0].header, b"".join(c.data for c in chunks)
    arrays, offset = [], 0
    for spec in header.tensors:
        count = int(np.prod(spec.shape))
        arrays.append(np.frombuffer(data, spec.dtype, count, offset).reshape(tuple(spec.shape)))
        offset += arrays[-1].nbytes
    return header.round, arrays


def _observer_cannot_push(stub, secrets: Path, node: int) -> None:
    """The observer's secret reads models but pushes nothing, as itself or posing as a node; a
    wrong secret reads nothing."""
    secret = read_observer_secret(secrets)
    chunks = encode((node + 1) % NODES, ROUNDS, 1, ["w"], [np.zeros(1, np.float32)])
    for metadata in (observer_metadata(secret), ((NODE_KEY, str((node + 1) % NODES)), (LINK_KEY, secret))):
        push = lambda metadata=metadata: stub.PushModel(iter(chunks), timeout=10, metadata=metadata)  # noqa: E731
        assert status_of(push) == grpc.StatusCode.UNAUTHENTICATED
    wrong = observer_metadata("0" * 64)
    read = lambda: list(stub.GetModel(gossip_pb2.GetModelRequest(), timeout=10, metadata=wrong))  # noqa: E731
    assert status_of(read) == grpc.StatusCode.UNAUTHENTICATED


def status_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


@pytest.mark.timeout(150)
def test_gossip_layer_variance_and_consensus_match_models_read_independently(tmp_path):
    """Four real peers; the launcher's observer is fed their records as the launcher would, plus a
    silent fifth. Each peer's last model is read by the test too (with a neighbour's link key,
    before the observer), and the recorded variance and the consensus of the last round are
    recomputed from those reads. Every round's records are checked in the CLI run below."""
    config = load_config(None, [*GOSSIP, LAST_ONLY])
    results = ResultsFolder(tmp_path / "run", config)
    started = time.time()
    paths = write_node_configs(config, results, started)
    access = ObserverAccess.of_nodes(paths)
    (port,) = loopback_ports(1)  # node 99 "records" every round but never answers: skipped, counted
    access = dataclasses.replace(access, addresses={**access.addresses, DEAD: f"127.0.0.1:{port}"})
    children = [start_peer(path, results.logs / f"node-{n}.log") for n, path in enumerate(paths)]
    observer = ConsensusObserver(config, access, results, started)
    secrets = results.path / "secrets"
    final: dict[int, tuple[int, list[np.ndarray]]] = {}
    seen: set[tuple[int, int]] = set()
    try:
        neighbour = {n: (n + 1) % NODES for n in range(NODES)}  # ring: n + 1 is a neighbour of n
        keys = {n: LinkKeys.load(secrets / f"node-{n}.links", n) for n in range(NODES)}

        def feed() -> bool:
            for node in range(NODES):
                for record in peer_records(results.logs / f"node-{node}.log"):
                    if (node, record["round"]) in seen:
                        continue
                    seen.add((node, record["round"]))
                    if record["round"] == ROUNDS:  # it waits for the observer: read it first
                        stub = stub_for(access.addresses[node])
                        final[node] = get_model(stub, keys[neighbour[node]].metadata(node))
                        _observer_cannot_push(stub, secrets, node)
                    observer.saw(node, record["round"])
                    if (DEAD, record["round"]) not in seen:
                        seen.add((DEAD, record["round"]))
                        observer.saw(DEAD, record["round"])
            return len(seen) == (NODES + 1) * ROUNDS

        wait_for(feed, 120, "every peer's records")
        for child in children:
            assert wait_exit(child, 30) == 0
    finally:
        for child in children:
            child.stop()
        observer.close()
        results.close()
    last = {n: peer_records(results.logs / f"node-{n}.log")[-1] for n in range(NODES)}
    names = list(last[0]["layer_variance"])
    for node, (round_, arrays) in final.items():
        assert round_ == ROUNDS
        floats = [a for a in arrays if a.dtype.kind == "f"]
        assert len(floats) == len(names)
        for name, array in zip(names, floats, strict=True):
            assert last[node]["layer_variance"][name] == pytest.approx(
                np.var(array.astype(np.float64)), rel=1e-9
            )
    entries = read_consensus(results.path, [])
    assert [e["round"] for e in entries] == [ROUNDS]
    (end,) = entries  # every peer is used (they wait for the observer); the silent one is counted
    assert end["consensus_models"] == NODES and end["nodes_moved_on"] == end["nodes_missing"] == []
    assert end["nodes_skipped"] == [DEAD]
    models = [final[n][1] for n in range(NODES)]
    assert end["consensus_distance"] == pytest.approx(direct_consensus(models), rel=1e-9)
    assert end["consensus_distance"] > 0


@pytest.mark.timeout(200)
def test_a_launched_gossip_run_records_variance_and_consensus_every_round_over_mutual_tls(tmp_path):
    """The launcher's glue, through the CLI, with every credential the observer may need (CA,
    its own client certificate under mutual TLS, the token): every round measured from every
    peer, the summary and the figures."""
    out = tmp_path / "run"
    settings = [*GOSSIP, "security.tls=true", "security.mutual_tls=true", "security.token=true"]
    result = subprocess.run(
        cli_argv("run", "--out", str(out), settings=settings),
        capture_output=True,
        text=True,
        timeout=180,
        env=child_env(1),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = metrics(out)
    names = {"coef", "intercept"}
    assert all(set(r["layer_variance"]) == names for r in records), records[0]
    entries = read_consensus(out, records)
    assert [e["round"] for e in entries] == list(range(1, ROUNDS + 1))
    for entry in entries:  # every peer's model of the round, however late the observer read it
        assert entry["nodes_skipped"] == entry["nodes_missing"] == entry["nodes_moved_on"] == []
        assert entry["consensus_models"] == NODES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_consensus_distance"] == entries[-1]["consensus_distance"] > 0
    assert summary["final_consensus_round"] == ROUNDS
    assert (out / "variance.png").stat().st_size > 0 and (out / "consensus.png").stat().st_size > 0


@pytest.mark.timeout(150)
def test_a_run_whose_observer_fails_the_last_read_ends_without_waiting_for_it(tmp_path, monkeypatch):
    """The launcher in this process, its peers real processes on real gRPC; the observer's read of
    node 0's last model fails: the observer tells node 0 so, and the peer exits at once instead
    of waiting OBSERVER_WAIT_S (60 s) for a read that never comes. The round is written without
    node 0 (skipped), the run is complete."""
    failed = []
    fetch = ConsensusObserver._fetch

    def failing_last_read(observer, node, round_):
        if node == 0 and round_ == ROUNDS:
            failed.append(node)
            raise TimeoutError("injected: the read of the last model failed")
        return fetch(observer, node, round_)

    monkeypatch.setattr(ConsensusObserver, "_fetch", failing_last_read)
    config = load_config(None, [*GOSSIP, LAST_ONLY])
    summary, code = run_experiment(config, tmp_path / "run", Console(file=io.StringIO()))
    assert code == 0, summary["errors"]
    assert failed == [0]
    records = metrics(tmp_path / "run")
    assert len(records) == NODES * ROUNDS
    [entry] = read_consensus(tmp_path / "run", records)
    assert entry["round"] == ROUNDS and entry["nodes_skipped"] == [0]
    assert entry["consensus_models"] == NODES - 1
    # from the last record to the run's end: the launcher reading late and the peers' exit (seconds,
    # tens at a load of 30), not node 0's whole wait for its read
    assert summary["wall_time_s"] - max(r["time_s"] for r in records) < OBSERVER_WAIT_S
