"""Asynchronous gossip in one process: the fresh-model rule and the merge trigger by hand, the
config's checks, the step unit and the time to target of an async run."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.client.gossip.async_inbox import AsyncInbox, MergeTrigger
from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.config import load_config
from fedgossip.reports.summary import accuracy_summary, time_curve
from fedgossip.tasks import build_learner


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
