"""The DP regression mechanism's pieces: the table's union (a release is never re-noised), a
party's release (clipped to the bounds, the same every time it is rebuilt), the gossip plan's
merge, and the config refusing bad privacy parameters with the key named."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.client.gossip.dp_regression import DPRegressionGossip
from fedgossip.config import load_config
from fedgossip.strategies.dp_regression import table
from fedgossip.strategies.dp_regression.estimators import fast_estimate
from fedgossip.strategies.dp_regression.release import Bounds, NoiseLevels, statistics
from fedgossip.tasks import build_learner
from fedgossip.tasks.dp_regression_learner import clip_rows

pytestmark = pytest.mark.timeout(60)

SETTINGS = [
    "task.dataset=dp-regression-simulated",
    "task.model=dp-bayesian-regression",
    "task.synthetic_samples=2000",
    "task.synthetic_features=2",
    "strategy.name=dp-bayesian-regression",
    "nodes.count=3",
    "topology.kind=ring",
]


def test_union_keeps_the_first_release_of_each_party():
    a = table.with_row(table.empty(2), 0, np.eye(2), np.ones(2), 10)
    b = table.with_row(table.empty(2), 1, 2 * np.eye(2), 2 * np.ones(2), 20)
    c = table.with_row(table.empty(2), 0, 9 * np.eye(2), 9 * np.ones(2), 99)  # another copy of row 0
    merged = table.union([a, b, c])
    known = table.released(table.with_privacy(merged, 1.0, 1e-5, Bounds(1.0, 1.0)), 2)
    assert known.parties == [0, 1] and known.sizes == [10, 20]
    assert np.array_equal(known.s[0], np.eye(2)) and np.array_equal(known.z[1], [2.0, 2.0])
    assert table.features(merged) == 2


def test_clip_rows_enforces_the_bounds():
    x, y = np.array([[3.0, 4.0], [0.3, 0.4]]), np.array([5.0, -0.5])
    clipped_x, clipped_y = clip_rows(x, y, Bounds(1.0, 2.0))
    assert clipped_x == pytest.approx(np.array([[0.6, 0.8], [0.3, 0.4]]))
    assert clipped_y == pytest.approx([2.0, -0.5])


def test_a_party_releases_once_the_same_noisy_statistics_and_the_plan_merges_by_union():
    config = load_config(None, SETTINGS)
    seed = config.experiment.seed
    learners = [build_learner(config.task, node, 3, seed) for node in range(3)]
    plans = [DPRegressionGossip(config, node, [(node + 1) % 3, (node + 2) % 3]) for node in range(3)]
    for plan, learner in zip(plans, learners, strict=True):
        plan.learner(1, learner)
        learner.train()
    first = learners[0].get_weights()
    assert first[2].tolist()[:4] == [1.0, 0.0, 0.0, 0.0]
    again = build_learner(config.task, 0, 3, seed)  # a Flower ClientApp rebuilds it every message
    plans[0].learner(1, again)
    again.train()
    assert np.array_equal(again.get_weights()[1], first[1])
    # the released noise is the calibrated noise around the party's exact (clipped) statistics
    params = config.strategy.params
    bounds = Bounds(params["bound_x"], params["bound_y"])
    levels = NoiseLevels.calibrate(params["epsilon"], params["delta"], bounds)
    s, z = statistics(*clip_rows(learners[0]._x, learners[0]._y, bounds))
    row = first[1][0]
    assert (
        np.max(np.abs(row[:4].reshape(2, 2) - s)) < 6 * levels.s
        and np.max(np.abs(row[4:6] - z)) < 6 * levels.z
    )
    assert row[:4].reshape(2, 2) == pytest.approx(row[:4].reshape(2, 2).T)
    # gossip: one peer merges the others' tables; its estimate is the one-step estimate of all three
    own = learners[0].get_weights()
    messages = [type("M", (), {"arrays": learners[i].get_weights(), "sender": i})() for i in (1, 2)]
    outcome = plans[0].merge(1, own, own, learners[0].num_examples, messages, [0, 1, 2])
    learners[0].assign(outcome.model)
    known = table.released(outcome.model, 2)
    assert known.parties == [0, 1, 2]
    assert learners[0].theta() == pytest.approx(fast_estimate(known.s, known.z, levels, bounds).mean)
    fields = plans[0].fields(1)
    assert fields["dp_parties_known"] == 3 and fields["dp_estimator"] == "fast"


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("strategy.params.epsilon=0", "epsilon"),
        ("strategy.params.epsilon=-1", "epsilon"),
        ("strategy.params.delta=0", "delta"),
        ("strategy.params.delta=1", "delta"),
        ("strategy.params.estimator=gibbs", "estimator"),
        ("nodes.count=65", "nodes.count"),
        ("task.model=linear", "task.model"),
    ],
)
def test_bad_privacy_parameters_are_refused_naming_the_key(setting, key):
    with pytest.raises(ValueError, match=key):
        load_config(None, [*SETTINGS, setting])
