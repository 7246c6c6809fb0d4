"""The authors' tick schedule in one process: the order of a hand-made schedule's events, the
buffer counting a neighbour's duplicates, a merge's numbers against the rule computed by hand,
and the tick inbox."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.client.gossip.clock import VirtualClock
from fedgossip.client.gossip.tick_inbox import TickInbox
from fedgossip.client.gossip.ticks import TickNode, run_ticks
from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.config import load_config
from tests.unit.test_virtual_clock import line_peers

TICKS = ["gossip.schedule=ticks", "gossip.eval_every_ticks=6", "strategy.name=average"]

# 3 nodes on a line 0-1-2 (degrees 1, 2, 1), training every 2, 3 and 5 ticks from tick 0;
# ticks 0..12, evaluations at 6 and 12. Per tick: all trainings and their pushes, then the
# merges of the nodes whose buffer holds as many models as they have neighbours, then evaluations.
EXPECTED = [
    (0, 0, "train"), (0, 1, "train"), (0, 2, "train"),
    (0, 0, "merge"), (0, 1, "merge"), (0, 2, "merge"),  # 0 and 2 got 1's model, 1 got both
    (2, 0, "train"),  # 1 holds 0's model: 1 of 2
    (3, 1, "train"), (3, 0, "merge"), (3, 2, "merge"),
    (4, 0, "train"), (4, 1, "merge"),  # 0's second model counts: 2 of 2
    (5, 2, "train"),  # 1 holds 2's: 1 of 2
    (6, 0, "train"), (6, 1, "train"),
    (6, 0, "merge"), (6, 1, "merge"), (6, 2, "merge"),
    (6, 0, "evaluate"), (6, 1, "evaluate"), (6, 2, "evaluate"),
    (8, 0, "train"),
    (9, 1, "train"), (9, 0, "merge"), (9, 2, "merge"),
    (10, 0, "train"), (10, 2, "train"), (10, 1, "merge"),  # 1 merges 3 models: 0's twice, 2's
    (12, 0, "train"), (12, 1, "train"), (12, 0, "merge"), (12, 2, "merge"),
    (12, 0, "evaluate"), (12, 1, "evaluate"), (12, 2, "evaluate"),
]  # fmt: skip


def test_a_hand_made_tick_schedule_runs_in_the_hand_computed_order():
    peers = line_peers(*TICKS)
    events: list[tuple[int, int, str]] = []
    every = {0: 2, 1: 3, 2: 5}
    nodes = [TickNode(p, intervals=lambda n=p.node: every[n], log=lambda *e: events.append(e)) for p in peers]
    records: list[dict] = []
    clock = VirtualClock()
    run_ticks(nodes, clock, lambda e: records.append(e["record"]) if e["type"] == "record" else None, _run)
    assert events == EXPECTED
    assert clock() == 12
    by = {(r["node"], r["round"]): r for r in records}
    assert sorted(by) == [(n, k) for n in range(3) for k in (1, 2)]
    assert [by[(n, k)]["tick"] for n in range(3) for k in (1, 2)] == [6, 12] * 3
    # node 1's second period: one merge of 0's models of ticks 8 and 10, then 2's of tick 10
    assert by[(1, 2)]["neighbours_heard"] == [0, 0, 2] and by[(1, 2)]["merged"] == 3
    assert by[(1, 2)]["merge_trigger"] == "fresh"
    assert by[(1, 1)]["neighbours_heard"] == [0, 2, 0, 0, 2, 0]  # ticks 0; 2, 4; 5, 6
    assert by[(2, 1)]["neighbours_heard"] == [1, 1, 1] and by[(0, 2)]["merged"] == 2  # ticks 9, 12
    trained = {n: sum(1 for t, m, w in EXPECTED if m == n and w == "train" and 0 < t <= 6) for n in range(3)}
    size = sum(a.nbytes for a in peers[0].initial)
    # bytes delivered in period 1 (ticks 0..6): each training's push, to every neighbour
    assert by[(0, 1)]["bytes_sent"] == (trained[0] + 1) * size
    assert by[(1, 1)]["bytes_sent"] == (trained[1] + 1) * 2 * size


def _run(peer, step):
    return step()


def test_a_merge_is_the_rule_over_the_buffer_duplicates_included():
    peers = line_peers(*TICKS)
    node = TickNode(peers[1], intervals=lambda: 100)
    node.current = [a.copy() for a in peers[1].initial]
    rng = np.random.default_rng(0)
    received = [[rng.normal(size=a.shape).astype(a.dtype) for a in node.current] for _ in range(3)]
    for sender, arrays in zip((0, 0, 2), received, strict=True):  # 0 twice: both count
        node.inbox.put(ModelMessage(sender, 1, 10, arrays, 0))
    assert node.merge(3)
    # average, own weight 0.5, equal example counts: own / 2 + mean(received) / 2
    for i, own in enumerate(peers[1].initial):
        expected = 0.5 * own.astype(np.float64) + 0.5 * np.mean([r[i] for r in received], axis=0)
        np.testing.assert_allclose(node.current[i], expected, rtol=1e-6, atol=1e-7)
    assert node.inbox.count == 0 and not node.merge(4)  # buffer cleared


def test_the_tick_inbox_keeps_every_model_and_takes_no_notices():
    inbox = TickInbox()
    one = ModelMessage(1, 1, 10, [np.zeros(2, dtype=np.float32)], 8)
    assert inbox.window(10**6) is None
    assert inbox.put(one) is None and inbox.put(one) is None and inbox.count == 2
    assert inbox.withhold(1, 1) == "closed" and inbox.take_refused() == 1
    assert inbox.take() == [one, one] and inbox.count == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["gossip.train_every_ticks=[5, 3]"], "gossip.train_every_ticks"),
        (["gossip.schedule=ticks", "strategy.name=fair"], "strategy.name 'fair'"),
        (["gossip.schedule=ticks", "task.stream_chunks=4"], "task.stream_chunks"),
        (["launcher.engine=simulation", "security.tls=true"], "security.tls"),
        (["launcher.engine=simulation", "scenario.crash_round=3"], "not supported by launcher.engine"),
        (["launcher.engine=simulation", "scenario.delay_ms=5"], "scenario.delay_ms"),
        (["launcher.engine=simulation", "scenario.stragglers=[1]"], "scenario.stragglers"),
        (
            ["launcher.engine=simulation", "experiment.mode=flower", "strategy.name=fedavg"],
            'launcher.engine "simulation" runs gossip peers',
        ),
    ],
)
def test_what_the_tick_schedule_and_the_simulation_engine_cannot_run_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_the_last_evaluation_is_on_the_whole_test_set():
    peers = line_peers(*TICKS, "task.eval_examples=50")
    asked: list[tuple[int, bool, int]] = []
    for peer in peers:

        def spy(whole=False, learner=peer.learner, evaluate=peer.learner.evaluate):
            asked.append((learner.node, whole, learner.test_examples(whole)))
            return evaluate(whole)

        peer.learner.evaluate = spy
    nodes = [TickNode(p, intervals=lambda: 2) for p in peers]
    run_ticks(nodes, VirtualClock(), lambda e: None, _run)
    whole = len(peers[0].learner.data.y_test)
    assert whole > 50
    assert sorted(asked) == sorted([(n, False, 50) for n in range(3)] + [(n, True, whole) for n in range(3)])
