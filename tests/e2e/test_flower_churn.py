"""Flower-mode churn: the plan drawn from the seed, the config checks, and for real a SuperNode
stopped by the launcher at a round and restarted (same partition) rounds later, the SuperLink
seeing it leave and register again, the ServerApp going on without it and taking it back."""

from __future__ import annotations

import json
import re

import pytest

from fedgossip.launcher.supervision.proctree import alive
from fedgossip.reports import read_records
from tests.support import FLOWER, processes_gone, run_cli


def sets(settings: dict[str, str]) -> list[str]:
    """`fedgossip run` arguments that set each key to its value."""
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def test_the_cli_refuses_flower_churn_it_cannot_run_with_exit_2(tmp_path):
    args = sets({"scenario.crash": "[1]", "scenario.crash_round": "2"})
    result = run_cli("run", "--out", str(tmp_path / "run"), *FLOWER, *args, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: scenario churn leaves 1 of 2 nodes up in round 2" in result.stderr + result.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(300)
def test_a_supernode_stopped_at_round_1_misses_it_and_takes_part_again_in_round_2(tmp_path):
    run = tmp_path / "churn"
    settings = {
        "nodes.count": "3",
        "experiment.rounds": "2",
        "strategy.name": "average",
        "flower.fraction_evaluate": "0",  # the server evaluates: one ClientApp per node and round
        "scenario.crash": "[1]",
        "scenario.crash_round": "1",
        "scenario.down_rounds": "1",
    }
    result = run_cli("run", "--out", str(run), *FLOWER, *sets(settings), timeout=290)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r" 5/5 round 2: mean acc", result.stdout), result.stdout  # the bar ends at its total
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["errors"] == [], summary
    assert summary["flower"]["status"] == "finished:completed"
    records = read_records(run)
    rounds = {n: sorted(r["round"] for r in records if r["node"] == n) for n in (0, 1, 2)}
    assert rounds == {0: [1, 2], 1: [2], 2: [1, 2]}  # node 1: no record, no reply in round 1
    back = next(r for r in records if r["node"] == 1)
    assert back["rounds_missed"] == 1 and back["bytes_sent"] > 0 and back["train_loss"] is not None
    server = {r["round"]: r for r in records if r["node"] == "server"}
    assert server[1]["consensus_models"] == 2 and server[2]["consensus_models"] == 3
    assert server[1]["train_s"] < 45  # the round did not wait for the stopped node (round_timeout 60)
    assert summary["rounds_missed_by_node"] == {"1": 1}
    assert summary["rejoin_s_by_node"]["1"] == back["rejoin_s"] > 0
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [(e["round"], e["node"], e["kind"]) for e in events] == [(1, 1, "crash"), (2, 1, "rejoin")]
    crash, rejoin = events
    assert crash["details"]["down_rounds"] == 1 and rejoin["details"]["rounds_missed"] == 1
    assert crash["time_s"] < rejoin["time_s"]
    old_pid, new_pid = crash["details"]["pid"], rejoin["details"]["pid"]
    pids = json.loads((run / "processes.json").read_text())
    assert pids["supernode-1"] == new_pid != old_pid and not alive(old_pid)
    # the SuperLink saw the node sign off and register again, under another node id
    lines = (run / "flower" / "records.jsonl").read_text().splitlines()
    started = next(json.loads(line) for line in lines if '"started"' in line)
    first_id = next(node_id for node_id, partition in started["labels"].items() if partition == 1)
    assert rejoin["details"]["node_id"] != first_id
    superlink = (run / "logs" / "superlink.log").read_text()
    assert f"Deactivated node_id={first_id}" in superlink
    assert (run / "logs" / "supernode-1.log").read_text().count("Starting Flower SuperNode") == 2
    assert processes_gone(run) == {}
