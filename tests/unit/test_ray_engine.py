"""The Ray engine's node configs, written without Ray: each names its actor's address in its
certificates and carries its files to the actor's folder; an actor's `take` returns a burst of
lines in one call."""

from __future__ import annotations

import ipaddress
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


@pytest.mark.timeout(30)
def test_take_returns_the_lines_that_follow_the_first_within_its_linger(monkeypatch):
    for name in THREAD_ENV:
        monkeypatch.setenv(name, "1")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    host = ActorHost(1, [])  # its process's log records become its log lines
    log = logging.getLogger("fedgossip.test-actor")
    taken: list = []
    try:
        assert host.take(0.0) == ([], [], None)  # nothing yet: an empty reply, at once
        taker = threading.Thread(target=lambda: taken.append(host.take(10.0, linger=0.5)))
        started = time.monotonic()
        taker.start()
        log.info("first")
        log.info("second")  # after the first: within the linger, so in the same reply
        taker.join(10.0)
        took = time.monotonic() - started
        log.info("third")  # after the reply: in the next one
        later = host.take(10.0)
    finally:
        host.stop()
        root.handlers[:], root.level = handlers, level
    [(events, logs, code)] = taken
    assert events == [] and code is None
    assert [line.rsplit(": ", 1)[1] for line in logs] == ["first", "second"]
    assert took >= 0.5  # it lingered for lines that might follow
    assert [line.rsplit(": ", 1)[1] for line in later[1]] == ["third"]
