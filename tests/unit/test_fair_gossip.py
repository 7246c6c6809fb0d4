"""Fair incentives in gossip mode, in one process: the mechanism drawing among a peer's neighbours
only, the fair merge and contributions against hand-computed values, and the "no model this
round" notice in the inbox."""

from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np
import pytest

from fedgossip.client.gossip.fair import FairGossip
from fedgossip.client.gossip.inbox import Inbox
from fedgossip.client.gossip.rounds import RoundPlan, round_plan
from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.config import load_config
from fedgossip.strategies.fair import FairMechanism
from fedgossip.strategies.selection import selection_probabilities, selection_size

FIXED = {"stopping": "fixed", "explore_rounds": 2, "shapley": "exact", "ratio": 0.5}


def fair_config(**params):
    overrides = [f"strategy.params.{k}={json.dumps(v)}" for k, v in {**FIXED, **params}.items()]
    return load_config(None, ["strategy.name=fair", "nodes.count=6", *overrides])


def test_selection_size_at_least_one():
    assert selection_size(0.4, 2, at_least_one=True) == 1 and selection_size(0.4, 4, at_least_one=True) == 1
    assert selection_size(0.5, 4, at_least_one=True) == 2
    with pytest.raises(ValueError, match="selects 0"):
        selection_size(0.4, 2)


def test_the_mechanism_draws_k_candidates_with_softmax_over_their_psi_only():
    mechanism = FairMechanism(5, FIXED, np.random.default_rng(0), candidates=[1, 2, 3, 4])
    assert mechanism.k == 2
    updates = {i: [np.full(3, float(i + 1)) + np.arange(3) * (i == 4)] for i in range(5)}
    for round_ in (1, 2):
        assert mechanism.choose(round_) == [1, 2, 3, 4]  # exploring: every candidate
        mechanism.aggregate(updates, dict.fromkeys(range(5), 10))
    assert mechanism.phase == "exploit"
    expected = selection_probabilities(mechanism.psi[1:], 150.0, 0.01)
    np.testing.assert_allclose(mechanism.probabilities, [0.0, *expected])
    counts = np.zeros(5)
    for round_ in range(3, 403):
        chosen = mechanism.choose(round_)
        assert len(chosen) == 2 and 0 not in chosen
        counts[chosen] += 1
    assert counts[0] == 0 and counts.sum() == 800
    # the Flower mechanism (no candidates) draws floor(ratio N) of all nodes, as before
    assert FairMechanism(6, FIXED, np.random.default_rng(0)).k == 3


def test_fair_gossip_merge_and_contributions_against_hand_computed_values():
    plan = round_plan(fair_config(), 0, [3, 5, 8])
    assert isinstance(plan, FairGossip) and type(round_plan(load_config(None), 0, [1])) is RoundPlan
    start = [np.zeros(2, dtype=np.float32), np.array([7], dtype=np.int64)]
    own = [np.array([1.0, 0.0], dtype=np.float32), start[1]]
    models = {3: [1.0, 0.0], 5: [0.0, 1.0], 8: [1.0, 1.0]}
    messages = [
        ModelMessage(n, 1, 10, [np.array(v, dtype=np.float32), np.array([9], dtype=np.int64)], 0)
        for n, v in models.items()
    ]
    assert plan.recipients(1) == {3, 5, 8}
    outcome = plan.merge(1, start, own, 10, messages, [0, 1])
    assert outcome.error is None
    np.testing.assert_allclose(outcome.model[0], [0.75, 0.5])  # the mean of the four trained models
    assert outcome.model[0].dtype == np.float32 and outcome.model[1].tolist() == [7]  # int: own
    # exact Shapley values of U(S) = cos(g_N, sum_S g_j), g_N = (3, 2), by enumeration
    g = {0: np.array([1.0, 0.0]), 3: np.array([1.0, 0.0]), 5: np.array([0.0, 1.0]), 8: np.array([1.0, 1.0])}
    total = sum(g.values())

    def utility(coalition):
        s = sum((g[j] for j in coalition), np.zeros(2))
        norm = np.linalg.norm(s)
        return 0.0 if norm == 0 else float(s @ total / (norm * np.linalg.norm(total)))

    shapley = dict.fromkeys(g, 0.0)
    for order in itertools.permutations(g):
        for position, player in enumerate(order):
            shapley[player] += utility(order[: position + 1]) - utility(order[:position])
    fields = plan.fields(1)
    assert fields["phase"] == "explore" and fields["selected"] and fields["staleness"] == 0
    assert fields["sent_to"] == [3, 5, 8] and fields["neighbour_probability"] is None
    assert fields["contribution"] == pytest.approx(shapley[0] / 24)
    for n in (3, 5, 8):
        assert fields["neighbour_psi"][str(n)] == pytest.approx(shapley[n] / 24)
    assert math.isclose(fields["neighbour_psi"]["3"], fields["psi"])  # the same update, the same value

    # round 2 hears only node 5: a missing neighbour is a zero update (w not renormalised)
    plan.recipients(2)
    outcome = plan.merge(2, start, own, 10, messages[1:2], [0, 1])
    np.testing.assert_allclose(outcome.model[0], [0.25, 0.25])  # (g_own + g_5) / 4
    assert plan.fields(2)["staleness"] == 0
    sent = plan.recipients(3)  # exploit: k = floor(0.5 * 3) = 1 neighbour
    assert len(sent) == 1 and sent <= {3, 5, 8}
    plan.merge(3, start, own, 10, [], [0, 1])
    fields = plan.fields(3)
    assert fields["phase"] == "exploit" and not fields["selected"] and fields["staleness"] == 1
    assert fields["sent_to"] == sorted(sent)
    assert sum(fields["neighbour_probability"].values()) == pytest.approx(1.0)


def test_a_notice_ends_the_wait_for_its_sender_in_its_round_only():
    inbox = Inbox()
    assert inbox.withhold(4, 1) is None and inbox.notices(1) == {4}
    started = time.monotonic()
    assert inbox.wait(1, {4}, time.monotonic() + 10) == set()
    assert time.monotonic() - started < 1
    assert inbox.wait(1, {4, 5}, time.monotonic() + 0.2) == {5}
    assert inbox.withhold(5, 3) == "ahead" and inbox.progress() == {4: 1, 5: 3}
    assert inbox.close(1) == [] and inbox.notices(1) == set()
    assert inbox.withhold(4, 1) == "closed"  # a late notice stands in for nothing
    assert inbox.wait(2, {4}, time.monotonic() + 0.2) == {4}
