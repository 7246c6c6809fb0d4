"""Datasets: bundled files read without sklearn, stratified seeded splits, scaling, synthetic data."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from fedgossip.tasks import TaskConfig, load_dataset, node_dataset
from fedgossip.tasks.data import load_raw


@pytest.mark.parametrize(("name", "loader"), [("digits", load_digits), ("breast_cancer", load_breast_cancer)])
def test_raw_arrays_equal_sklearn_loaders(name, loader):
    x, y = load_raw(name)
    x_ref, y_ref = loader(return_X_y=True)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert not x.flags.writeable and load_raw(name) is load_raw(name)


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "synthetic"])
def test_split_is_stratified_disjoint_and_seeded(name):
    data = load_dataset(TaskConfig(dataset=name, test_fraction=0.25), seed=3)
    labels = np.concatenate([data.y_train, data.y_test])
    for c in range(data.num_classes):
        assert np.sum(data.y_test == c) == round(0.25 * np.sum(labels == c))
    assert data.x_train.dtype == data.x_test.dtype == np.float32
    again = load_dataset(TaskConfig(dataset=name, test_fraction=0.25), seed=3)
    other = load_dataset(TaskConfig(dataset=name), seed=4)
    np.testing.assert_array_equal(again.x_test, data.x_test)
    assert not np.array_equal(other.x_test[:50], data.x_test[:50])


def test_scaling():
    digits = load_dataset(TaskConfig(), seed=0)
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0
    cancer = load_dataset(TaskConfig(dataset="breast_cancer"), seed=0)
    np.testing.assert_allclose(cancer.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(cancer.x_train.std(axis=0), 1.0, atol=1e-4)


def test_synthetic_is_deterministic_per_seed_and_sized():
    task = TaskConfig(dataset="synthetic", synthetic_samples=500, synthetic_features=7, synthetic_classes=5)
    a, b, c = load_dataset(task, seed=1), load_dataset(task, seed=1), load_dataset(task, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.allclose(a.x_train, c.x_train)
    assert a.num_classes == 5 and a.x_train.shape[1] == 7 and a.input_shape == (7,)
    assert len(a.y_train) + len(a.y_test) == 500
    assert np.bincount(np.concatenate([a.y_train, a.y_test])).tolist() == [100] * 5


def test_test_set_is_identical_across_nodes():
    task = TaskConfig(partition="dirichlet")
    first, other = node_dataset(task, 0, 4, seed=7), node_dataset(task, 3, 4, seed=7)
    np.testing.assert_array_equal(first.x_test, other.x_test)
    np.testing.assert_array_equal(first.y_test, other.y_test)
    assert not np.array_equal(first.y_train[:20], other.y_train[:20])


def test_load_dataset_validates_the_seed():
    with pytest.raises(ValueError, match="seed"):
        load_dataset(TaskConfig(), seed=-1)
