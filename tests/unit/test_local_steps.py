"""task.local_steps: a round of k minibatches equals k hand-driven SGD steps on the same batches."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.tasks import build_learner
from fedgossip.tasks.config import TaskConfig

pytestmark = pytest.mark.timeout(60)


def _task(**kw) -> TaskConfig:
    return TaskConfig(dataset="digits", model="mlp", hidden=16, batch_size=8, learning_rate=0.1, **kw)


def test_a_round_of_local_steps_is_that_many_minibatches_of_the_node_order():
    steps = build_learner(_task(local_steps=3), 1, 4, seed=5)
    reference = build_learner(_task(), 1, 4, seed=5)  # same data, init and shuffle stream
    start = [w.copy() for w in reference.get_weights()]
    steps.train()
    # by hand: the first 3 batches of one epoch order from the same shuffle stream, plain SGD
    permutation = reference._shuffle_rng.permutation(reference.num_examples)
    reference.assign(start)
    run = reference._make_epoch(0.0)
    for b in range(3):
        run(permutation[b * 8 : (b + 1) * 8])
    for got, want in zip(steps.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # and not an epoch: one epoch from the same start moves the weights elsewhere
    epoch = build_learner(_task(), 1, 4, seed=5)
    epoch.train()
    assert not all(np.allclose(a, b) for a, b in zip(epoch.get_weights(), steps.get_weights(), strict=True))


def test_the_next_round_continues_the_epoch_order():
    learner = build_learner(_task(local_steps=2), 0, 4, seed=1)
    twice = build_learner(_task(local_steps=4), 0, 4, seed=1)
    learner.train()
    learner.train()
    twice.train()
    for a, b in zip(learner.get_weights(), twice.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_local_steps_must_not_be_negative():
    with pytest.raises(ValueError, match=r"task\.local_steps"):
        _task(local_steps=-1)
