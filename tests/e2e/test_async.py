"""Asynchronous gossip: the fresh-model rule and the merge trigger by hand, the config's checks, the
step unit, time to target; and whole runs through the CLI (no barrier, a killed peer stalls nobody)."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.support import kill_during_run, metrics, run_cli, set_args

ASYNC = ["gossip.schedule=async", "task.model=linear", "topology.kind=ring", "nodes.count=4"]


def units_at(records: list[dict], t: float) -> dict[int, int]:
    """The last unit each node had recorded by time `t`."""
    done: dict[int, int] = {}
    for r in records:
        if r["time_s"] <= t:
            done[r["node"]] = max(done.get(r["node"], 0), r["round"])
    return done


def assert_fresh_merges(records: list[dict]) -> None:
    """Per node and sender, the merged models' units only go up (never a stale one twice)."""
    for node in {r["node"] for r in records}:
        last: dict[int, int] = {}
        for r in sorted((r for r in records if r["node"] == node), key=lambda r: r["round"]):
            assert len(r["merged_units"]) == len(r["neighbours_heard"]) == r["merged"]
            for sender, unit in zip(r["neighbours_heard"], r["merged_units"], strict=True):
                assert unit > last.get(sender, 0), (node, r)
                last[sender] = unit


@pytest.mark.timeout(120)
def test_async_peers_run_at_their_own_pace_without_a_barrier(tmp_path):
    out = tmp_path / "async"
    settings = [*ASYNC, "experiment.rounds=20", "gossip.async_interval=[0.0, 0.3]"]
    result = run_cli("run", "--out", str(out), *set_args(settings))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "consensus distance off" in result.stdout
    for name in ("config.toml", "metrics.jsonl", "summary.json", "accuracy.png", "processes.json"):
        assert (out / name).stat().st_size > 0, name
    records = metrics(out)
    assert sorted((r["node"], r["round"]) for r in records) == [
        (n, u) for n in range(4) for u in range(1, 21)
    ]
    # no barrier: at some moment a peer is 3 units or more ahead of another (synchronous rounds
    # keep neighbours within one round, a ring of 4 within two)
    spreads = [
        max(done.values()) - min(done.values())
        for t in sorted(r["time_s"] for r in records)
        if len(done := units_at(records, t)) == 4
    ]
    assert max(spreads) >= 3, spreads
    assert_fresh_merges(records)
    triggers = [r["merge_trigger"] for r in records]
    assert set(triggers) <= {"fresh", "timeout", None} and triggers.count("fresh") >= 20
    for r in records:  # a ring: the models merged come from the two neighbours
        assert set(r["neighbours_heard"]) <= {(r["node"] - 1) % 4, (r["node"] + 1) % 4}
    assert len({r["bytes_received"] / r["merged"] for r in records if r["merged"]}) == 1  # one model size
    assert sum(r["bytes_sent"] for r in records) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["schedule"] == "async"
    assert summary["rounds_completed"] == 20 and 0.5 < summary["final_mean_accuracy"] <= 1


@pytest.mark.timeout(120)
def test_a_killed_async_peer_stalls_none_of_the_others(tmp_path):
    out = tmp_path / "killed"
    settings = [
        *ASYNC,
        "experiment.rounds=40",
        "gossip.async_unit=step",
        "gossip.async_interval=[0.02, 0.1]",
        "gossip.async_merge_timeout=0.5",
    ]
    code, output = kill_during_run(out, settings, 2, "node-2")
    assert code == 3, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["dead_nodes"] == [2]
    records = metrics(out)
    dead = max(r["time_s"] for r in records if r["node"] == 2)
    for node in (0, 1, 3):
        mine = sorted((r for r in records if r["node"] == node), key=lambda r: r["round"])
        assert [r["round"] for r in mine] == list(range(1, 41))
        gaps = [b["time_s"] - a["time_s"] for a, b in itertools.pairwise(mine)]
        assert max(gaps[:-1]) < 2.0, gaps  # no unit waits for the dead peer (the last may wait for sends)
        after = [r for r in mine if r["time_s"] > dead + 1.0]
        assert sum(r["merged"] for r in after) > 0 and all(2 not in r["neighbours_heard"] for r in after)
    assert_fresh_merges(records)
