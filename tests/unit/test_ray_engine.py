"""The Ray engine's node configs, written without Ray: each names its actor's address in its
certificates and carries its files to the actor's folder; an actor's `take` returns a burst of
lines in one call."""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from fedgossip.base.threads import THREAD_ENV
from fedgossip.client.gossip.actor import PEER_FILES, ActorHost, NodeBundle
from fedgossip.config import load_config
from fedgossip.launcher.gossip.launch import write_node_configs
from fedgossip.launcher.runs.results import ResultsFolder
from tests.support import RAY_FOUR

FOUR = RAY_FOUR


def test_node_configs_name_each_actor_address_and_travel_with_their_files(tmp_path):
    """What the driver hands an actor: certificates naming the actor's address, and every file
    the node config names, rewritten into the actor's own folder (owner-only), byte for byte."""
    config = load_config(None, [*FOUR, "topology.kind=complete"])
    results = ResultsFolder(tmp_path / "run", config)
    listen = ["10.0.0.5:7001", "10.0.0.5:7002", "10.0.0.6:7001", "127.0.0.1:7003"]
    paths = write_node_configs(config, results, 0.0, listen)
    given = load_config(paths[2]).peer
    assert given.listen == "10.0.0.6:7001" and given.neighbours["0"] == "10.0.0.5:7001"
    cert = x509.load_pem_x509_certificate(Path(given.cert_file).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.6") in names.get_values_for_type(x509.IPAddress)
    bundle = NodeBundle.read(paths[2])
    assert sorted(bundle.files) == sorted(PEER_FILES)  # mutual TLS and a token: every kind of file
    actor_folder = tmp_path / "actor"
    actor_folder.mkdir()
    unpacked = load_config(bundle.unpack(actor_folder))
    assert unpacked.replace(peer=None) == load_config(paths[2]).replace(peer=None)
    assert (unpacked.peer.listen, unpacked.peer.neighbours) == (given.listen, given.neighbours)
    for key in PEER_FILES:
        path = Path(getattr(unpacked.peer, key))
        assert path.parent.parent == actor_folder and path.stat().st_mode & 0o777 == 0o600
        assert path.read_bytes() == Path(getattr(given, key)).read_bytes()


@pytest.fixture
def host(monkeypatch):
    """An actor's host without Ray and without peers; its log handler removed afterwards."""
    for name in THREAD_ENV:
        monkeypatch.setenv(name, "1")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    host = ActorHost(1, [])  # its process's log records become its log lines
    yield host
    host.stop()
    root.handlers[:], root.level = handlers, level


def _timed_take(host: ActorHost, **kwargs) -> tuple[threading.Thread, list]:
    """host.take(**kwargs) in a thread: the thread and, once it is joined, [(reply, seconds)]."""
    taken: list = []

    def take() -> None:
        started = time.monotonic()
        reply = host.take(**kwargs)
        taken.append((reply, time.monotonic() - started))

    thread = threading.Thread(target=take)
    thread.start()
    return thread, taken


def _record(node: int) -> dict:
    return {"type": "record", "record": {"node": node, "round": 1}}


@pytest.mark.timeout(30)
def test_take_brings_every_line_of_its_linger_in_one_reply(host):
    assert host.take(0.0) == ([], [], None)  # nothing yet: an empty reply, at once
    log = logging.getLogger("fedgossip.test-actor")
    thread, taken = _timed_take(host, timeout=10.0, linger=0.5)
    host._emit(_record(0))  # the peers' emit function
    log.info("first")
    host._emit(_record(1))
    thread.join(10.0)
    [((events, logs, code), seconds)] = taken
    assert [json.loads(line)["record"]["node"] for line in events] == [0, 1] and code is None
    assert [line.rsplit(": ", 1)[1] for line in logs] == ["first"]
    assert 0.5 <= seconds < 5.0  # it lingered for the lines after the first, then gave what it had
    log.info("later")
    assert [line.rsplit(": ", 1)[1] for line in host.take(10.0)[1]] == ["later"]
