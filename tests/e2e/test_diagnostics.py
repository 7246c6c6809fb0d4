"""Diagnostics: per-tensor variance and the consensus distance, against direct numpy computations
on known models, and in real runs of both modes (gossip peers over real gRPC read back by an
independent GetModel; the Flower ServerApp in-process with a user rule that saves what it receives).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import textwrap
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedgossip.base import flower_protocol as p
from fedgossip.client.flower_app import app as client_app
from fedgossip.client.gossip.transport.identity import (
    LINK_KEY,
    NODE_KEY,
    LinkKeys,
    observer_metadata,
    read_observer_secret,
)
from fedgossip.client.gossip.transport.wire import encode
from fedgossip.config import dump_toml, load_config
from fedgossip.launcher.gossip.consensus import ConsensusObserver, ObserverAccess
from fedgossip.launcher.gossip.launch import write_node_configs
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.proto import gossip_pb2
from fedgossip.reports import build_summary, plot_consensus, plot_variance, read_records
from fedgossip.reports.records import read_consensus
from fedgossip.schema.lines import LineWriter
from fedgossip.schema.records import record
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid
from fedgossip.strategies.diagnostics import consensus_distance, layer_variance
from tests.support import cli_argv, loopback_ports, metrics, start_peer, stub_for, wait_exit, wait_for


def direct_consensus(models: list[list[np.ndarray]]) -> float:
    """Mean over models of the L2 distance of the flattened float tensors to their plain average."""
    flat = np.stack(
        [np.concatenate([t.ravel().astype(np.float64) for t in m if t.dtype.kind == "f"]) for m in models]
    )
    return float(np.linalg.norm(flat - flat.mean(axis=0), axis=1).mean())


# --- the functions on known arrays ------------------------------------------------------------


def test_layer_variance_is_numpys_population_variance_of_each_float_tensor():
    rng = np.random.default_rng(0)
    names = ["big", "offset", "bias", "steps", "one", "empty"]
    arrays = [
        rng.normal(0.0, 0.05, (300, 400)).astype(np.float32),  # several blocks of 64 Ki elements
        (1e4 + rng.normal(0.0, 1e-3, 5000)).astype(np.float64),  # mean huge against the spread
        rng.normal(size=7).astype(np.float16),
        np.array(12, dtype=np.int64),  # num_batches_tracked: not a float tensor
        np.array([3.5], dtype=np.float32),
        np.zeros((0, 3), dtype=np.float32),
    ]
    variance = layer_variance(names, arrays)
    assert list(variance) == ["big", "offset", "bias", "one"]
    for name, array in zip(names, arrays, strict=False):
        if name in variance:
            assert variance[name] == pytest.approx(np.var(array.astype(np.float64)), rel=1e-10, abs=1e-300)
    assert variance["one"] == 0.0
    assert layer_variance(["w"], [np.array([[1.0, 3.0], [5.0, 7.0]])]) == {"w": 5.0}  # by hand
    with pytest.raises(ValueError, match="2 names for 1 tensors"):
        layer_variance(["a", "b"], [np.ones(3)])


def test_consensus_distance_against_hand_and_numpy_computations():
    # by hand: (0, 0) and (3, 4) average to (1.5, 2): each is 2.5 away
    assert consensus_distance([[np.zeros(2)], [np.array([3.0, 4.0])]]) == pytest.approx(2.5)
    rng = np.random.default_rng(1)
    models = [
        [
            rng.normal(size=(300, 300)).astype(np.float32),
            rng.normal(size=(5,)),
            np.arange(4, dtype=np.int64) * k,  # integer tensors are left out
        ]
        for k in range(5)
    ]
    assert consensus_distance(models) == pytest.approx(direct_consensus(models), rel=1e-10)
    assert consensus_distance(models[:1]) == 0.0
    assert consensus_distance([models[0], models[0]]) == 0.0
    with pytest.raises(ValueError, match="shape"):
        consensus_distance([models[0], [models[1][0][:2], *models[1][1:]]])


def test_consensus_every_is_checked():
    with pytest.raises(ValueError, match=r"experiment\.consensus_every"):
        load_config(None, ["experiment.consensus_every=-1"])


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


# --- Flower: the ServerApp in-process, with a user rule that saves what it receives ------------

RECORDING_RULE = '''
import numpy as np


def saving(own, received, weights, *, folder):
    """The plain mean of the received models; saves them, one .npz per call, in call order."""
    import pathlib

    calls = len(list(pathlib.Path(folder).glob("*.npz")))
    np.savez(pathlib.Path(folder) / f"{calls + 1:03d}.npz", *[t for m in received for t in m])
    return [np.mean(np.stack(ts), axis=0).astype(ts[0].dtype) for ts in zip(*received)]
'''


@pytest.mark.timeout(120)
def test_flower_server_records_consensus_and_the_global_variance(tmp_path, monkeypatch):
    (tmp_path / "diag_rules.py").write_text(textwrap.dedent(RECORDING_RULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = tmp_path / "received"
    saved.mkdir()
    rounds = 3
    config = load_config(
        None,
        [
            'experiment.mode="flower"',
            'flower.engine="inprocess"',
            "flower.fraction_evaluate=0.0",
            f"nodes.count={NODES}",
            f"experiment.rounds={rounds}",
            "task.model=linear",
            "strategy.name=diag_rules:saving",
            f'strategy.params.folder="{saved}"',
        ],
    )
    grid = LocalGrid(client_app, NODES, {p.CONFIG_TOML: dump_toml(config)}, id_seed=0)
    events: list[dict] = []
    final = run_federation(grid, config, events.append)
    server = [e["record"] for e in events if e["type"] == "record" and e["record"]["node"] == "server"]
    assert [r["round"] for r in server] == list(range(rounds + 1))
    assert "consensus_distance" not in server[0]  # round 0: nothing trained yet
    calls = sorted(saved.glob("*.npz"))
    assert len(calls) == rounds
    for entry, call in zip(server[1:], calls, strict=True):
        with np.load(call) as data:
            tensors = [data[f"arr_{i}"] for i in range(len(data.files))]
        per_model = len(tensors) // NODES
        models = [tensors[i * per_model : (i + 1) * per_model] for i in range(NODES)]
        assert entry["consensus_models"] == NODES
        assert entry["consensus_distance"] == pytest.approx(direct_consensus(models), rel=1e-9)
        assert entry["consensus_distance"] > 0
    names = list(final.keys())
    for name in names:
        expected = np.var(final[name].numpy().astype(np.float64))
        assert server[-1]["layer_variance"][name] == pytest.approx(expected, rel=1e-9)


@pytest.mark.timeout(200)
def test_a_launched_gossip_run_records_variance_and_consensus_every_round_over_mutual_tls(tmp_path):
    """The launcher's glue, through the CLI, with every credential the observer may need (CA,
    its own client certificate under mutual TLS, the token): every round measured, the last from
    every peer, the summary and the figures."""
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
    for entry in entries:  # each peer: used, or it had moved on (its model kept for a later round)
        assert entry["nodes_skipped"] == entry["nodes_missing"] == []
        assert entry["consensus_models"] + len(entry["nodes_moved_on"]) == NODES
    assert entries[-1]["consensus_models"] == NODES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_consensus_distance"] == entries[-1]["consensus_distance"] > 0
    assert summary["final_consensus_round"] == ROUNDS
    assert (out / "variance.png").stat().st_size > 0 and (out / "consensus.png").stat().st_size > 0


def test_flower_consensus_reaches_the_summary_and_the_figures_from_the_server_records(tmp_path):
    """Reports read Flower's consensus from the server records (no consensus.jsonl); malformed
    values are skipped; the figures are drawn, or not written when there is nothing to draw."""
    writer = LineWriter(tmp_path / "metrics.jsonl")
    for round_, distance in ((0, None), (1, 2.0), (2, 1.25), (3, "bad")):
        server = record(
            "server",
            round_,
            time.time(),
            train_loss=None,
            test_loss=1.0,
            test_accuracy=0.5,
            num_examples=10,
            bytes_sent=0,
            bytes_received=0,
            layer_variance={"w": 0.1 / (round_ + 1)},
        )
        node = record(
            0,
            round_,
            time.time(),
            train_loss=1.0,
            test_loss=1.0,
            test_accuracy=0.5,
            num_examples=10,
            bytes_sent=0,
            bytes_received=0,
        )
        if round_:
            server.update(consensus_distance=distance, consensus_models=4)
        writer.write(server)
        writer.write(node)
    writer.close()
    records = read_records(tmp_path)
    entries = read_consensus(tmp_path, records)
    assert [(e["round"], e["consensus_distance"]) for e in entries] == [(1, 2.0), (2, 1.25)]
    summary = build_summary(tmp_path)
    assert (summary["final_consensus_distance"], summary["final_consensus_round"]) == (1.25, 2)
    assert plot_variance(records, tmp_path / "variance.png", "t") is not None
    assert plot_consensus(entries, tmp_path / "consensus.png", "t") is not None
    assert plot_consensus([], tmp_path / "none.png", "t") is None and not (tmp_path / "none.png").exists()
