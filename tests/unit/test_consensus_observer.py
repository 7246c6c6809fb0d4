"""The launcher's consensus observer (launcher/gossip/consensus.py): a fetch still queued when its
peer's process exited fails at once, counted as not answering, instead of waiting out its timeout
(a backlog of those held the end of a loaded run for minutes); an observer rounds behind the peers
still reads every peer's model of every measured round (the peers keep them until it has); an
observer whose read of a peer's last model fails tells the peer, which need not wait for it."""

from __future__ import annotations

import json
import socket
import time
from functools import partial

import grpc
import numpy as np
import pytest

from fedgossip.base.ports import free_ports
from fedgossip.client.gossip.peer import GossipPeer
from fedgossip.client.gossip.transport.identity import (
    observer_metadata,
    read_observer_secret,
    write_link_keys,
)
from fedgossip.client.gossip.transport.service import DONE_KEY, ROUND_KEY
from fedgossip.config import PeerSection, load_config
from fedgossip.launcher.gossip.consensus import (
    MAX_PENDING_ROUNDS,
    ConsensusObserver,
    ObserverAccess,
    _Round,
)
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.proto import gossip_pb2
from fedgossip.strategies.diagnostics import consensus_distance
from tests.support import stub_for


@pytest.mark.timeout(60)
def test_a_fetch_of_a_peer_whose_process_exited_is_not_made(tmp_path):
    config = load_config(None, ["experiment.rounds=3", "experiment.round_timeout=30"])
    results = ResultsFolder(tmp_path / "run", config)
    frozen = socket.socket()  # takes connections, never answers: a call would wait its whole timeout
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(16)
    access = ObserverAccess({0: f"127.0.0.1:{frozen.getsockname()[1]}"}, (), None, 2**20)
    observer = ConsensusObserver(config, access, results, time.time())
    try:
        started = time.monotonic()
        observer.gone(0)
        for round_ in (1, 2, 3):
            observer.saw(0, round_)
    finally:
        observer.close()
        frozen.close()
        results.close()
    assert time.monotonic() - started < 5.0  # not 3 fetches of 10 s
    lines = [json.loads(line) for line in (results.path / "consensus.jsonl").read_text().splitlines()]
    # each round is written without it: skipped (its fetch failed) or missing (written first)
    assert [line["round"] for line in lines] == [1, 2, 3]
    assert all(line["consensus_models"] == 0 for line in lines)
    assert all(line["nodes_skipped"] + line["nodes_missing"] == [0] for line in lines)


def _hand_distance(models: list[list[np.ndarray]]) -> float:
    """Mean L2 distance of the models (floating tensors flattened, concatenated) to their average."""
    flat = np.array([np.concatenate([np.ravel(a) for a in model]) for model in models], dtype=np.float64)
    return float(np.linalg.norm(flat - flat.mean(axis=0), axis=1).mean())


def _observed_run(tmp_path, count: int, rounds: int, *settings: str):
    """A linear run of `count` peers, each the neighbour of every other, measured every 2 rounds:
    its secrets folder (link keys and the observer's secret), each node's link-keys file, free
    loopback addresses and config."""
    secrets = tmp_path / "secrets"
    links = [(a, b) for a in range(count) for b in range(a + 1, count)]
    keys = write_link_keys(links, range(count), secrets, observer=True)
    addresses = {node: f"127.0.0.1:{port}" for node, port in enumerate(free_ports(count))}
    overrides = ["task.model=linear", f"nodes.count={count}", f"experiment.rounds={rounds}"]
    config = load_config(None, [*overrides, "experiment.consensus_every=2", *settings])
    return secrets, keys, addresses, config


def _add_peers(peers: list[GossipPeer], config, addresses: dict[int, str], keys) -> None:
    """Make `_observed_run`'s peers (not started) into `peers`, which the caller closes."""
    for node, address in addresses.items():
        neighbours = {str(n): a for n, a in addresses.items() if n != node}
        section = PeerSection(id=node, listen=address, neighbours=neighbours, link_keys_file=str(keys[node]))
        peers.append(GossipPeer(config.replace(peer=section)))


@pytest.mark.timeout(60)
def test_an_observer_rounds_late_gets_every_peers_model_of_every_measured_round(tmp_path):
    """Three peers on real gRPC servers publish all their rounds before the observer sees any
    record (as a launcher short of CPU reads them: in one burst, more rounds than
    MAX_PENDING_ROUNDS): every measured round (even ones, and the last) is written with the three
    models the peers published after it, its distance the one computed by hand; each read
    releases the model kept (asked again, a peer serves its current one), and the read of the
    last round lets a finished peer go."""
    count, rounds = 3, 2 * MAX_PENDING_ROUNDS + 3
    secrets, keys, addresses, config = _observed_run(tmp_path, count, rounds, "experiment.round_timeout=20")
    results = ResultsFolder(tmp_path / "run", config)
    rng = np.random.default_rng(3)
    published: dict[int, dict[int, list[np.ndarray]]] = {}
    peers: list[GossipPeer] = []
    try:
        _add_peers(peers, config, addresses, keys)
        for peer in peers:
            initial = peer.start(lambda event: None)
            for round_ in range(1, rounds + 1):
                model = [a + rng.standard_normal(a.shape).astype(a.dtype) for a in initial]
                published.setdefault(round_, {})[peer.node] = model
                peer.keep(model, round_)
        metadata = observer_metadata(read_observer_secret(secrets))
        observer = ConsensusObserver(
            config, ObserverAccess(addresses, metadata, None, 2**20), results, time.time()
        )
        try:
            for round_ in range(1, rounds + 1):
                for node in range(count):
                    observer.saw(node, round_)
        finally:
            observer.close()
        assert all(peer.service.observed.is_set() for peer in peers)
        for node in range(count):  # round 2 was released: the peer serves its current model
            stream = stub_for(addresses[node]).GetModel(
                gossip_pb2.GetModelRequest(), timeout=20, metadata=(*metadata, (ROUND_KEY, "2"))
            )
            assert next(iter(stream)).header.round == rounds
    finally:
        for peer in peers:
            peer.close()
        results.close()
    lines = [json.loads(line) for line in (results.path / "consensus.jsonl").read_text().splitlines()]
    assert sorted(line["round"] for line in lines) == [*range(2, rounds, 2), rounds]  # each once complete
    for line in lines:
        models = [published[line["round"]][node] for node in range(count)]
        assert line["consensus_models"] == count
        assert line["nodes_skipped"] == line["nodes_moved_on"] == line["nodes_missing"] == []
        assert line["consensus_distance"] == pytest.approx(consensus_distance(models), rel=1e-12)
        assert line["consensus_distance"] == pytest.approx(_hand_distance(models), rel=1e-9)


