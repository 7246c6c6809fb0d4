"""Packed peers hand their pushes to each other in process (`nodes.local_handoff`, on by default):
real runs of real processes, launched by the launcher, record what gRPC delivery records, and a
scenario loss and a sign-flip attacker still apply between co-located peers."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support import metrics, run_cli, set_args, timeless

EIGHT_IN_TWO = [  # two processes of four peers: links inside a process and across the two
    "nodes.count=8",
    "nodes.per_process=4",
    "experiment.rounds=4",
    "experiment.seed=3",
    "topology.kind=regular",
    "topology.degree=3",
    "task.model=mlp",
    "strategy.name=vca",
]
# two co-located peers, one of them the attacker (a lossy run of more peers is deterministic too
# since lost pushes are announced in sync rounds: tests/e2e/test_lossy_records.py)
TWO_IN_ONE = [
    "nodes.count=2",
    "nodes.per_process=2",
    "topology.kind=complete",
    "task.model=linear",
    "experiment.rounds=6",
    "experiment.round_timeout=1.5",
    "scenario.loss=0.3",
]


def run(tmp_path, name: str, settings: list[str]) -> list[dict]:
    out = tmp_path / name
    result = run_cli("run", "--out", str(out), *set_args(settings), timeout=200)
    assert result.returncode in (0, 3), result.stdout + result.stderr  # 3: target not reached
    return timeless(metrics(out))


@pytest.mark.timeout(420)
def test_packed_peers_handing_models_over_in_process_record_what_grpc_delivery_records(tmp_path):
    handed = run(tmp_path, "handoff", EIGHT_IN_TWO)  # the default
    over_grpc = run(tmp_path, "grpc", [*EIGHT_IN_TWO, "nodes.local_handoff=false"])
    assert len(handed) == 32 and all(r["merged"] == 3 for r in handed)
    assert handed == over_grpc  # losses, accuracies, bytes and who was heard, to the last bit


@pytest.mark.timeout(600)
def test_a_loss_and_a_sign_flip_attacker_apply_between_co_located_peers(tmp_path):
    attacked = [*TWO_IN_ONE, "scenario.attack=sign-flip", "scenario.attacker_fraction=0.5"]
    handed = run(tmp_path, "handoff", attacked)
    assert handed == run(tmp_path, "grpc", [*attacked, "nodes.local_handoff=false"])
    honest_run = run(tmp_path, "no-attack", TWO_IN_ONE)
    # the loss: pushes dropped on the way, and exactly that many models missing from the merges
    dropped, missing = Counter(), Counter()
    for r in handed:
        dropped[r["round"]] += r["dropped"]
        missing[r["round"]] += 1 - len(r["neighbours_heard"])
    assert sum(dropped.values()) > 0 and dropped == missing
    # the same seeded drops without the attacker (the links' draws do not depend on it) ...
    assert [r["dropped"] for r in honest_run] == [r["dropped"] for r in handed]
    # ... but the honest peers that merged the attacker's model learned something else
    (attacker,) = {r["node"] for r in handed if r.get("attack") == "sign-flip"}
    poisoned = [
        (r["test_loss"], h["test_loss"])
        for r, h in zip(handed, honest_run, strict=True)
        if r["node"] != attacker and attacker in r["neighbours_heard"]
    ]
    assert poisoned and all(ours != theirs for ours, theirs in poisoned)
