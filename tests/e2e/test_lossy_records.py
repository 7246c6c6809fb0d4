"""A lossy, jittery, partitioned network gives the same records for the same seed: two launched runs
of one config (4 peer processes each, complete graph, gossip over gRPC), side by side, record the
same losses, the same neighbours heard and the same models, and each peer merges, every round,
exactly its neighbours whose push the seeded plan did not lose (computed here with numpy's
generator by hand). Before each link drew from one stream in push order and a lost model was waited
for a round timeout, the two runs disagreed on who was heard and what was merged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support import launched, metrics, run_status

pytestmark = pytest.mark.timeout(150)

NODES, ROUNDS, SEED, LOSS = 4, 8, 5, 0.3
PARTITION_ROUND = 3  # groups {0, 1} and {2, 3} cannot reach each other in it
LOSSY = [
    f"nodes.count={NODES}",
    "nodes.local_handoff=false",
    "topology.kind=complete",
    "task.dataset=digits",
    "task.model=linear",
    f"experiment.rounds={ROUNDS}",
    f"experiment.seed={SEED}",
    "experiment.round_timeout=5.0",  # bounds the wait for peers still starting in round 1
    f"scenario.loss={LOSS}",
    "scenario.delay_ms=10.0",
    "scenario.jitter_ms=8.0",
    "scenario.partition_groups=2",
    f"scenario.partition_rounds=[{PARTITION_ROUND}, {PARTITION_ROUND}]",
]
TIMING = {"time_s", "rejoin_s", "train_s", "evaluate_s", "delayed_s"}
NETWORK_STREAM = 10  # base/seeding.py's id of the "network" stream


def lost(sender: int, receiver: int, round_: int) -> bool:
    """Whether the plan loses the push of `round_` from `sender` to `receiver`: across the partition
    in its round, else the first draw of numpy's generator for (seed, network, sender, receiver,
    round) below scenario.loss."""
    if round_ == PARTITION_ROUND and sender * 2 // NODES != receiver * 2 // NODES:
        return True
    key = np.random.SeedSequence(SEED, spawn_key=(NETWORK_STREAM, sender, receiver, round_))
    return bool(np.random.default_rng(key).random() < LOSS)


def untimed(out: Path) -> list[dict]:
    records = [{k: v for k, v in r.items() if k not in TIMING} for r in metrics(out)]
    return sorted(records, key=lambda r: (r["node"], r["round"]))


def test_two_runs_of_a_lossy_seeded_config_record_the_same(tmp_path):
    outs = [tmp_path / "first", tmp_path / "second"]
    with launched(outs[0], LOSSY) as first, launched(outs[1], LOSSY) as second:
        for out, launcher in zip(outs, (first, second), strict=True):
            output, _ = launcher.communicate(timeout=120)
            logs = "".join(
                f"\n--- {log.name}\n{log.read_text()[-1500:]}" for log in sorted((out / "logs").glob("*.log"))
            )
            assert run_status(out) == "complete", output.decode(errors="replace")[-3000:] + logs
    records, again = untimed(outs[0]), untimed(outs[1])
    assert len(records) == NODES * ROUNDS
    assert again == records
    for r in records:
        node, round_ = r["node"], r["round"]
        others = [n for n in range(NODES) if n != node]
        assert r["neighbours_heard"] == [n for n in others if not lost(n, node, round_)], (node, round_)
        assert r["dropped"] == sum(lost(node, n, round_) for n in others), (node, round_)
    assert 15 <= sum(r["dropped"] for r in records) <= 45  # 96 pushes, 8 across the partition
    events = [json.loads(line) for line in (outs[0] / "events.jsonl").read_text().splitlines()]
    drops = sorted((e["round"], e["node"], e["details"]["to"]) for e in events if e["kind"] == "drop")
    plan = [(r, s, t) for r in range(1, ROUNDS + 1) for s in range(NODES) for t in range(NODES)]
    assert drops == [(r, s, t) for r, s, t in plan if s != t and lost(s, t, r)]
