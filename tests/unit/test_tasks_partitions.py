"""Partitions: seeded, disjoint, covering, and skewed the way each scheme promises."""

import numpy as np
import pytest

from fedgossip.tasks import TaskConfig, load_dataset, partition_indices

SCHEMES = ["iid", "dirichlet", "shards", "quantity", "powerlaw"]


@pytest.fixture(scope="module")
def labels():
    return load_dataset(TaskConfig(), seed=0).y_train


def _label_shares(labels, parts, num_classes=10):
    """Per-node label distribution, one row per node."""
    counts = np.stack([np.bincount(labels[part], minlength=num_classes) for part in parts])
    return counts / counts.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_disjoint_covering_and_seeded(labels, scheme):
    parts = partition_indices(labels, 8, scheme=scheme, seed=1)
    assert len(parts) == 8
    joined = np.concatenate(parts)
    assert len(joined) == len(labels)
    np.testing.assert_array_equal(np.sort(joined), np.arange(len(labels)))
    again = partition_indices(labels, 8, scheme=scheme, seed=1)
    other = partition_indices(labels, 8, scheme=scheme, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_sizes_are_equal_and_labels_balanced(labels):
    parts = partition_indices(labels, 8, scheme="iid", seed=0)
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    assert _label_shares(labels, parts).max() < 0.2


def test_dirichlet_skew_grows_as_alpha_shrinks(labels):
    def mean_entropy(alpha):
        shares = _label_shares(labels, partition_indices(labels, 8, scheme="dirichlet", alpha=alpha))
        logs = np.log(np.where(shares > 0, shares, 1.0))
        return -(shares * logs).sum(axis=1).mean()

    skewed, balanced = mean_entropy(0.1), mean_entropy(100.0)
    assert balanced > 0.95 * np.log(10)
    assert skewed < balanced - 0.8


def test_dirichlet_respects_min_size(labels):
    parts = partition_indices(labels, 10, scheme="dirichlet", alpha=0.1, seed=3, min_size=20)
    assert min(len(part) for part in parts) >= 20


def test_dirichlet_gives_up_with_a_clear_error():
    labels = np.repeat(np.arange(10), 10)
    with pytest.raises(ValueError, match="no Dirichlet"):
        partition_indices(labels, 10, scheme="dirichlet", alpha=0.01, min_size=10)


def test_shards_give_few_labels_per_node(labels):
    aligned = np.repeat(np.arange(10), 50)
    for num_nodes in (5, 10):
        for part in partition_indices(aligned, num_nodes, scheme="shards", shards_per_node=2, seed=4):
            assert len(np.unique(aligned[part])) <= 2
    parts = partition_indices(labels, 8, scheme="shards", shards_per_node=2, seed=4)
    distinct = [len(np.unique(labels[part])) for part in parts]
    assert max(distinct) <= 4 and np.mean(distinct) <= 3


def test_quantity_skews_sizes_not_labels(labels):
    def sizes(alpha):
        return np.array([len(p) for p in partition_indices(labels, 8, scheme="quantity", alpha=alpha)])

    small, large = sizes(0.1), sizes(100.0)
    assert small.min() >= 10
    assert small.std() / small.mean() > 1.0 > 0.2 > large.std() / large.mean()
    big_nodes = [p for p in partition_indices(labels, 8, scheme="quantity", alpha=0.1) if len(p) > 200]
    assert _label_shares(labels, big_nodes).max() < 0.2


@pytest.mark.parametrize(
    ("scheme", "num_nodes", "message"),
    [
        ("iid", 101, "cannot give each of 101 nodes"),
        ("dirichlet", 11, "cannot give each of 11 nodes min_size=10"),
        ("quantity", 11, "cannot give each of 11 nodes min_size=10"),
        ("shards", 51, "cannot cut 102 non-empty shards"),
    ],
)
def test_too_many_nodes_is_a_clear_error(scheme, num_nodes, message):
    with pytest.raises(ValueError, match=message):
        partition_indices(np.arange(100) % 10, num_nodes, scheme=scheme)


@pytest.mark.parametrize(
    "bad",
    [
        {"scheme": "pathological"},
        {"alpha": -1.0},
        {"shards_per_node": 0},
        {"seed": -3},
        {"min_size": 0},
    ],
)
def test_arguments_are_validated(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        partition_indices(np.arange(100) % 10, 2, **bad)


def test_labels_must_be_integers():
    with pytest.raises(ValueError, match="labels must be a 1-d integer array"):
        partition_indices(np.zeros(10), 2)
