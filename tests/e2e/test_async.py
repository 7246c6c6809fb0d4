"""Asynchronous gossip: the fresh-model rule and the merge trigger by hand, the config's checks, the
step unit, time to target; and whole runs through the CLI (no barrier, a killed peer stalls nobody)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from fedgossip.client.gossip.async_inbox import AsyncInbox, MergeTrigger
from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.config import load_config
from fedgossip.reports.summary import accuracy_summary, time_curve
from fedgossip.tasks import build_learner
from tests.support import kill_during_run, metrics, run_cli, set_args


def model(sender: int, unit: int, value: float = 0.0) -> ModelMessage:
    return ModelMessage(sender, unit, 10, [np.full(2, value, dtype=np.float32)], 8)


def held(messages: list[ModelMessage]) -> list[tuple[int, int, float]]:
    return [(m.sender, m.round, float(m.arrays[0][0])) for m in messages]


def test_fresh_models_count_each_and_the_latest_of_each_sender_is_merged():
    inbox = AsyncInbox()
    assert inbox.window(10**6) is None  # no round window: the service never refuses early
    assert inbox.put(model(1, 3, 1.0)) is None
    assert inbox.put(model(1, 3, 9.0)) == "closed"  # the same unit again is not fresh
    assert inbox.put(model(1, 2)) == "closed"  # older than the one held
    assert inbox.put(model(1, 5, 2.0)) is None  # newer: counts again, replaces the one held
    assert inbox.put(model(2, 1, 3.0)) is None
    assert inbox.arrivals == 3
    assert held(inbox.take()) == [(1, 5, 2.0), (2, 1, 3.0)]
    assert inbox.arrivals == 0 and inbox.take() == []
    assert inbox.put(model(1, 4)) == "closed"  # older than the last merged from node 1
    assert inbox.put(model(2, 1)) == "closed"
    assert inbox.put(model(2, 2, 4.0)) is None
    assert inbox.arrivals == 1 and held(inbox.take()) == [(2, 2, 4.0)]
    assert inbox.withhold(3, 1) == "closed"  # no notices in async gossip
    assert inbox.take_refused() == 5 and inbox.take_refused() == 0


def test_the_merge_is_due_with_as_many_fresh_models_as_neighbours_or_at_the_timeout():
    trigger = MergeTrigger(degree=3, timeout=2.0, now=100.0)
    assert trigger.due(2, 101.9) is None
    assert trigger.due(3, 100.1) == "fresh"
    assert trigger.due(7, 105.0) == "fresh"  # the paper's rule first
    assert trigger.due(0, 102.0) == "timeout"  # merge what is fresh, maybe nothing
    trigger.merged(102.5)
    assert trigger.due(2, 104.4) is None  # the timeout counts from the last merge
    assert trigger.due(1, 104.5) == "timeout"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        (["gossip.schedule=later"], "gossip.schedule"),
        (["gossip.schedule=async", "gossip.async_unit=batch"], "gossip.async_unit"),
        (["gossip.schedule=async", "gossip.async_interval=[0.5, 0.1]"], "gossip.async_interval"),
        (["gossip.schedule=async", "gossip.async_interval=[0.1]"], "gossip.async_interval"),
        (["gossip.schedule=async", "gossip.async_merge_timeout=0"], "gossip.async_merge_timeout"),
        (["gossip.schedule=async", "strategy.name=fair"], "strategy.name 'fair'"),
        (["gossip.schedule=async", "experiment.mode=flower", "strategy.name=fedavg"], "experiment.mode"),
        (["gossip.schedule=async", "scenario.crash=[1]", "scenario.crash_round=3"], "scenario.crash_round"),
    ],
)
def test_bad_async_settings_are_refused_naming_the_key(settings, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(None, settings)


def test_async_gossip_has_no_consensus_observer():
    assert load_config(None).observes_consensus
    assert not load_config(None, ["gossip.schedule=async"]).observes_consensus


def test_steps_walk_through_an_epoch_order_one_batch_at_a_time_with_one_optimiser(monkeypatch):
    config = load_config(None, ["task.model=linear", "task.batch_size=16"])
    learner = build_learner(config.task, 0, 8, 0)
    batches: list[np.ndarray] = []
    optimisers = []

    def make_epoch(mu):
        optimisers.append(mu)
        return lambda order: batches.append(order) or 0.5

    monkeypatch.setattr(learner, "_make_epoch", make_epoch)
    n = learner.num_examples
    steps = -(-n // 16) - (n % 16 == 1)  # a single example left over joins the batch before
    assert [learner.train_step() for _ in range(steps + 1)] == [0.5] * (steps + 1)
    first = np.concatenate(batches[:steps])
    assert sorted(first.tolist()) == list(range(n))  # every example once in the first epoch
    assert [len(b) for b in batches[: steps - 1]] == [16] * (steps - 1)
    assert len(batches[steps]) == 16 and optimisers == [0.0]  # a new order; momentum carried


def test_seconds_to_target_of_an_async_run_follow_every_nodes_latest_accuracy():
    def rec(node, unit, t, acc):
        return {"node": node, "round": unit, "time_s": t, "test_accuracy": acc}

    fast = [rec(0, 1, 1.0, 0.5), rec(0, 2, 2.0, 0.6), rec(0, 3, 3.0, 0.95)]
    slow = [rec(1, 1, 2.5, 0.9), rec(1, 2, 10.0, 0.9), rec(1, 3, 12.0, 0.9)]
    records = fast + slow
    curve = time_curve(records)  # from the moment both nodes have a record
    assert [t for t, _ in curve] == [2.5, 3.0, 10.0, 12.0]
    assert [acc for _, acc in curve] == pytest.approx([0.75, 0.925, 0.925, 0.925])
    asynchronous = accuracy_summary(records, 0.9, "async")
    assert asynchronous["rounds_to_target"] == 3 and asynchronous["seconds_to_target"] == 3.0
    # synchronous rounds end with their slowest node: unit 3 at 12 s
    assert accuracy_summary(records, 0.9, "sync")["seconds_to_target"] == 12.0
    assert accuracy_summary(records, 0.99, "async")["seconds_to_target"] is None


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