@pytest.mark.timeout(60)
def test_an_observer_whose_read_of_a_last_model_fails_lets_that_peer_go(tmp_path, monkeypatch):
    """Two finished peers on real gRPC servers; the observer's read of node 0's last model fails
    (as a read timing out under load): the observer says it is done with node 0 (`DONE_KEY`),
    which ends node 0's wait (`observed`) as the read of node 1's model ends node 1's. The same
    word from a caller without the observer's secret ends nothing."""
    count, rounds = 2, 2
    secrets, keys, addresses, config = _observed_run(tmp_path, count, rounds)
    fetch = ConsensusObserver._fetch

    def failing(observer, node, round_):
        if node == 0:
            raise TimeoutError("injected")
        return fetch(observer, node, round_)

    monkeypatch.setattr(ConsensusObserver, "_fetch", failing)
    results = ResultsFolder(tmp_path / "run", config)
    peers: list[GossipPeer] = []
    try:
        _add_peers(peers, config, addresses, keys)
        for peer in peers:
            model = peer.start(lambda event: None)
            for round_ in range(1, rounds + 1):
                peer.keep(model, round_)
        stream = stub_for(addresses[0]).GetModel(
            gossip_pb2.GetModelRequest(), timeout=20, metadata=((DONE_KEY, "1"),)
        )
        with pytest.raises(grpc.RpcError):
            list(stream)  # no observer's secret: refused
        assert not peers[0].service.observed.is_set()
        metadata = observer_metadata(read_observer_secret(secrets))
        observer = ConsensusObserver(
            config, ObserverAccess(addresses, metadata, None, 2**20), results, time.time()
        )
        try:
            for node in range(count):
                observer.saw(node, rounds)
        finally:
            observer.close()
        assert all(peer.service.observed.is_set() for peer in peers)
    finally:
        for peer in peers:
            peer.close()
        results.close()
    [line] = [json.loads(line) for line in (results.path / "consensus.jsonl").read_text().splitlines()]
    assert line["round"] == rounds and line["nodes_skipped"] == [0] and line["consensus_models"] == 1


def _complete_by_sets(observer: ConsensusObserver, round_: int, entry: _Round) -> bool:
    """The completeness rule as sets over all peers (the observer's rule before it kept
    `accounted` and `in_flight`): every peer read, not answering, moved on, gone without a fetch
    under way, or past the round without recording it."""
    settled = set(entry.models) | set(entry.skipped) | set(entry.moved_on) | (observer._gone - entry.asked)
    passed = {n for n, last in observer._latest.items() if last >= round_ and n not in entry.asked}
    return settled | passed >= set(observer._stubs)


@pytest.mark.timeout(60)
def test_a_rounds_completeness_is_the_rule_over_all_peers(tmp_path):
    """Random states of 12 peers in a round (asked, read, skipped, moved on, gone, later rounds
    recorded): the observer writes a round exactly when the rule as sets over all peers says it
    is complete, and `in_flight` is the peers asked and not accounted for."""
    config = load_config(None, ["experiment.rounds=40", "experiment.round_timeout=30"])
    results = ResultsFolder(tmp_path / "run", config)
    peers = range(12)
    access = ObserverAccess({node: "127.0.0.1:1" for node in peers}, (), None, 2**20)
    observer = ConsensusObserver(config, access, results, time.time())
    rng = np.random.default_rng(5)
    written = 0
    try:
        for trial in range(400):
            round_ = trial % 40 + 1
            entry = _Round()
            for node in peers:  # asked (its record came), then accounted for, or the other way round
                steps = [entry.ask] if rng.random() < 0.7 else []
                if rng.random() < 0.8:
                    steps.append([partial(entry.read, arrays=[]), entry.skip, entry.move_on][rng.integers(3)])
                for step in rng.permutation(len(steps)):
                    steps[step](node)
            observer._gone = {n for n in peers if rng.random() < 0.1}
            observer._latest = {n: int(rng.integers(round_ - 1, round_ + 2)) for n in peers}
            accounted = set(entry.models) | set(entry.skipped) | set(entry.moved_on)
            assert entry.in_flight == entry.asked - accounted
            expected = _complete_by_sets(observer, round_, entry)
            observer._rounds = {round_: entry}
            observer._written.discard(round_)
            observer._write_complete()
            assert (round_ not in observer._rounds) == expected
            written += expected
    finally:
        observer._rounds = {}
        observer.close()
        results.close()
    assert 20 < written < 380  # both outcomes drawn often
