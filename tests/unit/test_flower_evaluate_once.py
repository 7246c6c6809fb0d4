"""A Flower client process evaluates a (model, test set) once: the in-process engine's clients
holding the same model get the figures computed for the first."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.client import flower_app
from fedgossip.tasks import build_learner
from fedgossip.tasks.config import TaskConfig

pytestmark = pytest.mark.timeout(60)


class Counting:
    """A learner whose evaluations are counted."""

    def __init__(self, learner) -> None:
        self.learner, self.calls = learner, 0
        self.data = learner.data

    def get_weights(self):
        return self.learner.get_weights()

    def evaluate(self, whole=False):
        self.calls += 1
        return self.learner.evaluate(whole)


def test_the_same_model_on_the_same_test_set_is_evaluated_once_with_the_same_figures():
    flower_app._EVALUATED.clear()
    task = TaskConfig(dataset="digits", model="mlp", hidden=8)
    first, second = (Counting(build_learner(task, node, 4, seed=3)) for node in (0, 1))
    second.learner.assign(first.get_weights())  # another node holding the same model
    want = first.learner.evaluate()
    assert flower_app.evaluate_once(first) == want
    assert flower_app.evaluate_once(second) == want
    assert (first.calls, second.calls) == (1, 0)
    # another model, or the same model on another test set, is evaluated
    second.learner.assign([w + 0.01 for w in first.get_weights()])
    assert flower_app.evaluate_once(second) == second.learner.evaluate()
    other = Counting(
        build_learner(TaskConfig(dataset="digits", model="mlp", hidden=8, eval_examples=50), 0, 4, 3)
    )
    other.learner.assign(first.get_weights())
    flower_app.evaluate_once(other)
    assert other.calls == 1
    assert not np.isclose(other.learner.evaluate()[0], want[0])
    # on the whole test set (the last round), it is the first node's model on the first's test
    # set: those figures, not computed again
    assert flower_app.evaluate_once(other, whole=True) == want == other.learner.evaluate(whole=True)
    assert other.calls == 1
