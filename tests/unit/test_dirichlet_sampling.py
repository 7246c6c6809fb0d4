"""task.partition = "dirichlet-sampling" (the vanishing-variance authors' non-IID setting): every
node keeps the whole training set and draws its batches with replacement by its own
Dirichlet(alpha) label probabilities (a label, then one of its examples)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedgossip.base.seeding import stream
from fedgossip.tasks import TaskConfig, build_learner, node_dataset

NODES, SEED = 5, 11
TASK = TaskConfig(partition="dirichlet-sampling", alpha=0.5)


@pytest.mark.timeout(30)
def test_every_node_holds_the_whole_set_weighted_by_its_dirichlet_label_probabilities():
    whole = node_dataset(TaskConfig(partition="none"), 0, NODES, SEED)
    assert whole.train_weights is None
    drawn = stream(SEED, "partition").dirichlet(np.full(10, 0.5), size=NODES)  # by hand
    for node in range(NODES):
        data = node_dataset(TASK, node, NODES, SEED)
        np.testing.assert_array_equal(data.x_train, whole.x_train)
        weights = data.train_weights
        assert weights.sum() == pytest.approx(1.0)
        for label in range(10):
            members = weights[data.y_train == label]
            np.testing.assert_allclose(members, members[0])  # a label, then any of its examples
            assert members.sum() == pytest.approx(drawn[node, label])
    again = node_dataset(TASK, 3, NODES, SEED).train_weights
    np.testing.assert_array_equal(again, node_dataset(TASK, 3, NODES, SEED).train_weights)
    assert not np.allclose(again, node_dataset(TASK, 3, NODES, SEED + 1).train_weights)


@pytest.mark.timeout(30)
def test_batches_follow_the_nodes_label_probabilities_and_reach_training():
    learner = build_learner(TASK, 2, NODES, SEED)
    labels = learner.data.y_train
    orders = np.concatenate([learner._epoch_order() for _ in range(40)])  # ~57,000 draws
    assert len(np.unique(orders)) < len(labels)  # with replacement: skewed nodes miss examples
    frequencies = np.bincount(labels[orders], minlength=10) / len(orders)
    expected = stream(SEED, "partition").dirichlet(np.full(10, 0.5), size=NODES)[2]
    np.testing.assert_allclose(frequencies, expected, atol=0.01)
    sampled = build_learner(TASK, 2, NODES, SEED)
    shuffled = build_learner(dataclasses.replace(TASK, partition="none"), 2, NODES, SEED)
    sampled.train()
    shuffled.train()
    assert not np.allclose(sampled.get_weights()[0], shuffled.get_weights()[0])


@pytest.mark.timeout(30)
def test_it_cannot_be_streamed():
    with pytest.raises(
        ValueError, match=r"task.partition 'dirichlet-sampling' samples the whole training set"
    ):
        TaskConfig(partition="dirichlet-sampling", stream_chunks=4)
