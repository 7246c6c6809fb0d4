"""The launcher's consensus observer (launcher/gossip/consensus.py) without peers: a fetch still
queued when its peer's process exited fails at once, counted as not answering, instead of waiting
out its timeout (a backlog of those held the end of a loaded run for minutes)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from fedgossip.config import load_config
from fedgossip.launcher.gossip.consensus import ConsensusObserver, ObserverAccess
from fedgossip.launcher.runs.results import ResultsFolder


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
