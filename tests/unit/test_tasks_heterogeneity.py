"""Node heterogeneity: the label/feature noise ramp and per-node tuples, on training data only."""

import numpy as np
import pytest

from fedgossip.tasks import TaskConfig, node_dataset
from fedgossip.tasks.heterogeneity import node_level, with_label_noise


def test_ramp_and_tuple_levels():
    levels = [node_level("x", 0.2, node, 4) for node in range(4)]
    assert levels == pytest.approx([0.0, 0.05, 0.1, 0.15])
    assert node_level("x", (0.3, 0.1), 1, 2) == 0.1
    with pytest.raises(ValueError, match=r"task\.label_noise has 2 values"):
        node_level("task.label_noise", (0.3, 0.1), 0, 3)


def test_label_noise_changes_the_expected_fraction():
    labels = np.arange(20000) % 10
    noisy = with_label_noise(labels, 0.4, 10, np.random.default_rng(0))
    assert abs(np.mean(noisy != labels) - 0.4 * 0.9) < 0.01


def test_noise_reaches_only_the_node_training_data():
    clean = TaskConfig(partition="dirichlet")
    noisy = TaskConfig(partition="dirichlet", label_noise=(0.0, 0.5), feature_noise=(0.0, 0.3))
    for node in (0, 1):
        a, b = node_dataset(clean, node, 2, seed=5), node_dataset(noisy, node, 2, seed=5)
        np.testing.assert_array_equal(a.x_test, b.x_test)
        np.testing.assert_array_equal(a.y_test, b.y_test)
        changed = np.mean(a.y_train != b.y_train)
        shift = np.std(b.x_train - a.x_train)
        if node == 0:
            assert changed == 0 and shift == 0
        else:
            assert 0.4 < changed < 0.5 and abs(shift - 0.3) < 0.02


def test_noise_is_deterministic():
    task = TaskConfig(label_noise=0.5, feature_noise=0.5)
    first, again = node_dataset(task, 3, 4, seed=1), node_dataset(task, 3, 4, seed=1)
    np.testing.assert_array_equal(first.y_train, again.y_train)
    np.testing.assert_array_equal(first.x_train, again.x_train)
